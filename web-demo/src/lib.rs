//! `atop-web`: the browser demo. Pick an image, attack the bare classifier
//! or the whole AToP defense, and see the image purified and classified, all
//! client-side: burn's WebGPU backend when the browser has an adapter, its
//! CPU backend compiled to wasm otherwise. The experiment is the shared
//! crate's [`atop::demo`], so the trainer's `atop attack` replays any
//! permalink the page makes.

pub use atop;

pub mod pixels;

#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(target_arch = "wasm32")]
mod controls;
#[cfg(target_arch = "wasm32")]
mod dom;
#[cfg(target_arch = "wasm32")]
mod run;
#[cfg(target_arch = "wasm32")]
mod scorecard;
#[cfg(target_arch = "wasm32")]
mod state;
