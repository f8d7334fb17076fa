//! ResNet-18 with the CIFAR stem (3x3 conv, no max-pool), in the layout of the
//! common PyTorch CIFAR ResNet (`layer1.0.conv1.weight`, `shortcut.0.weight`,
//! `linear.weight`).

use crate::ops::{conv2d_module, relu};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::Normalization;
use crate::error::{AtopError, Result};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResNet18Config {
    pub image_channels: usize,
    pub num_classes: usize,
    /// Width of the first stage (64 in the standard network).
    pub width: usize,
    pub normalization: Normalization,
}

impl ResNet18Config {
    pub fn cifar10() -> Self {
        Self {
            image_channels: 3,
            num_classes: 10,
            width: 64,
            normalization: Normalization::cifar10(),
        }
    }

    /// A model with burn's default initialisation, its parameters drawn here
    /// (`crate::model::init_drawn`).
    pub fn init(&self, device: &Device) -> Result<ResNet18> {
        crate::model::init_drawn(|| self.init_unlocked(device))
    }

    fn init_unlocked(&self, device: &Device) -> Result<ResNet18> {
        self.normalization.validate(self.image_channels)?;
        if self.num_classes < 2 || self.width == 0 {
            return Err(AtopError::config(
                "classifier",
                "needs at least 2 classes and a positive width",
            ));
        }
        super::super::check_size("classifier.width", self.width, 2048)?;
        super::super::check_size("classifier.num_classes", self.num_classes, 100_000)?;
        let w = self.width;
        let stage = |cin: usize, cout: usize, stride: usize| {
            vec![
                BasicBlock::new(cin, cout, stride, device),
                BasicBlock::new(cout, cout, 1, device),
            ]
        };
        Ok(ResNet18 {
            conv1: conv(self.image_channels, w, 3, 1, device),
            bn1: BatchNormConfig::new(w).init(device),
            layer1: stage(w, w, 1),
            layer2: stage(w, 2 * w, 2),
            layer3: stage(2 * w, 4 * w, 2),
            layer4: stage(4 * w, 8 * w, 2),
            linear: LinearConfig::new(8 * w, self.num_classes).init(device),
            normalization: self.normalization.clone(),
            image_channels: self.image_channels,
        })
    }
}

pub(super) fn conv(cin: usize, cout: usize, k: usize, stride: usize, device: &Device) -> Conv2d {
    let p = (k - 1) / 2;
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .init(device)
}

#[derive(Module, Debug)]
pub struct BasicBlock {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    /// Projection shortcut (1x1 conv + BN) when the shape changes.
    pub shortcut_conv: Option<Conv2d>,
    pub shortcut_bn: Option<BatchNorm>,
}

impl BasicBlock {
    fn new(cin: usize, cout: usize, stride: usize, device: &Device) -> Self {
        let project = stride != 1 || cin != cout;
        Self {
            conv1: conv(cin, cout, 3, stride, device),
            bn1: BatchNormConfig::new(cout).init(device),
            conv2: conv(cout, cout, 3, 1, device),
            bn2: BatchNormConfig::new(cout).init(device),
            shortcut_conv: project.then(|| conv(cin, cout, 1, stride, device)),
            shortcut_bn: project.then(|| BatchNormConfig::new(cout).init(device)),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = relu(self.bn1.forward(conv2d_module(&self.conv1, x.clone())));
        let out = self.bn2.forward(conv2d_module(&self.conv2, out));
        let shortcut = match (&self.shortcut_conv, &self.shortcut_bn) {
            (Some(conv), Some(bn)) => bn.forward(conv2d_module(conv, x)),
            _ => x,
        };
        relu(out + shortcut)
    }
}

#[derive(Module, Debug)]
pub struct ResNet18 {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub layer1: Vec<BasicBlock>,
    pub layer2: Vec<BasicBlock>,
    pub layer3: Vec<BasicBlock>,
    pub layer4: Vec<BasicBlock>,
    pub linear: Linear,
    #[module(skip)]
    pub normalization: Normalization,
    pub image_channels: usize,
}

impl ResNet18 {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.normalization.apply(x);
        let mut x = relu(self.bn1.forward(conv2d_module(&self.conv1, x))); // [n, w, h, w]
        for block in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            x = block.forward(x);
        } // [n, 8w, h/8, w/8]
        let x = adaptive_avg_pool2d(x, [1, 1]).flatten(1, 3); // [n, 8w]
        self.linear.forward(x) // [n, classes]
    }
}
