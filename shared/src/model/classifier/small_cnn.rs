//! A small CNN for 28x28 grayscale data (Fashion-MNIST): two conv-ReLU-pool
//! stages and two linear layers.

use crate::ops::{conv2d_relu_module, relu};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::Normalization;
use crate::error::{AtopError, Result};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmallCnnConfig {
    pub image_channels: usize,
    /// Input height and width; each must be divisible by 4.
    pub image_size: [usize; 2],
    pub num_classes: usize,
    /// Channels of the two convs; the hidden linear layer has 4x width.
    pub width: usize,
    pub normalization: Normalization,
}

impl SmallCnnConfig {
    /// The Fashion-MNIST default: 1x28x28, 10 classes, width 32.
    pub fn fashion_mnist() -> Self {
        Self {
            image_channels: 1,
            image_size: [28, 28],
            num_classes: 10,
            width: 32,
            normalization: Normalization {
                mean: vec![0.2860],
                std: vec![0.3530],
            },
        }
    }

    /// A model with burn's default initialisation, its parameters drawn here
    /// (`crate::model::init_drawn`).
    pub fn init(&self, device: &Device) -> Result<SmallCnn> {
        crate::model::init_drawn(|| self.init_unlocked(device))
    }

    fn init_unlocked(&self, device: &Device) -> Result<SmallCnn> {
        self.normalization.validate(self.image_channels)?;
        let [h, w] = self.image_size;
        if h % 4 != 0 || w % 4 != 0 || h == 0 || w == 0 {
            return Err(AtopError::config(
                "classifier.image_size",
                format!("height and width must be positive multiples of 4, got {h}x{w}"),
            ));
        }
        if self.num_classes < 2 || self.width == 0 {
            return Err(AtopError::config(
                "classifier",
                "needs at least 2 classes and a positive width",
            ));
        }
        super::super::check_size("classifier.width", self.width, 2048)?;
        super::super::check_size("classifier.num_classes", self.num_classes, 100_000)?;
        super::super::check_size("classifier.image_size", h.max(w), 4096)?;
        let c = self.width;
        let conv = |cin, cout| {
            Conv2dConfig::new([cin, cout], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        Ok(SmallCnn {
            conv1: conv(self.image_channels, c),
            conv2: conv(c, 2 * c),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            fc1: LinearConfig::new(2 * c * (h / 4) * (w / 4), 4 * c).init(device),
            fc2: LinearConfig::new(4 * c, self.num_classes).init(device),
            normalization: self.normalization.clone(),
            image_channels: self.image_channels,
            image_size: self.image_size,
        })
    }
}

#[derive(Module, Debug)]
pub struct SmallCnn {
    pub conv1: Conv2d,
    pub conv2: Conv2d,
    pub pool: MaxPool2d,
    pub fc1: Linear,
    pub fc2: Linear,
    #[module(skip)]
    pub normalization: Normalization,
    pub image_channels: usize,
    pub image_size: [usize; 2],
}

impl SmallCnn {
    pub fn forward(&self, x: Tensor<4>) -> Result<Tensor<2>> {
        let dims = x.dims();
        if [dims[2], dims[3]] != self.image_size {
            return Err(AtopError::shape(
                "classifier input",
                format!(
                    "[n, {}, {}, {}]",
                    self.image_channels, self.image_size[0], self.image_size[1]
                ),
                &dims,
            ));
        }
        let x = self.normalization.apply(x);
        let x = self.pool.forward(conv2d_relu_module(&self.conv1, x)); // [n, c, h/2, w/2]
        let x = self.pool.forward(conv2d_relu_module(&self.conv2, x)); // [n, 2c, h/4, w/4]
        let x = x.flatten(1, 3); // [n, 2c*h*w/16]
        let x = relu(self.fc1.forward(x)); // [n, 4c]
        Ok(self.fc2.forward(x)) // [n, classes]
    }
}
