//! # atop-kernels
//!
//! The project's own CPU kernels (a 2-D convolution with both gradients, the
//! gated convolution's fused activation), on plain `f32` slices so that they build
//! fast, optimize fully even in dev builds, and test without a tensor
//! library. The `atop` crate plugs them into burn's pure-Rust flex backend
//! through burn's backend-extension mechanism (`atop::ops`).

pub mod conv2d;
mod direct;
pub mod gate;

pub use conv2d::{
    Activation, ConvGeometry, ConvMethod, conv2d_backward, conv2d_backward_with,
    conv2d_bias_backward, conv2d_forward, conv2d_forward_activated, conv2d_forward_with,
    relu_output_grad,
};
pub use direct::available as direct_available;
pub use gate::{FeatureActivation, GateShape, gated_backward, gated_forward};
