//! What the stages share: losses, accuracy, Adam with the project's
//! settings, the discriminator's update, and [`Held`] for models that the
//! optimizer consumes. The stages implement [`crate::train::Stage`].

/// The checkpoint methods of a stage that trains a purifier through a
/// `training: PurifierTraining` field (pre-training and fine-tuning).
macro_rules! purifier_stage_persistence {
    () => {
        fn save(&self) -> anyhow::Result<std::collections::BTreeMap<String, Vec<u8>>> {
            self.training.save()
        }

        fn restore(
            &mut self,
            blobs: &std::collections::BTreeMap<String, Vec<u8>>,
            path: &std::path::Path,
        ) -> anyhow::Result<()> {
            self.training.restore(blobs, path)
        }

        fn snapshot(&self) -> anyhow::Result<Vec<u8>> {
            crate::train::checkpoint::module_bytes(self.training.purifier())
        }

        fn load_snapshot(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
            self.training.load_purifier(bytes)
        }
    };
}
pub(crate) use purifier_stage_persistence;

use atop::model::Discriminator;
use atop::transform::TransformedImage;
use burn::optim::AdamConfig;
use burn::tensor::activation::relu;
use burn::tensor::loss::cross_entropy_with_logits;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::OptimConfig;
use crate::data::Dataset;

/// Mean cross-entropy of `logits` against integer labels.
pub fn cross_entropy(logits: Tensor<2>, labels: &[i64]) -> Tensor<1> {
    let [n, k] = logits.dims();
    let device = logits.device();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels.to_vec(), [n]), &device);
    cross_entropy_with_logits(logits, y.one_hot::<2>(k).float())
}

/// Number of correct predictions.
pub fn correct(logits: Tensor<2>, labels: &[i64]) -> anyhow::Result<usize> {
    let preds = atop::host::ints(logits.argmax(1), "predictions")?;
    Ok(preds.iter().zip(labels).filter(|(p, y)| p == y).count())
}

/// Adam with the stage's betas and PyTorch's epsilon (1e-8; burn's default
/// 1e-5 damps the small gradients of deep gated generators).
pub fn adam(cfg: &OptimConfig) -> burn::optim::ModuleOptimizer {
    AdamConfig::new()
        .with_beta_1(cfg.betas[0])
        .with_beta_2(cfg.betas[1])
        .with_epsilon(1e-8)
        .init()
}

pub fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}

/// L1 distance measured in the purifier's [-1,1] range (twice the [0,1]
/// distance), so the loss balance matches DeepFillv2's.
pub fn l1_signed(a: Tensor<4>, b: Tensor<4>) -> Tensor<1> {
    (a - b).abs().mean().mul_scalar(2.0)
}

/// Hinge discriminator loss: 0.5 mean relu(1 - D(real)) + 0.5 mean relu(1 + D(fake)).
pub fn discriminator_loss(d_real: Tensor<2>, d_fake: Tensor<2>) -> Tensor<1> {
    let real = relu(d_real.neg().add_scalar(1.0)).mean();
    let fake = relu(d_fake.add_scalar(1.0)).mean();
    (real + fake).mul_scalar(0.5)
}

/// The fraction of `data` (in batches, no augmentation) whose label is the
/// argmax of `logits(images, labels)`: plain, transformed or attacked inputs.
pub fn accuracy_of(
    data: &Dataset,
    batch: usize,
    device: &Device,
    mut logits: impl FnMut(Tensor<4>, &[i64]) -> anyhow::Result<Tensor<2>>,
) -> anyhow::Result<f64> {
    let mut right = 0;
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(batch.max(1)) {
        let (x, y) = data.batch(chunk, None, device);
        right += correct(logits(x, &y)?.detach(), &y)?;
    }
    Ok(right as f64 / data.len().max(1) as f64)
}

/// The first pass of a transform (purifier training uses one pass per step;
/// RT3's passes are RT2 masks at rate 1/N and train the same way).
pub fn first_pass(mut transformed: Vec<TransformedImage>) -> TransformedImage {
    transformed.swap_remove(0)
}

/// What a discriminator update saw: its loss and its mean scores.
pub struct DiscriminatorStep {
    pub loss: f64,
    pub mean_real: f64,
    pub mean_fake: f64,
}

/// One discriminator update on (real, fake) with the discriminator's optimizer.
pub fn discriminator_step(
    disc: &mut Held<Discriminator>,
    optim: &mut burn::optim::ModuleOptimizer,
    lr: f64,
    real: Tensor<4>,
    fake: Tensor<4>,
    mask: Tensor<4>,
) -> anyhow::Result<DiscriminatorStep> {
    let d_real = disc.get().forward(real, mask.clone())?;
    let d_fake = disc.get().forward(fake.detach(), mask)?;
    let mean_real = scalar(d_real.clone().detach().mean());
    let mean_fake = scalar(d_fake.clone().detach().mean());
    let loss = discriminator_loss(d_real, d_fake);
    let value = scalar(loss.clone().detach());
    let grads = burn::optim::GradientsParams::from_grads(loss.backward(), disc.get());
    disc.replace(|d| optim.step(lr, d, grads));
    Ok(DiscriminatorStep {
        loss: value,
        mean_real,
        mean_fake,
    })
}

/// L2 norm of a whole tensor.
pub fn l2_norm(t: Tensor<4>) -> f64 {
    scalar(t.powi_scalar(2).sum().sqrt())
}

/// A model that burn's optimizer consumes and hands back at every step,
/// held between steps. It is always there: every method puts one back.
pub struct Held<M: Clone>(Option<M>);

const HELD: &str = "Held always holds a model: every method puts one back";

impl<M: Clone> Held<M> {
    pub fn new(model: M) -> Self {
        Self(Some(model))
    }

    pub fn get(&self) -> &M {
        self.0.as_ref().expect(HELD)
    }

    pub fn into_inner(self) -> M {
        self.0.expect(HELD)
    }

    /// Replaces the model by `f(model)`, e.g. an optimizer step.
    pub fn replace(&mut self, f: impl FnOnce(M) -> M) {
        let model = self.0.take().expect(HELD);
        self.0 = Some(f(model));
    }

    /// Replaces the model by `f(model)` when that succeeds, and keeps it
    /// otherwise (modules are cheap handles to clone).
    pub fn try_replace<E>(&mut self, f: impl FnOnce(M) -> Result<M, E>) -> Result<(), E> {
        let next = f(self.get().clone())?;
        self.0 = Some(next);
        Ok(())
    }
}
