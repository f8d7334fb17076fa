//! Random transforms RT1, RT2 and RT3 (docs/method.md section 3).
//!
//! A transform destroys adversarial structure before the purifier rebuilds
//! the image: RT1 blanks grid cells, RT2 adds Gaussian noise and then blanks
//! cells, RT3 runs RT2 with N disjoint masks that together cover the image.
//! Randomness is drawn first into a [`TransformDraw`] from the caller's
//! generator, then applied; a draw can be kept and re-applied, which is how
//! the fixed-randomness attack mode freezes it.

use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{AtopError, Result};
use crate::rng::{fill_standard_normal, permutation};

/// Which random transform.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TransformKind {
    /// Mask only.
    Rt1,
    /// Gaussian noise, clip to [0,1], then mask (the paper's best).
    #[default]
    Rt2,
    /// RT2 with `passes` disjoint masks that partition the grid.
    Rt3,
}

/// Whether each sample gets its own mask or the batch shares one.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MaskScope {
    /// One mask per sample (ours, the default).
    #[default]
    PerSample,
    /// One mask for the whole batch (the public code's behaviour).
    BatchShared,
}

/// Configuration of the random transform, with the paper's defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TransformConfig {
    pub kind: TransformKind,
    /// Fraction of grid cells blanked (RT1, RT2). RT3 blanks 1/passes of the
    /// grid per pass by construction.
    pub missing_rate: f64,
    /// Standard deviation of the Gaussian noise, in [0,1] image units (RT2, RT3).
    pub noise_sigma: f64,
    /// Number of disjoint masks (RT3).
    pub passes: usize,
    /// The image is cut into `grid` x `grid` cells; it must divide height and width.
    pub grid: usize,
    pub mask_scope: MaskScope,
}

impl Default for TransformConfig {
    fn default() -> Self {
        Self {
            kind: TransformKind::Rt2,
            missing_rate: 0.25,
            noise_sigma: 0.25,
            passes: 4,
            grid: 8,
            mask_scope: MaskScope::PerSample,
        }
    }
}

impl TransformConfig {
    /// RT1 with the paper's defaults.
    pub fn rt1() -> Self {
        Self {
            kind: TransformKind::Rt1,
            ..Self::default()
        }
    }

    /// RT2 with the paper's defaults.
    pub fn rt2() -> Self {
        Self::default()
    }

    /// RT3 with the paper's defaults.
    pub fn rt3() -> Self {
        Self {
            kind: TransformKind::Rt3,
            ..Self::default()
        }
    }

    /// Number of purifier passes this transform needs.
    pub fn num_passes(&self) -> usize {
        match self.kind {
            TransformKind::Rt3 => self.passes,
            _ => 1,
        }
    }

    /// Number of grid cells blanked per mask: exactly round(r * cells) for
    /// RT1/RT2 (not a per-cell coin flip).
    pub fn holes_per_mask(&self) -> usize {
        let cells = self.grid * self.grid;
        match self.kind {
            TransformKind::Rt3 => cells / self.passes,
            _ => (self.missing_rate * cells as f64).round() as usize,
        }
    }

    /// Checks the values on their own and against an image size.
    pub fn validate(&self, height: usize, width: usize) -> Result<()> {
        if !(self.missing_rate.is_finite() && (0.0..=1.0).contains(&self.missing_rate)) {
            return Err(AtopError::config(
                "transform.missing_rate",
                format!("must be within [0, 1], got {}", self.missing_rate),
            ));
        }
        if !(self.noise_sigma.is_finite() && self.noise_sigma >= 0.0) {
            return Err(AtopError::config(
                "transform.noise_sigma",
                format!("must be finite and >= 0, got {}", self.noise_sigma),
            ));
        }
        if self.grid == 0 || !height.is_multiple_of(self.grid) || !width.is_multiple_of(self.grid) {
            return Err(AtopError::config(
                "transform.grid",
                format!(
                    "a {g}x{g} grid does not divide a {height}x{width} image into equal cells",
                    g = self.grid
                ),
            ));
        }
        if self.kind == TransformKind::Rt3
            && (self.passes == 0 || self.passes > self.grid * self.grid)
        {
            return Err(AtopError::config(
                "transform.passes",
                format!(
                    "RT3 needs between 1 and {} passes for a {g}x{g} grid, got {}",
                    self.grid * self.grid,
                    self.passes,
                    g = self.grid
                ),
            ));
        }
        Ok(())
    }

    /// Draws the masks and noise for a batch of shape `[n, c, h, w]`.
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R, dims: [usize; 4]) -> Result<TransformDraw> {
        let [n, c, h, w] = dims;
        self.validate(h, w)?;
        let cells = self.grid * self.grid;
        let passes = self.num_passes();

        // Cell masks: cell_masks[pass][sample] = list of hole flags per cell.
        let mut cell_masks = vec![Vec::with_capacity(n); passes];
        let mask_draws = match self.mask_scope {
            MaskScope::PerSample => n,
            MaskScope::BatchShared => 1,
        };
        for _ in 0..mask_draws {
            let order = permutation(rng, cells);
            for (pass, masks) in cell_masks.iter_mut().enumerate() {
                let mut holes = vec![false; cells];
                for &cell in &order[self.hole_range(pass, cells)] {
                    holes[cell] = true;
                }
                masks.push(holes);
            }
        }
        if self.mask_scope == MaskScope::BatchShared {
            for masks in cell_masks.iter_mut() {
                let shared = masks[0].clone();
                masks.resize(n, shared);
            }
        }

        let masks = cell_masks
            .iter()
            .map(|per_sample| expand_cells(per_sample, self.grid, h, w))
            .collect();
        let noise = match self.kind {
            TransformKind::Rt1 => Vec::new(),
            TransformKind::Rt2 | TransformKind::Rt3 => (0..passes)
                .map(|_| {
                    let mut v = vec![0f32; n * c * h * w];
                    fill_standard_normal(rng, &mut v);
                    let sigma = self.noise_sigma as f32;
                    v.iter_mut().for_each(|x| *x *= sigma);
                    v
                })
                .collect(),
        };
        Ok(TransformDraw {
            dims,
            grid: self.grid,
            cell_masks,
            masks,
            noise,
        })
    }

    /// Which positions of the shuffled cell order are holes in `pass`.
    fn hole_range(&self, pass: usize, cells: usize) -> std::ops::Range<usize> {
        match self.kind {
            // Split the shuffled cells into `passes` nearly equal consecutive
            // groups: disjoint, and together they cover every cell.
            TransformKind::Rt3 => {
                let start = pass * cells / self.passes;
                let end = (pass + 1) * cells / self.passes;
                start..end
            }
            _ => 0..self.holes_per_mask(),
        }
    }
}

