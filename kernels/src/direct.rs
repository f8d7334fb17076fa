//! Stride-1 convolutions (any dilation) computed directly, without column matrices: the
//! forward pass (and so the input gradient, itself a stride-1 convolution)
//! and the weight gradient, with AVX2 + FMA register tiles.
//!
//! Why: at the purifiers' shapes (3x3, 16-64 channels, 28x28 and below) half
//! of the im2col path's time went into writing a column matrix nine times
//! the input's size and reading it back (docs/results/performance-profile.md).
//! Here each sample is copied once into a zero-padded buffer, so that every
//! tap of every output row is an unmasked load at a fixed offset, and the
//! products accumulate in registers. Forward: 4 output channels x 16 pixels
//! (8 x 8 for images 8 wide or less) per tile, one broadcast weight per
//! channel and tap. Weight gradient: 3 output channels x 3 taps of one kernel
//! row per tile, summed over a whole chunk of samples before one horizontal
//! add.
//!
//! Only on x86-64 CPUs with AVX2 and FMA (checked at run time); elsewhere,
//! wasm included, [`available`] says no and the im2col path runs. Sums run
//! in a fixed order (forward, per output: input channel, kernel row, kernel
//! column; weight gradient: sample, row, pixel), whatever the thread count.

use crate::conv2d::{Activation, ConvGeometry};

/// How the tiles are cut for one geometry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Plan {
    /// AVX2: 8-pixel vectors, `pixels` per tile (8 or 16), 4 output channels.
    Avx2 { pixels: usize },
    /// AVX2 on images 8 wide or less with 8 output channels or more: one
    /// 8-pixel vector x 8 output channels. Eight independent sums hide the
    /// FMA's latency; the four of a 4-channel tile left half the FMA issue
    /// slots idle (88 GFLOP/s on 7x7 where 28x28 ran at 150).
    Narrow,
    /// AVX-512: 16-pixel vectors, `pixels` per tile (16 or 32), 8 output channels.
    Avx512 { pixels: usize },
}

impl Plan {
    /// 8-pixel AVX2 tiles for images 8 wide or less (a 16-pixel vector would
    /// be mostly padding), 8 channels deep where there are 8, else AVX-512
    /// where the CPU has it, with tiles of 32 pixels unless 16 waste less.
    fn of(g: &ConvGeometry, allow_avx512: bool) -> Self {
        let ow = g.out[1];
        let round = |tile: usize| ow.div_ceil(tile) * tile;
        if ow <= 8 {
            return if g.channels_out >= 8 {
                Plan::Narrow
            } else {
                Plan::Avx2 { pixels: 8 }
            };
        }
        let pixels = if round(32) > round(16) { 16 } else { 32 };
        if allow_avx512 && cpu_has_avx512() {
            Plan::Avx512 { pixels }
        } else {
            Plan::Avx2 { pixels: 16 }
        }
    }

    fn pixels(self) -> usize {
        match self {
            Plan::Avx2 { pixels } | Plan::Avx512 { pixels } => pixels,
            Plan::Narrow => 8,
        }
    }

    /// Output channels per forward tile.
    fn channels(self) -> usize {
        match self {
            Plan::Avx2 { .. } => 4,
            Plan::Narrow | Plan::Avx512 { .. } => 8,
        }
    }
}

fn cpu_has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the direct kernels run here for `g`: stride 1 (any dilation), a
/// CPU with AVX2 and FMA.
pub fn available(g: &ConvGeometry) -> bool {
    g.stride == [1, 1] && cpu_has_avx2_fma()
}

fn cpu_has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The layout of one sample's zero-padded input: output `(oy, ox)`'s tap
/// `(ky, kx)` reads row `oy + ky * dilation`, column `ox + kx * dilation`; rows run to whole pixel
/// tiles plus the kernel's reach.
pub(crate) struct Padded {
    plan: Plan,
    pub rows: usize,
    pub cols: usize,
    /// Output columns rounded up to whole tiles.
    pub out_cols: usize,
}

