//! `atop-web`: the browser demo (attack, purify and classify client-side).
//!
//! It uses the shared crate's models, transforms and attacks unchanged and
//! loads the trainer's artifacts as they are. The UI and its wasm bindings
//! are built under the browser-demo issue; so far this crate holds the
//! permalink format (pure Rust, tested natively).

pub use atop;

pub mod permalink;
