//! SN-PatchGAN discriminator (DeepFillv2): 5x5 stride-2 convolutions with
//! spectral normalisation and LeakyReLU(0.2); input = image + mask; output =
//! one score per patch, flattened. Trained with the hinge loss.
//!
//! DeepFillv2 stacks six convs and applies LeakyReLU after the last one too.
//! Both are settings here: six stride-2 convs shrink a 28x28 image to 1x1
//! (the last two see mostly zero padding), and a LeakyReLU output squeezes
//! the negative scores the hinge loss wants for fakes by a factor of 5.

use crate::ops::conv2d;
use burn::module::{Module, Param, RunningState};
use burn::nn::Initializer;
use burn::tensor::activation::leaky_relu;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::purifier_io::unit_to_signed;
use crate::error::{AtopError, Result};

/// Configuration of the discriminator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DiscriminatorConfig {
    pub image_channels: usize,
    /// Width of the first conv; the convs have widths
    /// cnum x (1, 2, 4, 4, 4, 4) = (64, 128, 256, 256, 256, 256) by default.
    pub cnum: usize,
    /// Number of stride-2 convs, 1 to 6 (DeepFillv2: 6). The scores form a
    /// map of side/2^layers patches.
    pub layers: usize,
    /// LeakyReLU after the last conv, as DeepFillv2's code; `false` gives
    /// linear scores.
    pub output_activation: bool,
}

impl Default for DiscriminatorConfig {
    fn default() -> Self {
        Self {
            image_channels: 3,
            cnum: 64,
            layers: 6,
            output_activation: true,
        }
    }
}

impl DiscriminatorConfig {
    /// A model with burn's default initialisation, its parameters drawn here
    /// (`crate::model::init_drawn`).
    pub fn init(&self, device: &Device) -> Result<Discriminator> {
        crate::model::init_drawn(|| self.init_unlocked(device))
    }

    fn init_unlocked(&self, device: &Device) -> Result<Discriminator> {
        if self.cnum == 0 || !matches!(self.image_channels, 1 | 3) {
            return Err(AtopError::config(
                "discriminator",
                format!(
                    "needs cnum >= 1 and 1 or 3 image channels, got cnum {} and {} channels",
                    self.cnum, self.image_channels
                ),
            ));
        }
        super::check_size("discriminator.cnum", self.cnum, 2048)?;
        if !(1..=6).contains(&self.layers) {
            return Err(AtopError::config(
                "discriminator.layers",
                format!("must be 1 to 6, got {}", self.layers),
            ));
        }
        let c = self.cnum;
        let widths = [
            self.image_channels + 1,
            c,
            2 * c,
            4 * c,
            4 * c,
            4 * c,
            4 * c,
        ];
        let convs = (0..self.layers)
            .map(|i| SpectralNormConv2d::new(widths[i], widths[i + 1], 5, device))
            .collect();
        Ok(Discriminator {
            convs,
            image_channels: self.image_channels,
            output_activation: self.output_activation,
        })
    }
}

/// A conv whose weight is divided by its largest singular value, estimated by
/// one power-iteration step per training forward (Miyato et al., 2018).
#[derive(Module, Debug)]
pub struct SpectralNormConv2d {
    pub weight: Param<Tensor<4>>,
    pub bias: Param<Tensor<1>>,
    /// Left singular vector estimate, a buffer (not trained).
    pub weight_u: RunningState<Tensor<1>>,
    pub kernel: usize,
}

const SN_EPS: f32 = 1e-12;

fn l2_normalize(v: Tensor<1>) -> Tensor<1> {
    let norm = v.clone().powi_scalar(2).sum().sqrt().clamp_min(SN_EPS);
    v / norm
}

impl SpectralNormConv2d {
    fn new(cin: usize, cout: usize, kernel: usize, device: &Device) -> Self {
        let fan_in = cin * kernel * kernel;
        let weight = Initializer::KaimingUniform {
            gain: 1.0 / 3f64.sqrt(),
            fan_out_only: false,
        }
        .init_with([cout, cin, kernel, kernel], Some(fan_in), None, device);
        let bias = Initializer::Zeros.init([cout], device);
        let u = Initializer::Normal {
            mean: 0.0,
            std: 1.0,
        }
        .init::<1, _>([cout], device)
        .into_value();
        Self {
            weight,
            bias,
            weight_u: RunningState::new(l2_normalize(u)),
            kernel,
        }
    }

    /// The normalised weight. In training (autodiff device) the power
    /// iteration advances `weight_u`; in inference the stored estimate is used.
    pub fn normalized_weight(&self) -> Tensor<4> {
        let w = self.weight.val();
        let [cout, cin, k, _] = w.dims();
        let device = w.device();
        let w2 = w.clone().reshape([cout, cin * k * k]);
        let w2_const = w2.clone().detach();
        // `value_sync` (not `value`): burn's RunningState keeps the last
        // update pending per thread, and `value()` would read the estimate of
        // two forwards ago. A checkpoint holds only the committed value, so
        // reading a pending one made resumed GAN runs diverge.
        let mut u = self.weight_u.value_sync().to_device(&device).detach();
        let v = l2_normalize(
            w2_const
                .clone()
                .transpose()
                .matmul(u.clone().unsqueeze_dim(1))
                .squeeze_dim(1),
        );
        if device.is_autodiff() {
            u = l2_normalize(w2_const.matmul(v.clone().unsqueeze_dim(1)).squeeze_dim(1));
            self.weight_u.update(u.clone().detach());
            // Commit at once, so that the state a checkpoint saves is the
            // state the next forward reads.
            let _ = self.weight_u.value_sync();
        }
        // sigma = u^T W v, with gradient through W only.
        let sigma = u
            .unsqueeze_dim::<2>(0)
            .matmul(w2)
            .matmul(v.unsqueeze_dim(1))
            .reshape([1, 1, 1, 1]);
        w / sigma
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let pad = (self.kernel - 1) / 2;
        conv2d(
            x,
            self.normalized_weight(),
            Some(self.bias.val()),
            ConvOptions::new([2, 2], [pad, pad], [1, 1], 1),
        )
    }
}

/// The SN-PatchGAN discriminator.
#[derive(Module, Debug)]
pub struct Discriminator {
    pub convs: Vec<SpectralNormConv2d>,
    pub image_channels: usize,
    pub output_activation: bool,
}

impl Discriminator {
    /// Scores `image` (in [0,1]) given the hole `mask`: `[n, patches]`.
    pub fn forward(&self, image: Tensor<4>, mask: Tensor<4>) -> Result<Tensor<2>> {
        let [n, c, h, w] = image.dims();
        if c != self.image_channels || mask.dims() != [n, 1, h, w] {
            return Err(AtopError::shape(
                "discriminator input",
                format!(
                    "image [n, {}, h, w] and mask [n, 1, h, w]",
                    self.image_channels
                ),
                &image.dims(),
            ));
        }
        let mut x = Tensor::cat(vec![unit_to_signed(image), mask], 1); // [n, c+1, h, w]
        let last = self.convs.len().saturating_sub(1);
        for (i, conv) in self.convs.iter().enumerate() {
            x = conv.forward(x); // [n, width_i, h/2^(i+1), w/2^(i+1)]
            if i < last || self.output_activation {
                x = leaky_relu(x, 0.2);
            }
        }
        Ok(x.flatten(1, 3)) // [n, patches]
    }
}
