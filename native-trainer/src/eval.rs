//! Robust evaluation on a seeded test subset: clean accuracy and, per attack
//! and gradient mode, robust accuracy of the bare classifier and of each
//! defense; randomized defenses are scored over several final draws
//! ("robust in every draw" and majority vote).

use anyhow::Result;
use atop::attack::{
    ClassifierTarget, DefenseTarget, GradientMode, PgdConfig, pgd, score_randomized,
};
use atop::defense::Defense;
use atop::model::Classifier;
use atop::rng::{permutation, seeded};
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::config::{EvalAttack, EvalConfig};
use crate::data::Dataset;
use crate::runner::mix;

/// One row of the results table.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EvalRow {
    /// "classifier" or the defense's name.
    pub model: String,
    /// "clean" or "pgd".
    pub attack: String,
    pub norm: String,
    pub eps: f64,
    pub steps: usize,
    pub eot: usize,
    pub restarts: usize,
    /// Gradient mode of the attack ("-" for clean rows).
    pub mode: String,
    pub draws: usize,
    pub accuracy_every_draw: f64,
    pub accuracy_majority: f64,
    /// Per point of the subset: correct in every draw.
    pub robust_flags: Vec<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EvalReport {
    pub subset_seed: u64,
    pub indices: Vec<usize>,
    pub rows: Vec<EvalRow>,
}

/// The seeded subset of test indices.
pub fn subset_indices(test_len: usize, subset: usize, seed: u64) -> Vec<usize> {
    let mut order = permutation(&mut seeded(seed), test_len);
    order.truncate(subset.min(test_len));
    order
}

fn row(model: &str, attack: Option<&EvalAttack>, draws: usize, counts: &[usize]) -> EvalRow {
    let every: Vec<bool> = counts.iter().map(|&c| c == draws).collect();
    let n = counts.len().max(1) as f64;
    EvalRow {
        model: model.to_string(),
        attack: if attack.is_some() { "pgd" } else { "clean" }.into(),
        norm: attack.map_or("-".into(), |a| format!("{:?}", a.norm).to_lowercase()),
        eps: attack.map_or(0.0, |a| a.eps),
        steps: attack.map_or(0, |a| a.steps),
        eot: attack.map_or(0, |a| a.eot),
        restarts: attack.map_or(0, |a| a.restarts),
        mode: attack.map_or("-".into(), |a| a.mode.name().to_string()),
        draws,
        accuracy_every_draw: every.iter().filter(|&&f| f).count() as f64 / n,
        accuracy_majority: counts.iter().filter(|&&c| 2 * c > draws).count() as f64 / n,
        robust_flags: every,
    }
}

/// Evaluates the classifier and each named defense on `indices` of `test`.
/// Models must live on an autodiff `device` and be frozen.
pub fn evaluate(
    classifier: &Classifier,
    defenses: &[(&str, &Defense)],
    test: &Dataset,
    indices: &[usize],
    cfg: &EvalConfig,
    seed: u64,
    device: &Device,
) -> Result<EvalReport> {
    let n = indices.len();
    let batches: Vec<&[usize]> = indices.chunks(cfg.batch_size).collect();
    let classifier_target = ClassifierTarget(classifier);
    let work = (batches.len() * (1 + defenses.len()) * (1 + cfg.attacks.len())) as u64;
    let bar = ProgressBar::new(work);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("eval");

    // counts[(model, attack index or none)] per point.
    let mut rows = Vec::new();
    let mut tally =
        |model: &str, attack: Option<usize>, draws: usize, per_batch: Vec<Vec<usize>>| {
            let counts: Vec<usize> = per_batch.into_iter().flatten().collect();
            debug_assert_eq!(counts.len(), n);
            rows.push(row(model, attack.map(|a| &cfg.attacks[a]), draws, &counts));
        };

    // Clean accuracy.
    let mut per_batch = Vec::new();
    for (b, chunk) in batches.iter().enumerate() {
        let (x, y) = test.batch(chunk, None, device);
        let mut rng = seeded(mix(seed, b as u64));
        per_batch.push(score_randomized(&classifier_target, x, &y, 1, &mut rng)?.correct_counts);
        bar.inc(1);
    }
    tally("classifier", None, 1, per_batch);
    for (name, defense) in defenses {
        let target = DefenseTarget::new(defense, GradientMode::Full);
        let mut per_batch = Vec::new();
        for (b, chunk) in batches.iter().enumerate() {
            let (x, y) = test.batch(chunk, None, device);
            let mut rng = seeded(mix(seed ^ 0xC1EA, b as u64));
            per_batch
                .push(score_randomized(&target, x, &y, cfg.score_draws, &mut rng)?.correct_counts);
            bar.inc(1);
        }
        tally(name, None, cfg.score_draws, per_batch);
    }

    for (a, attack) in cfg.attacks.iter().enumerate() {
        let pgd_cfg = PgdConfig {
            norm: attack.norm,
            eps: attack.eps,
            steps: attack.steps,
            eot: attack.eot,
            restarts: attack.restarts,
            ..PgdConfig::default()
        };
        bar.set_message(format!(
            "pgd {} eps {:.4} {}",
            pgd_cfg.steps,
            attack.eps,
            attack.mode.name()
        ));
        // The bare classifier under a white-box attack (its only mode).
        let mut per_batch = Vec::new();
        let mut transfer = Vec::new();
        for (b, chunk) in batches.iter().enumerate() {
            let (x, y) = test.batch(chunk, None, device);
            let mut rng = seeded(mix(seed ^ 0xA77C ^ a as u64, b as u64));
            let x_adv = pgd(&classifier_target, x, &y, &pgd_cfg, &mut rng)?;
            per_batch.push(
                score_randomized(&classifier_target, x_adv.clone(), &y, 1, &mut rng)?
                    .correct_counts,
            );
            transfer.push(x_adv);
            bar.inc(1);
        }
        tally("classifier", Some(a), 1, per_batch);
        for (name, defense) in defenses {
            let mut per_batch = Vec::new();
            for (b, chunk) in batches.iter().enumerate() {
                let (x, y) = test.batch(chunk, None, device);
                let mut rng = seeded(mix(seed ^ 0xDEF ^ a as u64, b as u64));
                let x_adv = match attack.mode {
                    GradientMode::ClassifierOnly => transfer[b].clone(),
                    mode => {
                        let mut target = DefenseTarget::new(defense, mode);
                        if mode == GradientMode::FixedRandomness {
                            target.freeze_draw(&mut rng, x.dims())?;
                        }
                        pgd(&target, x, &y, &pgd_cfg, &mut rng)?
                    }
                };
                let scorer = DefenseTarget::new(defense, GradientMode::Full);
                per_batch.push(
                    score_randomized(&scorer, x_adv, &y, cfg.score_draws, &mut rng)?.correct_counts,
                );
                bar.inc(1);
            }
            tally(name, Some(a), cfg.score_draws, per_batch);
        }
    }
    bar.finish_and_clear();
    Ok(EvalReport {
        subset_seed: cfg.subset_seed,
        indices: indices.to_vec(),
        rows,
    })
}
