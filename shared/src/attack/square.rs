//! Square Attack (Andriushchenko et al., ECCV 2020): score-based black-box
//! random search with square-shaped updates, for L-infinity and L2. It never
//! looks at a gradient, so it is immune to gradient masking; AutoAttack runs
//! it last as that check.
//!
//! The search works on host copies of the images: each query changes one
//! (L-infinity) or two (L2) small windows per image, which is cheaper to do
//! in place than as tensor surgery, and only the model call runs on the
//! device.

use burn::tensor::{Tensor, TensorData};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::common::{
    AttackLoss, Norm, check_eps, check_labels, host_values, int_tensor, per_sample_loss,
};
use super::target::AttackTarget;
use crate::error::{AtopError, Result};
use crate::rng::AtopRng;

/// Square Attack settings; the defaults are AutoAttack's.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SquareConfig {
    pub norm: Norm,
    pub eps: f64,
    /// Query budget per point (AutoAttack: 5000).
    pub queries: usize,
    /// Initial fraction of pixels a window covers.
    pub p_init: f64,
    /// Runs from new random initialisations on the points still robust.
    pub restarts: usize,
    /// Stretch the window-size schedule (defined for 10 000 queries) to the
    /// budget; AutoAttack keeps it as is.
    pub rescale_schedule: bool,
}

impl Default for SquareConfig {
    fn default() -> Self {
        Self {
            norm: Norm::Linf,
            eps: 8.0 / 255.0,
            queries: 5000,
            p_init: 0.8,
            restarts: 1,
            rescale_schedule: false,
        }
    }
}

impl SquareConfig {
    pub fn validate(&self) -> Result<()> {
        check_eps(self.eps)?;
        if self.queries == 0 || self.restarts == 0 {
            return Err(AtopError::config(
                "attack",
                "Square needs queries and restarts of at least 1",
            ));
        }
        if !(self.p_init > 0.0 && self.p_init <= 1.0) {
            return Err(AtopError::config(
                "attack.p_init",
                format!("must be in (0, 1], got {}", self.p_init),
            ));
        }
        Ok(())
    }

    /// The fraction of pixels changed at iteration `it`: halved at the
    /// published iteration counts (10, 50, 200, 500, 1000, 2000, 4000, 6000,
    /// 8000 of 10 000).
    pub fn window_fraction(&self, it: usize) -> f64 {
        let it = if self.rescale_schedule {
            (it as f64 / self.queries as f64 * 10_000.0) as usize
        } else {
            it
        };
        let halvings = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000]
            .iter()
            .filter(|&&t| it > t)
            .count();
        self.p_init / f64::powi(2.0, halvings as i32)
    }
}

/// Images on the host, [n, c, h, w] row-major.
#[derive(Clone)]
struct HostImages {
    data: Vec<f32>,
    c: usize,
    h: usize,
    w: usize,
}

impl HostImages {
    fn size(&self) -> usize {
        self.c * self.h * self.w
    }
    fn image(&self, i: usize) -> &[f32] {
        &self.data[i * self.size()..(i + 1) * self.size()]
    }
    fn image_mut(&mut self, i: usize) -> &mut [f32] {
        let s = self.size();
        &mut self.data[i * s..(i + 1) * s]
    }
}

fn sign(rng: &mut AtopRng) -> f32 {
    if rng.random::<bool>() { 1.0 } else { -1.0 }
}

