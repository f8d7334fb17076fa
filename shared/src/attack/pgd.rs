//! FGSM and PGD (L-infinity and L2) with random start, restarts and EOT.

use burn::tensor::{Bool, Int, Tensor};
use serde::{Deserialize, Serialize};

use super::common::{
    AttackLoss, Norm, ascent_direction, check_eps, check_labels, evaluate, int_tensor, normal_like,
    per_sample_norm, project,
};
use super::target::AttackTarget;
use crate::error::{AtopError, Result};
use crate::rng::AtopRng;

/// The loss PGD ascends.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PgdLoss {
    /// Cross-entropy of the true label (Madry et al.).
    #[default]
    Ce,
    /// The margin max_{j != y} z_j - z_y (Carlini & Wagner's f6, untargeted).
    Margin,
    /// The difference of logits ratio (Croce & Hein 2020).
    Dlr,
}

impl PgdLoss {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ce => "ce",
            Self::Margin => "margin",
            Self::Dlr => "dlr",
        }
    }
}

impl From<PgdLoss> for AttackLoss {
    fn from(loss: PgdLoss) -> Self {
        match loss {
            PgdLoss::Ce => AttackLoss::CrossEntropy,
            PgdLoss::Margin => AttackLoss::Margin,
            PgdLoss::Dlr => AttackLoss::Dlr,
        }
    }
}

/// Projected gradient descent (cross-entropy, margin or DLR loss).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PgdConfig {
    pub norm: Norm,
    /// Radius of the threat model, in [0,1] image units.
    pub eps: f64,
    /// Step size; `None` uses 2.5 * eps / steps (Madry et al.).
    pub step_size: Option<f64>,
    pub steps: usize,
    pub random_start: bool,
    /// Runs from independent random starts (1 = a single run), as in APGD
    /// and Square; a point counts as broken if any run breaks it.
    pub restarts: usize,
    /// Gradient samples averaged per step (Expectation over Transformation).
    pub eot: usize,
    pub loss: PgdLoss,
}

impl Default for PgdConfig {
    fn default() -> Self {
        Self {
            norm: Norm::Linf,
            eps: 8.0 / 255.0,
            step_size: None,
            steps: 10,
            random_start: true,
            restarts: 1,
            eot: 1,
            loss: PgdLoss::Ce,
        }
    }
}

impl PgdConfig {
    pub fn validate(&self) -> Result<()> {
        check_eps(self.eps)?;
        if self.steps == 0 || self.eot == 0 || self.restarts == 0 {
            return Err(AtopError::config(
                "attack",
                "steps, eot and restarts (runs) must be at least 1",
            ));
        }
        if let Some(a) = self.step_size
            && !(a.is_finite() && a > 0.0 && (a <= 2.0 * self.eps || self.eps == 0.0))
        {
            return Err(AtopError::config(
                "attack.step_size",
                format!(
                    "must be finite and in (0, 2 * eps] = (0, {}], got {a}",
                    2.0 * self.eps
                ),
            ));
        }
        Ok(())
    }

    /// The step size this configuration runs with: `step_size`, or
    /// 2.5 * eps / steps (Madry et al.) when none is given.
    pub fn alpha(&self) -> f64 {
        self.step_size.unwrap_or(2.5 * self.eps / self.steps as f64)
    }
}

/// Fast gradient sign method: one step of size eps, no random start.
pub fn fgsm<T: AttackTarget + ?Sized>(
    target: &T,
    x: Tensor<4>,
    labels: &[i64],
    eps: f64,
    eot: usize,
    rng: &mut AtopRng,
) -> Result<Tensor<4>> {
    let cfg = PgdConfig {
        norm: Norm::Linf,
        eps,
        step_size: Some(eps.max(f64::MIN_POSITIVE)),
        steps: 1,
        random_start: false,
        restarts: 1,
        eot,
        loss: PgdLoss::Ce,
    };
    pgd(target, x, labels, &cfg, rng)
}

