//! The purifier-training engine both pre-training and AToP fine-tuning run
//! (docs/method.md section 5): one optimiser step of the purifier (and, for
//! the GAN, of its discriminator) on a batch of transformed images, the
//! reconstruction terms against the clean images, and any extra term the
//! caller adds (AToP's cross-entropy); checkpointing of both models and
//! their optimizers; the validation reconstruction error.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use atop::defense::resize;
use atop::model::{Discriminator, Purifier};
use atop::rng::AtopRng;
use atop::transform::TransformConfig;
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};

use super::blocks::{Held, adam, discriminator_step, first_pass, l1_signed, l2_norm, scalar};
use crate::config::{GanTerm, OptimConfig};
use crate::data::Dataset;
use crate::train::checkpoint::{blob, load_module, load_optimizer, module_bytes, optimizer_bytes};

/// The purifier and, for the GAN kind, its discriminator, with optimizers.
pub struct PurifierTraining {
    pub purifier: Held<Purifier>,
    pub discriminator: Option<Held<Discriminator>>,
    pub g_optim: ModuleOptimizer,
    pub d_optim: ModuleOptimizer,
    /// The discriminator's learning rate over the generator's.
    pub d_lr_scale: f64,
    /// Weight of the generator's adversarial term.
    pub gan_weight: f64,
}

/// One training batch of the purifier: the transformed images and their
/// holes, and the clean images it should rebuild.
pub struct PurifierBatch {
    pub input: Tensor<4>,
    pub mask: Tensor<4>,
    pub target: Tensor<4>,
}

/// A term the caller adds to the generator's loss (AToP's cross-entropy),
/// built from the purified image.
pub struct LossTerm {
    pub name: &'static str,
    pub value: Tensor<1>,
}

impl PurifierTraining {
    pub fn new(
        purifier: Purifier,
        discriminator: Option<Discriminator>,
        cfg: &OptimConfig,
    ) -> Self {
        let discriminator = match purifier {
            Purifier::Gan(_) => discriminator.map(Held::new),
            Purifier::Ae(_) | Purifier::Identity(_) => None,
        };
        Self {
            purifier: Held::new(purifier),
            discriminator,
            g_optim: adam(cfg),
            d_optim: adam(cfg),
            d_lr_scale: cfg.discriminator_lr_scale,
            gan_weight: cfg.gan_weight,
        }
    }

    pub fn purifier(&self) -> &Purifier {
        self.purifier.get()
    }

    pub fn save(&self) -> Result<BTreeMap<String, Vec<u8>>> {
        let mut blobs = BTreeMap::from([
            ("purifier".to_string(), module_bytes(self.purifier())?),
            ("g_optim".to_string(), optimizer_bytes(&self.g_optim)?),
        ]);
        if let Some(d) = &self.discriminator {
            blobs.insert("discriminator".into(), module_bytes(d.get())?);
            blobs.insert("d_optim".into(), optimizer_bytes(&self.d_optim)?);
        }
        Ok(blobs)
    }

    pub fn restore(&mut self, blobs: &BTreeMap<String, Vec<u8>>, path: &Path) -> Result<()> {
        let get = |k: &str| blob(blobs, k, path);
        self.purifier
            .try_replace(|p| load_module(p, get("purifier")?, "purifier checkpoint"))?;
        self.g_optim =
            load_optimizer(self.g_optim.clone(), get("g_optim")?, "purifier checkpoint")?;
        if let Some(d) = &mut self.discriminator {
            d.try_replace(|d| load_module(d, get("discriminator")?, "discriminator checkpoint"))?;
            self.d_optim = load_optimizer(
                self.d_optim.clone(),
                get("d_optim")?,
                "discriminator checkpoint",
            )?;
        }
        Ok(())
    }

    pub fn load_purifier(&mut self, bytes: &[u8]) -> Result<()> {
        self.purifier
            .try_replace(|p| load_module(p, bytes, "selected purifier"))
    }

    /// One generator (and discriminator) update on `batch`; returns the losses.
    pub fn step(
        &mut self,
        batch: PurifierBatch,
        lr: f64,
        gan: GanTerm,
    ) -> Result<BTreeMap<String, f64>> {
        self.step_with(batch, lr, gan, |_| Ok(Vec::new()))
    }

