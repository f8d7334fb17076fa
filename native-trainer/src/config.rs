//! Run configuration: a TOML file (see configs/) with command-line overrides
//! (`--set finetune.lambda=0.1`). Unknown keys and impossible values are
//! errors that name the key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use atop::attack::{
    AutoAttackComponent, AutoAttackVersion, GradientMode, IterateSelection, Norm, PgdLoss,
};
use atop::model::{ClassifierConfig, DiscriminatorConfig, PurifierConfig};
use atop::transform::TransformConfig;
use serde::{Deserialize, Serialize};

use crate::data::{Augment, DatasetKind};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub data: DataConfig,
    pub classifier: ClassifierConfig,
    pub purifier: PurifierConfig,
    #[serde(default)]
    pub discriminator: DiscriminatorConfig,
    #[serde(default)]
    pub transform: TransformConfig,
    pub train_classifier: ClassifierTrainingConfig,
    pub pretrain: OptimConfig,
    pub finetune: FinetuneConfig,
    pub eval: EvalConfig,
    #[serde(default)]
    pub run: RunSettings,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub dataset: DatasetKind,
    /// Directory of the dataset files; Fashion-MNIST is found automatically.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Fraction of TRAINING data held out for checkpoint selection.
    #[serde(default = "default_validation_fraction")]
    pub validation_fraction: f64,
    /// Use only the first N training points after the split (0 = all).
    #[serde(default)]
    pub train_limit: usize,
    /// Use only the first N validation points (0 = all); selection runs an
    /// attack on every one of them each epoch.
    #[serde(default)]
    pub validation_limit: usize,
    /// Side length for image-folder data (ImageNette).
    #[serde(default)]
    pub image_size: usize,
    /// Resize images to this side before purifying (the paper's 256x256 path); 0 = native.
    #[serde(default)]
    pub purify_size: usize,
    #[serde(default)]
    pub augment: Augment,
}

fn default_validation_fraction() -> f64 {
    0.1
}

/// Upper bounds on the budgets a configuration or protocol may ask for, so
/// that a typo (`steps = 100000000`) is an error naming the limit rather
/// than a run that never ends. Each is far above any published protocol.
pub mod limits {
    pub const STEPS: usize = 10_000;
    pub const EOT: usize = 1_000;
    pub const RESTARTS: usize = 100;
    pub const QUERIES: usize = 1_000_000;
    pub const TARGET_CLASSES: usize = 1_000;
    pub const DRAWS: usize = 1_000;
    pub const SUBSET: usize = 1_000_000;
    pub const EPOCHS: usize = 100_000;
    pub const BATCH: usize = 65_536;
    pub const IMAGE_SIDE: usize = 4096;
}

/// A training stage's optimisation settings (Adam).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    #[serde(default = "default_betas")]
    pub betas: [f32; 2],
    /// Stop an epoch after this many steps (0 = the whole epoch).
    #[serde(default)]
    pub max_steps_per_epoch: usize,
    /// The GAN discriminator's learning rate as a multiple of `lr` (two
    /// time-scale updates, Heusel et al.); 1 = the same rate.
    #[serde(default = "unit")]
    pub discriminator_lr_scale: f64,
    /// Weight of the generator's adversarial term -mean D(g(t(x))) against
    /// the L1 terms (DeepFillv2: 1).
    #[serde(default = "unit")]
    pub gan_weight: f64,
    /// How the learning rate moves over the stage's steps (`constant` keeps
    /// `lr`; `cosine` anneals it to 0 by the last step). Left out of the
    /// serialised configuration at its default, so older runs' configuration
    /// hashes and manifests do not change.
    #[serde(default, skip_serializing_if = "LrSchedule::is_constant")]
    pub lr_schedule: LrSchedule,
    /// Linear warm-up of the learning rate from lr/warmup_steps to lr over
    /// the first steps (0 = none), before the schedule.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warmup_steps: usize,
}

/// A stage's learning-rate schedule.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    #[default]
    Constant,
    /// Half a cosine from lr (after warm-up) to 0 at the stage's last step.
    Cosine,
}