/// The L2 window pattern: two halves of nested squares with weights
/// 1/(ring+1)^2 and opposite signs, unit norm, transposed half the time.
fn l2_pattern(s: usize, rng: &mut AtopRng) -> Vec<f32> {
    // Nested rectangles centred in a rows x cols block.
    let rings = |rows: usize, cols: usize| -> Vec<f32> {
        let mut block = vec![0f32; rows * cols];
        let (cr, cc) = (rows / 2, cols / 2);
        for ring in 0..rows.max(cols) / 2 + 1 {
            let weight = 1.0 / ((ring + 1) * (ring + 1)) as f32;
            let (r0, c0) = (cr as i64 - ring as i64, cc as i64 - ring as i64);
            for r in r0.max(0)..(r0 + 2 * ring as i64 + 1).min(rows as i64) {
                for c in c0.max(0)..(c0 + 2 * ring as i64 + 1).min(cols as i64) {
                    block[r as usize * cols + c as usize] += weight;
                }
            }
        }
        let norm = block.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        block.iter().map(|v| v / norm).collect()
    };
    let top = rings(s / 2, s);
    let bottom = rings(s - s / 2, s);
    let mut pattern: Vec<f32> = top
        .into_iter()
        .chain(bottom.into_iter().map(|v| -v))
        .collect();
    let norm = pattern.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    pattern.iter_mut().for_each(|v| *v /= norm);
    if rng.random::<bool>() {
        let mut t = vec![0f32; s * s];
        for r in 0..s {
            for c in 0..s {
                t[c * s + r] = pattern[r * s + c];
            }
        }
        pattern = t;
    }
    pattern
}

/// Margins (true logit minus best other; <= 0 means fooled) of a subset.
fn margins<T: AttackTarget + ?Sized>(
    target: &T,
    images: &HostImages,
    subset: &[usize],
    labels: &[i64],
    device: &burn::tensor::Device,
    rng: &mut AtopRng,
) -> Result<Vec<f32>> {
    let size = images.size();
    let mut batch = Vec::with_capacity(subset.len() * size);
    for &i in subset {
        batch.extend_from_slice(images.image(i));
    }
    let x = Tensor::<4>::from_data(
        TensorData::new(batch, [subset.len(), images.c, images.h, images.w]),
        device,
    );
    let logits = target.logits(x, rng)?.detach();
    let y: Vec<i64> = subset.iter().map(|&i| labels[i]).collect();
    let loss = per_sample_loss(AttackLoss::Margin, logits, &int_tensor(&y, device), None)?;
    // Margin loss is (max other - true); the search minimises true - max other.
    Ok(super::common::to_f32(loss, "Square margin")?
        .into_iter()
        .map(|m| -m)
        .collect())
}

/// The fixed inputs of a Square search: target, clean images, labels,
/// settings.
struct Search<'a, T: AttackTarget + ?Sized> {
    target: &'a T,
    x: &'a HostImages,
    labels: &'a [i64],
    cfg: &'a SquareConfig,
    device: &'a burn::tensor::Device,
}

/// Where a search stands: per point the lowest-margin images and margins.
struct Found<'a> {
    best: &'a mut HostImages,
    margin: &'a mut [f32],
}

