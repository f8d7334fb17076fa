//! Training: the epoch/step loop every stage shares (this file), the
//! stages themselves (`classifier`, `pretrain`, `finetune`), the
//! purifier-training engine pre-training and AToP share (`purifier`), their
//! common losses and helpers (`blocks`), checkpoints, and the stage drivers
//! that run a stage for a command and write its artifact (`pipeline`).
//!
//! The loop: seeded data order,
//! per-step seeded randomness, progress bar, JSONL metrics, checkpoints
//! every N steps and at each epoch end, resume, validation-based selection,
//! and a hard stop on a non-finite loss (the last good checkpoint, if any,
//! is kept). A resumed run leaves the metrics an uninterrupted one would.

pub mod adversarial;
pub mod blocks;
pub mod checkpoint;
pub mod classifier;
pub mod finetune;
pub mod gan_health;
pub mod pipeline;
pub mod pretrain;
pub mod purifier;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use atop::rng::{AtopRng, mix, permutation, seeded, stream};

use crate::config::LrSchedule;
use crate::metrics::{MetricsLog, Replay};
use crate::progress::Progress;
use checkpoint::{Checkpoint, StageState};

/// One training stage: how to take a step, validate, and save/restore itself.
pub trait Stage {
    fn name(&self) -> &'static str;
    /// One optimiser step on the training points `batch`; returns named losses.
    fn step(
        &mut self,
        batch: &[usize],
        at: StepAt,
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
    /// Called after each epoch's validation (AToP writes the epoch's
    /// defense there when asked to).
    fn after_epoch(&mut self, _end: EpochEnd) -> Result<()> {
        Ok(())
    }
}

/// How far a stage had come when one of its epochs ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochEnd {
    pub epoch: usize,
    /// Optimiser steps so far.
    pub steps: usize,
    /// Wall seconds so far, summed over resumed runs.
    pub wall_seconds: f64,
    pub validation: f64,
}

/// Where a step falls in its stage: the epoch (for switches such as
/// AToP's `warmup_epochs`) and the schedule's learning-rate factor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepAt {
    pub epoch: usize,
    pub lr_factor: f64,
}

impl StepAt {
    /// The learning rate of this step for a stage whose base rate is `base`.
    pub fn lr(&self, base: f64) -> f64 {
        base * self.lr_factor
    }
}

pub struct Schedule {
    pub epochs: usize,
    pub batch_size: usize,
    pub max_steps_per_epoch: usize,
    pub train_len: usize,
    pub checkpoint_every: usize,
    pub seed: u64,
    pub lr_schedule: LrSchedule,
    pub warmup_steps: usize,
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

    pub fn total_steps(&self) -> usize {
        self.epochs * self.steps_per_epoch()
    }

    /// The learning-rate factor at `step` (0-based): linear warm-up, then
    /// the schedule; exactly 1 for a constant schedule without warm-up.
    pub fn lr_factor(&self, step: usize) -> f64 {
        let warmup = self.warmup_steps;
        if step < warmup {
            return (step + 1) as f64 / warmup as f64;
        }
        match self.lr_schedule {
            LrSchedule::Constant => 1.0,
            LrSchedule::Cosine => {
                let span = self.total_steps().saturating_sub(warmup).max(1);
                let t = (step - warmup) as f64 / span as f64;
                0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
            }
        }
    }
}

pub struct Outcome {
    pub best_score: Option<f64>,
    pub best_epoch: Option<usize>,
    /// Wall seconds of the whole stage, summed over resumed runs.
    pub wall_seconds: f64,
    /// Optimiser steps taken.
    pub steps: usize,
}

impl Outcome {
    /// No training yet (the manifest skeleton of a stage in progress).
    pub fn none() -> Self {
        Self {
            best_score: None,
            best_epoch: None,
            wall_seconds: 0.0,
            steps: 0,
        }
    }
}

