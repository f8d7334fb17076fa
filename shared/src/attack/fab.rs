//! FAB, the fast adaptive boundary attack (Croce & Hein, ICML 2020), in its
//! targeted form: a minimum-norm attack that linearises the decision
//! boundary between the true and the target class, steps to the closest
//! point of that hyperplane inside the [0,1] box (from the current iterate
//! and from the original image, mixed), and backs off towards the original
//! once it has crossed. A point counts as broken only if the smallest
//! adversarial found lies within eps.

use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::common::{
    Norm, check_eps, check_labels, host_values, input_gradient, int_tensor, one_hot, select_rows,
    targets_by_rank, to_i64, wrong_once,
};
use super::target::AttackTarget;
use crate::error::{AtopError, Result};
use crate::rng::AtopRng;

/// FAB settings; the defaults are AutoAttack's (FAB-T: 100 iterations, one
/// restart per target class).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FabConfig {
    pub norm: Norm,
    pub eps: f64,
    pub steps: usize,
    /// Largest weight of the step from the original image.
    pub alpha_max: f64,
    /// Overshoot of each projection step.
    pub eta: f64,
    /// Back-off factor towards the original after crossing the boundary.
    pub beta: f64,
}

impl Default for FabConfig {
    fn default() -> Self {
        Self {
            norm: Norm::Linf,
            eps: 8.0 / 255.0,
            steps: 100,
            alpha_max: 0.1,
            eta: 1.05,
            beta: 0.9,
        }
    }
}

impl FabConfig {
    pub fn validate(&self) -> Result<()> {
        check_eps(self.eps)?;
        if self.steps == 0 {
            return Err(AtopError::config("attack.steps", "must be at least 1"));
        }
        for (key, v) in [
            ("attack.alpha_max", self.alpha_max),
            ("attack.beta", self.beta),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(AtopError::config(
                    key,
                    format!("must be in [0, 1], got {v}"),
                ));
            }
        }
        if !(self.eta.is_finite() && self.eta >= 1.0) {
            return Err(AtopError::config(
                "attack.eta",
                format!("must be >= 1, got {}", self.eta),
            ));
        }
        Ok(())
    }
}

/// The smallest perturbation `d` (in `norm`) with `w . (t + d) = b` and
/// `t + d` in [0,1]; when the box does not reach the hyperplane, the move
/// that gets closest (every coordinate at its bound).
///
/// Moving coordinate i towards the hyperplane by `m_i` changes `w . t` by
/// `|w_i| m_i`, up to the room `r_i` left in the box. For L-infinity the
/// optimum moves every coordinate by `min(lambda, r_i)`; for L2 by
/// `min(lambda |w_i|, r_i)` (the KKT conditions). Either way the reachable
/// change is piecewise linear and increasing in `lambda`, so `lambda` is
/// found by sorting the breakpoints.
pub fn project_onto_hyperplane_in_box(t: &[f32], w: &[f32], b: f32, norm: Norm) -> Vec<f32> {
    let c: f64 = t
        .iter()
        .zip(w)
        .map(|(&ti, &wi)| ti as f64 * wi as f64)
        .sum::<f64>()
        - b as f64;
    // Moving "down" the hyperplane's normal when c > 0, up when c < 0.
    let dir = if c > 0.0 { -1.0 } else { 1.0 };
    let need = c.abs();
    let mut items: Vec<(f64, f64, f64, usize)> = Vec::with_capacity(t.len()); // (breakpoint, |w|, rate, i)
    for (i, (&ti, &wi)) in t.iter().zip(w).enumerate() {
        let (ti, wi) = (ti as f64, wi as f64);
        if wi.abs() < 1e-12 {
            continue;
        }
        // The coordinate moves up when that moves w . t the needed way.
        let up = dir * wi > 0.0;
        let room = if up { 1.0 - ti } else { ti }.max(0.0);
        let rate = match norm {
            Norm::Linf => 1.0,
            Norm::L2 => wi.abs(),
        };
        items.push((room / rate, wi.abs(), rate, i));
    }
    items.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Change reachable at lambda: sum over saturated |w| room + lambda * sum over free |w| rate.
    let mut saturated = 0f64;
    let mut free_slope: f64 = items.iter().map(|it| it.1 * it.2).sum();
    let mut lambda = f64::INFINITY;
    for it in &items {
        let at_break = saturated + it.0 * free_slope;
        if at_break >= need {
            lambda = if free_slope > 0.0 {
                (need - saturated) / free_slope
            } else {
                it.0
            };
            break;
        }
        saturated += it.1 * it.0 * it.2;
        free_slope -= it.1 * it.2;
    }
    let mut d = vec![0f32; t.len()];
    for &(breakpoint, _, rate, i) in &items {
        let wi = w[i] as f64;
        let magnitude = if lambda.is_finite() {
            (lambda * rate).min(breakpoint * rate)
        } else {
            breakpoint * rate
        };
        let sign = if dir * wi > 0.0 { 1.0 } else { -1.0 };
        d[i] = (sign * magnitude) as f32;
    }
    d
}

fn norm_of(v: &[f32], norm: Norm) -> f32 {
    match norm {
        Norm::Linf => v.iter().fold(0f32, |m, x| m.max(x.abs())),
        Norm::L2 => v.iter().map(|x| x * x).sum::<f32>().sqrt(),
    }
}

