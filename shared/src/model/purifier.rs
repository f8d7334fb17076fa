//! The purifier g: either purifier kind behind one type, so the defense,
//! the trainer and the browser do not care which one they hold.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::autoencoder::{AutoencoderConfig, ConvAutoencoder};
use super::inpainter::{InpaintGenerator, InpainterConfig};
use crate::error::Result;

/// Which purifier, with its configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum PurifierConfig {
    /// GAN-based: the DeepFillv2-style inpainting generator.
    Gan(InpainterConfig),
    /// AE-based: the conv U-Net autoencoder.
    Ae(AutoencoderConfig),
    /// No purification: the transformed image goes to the classifier as it
    /// is. With a classifier trained on transform outputs it measures how
    /// much the transform itself leaves of the image's information.
    Identity(IdentityConfig),
}

/// The identity purifier's configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    pub image_channels: usize,
}

/// The identity purifier: no weights.
#[derive(Module, Debug)]
pub struct IdentityPurifier {
    pub image_channels: usize,
}

impl PurifierConfig {
    pub fn image_channels(&self) -> usize {
        match self {
            PurifierConfig::Gan(c) => c.image_channels,
            PurifierConfig::Ae(c) => c.image_channels,
            PurifierConfig::Identity(c) => c.image_channels,
        }
    }

    /// A model with burn's default initialisation (each variant's own `init`
    /// draws its parameters, see `crate::model::init_drawn`).
    pub fn init(&self, device: &Device) -> Result<Purifier> {
        Ok(match self {
            PurifierConfig::Gan(c) => Purifier::Gan(c.init(device)?),
            PurifierConfig::Ae(c) => Purifier::Ae(c.init(device)?),
            PurifierConfig::Identity(c) => Purifier::Identity(IdentityPurifier {
                image_channels: c.image_channels,
            }),
        })
    }
}

/// A purifier of either kind.
// A program holds one or two of these; boxing variants buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Purifier {
    Gan(InpaintGenerator),
    Ae(ConvAutoencoder),
    Identity(IdentityPurifier),
}

/// What a purifier returns, in [0,1] over the whole frame.
#[derive(Clone, Debug)]
pub struct Purified {
    /// The purified image the classifier sees.
    pub image: Tensor<4>,
    /// The inpainter's coarse stage (GAN only), used by its training loss.
    pub coarse: Option<Tensor<4>>,
}

impl Purifier {
    /// Rebuilds a clean image from a transformed one (`image` in [0,1],
    /// holes where `mask` = 1).
    pub fn purify(&self, image: Tensor<4>, mask: Tensor<4>) -> Result<Purified> {
        match self {
            Purifier::Gan(g) => {
                let out = g.forward(image, mask)?;
                Ok(Purified {
                    image: out.refined,
                    coarse: Some(out.coarse),
                })
            }
            Purifier::Ae(ae) => Ok(Purified {
                image: ae.forward(image, mask)?,
                coarse: None,
            }),
            Purifier::Identity(_) => Ok(Purified {
                image,
                coarse: None,
            }),
        }
    }
}
