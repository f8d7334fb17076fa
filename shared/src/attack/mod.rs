//! Adversarial attacks and the gradient modes for randomized defenses
//! (docs/method.md section 6).
//!
//! An attack sees its victim as an [`AttackTarget`]: a differentiable
//! function from images to logits that may draw randomness from the caller's
//! generator. How the attack's gradient is computed through a randomized
//! defense is the [`GradientMode`]; every report names it.

mod apgd;
mod autoattack;
mod common;
mod cw;
mod fab;
mod pgd;
mod score;
mod square;
mod stadv;
mod target;

pub use apgd::{ApgdConfig, ApgdLoss, ApgdRun, apgd, apgd_targeted};
pub use autoattack::{
    AutoAttackComponent, AutoAttackConfig, AutoAttackResult, AutoAttackVersion, autoattack,
};
pub use common::{
    AttackLoss, DEFAULT_EOT_CHUNK_VALUES, IterateSelection, Norm, ONE_DRAW_PER_PASS,
    eot_chunk_values, gradient_health, per_sample_loss, project, set_eot_chunk_values,
};
pub use cw::{CwConfig, carlini_wagner_l2};
pub use fab::{FabConfig, fab_targeted, project_onto_hyperplane_in_box};
pub use pgd::{PgdConfig, PgdLoss, PgdRun, fgsm, pgd};
pub use score::{RandomizedScore, score_randomized};
pub use square::{SquareConfig, square};
pub use stadv::{StadvConfig, flow_smoothness, stadv, stadv_flow_gradient, warp_by_flow};
pub use target::{
    AttackTarget, ClassifierTarget, DefenseTarget, GradientMode, TransformOnlyTarget,
};
