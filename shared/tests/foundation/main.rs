//! Tests of the shared crate: transforms, models, defense, artifact.

mod apgd;
mod artifact;
mod attacks;
mod common;
mod defense;
mod models;
mod transform;
