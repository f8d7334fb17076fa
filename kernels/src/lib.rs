//! # atop-kernels
//!
//! The project's own CPU kernels, on plain `f32` slices so that they build
//! fast, optimize fully even in dev builds, and test without a tensor
//! library. The `atop` crate plugs them into burn's pure-Rust flex backend
//! through burn's backend-extension mechanism (`atop::kernels`).

pub mod conv2d;

pub use conv2d::{ConvGeometry, conv2d_backward, conv2d_bias_backward, conv2d_forward};
