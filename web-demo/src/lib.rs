//! `atop-web`: the browser demo (attack, purify and classify client-side).
pub use atop;
