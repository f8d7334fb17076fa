//! Classifiers. Each takes images in [0,1] and applies its own per-channel
//! normalisation (stored in its config and so in the artifact). AToP never
//! updates them.

mod resnet;
mod small_cnn;
mod wide_resnet;

pub use resnet::{BasicBlock, ResNet18, ResNet18Config};
pub use small_cnn::{SmallCnn, SmallCnnConfig};
pub use wide_resnet::{WideBasicBlock, WideResNet, WideResNetConfig};

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{AtopError, Result};

/// Per-channel normalisation `(x - mean) / std`, applied inside the classifier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// No-op normalisation for `channels` channels.
    pub fn identity(channels: usize) -> Self {
        Self {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// The usual CIFAR-10 statistics.
    pub fn cifar10() -> Self {
        Self {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2471, 0.2435, 0.2616],
        }
    }

    pub fn validate(&self, channels: usize) -> Result<()> {
        if self.mean.len() != channels || self.std.len() != channels {
            return Err(AtopError::config(
                "classifier.normalization",
                format!(
                    "needs {channels} means and stds, got {} and {}",
                    self.mean.len(),
                    self.std.len()
                ),
            ));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return Err(AtopError::config(
                "classifier.normalization",
                "means must be finite and stds finite and positive",
            ));
        }
        Ok(())
    }

    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let c = self.mean.len();
        let device = x.device();
        let mean =
            Tensor::<4>::from_data(TensorData::new(self.mean.clone(), [1, c, 1, 1]), &device);
        let std = Tensor::<4>::from_data(TensorData::new(self.std.clone(), [1, c, 1, 1]), &device);
        (x - mean) / std
    }
}

/// Which classifier architecture, with its configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "architecture", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ClassifierConfig {
    SmallCnn(SmallCnnConfig),
    #[serde(rename = "resnet18")]
    ResNet18(ResNet18Config),
    WideResnet(WideResNetConfig),
}

impl ClassifierConfig {
    pub fn image_channels(&self) -> usize {
        match self {
            ClassifierConfig::SmallCnn(c) => c.image_channels,
            ClassifierConfig::ResNet18(c) => c.image_channels,
            ClassifierConfig::WideResnet(c) => c.image_channels,
        }
    }

    pub fn num_classes(&self) -> usize {
        match self {
            ClassifierConfig::SmallCnn(c) => c.num_classes,
            ClassifierConfig::ResNet18(c) => c.num_classes,
            ClassifierConfig::WideResnet(c) => c.num_classes,
        }
    }

    /// A model with burn's default initialisation (each variant's own `init`
    /// draws its parameters, see `crate::model::init_drawn`).
    pub fn init(&self, device: &Device) -> Result<Classifier> {
        Ok(match self {
            ClassifierConfig::SmallCnn(c) => Classifier::SmallCnn(c.init(device)?),
            ClassifierConfig::ResNet18(c) => Classifier::ResNet18(c.init(device)?),
            ClassifierConfig::WideResnet(c) => Classifier::WideResnet(c.init(device)?),
        })
    }

    /// Renames from burn's parameter paths to the PyTorch layout this
    /// architecture's public weights use (applied as substring replacements).
    pub fn torch_renames(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            ClassifierConfig::SmallCnn(_) => &[],
            ClassifierConfig::ResNet18(_) => &[
                (".shortcut_conv.", ".shortcut.0."),
                (".shortcut_bn.", ".shortcut.1."),
            ],
            ClassifierConfig::WideResnet(_) => &[(".conv_shortcut.", ".convShortcut.")],
        }
    }
}

/// A classifier of any supported architecture.
// A program holds one or two of these; boxing variants buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Classifier {
    SmallCnn(SmallCnn),
    ResNet18(ResNet18),
    WideResnet(WideResNet),
}

impl Classifier {
    /// Logits `[n, classes]` for images `[n, c, h, w]` in [0,1].
    pub fn forward(&self, x: Tensor<4>) -> Result<Tensor<2>> {
        let channels = match self {
            Classifier::SmallCnn(m) => m.image_channels,
            Classifier::ResNet18(m) => m.image_channels,
            Classifier::WideResnet(m) => m.image_channels,
        };
        let dims = x.dims();
        if dims[1] != channels || dims[2] == 0 || dims[3] == 0 {
            return Err(AtopError::shape(
                "classifier input",
                format!("[n, {channels}, h, w]"),
                &dims,
            ));
        }
        match self {
            Classifier::SmallCnn(m) => m.forward(x),
            Classifier::ResNet18(m) => Ok(m.forward(x)),
            Classifier::WideResnet(m) => Ok(m.forward(x)),
        }
    }
}
