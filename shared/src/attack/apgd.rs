//! APGD (Croce & Hein, ICML 2020): PGD with momentum and a step size that
//! halves at checkpoints when progress stalls; cross-entropy or DLR loss,
//! and the targeted DLR version over the top-k other classes.

use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use super::common::{
    AttackLoss, Evaluation, IterateSelection, Norm, ascent_direction, check_eps, check_labels,
    evaluate, int_tensor, keep_higher, normal_like, per_sample_norm, project, sample_mask,
    scatter_rows, select_rows, symmetric_uniform_like, targets_by_rank, to_i64, wrong_once,
};
use super::target::AttackTarget;
use crate::error::{AtopError, Result};
use crate::rng::AtopRng;

/// APGD's loss.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ApgdLoss {
    #[default]
    Ce,
    Dlr,
}

/// APGD's settings; the defaults are AutoAttack's.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApgdConfig {
    pub norm: Norm,
    pub eps: f64,
    /// Iterations per run (AutoAttack: 100).
    pub steps: usize,
    /// Runs from new random starts; later runs attack only points still robust.
    pub restarts: usize,
    /// Gradient samples averaged per iteration (AutoAttack's `rand`: 20).
    pub eot: usize,
    pub loss: ApgdLoss,
    /// Checkpoint test: halve the step when the loss rose in fewer than this
    /// fraction of the iterations since the last checkpoint.
    pub rho: f64,
    /// Weight of the new step against the previous one (momentum 1 - alpha).
    pub alpha: f64,
    /// What each point keeps over iterations and restarts (the official
    /// code: the first iterate one draw misclassified).
    pub selection: IterateSelection,
}

impl Default for ApgdConfig {
    fn default() -> Self {
        Self {
            norm: Norm::Linf,
            eps: 8.0 / 255.0,
            steps: 100,
            restarts: 1,
            eot: 1,
            loss: ApgdLoss::Ce,
            rho: 0.75,
            alpha: 0.75,
            selection: IterateSelection::FirstFooled,
        }
    }
}

impl ApgdConfig {
    pub fn validate(&self) -> Result<()> {
        check_eps(self.eps)?;
        if self.steps == 0 || self.eot == 0 || self.restarts == 0 {
            return Err(AtopError::config(
                "attack",
                "APGD needs steps, eot and restarts of at least 1",
            ));
        }
        for (key, v) in [("attack.rho", self.rho), ("attack.alpha", self.alpha)] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(AtopError::config(
                    key,
                    format!("must be in (0, 1], got {v}"),
                ));
            }
        }
        Ok(())
    }

    /// The iterations after which the step size is checked, as published:
    /// the first after 22% of the iterations, each later interval 3% shorter
    /// than the one before but at least 6%. Fractions are rounded down as in
    /// the official code (the paper rounds up; both agree at 100 steps).
    pub fn checkpoints(&self) -> Vec<usize> {
        let n = self.steps;
        let frac = |f: f64| ((f * n as f64) as usize).max(1);
        let (first, decrease, minimum) = (frac(0.22), frac(0.03), frac(0.06));
        let mut points = Vec::new();
        let (mut at, mut interval) = (first, first);
        while at <= n {
            points.push(at);
            interval = interval.saturating_sub(decrease).max(minimum);
            at += interval;
        }
        points
    }
}

/// One APGD run from a random start, advanced an iteration at a time so a
/// caller can report progress between iterations (the browser demo yields to
/// the page). Each iteration reads the per-sample losses back to the host
/// for the step-size rule, so it needs a device with blocking reads.
pub struct ApgdRun {
    x: Tensor<4>,
    y: Tensor<1, Int>,
    targets: Option<Tensor<1, Int>>,
    loss: AttackLoss,
    cfg: ApgdConfig,
    x_adv: Tensor<4>,
    x_old: Tensor<4>,
    grad: Tensor<4>,
    x_best: Tensor<4>,
    grad_best: Tensor<4>,
    loss_best: Vec<f32>,
    found: Vec<bool>,
    x_found: Tensor<4>,
    step_size: Vec<f64>,
    last_loss: Vec<f32>,
    increases: Vec<usize>,
    reduced_last: Vec<bool>,
    loss_best_at_check: Vec<f32>,
    checkpoints: Vec<usize>,
    next: usize,
    last_check: usize,
    done: usize,
}

