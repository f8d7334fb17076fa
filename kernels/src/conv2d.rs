//! A 2-D convolution (groups 1, f32) and both of its gradients on plain
//! slices, lowered to im2col + gemm calls sized to stay in cache.
//!
//! Why our own: flex's convolution transposes the whole input to NHWC on one
//! thread, allocates a column tile and a result vector per 512 output pixels,
//! and takes its data gradient through a transposed convolution and its weight
//! gradient through a convolution over the batch. At the purifiers' shapes
//! (3x3, 16-64 channels, 28x28 and below) that overhead, not the gemm, was
//! most of the time (docs/results/performance-profile.md). Here a group of
//! samples costs one row-wise im2col (contiguous copies for stride 1) into a
//! column matrix with the samples side by side, and one gemm wide enough to
//! run at speed even for 7x7 images; the backward pass runs both gradients in
//! one sweep over the batch.
//!
//! Nothing here depends on the number of threads: groups are sized by the
//! image and the batch, and the weight gradient sums fixed chunks of the
//! batch whose partial sums are added in order. The same inputs give the
//! same bits on any machine with the same gemm kernels.

use std::ops::Range;

use crate::direct;

/// How a convolution is computed. Both give the same values up to rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvMethod {
    /// Direct (no column matrix) where [`direct::available`] holds: stride 1
    /// on a CPU with AVX2 and FMA, with AVX-512 where the CPU has it; im2col
    /// + gemm elsewhere.
    Auto,
    /// As `Auto` without AVX-512: what CPUs with AVX2 alone run (tests and
    /// benchmarks reach that path here).
    Avx2,
    /// Always im2col + gemm (the path wasm and other CPUs take).
    Im2col,
}

impl ConvMethod {
    fn direct(self, g: &ConvGeometry) -> bool {
        self != ConvMethod::Im2col && direct::available(g)
    }

    fn allow_avx512(self) -> bool {
        self == ConvMethod::Auto
    }
}

/// The shape of one convolution: input `[batch, channels_in, height, width]`,
/// weight `[channels_out, channels_in, kernel[0], kernel[1]]`, output
/// `[batch, channels_out, out[0], out[1]]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub channels_in: usize,
    pub height: usize,
    pub width: usize,
    pub channels_out: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Zeros before the first row and column; the padding after them only
    /// shows in `out`.
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub out: [usize; 2],
}

impl ConvGeometry {
    /// The geometry of a convolution with burn's output-size rule, `None`
    /// when the kernel does not fit in the padded input or a stride or
    /// dilation is zero.
    pub fn new(
        input: [usize; 4],
        weight: [usize; 4],
        stride: [usize; 2],
        padding: [(usize, usize); 2],
        dilation: [usize; 2],
    ) -> Option<Self> {
        let [batch, channels_in, height, width] = input;
        let [channels_out, weight_in, kh, kw] = weight;
        if weight_in != channels_in || stride.contains(&0) || dilation.contains(&0) {
            return None;
        }
        let out_len = |size: usize, (begin, end): (usize, usize), k: usize, s: usize, d: usize| {
            let padded = size.checked_add(begin)?.checked_add(end)?;
            let span = d.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
            Some(padded.checked_sub(span)? / s + 1)
        };
        let out = [
            out_len(height, padding[0], kh, stride[0], dilation[0])?,
            out_len(width, padding[1], kw, stride[1], dilation[1])?,
        ];
        Some(Self {
            batch,
            channels_in,
            height,
            width,
            channels_out,
            kernel: [kh, kw],
            stride,
            padding: [padding[0].0, padding[1].0],
            dilation,
            out,
        })
    }

    /// Elements of one sample's input.
    pub fn input_len(&self) -> usize {
        self.channels_in * self.height * self.width
    }

    /// Rows of the column matrix: one per (input channel, kernel tap).
    pub fn patch_len(&self) -> usize {
        self.channels_in * self.kernel[0] * self.kernel[1]
    }

    /// Output pixels of one sample (columns of the column matrix).
    pub fn out_pixels(&self) -> usize {
        self.out[0] * self.out[1]
    }

