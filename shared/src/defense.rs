//! The defense: x -> RT -> purifier g -> frozen classifier f -> logits
//! (docs/method.md section 1), differentiable end to end on an autodiff device.
//!
//! The classifier sees the purifier's output over the WHOLE frame (not an
//! inpainting composite that keeps the noisy kept pixels). With RT3 each pass
//! purifies its own masked copy and the output takes pass k's pixels inside
//! mask k; the masks partition the frame, so every pixel comes from one pass.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
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
    /// Side length the image is resized to (bilinear) before the transform
    /// and purifier, and back after (the paper's 256x256 path for 32x32
    /// data); 0 = native resolution.
    pub purify_size: usize,
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
            purify_size: 0,
        }
    }

    /// Purify at `size` x `size` (0 = native resolution).
    /// The defense an artifact holds (classifier, purifier, transform and
    /// purify size), built on `device`; `source_name` names the artifact in
    /// errors, which say which part is missing.
    pub fn from_artifact(
        artifact: &crate::artifact::Artifact,
        device: &burn::tensor::Device,
        source_name: &str,
    ) -> Result<Self> {
        let transform = artifact.manifest.transform.clone().ok_or_else(|| {
            AtopError::artifact(
                source_name,
                "holds no transform: a classifier or purifier alone, not a defense",
            )
        })?;
        Ok(Self::new(
            transform,
            artifact.purifier(device, source_name)?,
            artifact.classifier(device, source_name)?,
        )
        .with_purify_size(artifact.manifest.purify_size))
    }

    pub fn with_purify_size(mut self, size: usize) -> Self {
        self.purify_size = size;
        self
    }

    /// The batch shape the transform works on for inputs of shape `dims`.
    pub fn purify_dims(&self, dims: [usize; 4]) -> [usize; 4] {
        match self.purify_size {
            0 => dims,
            s => [dims[0], dims[1], s, s],
        }
    }

    /// Draws the transform's randomness for a batch of input shape `dims`.
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R, dims: [usize; 4]) -> Result<TransformDraw> {
        self.transform.draw(rng, self.purify_dims(dims))
    }

    /// Transforms and purifies `x` with a given draw (replayable).
    pub fn purify_with(&self, x: Tensor<4>, draw: &TransformDraw) -> Result<DefenseOutputParts> {
        let dims = x.dims();
        let [_, _, h, w] = dims;
        let x = resize(x, self.purify_dims(dims));
        let transformed = draw.apply(x)?;
        let mut per_pass = Vec::with_capacity(transformed.len());
        let mut coarse = Vec::new();
        for t in &transformed {
            let out = self.purifier.purify(t.image.clone(), t.mask.clone())?;
            coarse.extend(out.coarse);
            per_pass.push(out.image);
        }
        let purified = self.combine(per_pass, &transformed)?;
        let purified = resize(purified, [0, 0, h, w]);
        Ok(DefenseOutputParts {
            transformed,
            purified,
            coarse,
        })
    }

    /// The purifier's output for each pass of a transform.
    pub fn purify_transformed(&self, transformed: &[TransformedImage]) -> Result<Vec<Tensor<4>>> {
        transformed
            .iter()
            .map(|t| Ok(self.purifier.purify(t.image.clone(), t.mask.clone())?.image))
            .collect()
    }

    /// Combines per-pass purified images into the one the classifier sees:
    /// the single pass for RT1/RT2; for RT3, pass k's pixels inside mask k.
    pub fn combine(
        &self,
        per_pass: Vec<Tensor<4>>,
        transformed: &[TransformedImage],
    ) -> Result<Tensor<4>> {
        let combine = self.transform.kind == TransformKind::Rt3 && per_pass.len() > 1;
        per_pass
            .into_iter()
            .zip(transformed)
            .map(|(p, t)| if combine { p * t.mask.clone() } else { p })
            .reduce(|acc, part| acc + part)
            .ok_or_else(|| AtopError::config("transform", "the draw has no purifier pass"))
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

    /// The classifier on the raw transform output, no purifier: what the
    /// transform alone leaves of clean accuracy (the "where does it go"
    /// breakdown: clean, transform only, transform + purifier).
    pub fn transform_only_with(&self, x: Tensor<4>, draw: &TransformDraw) -> Result<Tensor<2>> {
        let dims = x.dims();
        let [_, _, h, w] = dims;
        let transformed = draw.apply(resize(x, self.purify_dims(dims)))?;
        let raw = transformed.iter().map(|t| t.image.clone()).collect();
        let combined = self.combine(raw, &transformed)?;
        self.classifier.forward(resize(combined, [0, 0, h, w]))
    }

    /// The classifier alone (no transform, no purifier).
    pub fn classify(&self, x: Tensor<4>) -> Result<Tensor<2>> {
        self.classifier.forward(x)
    }
}

/// Bilinear resize to the spatial size of `dims` (no-op when equal).
pub fn resize(x: Tensor<4>, dims: [usize; 4]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if [h, w] == [dims[2], dims[3]] {
        return x;
    }
    interpolate(
        x,
        InterpolateOptions {
            mode: InterpolateMode::Bilinear,
            align_corners: false,
            output_size: Some([dims[2], dims[3]]),
            scale_factor: None,
        },
    )
}

/// Transform and purifier outputs, before the classifier.
#[derive(Clone, Debug)]
pub struct DefenseOutputParts {
    pub transformed: Vec<TransformedImage>,
    pub purified: Tensor<4>,
    pub coarse: Vec<Tensor<4>>,
}
