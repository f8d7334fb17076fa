//! One evaluation attack on one batch, whatever its kind.

use anyhow::Result;
use atop::attack::{
    ApgdConfig, ApgdLoss, AttackTarget, AutoAttackConfig, CwConfig, FabConfig, PgdConfig,
    SquareConfig, StadvConfig, apgd, apgd_targeted, autoattack, carlini_wagner_l2, fab_targeted,
    fgsm, pgd, stadv,
};
use atop::rng::AtopRng;
use burn::tensor::Tensor;

use crate::config::{EvalAttack, EvalAttackKind};

/// Adversarial images for `x` against `target` under `attack`.
pub fn run_attack(
    target: &dyn AttackTarget,
    x: Tensor<4>,
    labels: &[i64],
    attack: &EvalAttack,
    rng: &mut AtopRng,
) -> Result<Tensor<4>> {
    let apgd_cfg = |loss| ApgdConfig {
        norm: attack.norm,
        eps: attack.eps,
        steps: attack.steps,
        restarts: attack.restarts,
        eot: attack.eot,
        loss,
        selection: attack.selection,
        ..ApgdConfig::default()
    };
    Ok(match attack.attack {
        EvalAttackKind::Pgd => {
            let cfg = PgdConfig {
                norm: attack.norm,
                eps: attack.eps,
                steps: attack.steps,
                eot: attack.eot,
                restarts: attack.restarts,
                step_size: attack.step_size,
                loss: attack.loss.unwrap_or_default(),
                random_start: attack.random_start,
            };
            pgd(target, x, labels, &cfg, rng)?
        }
        EvalAttackKind::Fgsm => fgsm(target, x, labels, attack.eps, attack.eot, rng)?,
        EvalAttackKind::ApgdCe => apgd(target, x, labels, &apgd_cfg(ApgdLoss::Ce), rng)?,
        EvalAttackKind::ApgdDlr => apgd(target, x, labels, &apgd_cfg(ApgdLoss::Dlr), rng)?,
        EvalAttackKind::ApgdT => apgd_targeted(
            target,
            x,
            labels,
            &apgd_cfg(ApgdLoss::Dlr),
            attack.target_classes,
            rng,
        )?,
        EvalAttackKind::FabT => {
            let cfg = FabConfig {
                norm: attack.norm,
                eps: attack.eps,
                steps: attack.steps,
                ..FabConfig::default()
            };
            fab_targeted(target, x, labels, &cfg, attack.target_classes, rng)?
        }
        EvalAttackKind::Square => {
            let cfg = SquareConfig {
                norm: attack.norm,
                eps: attack.eps,
                queries: attack.queries,
                restarts: attack.restarts,
                ..SquareConfig::default()
            };
            atop::attack::square(target, x, labels, &cfg, rng)?
        }
        EvalAttackKind::Stadv => {
            let default = StadvConfig::with_bound(attack.eps);
            let cfg = StadvConfig {
                steps: attack.steps,
                eot: attack.eot,
                lr: attack.step_size.unwrap_or(default.lr),
                ..default
            };
            stadv(target, x, labels, &cfg, rng)?.0
        }
        EvalAttackKind::Cw => {
            let cfg = CwConfig {
                eps: attack.eps,
                steps: attack.steps,
                ..CwConfig::default()
            };
            carlini_wagner_l2(target, x, labels, &cfg, rng)?
        }
        EvalAttackKind::Autoattack => {
            let cfg = AutoAttackConfig {
                norm: attack.norm,
                eps: attack.eps,
                version: attack.version,
                attacks: attack.attacks.clone(),
                steps: attack.steps,
                target_classes: attack.target_classes,
                square_queries: attack.queries,
                eot: attack.eot,
                selection: attack.selection,
            };
            autoattack(target, x, labels, &cfg, rng)?.adversarial
        }
    })
}

/// The attack's name in reports, e.g. "apgd-ce" or "autoattack-standard".
pub fn attack_name(attack: &EvalAttack) -> String {
    match attack.attack {
        EvalAttackKind::Autoattack => {
            let version = serde_json::to_value(attack.version)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            format!("autoattack-{version}")
        }
        kind => kind.name().to_string(),
    }
}