impl<T: AttackTarget + ?Sized> Search<'_, T> {
    fn margins(
        &self,
        images: &HostImages,
        points: &[usize],
        rng: &mut AtopRng,
    ) -> Result<Vec<f32>> {
        margins(self.target, images, points, self.labels, self.device, rng)
    }

    /// One Square run on the points in `todo`, from a fresh initialisation;
    /// a point's best image and margin change only where this run does better.
    fn run(&self, overall: Found, todo: &[usize], rng: &mut AtopRng) -> Result<()> {
        let start = self.initialise(todo, rng);
        // The search continues from the initialisation whatever its margin.
        let init = self.margins(&start, todo, rng)?;
        let mut margin = overall.margin.to_vec();
        for (j, &i) in todo.iter().enumerate() {
            margin[i] = init[j];
        }
        let mut best = start;
        let mut candidate = best.clone();
        for it in 0..self.cfg.queries.saturating_sub(1) {
            let active: Vec<usize> = todo.iter().copied().filter(|&i| margin[i] > 0.0).collect();
            if active.is_empty() {
                break;
            }
            self.propose(&best, &mut candidate, &active, it, rng);
            let new = self.margins(&candidate, &active, rng)?;
            for (j, &i) in active.iter().enumerate() {
                if new[j] < margin[i] {
                    margin[i] = new[j];
                    best.image_mut(i).copy_from_slice(candidate.image(i));
                }
            }
        }
        for &i in todo {
            if margin[i] < overall.margin[i] {
                overall.margin[i] = margin[i];
                overall.best.image_mut(i).copy_from_slice(best.image(i));
            }
        }
        Ok(())
    }

    /// Vertical stripes of +-eps (L-infinity), or a grid of patterns with
    /// random signs scaled to the L2 radius, on each point of `todo`.
    fn initialise(&self, todo: &[usize], rng: &mut AtopRng) -> HostImages {
        let (x, eps) = (self.x, self.cfg.eps as f32);
        let mut start = x.clone();
        for &i in todo {
            let img = start.image_mut(i);
            match self.cfg.norm {
                Norm::Linf => linf_stripes(x.image(i), img, (x.c, x.h, x.w), eps, rng),
                Norm::L2 => l2_grid(x.image(i), img, (x.c, x.h, x.w), eps, rng),
            }
        }
        start
    }

    /// Side of the square window at iteration `it`.
    fn window_side(&self, it: usize) -> usize {
        let (c, h, w) = (self.x.c, self.x.h, self.x.w);
        let p = self.cfg.window_fraction(it);
        let side = ((p * (c * h * w) as f64 / c as f64).sqrt().round() as usize).max(1);
        match self.cfg.norm {
            Norm::Linf => side,
            // Odd and at least 3 for the L2 pattern.
            Norm::L2 => {
                let s = side.max(3);
                if s.is_multiple_of(2) { s + 1 } else { s }
            }
        }
        .min(h.min(w))
    }

    /// The candidates of iteration `it`: each active point's best image with
    /// one random window changed.
    fn propose(
        &self,
        best: &HostImages,
        candidate: &mut HostImages,
        active: &[usize],
        it: usize,
        rng: &mut AtopRng,
    ) {
        let (c, h, w) = (self.x.c, self.x.h, self.x.w);
        let eps = self.cfg.eps as f32;
        let side = self.window_side(it);
        let mut corner = || {
            (
                rng.random_range(0..(h - side).max(1)),
                rng.random_range(0..(w - side).max(1)),
            )
        };
        let (vh, vw) = corner();
        let (vh2, vw2) = if self.cfg.norm == Norm::L2 {
            corner()
        } else {
            (0, 0)
        };
        for &i in active {
            let orig = self.x.image(i);
            let cur = best.image(i).to_vec();
            let img = candidate.image_mut(i);
            img.copy_from_slice(&cur);
            match self.cfg.norm {
                Norm::Linf => {
                    for ch in 0..c {
                        let s = sign(rng) * eps;
                        for r in vh..vh + side {
                            for q in vw..vw + side {
                                let k = (ch * h + r) * w + q;
                                img[k] = (orig[k] + s).clamp(0.0, 1.0);
                            }
                        }
                    }
                }
                Norm::L2 => {
                    let windows = [(vh, vw), (vh2, vw2)];
                    l2_update(orig, &cur, img, (c, h, w), side, windows, eps, rng);
                }
            }
        }
    }
}

/// L-infinity initialisation: each column of each channel moves by +-eps.
fn linf_stripes(
    orig: &[f32],
    img: &mut [f32],
    (c, h, w): (usize, usize, usize),
    eps: f32,
    rng: &mut AtopRng,
) {
    for ch in 0..c {
        for col in 0..w {
            let s = sign(rng) * eps;
            for row in 0..h {
                let k = (ch * h + row) * w + col;
                img[k] = (orig[k] + s).clamp(0.0, 1.0);
            }
        }
    }
}

/// L2 initialisation: a grid of signed patterns, rescaled to the radius.
fn l2_grid(
    orig: &[f32],
    img: &mut [f32],
    (c, h, w): (usize, usize, usize),
    eps: f32,
    rng: &mut AtopRng,
) {
    let s = (h / 5).max(1);
    let offset = h.saturating_sub(s * 5) / 2;
    let mut delta = vec![0f32; c * h * w];
    for bh in 0..h / s {
        for bw in 0..w / s {
            let pattern = l2_pattern(s, rng);
            for ch in 0..c {
                let sg = sign(rng);
                for r in 0..s {
                    for q in 0..s {
                        let (row, col) = (offset + bh * s + r, offset + bw * s + q);
                        if row < h && col < w {
                            delta[(ch * h + row) * w + col] += sg * pattern[r * s + q];
                        }
                    }
                }
            }
        }
    }
    let norm = delta.iter().map(|v| v * v).sum::<f32>().sqrt() + 1e-12;
    for k in 0..img.len() {
        img[k] = (orig[k] + delta[k] / norm * eps).clamp(0.0, 1.0);
    }
}

