//! AutoAttack compositions (Croce & Hein, ICML 2020): attacks run one after
//! another, each only on the points every earlier attack left robust, so the
//! result is the worst case per point.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::apgd::{ApgdConfig, ApgdLoss, apgd, apgd_targeted};
use super::common::{
    IterateSelection, Norm, check_eps, check_labels, keep_higher, mean_margin, scatter_rows,
    select_rows, wrong_once,
};
use super::fab::{FabConfig, fab_targeted};
use super::square::{SquareConfig, square};
use super::target::AttackTarget;
use crate::error::{AtopError, Result};
use crate::rng::AtopRng;

/// One attack of a composition.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AutoAttackComponent {
    ApgdCe,
    ApgdDlr,
    /// Targeted APGD-DLR over the top `target_classes` other classes.
    ApgdT,
    /// Targeted FAB over the top `target_classes` other classes.
    FabT,
    Square,
}

impl AutoAttackComponent {
    pub fn name(self) -> &'static str {
        match self {
            Self::ApgdCe => "apgd-ce",
            Self::ApgdDlr => "apgd-dlr",
            Self::ApgdT => "apgd-t",
            Self::FabT => "fab-t",
            Self::Square => "square",
        }
    }

    /// Whether the attack follows gradients (so gradient modes and EOT apply).
    pub fn uses_gradients(self) -> bool {
        self != Self::Square
    }
}

/// Which composition.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AutoAttackVersion {
    /// APGD-CE, APGD-T, FAB-T, Square (deterministic defenses).
    #[default]
    Standard,
    /// APGD-CE and APGD-DLR with EOT over `eot` draws (randomized defenses).
    Rand,
    /// The attacks listed in `attacks`, in that order.
    Custom,
}

/// AutoAttack settings; the defaults are the official ones.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AutoAttackConfig {
    pub norm: Norm,
    pub eps: f64,
    pub version: AutoAttackVersion,
    /// The attacks of a `custom` composition.
    pub attacks: Vec<AutoAttackComponent>,
    /// APGD iterations (and FAB's).
    pub steps: usize,
    /// Target classes of APGD-T and FAB-T.
    pub target_classes: usize,
    pub square_queries: usize,
    /// Gradient samples per APGD iteration: 1 in `standard`, 20 in `rand`.
    pub eot: usize,
    /// What each point keeps: the official first-fooled rule (parity with
    /// the official code), or every point attacked by every component and
    /// its best-loss iterate kept (for randomized defenses).
    pub selection: IterateSelection,
}

impl Default for AutoAttackConfig {
    fn default() -> Self {
        Self {
            norm: Norm::Linf,
            eps: 8.0 / 255.0,
            version: AutoAttackVersion::Standard,
            attacks: Vec::new(),
            steps: 100,
            target_classes: 9,
            square_queries: 5000,
            eot: 1,
            selection: IterateSelection::FirstFooled,
        }
    }
}

impl AutoAttackConfig {
    /// The official `rand` version: EOT over 20 draws.
    pub fn rand(norm: Norm, eps: f64) -> Self {
        Self {
            norm,
            eps,
            version: AutoAttackVersion::Rand,
            eot: 20,
            ..Self::default()
        }
    }

