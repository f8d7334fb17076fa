//! The AE purifier: a convolutional U-Net autoencoder on the same RT input as
//! the inpainter, trained with L1 reconstruction. (The paper's AE purifier is
//! a masked autoencoder from other work; this is the simpler conv AE.)

use crate::ops::{conv2d_module, conv2d_relu_module};
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::gated_conv::upsample_nearest2;
use super::purifier_io::{PurifierInput, signed_to_unit};
use crate::error::{AtopError, Result};

/// Configuration of the U-Net autoencoder.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AutoencoderConfig {
    pub image_channels: usize,
    /// Channels of the first level; each of the two downsamplings doubles it.
    pub width: usize,
}

impl Default for AutoencoderConfig {
    fn default() -> Self {
        Self {
            image_channels: 3,
            width: 32,
        }
    }
}

fn conv3(cin: usize, cout: usize, stride: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// Two 3x3 convs with ReLU.
#[derive(Module, Debug)]
pub struct DoubleConv {
    pub conv1: Conv2d,
    pub conv2: Conv2d,
}

impl DoubleConv {
    fn new(cin: usize, cout: usize, device: &Device) -> Self {
        Self {
            conv1: conv3(cin, cout, 1, device),
            conv2: conv3(cout, cout, 1, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d_relu_module(&self.conv2, conv2d_relu_module(&self.conv1, x))
    }
}

impl AutoencoderConfig {
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.image_channels, 1 | 3) {
            return Err(AtopError::config(
                "purifier.image_channels",
                format!("must be 1 or 3, got {}", self.image_channels),
            ));
        }
        if self.width == 0 {
            return Err(AtopError::config("purifier.width", "must be at least 1"));
        }
        super::check_size("purifier.width", self.width, 2048)?;
        Ok(())
    }

    /// A model with burn's default initialisation, its parameters drawn here
    /// (`crate::model::init_drawn`).
    pub fn init(&self, device: &Device) -> Result<ConvAutoencoder> {
        crate::model::init_drawn(|| self.init_unlocked(device))
    }

    fn init_unlocked(&self, device: &Device) -> Result<ConvAutoencoder> {
        self.validate()?;
        let w = self.width;
        Ok(ConvAutoencoder {
            enc1: DoubleConv::new(self.image_channels + 2, w, device),
            down1: conv3(w, 2 * w, 2, device),
            enc2: DoubleConv::new(2 * w, 2 * w, device),
            down2: conv3(2 * w, 4 * w, 2, device),
            bottleneck: DoubleConv::new(4 * w, 4 * w, device),
            up2: conv3(4 * w, 2 * w, 1, device),
            dec2: DoubleConv::new(4 * w, 2 * w, device),
            up1: conv3(2 * w, w, 1, device),
            dec1: DoubleConv::new(2 * w, w, device),
            to_image: Conv2dConfig::new([w, self.image_channels], [1, 1]).init(device),
            image_channels: self.image_channels,
        })
    }
}

/// Conv U-Net autoencoder with skip connections, two levels deep.
#[derive(Module, Debug)]
pub struct ConvAutoencoder {
    pub enc1: DoubleConv,
    pub down1: Conv2d,
    pub enc2: DoubleConv,
    pub down2: Conv2d,
    pub bottleneck: DoubleConv,
    pub up2: Conv2d,
    pub dec2: DoubleConv,
    pub up1: Conv2d,
    pub dec1: DoubleConv,
    pub to_image: Conv2d,
    pub image_channels: usize,
}

impl ConvAutoencoder {
    /// Rebuilds the whole frame from a transformed image (`image` in [0,1],
    /// holes where `mask` = 1); returns `[n, C, h, w]` in [0,1].
    pub fn forward(&self, image: Tensor<4>, mask: Tensor<4>) -> Result<Tensor<4>> {
        let input = PurifierInput::new(image, mask, self.image_channels, 4)?;
        let e1 = self.enc1.forward(input.network_input()); // [n, w, H, W]
        let e2 = self
            .enc2
            .forward(conv2d_relu_module(&self.down1, e1.clone())); // [n, 2w, H/2, W/2]
        let b = self
            .bottleneck
            .forward(conv2d_relu_module(&self.down2, e2.clone())); // [n, 4w, H/4, W/4]
        let u2 = conv2d_relu_module(&self.up2, upsample_nearest2(b)); // [n, 2w, H/2, W/2]
        let d2 = self.dec2.forward(Tensor::cat(vec![u2, e2], 1)); // [n, 2w, H/2, W/2]
        let u1 = conv2d_relu_module(&self.up1, upsample_nearest2(d2)); // [n, w, H, W]
        let d1 = self.dec1.forward(Tensor::cat(vec![u1, e1], 1)); // [n, w, H, W]
        let out = conv2d_module(&self.to_image, d1).tanh(); // [n, C, H, W] in [-1, 1]
        Ok(input.crop(signed_to_unit(out)))
    }
}