impl LrSchedule {
    fn is_constant(&self) -> bool {
        *self == Self::Constant
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn unit() -> f64 {
    1.0
}

fn default_betas() -> [f32; 2] {
    [0.9, 0.999]
}

/// How `atop train-classifier` trains: normally or adversarially.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AdversarialTraining {
    /// Cross-entropy on clean images.
    #[default]
    None,
    /// Madry et al.'s PGD-AT: cross-entropy on PGD adversarials.
    Pgd,
    /// TRADES (Zhang et al. 2019): clean cross-entropy plus beta times the
    /// KL divergence between clean and adversarial predictions.
    Trades,
}

impl AdversarialTraining {
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Pgd => "pgd",
            Self::Trades => "trades",
        }
    }
}

/// The classifier's training: Adam settings and, for adversarial
/// training, the training attack (L-infinity, random start). The attack's
/// defaults are Fashion-MNIST's: eps 0.1, 10 steps of 0.02.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassifierTrainingConfig {
    #[serde(flatten)]
    pub optim: OptimConfig,
    #[serde(default)]
    pub adversarial: AdversarialTraining,
    /// TRADES' weight of the robustness (KL) term.
    #[serde(default = "six")]
    pub trades_beta: f64,
    #[serde(default = "fmnist_eps")]
    pub attack_eps: f64,
    #[serde(default = "ten")]
    pub attack_steps: usize,
    #[serde(default = "fmnist_step_size")]
    pub attack_step_size: f64,
    /// Train (and select) on the [transform]'s outputs instead of clean
    /// images: the classifier then goes into an artifact with the identity
    /// purifier and the transform, and `atop eval` of it measures how much
    /// of the image the transform leaves (docs/method.md section 6).
    #[serde(default)]
    pub transform_inputs: bool,
}

fn six() -> f64 {
    6.0
}
fn fmnist_eps() -> f64 {
    0.1
}
fn ten() -> usize {
    10
}
fn fmnist_step_size() -> f64 {
    0.02
}

/// Which attack generates the training examples of AToP.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TrainingAttackKind {
    Fgsm,
    Pgd,
}

/// What the training attack differentiates.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AttackThrough {
    /// The classifier alone (the paper).
    Classifier,
    /// The whole pipeline t -> g -> f (ours, optional).
    Defense,
}

/// The generator's GAN term during fine-tuning.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum GanTerm {
    /// Gradients flow (the paper's formula).
    Live,
    /// Detached, adding no gradient (the public code).
    Detached,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    #[serde(flatten)]
    pub optim: OptimConfig,
    /// Weight of the classifier's cross-entropy on purified adversarial images.
    pub lambda: f64,
    /// Epochs before the cross-entropy term switches on.
    #[serde(default)]
    pub warmup_epochs: usize,
    pub attack: TrainingAttackKind,
    pub attack_through: AttackThrough,
    pub attack_eps: f64,
    #[serde(default = "one")]
    pub attack_steps: usize,
    /// PGD's step size in the training attack (0 = the attack's default,
    /// 2.5 * attack_eps / attack_steps).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub attack_step_size: f64,
    pub gan_term: GanTerm,
    /// Also write the defense after every epoch as
    /// `OUT/epochs/atop-epoch-NNN.safetensors`, so a budget study can
    /// evaluate every point of one long run with a strong attack.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_epoch_artifacts: bool,
}

fn is_zero_f64(x: &f64) -> bool {
    *x == 0.0
}

fn one() -> usize {
    1
}

/// Which evaluation attack (docs/method.md section 6).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum EvalAttackKind {
    #[default]
    Pgd,
    Fgsm,
    ApgdCe,
    ApgdDlr,
    ApgdT,
    FabT,
    Square,
    Cw,
    /// StAdv's spatial flow (unseen threat model); `eps` bounds the flow in
    /// normalized coordinates (0.05 as in DiffPure), `norm` must be linf.
    Stadv,
    /// An AutoAttack composition (`version`: standard, rand or custom).
    Autoattack,
}