/// One targeted FAB run. Returns, per point, the smallest adversarial found
/// and its distance (infinite when none).
fn fab_run<T: AttackTarget + ?Sized>(
    target: &T,
    x: &Tensor<4>,
    labels: &[i64],
    targets: &[i64],
    cfg: &FabConfig,
    rng: &mut AtopRng,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let dims = x.dims();
    let [n, c, h, w] = dims;
    let size = c * h * w;
    let device = x.device();
    let x0 = host_values(x)?;
    let y = int_tensor(labels, &device);
    let t = int_tensor(targets, &device);
    let mut x1 = x0.clone();
    let mut best = x0.clone();
    let mut best_dist = vec![f32::INFINITY; n];
    for _ in 0..cfg.steps {
        // The linearised boundary: f = z_t - z_y, its gradient g; the
        // hyperplane is g . z = g . x1 - f.
        let xt = Tensor::<4>::from_data(TensorData::new(x1.clone(), dims), &device)
            .detach()
            .require_grad();
        let logits = target.logits(xt.clone(), rng)?;
        let [_, k] = logits.dims();
        let pick = |labels: &Tensor<1, Int>| {
            (logits.clone() * one_hot(labels, k).float())
                .sum_dim(1)
                .reshape([n])
        };
        let f = pick(&t) - pick(&y);
        let grads = f.clone().sum().backward();
        let g = input_gradient(&xt, &grads)?;
        let f = super::common::to_f32(f.detach(), "FAB margin")?;
        let g = crate::host::floats(g, "FAB margin gradient")?;
        for i in 0..n {
            let gi = &g[i * size..(i + 1) * size];
            let xi = x1[i * size..(i + 1) * size].to_vec();
            let oi = &x0[i * size..(i + 1) * size];
            let b = gi.iter().zip(&xi).map(|(a, v)| a * v).sum::<f32>() - f[i];
            let d1 = project_onto_hyperplane_in_box(&xi, gi, b, cfg.norm);
            let d2 = project_onto_hyperplane_in_box(oi, gi, b, cfg.norm);
            let (a1, a2) = (
                norm_of(&d1, cfg.norm).max(1e-8),
                norm_of(&d2, cfg.norm).max(1e-8),
            );
            let alpha = (a1 / (a1 + a2)).clamp(0.0, cfg.alpha_max as f32);
            let eta = cfg.eta as f32;
            for j in 0..size {
                let from_current = xi[j] + eta * d1[j];
                let from_original = oi[j] + eta * d2[j];
                x1[i * size + j] =
                    (from_current * (1.0 - alpha) + from_original * alpha).clamp(0.0, 1.0);
            }
        }
        let wrong = wrong_once(
            target,
            &Tensor::<4>::from_data(TensorData::new(x1.clone(), dims), &device),
            labels,
            rng,
        )?;
        for i in 0..n {
            if !wrong[i] {
                continue;
            }
            let range = i * size..(i + 1) * size;
            let delta: Vec<f32> = x1[range.clone()]
                .iter()
                .zip(&x0[range.clone()])
                .map(|(a, b)| a - b)
                .collect();
            let dist = norm_of(&delta, cfg.norm);
            if dist < best_dist[i] {
                best_dist[i] = dist;
                best[range.clone()].copy_from_slice(&x1[range.clone()]);
            }
            // Back off towards the original to look for a closer crossing.
            for (j, dj) in range.zip(delta) {
                x1[j] = x0[j] + dj * cfg.beta as f32;
            }
        }
    }
    Ok((best, best_dist))
}

/// Targeted FAB over the `target_classes` classes ranked 2nd, 3rd, ... by
/// the clean logits, each on the points still robust. Returns images in the
/// eps-ball and [0,1]: a point's smallest adversarial if within eps, else
/// the clean image.
pub fn fab_targeted<T: AttackTarget + ?Sized>(
    target: &T,
    x: Tensor<4>,
    labels: &[i64],
    cfg: &FabConfig,
    target_classes: usize,
    rng: &mut AtopRng,
) -> Result<Tensor<4>> {
    cfg.validate()?;
    let dims = x.dims();
    check_labels(labels, dims)?;
    let [n, c, h, w] = dims;
    let size = c * h * w;
    let device = x.device();
    let x = x.detach();
    let clean = target.logits(x.clone(), rng)?.detach();
    let [_, k] = clean.dims();
    if k < 2 {
        return Err(AtopError::config("attack", "FAB needs at least 2 classes"));
    }
    let (_, order) = clean.sort_descending_with_indices(1);
    let ranked = to_i64(order.reshape([n * k]), "target ranking")?;
    let mut out = host_values(&x)?;
    let mut fooled = wrong_once(target, &x, labels, rng)?;
    let tolerance = 1e-6f32;
    for rank in 1..=target_classes.min(k - 1) {
        let todo: Vec<usize> = (0..n).filter(|&i| !fooled[i]).collect();
        if todo.is_empty() {
            break;
        }
        let xs = select_rows(&x, &todo);
        let ys: Vec<i64> = todo.iter().map(|&i| labels[i]).collect();
        // The rank is counted among classes other than the true one.
        let ts = targets_by_rank(&ranked, k, labels, &todo, rank);
        let (adv, dist) = fab_run(target, &xs, &ys, &ts, cfg, rng)?;
        for (j, &i) in todo.iter().enumerate() {
            if dist[j] <= cfg.eps as f32 + tolerance {
                // Back into the ball exactly (the distance may exceed eps by rounding).
                let eps = cfg.eps as f32;
                let scale = if cfg.norm == Norm::L2 && dist[j] > eps {
                    eps / dist[j]
                } else {
                    1.0
                };
                for p in 0..size {
                    let o = out[i * size + p];
                    let d = ((adv[j * size + p] - o) * scale).clamp(-eps, eps);
                    out[i * size + p] = (o + d).clamp(0.0, 1.0);
                }
                fooled[i] = true;
            }
        }
    }
    Ok(Tensor::from_data(TensorData::new(out, dims), &device))
}