    /// Elements of one sample's output.
    pub fn output_len(&self) -> usize {
        self.channels_out * self.out_pixels()
    }
}

/// The output indices `o` in `0..out` whose input index `o * stride + offset`
/// falls in `0..size`, as a range.
fn valid_outputs(offset: isize, stride: usize, size: usize, out: usize) -> (usize, usize) {
    let stride = stride as isize;
    let first = if offset >= 0 {
        0
    } else {
        (-offset + stride - 1) / stride
    };
    let last = size as isize - 1 - offset;
    let end = if last < 0 { 0 } else { last / stride + 1 };
    let end = (end as usize).min(out);
    let first = (first as usize).min(end);
    (first, end)
}

/// One output row of one kernel tap, as [`for_each_tap_row`] hands it over.
struct TapRow {
    /// The input channel, and the tap's row of the column matrix.
    channel: usize,
    tap: usize,
    /// The output row.
    oy: usize,
    /// The input row it reads, `None` when that falls in the padding.
    iy: Option<usize>,
    /// The outputs of the row that read inside the image, `ox0..ox1`, at
    /// input column `ox * stride + x_offset`.
    cols: (usize, usize),
    x_offset: isize,
}

/// Calls `f` for every output row in `rows` of every kernel tap, in the
/// column matrix's row order.
fn for_each_tap_row(g: &ConvGeometry, rows: Range<usize>, mut f: impl FnMut(TapRow)) {
    let [kh, kw] = g.kernel;
    for channel in 0..g.channels_in {
        for ky in 0..kh {
            let y_offset = (ky * g.dilation[0]) as isize - g.padding[0] as isize;
            for kx in 0..kw {
                let x_offset = (kx * g.dilation[1]) as isize - g.padding[1] as isize;
                let cols = valid_outputs(x_offset, g.stride[1], g.width, g.out[1]);
                let tap = (channel * kh + ky) * kw + kx;
                for oy in rows.clone() {
                    let iy = oy as isize * g.stride[0] as isize + y_offset;
                    let iy = (0..g.height as isize).contains(&iy).then_some(iy as usize);
                    f(TapRow {
                        channel,
                        tap,
                        oy,
                        iy,
                        cols,
                        x_offset,
                    });
                }
            }
        }
    }
}

/// One sample's block of a column matrix whose rows are `ld` long, for the
/// output rows `rows`: entry (tap, pixel) at `col[tap * ld + pixel]`, pixels
/// counted from the first of `rows`, is the input value that tap reads for
/// that output pixel, 0 in the padding. Samples sit side by side in a
/// group's matrix, each at its own offset into the rows. Every entry of the
/// block is written (once), so the buffer can be reused unzeroed.
pub fn im2col(g: &ConvGeometry, x: &[f32], rows: Range<usize>, col: &mut [f32], ld: usize) {
    let (w, ow, sw) = (g.width, g.out[1], g.stride[1]);
    let first = rows.start;
    for_each_tap_row(g, rows, |r| {
        let out_row = &mut col[r.tap * ld + (r.oy - first) * ow..][..ow];
        let (ox0, ox1) = r.cols;
        let Some(iy) = r.iy.filter(|_| ox0 < ox1) else {
            out_row.fill(0.0);
            return;
        };
        let in_row = &x[(r.channel * g.height + iy) * w..][..w];
        out_row[..ox0].fill(0.0);
        out_row[ox1..].fill(0.0);
        if sw == 1 {
            let ix0 = (ox0 as isize + r.x_offset) as usize;
            out_row[ox0..ox1].copy_from_slice(&in_row[ix0..ix0 + (ox1 - ox0)]);
        } else {
            for (ox, out) in out_row.iter_mut().enumerate().take(ox1).skip(ox0) {
                *out = in_row[(ox as isize * sw as isize + r.x_offset) as usize];
            }
        }
    });
}

