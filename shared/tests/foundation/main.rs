//! Tests of the shared crate: transforms, models, defense, artifact.

mod artifact;
mod attacks;
mod autoattack;
mod common;
mod defense;
mod demo;
mod hostile;
mod models;
mod parity;
mod python_golden;
mod schedules;
mod stadv;
mod transform;
