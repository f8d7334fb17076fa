//! AToP fine-tuning (docs/method.md section 5): the purifier's generative loss on
//! the adversarial path plus lambda * CE(f(g(t(x_adv))), y) with a frozen
//! classifier; the reconstruction target is the clean x. Selection by
//! robust accuracy on validation data under the training attack.

use std::collections::BTreeMap;

use anyhow::Result;
use atop::attack::{ClassifierTarget, DefenseTarget, GradientMode, PgdConfig, fgsm, pgd};
use atop::defense::{Defense, resize};
use atop::model::{Classifier, Purifier};
use atop::rng::AtopRng;
use atop::transform::TransformConfig;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::blocks::{correct, cross_entropy, first_pass};
use super::purifier::{LossTerm, PurifierBatch, PurifierTraining, to_purify_size};
use crate::config::{AttackThrough, FinetuneConfig, TrainingAttackKind};
use crate::data::Dataset;
use crate::train::{EpochEnd, Stage, StepAt};

/// Writes the defense of one epoch (its index, the purifier) somewhere.
pub type EpochWriter<'a> = Box<dyn Fn(EpochEnd, &Purifier) -> Result<()> + 'a>;

pub struct FinetuneStage<'a> {
    pub training: PurifierTraining,
    /// Frozen: eval-mode normalisation, no updates; gradients still flow.
    pub classifier: Classifier,
    pub transform: TransformConfig,
    pub cfg: FinetuneConfig,
    pub train: &'a Dataset,
    pub val: &'a Dataset,
    pub device: Device,
    pub purify_size: usize,
    /// When set, called with every epoch's purifier (`keep_epoch_artifacts`).
    pub epoch_writer: Option<EpochWriter<'a>>,
}

/// The training attack: FGSM or PGD, on the classifier alone or the whole defense.
pub fn training_attack(
    cfg: &FinetuneConfig,
    classifier: &Classifier,
    defense: Option<&Defense>,
    x: Tensor<4>,
    y: &[i64],
    rng: &mut AtopRng,
) -> Result<Tensor<4>> {
    let pgd_cfg = PgdConfig {
        eps: cfg.attack_eps,
        steps: cfg.attack_steps.max(1),
        step_size: (cfg.attack_step_size > 0.0).then_some(cfg.attack_step_size),
        ..PgdConfig::default()
    };
    let adv = match (cfg.attack_through, defense) {
        (AttackThrough::Defense, Some(defense)) => {
            let target = DefenseTarget::new(defense, GradientMode::Full);
            match cfg.attack {
                TrainingAttackKind::Fgsm => fgsm(&target, x, y, cfg.attack_eps, 1, rng)?,
                TrainingAttackKind::Pgd => pgd(&target, x, y, &pgd_cfg, rng)?,
            }
        }
        _ => {
            let target = ClassifierTarget(classifier);
            match cfg.attack {
                TrainingAttackKind::Fgsm => fgsm(&target, x, y, cfg.attack_eps, 1, rng)?,
                TrainingAttackKind::Pgd => pgd(&target, x, y, &pgd_cfg, rng)?,
            }
        }
    };
    Ok(adv.detach())
}

impl FinetuneStage<'_> {
    /// The current defense (purifier frozen for attacking and validation).
    fn defense(&self) -> Defense {
        Defense::new(
            self.transform.clone(),
            self.training.purifier().clone().freeze(),
            self.classifier.clone(),
        )
        .with_purify_size(self.purify_size)
    }

    fn lambda(&self, epoch: usize) -> f64 {
        if epoch < self.cfg.warmup_epochs {
            0.0
        } else {
            self.cfg.lambda
        }
    }
}

impl Stage for FinetuneStage<'_> {
    fn name(&self) -> &'static str {
        "finetune"
    }

    fn step(
        &mut self,
        batch: &[usize],
        at: StepAt,
        rng: &mut AtopRng,
    ) -> Result<BTreeMap<String, f64>> {
        let (x, y) = self.train.batch(batch, None, &self.device);
        let defense = (self.cfg.attack_through == AttackThrough::Defense).then(|| self.defense());
        let x_adv = training_attack(
            &self.cfg,
            &self.classifier,
            defense.as_ref(),
            x.clone(),
            &y,
            rng,
        )?;
        let [_, _, h, w] = x.dims();
        let x_adv = to_purify_size(x_adv, self.purify_size);
        let draw = self.transform.draw(rng, x_adv.dims())?;
        let t = first_pass(draw.apply(x_adv)?);
        let lambda = self.lambda(at.epoch);
        let classifier = &self.classifier;
        let batch = PurifierBatch {
            input: t.image,
            mask: t.mask,
            target: to_purify_size(x, self.purify_size),
        };
        let mut losses = self.training.step_with(
            batch,
            at.lr(self.cfg.optim.lr),
            self.cfg.gan_term,
            |purified| {
                let purified = resize(purified, [0, 0, h, w]);
                let ce = cross_entropy(classifier.forward(purified)?, &y);
                Ok(vec![LossTerm {
                    name: "ce_adv",
                    value: ce.mul_scalar(lambda),
                }])
            },
        )?;
        losses.insert("lambda".into(), lambda);
        Ok(losses)
    }

    fn validate(&mut self, rng: &mut AtopRng) -> Result<f64> {
        // Robust accuracy of the defense under the training attack, on
        // validation data carved from the training set.
        let defense = self.defense();
        let indices: Vec<usize> = (0..self.val.len()).collect();
        let mut right = 0;
        for chunk in indices.chunks(128) {
            let (x, y) = self.val.batch(chunk, None, &self.device);
            let x_adv = training_attack(&self.cfg, &self.classifier, Some(&defense), x, &y, rng)?;
            let logits = defense.forward(x_adv, rng)?.logits.detach();
            right += correct(logits, &y)?;
        }
        Ok(right as f64 / self.val.len().max(1) as f64)
    }

    fn after_epoch(&mut self, end: EpochEnd) -> Result<()> {
        match &self.epoch_writer {
            Some(write) => write(end, &self.training.purifier().valid()),
            None => Ok(()),
        }
    }

    super::blocks::purifier_stage_persistence!();
}