impl ApgdRun {
    /// Untargeted APGD (the config's loss) on `x`: validates the settings,
    /// takes the random start and evaluates it.
    pub fn start<T: AttackTarget + ?Sized>(
        target: &T,
        x: Tensor<4>,
        labels: &[i64],
        cfg: &ApgdConfig,
        rng: &mut AtopRng,
    ) -> Result<Self> {
        cfg.validate()?;
        check_labels(labels, x.dims())?;
        let x = x.detach();
        let y = int_tensor(labels, &x.device());
        Self::start_with(target, &x, &y, None, cfg.loss.into(), cfg, rng)
    }

    fn start_with<T: AttackTarget + ?Sized>(
        target: &T,
        x: &Tensor<4>,
        y: &Tensor<1, Int>,
        targets: Option<&Tensor<1, Int>>,
        loss: AttackLoss,
        cfg: &ApgdConfig,
        rng: &mut AtopRng,
    ) -> Result<Self> {
        let n = x.dims()[0];
        let start = match cfg.norm {
            // Uniform in the cube.
            Norm::Linf => x.clone() + symmetric_uniform_like(x, rng).mul_scalar(cfg.eps),
            Norm::L2 => {
                let t = normal_like(x, rng);
                let length = per_sample_norm(t.clone()).clamp_min(1e-12);
                x.clone() + t / length * cfg.eps
            }
        };
        let x_adv = start.clamp(0.0, 1.0);
        let ev = evaluate(target, &x_adv, y, targets, loss, cfg.eot, rng)?.into_host()?;
        let checkpoints = cfg.checkpoints();
        Ok(Self {
            x: x.clone(),
            y: y.clone(),
            targets: targets.cloned(),
            loss,
            cfg: cfg.clone(),
            x_old: x_adv.clone(),
            x_best: x_adv.clone(),
            x_found: x_adv.clone(),
            x_adv,
            grad: ev.grad.clone(),
            grad_best: ev.grad,
            loss_best: ev.loss.clone(),
            found: ev.wrong,
            step_size: vec![2.0 * cfg.eps; n],
            last_loss: ev.loss.clone(),
            increases: vec![0; n],
            reduced_last: vec![false; n],
            loss_best_at_check: ev.loss,
            next: checkpoints.first().copied().unwrap_or(usize::MAX),
            checkpoints,
            last_check: 0,
            done: 0,
        })
    }

    pub fn steps_done(&self) -> usize {
        self.done
    }

    pub fn is_finished(&self) -> bool {
        self.done >= self.cfg.steps
    }

    /// One iteration: momentum step, evaluation, bookkeeping and, at a
    /// checkpoint, the step-size test.
    pub fn step<T: AttackTarget + ?Sized>(&mut self, target: &T, rng: &mut AtopRng) -> Result<()> {
        let x_new = self.momentum_step();
        self.x_old = std::mem::replace(&mut self.x_adv, x_new);
        let ev = evaluate(
            target,
            &self.x_adv,
            &self.y,
            self.targets.as_ref(),
            self.loss,
            self.cfg.eot,
            rng,
        )?
        .into_host()?;
        self.record(ev);
        if self.done == self.next {
            self.step_size_check();
        }
        Ok(())
    }

    /// The next iterate: a step along the ascent direction, projected, then
    /// (after the first iteration) APGD's momentum, projected again.
    fn momentum_step(&self) -> Tensor<4> {
        let (x, cfg) = (&self.x, &self.cfg);
        let n = x.dims()[0];
        let step_t = Tensor::<1>::from_data(
            burn::tensor::TensorData::new(self.step_size.iter().map(|&s| s as f32).collect(), [n]),
            &x.device(),
        )
        .reshape([n, 1, 1, 1]);
        let z = project(
            self.x_adv.clone() + ascent_direction(self.grad.clone(), cfg.norm) * step_t,
            x,
            cfg.norm,
            cfg.eps,
        );
        if self.done == 0 {
            return z;
        }
        let a = cfg.alpha;
        let moved = self.x_adv.clone()
            + (z - self.x_adv.clone()).mul_scalar(a)
            + (self.x_adv.clone() - self.x_old.clone()).mul_scalar(1.0 - a);
        project(moved, x, cfg.norm, cfg.eps)
    }

    /// Bookkeeping of one evaluation: points fooled, best loss and its
    /// iterate and gradient, loss increases since the last check.
    fn record(&mut self, ev: Evaluation) {
        let dims = self.x.dims();
        let device = self.x.device();
        self.grad = ev.grad;
        let wrong_mask = sample_mask(&ev.wrong, dims, &device);
        self.x_found = self
            .x_found
            .clone()
            .mask_where(wrong_mask, self.x_adv.clone());
        for (f, w) in self.found.iter_mut().zip(&ev.wrong) {
            *f |= *w;
        }
        let improved: Vec<bool> = ev
            .loss
            .iter()
            .zip(&self.loss_best)
            .map(|(l, b)| l > b)
            .collect();
        let mask = sample_mask(&improved, dims, &device);
        self.x_best = self
            .x_best
            .clone()
            .mask_where(mask.clone(), self.x_adv.clone());
        self.grad_best = self.grad_best.clone().mask_where(mask, self.grad.clone());
        for (s, &loss) in ev.loss.iter().enumerate() {
            if loss > self.last_loss[s] {
                self.increases[s] += 1;
            }
            if improved[s] {
                self.loss_best[s] = loss;
            }
        }
        self.last_loss = ev.loss;
        self.done += 1;
    }

