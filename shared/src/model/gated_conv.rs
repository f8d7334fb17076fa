//! Gated convolution (Yu et al., "Free-Form Image Inpainting with Gated
//! Convolution"): one conv produces 2*cout channels, split into features and
//! gates, output = act(features) * sigmoid(gates). A layer without activation
//! (the to-image layer) is a plain convolution.

use crate::ops::{FeatureActivation, conv2d_module, gated_activation};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use serde::{Deserialize, Serialize};

/// The activation applied to the feature half of a gated convolution.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateActivation {
    Elu,
    Relu,
    /// No activation and no gate: a plain convolution.
    None,
}

/// A gated 2-D convolution. The inner conv is named `conv` so parameters read
/// `....conv.weight`, as in the public PyTorch DeepFillv2.
#[derive(Module, Debug)]
pub struct GatedConv2d {
    pub conv: Conv2d,
    pub channels_out: usize,
    #[module(skip)]
    pub activation: GateActivation,
}

impl GatedConv2d {
    /// `padding` follows the "same" rule for odd kernels: dilation*(k-1)/2.
    pub fn new(
        channels_in: usize,
        channels_out: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
        activation: GateActivation,
        device: &burn::tensor::Device,
    ) -> Self {
        let gated = activation != GateActivation::None;
        let conv_out = if gated {
            2 * channels_out
        } else {
            channels_out
        };
        let pad = dilation * (kernel - 1) / 2;
        // Activated layers: Kaiming-uniform on fan-in with gain 2.5. The
        // reference's fan-out/ReLU-gain init lets ELU(features)*sigmoid(gates)
        // shrink the signal several-fold per layer; through the ~30 gated
        // layers the gradients reaching the generator were ~1e-14 and it did
        // not learn (see the purifiers_learn_to_reconstruct_a_batch test).
        // Gain 2.5 keeps the signal from vanishing through the gates
        // (E[elu(f)^2] * E[sigmoid(g)^2] is about 0.6 * 0.25 of var(f) for
        // small activations) without letting it explode.
        let initializer = if gated {
            Initializer::KaimingUniform {
                gain: 2.5,
                fan_out_only: false,
            }
        } else {
            Conv2dConfig::new([1, 1], [1, 1]).initializer
        };
        let mut conv = Conv2dConfig::new([channels_in, conv_out], [kernel, kernel])
            .with_stride([stride, stride])
            .with_dilation([dilation, dilation])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_initializer(initializer)
            .init(device);
        if gated {
            // Zero biases, as DeepFillv2. Made by an initializer (not by
            // mapping the default bias to zeros), so that they are trainable
            // parameters: a mapped tensor loses `require_grad`, and the gated
            // layers' biases were never trained until a checkpoint reload
            // made them trainable again (which is why resumed runs diverged).
            conv.bias = Some(Initializer::Zeros.init([conv_out], device));
        }
        Self {
            conv,
            channels_out,
            activation,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = conv2d_module(&self.conv, x); // [n, 2*cout or cout, h', w']
        if self.activation == GateActivation::None {
            return y;
        }
        let activation = match self.activation {
            GateActivation::Relu => FeatureActivation::Relu,
            _ => FeatureActivation::Elu,
        };
        gated_activation(y, activation) // [n, cout, h', w']
    }
}

/// Nearest-neighbour x2 upsampling followed by a 3x3 gated convolution.
#[derive(Module, Debug)]
pub struct GatedUpConv {
    pub conv: GatedConv2d,
}

impl GatedUpConv {
    pub fn new(channels_in: usize, channels_out: usize, device: &burn::tensor::Device) -> Self {
        Self {
            conv: GatedConv2d::new(
                channels_in,
                channels_out,
                3,
                1,
                1,
                GateActivation::Elu,
                device,
            ),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(upsample_nearest2(x))
    }
}

/// Nearest-neighbour x2 upsampling, `[n, c, h, w] -> [n, c, 2h, 2w]`.
pub fn upsample_nearest2(x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    interpolate(
        x,
        InterpolateOptions {
            mode: InterpolateMode::Nearest,
            align_corners: false,
            output_size: Some([2 * h, 2 * w]),
            scale_factor: None,
        },
    )
}

/// A stride-2 gated conv followed by a stride-1 gated conv.
#[derive(Module, Debug)]
pub struct GatedDownBlock {
    pub conv1_downsample: GatedConv2d,
    pub conv2: GatedConv2d,
}

impl GatedDownBlock {
    pub fn new(cin: usize, cout: usize, hidden: usize, device: &burn::tensor::Device) -> Self {
        Self {
            conv1_downsample: GatedConv2d::new(cin, hidden, 3, 2, 1, GateActivation::Elu, device),
            conv2: GatedConv2d::new(hidden, cout, 3, 1, 1, GateActivation::Elu, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv2.forward(self.conv1_downsample.forward(x))
    }
}

/// An x2 upsampling gated conv followed by a stride-1 gated conv.
#[derive(Module, Debug)]
pub struct GatedUpBlock {
    pub conv1_upsample: GatedUpConv,
    pub conv2: GatedConv2d,
}

impl GatedUpBlock {
    pub fn new(cin: usize, cout: usize, hidden: usize, device: &burn::tensor::Device) -> Self {
        Self {
            conv1_upsample: GatedUpConv::new(cin, hidden, device),
            conv2: GatedConv2d::new(hidden, cout, 3, 1, 1, GateActivation::Elu, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv2.forward(self.conv1_upsample.forward(x))
    }
}
