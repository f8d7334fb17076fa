//! The GAN purifier's generator: a DeepFillv2-style two-stage inpainter
//! (docs/method.md section 4). Parameter names follow the public PyTorch DeepFillv2
//! (`stage1.conv1.conv.weight`, `stage2.b2_conv_bn1.conv.bias`, ...).

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::contextual_attention::{ContextualAttentionConfig, contextual_attention};
use super::gated_conv::{GateActivation, GatedConv2d, GatedDownBlock, GatedUpBlock};
use super::purifier_io::{PurifierInput, signed_to_unit};
use crate::error::{AtopError, Result};

/// Configuration of the inpainting generator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InpainterConfig {
    /// Image channels (3 for RGB, 1 for grayscale); the input has 2 more.
    pub image_channels: usize,
    /// Base width. 48 is the paper's generator at 256x256 (about 4.05M
    /// parameters); 16-24 suits 28x28 and 32x32 data on a CPU.
    pub cnum: usize,
    /// Dilations of the coarse stage's seven bottleneck convolutions.
    pub coarse_dilations: [usize; 7],
    /// Dilations of the refine stage's five hallucination convolutions.
    pub refine_dilations: [usize; 5],
    pub attention: ContextualAttentionConfig,
}

impl Default for InpainterConfig {
    fn default() -> Self {
        Self {
            image_channels: 3,
            cnum: 48,
            coarse_dilations: [1, 2, 4, 8, 16, 1, 1],
            refine_dilations: [1, 2, 4, 8, 16],
            attention: ContextualAttentionConfig::default(),
        }
    }
}

impl InpainterConfig {
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.image_channels, 1 | 3) {
            return Err(AtopError::config(
                "purifier.image_channels",
                format!("must be 1 or 3, got {}", self.image_channels),
            ));
        }
        if self.cnum < 4 || !self.cnum.is_multiple_of(4) {
            return Err(AtopError::config(
                "purifier.cnum",
                format!("must be a multiple of 4 and at least 4, got {}", self.cnum),
            ));
        }
        super::check_size("purifier.cnum", self.cnum, 1024)?;
        if self
            .coarse_dilations
            .iter()
            .chain(&self.refine_dilations)
            .any(|&d| d == 0)
        {
            return Err(AtopError::config(
                "purifier.dilations",
                "dilations must be >= 1",
            ));
        }
        Ok(())
    }

    /// A model with burn's default initialisation, its parameters drawn here
    /// (`crate::model::init_drawn`).
    pub fn init(&self, device: &Device) -> Result<InpaintGenerator> {
        crate::model::init_drawn(|| self.init_unlocked(device))
    }

    fn init_unlocked(&self, device: &Device) -> Result<InpaintGenerator> {
        self.validate()?;
        Ok(InpaintGenerator {
            stage1: CoarseStage::new(self, device),
            stage2: RefineStage::new(self, device),
            attention: self.attention.clone(),
            image_channels: self.image_channels,
        })
    }
}

fn gconv(cin: usize, cout: usize, k: usize, dilation: usize, device: &Device) -> GatedConv2d {
    GatedConv2d::new(cin, cout, k, 1, dilation, GateActivation::Elu, device)
}

/// Coarse stage: 5x5 stem, two downsampling blocks, dilated bottleneck, two
/// upsampling blocks, to-image conv, tanh.
#[derive(Module, Debug)]
pub struct CoarseStage {
    pub conv1: GatedConv2d,
    pub down_block1: GatedDownBlock,
    pub down_block2: GatedDownBlock,
    pub conv_bn1: GatedConv2d,
    pub conv_bn2: GatedConv2d,
    pub conv_bn3: GatedConv2d,
    pub conv_bn4: GatedConv2d,
    pub conv_bn5: GatedConv2d,
    pub conv_bn6: GatedConv2d,
    pub conv_bn7: GatedConv2d,
    pub up_block1: GatedUpBlock,
    pub up_block2: GatedUpBlock,
    pub conv_to_rgb: GatedConv2d,
}

