//! FGSM and PGD (L-infinity and L2) with random start, restarts and EOT.

use burn::tensor::loss::cross_entropy_with_logits;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::target::AttackTarget;
use crate::error::{AtopError, Result};
use crate::rng::{AtopRng, fill_standard_normal};

/// The threat model's norm.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    #[default]
    Linf,
    L2,
}

/// Projected gradient descent on the cross-entropy loss.
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
    /// Extra runs from new random starts; a point counts as broken if any run breaks it.
    pub restarts: usize,
    /// Gradient samples averaged per step (Expectation over Transformation).
    pub eot: usize,
}

impl Default for PgdConfig {
    fn default() -> Self {
        Self {
            norm: Norm::Linf,
            eps: 8.0 / 255.0,
            step_size: None,
            steps: 10,
            random_start: true,
            restarts: 0,
            eot: 1,
        }
    }
}

impl PgdConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(AtopError::config(
                "attack.eps",
                format!("must be finite and >= 0, got {}", self.eps),
            ));
        }
        if self.steps == 0 || self.eot == 0 {
            return Err(AtopError::config(
                "attack",
                "steps and eot must be at least 1",
            ));
        }
        if let Some(a) = self.step_size
            && !(a.is_finite() && a > 0.0)
        {
            return Err(AtopError::config(
                "attack.step_size",
                format!("must be finite and > 0, got {a}"),
            ));
        }
        Ok(())
    }

    fn alpha(&self) -> f64 {
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
        restarts: 0,
        eot,
    };
    pgd(target, x, labels, &cfg, rng)
}

/// The cross-entropy gradient w.r.t. `x`, averaged over `eot` draws
/// (the batch is repeated `eot` times and run as one).
fn loss_gradient<T: AttackTarget + ?Sized>(
    target: &T,
    x: &Tensor<4>,
    labels: &Tensor<1, Int>,
    classes: Option<usize>,
    eot: usize,
    rng: &mut AtopRng,
) -> Result<(Tensor<4>, usize)> {
    let x = x.clone().detach().require_grad();
    let x_rep = if eot > 1 {
        x.clone().repeat_dim(0, eot)
    } else {
        x.clone()
    };
    let logits = target.logits(x_rep, rng)?;
    let [_, k] = logits.dims();
    if let Some(c) = classes
        && c != k
    {
        return Err(AtopError::shape(
            "logits",
            format!("[n, {c}]"),
            &logits.dims(),
        ));
    }
    let y = if eot > 1 {
        labels.clone().repeat_dim(0, eot)
    } else {
        labels.clone()
    };
    let loss = cross_entropy_with_logits(logits, y.one_hot::<2>(k).float());
    let grads = loss.backward();
    let g = x.grad(&grads).ok_or_else(|| {
        AtopError::tensor(
            "attack input",
            "no gradient reached the input: is the model on an autodiff device?",
        )
    })?;
    Ok((g.detach(), k))
}

fn per_sample_norm(t: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = t.dims();
    t.powi_scalar(2)
        .reshape([n, c * h * w])
        .sum_dim(1)
        .sqrt()
        .reshape([n, 1, 1, 1])
}

/// Projects `x_adv` onto the eps-ball around `x` and the [0,1] box.
fn project(x_adv: Tensor<4>, x: &Tensor<4>, cfg: &PgdConfig) -> Tensor<4> {
    let delta = x_adv - x.clone();
    let delta = match cfg.norm {
        Norm::Linf => delta.clamp(-cfg.eps, cfg.eps),
        Norm::L2 => {
            let norm = per_sample_norm(delta.clone()).clamp_min(1e-12);
            let factor = norm.clone().recip().mul_scalar(cfg.eps).clamp_max(1.0);
            delta * factor
        }
    };
    (x.clone() + delta).clamp(0.0, 1.0)
}

fn random_start(x: &Tensor<4>, cfg: &PgdConfig, rng: &mut AtopRng) -> Tensor<4> {
    let dims = x.dims();
    let mut noise = vec![0f32; dims.iter().product()];
    fill_standard_normal(rng, &mut noise);
    let noise = Tensor::<4>::from_data(TensorData::new(noise, dims), &x.device());
    let delta = match cfg.norm {
        // Uniform in the cube from normal samples via the error function is
        // overkill: a clipped normal scaled to eps covers the ball well.
        Norm::Linf => noise.mul_scalar(cfg.eps / 2.0).clamp(-cfg.eps, cfg.eps),
        Norm::L2 => {
            let norm = per_sample_norm(noise.clone()).clamp_min(1e-12);
            noise / norm * cfg.eps * 0.5
        }
    };
    project(x.clone() + delta, x, cfg)
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
    if labels.len() != dims[0] {
        return Err(AtopError::shape(
            "attack labels",
            format!("{} labels", dims[0]),
            &[labels.len()],
        ));
    }
    let device = x.device();
    let x = x.detach();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels.to_vec(), [labels.len()]), &device);
    let alpha = cfg.alpha();
    // A deterministic target gives the same gradient on every draw: one suffices.
    let eot = if target.is_randomized() { cfg.eot } else { 1 };
    let mut best: Option<(Tensor<4>, Tensor<1, burn::tensor::Bool>)> = None;
    for _ in 0..=cfg.restarts {
        let mut x_adv = if cfg.random_start && cfg.eps > 0.0 {
            random_start(&x, cfg, rng)
        } else {
            x.clone()
        };
        for _ in 0..cfg.steps {
            let (g, _) = loss_gradient(target, &x_adv, &y, None, eot, rng)?;
            let step = match cfg.norm {
                Norm::Linf => g.sign().mul_scalar(alpha),
                Norm::L2 => {
                    let norm = per_sample_norm(g.clone()).clamp_min(1e-12);
                    g / norm * alpha
                }
            };
            x_adv = project(x_adv + step, &x, cfg);
        }
        if cfg.restarts == 0 {
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
