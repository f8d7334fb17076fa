//! Contextual attention (Yu et al., "Generative Image Inpainting with
//! Contextual Attention"), as used in DeepFillv2's refine stage.
//!
//! Every position of the (downscaled) feature map is matched against 3x3
//! patches of the known region by cosine similarity, the scores are fused
//! along diagonals to favour coherent patches, a softmax (scale 10) over the
//! known patches gives attention weights, and 4x4 raw feature patches are
//! pasted back with those weights (a transposed convolution, here written as
//! matmul + fold). Hole validity is computed per sample; the public code reads
//! it from sample 0 for the whole batch.

use crate::ops::conv2d;
use burn::tensor::activation::softmax;
use burn::tensor::module::{fold4d, unfold4d};
use burn::tensor::ops::{ConvOptions, UnfoldOptions};
use burn::tensor::{Tensor, TensorData, s};
use serde::{Deserialize, Serialize};

use crate::error::{AtopError, Result};

/// Settings of the attention layer (DeepFillv2 defaults).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ContextualAttentionConfig {
    /// Softmax temperature applied to the cosine similarities.
    pub softmax_scale: f32,
    /// Fuse scores along diagonals with a 3x3 identity kernel.
    pub fuse: bool,
}

impl Default for ContextualAttentionConfig {
    fn default() -> Self {
        Self {
            softmax_scale: 10.0,
            fuse: true,
        }
    }
}

// Fixed geometry of the DeepFillv2 layer: match 3x3 patches at half the
// feature resolution, paste 4x4 raw patches with stride 2; the features are
// at 1/4 of the image, so the mask is read at 1/8.
const MATCH_KERNEL: usize = 3;
const RATE: usize = 2;
const RAW_KERNEL: usize = 2 * RATE;
const MASK_STRIDE: usize = 4 * RATE;
// Added to every squared element before the patch norm, exactly as the
// reference does, so imported weights see the same normalisation.
const NORM_EPS: f32 = 1e-4;

/// Applies contextual attention to features `f` `[n, c, h, w]` (h, w even),
/// with the image-resolution hole mask `[n, 1, 8*h/2, 8*w/2]` (1 = hole).
/// Returns features of the same shape as `f`.
pub fn contextual_attention(
    f: Tensor<4>,
    mask: Tensor<4>,
    config: &ContextualAttentionConfig,
) -> Result<Tensor<4>> {
    let [n, _, h, w] = f.dims();
    if h % RATE != 0 || w % RATE != 0 || h == 0 || w == 0 {
        return Err(AtopError::shape(
            "contextual attention features",
            "a non-empty feature map with even height and width",
            &f.dims(),
        ));
    }
    let (hd, wd) = (h / RATE, w / RATE);
    let mask_dims = mask.dims();
    if mask_dims != [n, 1, hd * MASK_STRIDE, wd * MASK_STRIDE] {
        return Err(AtopError::shape(
            "contextual attention mask",
            format!("[{n}, 1, {}, {}]", hd * MASK_STRIDE, wd * MASK_STRIDE),
            &mask_dims,
        ));
    }
    let patches = hd * wd;

    // Raw 4x4 patches at stride 2 for pasting: [n, c*16, L].
    let raw = unfold4d(
        f.clone(),
        [RAW_KERNEL, RAW_KERNEL],
        UnfoldOptions::new([RATE, RATE], [1, 1], [1, 1]),
    );

    // Downscale (nearest) and cut 3x3 patches: [n, c*9, L]. The same
    // patches serve as the matching filters and as the queried positions.
    let small = f.slice(s![.., .., 0..;RATE as isize, 0..;RATE as isize]);
    let pad = (MATCH_KERNEL - 1) / 2;
    let cols = unfold4d(
        small,
        [MATCH_KERNEL, MATCH_KERNEL],
        UnfoldOptions::new([1, 1], [pad, pad], [1, 1]),
    );
    let norms = (cols.clone().powi_scalar(2).add_scalar(NORM_EPS))
        .sum_dim(1)
        .sqrt(); // [n, 1, L]
    let filters = cols.clone() / norms; // [n, k, L]
    // scores[n, l, p] = <filter l, patch at p>
    let mut scores = filters.swap_dims(1, 2).matmul(cols); // [n, L, P]
    debug_assert_eq!(scores.dims(), [n, patches, patches]);

    if config.fuse {
        scores = fuse_diagonals(scores, [hd, wd]);
    }

    // Known-patch indicator per sample: a 3x3 patch of the mask at 1/8 scale
    // must contain no hole. [n, L, 1]
    let mask_small = mask.slice(s![
        ..,
        ..,
        0..;MASK_STRIDE as isize,
        0..;MASK_STRIDE as isize
    ]);
    let mask_cols = unfold4d(
        mask_small,
        [MATCH_KERNEL, MATCH_KERNEL],
        UnfoldOptions::new([1, 1], [pad, pad], [1, 1]),
    ); // [n, 9, L]
    let known = mask_cols
        .sum_dim(1)
        .equal_elem(0.0)
        .float()
        .reshape([n, patches, 1]);

    let attention = softmax((scores * known.clone()).mul_scalar(config.softmax_scale), 1) * known;

    // Paste: out_cols[n, c*16, P] = raw[n, c*16, L] @ attention[n, L, P],
    // folded back at stride 2 (the transposed conv of the reference), /4.
    let pasted = raw.matmul(attention);
    let out = fold4d(
        pasted,
        [h, w],
        [RAW_KERNEL, RAW_KERNEL],
        UnfoldOptions::new([RATE, RATE], [1, 1], [1, 1]),
    )
    .div_scalar(4.0);
    Ok(out)
}

/// Sums each score with its diagonal neighbours, once in row-major patch
/// order and once in column-major order (the reference's "fuse" step).
fn fuse_diagonals(scores: Tensor<3>, [hd, wd]: [usize; 2]) -> Tensor<3> {
    let [n, l, p] = scores.dims();
    let device = scores.device();
    let eye = Tensor::<4>::from_data(
        TensorData::new(
            vec![1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            [1, 1, 3, 3],
        ),
        &device,
    );
    let options = || ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let y = conv2d(scores.reshape([n, 1, l, p]), eye.clone(), None, options());
    // Reorder both patch axes to column-major and fuse again.
    let y = y
        .reshape([n, hd, wd, hd, wd])
        .permute([0, 2, 1, 4, 3])
        .reshape([n, 1, l, p]);
    let y = conv2d(y, eye, None, options());
    y.reshape([n, wd, hd, wd, hd])
        .permute([0, 2, 1, 4, 3])
        .reshape([n, l, p])
}