impl CoarseStage {
    fn new(cfg: &InpainterConfig, device: &Device) -> Self {
        let c = cfg.cnum;
        let d = cfg.coarse_dilations;
        let bn = |i: usize| gconv(2 * c, 2 * c, 3, d[i], device);
        Self {
            conv1: gconv(cfg.image_channels + 2, c / 2, 5, 1, device),
            down_block1: GatedDownBlock::new(c / 2, c, c, device),
            down_block2: GatedDownBlock::new(c, 2 * c, 2 * c, device),
            conv_bn1: bn(0),
            conv_bn2: bn(1),
            conv_bn3: bn(2),
            conv_bn4: bn(3),
            conv_bn5: bn(4),
            conv_bn6: bn(5),
            conv_bn7: bn(6),
            up_block1: GatedUpBlock::new(2 * c, c, c, device),
            up_block2: GatedUpBlock::new(c, c / 4, c / 2, device),
            conv_to_rgb: GatedConv2d::new(
                c / 4,
                cfg.image_channels,
                3,
                1,
                1,
                GateActivation::None,
                device,
            ),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.conv1.forward(x); // [n, c/2, H, W]
        let x = self.down_block1.forward(x); // [n, c, H/2, W/2]
        let x = self.down_block2.forward(x); // [n, 2c, H/4, W/4]
        let x = [
            &self.conv_bn1,
            &self.conv_bn2,
            &self.conv_bn3,
            &self.conv_bn4,
            &self.conv_bn5,
            &self.conv_bn6,
            &self.conv_bn7,
        ]
        .iter()
        .fold(x, |x, layer| layer.forward(x)); // [n, 2c, H/4, W/4]
        let x = self.up_block1.forward(x); // [n, c, H/2, W/2]
        let x = self.up_block2.forward(x); // [n, c/4, H, W]
        self.conv_to_rgb.forward(x).tanh() // [n, C, H, W] in [-1, 1]
    }
}

/// Refine stage: a dilated hallucination branch (b1) and a contextual
/// attention branch (b2), concatenated, then two gated convs, two upsampling
/// blocks, to-image conv, tanh.
#[derive(Module, Debug)]
pub struct RefineStage {
    pub b1_conv1: GatedConv2d,
    pub b1_down_block1: GatedDownBlock,
    pub b1_down_block2: GatedDownBlock,
    pub b1_conv_bn1: GatedConv2d,
    pub b1_conv_bn2: GatedConv2d,
    pub b1_conv_bn3: GatedConv2d,
    pub b1_conv_bn4: GatedConv2d,
    pub b1_conv_bn5: GatedConv2d,
    pub b2_conv1: GatedConv2d,
    pub b2_down_block1: GatedDownBlock,
    pub b2_down_block2: GatedDownBlock,
    pub b2_conv_bn1: GatedConv2d,
    pub b2_conv_bn4: GatedConv2d,
    pub b2_conv_bn5: GatedConv2d,
    pub conv_bn6: GatedConv2d,
    pub conv_bn7: GatedConv2d,
    pub up_block1: GatedUpBlock,
    pub up_block2: GatedUpBlock,
    pub conv_to_rgb: GatedConv2d,
}

impl RefineStage {
    fn new(cfg: &InpainterConfig, device: &Device) -> Self {
        let c = cfg.cnum;
        let d = cfg.refine_dilations;
        let ch = cfg.image_channels;
        let b1 = |i: usize| gconv(2 * c, 2 * c, 3, d[i], device);
        Self {
            b1_conv1: gconv(ch, c / 2, 5, 1, device),
            b1_down_block1: GatedDownBlock::new(c / 2, c, c / 2, device),
            b1_down_block2: GatedDownBlock::new(c, 2 * c, c, device),
            b1_conv_bn1: b1(0),
            b1_conv_bn2: b1(1),
            b1_conv_bn3: b1(2),
            b1_conv_bn4: b1(3),
            b1_conv_bn5: b1(4),
            b2_conv1: gconv(ch, c / 2, 5, 1, device),
            b2_down_block1: GatedDownBlock::new(c / 2, c, c / 2, device),
            b2_down_block2: GatedDownBlock::new(c, 2 * c, 2 * c, device),
            b2_conv_bn1: GatedConv2d::new(2 * c, 2 * c, 3, 1, 1, GateActivation::Relu, device),
            b2_conv_bn4: gconv(2 * c, 2 * c, 3, 1, device),
            b2_conv_bn5: gconv(2 * c, 2 * c, 3, 1, device),
            conv_bn6: gconv(4 * c, 2 * c, 3, 1, device),
            conv_bn7: gconv(2 * c, 2 * c, 3, 1, device),
            up_block1: GatedUpBlock::new(2 * c, c, c, device),
            up_block2: GatedUpBlock::new(c, c / 4, c / 2, device),
            conv_to_rgb: GatedConv2d::new(c / 4, ch, 3, 1, 1, GateActivation::None, device),
        }
    }

