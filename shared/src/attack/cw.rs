//! Carlini-Wagner L2 (S&P 2017): minimise ||delta||^2 + c * f(x + delta) in
//! the tanh space (so the box holds by construction) with Adam, where f is
//! the clipped logit margin. A minimum-norm attack: as with FAB, a point is
//! broken only when the smallest adversarial found lies within eps.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::common::{
    AttackLoss, check_eps, check_labels, input_gradient, int_tensor, per_sample_loss,
    per_sample_norm, sample_mask, to_f32,
};
use super::target::AttackTarget;
use crate::error::{AtopError, Result};
use crate::rng::AtopRng;

/// C&W settings (torchattacks' defaults, with 100 steps).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CwConfig {
    /// L2 radius within which a found adversarial counts.
    pub eps: f64,
    /// Weight of the margin term against the squared distance.
    pub c: f64,
    /// Confidence: the margin the attack aims past the boundary.
    pub kappa: f64,
    pub steps: usize,
    /// Adam's learning rate in the tanh space.
    pub lr: f64,
}

impl Default for CwConfig {
    fn default() -> Self {
        Self {
            eps: 0.5,
            c: 1.0,
            kappa: 0.0,
            steps: 100,
            lr: 0.01,
        }
    }
}

impl CwConfig {
    pub fn validate(&self) -> Result<()> {
        check_eps(self.eps)?;
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if self.steps == 0
            || !positive(self.lr)
            || !positive(self.c)
            || check_eps(self.kappa).is_err()
        {
            return Err(AtopError::config(
                "attack",
                "C&W needs steps >= 1, lr > 0, c > 0 and kappa >= 0",
            ));
        }
        Ok(())
    }
}

/// Untargeted C&W L2. Returns per point the smallest-L2 adversarial found
/// if it lies within eps, else the clean image. The target should be
/// deterministic (or the caller accepts single-draw margins).
pub fn carlini_wagner_l2<T: AttackTarget + ?Sized>(
    target: &T,
    x: Tensor<4>,
    labels: &[i64],
    cfg: &CwConfig,
    rng: &mut AtopRng,
) -> Result<Tensor<4>> {
    cfg.validate()?;
    let dims = x.dims();
    check_labels(labels, dims)?;
    let n = dims[0];
    let device = x.device();
    let x = x.detach();
    let y = int_tensor(labels, &device);
    // atanh(2x - 1), kept finite at the box's edges.
    let atanh = |t: Tensor<4>| {
        let t = t
            .mul_scalar(2.0)
            .sub_scalar(1.0)
            .clamp(-1.0 + 1e-6, 1.0 - 1e-6);
        ((t.clone().add_scalar(1.0)) / (t.neg().add_scalar(1.0)))
            .log()
            .mul_scalar(0.5)
    };
    let mut w = atanh(x.clone());
    let (mut m, mut v) = (w.zeros_like(), w.zeros_like());
    let (beta1, beta2) = (0.9f64, 0.999f64);
    let mut best = x.clone();
    let mut best_dist = vec![f32::INFINITY; n];
    for step in 1..=cfg.steps {
        let wt = w.clone().detach().require_grad();
        let x_adv = wt.clone().tanh().add_scalar(1.0).mul_scalar(0.5);
        let dist2 = (x_adv.clone() - x.clone())
            .powi_scalar(2)
            .reshape([n, dims[1] * dims[2] * dims[3]])
            .sum_dim(1)
            .reshape([n]);
        let logits = target.logits(x_adv.clone(), rng)?;
        // Margin loss is (max other - true); C&W pushes it up to kappa.
        let margin = per_sample_loss(AttackLoss::Margin, logits, &y, None)?;
        let f = margin.clone().neg().clamp_min(-cfg.kappa);
        let loss = dist2.clone() + f.clone().mul_scalar(cfg.c);
        let grads = loss.sum().backward();
        let g = input_gradient(&wt, &grads)?;
        // Record successes of this iterate before stepping.
        let fooled: Vec<bool> = to_f32(margin.detach(), "C&W margin")?
            .iter()
            .map(|&m| m > 0.0)
            .collect();
        let dist: Vec<f32> = to_f32(
            per_sample_norm(x_adv.clone().detach() - x.clone()).reshape([n]),
            "C&W distance",
        )?;
        let better: Vec<bool> = (0..n)
            .map(|i| fooled[i] && dist[i] < best_dist[i])
            .collect();
        for i in 0..n {
            if better[i] {
                best_dist[i] = dist[i];
            }
        }
        best = best.mask_where(sample_mask(&better, dims, &device), x_adv.detach());
        // Adam on w.
        m = m.mul_scalar(beta1) + g.clone().mul_scalar(1.0 - beta1);
        v = v.mul_scalar(beta2) + g.powi_scalar(2).mul_scalar(1.0 - beta2);
        let m_hat = m.clone().div_scalar(1.0 - beta1.powi(step as i32));
        let v_hat = v.clone().div_scalar(1.0 - beta2.powi(step as i32));
        w = w - m_hat.mul_scalar(cfg.lr) / v_hat.sqrt().add_scalar(1e-8);
    }
    let within: Vec<bool> = best_dist
        .iter()
        .map(|&d| d <= cfg.eps as f32 * (1.0 + 1e-5))
        .collect();
    // Scale the rare rounding excess back onto the sphere.
    let delta = best - x.clone();
    let length = per_sample_norm(delta.clone()).clamp_min(1e-12);
    let factor = length.recip().mul_scalar(cfg.eps).clamp_max(1.0);
    let adv = (x.clone() + delta * factor).clamp(0.0, 1.0);
    Ok(x.mask_where(sample_mask(&within, dims, &device), adv))
}