/// The adjoint of [`im2col`]: adds each column-matrix entry to the input
/// value it was read from (`dx` is accumulated into, not overwritten).
pub fn col2im(g: &ConvGeometry, col: &[f32], ld: usize, dx: &mut [f32]) {
    let (w, ow, sw) = (g.width, g.out[1], g.stride[1]);
    for_each_tap_row(g, 0..g.out[0], |r| {
        let Some(iy) = r.iy else { return };
        let (ox0, ox1) = r.cols;
        let in_row = &mut dx[(r.channel * g.height + iy) * w..][..w];
        let col_row = &col[r.tap * ld + r.oy * ow..][..ow];
        if sw == 1 {
            let ix0 = (ox0 as isize + r.x_offset) as usize;
            let in_run = &mut in_row[ix0..ix0 + (ox1 - ox0)];
            in_run
                .iter_mut()
                .zip(&col_row[ox0..ox1])
                .for_each(|(d, c)| *d += c);
        } else {
            for ox in ox0..ox1 {
                in_row[(ox as isize * sw as isize + r.x_offset) as usize] += col_row[ox];
            }
        }
    });
}

/// `dst[m, n] (+)= lhs[m, k] * rhs[k, n]`, each operand given by its row and
/// column strides (`dst`'s rows `dst_rs` apart, its columns adjacent).
#[allow(clippy::too_many_arguments)]
fn matmul(
    [m, n, k]: [usize; 3],
    (dst, dst_rs): (&mut [f32], usize),
    accumulate: bool,
    lhs: &[f32],
    [lhs_rs, lhs_cs]: [usize; 2],
    rhs: &[f32],
    [rhs_rs, rhs_cs]: [usize; 2],
    parallelism: gemm::Parallelism,
) {
    let extent = |rows: usize, cols: usize, rs: usize, cs: usize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs + (cols - 1) * cs + 1
        }
    };
    // The checks that make the raw-pointer call below sound.
    assert!(
        dst_rs >= n && dst.len() >= extent(m, n, dst_rs, 1),
        "matmul: destination too short"
    );
    assert!(
        lhs.len() >= extent(m, k, lhs_rs, lhs_cs),
        "matmul: lhs too short"
    );
    assert!(
        rhs.len() >= extent(k, n, rhs_rs, rhs_cs),
        "matmul: rhs too short"
    );
    // gemm's kernels tile the destination's rows by 16-64 and its columns by
    // 4-6: hand it the transposed problem, dst^T[n, m] = rhs^T * lhs^T, so
    // that its long side is the wide one here (pixels, or the patch rows)
    // rather than the 16-64 output channels.
    // SAFETY: every index the call reads or writes lies inside the slices
    // (checked above); `dst` is exclusively borrowed and does not alias the
    // shared `lhs` and `rhs`.
    unsafe {
        gemm::gemm(
            n,
            m,
            k,
            dst.as_mut_ptr(),
            dst_rs as isize,
            1,
            accumulate,
            rhs.as_ptr(),
            rhs_rs as isize,
            rhs_cs as isize,
            lhs.as_ptr(),
            lhs_rs as isize,
            lhs_cs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Floats of column matrix a gemm call aims for: 512 KiB, half of this
/// machine class's per-core L2, so that im2col's output is still cached when
/// gemm reads it.
const COLUMN_BUDGET: usize = 1 << 17;

/// Columns per gemm call: the budget over the patch length, within bounds
/// that keep the call wide enough to run at speed. Set by the geometry only,
/// never by the thread count, so that the gemm calls (and their rounding) are
/// the same on every machine.
fn column_target(g: &ConvGeometry) -> usize {
    (COLUMN_BUDGET / g.patch_len().max(1)).clamp(256, 4096)
}

/// Samples per gemm call: whole small images side by side up to the column
/// target (7x7 is 49 pixels), one sample for larger ones; at most `limit`.
fn group_size(g: &ConvGeometry, limit: usize) -> usize {
    (column_target(g) / g.out_pixels().max(1)).clamp(1, limit.max(1))
}

/// Outer loops run on threads when there are at least as many work items as
/// threads; otherwise gemm splits each call between them.
fn gemm_parallelism(items: usize) -> gemm::Parallelism {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let threads = rayon::current_num_threads();
        if items < threads {
            return gemm::Parallelism::Rayon(threads);
        }
    }
    let _ = items;
    gemm::Parallelism::None
}

/// Maps `f` over `items`, on threads where available, in order.
fn map_items<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Send + Sync) -> Vec<R> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        items.into_par_iter().map(f).collect()
    }
    #[cfg(target_arch = "wasm32")]
    {
        items.into_iter().map(f).collect()
    }
}

