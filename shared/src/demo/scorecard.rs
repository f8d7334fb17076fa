//! The demo's scorecard: every bundled image attacked with the link's
//! settings, once on the bare classifier and once on the defense (in the
//! link's gradient mode), and how many each keeps: the classifier's count,
//! the defense's as the mean over `draws` transform draws. A visitor sees
//! the defense's rate over the whole bundle, not one lucky image.

use burn::tensor::{Int, Tensor, TensorData};

use super::{DemoAttackRun, DemoMode, DemoModels, Permalink, streams};
use crate::defense::Defense;
use crate::error::{AtopError, Result};

/// What the scorecard found on `images` bundled images.
#[derive(Clone, Debug, PartialEq)]
pub struct Scorecard {
    pub images: usize,
    /// Images the bare classifier gets right, clean and after its attack.
    pub classifier_clean: usize,
    pub classifier_kept: usize,
    /// The defense's expected number right (mean over draws), clean and
    /// after its attack.
    pub defense_clean: f64,
    pub defense_kept: f64,
    pub draws: usize,
}

/// The scorecard in progress: the classifier's attack, then the defense's.
pub struct ScorecardRun {
    defense: Defense,
    images: Tensor<4>,
    labels: Vec<i64>,
    link: Permalink,
    draws: usize,
    run: DemoAttackRun,
    /// The classifier's adversarial images, once its attack has finished.
    classifier_adversarial: Option<Tensor<4>>,
}

impl ScorecardRun {
    /// Starts on every bundled image of `models`, with the link's attack,
    /// transform and seed; the defense is scored over `draws` draws.
    pub fn start(models: &DemoModels, link: &Permalink, draws: usize) -> Result<Self> {
        let (images, labels) = models.samples.clone().ok_or_else(|| {
            AtopError::config("scorecard", "this artifact has no bundled sample images")
        })?;
        if draws == 0 {
            return Err(AtopError::config("scorecard", "needs at least one draw"));
        }
        let defense = models.defense(link.transform);
        let on_classifier = Permalink {
            mode: DemoMode::ClassifierOnly,
            ..link.clone()
        };
        let run = DemoAttackRun::start_batch(&defense, images.clone(), &labels, &on_classifier)?;
        Ok(Self {
            defense,
            images,
            labels,
            link: link.clone(),
            draws,
            run,
            classifier_adversarial: None,
        })
    }

    /// Steps of both attacks, for a progress bar.
    pub fn total_steps(&self) -> usize {
        2 * self.run.total_steps()
    }

    pub fn steps_done(&self) -> usize {
        let first = if self.classifier_adversarial.is_some() {
            self.run.total_steps()
        } else {
            0
        };
        first + self.run.steps_done()
    }

    pub fn is_finished(&self) -> bool {
        self.classifier_adversarial.is_some() && self.run.is_finished()
    }

    /// The running attack's current iterate (to wait on the device).
    pub fn current(&self) -> Tensor<4> {
        self.run.current()
    }

    /// One attack step; the classifier's attack hands over to the
    /// defense's when it finishes.
    pub fn step(&mut self) -> Result<()> {
        self.run.step(&self.defense)?;
        if self.run.is_finished() && self.classifier_adversarial.is_none() {
            let next = DemoAttackRun::start_batch(
                &self.defense,
                self.images.clone(),
                &self.labels,
                &self.link,
            )?;
            let done = std::mem::replace(&mut self.run, next);
            self.classifier_adversarial = Some(done.finish().detach());
        }
        Ok(())
    }

    /// The four counts as one device tensor `[classifier clean, classifier
    /// kept, defense clean summed over draws, defense kept summed over
    /// draws]`, once both attacks have finished; the browser reads it back
    /// without blocking, then [`Self::scorecard`] makes the figures.
    pub fn finish(self) -> Result<Tensor<1, Int>> {
        let classifier_adversarial = self
            .classifier_adversarial
            .ok_or_else(|| AtopError::config("scorecard", "the attacks have not finished"))?;
        let defense_adversarial = self.run.finish().detach();
        let device = self.images.device();
        let labels = Tensor::<1, Int>::from_data(
            TensorData::new(self.labels.clone(), [self.labels.len()]),
            &device,
        );
        let right = |logits: Tensor<2>| -> Tensor<1, Int> {
            logits
                .argmax(1)
                .flatten::<1>(0, 1)
                .equal(labels.clone())
                .int()
                .sum()
        };
        let classify =
            |x: Tensor<4>| -> Result<Tensor<1, Int>> { Ok(right(self.defense.classify(x)?)) };
        // Clean and adversarial images are scored on the same transform
        // draws, so that the drop from one to the other is the attack's, not
        // another draw's.
        let (_, score_rng) = streams(self.link.seed);
        let over_draws = |x: Tensor<4>| -> Result<Tensor<1, Int>> {
            let mut rng = score_rng.clone();
            let mut total = Tensor::<1, Int>::zeros([1], &device);
            for _ in 0..self.draws {
                total = total + right(self.defense.forward(x.clone(), &mut rng)?.logits);
            }
            Ok(total)
        };
        Ok(Tensor::cat(
            vec![
                classify(self.images.clone().detach())?,
                classify(classifier_adversarial)?,
                over_draws(self.images.detach())?,
                over_draws(defense_adversarial)?,
            ],
            0,
        ))
    }

    /// The figures from [`Self::finish`]'s counts, read back.
    pub fn scorecard(images: usize, draws: usize, counts: &[i64]) -> Result<Scorecard> {
        let &[
            classifier_clean,
            classifier_kept,
            defense_clean,
            defense_kept,
        ] = counts
        else {
            return Err(AtopError::config("scorecard", "expected four counts"));
        };
        let count = |c: i64| usize::try_from(c).unwrap_or(0);
        Ok(Scorecard {
            images,
            classifier_clean: count(classifier_clean),
            classifier_kept: count(classifier_kept),
            defense_clean: defense_clean as f64 / draws as f64,
            defense_kept: defense_kept as f64 / draws as f64,
            draws,
        })
    }

    pub fn images(&self) -> usize {
        self.labels.len()
    }

    pub fn draws(&self) -> usize {
        self.draws
    }
}
