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
pub use purifier::{Purified, Purifier, PurifierConfig};