/// The forward convolution: `x` is `[batch, channels_in, h, w]`, `weight`
/// `[channels_out, channels_in, kh, kw]`, `bias` `[channels_out]`; returns
/// `[batch, channels_out, oh, ow]`, all contiguous row-major.
///
/// Work goes to threads by groups of samples (small images) or by sample
/// (large ones, whose output rows are then cut into tiles of about the
/// column target).
pub fn conv2d_forward(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    conv2d_forward_with(g, x, weight, bias, ConvMethod::Auto)
}

/// [`conv2d_forward`] by the given method.
pub fn conv2d_forward_with(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    method: ConvMethod,
) -> Vec<f32> {
    conv2d_forward_activated(g, x, weight, bias, Activation::Identity, method)
}

/// What the forward pass applies to its outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    /// `max(y, 0)` with NaN kept, applied as the direct kernels store their
    /// tiles (no pass of its own there; one in place on the im2col path).
    Relu,
}

/// The gradient reaching a ReLU's input from its output's: `dy` where the
/// output `y` is positive or NaN, 0 elsewhere (as burn's and torch's ReLU,
/// which let NaN through so that a diverging run shows it).
pub fn relu_output_grad(y: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(
        y.len(),
        dy.len(),
        "ReLU output and gradient differ in length"
    );
    y.iter()
        .zip(dy)
        .map(|(&y, &d)| if relu_passes(y) { d } else { 0.0 })
        .collect()
}

/// Whether a ReLU keeps `v` (and passes its gradient): positive or NaN.
fn relu_passes(v: f32) -> bool {
    v.is_nan() || v > 0.0
}

/// `activation(conv2d_forward(..))`, by the given method. After a ReLU the
/// gradient is [`relu_output_grad`] followed by [`conv2d_backward`].
pub fn conv2d_forward_activated(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    activation: Activation,
    method: ConvMethod,
) -> Vec<f32> {
    if method.direct(g) {
        return direct_forward(g, x, weight, bias, activation, method);
    }
    let mut y = im2col_forward(g, x, weight, bias);
    if activation == Activation::Relu {
        // `f32::max` would turn NaN into 0.
        y.iter_mut()
            .filter(|v| !relu_passes(**v))
            .for_each(|v| *v = 0.0);
    }
    y
}