impl Padded {
    /// The layout for `g`, AVX-512's tiles only when `allow_avx512`.
    pub fn of(g: &ConvGeometry, allow_avx512: bool) -> Self {
        let plan = Plan::of(g, allow_avx512);
        let out_cols = g.out[1].div_ceil(plan.pixels()) * plan.pixels();
        Self {
            plan,
            rows: g.out[0] + (g.kernel[0] - 1) * g.dilation[0],
            cols: out_cols + (g.kernel[1] - 1) * g.dilation[1],
            out_cols,
        }
    }

    pub fn channel_len(&self) -> usize {
        self.rows * self.cols
    }

    pub fn sample_len(&self, g: &ConvGeometry) -> usize {
        g.channels_in * self.channel_len()
    }

    /// Writes sample `x` (`[channels_in, height, width]`) into the interior
    /// of `buf` (`sample_len`). The padding is never written, so `buf` must
    /// start zeroed; refilled with another sample it stays valid.
    pub fn fill(&self, g: &ConvGeometry, x: &[f32], buf: &mut [f32]) {
        let (top, left) = (g.padding[0], g.padding[1]);
        let width = g.width.min(self.cols.saturating_sub(left));
        for (channel, plane) in buf.chunks_mut(self.channel_len()).enumerate() {
            for y in 0..g.height.min(self.rows.saturating_sub(top)) {
                let from = &x[(channel * g.height + y) * g.width..][..width];
                plane[(y + top) * self.cols + left..][..width].copy_from_slice(from);
            }
        }
    }

    /// Elements of one sample's output gradient as [`Padded::fill_output_grad`] lays it out.
    pub fn output_grad_len(&self, g: &ConvGeometry) -> usize {
        g.channels_out * g.out[0] * self.out_cols
    }

    /// `dy` `[cout, oh, ow]` into `buf` `[cout, oh, out_cols]`, zeros in the tail.
    pub fn fill_output_grad(&self, g: &ConvGeometry, dy: &[f32], buf: &mut [f32]) {
        let ow = g.out[1];
        for (row, out) in dy[..g.output_len()]
            .chunks(ow)
            .zip(buf.chunks_mut(self.out_cols))
        {
            out[..ow].copy_from_slice(row);
            out[ow..].fill(0.0);
        }
    }
}

/// The weights regrouped for the forward tiles of `p`'s plan:
/// `[channel block][ci][ky][kx][c]`, the `c` output channels of a block side
/// by side (zeros past the last one).
pub(crate) fn regroup_weights(g: &ConvGeometry, p: &Padded, weight: &[f32]) -> Vec<f32> {
    let (taps, c) = (g.patch_len(), p.plan.channels());
    let blocks = g.channels_out.div_ceil(c);
    let mut out = vec![0.0; blocks * taps * c];
    for co in 0..g.channels_out {
        let (block, lane) = (co / c, co % c);
        for tap in 0..taps {
            out[(block * taps + tap) * c + lane] = weight[co * taps + tap];
        }
    }
    out
}

/// The forward convolution of one sample, `y` `[channels_out, oh, ow]`
/// (overwritten), from its padded input `xp` and the regrouped weights.
pub(crate) fn forward_sample(
    g: &ConvGeometry,
    p: &Padded,
    xp: &[f32],
    blocks: &[f32],
    bias: Option<&[f32]>,
    activation: Activation,
    y: &mut [f32],
) {
    assert!(
        available(g),
        "direct convolution without AVX2/FMA or stride 1"
    );
    assert!(xp.len() >= p.sample_len(g));
    let c = p.plan.channels();
    assert!(blocks.len() >= g.channels_out.div_ceil(c) * g.patch_len() * c);
    assert!(y.len() >= g.output_len());
    assert!(bias.is_none_or(|b| b.len() >= g.channels_out));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX2 and FMA were detected (`available`); with the asserts
    // above every load stays inside `xp` (a tile's last load ends at
    // out_cols + kw - 1 = cols) and `blocks`, every store inside `y`.
    unsafe {
        let relu = activation == Activation::Relu;
        match p.plan {
            Plan::Avx2 { pixels: 8 } => x86::forward_tiles::<4, 1>(g, p, xp, blocks, bias, relu, y),
            Plan::Narrow => x86::forward_tiles::<8, 1>(g, p, xp, blocks, bias, relu, y),
            Plan::Avx2 { .. } => x86::forward_tiles::<4, 2>(g, p, xp, blocks, bias, relu, y),
            Plan::Avx512 { pixels: 16 } => {
                x86::forward_tiles_512::<8, 1>(g, p, xp, blocks, bias, relu, y)
            }
            Plan::Avx512 { .. } => x86::forward_tiles_512::<8, 2>(g, p, xp, blocks, bias, relu, y),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = activation;
        unreachable!("`available` is false off x86-64")
    }
}

/// Floats past the last padded input that a weight-gradient tile may read
/// (and ignore): its taps past a narrower kernel row's end.
pub(crate) fn grad_slack(g: &ConvGeometry) -> usize {
    (x86_taps() - 1) * g.dilation[1] + 1
}

fn x86_taps() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        x86::GRAD_TAPS
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        1
    }
}

