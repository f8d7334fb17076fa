//! Sanity checks printed with every report, as AutoAttack does: warnings,
//! not errors, because each has innocent explanations, but a reader of the
//! numbers must see them.

use anyhow::Result;
use atop::attack::{ClassifierTarget, DefenseTarget, GradientMode, gradient_health};
use atop::model::Classifier;
use atop::rng::{seeded, stream};
use burn::tensor::Tensor;

use super::{EvalDefense, EvalRow, RowKind};
use crate::config::EvalAttack;

/// Zero or non-finite input gradients on the first batch, for the bare
/// classifier and for each defense in every gradient mode the protocol uses.
pub fn gradient_warnings(
    classifiers: &[(&str, &Classifier)],
    defenses: &[EvalDefense],
    attacks: &[EvalAttack],
    x: Tensor<4>,
    labels: &[i64],
    seed: u64,
) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    let mut report = |who: String, (zero, non_finite): (usize, usize)| {
        if non_finite > 0 {
            warnings.push(format!(
                "{who}: {non_finite} of {} points have non-finite input gradients; gradient attacks on them are meaningless",
                labels.len()
            ));
        }
        if zero > 0 {
            warnings.push(format!(
                "{who}: {zero} of {} points have an all-zero input gradient (gradient masking?); trust gradient-free attacks (Square) more there",
                labels.len()
            ));
        }
    };
    let mut rng = seeded(seed ^ stream::SANITY);
    for (name, classifier) in classifiers {
        report(
            name.to_string(),
            gradient_health(&ClassifierTarget(classifier), &x, labels, &mut rng)?,
        );
    }
    // Each gradient mode once, in protocol order.
    let mut modes: Vec<GradientMode> = Vec::new();
    for a in attacks {
        if a.attack.uses_gradients()
            && a.mode != GradientMode::ClassifierOnly
            && !modes.contains(&a.mode)
        {
            modes.push(a.mode);
        }
    }
    for d in defenses {
        for &mode in &modes {
            let mut target = DefenseTarget::new(d.defense, mode);
            if mode == GradientMode::FixedRandomness {
                target.freeze_draw(&mut rng, x.dims())?;
            }
            report(
                format!("{} ({} gradients)", d.name, mode.name()),
                gradient_health(&target, &x, labels, &mut rng)?,
            );
        }
    }
    Ok(warnings)
}

/// Checks on the finished table: Square (black-box) beating the white-box
/// attacks, and randomized defenses attacked without EOT.
pub fn row_warnings(rows: &[EvalRow]) -> Vec<String> {
    let mut warnings = Vec::new();
    for square in rows.iter().filter(|r| r.attack == "square") {
        let white_box = rows
            .iter()
            .filter(|r| {
                r.model == square.model
                    && r.norm == square.norm
                    && r.eps == square.eps
                    && r.attack != "square"
                    && super::is_attack_row(r)
                    && r.mode != "classifier-only"
            })
            .map(|r| r.accuracy_every_draw)
            .fold(f64::INFINITY, f64::min);
        if white_box.is_finite() && square.accuracy_every_draw < white_box {
            warnings.push(format!(
                "{}: the black-box Square attack ({:.2}%) beats every white-box attack ({:.2}%) at {} eps {}: the gradients are likely masked",
                square.model,
                100.0 * square.accuracy_every_draw,
                100.0 * white_box,
                square.norm,
                square.eps
            ));
        }
    }
    // Exact gradients with EOT should be at least as strong as transferring
    // the classifier's adversarials (docs/method.md section 6); if not, the
    // defense's gradients are broken or EOT is too small.
    for full in rows
        .iter()
        .filter(|r| r.mode == "full" && r.kind == RowKind::Defense)
    {
        let transfer = rows.iter().find(|r| {
            r.model == full.model
                && r.attack == full.attack
                && r.norm == full.norm
                && r.eps == full.eps
                && r.mode == "classifier-only"
        });
        if let Some(t) = transfer
            && full.accuracy_every_draw > t.accuracy_every_draw
        {
            warnings.push(format!(
                "{}: {} with full gradients ({:.2}%) is weaker than the classifier-only transfer attack ({:.2}%): check the defense's gradients or raise EOT",
                full.model,
                full.attack,
                100.0 * full.accuracy_every_draw,
                100.0 * t.accuracy_every_draw
            ));
        }
    }
    for r in rows.iter().filter(|r| {
        r.kind == RowKind::Defense && r.eot == 1 && matches!(r.mode.as_str(), "full" | "bpda")
    }) {
        warnings.push(format!(
            "{}: {} in {} mode with EOT 1 against a randomized defense: the gradient is one draw's, use eot > 1",
            r.model, r.attack, r.mode
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, attack: &str, mode: &str, eot: usize, accuracy: f64) -> EvalRow {
        EvalRow {
            model: model.into(),
            kind: if model == "classifier" {
                RowKind::Classifier
            } else {
                RowKind::Defense
            },
            attack: attack.into(),
            norm: "linf".into(),
            eps: 0.1,
            steps: 10,
            eot,
            restarts: 0,
            mode: mode.into(),
            step_size: None,
            loss: "ce".into(),
            selection: String::new(),
            draws: 1,
            accuracy_mean: accuracy,
            accuracy_every_draw: accuracy,
            accuracy_majority: accuracy,
            robust_flags: Vec::new(),
            correct_counts: Vec::new(),
            protocol: String::new(),
        }
    }

    #[test]
    fn square_beating_white_box_and_missing_eot_are_flagged() {
        let rows = vec![
            row("defense", "pgd", "full", 4, 0.40),
            row("defense", "pgd", "classifier-only", 1, 0.10),
            row("defense", "square", "black-box", 1, 0.30),
            row("classifier", "pgd", "full", 1, 0.05),
            row("classifier", "square", "black-box", 1, 0.08),
        ];
        let w = row_warnings(&rows);
        // Square 30% < PGD full 40% on the defense (the transfer row does not count).
        assert!(
            w.iter()
                .any(|w| w.starts_with("defense: the black-box Square")),
            "{w:?}"
        );
        assert!(
            !w.iter().any(|w| w.starts_with("classifier: the black-box")),
            "{w:?}"
        );
        assert!(!w.iter().any(|w| w.contains("EOT 1")), "{w:?}");
        let mut no_eot = rows.clone();
        no_eot[0].eot = 1;
        assert!(
            row_warnings(&no_eot)
                .iter()
                .any(|w| w.contains("pgd in full mode with EOT 1"))
        );
    }
}