impl EvalAttackKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pgd => "pgd",
            Self::Fgsm => "fgsm",
            Self::ApgdCe => "apgd-ce",
            Self::ApgdDlr => "apgd-dlr",
            Self::ApgdT => "apgd-t",
            Self::FabT => "fab-t",
            Self::Square => "square",
            Self::Cw => "cw",
            Self::Stadv => "stadv",
            Self::Autoattack => "autoattack",
        }
    }

    /// Whether the attack follows gradients (Square only queries scores).
    pub fn uses_gradients(self) -> bool {
        self != Self::Square
    }
}

/// One evaluation attack: kind, threat model, strength and gradient mode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvalAttack {
    #[serde(default)]
    pub attack: EvalAttackKind,
    pub norm: Norm,
    pub eps: f64,
    /// Iterations (PGD, APGD, FAB, C&W; AutoAttack's APGD/FAB).
    #[serde(default = "hundred")]
    pub steps: usize,
    /// Gradient samples per step for randomized targets.
    #[serde(default = "one")]
    pub eot: usize,
    pub mode: GradientMode,
    /// Runs from independent random starts per point (1 = no restart), for
    /// every attack that has them (PGD, APGD, Square).
    #[serde(default = "one")]
    pub restarts: usize,
    /// Square's query budget (also inside AutoAttack).
    #[serde(default = "five_thousand")]
    pub queries: usize,
    /// Target classes of APGD-T and FAB-T.
    #[serde(default = "nine")]
    pub target_classes: usize,
    /// AutoAttack's composition.
    #[serde(default)]
    pub version: AutoAttackVersion,
    /// The attacks of a custom AutoAttack.
    #[serde(default)]
    pub attacks: Vec<AutoAttackComponent>,
    /// The step size, absolute, in the threat model's units: PGD's step (in
    /// (0, 2 eps]; default 2.5 eps / steps) and StAdv's Adam step on the
    /// flow (in (0, 2 bound]; default 0.01). Other attacks set their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_size: Option<f64>,
    /// PGD's loss: `ce` (default), `margin` or `dlr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<PgdLoss>,
    /// PGD's random start in the eps-ball (default); false starts at the
    /// clean image.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub random_start: bool,
    /// What APGD and AutoAttack keep per point: `first-fooled` (the
    /// official code's rule, default, for parity) or `best-loss` (every
    /// point attacked by every restart and component, the iterate of
    /// highest EOT-mean loss kept; for randomized defenses).
    #[serde(default, skip_serializing_if = "is_first_fooled")]
    pub selection: IterateSelection,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_first_fooled(s: &IterateSelection) -> bool {
    *s == IterateSelection::FirstFooled
}

impl EvalAttack {
    /// The schedule knobs against the attacks that take them; the error
    /// starts with the key (the caller prefixes `eval.attacks[i].`).
    pub fn validate_schedule(&self) -> std::result::Result<(), String> {
        use EvalAttackKind::*;
        if let Some(a) = self.step_size {
            if !matches!(self.attack, Pgd | Stadv) {
                return Err(format!(
                    "step_size: {} sets its own step (only pgd and stadv take one)",
                    self.attack.name()
                ));
            }
            let max = 2.0 * self.eps;
            if !(a.is_finite() && a > 0.0 && a <= max) {
                return Err(format!(
                    "step_size must be finite and in (0, 2 * eps] = (0, {max}], got {a}"
                ));
            }
        }
        if self.loss.is_some() && self.attack != Pgd {
            return Err(format!(
                "loss: only pgd takes a loss ({} has its own)",
                self.attack.name()
            ));
        }
        if !self.random_start && self.attack != Pgd {
            return Err(format!(
                "random_start: only pgd can start at the clean image ({} always starts at random)",
                self.attack.name()
            ));
        }
        if self.selection != IterateSelection::FirstFooled
            && !matches!(self.attack, ApgdCe | ApgdDlr | ApgdT | Autoattack)
        {
            return Err(format!(
                "selection: only apgd-ce, apgd-dlr, apgd-t and autoattack choose iterates ({} keeps its last)",
                self.attack.name()
            ));
        }
        Ok(())
    }