/// The forward pass through column matrices and gemm.
fn im2col_forward(g: &ConvGeometry, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (k, n, cout) = (g.patch_len(), g.out_pixels(), g.channels_out);
    let (oh, ow) = (g.out[0], g.out[1]);
    let mut y = vec![0.0; g.batch * g.output_len()];
    if y.is_empty() {
        return y;
    }
    let group = group_size(g, g.batch);
    let tile_rows = if group == 1 {
        (column_target(g) / ow).clamp(1, oh)
    } else {
        oh
    };
    let groups: Vec<(usize, &mut [f32])> =
        y.chunks_mut(group * g.output_len()).enumerate().collect();
    let parallelism = gemm_parallelism(groups.len());
    map_items(groups, |(index, out)| {
        let samples = out.len() / g.output_len();
        let mut col = vec![0.0; k * samples * tile_rows * ow];
        let mut product = vec![
            0.0;
            if samples == 1 {
                0
            } else {
                cout * samples * tile_rows * ow
            }
        ];
        for first_row in (0..oh).step_by(tile_rows) {
            let rows = first_row..(first_row + tile_rows).min(oh);
            let tile = rows.len() * ow;
            let ld = samples * tile;
            // col [k, samples * tile], product [cout, samples * tile]
            for s in 0..samples {
                let x_b = &x[(index * group + s) * g.input_len()..][..g.input_len()];
                im2col(g, x_b, rows.clone(), &mut col[s * tile..], ld);
            }
            let col = &col[..k * ld];
            if samples == 1 {
                // One sample: gemm writes its rows of every output channel in
                // place, on top of the bias.
                let out = &mut out[first_row * ow..];
                if let Some(bias) = bias {
                    for (channel, &b) in out.chunks_mut(n).zip(bias) {
                        channel[..tile].fill(b);
                    }
                }
                let dst = (out, n);
                matmul(
                    [cout, tile, k],
                    dst,
                    bias.is_some(),
                    weight,
                    [k, 1],
                    col,
                    [ld, 1],
                    parallelism,
                );
                continue;
            }
            let product = &mut product[..cout * ld];
            matmul(
                [cout, ld, k],
                (product, ld),
                false,
                weight,
                [k, 1],
                col,
                [ld, 1],
                parallelism,
            );
            for (s, out_b) in out.chunks_mut(g.output_len()).enumerate() {
                for (co, channel) in out_b.chunks_mut(n).enumerate() {
                    let bias = bias.map_or(0.0, |b| b[co]);
                    let from = &product[co * ld + s * tile..][..tile];
                    let to = &mut channel[first_row * ow..][..tile];
                    to.iter_mut().zip(from).for_each(|(o, p)| *o = p + bias);
                }
            }
        }
    });
    y
}

/// Partial weight gradients: the batch is cut into this many fixed chunks,
/// each summed on its own and the partials added in order, so that the bits
/// depend on the batch size only.
const WEIGHT_GRAD_CHUNKS: usize = 4;

/// The gradients of [`conv2d_forward`] with respect to its input and its
/// weight (each computed only when asked for), given the output gradient `dy`.
pub fn conv2d_backward(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    want_input_grad: bool,
    want_weight_grad: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    conv2d_backward_with(
        g,
        x,
        weight,
        dy,
        [want_input_grad, want_weight_grad],
        ConvMethod::Auto,
    )
}

