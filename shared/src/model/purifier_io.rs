//! What both purifiers do to their input and output: check shapes, pad to a
//! size the network can halve, build the `[masked image in [-1,1], ones,
//! mask]` channels, and map the output back to [0,1] at the original size.

use burn::tensor::ops::PadMode;
use burn::tensor::{Tensor, s};

use crate::error::{AtopError, Result};

/// `[-1, 1] -> [0, 1]`.
pub fn signed_to_unit(x: Tensor<4>) -> Tensor<4> {
    x.add_scalar(1.0).mul_scalar(0.5)
}

/// `[0, 1] -> [-1, 1]`.
pub fn unit_to_signed(x: Tensor<4>) -> Tensor<4> {
    x.mul_scalar(2.0).sub_scalar(1.0)
}

/// A purifier's input, padded to a multiple of the network's stride.
pub struct PurifierInput {
    /// `[n, C, H', W']` in [0,1], zero in holes and padding.
    pub image: Tensor<4>,
    /// `[n, 1, H', W']`, 1 = hole; the padding counts as hole so that no
    /// stage copies from it.
    pub mask: Tensor<4>,
    /// 1 inside the original frame, 0 in the padding.
    pub frame: Tensor<4>,
    pub height: usize,
    pub width: usize,
}

impl PurifierInput {
    pub fn new(
        image: Tensor<4>,
        mask: Tensor<4>,
        channels: usize,
        multiple: usize,
    ) -> Result<Self> {
        let [n, c, h, w] = image.dims();
        if c != channels || h == 0 || w == 0 {
            return Err(AtopError::shape(
                "purifier image",
                format!("[n, {channels}, h, w] with h, w > 0"),
                &image.dims(),
            ));
        }
        if mask.dims() != [n, 1, h, w] {
            return Err(AtopError::shape(
                "purifier mask",
                format!("[{n}, 1, {h}, {w}]"),
                &mask.dims(),
            ));
        }
        let (ph, pw) = (
            h.div_ceil(multiple) * multiple,
            w.div_ceil(multiple) * multiple,
        );
        let device = image.device();
        let frame = Tensor::<4>::ones([n, 1, h, w], &device);
        let (image, mask, frame) = if (ph, pw) == (h, w) {
            (image, mask, frame)
        } else {
            let pad = (0, pw - w, 0, ph - h);
            (
                image.pad(pad, PadMode::Constant(0.0)),
                mask.pad(pad, PadMode::Constant(1.0)),
                frame.pad(pad, PadMode::Constant(0.0)),
            )
        };
        Ok(Self {
            image,
            mask,
            frame,
            height: h,
            width: w,
        })
    }

    /// The masked image in [-1, 1] with holes set to 0.
    pub fn masked_signed(&self) -> Tensor<4> {
        unit_to_signed(self.image.clone()) * self.mask.clone().neg().add_scalar(1.0)
    }

    /// `[masked image in [-1,1], ones (frame), mask]` along channels.
    pub fn network_input(&self) -> Tensor<4> {
        Tensor::cat(
            vec![self.masked_signed(), self.frame.clone(), self.mask.clone()],
            1,
        )
    }

    /// Crops a padded output back to the original size.
    pub fn crop(&self, x: Tensor<4>) -> Tensor<4> {
        x.slice(s![.., .., 0..self.height, 0..self.width])
    }
}
