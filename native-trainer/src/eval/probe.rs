//! The under-tuning check (Carlini et al., "On evaluating adversarial
//! robustness"; Tramèr et al., "On adaptive attacks": tune the attack to the
//! defense and show that it was tuned). On a slice of the first batch, each
//! gradient attack on a randomized defense runs again with a larger step and
//! more EOT; the report lists both figures for every such attack and warns
//! where the probe beats the protocol's attack by more than a stated margin.

use anyhow::Result;
use atop::attack::{DefenseTarget, GradientMode, IterateSelection, score_randomized};
use atop::rng::{mix, seeded, stream};
use serde::{Deserialize, Serialize};

use super::attacks::{attack_name, run_attack};
use super::{Batches, EvalRow, RowKind, Units};
use crate::config::{EvalAttack, EvalAttackKind, TuningProbe};

/// One probed attack: the protocol's figure and the probe's on the same points.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProbeRecord {
    pub model: String,
    pub attack: String,
    pub mode: String,
    pub points: usize,
    /// The protocol attack's step size and EOT, and the probe's.
    pub step_size: Option<f64>,
    pub eot: usize,
    pub probe_step_size: Option<f64>,
    pub probe_eot: usize,
    /// Expected accuracy (mean over draws) on the probed points.
    pub protocol_accuracy: f64,
    pub probe_accuracy: f64,
    pub margin: f64,
}

impl ProbeRecord {
    pub fn under_tuned(&self) -> bool {
        self.protocol_accuracy - self.probe_accuracy > self.margin
    }

    /// The report's line for this probe.
    pub fn line(&self) -> String {
        let step = |s: Option<f64>| s.map_or("adaptive".to_string(), |a| format!("{a:.4}"));
        format!(
            "{} / {} ({}): {:.1}% with step {}, EOT {}; probe {:.1}% with step {}, EOT {} ({} points)",
            self.model,
            self.attack,
            self.mode,
            100.0 * self.protocol_accuracy,
            step(self.step_size),
            self.eot,
            100.0 * self.probe_accuracy,
            step(self.probe_step_size),
            self.probe_eot,
            self.points,
        )
    }

    pub fn warning(&self) -> Option<String> {
        self.under_tuned().then(|| {
            format!(
                "attack may be under-tuned: {}; the probe is more than {:.0} points stronger, so raise the step size, steps or EOT until the figure stops falling",
                self.line(),
                100.0 * self.margin
            )
        })
    }
}

/// Whether `attack` on a defense is probed: gradient attacks that see the
/// defense's randomness (not the transfer or frozen-draw modes).
pub fn probed(attack: &EvalAttack) -> bool {
    attack.attack.uses_gradients() && matches!(attack.mode, GradientMode::Full | GradientMode::Bpda)
}

/// The stronger attack: step size times `step_factor` where the attack has
/// a fixed step (capped at 2 eps), EOT times `eot_factor` (capped at
/// `max_eot`, or the attack's own EOT if that is larger).
pub fn stronger(attack: &EvalAttack, p: &TuningProbe) -> EvalAttack {
    let mut a = attack.clone();
    a.eot = (attack.eot * p.eot_factor).min(p.max_eot.max(attack.eot));
    if matches!(attack.attack, EvalAttackKind::Pgd | EvalAttackKind::Stadv)
        && let Some(step) = attack.effective_step_size()
    {
        // Never past 2 eps; a default step already there (PGD-1, PGD-2) stays.
        let larger = (step * p.step_factor).min(2.0 * attack.eps);
        if larger > step {
            a.step_size = Some(larger);
        }
    }
    a
}

/// The protocol's row of `attack` on the defense `model`.
fn protocol_row<'r>(rows: &'r [EvalRow], model: &str, attack: &EvalAttack) -> Option<&'r EvalRow> {
    rows.iter().find(|r| {
        r.kind == RowKind::Defense
            && r.model == model
            && r.attack == attack_name(attack)
            && r.mode == attack.mode.name()
            && r.eps == attack.eps
            && r.steps == attack.steps
            && r.eot == attack.eot
            && r.step_size == attack.effective_step_size()
            && r.selection.as_str() == selection_of(attack, true)
    })
}

/// The iterate selection a row of `attack` names (empty where the attack
/// keeps its last iterate): the one that ran, which is first-fooled against
/// a deterministic target whatever the protocol asks
/// (`IterateSelection::against`).
pub fn selection_of(attack: &EvalAttack, randomized_target: bool) -> &'static str {
    match attack.attack {
        EvalAttackKind::ApgdCe
        | EvalAttackKind::ApgdDlr
        | EvalAttackKind::ApgdT
        | EvalAttackKind::Autoattack => attack.selection.against(randomized_target).name(),
        _ => "",
    }
}