    /// The step size the attack runs with, where it has one fixed step:
    /// PGD's (given or 2.5 eps / steps), FGSM's eps, StAdv's Adam step.
    /// APGD adapts its own (None).
    pub fn effective_step_size(&self) -> Option<f64> {
        match self.attack {
            EvalAttackKind::Pgd => Some(
                self.step_size
                    .unwrap_or(2.5 * self.eps / self.steps.max(1) as f64),
            ),
            EvalAttackKind::Fgsm => Some(self.eps),
            EvalAttackKind::Stadv => Some(self.step_size.unwrap_or(0.01)),
            _ => None,
        }
    }

    /// The loss the attack ascends, by name.
    pub fn loss_name(&self) -> &'static str {
        use EvalAttackKind::*;
        match self.attack {
            Pgd => self.loss.unwrap_or_default().name(),
            Fgsm => "ce",
            ApgdCe => "ce",
            ApgdDlr => "dlr",
            ApgdT => "dlr-targeted",
            FabT => "min-norm",
            Square | Stadv => "margin",
            Cw => "cw",
            Autoattack => match self.version {
                AutoAttackVersion::Standard => "ce, dlr-targeted, min-norm, margin",
                AutoAttackVersion::Rand => "ce, dlr",
                AutoAttackVersion::Custom => "per component",
            },
        }
    }
}

fn five_hundred_twelve() -> usize {
    512
}
fn hundred() -> usize {
    100
}
fn five_thousand() -> usize {
    5000
}
fn nine() -> usize {
    9
}

/// The data an evaluation draws its subset from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum EvalSplit {
    #[default]
    Test,
    /// The validation split carved from the training data (`data.validation_fraction`,
    /// `data.validation_limit`).
    Validation,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// The protocol's name and, for a reduced one, what it reduces; every
    /// row of the report carries it.
    #[serde(default)]
    pub protocol: String,
    /// Which data the subset is drawn from: the test set, or (for recipe
    /// studies, which must never select on test data) the validation split
    /// carved from the training set.
    #[serde(default)]
    pub split: EvalSplit,
    /// Test points evaluated (a seeded subset of the test set; 512 when not given).
    #[serde(default = "five_hundred_twelve")]
    pub subset: usize,
    pub subset_seed: u64,
    pub batch_size: usize,
    /// Final draws per point when scoring a randomized defense.
    pub score_draws: usize,
    pub attacks: Vec<EvalAttack>,
    /// The under-tuning check: each gradient attack on a randomized defense
    /// rerun stronger on a slice of the points.
    #[serde(default, skip_serializing_if = "TuningProbe::is_default")]
    pub tuning_probe: TuningProbe,
    /// The most input values (images x channels x pixels) one EOT pass
    /// sends through a defense; a larger repeated batch runs in chunks with
    /// the same gradient (default: one draw per pass on CPUs, 2^22 values on
    /// GPUs, 21 images at 256x256 RGB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eot_chunk_values: Option<usize>,
}

impl EvalConfig {
    /// Applies `eot_chunk_values`, when set, to this thread's attacks.
    pub fn apply_eot_chunk_values(&self) {
        if let Some(values) = self.eot_chunk_values {
            atop::attack::set_eot_chunk_values(values);
        }
    }
}

/// The under-tuning check's settings: on the first `points` points, each
/// gradient attack on a randomized defense runs again with its step size
/// times `step_factor` (capped at 2 eps; PGD and StAdv) and its EOT times
/// `eot_factor` (capped at `max_eot`); the report warns when that probe
/// leaves more than `margin` less expected accuracy than the protocol's
/// attack on the same points.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TuningProbe {
    /// Points probed (0 = no check).
    pub points: usize,
    pub step_factor: f64,
    pub eot_factor: usize,
    pub max_eot: usize,
    /// Accuracy difference (a fraction) above which the report warns.
    pub margin: f64,
}

impl Default for TuningProbe {
    fn default() -> Self {
        Self {
            points: 32,
            step_factor: 4.0,
            eot_factor: 4,
            max_eot: 20,
            margin: 0.05,
        }
    }
}

impl TuningProbe {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    pub seed: u64,
    /// Write a checkpoint every N optimiser steps (and at each epoch end).
    pub checkpoint_every: usize,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            seed: 777,
            checkpoint_every: 200,
        }
    }
}