    /// The attacks this configuration runs, in order.
    pub fn components(&self) -> Vec<AutoAttackComponent> {
        use AutoAttackComponent::*;
        match self.version {
            AutoAttackVersion::Standard => vec![ApgdCe, ApgdT, FabT, Square],
            AutoAttackVersion::Rand => vec![ApgdCe, ApgdDlr],
            AutoAttackVersion::Custom => self.attacks.clone(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        check_eps(self.eps)?;
        if self.components().is_empty() {
            return Err(AtopError::config(
                "attack.attacks",
                "a custom AutoAttack needs at least one attack",
            ));
        }
        if self.steps == 0 || self.eot == 0 || self.square_queries == 0 {
            return Err(AtopError::config(
                "attack",
                "steps, eot and square_queries must be at least 1",
            ));
        }
        Ok(())
    }

    fn apgd(&self, loss: ApgdLoss) -> ApgdConfig {
        ApgdConfig {
            norm: self.norm,
            eps: self.eps,
            steps: self.steps,
            restarts: 1,
            eot: self.eot,
            loss,
            selection: self.selection,
            ..ApgdConfig::default()
        }
    }
}

/// What a composition found.
pub struct AutoAttackResult {
    /// Per point the adversarial image of the first attack that fooled it;
    /// where none did, the first attack's strongest attempt (the official
    /// code returns the clean image there: for a deterministic model both
    /// are classified correctly, but a randomized defense re-scored over
    /// several draws must see the attempt, not the clean image).
    pub adversarial: Tensor<4>,
    /// Robust flags on the clean images (one forward pass).
    pub clean_robust: Vec<bool>,
    /// After each attack, its name and the robust flags so far (cumulative).
    pub robust_after: Vec<(String, Vec<bool>)>,
}

/// Runs the composition on `target`. A point counts as fooled when one
/// forward pass (one draw, for a randomized target) misclassifies it.
pub fn autoattack<T: AttackTarget + ?Sized>(
    target: &T,
    x: Tensor<4>,
    labels: &[i64],
    cfg: &AutoAttackConfig,
    rng: &mut AtopRng,
) -> Result<AutoAttackResult> {
    cfg.validate()?;
    let dims = x.dims();
    check_labels(labels, dims)?;
    let x = x.detach();
    let clean_robust: Vec<bool> = wrong_once(target, &x, labels, rng)?
        .into_iter()
        .map(|w| !w)
        .collect();
    if cfg.selection.against(target.is_randomized()) == IterateSelection::BestLoss {
        return autoattack_best_loss(target, x, labels, cfg, clean_robust, rng);
    }
    let mut robust = clean_robust.clone();
    let mut adversarial = x.clone();
    let mut attempted = vec![false; dims[0]];
    let mut robust_after = Vec::new();
    for component in cfg.components() {
        let idx: Vec<usize> = (0..dims[0]).filter(|&i| robust[i]).collect();
        if !idx.is_empty() {
            let xs = select_rows(&x, &idx);
            let ys: Vec<i64> = idx.iter().map(|&i| labels[i]).collect();
            let adv = run_component(target, component, xs, &ys, cfg, rng)?;
            let fooled = wrong_once(target, &adv, &ys, rng)?;
            // A fooling image replaces anything; a still-robust point keeps
            // the first attack's strongest attempt.
            let take: Vec<bool> = idx
                .iter()
                .zip(&fooled)
                .map(|(&i, &f)| f || !attempted[i])
                .collect();
            for (&i, &f) in idx.iter().zip(&fooled) {
                robust[i] &= !f;
                attempted[i] = true;
            }
            adversarial = scatter_rows(adversarial, adv, &idx, &take);
        }
        robust_after.push((component.name().to_string(), robust.clone()));
    }
    Ok(AutoAttackResult {
        adversarial,
        clean_robust,
        robust_after,
    })
}

/// One component of a composition on the points `x` (labels `labels`).
fn run_component<T: AttackTarget + ?Sized>(
    target: &T,
    component: AutoAttackComponent,
    xs: Tensor<4>,
    ys: &[i64],
    cfg: &AutoAttackConfig,
    rng: &mut AtopRng,
) -> Result<Tensor<4>> {
    Ok(match component {
        AutoAttackComponent::ApgdCe => apgd(target, xs, ys, &cfg.apgd(ApgdLoss::Ce), rng)?,
        AutoAttackComponent::ApgdDlr => apgd(target, xs, ys, &cfg.apgd(ApgdLoss::Dlr), rng)?,
        AutoAttackComponent::ApgdT => apgd_targeted(
            target,
            xs,
            ys,
            &cfg.apgd(ApgdLoss::Dlr),
            cfg.target_classes,
            rng,
        )?,
        AutoAttackComponent::FabT => {
            let fab = FabConfig {
                norm: cfg.norm,
                eps: cfg.eps,
                steps: cfg.steps,
                ..FabConfig::default()
            };
            fab_targeted(target, xs, ys, &fab, cfg.target_classes, rng)?
        }
        AutoAttackComponent::Square => {
            let sq = SquareConfig {
                norm: cfg.norm,
                eps: cfg.eps,
                queries: cfg.square_queries,
                ..SquareConfig::default()
            };
            square(target, xs, ys, &sq, rng)?
        }
    })
}

/// The best-loss composition: every component attacks every point; each
/// point keeps the candidate of highest EOT-mean margin (the loss all
/// components share), so no single lucky draw decides what is scored.
fn autoattack_best_loss<T: AttackTarget + ?Sized>(
    target: &T,
    x: Tensor<4>,
    labels: &[i64],
    cfg: &AutoAttackConfig,
    clean_robust: Vec<bool>,
    rng: &mut AtopRng,
) -> Result<AutoAttackResult> {
    let n = x.dims()[0];
    let mut best = x.clone();
    let mut best_margin = vec![f32::NEG_INFINITY; n];
    let mut robust = clean_robust.clone();
    let mut robust_after = Vec::new();
    for component in cfg.components() {
        let adv = run_component(target, component, x.clone(), labels, cfg, rng)?;
        let margin = mean_margin(target, &adv, labels, cfg.eot, rng)?;
        best = keep_higher(best, &mut best_margin, adv, &margin);
        let fooled = wrong_once(target, &best, labels, rng)?;
        for (r, f) in robust.iter_mut().zip(fooled) {
            *r &= !f;
        }
        robust_after.push((component.name().to_string(), robust.clone()));
    }
    Ok(AutoAttackResult {
        adversarial: best,
        clean_robust,
        robust_after,
    })
}