    /// At a checkpoint: halve the step size of the points whose loss
    /// oscillated or stalled, and restart them from their best iterate.
    fn step_size_check(&mut self) {
        let cfg = &self.cfg;
        let dims = self.x.dims();
        let (n, device) = (dims[0], self.x.device());
        let interval = self.next - self.last_check;
        let halve: Vec<bool> = (0..n)
            .map(|s| {
                let oscillating = (self.increases[s] as f64) < cfg.rho * interval as f64;
                let stalled =
                    !self.reduced_last[s] && self.loss_best_at_check[s] >= self.loss_best[s];
                oscillating || stalled
            })
            .collect();
        for (step, _) in self.step_size.iter_mut().zip(&halve).filter(|(_, h)| **h) {
            *step /= 2.0;
        }
        let mask = sample_mask(&halve, dims, &device);
        self.x_adv = self
            .x_adv
            .clone()
            .mask_where(mask.clone(), self.x_best.clone());
        self.grad = self.grad.clone().mask_where(mask, self.grad_best.clone());
        self.reduced_last = halve;
        self.loss_best_at_check.clone_from(&self.loss_best);
        self.increases.iter_mut().for_each(|c| *c = 0);
        self.last_check = self.next;
        let next = self.next;
        self.next = self
            .checkpoints
            .iter()
            .copied()
            .find(|&c| c > next)
            .unwrap_or(usize::MAX);
    }

    /// All remaining iterations, then [`Self::finish`].
    fn run_to_end<T: AttackTarget + ?Sized>(
        mut self,
        target: &T,
        rng: &mut AtopRng,
    ) -> Result<(Tensor<4>, Vec<bool>)> {
        while !self.is_finished() {
            self.step(target, rng)?;
        }
        Ok(self.finish())
    }

    /// The current iterate.
    pub fn current(&self) -> Tensor<4> {
        self.x_adv.clone()
    }

    /// Per sample the highest-loss iterate and that loss (EOT-averaged).
    pub fn finish_best_loss(self) -> (Tensor<4>, Vec<f32>) {
        (self.x_best, self.loss_best)
    }

    /// Per sample the last iterate that was misclassified, else the
    /// highest-loss iterate; and whether any iterate was misclassified.
    pub fn finish(self) -> (Tensor<4>, Vec<bool>) {
        let dims = self.x.dims();
        let found_mask = sample_mask(&self.found, dims, &self.x.device());
        (self.x_best.mask_where(found_mask, self.x_found), self.found)
    }
}

impl From<ApgdLoss> for AttackLoss {
    fn from(loss: ApgdLoss) -> Self {
        match loss {
            ApgdLoss::Ce => AttackLoss::CrossEntropy,
            ApgdLoss::Dlr => AttackLoss::Dlr,
        }
    }
}

/// Runs `run` on the points not yet fooled, `rounds` times, merging results.
fn on_robust_points<T, F>(
    target: &T,
    x: &Tensor<4>,
    labels: &[i64],
    rounds: usize,
    rng: &mut AtopRng,
    mut run: F,
) -> Result<Tensor<4>>
where
    T: AttackTarget + ?Sized,
    F: FnMut(usize, &Tensor<4>, &[usize], &mut AtopRng) -> Result<(Tensor<4>, Vec<bool>)>,
{
    let dims = x.dims();
    let mut x_adv = x.clone();
    let mut fooled = wrong_once(target, x, labels, rng)?;
    for round in 0..rounds {
        let remaining: Vec<usize> = (0..dims[0]).filter(|&i| !fooled[i]).collect();
        if remaining.is_empty() {
            break;
        }
        let (sub_adv, sub_found) = run(round, &select_rows(x, &remaining), &remaining, rng)?;
        for (j, &i) in remaining.iter().enumerate() {
            fooled[i] |= sub_found[j];
        }
        // A point not yet fooled takes this round's attempt (its best loss
        // when no success), so later scoring sees the strongest one.
        x_adv = scatter_rows(x_adv, sub_adv, &remaining, &vec![true; remaining.len()]);
    }
    Ok(x_adv)
}