pub fn checkpoint_path(out_dir: &Path, stage: &str) -> PathBuf {
    out_dir.join(format!("{stage}.ckpt"))
}

/// A stage's run in progress: where it is, the best model so far, and
/// where it writes.
struct StageRun<'a> {
    schedule: &'a Schedule,
    ckpt_path: PathBuf,
    state: StageState,
    best: Option<Vec<u8>>,
    metrics: MetricsLog,
    checkpoint_written: bool,
    bar: Progress,
    /// When this process took over, and the stage's wall seconds before it.
    started: std::time::Instant,
    seconds_before: f64,
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
    let mut run = StageRun::start(stage, schedule, out_dir, config_hash, resume)?;
    while !run.state.done && run.state.epoch < schedule.epochs {
        let order = permutation(
            &mut seeded(mix(schedule.seed, run.state.epoch as u64)),
            schedule.train_len,
        );
        while run.state.step_in_epoch < schedule.steps_per_epoch() {
            run.step(stage, &order)?;
        }
        run.end_epoch(stage)?;
    }
    run.bar.finish();
    if let Some(b) = &run.best {
        stage.load_snapshot(b)?;
    }
    Ok(Outcome {
        best_score: run.state.best_score,
        best_epoch: run.state.best_epoch,
        wall_seconds: run.wall_seconds(),
        steps: run.state.global_step,
    })
}

impl<'a> StageRun<'a> {
    /// A fresh state, or the checkpoint's when resuming; the metrics file
    /// put in order for it.
    fn start<S: Stage>(
        stage: &mut S,
        schedule: &'a Schedule,
        out_dir: &Path,
        config_hash: &str,
        resume: bool,
    ) -> Result<Self> {
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
            wall_seconds: 0.0,
        };
        let mut best = None;
        let resuming = resume && ckpt_path.exists();
        if resuming {
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
        let replay = match resuming {
            true => Replay::From {
                global_step: state.global_step,
                epoch: state.epoch,
            },
            false => Replay::Fresh,
        };
        let metrics = MetricsLog::open(&out_dir.join("metrics.jsonl"), stage.name(), replay)?;
        let steps = schedule.steps_per_epoch();
        let bar = Progress::new(
            stage.name(),
            schedule.epochs * steps,
            state.epoch * steps + state.step_in_epoch,
        );
        Ok(Self {
            schedule,
            ckpt_path,
            best,
            metrics,
            checkpoint_written: resuming,
            bar,
            started: std::time::Instant::now(),
            seconds_before: state.wall_seconds,
            state,
        })
    }