/// Probes every probed attack on every defense, on the first points of
/// batch 0 (in the run or shard that has it), comparing with the protocol
/// rows' counts on the same points. Each probe is a unit of the run's
/// state, so a resumed evaluation does not redo it.
pub(super) fn tuning_probes(
    batches: &Batches,
    rows: &[EvalRow],
    units: &mut Units,
) -> Result<Vec<ProbeRecord>> {
    let i = batches.inputs;
    let (p, draws) = (&i.cfg.tuning_probe, i.cfg.score_draws);
    if p.points == 0 || batches.mine.first() != Some(&0) {
        return Ok(Vec::new());
    }
    let (x, y) = batches.get(0);
    let points = p.points.min(y.len());
    let (x, y) = (x.narrow(0, 0, points), y[..points].to_vec());
    let mut records = Vec::new();
    for (a, attack) in i.cfg.attacks.iter().enumerate() {
        if !probed(attack) {
            continue;
        }
        let strong = stronger(attack, p);
        for (d, defense) in i.defenses.iter().enumerate() {
            let Some(row) = protocol_row(rows, defense.name, attack) else {
                continue;
            };
            let counts = units.get(format!("probe|{}|{a}", defense.name), || {
                let mut rng = seeded(mix(i.seed ^ stream::EVAL_TUNING_PROBE ^ a as u64, d as u64));
                let target = DefenseTarget::new(defense.defense, attack.mode);
                let x_adv = run_attack(&target, x.clone(), &y, &strong, &mut rng)?;
                let scorer = DefenseTarget::new(defense.defense, GradientMode::Full);
                Ok(score_randomized(&scorer, x_adv, &y, draws, &mut rng)?.correct_counts)
            })?;
            let correct: usize = row.correct_counts.iter().take(points).sum();
            let probe_correct: usize = counts.iter().sum();
            let of = (points * draws.max(1)) as f64;
            records.push(ProbeRecord {
                model: defense.name.to_string(),
                attack: match attack.selection {
                    IterateSelection::FirstFooled => attack_name(attack),
                    s => format!("{} ({})", attack_name(attack), s.name()),
                },
                mode: attack.mode.name().to_string(),
                points,
                step_size: attack.effective_step_size(),
                eot: attack.eot,
                probe_step_size: strong.effective_step_size(),
                probe_eot: strong.eot,
                protocol_accuracy: correct as f64 / (points * row.draws.max(1)) as f64,
                probe_accuracy: probe_correct as f64 / of,
                margin: p.margin,
            });
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use atop::attack::Norm;

    fn attack(kind: EvalAttackKind, steps: usize, eot: usize) -> EvalAttack {
        let text = format!(
            r#"attack = "{}"
norm = "linf"
eps = 0.1
steps = {steps}
eot = {eot}
mode = "full""#,
            kind.name()
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn the_probe_takes_larger_steps_and_more_eot_within_bounds() {
        let p = TuningProbe::default();
        // PGD-50: 0.005 -> 0.02, EOT 5 -> 20.
        let s = stronger(&attack(EvalAttackKind::Pgd, 50, 5), &p);
        assert_eq!((s.step_size, s.eot), (Some(0.02), 20));
        // Capped at 2 eps; a default step already past it stays the default.
        let s = stronger(&attack(EvalAttackKind::Pgd, 5, 1), &p);
        assert_eq!(s.step_size, Some(0.2));
        let s = stronger(&attack(EvalAttackKind::Pgd, 1, 1), &p);
        assert_eq!((s.step_size, s.effective_step_size()), (None, Some(0.25)));
        // EOT capped at max_eot, unless the protocol already used more.
        assert_eq!(
            stronger(&attack(EvalAttackKind::ApgdCe, 100, 10), &p).eot,
            20
        );
        assert_eq!(
            stronger(&attack(EvalAttackKind::ApgdCe, 100, 50), &p).eot,
            50
        );
        // APGD adapts its own step.
        assert_eq!(
            stronger(&attack(EvalAttackKind::ApgdCe, 100, 1), &p).step_size,
            None
        );
        // Only attacks that see the defense's randomness are probed.
        let mut transfer = attack(EvalAttackKind::Pgd, 10, 1);
        assert!(probed(&transfer));
        transfer.mode = GradientMode::ClassifierOnly;
        assert!(!probed(&transfer));
        let square = attack(EvalAttackKind::Square, 10, 1);
        assert!(!probed(&square));
        assert_eq!(square.norm, Norm::Linf);
    }

    #[test]
    fn a_warning_names_both_figures_when_the_probe_wins_by_more_than_the_margin() {
        let record = |probe_accuracy| ProbeRecord {
            model: "defense".into(),
            attack: "pgd".into(),
            mode: "full".into(),
            points: 32,
            step_size: Some(0.005),
            eot: 5,
            probe_step_size: Some(0.02),
            probe_eot: 20,
            protocol_accuracy: 0.60,
            probe_accuracy,
            margin: 0.05,
        };
        assert!(record(0.56).warning().is_none());
        let w = record(0.50).warning().unwrap();
        assert!(
            w.contains("60.0%") && w.contains("50.0%") && w.contains("EOT 20"),
            "{w}"
        );
    }
}
