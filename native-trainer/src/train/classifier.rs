//! Trains a classifier (Adam): normally, with cross-entropy and selection
//! by validation accuracy, or adversarially (PGD-AT, TRADES) with selection
//! by robust validation accuracy under the training attack.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use atop::model::Classifier;
use atop::rng::AtopRng;
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Device;

use super::adversarial::{TrainingAttack, frozen_copy};
use super::blocks::{Held, accuracy_of, adam, cross_entropy, first_pass, scalar};
use super::purifier::to_purify_size;
use crate::config::{ClassifierTrainingConfig, OptimConfig};
use crate::data::{Augment, Dataset};
use crate::train::checkpoint::{blob, load_module, load_optimizer, module_bytes, optimizer_bytes};
use crate::train::{Stage, StepAt};
use atop::defense::resize;
use atop::transform::TransformConfig;
use burn::tensor::Tensor;

pub struct ClassifierStage<'a> {
    pub model: Held<Classifier>,
    pub optim: ModuleOptimizer,
    pub cfg: OptimConfig,
    /// `None`: standard training.
    pub attack: Option<TrainingAttack>,
    /// Train on these transform outputs (with this purify size) instead of
    /// clean images.
    pub input_transform: Option<(TransformConfig, usize)>,
    pub train: &'a Dataset,
    pub val: &'a Dataset,
    pub augment: Augment,
    pub device: Device,
}

impl<'a> ClassifierStage<'a> {
    pub fn new(
        model: Classifier,
        cfg: &ClassifierTrainingConfig,
        train: &'a Dataset,
        val: &'a Dataset,
        augment: Augment,
        device: Device,
    ) -> Self {
        Self {
            optim: adam(&cfg.optim),
            model: Held::new(model),
            cfg: cfg.optim.clone(),
            attack: TrainingAttack::from_config(cfg),
            input_transform: None,
            train,
            val,
            augment,
            device,
        }
    }

    pub fn into_model(self) -> Classifier {
        self.model.into_inner()
    }

    fn model(&self) -> &Classifier {
        self.model.get()
    }
}

impl ClassifierStage<'_> {
    /// The batch through the input transform (its first pass, as purifier
    /// training uses), or unchanged.
    fn transformed(&self, x: Tensor<4>, rng: &mut AtopRng) -> Result<Tensor<4>> {
        let Some((transform, size)) = &self.input_transform else {
            return Ok(x);
        };
        let [_, _, h, w] = x.dims();
        let x = to_purify_size(x, *size);
        let t = first_pass(transform.draw(rng, x.dims())?.apply(x)?);
        Ok(resize(t.image, [0, 0, h, w]))
    }
}

impl Stage for ClassifierStage<'_> {
    fn name(&self) -> &'static str {
        "train-classifier"
    }

    fn step(
        &mut self,
        batch: &[usize],
        at: StepAt,
        rng: &mut AtopRng,
    ) -> Result<BTreeMap<String, f64>> {
        let (x, y) = self
            .train
            .batch(batch, Some((&self.augment, rng)), &self.device);
        let x = self.transformed(x, rng)?;
        let loss = match &self.attack {
            None => cross_entropy(self.model().forward(x)?, &y),
            Some(attack) => {
                let frozen = frozen_copy(self.model(), &self.device);
                let x_adv = attack.perturb(&frozen, x.clone(), &y, rng)?;
                attack.loss(self.model(), x, x_adv, &y)?
            }
        };
        let value = scalar(loss.clone().detach());
        let grads = GradientsParams::from_grads(loss.backward(), self.model());
        let (optim, lr) = (&mut self.optim, at.lr(self.cfg.lr));
        self.model.replace(|model| optim.step(lr, model, grads));
        Ok(BTreeMap::from([("loss".to_string(), value)]))
    }

    fn validate(&mut self, rng: &mut AtopRng) -> Result<f64> {
        if let Some(attack) = &self.attack {
            let frozen = frozen_copy(self.model(), &self.device);
            return attack.robust_accuracy(&frozen, self.val, 256, &self.device, rng);
        }
        let model = self.model().valid();
        let device = self.device.clone().without_autodiff();
        accuracy_of(self.val, 256, &device, |x, _| {
            Ok(model.forward(self.transformed(x, rng)?)?)
        })
    }

    fn save(&self) -> Result<BTreeMap<String, Vec<u8>>> {
        Ok(BTreeMap::from([
            ("model".to_string(), module_bytes(self.model())?),
            ("optim".to_string(), optimizer_bytes(&self.optim)?),
        ]))
    }

    fn restore(&mut self, blobs: &BTreeMap<String, Vec<u8>>, path: &Path) -> Result<()> {
        let get = |k: &str| blob(blobs, k, path);
        self.model
            .try_replace(|m| load_module(m, get("model")?, "classifier checkpoint"))?;
        self.optim = load_optimizer(self.optim.clone(), get("optim")?, "classifier checkpoint")?;
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        module_bytes(self.model())
    }

    fn load_snapshot(&mut self, bytes: &[u8]) -> Result<()> {
        self.model
            .try_replace(|m| load_module(m, bytes, "selected classifier"))
    }
}