/// The L2 step: the budget of window 2 moves into window 1, which gets a
/// new signed pattern plus its old content, rescaled to the freed budget.
#[allow(clippy::too_many_arguments)]
fn l2_update(
    orig: &[f32],
    cur: &[f32],
    out: &mut [f32],
    (c, h, w): (usize, usize, usize),
    s: usize,
    [(vh, vw), (vh2, vw2)]: [(usize, usize); 2],
    eps: f32,
    rng: &mut AtopRng,
) {
    let mut delta: Vec<f32> = cur.iter().zip(orig).map(|(a, b)| a - b).collect();
    let image_norm2: f32 = delta.iter().map(|v| v * v).sum();
    let in_w1 = |r: usize, q: usize| r >= vh && r < vh + s && q >= vw && q < vw + s;
    let in_w2 = |r: usize, q: usize| r >= vh2 && r < vh2 + s && q >= vw2 && q < vw2 + s;
    let pattern = l2_pattern(s, rng);
    for ch in 0..c {
        let at = |r: usize, q: usize| (ch * h + r) * w + q;
        let mut w1_norm2 = 0f32;
        let mut union_norm2 = 0f32;
        for r in 0..h {
            for q in 0..w {
                let v = delta[at(r, q)];
                if in_w1(r, q) {
                    w1_norm2 += v * v;
                }
                if in_w1(r, q) || in_w2(r, q) {
                    union_norm2 += v * v;
                }
            }
        }
        let sg = sign(rng);
        let w1_norm = w1_norm2.sqrt() + 1e-12;
        let mut block = vec![0f32; s * s];
        for r in 0..s {
            for q in 0..s {
                block[r * s + q] = sg * pattern[r * s + q] + delta[at(vh + r, vw + q)] / w1_norm;
            }
        }
        let block_norm = block.iter().map(|v| v * v).sum::<f32>().sqrt() + 1e-12;
        let budget = ((eps * eps - image_norm2).max(0.0) / c as f32 + union_norm2).sqrt();
        for r in vh2..vh2 + s {
            for q in vw2..vw2 + s {
                delta[at(r, q)] = 0.0;
            }
        }
        for r in 0..s {
            for q in 0..s {
                delta[at(vh + r, vw + q)] = block[r * s + q] / block_norm * budget;
            }
        }
    }
    let norm = delta.iter().map(|v| v * v).sum::<f32>().sqrt() + 1e-12;
    for k in 0..out.len() {
        out[k] = (orig[k] + delta[k] / norm * eps).clamp(0.0, 1.0);
    }
}

/// Untargeted Square Attack on the margin loss. Returns images in the
/// eps-ball and [0,1]; per point the lowest-margin query found.
pub fn square<T: AttackTarget + ?Sized>(
    target: &T,
    x: Tensor<4>,
    labels: &[i64],
    cfg: &SquareConfig,
    rng: &mut AtopRng,
) -> Result<Tensor<4>> {
    cfg.validate()?;
    let dims = x.dims();
    check_labels(labels, dims)?;
    let device = x.device();
    let [n, c, h, w] = dims;
    let host = HostImages {
        data: host_values(&x)?,
        c,
        h,
        w,
    };
    let mut best = host.clone();
    let all: Vec<usize> = (0..n).collect();
    let mut margin = margins(target, &host, &all, labels, &device, rng)?;
    let search = Search {
        target,
        x: &host,
        labels,
        cfg,
        device: &device,
    };
    if cfg.eps > 0.0 {
        for _ in 0..cfg.restarts {
            let todo: Vec<usize> = all.iter().copied().filter(|&i| margin[i] > 0.0).collect();
            if todo.is_empty() {
                break;
            }
            let found = Found {
                best: &mut best,
                margin: &mut margin,
            };
            search.run(found, &todo, rng)?;
        }
    }
    Ok(Tensor::from_data(TensorData::new(best.data, dims), &device))
}