    /// [`Self::step`] with the caller's loss terms, built from the purified
    /// image, added to the generator's loss.
    pub fn step_with(
        &mut self,
        batch: PurifierBatch,
        lr: f64,
        gan: GanTerm,
        terms: impl FnOnce(Tensor<4>) -> Result<Vec<LossTerm>>,
    ) -> Result<BTreeMap<String, f64>> {
        let PurifierBatch {
            input,
            mask,
            target,
        } = batch;
        let out = self.purifier().purify(input, mask.clone())?;
        let mut losses = BTreeMap::new();
        let mut loss_g = l1_signed(out.image.clone(), target.clone());
        if let Some(coarse) = out.coarse.clone() {
            loss_g = loss_g + l1_signed(coarse, target.clone());
        }
        let mut g_value = scalar(loss_g.clone().detach());
        losses.insert("recon".to_string(), g_value);
        if let Some(disc) = &mut self.discriminator {
            let d = discriminator_step(
                disc,
                &mut self.d_optim,
                lr * self.d_lr_scale,
                target.clone(),
                out.image.clone(),
                mask.clone(),
            )?;
            losses.insert("d_loss".to_string(), d.loss);
            // Health: how far apart D scores real and fake images.
            losses.insert("d_gap".to_string(), d.mean_real - d.mean_fake);
            // The adversarial term's gradient at the purified image, taken
            // once and chained into the generator: (image . grad).sum() has
            // the same parameter gradient as the term itself, and its norm
            // against the L1 term's says whether D still teaches G anything.
            let probe = out.image.clone().detach().require_grad();
            let adv = disc
                .get()
                .forward(probe.clone(), mask)?
                .mean()
                .neg()
                .mul_scalar(self.gan_weight);
            let adv_grad = probe
                .grad(&adv.clone().backward())
                .ok_or_else(|| anyhow::anyhow!("no gradient reached the purified image"))?;
            let numel = out.image.dims().iter().product::<usize>() as f64;
            let l1_grad = 2.0 / numel * l2_norm((out.image.clone() - target.clone()).sign());
            losses.insert(
                "g_adv_ratio".to_string(),
                l2_norm(adv_grad.clone()) / l1_grad.max(f64::MIN_POSITIVE),
            );
            let adv_value = scalar(adv.detach());
            g_value += adv_value;
            losses.insert("g_adv".to_string(), adv_value);
            // The public code detaches this term, so it adds no gradient.
            if gan == GanTerm::Live {
                loss_g = loss_g + (out.image.clone() * adv_grad).sum();
            }
        }
        for term in terms(out.image)? {
            let value = scalar(term.value.clone().detach());
            g_value += value;
            losses.insert(term.name.to_string(), value);
            loss_g = loss_g + term.value;
        }
        // The generator's loss as the formula writes it (the adversarial
        // term by its value, not by its chained surrogate).
        losses.insert("g_loss".to_string(), g_value);
        let grads = GradientsParams::from_grads(loss_g.backward(), self.purifier());
        let optim = &mut self.g_optim;
        self.purifier.replace(|p| optim.step(lr, p, grads));
        Ok(losses)
    }
}

/// Mean reconstruction L1 (in [-1,1] units) of the purifier on `data`, with
/// transform draws from `rng`; no gradients.
pub fn reconstruction_error(
    purifier: &Purifier,
    transform: &TransformConfig,
    purify_size: usize,
    data: &Dataset,
    batch: usize,
    device: &Device,
    rng: &mut AtopRng,
) -> Result<f64> {
    let purifier = purifier.valid();
    let indices: Vec<usize> = (0..data.len()).collect();
    let mut total = 0.0;
    for chunk in indices.chunks(batch) {
        let (x, _) = data.batch(chunk, None, device);
        let x = to_purify_size(x, purify_size);
        let draw = transform.draw(rng, x.dims())?;
        let t = first_pass(draw.apply(x.clone())?);
        let out = purifier.purify(t.image, t.mask)?;
        total += scalar(l1_signed(out.image, x)) * chunk.len() as f64;
    }
    Ok(total / data.len().max(1) as f64)
}

