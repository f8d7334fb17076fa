//! The epoch/step loop shared by every training stage: seeded data order,
//! per-step seeded randomness, progress bar, JSONL metrics, checkpoints
//! every N steps and at each epoch end, resume, validation-based selection,
//! and a hard stop on a non-finite loss (the last good checkpoint, if any,
//! is kept). A resumed run leaves the metrics an uninterrupted one would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use atop::rng::{AtopRng, permutation, seeded};
use indicatif::{ProgressBar, ProgressStyle};

use crate::checkpoint::{Checkpoint, StageState};
use crate::metrics::{MetricsLog, Replay};

/// One training stage: how to take a step, validate, and save/restore itself.
pub trait Stage {
    fn name(&self) -> &'static str;
    /// One optimiser step on the training points `batch`; returns named losses.
    fn step(
        &mut self,
        batch: &[usize],
        epoch: usize,
        rng: &mut AtopRng,
    ) -> Result<BTreeMap<String, f64>>;
    /// Validation score on data held out from TRAINING data (higher is better).
    fn validate(&mut self, rng: &mut AtopRng) -> Result<f64>;
    /// What the checkpoint holds to resume (models, optimizers).
    fn save(&self) -> Result<BTreeMap<String, Vec<u8>>>;
    fn restore(&mut self, blobs: &BTreeMap<String, Vec<u8>>, path: &Path) -> Result<()>;
    /// The model bytes kept when validation improves.
    fn snapshot(&self) -> Result<Vec<u8>>;
    /// Loads a snapshot back (the selected model, at the end).
    fn load_snapshot(&mut self, bytes: &[u8]) -> Result<()>;
}

pub struct Schedule {
    pub epochs: usize,
    pub batch_size: usize,
    pub max_steps_per_epoch: usize,
    pub train_len: usize,
    pub checkpoint_every: usize,
    pub seed: u64,
}

impl Schedule {
    pub fn steps_per_epoch(&self) -> usize {
        let full = self.train_len / self.batch_size;
        match self.max_steps_per_epoch {
            0 => full,
            m => full.min(m),
        }
        .max(1)
    }
}

/// Mixes a seed with a counter (SplitMix64), for per-epoch / per-step streams.
pub fn mix(seed: u64, counter: u64) -> u64 {
    let mut z = seed ^ counter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub struct Outcome {
    pub best_score: Option<f64>,
    pub best_epoch: Option<usize>,
}

pub fn checkpoint_path(out_dir: &Path, stage: &str) -> PathBuf {
    out_dir.join(format!("{stage}.ckpt"))
}

/// Runs (or resumes) a stage to the end and loads its selected model.
pub fn run_stage<S: Stage>(
    stage: &mut S,
    schedule: &Schedule,
    out_dir: &Path,
    config_hash: &str,
    resume: bool,
) -> Result<Outcome> {
    if schedule.train_len == 0 {
        bail!(
            "{}: no training images (after carving out the validation split); nothing to train",
            stage.name()
        );
    }
    let ckpt_path = checkpoint_path(out_dir, stage.name());
    let mut state = StageState {
        stage: stage.name().to_string(),
        config_hash: config_hash.to_string(),
        epoch: 0,
        step_in_epoch: 0,
        global_step: 0,
        best_score: None,
        best_epoch: None,
        done: false,
    };
    let mut best: Option<Vec<u8>> = None;
    if resume && ckpt_path.exists() {
        let ckpt = Checkpoint::load_for_resume(&ckpt_path, stage.name(), config_hash)?;
        stage.restore(&ckpt.blobs, &ckpt_path)?;
        best = ckpt.blobs.get("best").cloned();
        state = ckpt.state;
        tracing::info!(
            stage = stage.name(),
            epoch = state.epoch,
            step = state.step_in_epoch,
            "resuming from {}",
            ckpt_path.display()
        );
    } else if resume {
        tracing::info!(
            stage = stage.name(),
            "no checkpoint at {}: starting fresh",
            ckpt_path.display()
        );
    }

    let replay = if state.global_step > 0 || state.epoch > 0 {
        Replay::From {
            global_step: state.global_step,
            epoch: state.epoch,
        }
    } else {
        Replay::Fresh
    };
    let mut metrics = MetricsLog::open(&out_dir.join("metrics.jsonl"), stage.name(), replay)?;
    let mut checkpoint_written = ckpt_path.exists() && resume;

    let steps = schedule.steps_per_epoch();
    let bar = ProgressBar::new((schedule.epochs * steps) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>16} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(stage.name());
    bar.set_position((state.epoch * steps + state.step_in_epoch) as u64);

    let save = |stage: &S, state: &StageState, best: &Option<Vec<u8>>| -> Result<()> {
        let mut blobs = stage.save()?;
        if let Some(b) = best {
            blobs.insert("best".into(), b.clone());
        }
        Checkpoint {
            state: state.clone(),
            blobs,
        }
        .save(&ckpt_path)
    };

    while !state.done && state.epoch < schedule.epochs {
        let order = permutation(
            &mut seeded(mix(schedule.seed, state.epoch as u64)),
            schedule.train_len,
        );
        while state.step_in_epoch < steps {
            let start = state.step_in_epoch * schedule.batch_size;
            let batch = &order[start..(start + schedule.batch_size).min(order.len())];
            let mut rng = seeded(mix(schedule.seed ^ 0xA70F, state.global_step as u64));
            let losses = stage.step(batch, state.epoch, &mut rng)?;
            if let Some((name, value)) = losses.iter().find(|(_, v)| !v.is_finite()) {
                bar.abandon();
                let kept = if checkpoint_written {
                    format!("the last good checkpoint {} is kept", ckpt_path.display())
                } else {
                    "no checkpoint had been written yet".to_string()
                };
                bail!(
                    "{}: loss `{name}` became {value} at epoch {} step {}; stopped, {kept}",
                    stage.name(),
                    state.epoch,
                    state.step_in_epoch,
                );
            }
            state.step_in_epoch += 1;
            state.global_step += 1;
            metrics.log_step(stage.name(), state.epoch, state.global_step, &losses)?;
            let summary: Vec<String> = losses.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
            bar.set_message(summary.join(" "));
            bar.inc(1);
            if schedule.checkpoint_every > 0
                && state.global_step.is_multiple_of(schedule.checkpoint_every)
            {
                save(stage, &state, &best)?;
                checkpoint_written = true;
            }
        }
        let mut rng = seeded(mix(schedule.seed ^ 0x7A1, state.epoch as u64));
        let score = stage.validate(&mut rng)?;
        metrics.log_validation(stage.name(), state.epoch, score)?;
        if state.best_score.is_none_or(|b| score > b) {
            state.best_score = Some(score);
            state.best_epoch = Some(state.epoch);
            best = Some(stage.snapshot()?);
        }
        bar.println(format!(
            "{}: epoch {} validation score {score:.4} (best {:.4} at epoch {})",
            stage.name(),
            state.epoch,
            state.best_score.unwrap_or(score),
            state.best_epoch.unwrap_or(state.epoch)
        ));
        state.epoch += 1;
        state.step_in_epoch = 0;
        state.done = state.epoch >= schedule.epochs;
        save(stage, &state, &best)?;
        checkpoint_written = true;
    }
    bar.finish_and_clear();
    if let Some(b) = &best {
        stage.load_snapshot(b)?;
    }
    Ok(Outcome {
        best_score: state.best_score,
        best_epoch: state.best_epoch,
    })
}