    fn forward(
        &self,
        x: Tensor<4>,
        mask: Tensor<4>,
        attention: &ContextualAttentionConfig,
    ) -> Result<Tensor<4>> {
        // Hallucination branch.
        let h = self.b1_conv1.forward(x.clone()); // [n, c/2, H, W]
        let h = self.b1_down_block1.forward(h); // [n, c, H/2, W/2]
        let h = self.b1_down_block2.forward(h); // [n, 2c, H/4, W/4]
        let h = [
            &self.b1_conv_bn1,
            &self.b1_conv_bn2,
            &self.b1_conv_bn3,
            &self.b1_conv_bn4,
            &self.b1_conv_bn5,
        ]
        .iter()
        .fold(h, |h, layer| layer.forward(h));

        // Attention branch.
        let a = self.b2_conv1.forward(x); // [n, c/2, H, W]
        let a = self.b2_down_block1.forward(a); // [n, c, H/2, W/2]
        let a = self.b2_down_block2.forward(a); // [n, 2c, H/4, W/4]
        let a = self.b2_conv_bn1.forward(a);
        let a = contextual_attention(a, mask, attention)?; // [n, 2c, H/4, W/4]
        let a = self.b2_conv_bn4.forward(a);
        let a = self.b2_conv_bn5.forward(a);

        let x = Tensor::cat(vec![h, a], 1); // [n, 4c, H/4, W/4]
        let x = self.conv_bn6.forward(x); // [n, 2c, H/4, W/4]
        let x = self.conv_bn7.forward(x);
        let x = self.up_block1.forward(x); // [n, c, H/2, W/2]
        let x = self.up_block2.forward(x); // [n, c/4, H, W]
        Ok(self.conv_to_rgb.forward(x).tanh()) // [n, C, H, W] in [-1, 1]
    }
}

/// The DeepFillv2-style inpainting generator.
#[derive(Module, Debug)]
pub struct InpaintGenerator {
    pub stage1: CoarseStage,
    pub stage2: RefineStage,
    #[module(skip)]
    pub attention: ContextualAttentionConfig,
    pub image_channels: usize,
}

/// Both stages' outputs in [0,1], over the whole frame.
#[derive(Clone, Debug)]
pub struct InpainterOutput {
    /// Coarse result x1.
    pub coarse: Tensor<4>,
    /// Refined result x2: the purifier's output.
    pub refined: Tensor<4>,
}

impl InpaintGenerator {
    /// Inpaints a transformed image (`image` in [0,1] with holes where
    /// `mask` = 1). Sizes that are not multiples of 8 are padded internally
    /// (the padding counts as hole) and cropped back.
    pub fn forward(&self, image: Tensor<4>, mask: Tensor<4>) -> Result<InpainterOutput> {
        let input = PurifierInput::new(image, mask, self.image_channels, 8)?;
        let masked = input.masked_signed(); // [n, C, H', W'] in [-1, 1], holes 0
        let x = input.network_input(); // [n, C+2, H', W']
        let x1 = self.stage1.forward(x); // [n, C, H', W']
        // Paste the coarse result into the holes only.
        let hole = input.mask.clone();
        let blended = x1.clone() * hole.clone() + masked * hole.neg().add_scalar(1.0);
        let x2 = self
            .stage2
            .forward(blended, input.mask.clone(), &self.attention)?;
        Ok(InpainterOutput {
            coarse: input.crop(signed_to_unit(x1)),
            refined: input.crop(signed_to_unit(x2)),
        })
    }
}