/// Adds to `dw` `[cout, cin, kh, kw]` the weight gradient of `samples`
/// padded inputs `xps` and padded output gradients `dyps`, side by side.
pub(crate) fn weight_grad_samples(
    g: &ConvGeometry,
    p: &Padded,
    samples: usize,
    xps: &[f32],
    dyps: &[f32],
    dw: &mut [f32],
) {
    assert!(
        available(g),
        "direct convolution without AVX2/FMA or stride 1"
    );
    // A tile always reads GRAD_TAPS taps: past a narrower kernel row's end
    // into the next row, or, at the very end, into the slack.
    assert!(xps.len() >= samples * p.sample_len(g) + grad_slack(g));
    assert!(dyps.len() >= samples * p.output_grad_len(g));
    assert!(dw.len() >= g.channels_out * g.patch_len());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `forward_sample`: the last load of a row ends at
    // (out_cols - 1) + (kx0 + GRAD_TAPS - 1) * dilation < cols + grad_slack,
    // of a gradient row at out_cols.
    unsafe {
        match p.plan {
            Plan::Avx2 { .. } | Plan::Narrow => x86::weight_grad(g, p, samples, xps, dyps, dw),
            Plan::Avx512 { .. } => x86::weight_grad_512(g, p, samples, xps, dyps, dw),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("`available` is false off x86-64")
}

// Register tiles read best as indexed loops over their fixed extents.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)]
mod x86 {
    use super::Padded;
    use crate::conv2d::ConvGeometry;
    use std::arch::x86_64::*;

    /// Taps (of one kernel row) per weight-gradient tile.
    pub(super) const GRAD_TAPS: usize = 3;

    /// A forward kernel: tiles of `P` vectors of `$width` pixels x `C` output
    /// channels (the plan's, as its weights were regrouped), one broadcast
    /// weight per channel and tap.
    macro_rules! forward_tiles {
        ($name:ident, $feature:literal, $vector:ty, $width:literal,
         $set1:ident, $load:ident, $fmadd:ident, $max:ident, $store:ident,
         $store_part:ident) => {
            /// # Safety
            /// The CPU has the target features; slices as asserted by
            /// `forward_sample`.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn $name<const C: usize, const P: usize>(
                g: &ConvGeometry,
                p: &Padded,
                xp: &[f32],
                wb: &[f32],
                bias: Option<&[f32]>,
                relu: bool,
                y: &mut [f32],
            ) {
                let (oh, ow, cout) = (g.out[0], g.out[1], g.channels_out);
                let ([kh, kw], [dy, dx]) = (g.kernel, g.dilation);
                let (plane, taps, n) = (p.channel_len(), g.patch_len(), oh * ow);
                for block in 0..cout.div_ceil(C) {
                    let w_block = wb[block * taps * C..].as_ptr();
                    let lanes = C.min(cout - block * C);
                    let init: [$vector; C] = std::array::from_fn(|lane| {
                        let b = bias.filter(|_| lane < lanes);
                        $set1(b.map_or(0.0, |b| b[block * C + lane]))
                    });
                    for oy in 0..oh {
                        for ox0 in (0..ow).step_by($width * P) {
                            let mut acc: [[$vector; P]; C] = init.map(|v| [v; P]);
                            for ci in 0..g.channels_in {
                                for ky in 0..kh {
                                    // SAFETY: inside `xp` and `wb` (see `forward_sample`).
                                    let (row, w_row) = unsafe {
                                        (
                                            xp.as_ptr()
                                                .add(ci * plane + (oy + ky * dy) * p.cols + ox0),
                                            w_block.add((ci * kh + ky) * kw * C),
                                        )
                                    };
                                    for kx in 0..kw {
                                        // SAFETY: as above.
                                        unsafe {
                                            let x: [$vector; P] = std::array::from_fn(|v| {
                                                $load(row.add(kx * dx + $width * v))
                                            });
                                            let w = w_row.add(kx * C);
                                            for (lane, a) in acc.iter_mut().enumerate() {
                                                let wv = $set1(*w.add(lane));
                                                for v in 0..P {
                                                    a[v] = $fmadd(wv, x[v], a[v]);
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                            // Stored in place, the row's tail masked: a spill
                            // buffer and a copy per vector cost a `memmove` call
                            // each, 7-9% of a PGD step on these small rows.
                            let width = ($width * P).min(ow - ox0);
                            for (lane, a) in acc.iter().enumerate().take(lanes) {
                                let co = block * C + lane;
                                let out = y[co * n + oy * ow + ox0..][..width].as_mut_ptr();
                                for (v, a) in a.iter().enumerate() {
                                    let start = $width * v;
                                    if start >= width {
                                        break;
                                    }
                                    let len = (width - start).min($width);
                                    // max(0, a) returns `a` when either is NaN,
                                    // so NaN passes as in burn's ReLU.
                                    let a = if relu { $max($set1(0.0), *a) } else { *a };
                                    // SAFETY: `out` has `width` elements; the full
                                    // store writes $width of them from `start`, the
                                    // masked one `len`.
                                    unsafe {
                                        if len == $width {
                                            $store(out.add(start), a);
                                        } else {
                                            $store_part(out.add(start), a, len);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        };
    }

    /// A weight-gradient kernel: tiles of `$channels` output channels x
    /// GRAD_TAPS taps, summed over every sample before one horizontal add.
    macro_rules! weight_grad {
        ($name:ident, $feature:literal, $vector:ty, $width:literal, $channels:literal,
         $zero:ident, $load:ident, $fmadd:ident, $store:ident) => {
            /// # Safety
            /// The CPU has the target features; `out_cols` a multiple of
            /// the vector width; slices as asserted by `weight_grad_samples`.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn $name(
                g: &ConvGeometry,
                p: &Padded,
                samples: usize,
                xps: &[f32],
                dyps: &[f32],
                dw: &mut [f32],
            ) {
                const C: usize = $channels;
                let (oh, cout, cin) = (g.out[0], g.channels_out, g.channels_in);
                let ([kh, kw], [dy, dx]) = (g.kernel, g.dilation);
                let (plane, taps) = (p.channel_len(), kh * kw);
                let (x_len, dy_len) = (p.sample_len(g), p.output_grad_len(g));
                let dy_plane = oh * p.out_cols;
                let mut lanes = [0.0f32; $width];
                for co0 in (0..cout).step_by(C) {
                    let channels = C.min(cout - co0);
                    for ci in 0..cin {
                        for ky in 0..kh {
                            for kx0 in (0..kw).step_by(GRAD_TAPS) {
                                let width = GRAD_TAPS.min(kw - kx0);
                                let mut acc = [[$zero(); GRAD_TAPS]; C];
                                for s in 0..samples {
                                    for oy in 0..oh {
                                        // SAFETY: inside `xps` and `dyps` (see
                                        // `weight_grad_samples`); a missing channel of
                                        // the last block re-reads channel co0.
                                        unsafe {
                                            let x_row = xps.as_ptr().add(
                                                s * x_len
                                                    + ci * plane
                                                    + (oy + ky * dy) * p.cols
                                                    + kx0 * dx,
                                            );
                                            let d_rows: [*const f32; C] =
                                                std::array::from_fn(|c| {
                                                    let co = co0 + if c < channels { c } else { 0 };
                                                    dyps.as_ptr().add(
                                                        s * dy_len
                                                            + co * dy_plane
                                                            + oy * p.out_cols,
                                                    )
                                                });
                                            for ox in (0..p.out_cols).step_by($width) {
                                                let d = d_rows.map(|r| $load(r.add(ox)));
                                                for t in 0..GRAD_TAPS {
                                                    let x = $load(x_row.add(ox + t * dx));
                                                    for c in 0..C {
                                                        acc[c][t] = $fmadd(d[c], x, acc[c][t]);
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                                for (c, row) in acc.iter().enumerate().take(channels) {
                                    let at = ((co0 + c) * cin + ci) * taps + ky * kw + kx0;
                                    for (t, a) in row.iter().enumerate().take(width) {
                                        // SAFETY: `lanes` holds one vector.
                                        unsafe { $store(lanes.as_mut_ptr(), *a) };
                                        dw[at + t] += lanes.iter().sum::<f32>();
                                    }
                                }
                            }
                        }
                    }
                }
            }
        };
    }

    /// The first `len` (< 8) lanes of `v` to `out`; the others' memory is not
    /// touched (masked lanes neither write nor fault).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_part_256(out: *mut f32, v: __m256, len: usize) {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(len as i32), lanes);
        // SAFETY: the caller's `out` has `len` elements; masked lanes are not accessed.
        unsafe { _mm256_maskstore_ps(out, mask, v) };
    }

    /// The first `len` (< 16) lanes of `v` to `out`, as [`store_part_256`].
    #[target_feature(enable = "avx512f")]
    unsafe fn store_part_512(out: *mut f32, v: __m512, len: usize) {
        let mask: __mmask16 = ((1u32 << len) - 1) as __mmask16;
        // SAFETY: as above.
        unsafe { _mm512_mask_storeu_ps(out, mask, v) };
    }

    forward_tiles!(
        forward_tiles,
        "avx2,fma",
        __m256,
        8,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_fmadd_ps,
        _mm256_max_ps,
        _mm256_storeu_ps,
        store_part_256
    );
    forward_tiles!(
        forward_tiles_512,
        "avx512f",
        __m512,
        16,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_fmadd_ps,
        _mm512_max_ps,
        _mm512_storeu_ps,
        store_part_512
    );
    weight_grad!(
        weight_grad,
        "avx2,fma",
        __m256,
        8,
        3,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_fmadd_ps,
        _mm256_storeu_ps
    );
    weight_grad!(
        weight_grad_512,
        "avx512f",
        __m512,
        16,
        6,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_fmadd_ps,
        _mm512_storeu_ps
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every output element written, nothing past the output: the tiles
    /// store the rows' tails through masks.
    #[test]
    fn the_forward_tiles_write_every_output_and_nothing_past_it() {
        if !cpu_has_avx2_fma() {
            return; // the im2col path runs on this CPU
        }
        for (width, channels_out) in [(5, 3), (7, 8), (8, 12), (14, 9), (28, 16), (33, 5)] {
            for allow_avx512 in [false, true] {
                let g = ConvGeometry::new(
                    [2, 3, 6, width],
                    [channels_out, 3, 3, 3],
                    [1, 1],
                    [(1, 1), (1, 1)],
                    [1, 1],
                )
                .unwrap();
                let p = Padded::of(&g, allow_avx512);
                let weight: Vec<f32> = (0..channels_out * g.patch_len())
                    .map(|i| (i % 7) as f32 * 0.1)
                    .collect();
                let blocks = regroup_weights(&g, &p, &weight);
                let x: Vec<f32> = (0..g.input_len()).map(|i| (i % 5) as f32).collect();
                let mut xp = vec![0.0; p.sample_len(&g)];
                p.fill(&g, &x, &mut xp);
                let guard = 64;
                let mut y = vec![f32::NAN; g.output_len() + guard];
                forward_sample(&g, &p, &xp, &blocks, None, Activation::Identity, &mut y);
                let what = format!("width {width}, {channels_out} channels, {:?}", p.plan);
                assert!(
                    y[..g.output_len()].iter().all(|v| v.is_finite()),
                    "{what}: unwritten"
                );
                assert!(
                    y[g.output_len()..].iter().all(|v| v.is_nan()),
                    "{what}: written past"
                );
            }
        }
    }
}