fn random_start(x: &Tensor<4>, cfg: &PgdConfig, rng: &mut AtopRng) -> Tensor<4> {
    let noise = normal_like(x, rng);
    let delta = match cfg.norm {
        // A clipped normal scaled to eps covers the cube well enough.
        Norm::Linf => noise.mul_scalar(cfg.eps / 2.0).clamp(-cfg.eps, cfg.eps),
        Norm::L2 => {
            let norm = per_sample_norm(noise.clone()).clamp_min(1e-12);
            noise / norm * cfg.eps * 0.5
        }
    };
    project(x.clone() + delta, x, cfg.norm, cfg.eps)
}

/// One PGD run (no restarts), advanced a step at a time so a caller can
/// report progress between steps (the browser demo yields to the page). A
/// step never reads back from the device, so it also runs on WebGPU in a
/// browser, where blocking reads are impossible.
pub struct PgdRun {
    x: Tensor<4>,
    y: Tensor<1, Int>,
    x_adv: Tensor<4>,
    cfg: PgdConfig,
    done: usize,
}

impl PgdRun {
    /// Validates the settings and takes the random start (if any) from `rng`.
    pub fn start(x: Tensor<4>, labels: &[i64], cfg: &PgdConfig, rng: &mut AtopRng) -> Result<Self> {
        cfg.validate()?;
        check_labels(labels, x.dims())?;
        let x = x.detach();
        let y = int_tensor(labels, &x.device());
        let x_adv = if cfg.random_start && cfg.eps > 0.0 {
            random_start(&x, cfg, rng)
        } else {
            x.clone()
        };
        Ok(Self {
            x,
            y,
            x_adv,
            cfg: cfg.clone(),
            done: 0,
        })
    }

    /// One gradient step (EOT-averaged for a randomized target).
    pub fn step<T: AttackTarget + ?Sized>(&mut self, target: &T, rng: &mut AtopRng) -> Result<()> {
        let eval = evaluate(
            target,
            &self.x_adv,
            &self.y,
            None,
            self.cfg.loss.into(),
            self.cfg.eot,
            rng,
        )?;
        let step = ascent_direction(eval.grad, self.cfg.norm).mul_scalar(self.cfg.alpha());
        self.x_adv = project(
            self.x_adv.clone() + step,
            &self.x,
            self.cfg.norm,
            self.cfg.eps,
        );
        self.done += 1;
        Ok(())
    }

    pub fn steps_done(&self) -> usize {
        self.done
    }

    pub fn is_finished(&self) -> bool {
        self.done >= self.cfg.steps
    }

    /// The current iterate: in the eps-ball around the input and in [0,1].
    pub fn adversarial(&self) -> Tensor<4> {
        self.x_adv.clone()
    }
}

/// PGD on `target`. Returns adversarial images in the eps-ball around `x`
/// and in [0,1]. Over restarts, keeps per sample the first run that makes
/// the (single-draw) prediction wrong, else the last run.
pub fn pgd<T: AttackTarget + ?Sized>(
    target: &T,
    x: Tensor<4>,
    labels: &[i64],
    cfg: &PgdConfig,
    rng: &mut AtopRng,
) -> Result<Tensor<4>> {
    cfg.validate()?;
    let dims = x.dims();
    check_labels(labels, dims)?;
    let x = x.detach();
    let y = int_tensor(labels, &x.device());
    let mut best: Option<(Tensor<4>, Tensor<1, Bool>)> = None;
    for _ in 0..cfg.restarts {
        let mut run = PgdRun::start(x.clone(), labels, cfg, rng)?;
        while !run.is_finished() {
            run.step(target, rng)?;
        }
        let x_adv = run.adversarial();
        if cfg.restarts == 1 {
            return Ok(x_adv);
        }
        let logits = target.logits(x_adv.clone(), rng)?.detach();
        let wrong = logits.argmax(1).reshape([dims[0]]).not_equal(y.clone());
        best = Some(match best {
            None => (x_adv, wrong),
            Some((prev, prev_wrong)) => {
                // Keep earlier successes; take this run where the earlier failed.
                let take = prev_wrong.clone().bool_not().bool_and(wrong.clone());
                let mask = take.clone().reshape([dims[0], 1, 1, 1]).expand(dims);
                (prev.mask_where(mask, x_adv), prev_wrong.bool_or(take))
            }
        });
    }
    Ok(best.map(|(x, _)| x).unwrap_or(x))
}
