//! StAdv (Xiao et al., ICLR 2018): a spatially transformed adversarial
//! example. Instead of adding a perturbation, every output pixel is
//! resampled (bilinearly) from a nearby location given by a per-pixel flow
//! field; the attack ascends the classifier's margin while a smoothness loss
//! keeps the flow locally coherent. An unseen threat model for defenses
//! trained against L-p perturbations (the paper's generalization test).
//!
//! The flow is bounded in L-infinity in normalized image coordinates (the
//! image spans [-1, 1], so 0.05 moves a pixel by at most 5% of half the
//! side), the bound of DiffPure's StAdv evaluation (perceptual-advex:
//! bound 0.05, Adam with step 0.01, flow-loss weight 0.0025 / bound, 100
//! iterations).

use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use super::common::{AttackLoss, check_labels, input_gradient, int_tensor, per_sample_loss};
use super::target::AttackTarget;
use crate::error::{AtopError, Result};
use crate::rng::AtopRng;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StadvConfig {
    /// L-infinity bound on the flow, in normalized coordinates.
    pub bound: f64,
    pub steps: usize,
    /// Adam's step size on the flow.
    pub lr: f64,
    /// Weight of the flow smoothness loss (perceptual-advex: 0.0025 / bound).
    pub smoothness_weight: f64,
    /// Gradient samples averaged per step (Expectation over Transformation).
    pub eot: usize,
}

impl Default for StadvConfig {
    fn default() -> Self {
        Self::with_bound(0.05)
    }
}

impl StadvConfig {
    /// The perceptual-advex settings for a bound.
    pub fn with_bound(bound: f64) -> Self {
        Self {
            bound,
            steps: 100,
            lr: 0.01,
            smoothness_weight: 0.0025 / bound.max(f64::MIN_POSITIVE),
            eot: 1,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.bound.is_finite() && self.bound >= 0.0) {
            return Err(AtopError::config(
                "stadv.bound",
                format!("must be finite and >= 0, got {}", self.bound),
            ));
        }
        let lr_ok = self.lr.is_finite() && self.lr > 0.0;
        let weight_ok = self.smoothness_weight.is_finite() && self.smoothness_weight >= 0.0;
        if !(lr_ok && weight_ok) {
            return Err(AtopError::config(
                "stadv",
                "lr must be > 0 and smoothness_weight >= 0, both finite",
            ));
        }
        if self.steps == 0 || self.eot == 0 {
            return Err(AtopError::config(
                "stadv",
                "steps and eot must be at least 1",
            ));
        }
        Ok(())
    }
}

/// `x` resampled bilinearly at each pixel's location moved by `flow`
/// (`[n, 2, h, w]`: horizontal then vertical displacement, normalized so
/// that 1 is half the side; the border pixel repeats outside the image).
/// Every output pixel is a convex combination of input pixels, so the
/// result stays in the input's range. Differentiable in `x` and `flow`.
pub fn warp_by_flow(x: Tensor<4>, flow: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let device = x.device();
    let grid = |len: usize, shape: [usize; 3]| {
        Tensor::<1, Int>::arange(0..len as i64, &device)
            .float()
            .reshape(shape)
            .expand([n, h, w])
    };
    let half = |side: usize| (side.max(2) - 1) as f64 / 2.0;
    let moved = |axis: usize, base: Tensor<3>, side: usize| {
        let shift = flow.clone().narrow(1, axis, 1).reshape([n, h, w]);
        (base + shift.mul_scalar(half(side))).clamp(0.0, (side - 1) as f64) // [n, h, w] pixels
    };
    let px = moved(0, grid(w, [1, 1, w]), w);
    let py = moved(1, grid(h, [1, h, 1]), h);
    // The corners are chosen on detached values; the weights carry the gradient.
    let x0 = px.clone().detach().floor();
    let y0 = py.clone().detach().floor();
    let wx = (px - x0.clone()).reshape([n, 1, h, w]);
    let wy = (py - y0.clone()).reshape([n, 1, h, w]);
    let x1 = x0.clone().add_scalar(1.0).clamp_max((w - 1) as f64);
    let y1 = y0.clone().add_scalar(1.0).clamp_max((h - 1) as f64);
    let flat = x.reshape([n, c, h * w]);
    let pick = |yy: &Tensor<3>, xx: &Tensor<3>| {
        let index = (yy.clone().mul_scalar(w as f64) + xx.clone())
            .int()
            .reshape([n, 1, h * w])
            .expand([n, c, h * w]);
        flat.clone().gather(2, index).reshape([n, c, h, w]) // [n, c, h, w]
    };
    let (ux, uy) = (
        wx.clone().neg().add_scalar(1.0),
        wy.clone().neg().add_scalar(1.0),
    );
    let top = pick(&y0, &x0) * ux.clone() + pick(&y0, &x1) * wx.clone();
    let bottom = pick(&y1, &x0) * ux + pick(&y1, &x1) * wx;
    (top * uy + bottom * wy).clamp(0.0, 1.0)
}

