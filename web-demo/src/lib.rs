//! `atop-web`: the browser demo (attack, purify and classify client-side).
//!
//! It uses the shared crate's models, transforms and attacks unchanged and
//! loads the trainer's artifacts as they are. The UI and its wasm bindings
//! are built under the browser-demo issue; until then this crate only pins
//! its place in the workspace and checks that the shared crate builds for it.

pub use atop;
