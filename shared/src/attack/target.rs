use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::defense::{Defense, resize};
use crate::error::Result;
use crate::model::Classifier;
use crate::rng::AtopRng;
use crate::transform::TransformDraw;

/// How gradients are taken through a randomized defense.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum GradientMode {
    /// Exact gradients through transform, purifier and classifier, with a
    /// fresh transform draw at every evaluation (average over EOT draws).
    #[default]
    Full,
    /// The purifier's backward pass replaced by the identity.
    Bpda,
    /// Attack the classifier alone; the result is then scored on the defense
    /// (transfer; the public code's protocol, known to overstate robustness).
    ClassifierOnly,
    /// One transform draw frozen for the whole attack (deterministic).
    FixedRandomness,
}

impl GradientMode {
    pub fn name(self) -> &'static str {
        match self {
            GradientMode::Full => "full",
            GradientMode::Bpda => "bpda",
            GradientMode::ClassifierOnly => "classifier-only",
            GradientMode::FixedRandomness => "fixed-randomness",
        }
    }
}

/// What an attack differentiates: images in [0,1] -> logits.
pub trait AttackTarget {
    /// Logits for `x`; a randomized target draws from `rng`.
    fn logits(&self, x: Tensor<4>, rng: &mut AtopRng) -> Result<Tensor<2>>;

    /// Whether two calls on the same input can differ (EOT matters).
    fn is_randomized(&self) -> bool;

    /// The randomness of one call on a batch of shape `dims`, drawn ahead,
    /// for targets whose randomness is a transform draw (the defenses);
    /// `None` where there is none to share.
    fn draw_ahead(&self, _rng: &mut AtopRng, _dims: [usize; 4]) -> Result<Option<TransformDraw>> {
        Ok(None)
    }

    /// Logits with the randomness given by `draw` (rows of one drawn ahead
    /// with [`AttackTarget::draw_ahead`]); only called on targets whose
    /// `draw_ahead` gives one.
    fn logits_with_draw(&self, x: Tensor<4>, draw: &TransformDraw) -> Result<Tensor<2>> {
        let _ = (x, draw);
        Err(crate::error::AtopError::config(
            "attack target",
            "this target takes no transform draw",
        ))
    }

    /// Logits with the given draw, or a fresh one from `rng` without.
    fn logits_drawn(
        &self,
        x: Tensor<4>,
        draw: Option<&TransformDraw>,
        rng: &mut AtopRng,
    ) -> Result<Tensor<2>> {
        match draw {
            Some(draw) => self.logits_with_draw(x, draw),
            None => self.logits(x, rng),
        }
    }
}

/// The bare classifier.
pub struct ClassifierTarget<'a>(pub &'a Classifier);

impl AttackTarget for ClassifierTarget<'_> {
    fn logits(&self, x: Tensor<4>, _rng: &mut AtopRng) -> Result<Tensor<2>> {
        self.0.forward(x)
    }

    fn is_randomized(&self) -> bool {
        false
    }
}

/// The whole defense, differentiated in one of the gradient modes.
/// (`ClassifierOnly` is not a way to differentiate the defense: build a
/// [`ClassifierTarget`] for the attack and score on the defense.)
pub struct DefenseTarget<'a> {
    pub defense: &'a Defense,
    pub mode: GradientMode,
    /// The frozen draw for `FixedRandomness` (drawn for the attacked batch).
    pub fixed_draw: Option<TransformDraw>,
}

impl<'a> DefenseTarget<'a> {
    pub fn new(defense: &'a Defense, mode: GradientMode) -> Self {
        Self {
            defense,
            mode,
            fixed_draw: None,
        }
    }

    /// Freezes one draw for a batch of shape `dims` (fixed-randomness mode).
    pub fn freeze_draw(&mut self, rng: &mut AtopRng, dims: [usize; 4]) -> Result<()> {
        self.fixed_draw = Some(self.defense.draw(rng, dims)?);
        Ok(())
    }
}

impl AttackTarget for DefenseTarget<'_> {
    fn logits(&self, x: Tensor<4>, rng: &mut AtopRng) -> Result<Tensor<2>> {
        let draw = match (&self.fixed_draw, self.mode) {
            (Some(draw), GradientMode::FixedRandomness) if draw.dims == x.dims() => draw.clone(),
            _ => self.defense.draw(rng, x.dims())?,
        };
        self.logits_with(x, &draw)
    }

    fn is_randomized(&self) -> bool {
        self.mode != GradientMode::FixedRandomness
    }

    fn draw_ahead(&self, rng: &mut AtopRng, dims: [usize; 4]) -> Result<Option<TransformDraw>> {
        match self.mode {
            GradientMode::FixedRandomness => Ok(None),
            _ => Ok(Some(self.defense.draw(rng, dims)?)),
        }
    }

    fn logits_with_draw(&self, x: Tensor<4>, draw: &TransformDraw) -> Result<Tensor<2>> {
        self.logits_with(x, draw)
    }
}

impl DefenseTarget<'_> {
    /// The defense's logits under `draw`, differentiated in this mode.
    fn logits_with(&self, x: Tensor<4>, draw: &TransformDraw) -> Result<Tensor<2>> {
        match self.mode {
            GradientMode::Bpda => {
                // Forward: the real defense. Backward: through the transform
                // and the classifier, with the purifier as the identity.
                let [_, _, h, w] = x.dims();
                let x = resize(x.clone(), self.defense.purify_dims(x.dims()));
                let transformed = draw.apply(x)?;
                let purified = self.defense.purify_transformed(&transformed)?;
                let straight_through = self.defense.combine(
                    transformed
                        .iter()
                        .zip(&purified)
                        .map(|(t, p)| t.image.clone() + (p.clone() - t.image.clone()).detach())
                        .collect(),
                    &transformed,
                )?;
                self.defense
                    .classifier
                    .forward(resize(straight_through, [0, 0, h, w]))
            }
            _ => Ok(self.defense.forward_with(x, draw)?.logits),
        }
    }
}

/// The classifier behind the defense's transform with the purifier left
/// out (a diagnostic: how much the transform alone costs).
pub struct TransformOnlyTarget<'a>(pub &'a Defense);

impl AttackTarget for TransformOnlyTarget<'_> {
    fn logits(&self, x: Tensor<4>, rng: &mut AtopRng) -> Result<Tensor<2>> {
        let draw = self.0.draw(rng, x.dims())?;
        self.0.transform_only_with(x, &draw)
    }

    fn is_randomized(&self) -> bool {
        true
    }

    fn draw_ahead(&self, rng: &mut AtopRng, dims: [usize; 4]) -> Result<Option<TransformDraw>> {
        Ok(Some(self.0.draw(rng, dims)?))
    }

    fn logits_with_draw(&self, x: Tensor<4>, draw: &TransformDraw) -> Result<Tensor<2>> {
        self.0.transform_only_with(x, draw)
    }
}
