//! The defense: x -> RT -> purifier g -> frozen classifier f -> logits
//! (ATOP.md section 1), differentiable end to end on an autodiff device.
//!
//! The classifier sees the purifier's output over the WHOLE frame (not an
//! inpainting composite that keeps the noisy kept pixels). With RT3 each pass
//! purifies its own masked copy and the output takes pass k's pixels inside
//! mask k; the masks partition the frame, so every pixel comes from one pass.

use burn::module::Module;
use burn::tensor::Tensor;
use rand::Rng;

use crate::error::{AtopError, Result};
use crate::model::{Classifier, Purifier};
use crate::transform::{TransformConfig, TransformDraw, TransformKind, TransformedImage};

/// Transform, purifier and classifier as one model.
#[derive(Module, Debug)]
pub struct Defense {
    pub purifier: Purifier,
    pub classifier: Classifier,
    #[module(skip)]
    pub transform: TransformConfig,
}

/// Everything one pass through the defense produced.
#[derive(Clone, Debug)]
pub struct DefenseOutput {
    /// Classifier logits on the purified images, `[n, classes]`.
    pub logits: Tensor<2>,
    /// The transform's output per purifier pass (noised and masked image, mask).
    pub transformed: Vec<TransformedImage>,
    /// The purified images `[n, c, h, w]` in [0,1] the classifier saw.
    pub purified: Tensor<4>,
    /// The GAN purifier's coarse output per pass (empty for the AE).
    pub coarse: Vec<Tensor<4>>,
}

impl Defense {
    pub fn new(transform: TransformConfig, purifier: Purifier, classifier: Classifier) -> Self {
        Self {
            purifier,
            classifier,
            transform,
        }
    }

    /// Draws the transform's randomness for a batch of shape `dims`.
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R, dims: [usize; 4]) -> Result<TransformDraw> {
        self.transform.draw(rng, dims)
    }

    /// Transforms and purifies `x` with a given draw (replayable).
    pub fn purify_with(&self, x: Tensor<4>, draw: &TransformDraw) -> Result<DefenseOutputParts> {
        let transformed = draw.apply(x)?;
        let mut purified: Option<Tensor<4>> = None;
        let mut coarse = Vec::new();
        let combine = self.transform.kind == TransformKind::Rt3 && transformed.len() > 1;
        for t in &transformed {
            let out = self.purifier.purify(t.image.clone(), t.mask.clone())?;
            if let Some(c) = out.coarse {
                coarse.push(c);
            }
            let part = if combine {
                out.image * t.mask.clone() // this pass's pixels inside its mask
            } else {
                out.image
            };
            purified = Some(match purified {
                Some(acc) => acc + part,
                None => part,
            });
        }
        let purified = purified
            .ok_or_else(|| AtopError::config("transform", "the draw has no purifier pass"))?;
        Ok(DefenseOutputParts {
            transformed,
            purified,
            coarse,
        })
    }

    /// The whole defense with a given draw.
    pub fn forward_with(&self, x: Tensor<4>, draw: &TransformDraw) -> Result<DefenseOutput> {
        let parts = self.purify_with(x, draw)?;
        let logits = self.classifier.forward(parts.purified.clone())?;
        Ok(DefenseOutput {
            logits,
            transformed: parts.transformed,
            purified: parts.purified,
            coarse: parts.coarse,
        })
    }

    /// The whole defense with a fresh draw from `rng`.
    pub fn forward<R: Rng + ?Sized>(&self, x: Tensor<4>, rng: &mut R) -> Result<DefenseOutput> {
        let draw = self.draw(rng, x.dims())?;
        self.forward_with(x, &draw)
    }

    /// The classifier alone (no transform, no purifier).
    pub fn classify(&self, x: Tensor<4>) -> Result<Tensor<2>> {
        self.classifier.forward(x)
    }
}

/// Transform and purifier outputs, before the classifier.
#[derive(Clone, Debug)]
pub struct DefenseOutputParts {
    pub transformed: Vec<TransformedImage>,
    pub purified: Tensor<4>,
    pub coarse: Vec<Tensor<4>>,
}