/// Every point, `rounds` runs (`run(round, rng)` gives the round's
/// highest-loss iterates and their losses); per point the iterate of the
/// highest loss over all rounds.
fn best_loss_over_rounds<F>(
    x: &Tensor<4>,
    rounds: usize,
    rng: &mut AtopRng,
    mut run: F,
) -> Result<Tensor<4>>
where
    F: FnMut(usize, &mut AtopRng) -> Result<(Tensor<4>, Vec<f32>)>,
{
    let mut best = x.clone();
    let mut best_loss = vec![f32::NEG_INFINITY; x.dims()[0]];
    for round in 0..rounds {
        let (candidate, loss) = run(round, rng)?;
        best = keep_higher(best, &mut best_loss, candidate, &loss);
    }
    Ok(best)
}

/// Untargeted APGD with the cross-entropy or DLR loss.
pub fn apgd<T: AttackTarget + ?Sized>(
    target: &T,
    x: Tensor<4>,
    labels: &[i64],
    cfg: &ApgdConfig,
    rng: &mut AtopRng,
) -> Result<Tensor<4>> {
    cfg.validate()?;
    check_labels(labels, x.dims())?;
    let x = x.detach();
    let loss = cfg.loss.into();
    if cfg.selection.against(target.is_randomized()) == IterateSelection::BestLoss {
        let y = int_tensor(labels, &x.device());
        return best_loss_over_rounds(&x, cfg.restarts, rng, |_, rng| {
            let mut run = ApgdRun::start_with(target, &x, &y, None, loss, cfg, rng)?;
            while !run.is_finished() {
                run.step(target, rng)?;
            }
            Ok(run.finish_best_loss())
        });
    }
    on_robust_points(target, &x, labels, cfg.restarts, rng, |_, xs, idx, rng| {
        let ys: Vec<i64> = idx.iter().map(|&i| labels[i]).collect();
        let y = int_tensor(&ys, &xs.device());
        ApgdRun::start_with(target, xs, &y, None, loss, cfg, rng)?.run_to_end(target, rng)
    })
}

/// Targeted APGD-DLR (APGD-T): for each of the `target_classes` classes
/// ranked 2nd, 3rd, ... by the clean logits, a run towards that class on the
/// points still robust (AutoAttack: 9 targets, one restart each).
pub fn apgd_targeted<T: AttackTarget + ?Sized>(
    target: &T,
    x: Tensor<4>,
    labels: &[i64],
    cfg: &ApgdConfig,
    target_classes: usize,
    rng: &mut AtopRng,
) -> Result<Tensor<4>> {
    cfg.validate()?;
    check_labels(labels, x.dims())?;
    let x = x.detach();
    let [n, ..] = x.dims();
    let clean = target.logits(x.clone(), rng)?.detach();
    let [_, k] = clean.dims();
    if k < 4 {
        return Err(AtopError::config(
            "attack",
            format!("APGD-T needs at least 4 classes, the model has {k}"),
        ));
    }
    let targets_count = target_classes.min(k - 1);
    let (_, order) = clean.sort_descending_with_indices(1);
    // ranked[i][r]: the class ranked r-th for point i (0 = top).
    let ranked = to_i64(order.reshape([n * k]), "target ranking")?;
    let rounds = targets_count * cfg.restarts;
    if cfg.selection.against(target.is_randomized()) == IterateSelection::BestLoss {
        let all: Vec<usize> = (0..n).collect();
        let y = int_tensor(labels, &x.device());
        return best_loss_over_rounds(&x, rounds, rng, |round, rng| {
            let ts = targets_by_rank(&ranked, k, labels, &all, 1 + round / cfg.restarts);
            let t = int_tensor(&ts, &x.device());
            let loss = AttackLoss::DlrTargeted;
            let mut run = ApgdRun::start_with(target, &x, &y, Some(&t), loss, cfg, rng)?;
            while !run.is_finished() {
                run.step(target, rng)?;
            }
            Ok(run.finish_best_loss())
        });
    }
    on_robust_points(target, &x, labels, rounds, rng, |round, xs, idx, rng| {
        let rank = 1 + round / cfg.restarts;
        let ys: Vec<i64> = idx.iter().map(|&i| labels[i]).collect();
        // The rank is counted among classes other than the true one.
        let ts = targets_by_rank(&ranked, k, labels, idx, rank);
        let device = xs.device();
        let (y, t) = (int_tensor(&ys, &device), int_tensor(&ts, &device));
        ApgdRun::start_with(target, xs, &y, Some(&t), AttackLoss::DlrTargeted, cfg, rng)?
            .run_to_end(target, rng)
    })
}