/// Xiao et al.'s flow loss per sample: over each pixel and its right and
/// lower neighbours, sqrt(|du|^2 + |dv|^2 + 1e-8), summed. `[n]`.
pub fn flow_smoothness(flow: &Tensor<4>) -> Tensor<1> {
    let [n, _, h, w] = flow.dims();
    let term = |d: Tensor<4>| {
        let [_, _, a, b] = d.dims();
        d.powi_scalar(2)
            .sum_dim(1) // [n, 1, a, b]: both displacement channels
            .add_scalar(1e-8)
            .sqrt()
            .reshape([n, a * b])
            .sum_dim(1)
            .reshape([n])
    };
    let mut total = Tensor::<1>::zeros([n], &flow.device());
    if w > 1 {
        total = total + term(flow.clone().narrow(3, 1, w - 1) - flow.clone().narrow(3, 0, w - 1));
    }
    if h > 1 {
        total = total + term(flow.clone().narrow(2, 1, h - 1) - flow.clone().narrow(2, 0, h - 1));
    }
    total
}

/// The gradient of StAdv's objective (margin minus the weighted flow loss,
/// EOT-averaged over `cfg.eot` draws of a randomized target) with respect
/// to the flow, and the adversarial image it gives.
pub fn stadv_flow_gradient<T: AttackTarget + ?Sized>(
    target: &T,
    x: &Tensor<4>,
    flow: &Tensor<4>,
    labels: &Tensor<1, Int>,
    cfg: &StadvConfig,
    rng: &mut AtopRng,
) -> Result<Tensor<4>> {
    let eot = if target.is_randomized() { cfg.eot } else { 1 };
    let flow = flow.clone().detach().require_grad();
    let warped = warp_by_flow(x.clone(), flow.clone());
    let (warped, y) = if eot > 1 {
        (warped.repeat_dim(0, eot), labels.clone().repeat_dim(0, eot))
    } else {
        (warped, labels.clone())
    };
    let logits = target.logits(warped, rng)?;
    let margin = per_sample_loss(AttackLoss::Margin, logits, &y, None)?;
    let objective = margin.sum().div_scalar(eot as f64)
        - flow_smoothness(&flow)
            .sum()
            .mul_scalar(cfg.smoothness_weight);
    input_gradient(&flow, &objective.backward())
}

/// StAdv on `target`: Adam ascent on the flow, projected onto the bound
/// after each step. Returns the adversarial images and the flow.
pub fn stadv<T: AttackTarget + ?Sized>(
    target: &T,
    x: Tensor<4>,
    labels: &[i64],
    cfg: &StadvConfig,
    rng: &mut AtopRng,
) -> Result<(Tensor<4>, Tensor<4>)> {
    cfg.validate()?;
    let [n, _, h, w] = x.dims();
    check_labels(labels, x.dims())?;
    let x = x.detach();
    let y = int_tensor(labels, &x.device());
    let mut flow = Tensor::<4>::zeros([n, 2, h, w], &x.device());
    let (mut m, mut v) = (flow.clone(), flow.clone());
    let (b1, b2) = (0.9f64, 0.999f64);
    for t in 1..=cfg.steps {
        let g = stadv_flow_gradient(target, &x, &flow, &y, cfg, rng)?;
        m = m.mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1);
        v = v.mul_scalar(b2) + g.powi_scalar(2).mul_scalar(1.0 - b2);
        let m_hat = m.clone().div_scalar(1.0 - b1.powi(t as i32));
        let v_hat = v.clone().div_scalar(1.0 - b2.powi(t as i32));
        let step = m_hat / v_hat.sqrt().add_scalar(1e-8);
        flow = (flow + step.mul_scalar(cfg.lr)).clamp(-cfg.bound, cfg.bound);
    }
    Ok((warp_by_flow(x, flow.clone()).detach(), flow))
}