impl RunConfig {
    /// Reads a TOML file, applies `key=value` overrides, checks the values.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = crate::fsutil::read_text_bounded(
            path,
            crate::fsutil::read_limits::TEXT_FILE,
            "config",
        )?;
        Self::parse(&text, overrides).with_context(|| format!("config {}", path.display()))
    }

    pub fn parse(text: &str, overrides: &[String]) -> Result<Self> {
        let mut value: toml::Table = toml::from_str(text).context("invalid TOML")?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        let config: RunConfig = RunConfig::deserialize(toml::Value::Table(value))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every user-given budget against its limit (bounded work).
    fn validate_budgets(&self) -> Result<()> {
        let mut budgets: Vec<(String, usize, usize)> = vec![
            ("eval.subset".into(), self.eval.subset, limits::SUBSET),
            (
                "eval.tuning_probe.points".into(),
                self.eval.tuning_probe.points,
                limits::SUBSET,
            ),
            (
                "eval.tuning_probe.max_eot".into(),
                self.eval.tuning_probe.max_eot,
                limits::EOT,
            ),
            (
                "eval.score_draws".into(),
                self.eval.score_draws,
                limits::DRAWS,
            ),
            (
                "eval.batch_size".into(),
                self.eval.batch_size,
                limits::BATCH,
            ),
            (
                "finetune.attack_steps".into(),
                self.finetune.attack_steps,
                limits::STEPS,
            ),
            (
                "train_classifier.attack_steps".into(),
                self.train_classifier.attack_steps,
                limits::STEPS,
            ),
            (
                "data.image_size".into(),
                self.data.image_size,
                limits::IMAGE_SIDE,
            ),
            (
                "data.purify_size".into(),
                self.data.purify_size,
                limits::IMAGE_SIDE,
            ),
        ];
        for (name, o) in [
            ("train_classifier", &self.train_classifier.optim),
            ("pretrain", &self.pretrain),
            ("finetune", &self.finetune.optim),
        ] {
            budgets.push((format!("{name}.epochs"), o.epochs, limits::EPOCHS));
            budgets.push((format!("{name}.batch_size"), o.batch_size, limits::BATCH));
            budgets.push((
                format!("{name}.warmup_steps"),
                o.warmup_steps,
                limits::EPOCHS,
            ));
        }
        for (i, a) in self.eval.attacks.iter().enumerate() {
            let key = |k: &str| format!("eval.attacks[{i}].{k}");
            budgets.extend([
                (key("steps"), a.steps, limits::STEPS),
                (key("eot"), a.eot, limits::EOT),
                (key("restarts"), a.restarts, limits::RESTARTS),
                (key("queries"), a.queries, limits::QUERIES),
                (
                    key("target_classes"),
                    a.target_classes,
                    limits::TARGET_CLASSES,
                ),
            ]);
        }
        if let Some((name, value, max)) = budgets.into_iter().find(|(_, v, max)| v > max) {
            bail!("{name} = {value} is over the limit of {max}");
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<()> {
        self.validate_budgets()?;
        // The transform's own ranges; the grid is checked against the data's
        // image size once it is loaded (validate_for_images).
        let g = self.transform.grid.max(1);
        self.transform
            .validate(g, g)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let channels = self.classifier.image_channels();
        if self.purifier.image_channels() != channels {
            bail!(
                "purifier.image_channels ({}) differs from the classifier's ({channels})",
                self.purifier.image_channels()
            );
        }
        for (name, o) in [
            ("train_classifier", &self.train_classifier.optim),
            ("pretrain", &self.pretrain),
            ("finetune", &self.finetune.optim),
        ] {
            if o.batch_size == 0 {
                bail!("{name}.batch_size must be at least 1");
            }
            if !(o.lr.is_finite() && o.lr > 0.0) {
                bail!("{name}.lr must be finite and > 0, got {}", o.lr);
            }
            let scale = o.discriminator_lr_scale;
            if !(scale.is_finite() && scale > 0.0) {
                bail!("{name}.discriminator_lr_scale must be finite and > 0, got {scale}");
            }
            if !(o.gan_weight.is_finite() && o.gan_weight >= 0.0) {
                bail!(
                    "{name}.gan_weight must be finite and >= 0, got {}",
                    o.gan_weight
                );
            }
        }
        let step = self.finetune.attack_step_size;
        if !(step.is_finite() && step >= 0.0 && step <= 2.0 * self.finetune.attack_eps.max(0.0)) {
            bail!(
                "finetune.attack_step_size must be in [0, 2 * attack_eps] (0 = the default), got {step}"
            );
        }
        if !(self.finetune.attack_eps.is_finite() && self.finetune.attack_eps >= 0.0) {
            bail!(
                "finetune.attack_eps must be >= 0, got {}",
                self.finetune.attack_eps
            );
        }
        let tc = &self.train_classifier;
        for (key, value) in [
            ("attack_eps", tc.attack_eps),
            ("attack_step_size", tc.attack_step_size),
            ("trades_beta", tc.trades_beta),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                bail!("train_classifier.{key} must be finite and >= 0, got {value}");
            }
        }
        if tc.adversarial != AdversarialTraining::None && tc.transform_inputs {
            bail!(
                "train_classifier.transform_inputs and adversarial training do not combine: pick one"
            );
        }
        if tc.adversarial != AdversarialTraining::None && tc.attack_steps == 0 {
            bail!("train_classifier.attack_steps must be at least 1 for adversarial training");
        }
        if !(self.finetune.lambda.is_finite() && self.finetune.lambda >= 0.0) {
            bail!("finetune.lambda must be >= 0, got {}", self.finetune.lambda);
        }
        let p = &self.eval.tuning_probe;
        if !(p.step_factor.is_finite() && p.step_factor >= 1.0) {
            bail!(
                "eval.tuning_probe.step_factor must be finite and >= 1, got {}",
                p.step_factor
            );
        }
        if !(p.margin.is_finite() && (0.0..=1.0).contains(&p.margin)) {
            bail!(
                "eval.tuning_probe.margin must be in [0, 1], got {}",
                p.margin
            );
        }
        if p.eot_factor == 0 || p.max_eot == 0 {
            bail!("eval.tuning_probe.eot_factor and max_eot must be at least 1");
        }
        for (i, a) in self.eval.attacks.iter().enumerate() {
            if !(a.eps.is_finite() && a.eps >= 0.0) {
                bail!("eval.attacks[{i}].eps must be >= 0, got {}", a.eps);
            }
            if a.steps == 0 || a.eot == 0 || a.queries == 0 || a.restarts == 0 {
                bail!(
                    "eval.attacks[{i}]: steps, eot, queries and restarts (runs) must be at least 1"
                );
            }
            a.validate_schedule()
                .map_err(|e| anyhow::anyhow!("eval.attacks[{i}].{e}"))?;
            if a.attack == EvalAttackKind::Stadv && a.norm != Norm::Linf {
                bail!(
                    "eval.attacks[{i}]: stadv bounds its flow in L-infinity, set norm = \"linf\""
                );
            }
            if a.attack == EvalAttackKind::Cw && a.norm != Norm::L2 {
                bail!("eval.attacks[{i}]: cw is an L2 attack, set norm = \"l2\"");
            }
            if a.attack == EvalAttackKind::Autoattack
                && a.version == AutoAttackVersion::Custom
                && a.attacks.is_empty()
            {
                bail!("eval.attacks[{i}]: a custom AutoAttack needs `attacks = [...]`");
            }
        }
        if self.eval.batch_size == 0 || self.eval.subset == 0 {
            bail!("eval.batch_size and eval.subset must be at least 1");
        }
        Ok(())
    }

    /// The discriminator, for the purifier's channel count.
    pub fn discriminator_config(&self) -> DiscriminatorConfig {
        DiscriminatorConfig {
            image_channels: self.purifier.image_channels(),
            ..self.discriminator.clone()
        }
    }

    /// Checks the transform against the data's image size.
    pub fn validate_for_images(&self, [_, h, w]: [usize; 3]) -> Result<()> {
        let size = if self.data.purify_size > 0 {
            self.data.purify_size
        } else {
            h
        };
        let width = if self.data.purify_size > 0 {
            self.data.purify_size
        } else {
            w
        };
        self.transform
            .validate(size, width)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// `a.b.c=value`: value parsed as a TOML value, else taken as a string.
fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let (key, raw) = assignment
        .split_once('=')
        .with_context(|| format!("override `{assignment}` is not KEY=VALUE"))?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let (last, parents) = parts.split_last().context("empty override key")?;
    let mut node = table;
    for p in parents {
        node = node
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .with_context(|| format!("override `{key}`: `{p}` is not a table"))?;
    }
    node.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmnist() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/fmnist.toml"
        ))
        .unwrap()
    }

    fn err(overrides: &[&str]) -> String {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        format!("{:#}", RunConfig::parse(&fmnist(), &o).unwrap_err())
    }

    #[test]
    fn the_shipped_configs_parse() {
        for name in ["fmnist", "fmnist-at", "cifar10", "cifar100", "imagenette"] {
            let path = format!("{}/../configs/{name}.toml", env!("CARGO_MANIFEST_DIR"));
            RunConfig::load(Path::new(&path), &[]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }

    #[test]
    fn the_shipped_protocols_parse_and_name_themselves() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/protocols");
        let base = RunConfig::parse(&fmnist(), &[]).unwrap();
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let eval: EvalConfig =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                !eval.protocol.is_empty(),
                "{}: no protocol name",
                path.display()
            );
            let mut cfg = base.clone();
            cfg.eval = eval;
            cfg.validate()
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            seen += 1;
        }
        assert!(seen >= 4, "only {seen} protocols");
    }

    #[test]
    fn overrides_replace_values() {
        let cfg = RunConfig::parse(
            &fmnist(),
            &["finetune.lambda=0.3".into(), "eval.subset=16".into()],
        )
        .unwrap();
        assert_eq!(cfg.finetune.lambda, 0.3);
        assert_eq!(cfg.eval.subset, 16);
        assert_eq!(cfg.transform.grid, 7);
    }

    #[test]
    fn unknown_keys_and_impossible_values_name_the_key() {
        assert!(err(&["finetune.lamda=0.3"]).contains("lamda"));
        assert!(err(&["transform.missing_rate=1.5"]).contains("missing_rate"));
        assert!(err(&["finetune.attack_eps=-0.1"]).contains("attack_eps"));
        assert!(err(&["pretrain.batch_size=0"]).contains("pretrain.batch_size"));
        assert!(err(&["purifier.image_channels=3"]).contains("image_channels"));
        assert!(err(&["lambda"]).contains("KEY=VALUE"));
        // Budgets are bounded, and the error names the key and the limit.
        let e = err(&["eval.subset=100000000"]);
        assert!(
            e.contains("eval.subset = 100000000 is over the limit of 1000000"),
            "{e}"
        );
        let e = err(&["pretrain.epochs=100000000"]);
        assert!(e.contains("pretrain.epochs") && e.contains("limit"), "{e}");
        let hang = fmnist().replacen("steps = 10,", "steps = 100000000,", 1);
        let e = format!("{:#}", RunConfig::parse(&hang, &[]).unwrap_err());
        assert!(
            e.contains(".steps = 100000000 is over the limit of 10000"),
            "{e}"
        );
        let mut cfg = RunConfig::parse(&fmnist(), &[]).unwrap();
        cfg.transform.grid = 8;
        let e = format!("{:#}", cfg.validate_for_images([1, 28, 28]).unwrap_err());
        assert!(e.contains("transform.grid"), "{e}");
    }

    #[test]
    fn schedule_knobs_parse_and_are_checked() {
        let cfg = RunConfig::parse(
            &fmnist(),
            &[
                "finetune.lr_schedule=cosine".into(),
                "finetune.warmup_steps=100".into(),
                "finetune.attack_step_size=0.05".into(),
            ],
        )
        .unwrap();
        assert_eq!(cfg.finetune.optim.lr_schedule, LrSchedule::Cosine);
        assert_eq!(cfg.finetune.optim.warmup_steps, 100);
        assert_eq!(cfg.finetune.attack_step_size, 0.05);
        assert!(err(&["finetune.lr_schedule=linear"]).contains("linear"));
        for bad in ["-0.01", "0.3", "nan"] {
            let e = err(&[&format!("finetune.attack_step_size={bad}")]);
            assert!(e.contains("finetune.attack_step_size"), "{bad}: {e}");
        }
        let e = err(&["finetune.warmup_steps=1000000"]);
        assert!(
            e.contains("finetune.warmup_steps") && e.contains("limit"),
            "{e}"
        );
    }

    #[test]
    fn default_schedule_knobs_leave_the_serialised_configuration_alone() {
        // Older runs' configuration hashes and manifests stay valid.
        let cfg = RunConfig::parse(&fmnist(), &[]).unwrap();
        let finetune = serde_json::to_string(&cfg.finetune).unwrap();
        for key in [
            "lr_schedule",
            "warmup_steps",
            "attack_step_size",
            "keep_epoch_artifacts",
        ] {
            assert!(!finetune.contains(key), "{key} serialised at its default");
        }
        let pretrain = serde_json::to_string(&cfg.pretrain).unwrap();
        assert!(!pretrain.contains("lr_schedule") && !pretrain.contains("warmup_steps"));
    }

    /// The shipped config with its first attack given `extra` keys.
    fn first_attack_with(extra: &str) -> std::result::Result<RunConfig, String> {
        let text = fmnist().replacen(
            r#"eot = 2, mode = "full" }"#,
            &format!(r#"eot = 2, mode = "full", {extra} }}"#),
            1,
        );
        assert_ne!(text, fmnist(), "the shipped config's first attack moved");
        RunConfig::parse(&text, &[]).map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn attack_schedules_are_checked_and_named() {
        let cfg = first_attack_with(r#"step_size = 0.025, loss = "margin", random_start = false"#)
            .unwrap();
        let a = &cfg.eval.attacks[0];
        assert_eq!(
            (a.step_size, a.loss, a.random_start),
            (Some(0.025), Some(PgdLoss::Margin), false)
        );
        assert_eq!(a.effective_step_size(), Some(0.025));
        // The default step: 2.5 eps / steps.
        let plain = RunConfig::parse(&fmnist(), &[]).unwrap();
        assert_eq!(plain.eval.attacks[0].effective_step_size(), Some(0.025));
        for bad in ["nan", "0", "-0.01", "0.21", "inf"] {
            let e = first_attack_with(&format!("step_size = {bad}")).unwrap_err();
            assert!(
                e.contains("eval.attacks[0].step_size") && e.contains("(0, 0.2]"),
                "{bad}: {e}"
            );
        }
        let e = first_attack_with(r#"loss = "hinge""#).unwrap_err();
        assert!(e.contains("hinge"), "{e}");
        let apgd = |extra: &str| {
            first_attack_with(&format!(r#"attack = "apgd-ce", {extra}"#))
                .err()
                .unwrap_or_default()
        };
        assert!(apgd("step_size = 0.01").contains("eval.attacks[0].step_size"));
        assert!(apgd(r#"loss = "ce""#).contains("eval.attacks[0].loss"));
        assert!(apgd("random_start = false").contains("eval.attacks[0].random_start"));
        assert_eq!(apgd(r#"selection = "best-loss""#), "");
        let e = first_attack_with(r#"selection = "best-loss""#).unwrap_err();
        assert!(e.contains("eval.attacks[0].selection"), "{e}");
        // Defaults leave the serialised protocol as it was.
        let json = serde_json::to_string(&plain.eval).unwrap();
        for key in [
            "step_size",
            "loss",
            "random_start",
            "selection",
            "tuning_probe",
        ] {
            assert!(!json.contains(key), "{key} serialised at its default");
        }
    }

    #[test]
    fn the_tuning_probe_is_checked() {
        let e = err(&["eval.tuning_probe.step_factor=0.5"]);
        assert!(e.contains("eval.tuning_probe.step_factor"), "{e}");
        let e = err(&["eval.tuning_probe.margin=nan"]);
        assert!(e.contains("eval.tuning_probe.margin"), "{e}");
        let e = err(&["eval.tuning_probe.points=100000000"]);
        assert!(
            e.contains("eval.tuning_probe.points") && e.contains("limit"),
            "{e}"
        );
    }
}