/// Resizes a batch to the purifier's working size (0 = unchanged).
pub fn to_purify_size(x: Tensor<4>, size: usize) -> Tensor<4> {
    let [n, c, ..] = x.dims();
    match size {
        0 => x,
        s => resize(x, [n, c, s, s]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LrSchedule;
    use atop::model::{DiscriminatorConfig, InpainterConfig, PurifierConfig};
    use atop::rng::with_backend_seed;
    use burn::tensor::Distribution;

    fn training(device: &Device, with_d: bool) -> PurifierTraining {
        let (p, d) = with_backend_seed(device, 5, || {
            let p = PurifierConfig::Gan(InpainterConfig {
                image_channels: 1,
                cnum: 4,
                ..InpainterConfig::default()
            })
            .init(device)
            .unwrap();
            let d = DiscriminatorConfig {
                image_channels: 1,
                cnum: 4,
                ..DiscriminatorConfig::default()
            }
            .init(device)
            .unwrap();
            (p, d)
        });
        let cfg = OptimConfig {
            epochs: 1,
            batch_size: 2,
            lr: 1e-3,
            betas: [0.5, 0.999],
            max_steps_per_epoch: 0,
            discriminator_lr_scale: 1.0,
            gan_weight: 1.0,
            lr_schedule: LrSchedule::Constant,
            warmup_steps: 0,
        };
        PurifierTraining::new(p, with_d.then_some(d), &cfg)
    }

    fn step(t: &mut PurifierTraining, device: &Device, k: u64) -> BTreeMap<String, f64> {
        let x = with_backend_seed(device, 100 + k, || {
            Tensor::<4>::random([2, 1, 28, 28], Distribution::Uniform(0.0, 1.0), device)
        });
        let batch = PurifierBatch {
            input: x.clone(),
            mask: Tensor::<4>::zeros([2, 1, 28, 28], device),
            target: x,
        };
        t.step(batch, 1e-3, GanTerm::Live).unwrap()
    }

    /// Save after two steps, restore into a fresh training, and the next
    /// steps give the same losses as the one that never stopped.
    #[test]
    fn a_restored_gan_training_continues_bit_for_bit() {
        for with_d in [false, true] {
            let device = Device::flex().autodiff();
            let mut a = training(&device, with_d);
            step(&mut a, &device, 1);
            step(&mut a, &device, 2);
            let saved = a.save().unwrap();
            let mut b = training(&device, with_d);
            b.restore(&saved, Path::new("mem")).unwrap();
            for k in 3..6 {
                let (la, lb) = (step(&mut a, &device, k), step(&mut b, &device, k));
                assert_eq!(la, lb, "with_d {with_d} step {k}");
            }
        }
    }

    /// Hinge losses of a discriminator trained alone for 80 steps to tell
    /// dark images from a noisy copy.
    fn discriminator_alone(output_activation: bool) -> Vec<f64> {
        let device = Device::flex().autodiff();
        let disc = with_backend_seed(&device, 3, || {
            DiscriminatorConfig {
                image_channels: 1,
                cnum: 8,
                layers: 6,
                output_activation,
            }
            .init(&device)
            .unwrap()
        });
        let mut disc = Held::new(disc);
        let mut optim = adam(&OptimConfig {
            epochs: 1,
            batch_size: 8,
            lr: 5e-4,
            betas: [0.5, 0.999],
            max_steps_per_epoch: 0,
            discriminator_lr_scale: 1.0,
            gan_weight: 1.0,
            lr_schedule: LrSchedule::Constant,
            warmup_steps: 0,
        });
        (0..80)
            .map(|k| {
                let uniform = || {
                    Tensor::<4>::random([8, 1, 28, 28], Distribution::Uniform(0.0, 1.0), &device)
                };
                let (real, noise) = with_backend_seed(&device, 200 + k, || (uniform(), uniform()));
                let real = real.mul_scalar(0.2);
                let fake = (real.clone() + noise.mul_scalar(0.5)).clamp(0.0, 1.0);
                let mask = Tensor::<4>::zeros([8, 1, 28, 28], &device);
                discriminator_step(&mut disc, &mut optim, 5e-4, real, fake, mask)
                    .unwrap()
                    .loss
            })
            .collect()
    }

    /// DeepFillv2's LeakyReLU on the scores keeps fakes near 0 (reaching -1
    /// takes a pre-activation of -5 through spectrally normalised layers),
    /// so the hinge loss stalls at one half even on an easy task; linear
    /// scores go below it.
    #[test]
    fn a_leaky_output_stalls_the_hinge_loss_and_linear_scores_do_not() {
        let tail = |l: Vec<f64>| l[70..].iter().sum::<f64>() / 10.0;
        let leaky = tail(discriminator_alone(true));
        let linear = tail(discriminator_alone(false));
        assert!((0.45..0.55).contains(&leaky), "leaky output: {leaky}");
        assert!(linear < 0.4, "linear output: {linear}");
    }

    /// The parity fixture's 256 Fashion-MNIST test images, `[256, 1, 28, 28]`
    /// in [0, 1] (a safetensors file: header length, JSON header, u8 data).
    fn fashion_mnist(device: &Device) -> Tensor<4> {
        let bytes: &[u8] = include_bytes!("../../../shared/tests/golden/parity/images.safetensors");
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
        let span = &header["images"]["data_offsets"];
        let (a, b) = (
            span[0].as_u64().unwrap() as usize,
            span[1].as_u64().unwrap() as usize,
        );
        let pixels: Vec<f32> = bytes[8 + len + a..8 + len + b]
            .iter()
            .map(|&v| v as f32 / 255.0)
            .collect();
        let n = pixels.len() / 784;
        Tensor::from_data(
            burn::tensor::TensorData::new(pixels, [n, 1, 28, 28]),
            device,
        )
    }

    /// The shipped Fashion-MNIST recipe (configs/fmnist.toml) with the GAN
    /// inpainter pre-trains on real images with its transform, and the
    /// discriminator still tells real from purified after step 65, where it
    /// stalled with DeepFillv2's adversarial weight of 1
    /// (docs/results/discriminator-study.md; `ATOP_TEST_SET=pretrain.gan_weight=1`
    /// runs that recipe, and the test then fails: stalled in all 35 late
    /// steps; the shipped recipe stalls in 1 of them, under the warning's
    /// half).
    ///
    /// It runs alone in a child process: beside the other tests of this
    /// binary its figures did not replay (2, 3, 19 and 28 stalled steps in
    /// four runs, while parameters still drew their values lazily at first
    /// use, outside `backend_draws`), alone they do, run after run; a GAN
    /// this short amplifies any difference, so it stays alone.
    #[test]
    fn on_real_fashion_mnist_the_shipped_recipe_keeps_the_discriminator_alive() {
        let name = "train::purifier::tests::shipped_recipe_discriminator_health";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--include-ignored", "--test-threads=1"])
            .env(RUN_ALONE, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
    }

    /// Set in the child process the test above starts.
    const RUN_ALONE: &str = "ATOP_TEST_RUN_ALONE";

    /// The body of the test above, run by it in a process of its own.
    #[test]
    #[ignore = "run alone by on_real_fashion_mnist_the_shipped_recipe_keeps_the_discriminator_alive"]
    fn shipped_recipe_discriminator_health() {
        assert!(
            std::env::var_os(RUN_ALONE).is_some(),
            "run on_real_fashion_mnist_the_shipped_recipe_keeps_the_discriminator_alive instead"
        );
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/fmnist.toml"
        ))
        .unwrap();
        // The GAN inpainter, as the configuration's header gives it (the
        // shipped default, the conv AE, has no discriminator).
        let gan = r#"purifier={kind="gan",image_channels=1,cnum=16}"#.to_string();
        let overrides: Vec<String> = std::iter::once(gan)
            .chain(std::env::var("ATOP_TEST_SET"))
            .collect();
        let cfg = crate::config::RunConfig::parse(&text, &overrides).unwrap();
        let device = Device::flex().autodiff();
        let images = fashion_mnist(&device);
        let (purifier, disc) = with_backend_seed(&device, 11, || {
            (
                cfg.purifier.init(&device).unwrap(),
                cfg.discriminator_config().init(&device).unwrap(),
            )
        });
        let mut training = PurifierTraining::new(purifier, Some(disc), &cfg.pretrain);
        let mut rng = atop::rng::seeded(5);
        let batch = 8;
        let mut health = Vec::new();
        for step in 0..100 {
            let start = (step * batch) % 256;
            let x = images.clone().narrow(0, start, batch);
            let t = first_pass(
                cfg.transform
                    .draw(&mut rng, x.dims())
                    .unwrap()
                    .apply(x.clone())
                    .unwrap(),
            );
            let losses = training
                .step(
                    PurifierBatch {
                        input: t.image,
                        mask: t.mask,
                        target: x,
                    },
                    cfg.pretrain.lr,
                    GanTerm::Live,
                )
                .unwrap();
            health.push((losses["d_gap"], losses["g_adv_ratio"]));
        }
        let late =
            crate::train::gan_health::GanHealth::from_steps("pretrain", &health[65..]).unwrap();
        assert!(
            late.warnings().is_empty(),
            "{:?} ({late:?})",
            late.warnings()
        );
    }
}