    /// One optimiser step on the next batch of `order`, logged, and a
    /// checkpoint when one is due. A non-finite loss stops the run.
    fn step<S: Stage>(&mut self, stage: &mut S, order: &[usize]) -> Result<()> {
        let (schedule, state) = (self.schedule, &mut self.state);
        let start = state.step_in_epoch * schedule.batch_size;
        let batch = &order[start..(start + schedule.batch_size).min(order.len())];
        let mut rng = seeded(mix(
            schedule.seed ^ stream::TRAINING_STEP,
            state.global_step as u64,
        ));
        let at = StepAt {
            epoch: state.epoch,
            lr_factor: schedule.lr_factor(state.global_step),
        };
        let mut losses = stage.step(batch, at, &mut rng)?;
        if schedule.lr_schedule != LrSchedule::Constant || schedule.warmup_steps > 0 {
            losses.insert("lr_factor".into(), at.lr_factor);
        }
        if let Some((name, value)) = losses.iter().find(|(_, v)| !v.is_finite()) {
            self.bar.abandon();
            let kept = match self.checkpoint_written {
                true => format!(
                    "the last good checkpoint {} is kept",
                    self.ckpt_path.display()
                ),
                false => "no checkpoint had been written yet".to_string(),
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
        self.metrics
            .log_step(stage.name(), state.epoch, state.global_step, &losses)?;
        let summary: Vec<String> = losses.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        self.bar.set_message(summary.join(" "));
        self.bar.inc(1);
        if schedule.checkpoint_every > 0
            && state.global_step.is_multiple_of(schedule.checkpoint_every)
        {
            self.save(stage)?;
        }
        Ok(())
    }

    /// Validation, selection of the best model, and the epoch's checkpoint.
    fn end_epoch<S: Stage>(&mut self, stage: &mut S) -> Result<()> {
        let state = &mut self.state;
        let mut rng = seeded(mix(
            self.schedule.seed ^ stream::VALIDATION,
            state.epoch as u64,
        ));
        let score = stage.validate(&mut rng)?;
        self.metrics
            .log_validation(stage.name(), state.epoch, score)?;
        if state.best_score.is_none_or(|b| score > b) {
            state.best_score = Some(score);
            state.best_epoch = Some(state.epoch);
            self.best = Some(stage.snapshot()?);
        }
        self.bar.println(format!(
            "{}: epoch {} validation score {score:.4} (best {:.4} at epoch {})",
            stage.name(),
            state.epoch,
            state.best_score.unwrap_or(score),
            state.best_epoch.unwrap_or(state.epoch)
        ));
        let end = EpochEnd {
            epoch: state.epoch,
            steps: state.global_step,
            wall_seconds: self.seconds_before + self.started.elapsed().as_secs_f64(),
            validation: score,
        };
        stage.after_epoch(end)?;
        state.epoch += 1;
        state.step_in_epoch = 0;
        state.done = state.epoch >= self.schedule.epochs;
        self.save(stage)
    }

    fn wall_seconds(&self) -> f64 {
        self.seconds_before + self.started.elapsed().as_secs_f64()
    }

    fn save<S: Stage>(&mut self, stage: &S) -> Result<()> {
        self.state.wall_seconds = self.wall_seconds();
        let mut blobs = stage.save()?;
        if let Some(b) = &self.best {
            blobs.insert("best".into(), b.clone());
        }
        Checkpoint {
            state: self.state.clone(),
            blobs,
        }
        .save(&self.ckpt_path)?;
        self.checkpoint_written = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(lr_schedule: LrSchedule, warmup_steps: usize) -> Schedule {
        Schedule {
            epochs: 2,
            batch_size: 10,
            max_steps_per_epoch: 0,
            train_len: 50,
            checkpoint_every: 0,
            seed: 0,
            lr_schedule,
            warmup_steps,
        }
    }

    #[test]
    fn a_constant_schedule_keeps_the_rate_exactly() {
        let s = schedule(LrSchedule::Constant, 0);
        assert!((0..s.total_steps()).all(|k| s.lr_factor(k) == 1.0));
        assert_eq!(
            StepAt {
                epoch: 0,
                lr_factor: 1.0
            }
            .lr(2e-4),
            2e-4
        );
    }

    #[test]
    fn warm_up_then_cosine_by_hand() {
        // 10 steps: 2 of warm-up (0.5, 1), then half a cosine over 8 steps.
        let s = schedule(LrSchedule::Cosine, 2);
        assert_eq!(s.total_steps(), 10);
        assert_eq!(s.lr_factor(0), 0.5);
        assert_eq!(s.lr_factor(1), 1.0);
        assert_eq!(s.lr_factor(2), 1.0);
        // Step 6 is halfway through the cosine: cos(pi / 2) = 0.
        assert!((s.lr_factor(6) - 0.5).abs() < 1e-12);
        // Step 4: 0.5 * (1 + cos(pi / 4)).
        let expected = 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2);
        assert!((s.lr_factor(4) - expected).abs() < 1e-12);
        assert!(s.lr_factor(9) > 0.0 && s.lr_factor(9) < 0.05);
        let constant = schedule(LrSchedule::Constant, 4);
        assert_eq!(constant.lr_factor(1), 0.5);
        assert_eq!(constant.lr_factor(4), 1.0);
    }
}