/// Expands per-sample cell flags to a pixel mask `[n, 1, h, w]` (1 = hole).
fn expand_cells(per_sample: &[Vec<bool>], grid: usize, h: usize, w: usize) -> Vec<f32> {
    let (ch, cw) = (h / grid, w / grid);
    let mut out = vec![0f32; per_sample.len() * h * w];
    for (s, holes) in per_sample.iter().enumerate() {
        let plane = &mut out[s * h * w..(s + 1) * h * w];
        for y in 0..h {
            for x in 0..w {
                if holes[(y / ch) * grid + x / cw] {
                    plane[y * w + x] = 1.0;
                }
            }
        }
    }
    out
}

/// One concrete draw of a random transform for one batch: what was masked and
/// which noise was added, per purifier pass. Keeping it lets a caller replay
/// or freeze the randomness.
#[derive(Clone, Debug, PartialEq)]
pub struct TransformDraw {
    /// Batch shape `[n, c, h, w]` the draw was made for.
    pub dims: [usize; 4],
    pub grid: usize,
    /// `cell_masks[pass][sample][cell]`, true = hole; cells in row-major order.
    pub cell_masks: Vec<Vec<Vec<bool>>>,
    /// Pixel masks per pass, `[n, 1, h, w]` row-major, 1 = hole.
    masks: Vec<Vec<f32>>,
    /// Scaled noise per pass, `[n, c, h, w]` row-major; empty for RT1.
    noise: Vec<Vec<f32>>,
}

/// The transform's output for one purifier pass.
#[derive(Clone, Debug)]
pub struct TransformedImage {
    /// The noised and masked image in [0,1], `[n, c, h, w]`; holes are 0.
    pub image: Tensor<4>,
    /// The mask `[n, 1, h, w]`, 1 = hole.
    pub mask: Tensor<4>,
}

impl TransformDraw {
    /// The draw of samples `start..start + count` alone: what those rows of
    /// the batch see, so a batch cut into chunks sees the draws it would
    /// have seen whole.
    pub fn rows(&self, start: usize, count: usize) -> Result<Self> {
        let [n, c, h, w] = self.dims;
        if start + count > n || count == 0 {
            return Err(AtopError::config(
                "transform draw",
                format!("rows {start}..{} of a draw for {n} samples", start + count),
            ));
        }
        let slice = |v: &Vec<f32>, per: usize| v[start * per..(start + count) * per].to_vec();
        Ok(Self {
            dims: [count, c, h, w],
            grid: self.grid,
            cell_masks: self
                .cell_masks
                .iter()
                .map(|pass| pass[start..start + count].to_vec())
                .collect(),
            masks: self.masks.iter().map(|m| slice(m, h * w)).collect(),
            noise: self.noise.iter().map(|v| slice(v, c * h * w)).collect(),
        })
    }

    pub fn num_passes(&self) -> usize {
        self.masks.len()
    }

    /// The pixel mask of one pass as a tensor `[n, 1, h, w]`.
    pub fn mask(&self, pass: usize, device: &Device) -> Tensor<4> {
        let [n, _, h, w] = self.dims;
        Tensor::from_data(
            TensorData::new(self.masks[pass].clone(), [n, 1, h, w]),
            device,
        )
    }

    /// The noise of one pass as a tensor `[n, c, h, w]`, if the transform adds any.
    pub fn noise(&self, pass: usize, device: &Device) -> Option<Tensor<4>> {
        self.noise
            .get(pass)
            .map(|v| Tensor::from_data(TensorData::new(v.clone(), self.dims), device))
    }

    /// Applies the draw to images `x` in [0,1] (differentiable in `x`):
    /// `clip(x + noise, 0, 1) * (1 - mask)` for each pass.
    pub fn apply(&self, x: Tensor<4>) -> Result<Vec<TransformedImage>> {
        let dims = x.dims();
        if dims != self.dims {
            return Err(AtopError::shape(
                "transform input",
                format!("the drawn batch shape {:?}", self.dims),
                &dims,
            ));
        }
        let device = x.device();
        Ok((0..self.num_passes())
            .map(|pass| {
                let mask = self.mask(pass, &device);
                let noised = match self.noise(pass, &device) {
                    Some(noise) => (x.clone() + noise).clamp(0.0, 1.0),
                    None => x.clone(),
                };
                let keep = mask.clone().neg().add_scalar(1.0);
                TransformedImage {
                    image: noised * keep,
                    mask,
                }
            })
            .collect())
    }
}
