//! Pre-trains a purifier to rebuild clean x from t(x) (docs/method.md section 5):
//! GAN: L_G = -mean D(x2) + L1(x1, x) + L1(x2, x), hinge loss for D;
//! AE: L1(g(t(x)), x). Selection by validation reconstruction error.

use std::collections::BTreeMap;

use anyhow::Result;
use atop::rng::AtopRng;
use atop::transform::TransformConfig;
use burn::tensor::Device;

use super::blocks::first_pass;
use super::purifier::{PurifierBatch, PurifierTraining, reconstruction_error, to_purify_size};
use crate::config::{GanTerm, OptimConfig};
use crate::data::Dataset;
use crate::train::{Stage, StepAt};

/// Pre-training: the purifier (and the GAN's discriminator) learn to
/// rebuild the clean image from its transform.
pub struct PretrainStage<'a> {
    pub training: PurifierTraining,
    pub transform: TransformConfig,
    pub cfg: OptimConfig,
    pub train: &'a Dataset,
    pub val: &'a Dataset,
    pub device: Device,
    pub purify_size: usize,
}

impl Stage for PretrainStage<'_> {
    fn name(&self) -> &'static str {
        "pretrain"
    }

    fn step(
        &mut self,
        batch: &[usize],
        at: StepAt,
        rng: &mut AtopRng,
    ) -> Result<BTreeMap<String, f64>> {
        let (x, _) = self.train.batch(batch, None, &self.device);
        let x = to_purify_size(x, self.purify_size);
        let draw = self.transform.draw(rng, x.dims())?;
        let t = first_pass(draw.apply(x.clone())?);
        let batch = PurifierBatch {
            input: t.image,
            mask: t.mask,
            target: x,
        };
        // Pre-training always trains the generator against the discriminator.
        self.training.step(batch, at.lr(self.cfg.lr), GanTerm::Live)
    }

    fn validate(&mut self, rng: &mut AtopRng) -> Result<f64> {
        let device = self.device.clone().without_autodiff();
        let err = reconstruction_error(
            self.training.purifier(),
            &self.transform,
            self.purify_size,
            self.val,
            128,
            &device,
            rng,
        )?;
        Ok(-err)
    }

    super::blocks::purifier_stage_persistence!();
}
