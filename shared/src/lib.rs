//! # atop
//!
//! AToP (Adversarial Training on Purification, Lin et al., ICLR 2024) as a
//! library shared by the native trainer and the browser demo:
//!
//! * [`transform`]: the random transforms RT1, RT2, RT3 (noise + grid masks);
//! * [`model`]: classifiers, the GAN purifier (DeepFillv2-style inpainter),
//!   the AE purifier (conv U-Net) and the SN-PatchGAN discriminator;
//! * [`defense`]: transform -> purifier -> classifier as one differentiable
//!   pipeline;
//! * [`artifact`]: one `.safetensors` file with weights and a JSON manifest;
//! * [`demo`]: the browser demo's one-image experiment and its permalink,
//!   shared with the trainer's `atop attack`;
//! * [`kernels`]: the models' convolution, which runs our own kernel
//!   (crate `atop-kernels`) on burn's flex backend and burn's op elsewhere.
//!
//! Images are `[n, c, h, w]` f32 tensors in [0,1] everywhere in the public
//! API. Nothing here touches the file system or the clock; randomness comes
//! from generators the caller seeds ([`rng`]).

pub mod artifact;
pub mod attack;
pub mod defense;
pub mod demo;
pub mod error;
pub mod formats;
pub mod host;
pub mod model;
// burn marks its LibTorch backend deprecated, but it works in 0.22.1 and is
// the one path to CUDA here (docs/design.md); `ops` names it, in its
// `torch` module and in the backend-extension macros' expansions.
#[cfg_attr(feature = "tch", allow(deprecated))]
pub mod ops;
pub mod params;
pub mod rng;
pub mod transform;

pub use error::{AtopError, Result};
