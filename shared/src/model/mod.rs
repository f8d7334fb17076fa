//! The networks: classifiers, the two purifiers and the GAN discriminator.

pub mod autoencoder;
pub mod classifier;
pub mod contextual_attention;
pub mod discriminator;
pub mod gated_conv;
pub mod inpainter;
pub mod purifier;
pub mod purifier_io;

pub use autoencoder::{AutoencoderConfig, ConvAutoencoder};
pub use classifier::{Classifier, ClassifierConfig, Normalization};
pub use contextual_attention::{ContextualAttentionConfig, contextual_attention};
pub use discriminator::{Discriminator, DiscriminatorConfig};
pub use gated_conv::{GateActivation, GatedConv2d};
pub use inpainter::{InpaintGenerator, InpainterConfig, InpainterOutput};
pub use purifier::{IdentityConfig, IdentityPurifier, Purified, Purifier, PurifierConfig};

/// Builds a model and draws all its parameters now, in field order, under
/// [`crate::rng::backend_draws`], instead of lazily at their first use
/// outside any lock: a seed set before `init` then decides the weights
/// whatever other threads draw later. Every model's `init` goes through it.
pub(crate) fn init_drawn<M: burn::module::Module>(
    build: impl FnOnce() -> crate::error::Result<M>,
) -> crate::error::Result<M> {
    crate::rng::backend_draws(|| build().map(materialize))
}

/// Forces burn's lazily initialised parameters to draw their values now.
fn materialize<M: burn::module::Module>(module: M) -> M {
    struct Touch;
    impl burn::module::ModuleVisitor for Touch {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<D>>,
        ) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
    module
}

/// Refuses a model size past `max`. Configurations come from artifacts
/// and files as well as from code, and a hostile width must be an error,
/// not an allocation of gigabytes (batch-norm statistics are allocated at
/// once). Every bound is far above the paper's models.
pub(crate) fn check_size(field: &str, value: usize, max: usize) -> crate::error::Result<()> {
    if value > max {
        return Err(crate::error::AtopError::config(
            field,
            format!("{value} is over the limit of {max}"),
        ));
    }
    Ok(())
}
