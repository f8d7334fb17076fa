//! WideResNet (Zagoruyko & Komodakis) in RobustBench's PyTorch layout
//! (`block1.layer.0.bn1.weight`, `convShortcut.weight`, `fc.weight`):
//! pre-activation blocks, three groups, WRN-28-10 by default.

use crate::ops::{conv2d_module, relu};
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::Normalization;
use super::resnet::conv;
use crate::error::{AtopError, Result};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WideResNetConfig {
    pub image_channels: usize,
    pub num_classes: usize,
    /// Total depth; (depth - 4) must be divisible by 6.
    pub depth: usize,
    pub widen_factor: usize,
    pub normalization: Normalization,
}

impl WideResNetConfig {
    /// WRN-28-10 for CIFAR-10.
    pub fn wrn_28_10() -> Self {
        Self {
            image_channels: 3,
            num_classes: 10,
            depth: 28,
            widen_factor: 10,
            normalization: Normalization::cifar10(),
        }
    }

    /// A model with burn's default initialisation, its parameters drawn here
    /// (`crate::model::init_drawn`).
    pub fn init(&self, device: &Device) -> Result<WideResNet> {
        crate::model::init_drawn(|| self.init_unlocked(device))
    }

    fn init_unlocked(&self, device: &Device) -> Result<WideResNet> {
        self.normalization.validate(self.image_channels)?;
        if self.depth < 10 || !(self.depth - 4).is_multiple_of(6) || self.widen_factor == 0 {
            return Err(AtopError::config(
                "classifier.depth",
                format!(
                    "WideResNet needs depth = 6n + 4 (n >= 1) and widen_factor >= 1, got depth {} and widen_factor {}",
                    self.depth, self.widen_factor
                ),
            ));
        }
        if self.num_classes < 2 {
            return Err(AtopError::config(
                "classifier.num_classes",
                "needs at least 2 classes",
            ));
        }
        super::super::check_size("classifier.depth", self.depth, 1000)?;
        super::super::check_size("classifier.widen_factor", self.widen_factor, 64)?;
        super::super::check_size("classifier.num_classes", self.num_classes, 100_000)?;
        let n = (self.depth - 4) / 6;
        let k = self.widen_factor;
        let widths = [16, 16 * k, 32 * k, 64 * k];
        let group = |cin: usize, cout: usize, stride: usize| NetworkBlock {
            layer: (0..n)
                .map(|i| {
                    let (cin, stride) = if i == 0 { (cin, stride) } else { (cout, 1) };
                    WideBasicBlock::new(cin, cout, stride, device)
                })
                .collect(),
        };
        Ok(WideResNet {
            conv1: conv(self.image_channels, widths[0], 3, 1, device),
            block1: group(widths[0], widths[1], 1),
            block2: group(widths[1], widths[2], 2),
            block3: group(widths[2], widths[3], 2),
            bn1: BatchNormConfig::new(widths[3]).init(device),
            fc: LinearConfig::new(widths[3], self.num_classes).init(device),
            normalization: self.normalization.clone(),
            image_channels: self.image_channels,
        })
    }
}

/// Pre-activation wide block: BN-ReLU-conv-BN-ReLU-conv plus a (projected)
/// shortcut.
#[derive(Module, Debug)]
pub struct WideBasicBlock {
    pub bn1: BatchNorm,
    pub conv1: Conv2d,
    pub bn2: BatchNorm,
    pub conv2: Conv2d,
    pub conv_shortcut: Option<Conv2d>,
}

impl WideBasicBlock {
    fn new(cin: usize, cout: usize, stride: usize, device: &Device) -> Self {
        Self {
            bn1: BatchNormConfig::new(cin).init(device),
            conv1: conv(cin, cout, 3, stride, device),
            bn2: BatchNormConfig::new(cout).init(device),
            conv2: conv(cout, cout, 3, 1, device),
            conv_shortcut: (cin != cout).then(|| conv(cin, cout, 1, stride, device)),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let pre = relu(self.bn1.forward(x.clone()));
        let out = relu(self.bn2.forward(conv2d_module(&self.conv1, pre.clone())));
        let out = conv2d_module(&self.conv2, out);
        // As in the reference: a projected shortcut reads the pre-activated
        // input, an identity shortcut the raw input.
        let shortcut = match &self.conv_shortcut {
            Some(proj) => conv2d_module(proj, pre),
            None => x,
        };
        out + shortcut
    }
}

#[derive(Module, Debug)]
pub struct NetworkBlock {
    pub layer: Vec<WideBasicBlock>,
}

#[derive(Module, Debug)]
pub struct WideResNet {
    pub conv1: Conv2d,
    pub block1: NetworkBlock,
    pub block2: NetworkBlock,
    pub block3: NetworkBlock,
    pub bn1: BatchNorm,
    pub fc: Linear,
    #[module(skip)]
    pub normalization: Normalization,
    pub image_channels: usize,
}

impl WideResNet {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.normalization.apply(x);
        let mut x = conv2d_module(&self.conv1, x); // [n, 16, h, w]
        for block in self
            .block1
            .layer
            .iter()
            .chain(&self.block2.layer)
            .chain(&self.block3.layer)
        {
            x = block.forward(x);
        } // [n, 64k, h/4, w/4]
        let x = relu(self.bn1.forward(x));
        let x = adaptive_avg_pool2d(x, [1, 1]).flatten(1, 3); // [n, 64k]
        self.fc.forward(x) // [n, classes]
    }
}