/// [`conv2d_backward`] by the given method; `want` is `[input, weight]`.
pub fn conv2d_backward_with(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    [want_input_grad, want_weight_grad]: [bool; 2],
    method: ConvMethod,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let direct_weight_grad =
        (want_weight_grad && method.direct(g)).then(|| direct_weight_grad(g, x, dy, method));
    let want_weight_grad = want_weight_grad && direct_weight_grad.is_none();
    // With stride 1 the input gradient is itself a convolution (of `dy` with
    // the flipped, transposed kernel): a gemm over cout * kh * kw instead of a
    // thin one over cout followed by a col2im scatter.
    let transposed = if want_input_grad {
        transposed_geometry(g)
    } else {
        None
    };
    let dx_by_convolution =
        transposed.map(|gt| conv2d_forward_with(&gt, dy, &flip_kernel(g, weight), None, method));
    let scatter_input_grad = want_input_grad && dx_by_convolution.is_none();
    let (k, n, cout) = (g.patch_len(), g.out_pixels(), g.channels_out);
    let chunk = g.batch.div_ceil(WEIGHT_GRAD_CHUNKS).max(1);
    let num_chunks = g.batch.div_ceil(chunk);
    let group = group_size(g, chunk);
    let mut dx = vec![
        0.0;
        if scatter_input_grad {
            g.batch * g.input_len()
        } else {
            0
        }
    ];
    let dx_parts: Vec<Option<&mut [f32]>> = if scatter_input_grad && !dx.is_empty() {
        dx.chunks_mut(chunk * g.input_len()).map(Some).collect()
    } else if want_weight_grad {
        (0..num_chunks).map(|_| None).collect()
    } else {
        Vec::new() // nothing left to sweep the batch for
    };
    let parallelism = gemm_parallelism(num_chunks);
    let partials = map_items(
        dx_parts.into_iter().enumerate().collect(),
        |(c, mut dx_part)| {
            let mut dw = want_weight_grad.then(|| vec![0.0; cout * k]);
            let first = c * chunk;
            let end = ((c + 1) * chunk).min(g.batch);
            let mut col = vec![0.0; k * group * n];
            let mut dy_group = vec![0.0; cout * group * n];
            for start in (first..end).step_by(group) {
                let samples = group.min(end - start);
                let ld = samples * n;
                // dy_group [cout, samples * n]: the group's output gradients side by side
                for s in 0..samples {
                    let dy_b = &dy[(start + s) * g.output_len()..][..g.output_len()];
                    for (co, row) in dy_b.chunks(n).enumerate() {
                        dy_group[co * ld + s * n..][..n].copy_from_slice(row);
                    }
                }
                if let Some(dw) = dw.as_mut() {
                    for s in 0..samples {
                        let x_b = &x[(start + s) * g.input_len()..][..g.input_len()];
                        im2col(g, x_b, 0..g.out[0], &mut col[s * n..], ld);
                    }
                    // dw[cout, k] += dy_group[cout, ld] * col^T[ld, k]
                    matmul(
                        [cout, k, ld],
                        (dw, k),
                        true,
                        &dy_group,
                        [ld, 1],
                        &col,
                        [1, ld],
                        parallelism,
                    );
                }
                if let Some(dx_part) = dx_part.as_deref_mut() {
                    // dcol[k, ld] = weight^T[k, cout] * dy_group[cout, ld], reusing col
                    matmul(
                        [k, ld, cout],
                        (&mut col, ld),
                        false,
                        weight,
                        [1, k],
                        &dy_group,
                        [ld, 1],
                        parallelism,
                    );
                    for s in 0..samples {
                        let dx_b =
                            &mut dx_part[(start + s - first) * g.input_len()..][..g.input_len()];
                        col2im(g, &col[s * n..], ld, dx_b);
                    }
                }
            }
            dw
        },
    );
    let dw = want_weight_grad.then(|| sum_in_order(partials.into_iter().flatten(), cout * k));
    let dx = dx_by_convolution.or(scatter_input_grad.then_some(dx));
    (dx, dw.or(direct_weight_grad))
}

/// Samples per work item of the direct kernels: the batch cut into one item
/// per thread (each sample's result is its own, so the cut changes no bits).
fn direct_items(batch: usize) -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    let threads = rayon::current_num_threads();
    #[cfg(target_arch = "wasm32")]
    let threads = 1;
    batch.div_ceil(threads.max(1)).max(1)
}

/// The forward pass without column matrices (see [`direct`]).
fn direct_forward(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    activation: Activation,
    method: ConvMethod,
) -> Vec<f32> {
    let mut y = vec![0.0; g.batch * g.output_len()];
    if y.is_empty() {
        return y;
    }
    let padded = direct::Padded::of(g, method.allow_avx512());
    let blocks = direct::regroup_weights(g, &padded, weight);
    let per_item = direct_items(g.batch);
    let items: Vec<(usize, &mut [f32])> = y
        .chunks_mut(per_item * g.output_len())
        .enumerate()
        .collect();
    map_items(items, |(item, out)| {
        let mut xp = vec![0.0; padded.sample_len(g)];
        for (s, y_b) in out.chunks_mut(g.output_len()).enumerate() {
            let sample = item * per_item + s;
            padded.fill(g, &x[sample * g.input_len()..][..g.input_len()], &mut xp);
            direct::forward_sample(g, &padded, &xp, &blocks, bias, activation, y_b);
        }
    });
    y
}

/// The weight gradient without column matrices: per fixed chunk of the batch
/// (as in the im2col path) a partial sum over its samples in order, the
/// partials then added in order.
fn direct_weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32], method: ConvMethod) -> Vec<f32> {
    let len = g.channels_out * g.patch_len();
    let padded = direct::Padded::of(g, method.allow_avx512());
    let chunk = g.batch.div_ceil(WEIGHT_GRAD_CHUNKS).max(1);
    let chunks: Vec<usize> = (0..g.batch.div_ceil(chunk)).collect();
    let partials = map_items(chunks, |c| {
        let samples = c * chunk..((c + 1) * chunk).min(g.batch);
        let (x_len, dy_len) = (padded.sample_len(g), padded.output_grad_len(g));
        let mut xps = vec![0.0; samples.len() * x_len + direct::grad_slack(g)];
        let mut dyps = vec![0.0; samples.len() * dy_len];
        for (i, sample) in samples.clone().enumerate() {
            let x_b = &x[sample * g.input_len()..][..g.input_len()];
            padded.fill(g, x_b, &mut xps[i * x_len..][..x_len]);
            let dy_b = &dy[sample * g.output_len()..][..g.output_len()];
            padded.fill_output_grad(g, dy_b, &mut dyps[i * dy_len..][..dy_len]);
        }
        let mut dw = vec![0.0; len];
        direct::weight_grad_samples(g, &padded, samples.len(), &xps, &dyps, &mut dw);
        dw
    });
    sum_in_order(partials, len)
}

/// The partial weight gradients added in order, so that the bits depend on
/// the chunking only.
fn sum_in_order(partials: impl IntoIterator<Item = Vec<f32>>, len: usize) -> Vec<f32> {
    let mut sum = vec![0.0; len];
    for partial in partials {
        sum.iter_mut().zip(partial).for_each(|(s, p)| *s += p);
    }
    sum
}

/// The geometry of the input gradient as a convolution of `dy` (stride 1
/// only): `dy` padded by dilation * (k - 1) minus the forward padding on each
/// side, so that it comes out at the input's size. `None` for strided
/// convolutions and for paddings wider than the kernel's reach.
fn transposed_geometry(g: &ConvGeometry) -> Option<ConvGeometry> {
    if g.stride != [1, 1] {
        return None;
    }
    let pad = |axis: usize, size: usize| -> Option<(usize, usize)> {
        let reach = g.dilation[axis] * (g.kernel[axis] - 1);
        // out = size + begin + end - reach, so end = out - size - begin + reach
        let end = (g.out[axis] + reach).checked_sub(size + g.padding[axis])?;
        Some((reach.checked_sub(g.padding[axis])?, reach.checked_sub(end)?))
    };
    let padding = [pad(0, g.height)?, pad(1, g.width)?];
    let gt = ConvGeometry::new(
        [g.batch, g.channels_out, g.out[0], g.out[1]],
        [g.channels_in, g.channels_out, g.kernel[0], g.kernel[1]],
        [1, 1],
        padding,
        g.dilation,
    )?;
    (gt.out == [g.height, g.width]).then_some(gt)
}

/// The kernel of [`transposed_geometry`]: `[cin, cout, kh, kw]`, each tap
/// mirrored, `flipped[ci][co][ky][kx] = weight[co][ci][kh-1-ky][kw-1-kx]`.
fn flip_kernel(g: &ConvGeometry, weight: &[f32]) -> Vec<f32> {
    let [kh, kw] = g.kernel;
    let (cin, cout) = (g.channels_in, g.channels_out);
    let mut flipped = vec![0.0; weight.len()];
    for co in 0..cout {
        for ci in 0..cin {
            for ky in 0..kh {
                for kx in 0..kw {
                    flipped[((ci * cout + co) * kh + ky) * kw + kx] =
                        weight[((co * cin + ci) * kh + (kh - 1 - ky)) * kw + (kw - 1 - kx)];
                }
            }
        }
    }
    flipped
}

/// The bias gradient: `dy` summed over samples and pixels, per channel.
pub fn conv2d_bias_backward(g: &ConvGeometry, dy: &[f32]) -> Vec<f32> {
    let n = g.out_pixels();
    let mut db = vec![0.0; g.channels_out];
    for sample in dy.chunks(g.output_len().max(1)).take(g.batch) {
        for (d, row) in db.iter_mut().zip(sample.chunks(n.max(1))) {
            *d += row.iter().sum::<f32>();
        }
    }
    db
}
