//! The browser demo's experiment, shared with the trainer's `atop attack`:
//! one image, one attack on the bare classifier or on the whole defense, and
//! the predictions of the classifier and the defense. Both programs run this
//! code, so a [`Permalink`] opened in the browser and given to the trainer
//! gives the same adversarial image and logits (up to floating-point
//! summation order between backends).
//!
//! The attack advances a step at a time ([`DemoAttackRun::step`]) so the
//! browser can show progress and yield to the page between steps.

pub mod permalink;
pub mod scorecard;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

pub use permalink::{
    DemoAttack, DemoMode, ImageRef, LinkName, Norm, Permalink, PermalinkError, TransformKind,
};
pub use scorecard::{Scorecard, ScorecardRun};

use crate::artifact::Artifact;
use crate::attack::{
    ApgdConfig, ApgdLoss, ApgdRun, AttackTarget, ClassifierTarget, DefenseTarget, GradientMode,
    PgdConfig, PgdLoss, PgdRun,
};
use crate::defense::Defense;
use crate::error::{AtopError, Result};
use crate::model::ClassifierConfig;
use crate::rng::{AtopRng, fork, seeded};
use crate::transform::TransformConfig;

/// The models of one artifact, loaded frozen on an autodiff device (the
/// attacks differentiate through them; their weights never change).
#[derive(Clone, Debug)]
pub struct DemoModels {
    pub classifier: crate::model::Classifier,
    pub purifier: crate::model::Purifier,
    /// The transform the purifier was trained with; the demo keeps its grid,
    /// rates and noise and lets the user pick RT1, RT2 or RT3.
    pub transform: TransformConfig,
    /// Input shape `[c, h, w]` of one image.
    pub input: [usize; 3],
    /// The bundled test images `[n, c, h, w]` and labels, if any.
    pub samples: Option<(Tensor<4>, Vec<i64>)>,
    /// One name per class (the dataset's, else "class i").
    pub class_names: Vec<String>,
}

impl DemoModels {
    /// Loads classifier, purifier, transform and samples from `artifact`
    /// onto `device` (made autodiff here). `source_name` names the file in
    /// errors.
    pub fn load(artifact: &Artifact, device: &Device, source_name: &str) -> Result<Self> {
        let missing = |what: &str| {
            AtopError::artifact(
                source_name,
                format!("the demo needs a {what}, and the manifest has none"),
            )
        };
        let manifest = &artifact.manifest;
        let classifier_config = manifest
            .classifier
            .as_ref()
            .ok_or_else(|| missing("classifier"))?;
        manifest
            .purifier
            .as_ref()
            .ok_or_else(|| missing("purifier"))?;
        let transform = manifest
            .transform
            .clone()
            .ok_or_else(|| missing("transform"))?;
        let ad = device.clone().autodiff();
        let classifier = artifact.classifier(&ad, source_name)?.freeze();
        let purifier = artifact.purifier(&ad, source_name)?.freeze();
        let samples = artifact.samples(source_name)?;
        let channels = classifier_config.image_channels();
        // The input shape: the dataset's, else the bundled samples', else
        // what a small CNN states.
        let input = match (&manifest.dataset, &samples, classifier_config) {
            (Some(d), _, _) => d.image_shape,
            (None, Some(s), _) => {
                let d = s.images.shape().as_slice().to_vec();
                [d[1], d[2], d[3]]
            }
            (None, None, ClassifierConfig::SmallCnn(c)) => {
                [channels, c.image_size[0], c.image_size[1]]
            }
            (None, None, _) => {
                return Err(AtopError::artifact(
                    source_name,
                    "the manifest names no dataset image shape, there are no bundled samples, \
                     and the classifier does not state its input size",
                ));
            }
        };
        if input[0] != channels {
            return Err(AtopError::artifact(
                source_name,
                format!(
                    "images have {} channels, the classifier takes {channels}",
                    input[0]
                ),
            ));
        }
        if let Some(s) = &samples
            && s.images.shape().as_slice()[1..] != input[..]
        {
            return Err(AtopError::artifact(
                source_name,
                format!(
                    "bundled samples have shape {:?}, the models take {input:?}",
                    &s.images.shape().as_slice()[1..]
                ),
            ));
        }
        let num_classes = classifier_config.num_classes();
        let class_names = match &manifest.dataset {
            Some(d) if d.class_names.len() == num_classes => d.class_names.clone(),
            _ => (0..num_classes).map(|i| format!("class {i}")).collect(),
        };
        let samples = samples.map(|s| (Tensor::from_data(s.images, &ad), s.labels));
        Ok(Self {
            classifier,
            purifier,
            transform,
            input,
            samples,
            class_names,
        })
    }

    /// Number of bundled sample images.
    pub fn num_samples(&self) -> usize {
        self.samples.as_ref().map_or(0, |(_, l)| l.len())
    }

    /// The defense with the artifact's transform settings and `kind`.
    pub fn defense(&self, kind: TransformKind) -> Defense {
        let transform = TransformConfig {
            kind,
            ..self.transform.clone()
        };
        Defense::new(transform, self.purifier.clone(), self.classifier.clone())
    }

    /// The image a permalink names, `[1, c, h, w]` in [0,1], with its label
    /// when it is a bundled sample (uploads have none).
    pub fn image(&self, image: &ImageRef) -> Result<(Tensor<4>, Option<i64>)> {
        let [c, h, w] = self.input;
        match image {
            ImageRef::Sample(i) => {
                let (images, labels) = self.samples.as_ref().ok_or_else(|| {
                    AtopError::config("image", "this artifact has no bundled sample images")
                })?;
                if *i >= labels.len() {
                    return Err(AtopError::config(
                        "image",
                        format!("sample {i} does not exist ({} bundled)", labels.len()),
                    ));
                }
                Ok((images.clone().narrow(0, *i, 1), Some(labels[*i])))
            }
            ImageRef::Pixels {
                width,
                height,
                channels,
                values,
            } => {
                if [*channels, *height, *width] != [c, h, w] {
                    return Err(AtopError::shape(
                        "uploaded image",
                        format!("{w}x{h}x{c} (width x height x channels)"),
                        &[*width, *height, *channels],
                    ));
                }
                let data: Vec<f32> = values.iter().map(|&v| f32::from(v) / 255.0).collect();
                let device = self.classifier_device();
                Ok((
                    Tensor::from_data(TensorData::new(data, [1, c, h, w]), &device),
                    None,
                ))
            }
        }
    }

    fn classifier_device(&self) -> Device {
        self.classifier
            .devices()
            .into_iter()
            .next()
            .unwrap_or_default()
    }
}

/// The two random streams of one demo run, both from the link's seed: the
/// attack's (random start, transform draws while attacking) and the
/// scoring's (the transform draw the defended prediction is shown for).
fn streams(seed: u64) -> (AtopRng, AtopRng) {
    let mut root = seeded(seed);
    let attack = fork(&mut root);
    let score = fork(&mut root);
    (attack, score)
}

enum Stepper {
    // Boxed: the runs hold several tensors each.
    Pgd(Box<PgdRun>),
    Apgd(Box<ApgdRun>),
}

/// An attack in progress on one image.
pub struct DemoAttackRun {
    stepper: Stepper,
    rng: AtopRng,
    mode: DemoMode,
    total: usize,
}

impl DemoAttackRun {
    /// Starts the link's attack on `image` (`[1, c, h, w]`) with true (or,
    /// for an upload, predicted) class `label`. FGSM is one step of size
    /// eps; PGD uses step 2.5 eps / steps and a random start; APGD-CE is one
    /// run with AutoAttack's schedule.
    pub fn start(
        defense: &Defense,
        image: Tensor<4>,
        label: i64,
        link: &Permalink,
    ) -> Result<Self> {
        Self::start_batch(defense, image, &[label], link)
    }

    /// The same on a batch `[n, c, h, w]` with one label per image.
    pub fn start_batch(
        defense: &Defense,
        image: Tensor<4>,
        labels: &[i64],
        link: &Permalink,
    ) -> Result<Self> {
        let (mut rng, _) = streams(link.seed);
        let norm = link.norm;
        let pgd = |cfg: PgdConfig, rng: &mut AtopRng| -> Result<Stepper> {
            Ok(Stepper::Pgd(Box::new(PgdRun::start(
                image.clone(),
                labels,
                &cfg,
                rng,
            )?)))
        };
        let stepper = match link.attack {
            DemoAttack::Fgsm => pgd(
                PgdConfig {
                    norm,
                    eps: link.eps,
                    step_size: Some(link.eps.max(f64::MIN_POSITIVE)),
                    steps: 1,
                    random_start: false,
                    restarts: 1,
                    eot: link.eot,
                    loss: PgdLoss::Ce,
                },
                &mut rng,
            )?,
            DemoAttack::Pgd => pgd(
                PgdConfig {
                    norm,
                    eps: link.eps,
                    step_size: None,
                    steps: link.steps,
                    random_start: true,
                    restarts: 1,
                    eot: link.eot,
                    loss: PgdLoss::Ce,
                },
                &mut rng,
            )?,
            DemoAttack::ApgdCe => {
                let cfg = ApgdConfig {
                    norm,
                    eps: link.eps,
                    steps: link.steps,
                    restarts: 1,
                    eot: link.eot,
                    loss: ApgdLoss::Ce,
                    ..ApgdConfig::default()
                };
                let target = Self::target_for(defense, link.mode);
                Stepper::Apgd(Box::new(ApgdRun::start(
                    target.as_ref(),
                    image.clone(),
                    labels,
                    &cfg,
                    &mut rng,
                )?))
            }
        };
        let total = match link.attack {
            DemoAttack::Fgsm => 1,
            _ => link.steps,
        };
        Ok(Self {
            stepper,
            rng,
            mode: link.mode,
            total,
        })
    }

    fn target_for(defense: &Defense, mode: DemoMode) -> Box<dyn AttackTarget + '_> {
        match mode {
            DemoMode::ClassifierOnly => Box::new(ClassifierTarget(&defense.classifier)),
            DemoMode::Full => Box::new(DefenseTarget::new(defense, GradientMode::Full)),
        }
    }

    /// One attack step. PGD and FGSM steps never read back from the device;
    /// APGD's do (its step-size rule), so APGD needs blocking reads.
    pub fn step(&mut self, defense: &Defense) -> Result<()> {
        let target = Self::target_for(defense, self.mode);
        match &mut self.stepper {
            Stepper::Pgd(run) => run.step(target.as_ref(), &mut self.rng),
            Stepper::Apgd(run) => run.step(target.as_ref(), &mut self.rng),
        }
    }

    pub fn total_steps(&self) -> usize {
        self.total
    }

    pub fn steps_done(&self) -> usize {
        match &self.stepper {
            Stepper::Pgd(run) => run.steps_done(),
            Stepper::Apgd(run) => run.steps_done(),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.steps_done() >= self.total
    }

    /// The current iterate (for progress displays; [`Self::finish`] gives
    /// the attack's answer).
    pub fn current(&self) -> Tensor<4> {
        match &self.stepper {
            Stepper::Pgd(run) => run.adversarial(),
            Stepper::Apgd(run) => run.current(),
        }
    }

    /// Whether a step reads back from the device (true for APGD).
    pub fn needs_blocking_reads(&self) -> bool {
        matches!(self.stepper, Stepper::Apgd(_))
    }

    /// The adversarial image: PGD's last iterate; APGD's last misclassified
    /// iterate, else its highest-loss one.
    pub fn finish(self) -> Tensor<4> {
        match self.stepper {
            Stepper::Pgd(run) => run.adversarial(),
            Stepper::Apgd(run) => run.finish().0,
        }
    }
}

/// What the demo shows for one clean image and its adversarial version.
#[derive(Clone, Debug)]
pub struct DemoOutcome {
    /// The bare classifier on the clean image, `[1, classes]`.
    pub clean_logits: Tensor<2>,
    /// The bare classifier on the adversarial image.
    pub adversarial_logits: Tensor<2>,
    /// The defense on the adversarial image (one transform draw).
    pub defended_logits: Tensor<2>,
    pub adversarial: Tensor<4>,
    /// The transformed (noised, masked) adversarial image the purifier saw;
    /// for RT3, the first pass.
    pub transformed: Tensor<4>,
    /// That pass's mask `[1, 1, h, w]`, 1 = hole.
    pub mask: Tensor<4>,
    pub purified: Tensor<4>,
}

/// Classifier on clean and adversarial images, and the defense on the
/// adversarial one with the transform draw the link's seed fixes.
pub fn outcome(
    defense: &Defense,
    clean: Tensor<4>,
    adversarial: Tensor<4>,
    seed: u64,
) -> Result<DemoOutcome> {
    let (_, mut score_rng) = streams(seed);
    let clean_logits = defense.classify(clean.detach())?.detach();
    let adversarial = adversarial.detach();
    let adversarial_logits = defense.classify(adversarial.clone())?.detach();
    let out = defense.forward(adversarial.clone(), &mut score_rng)?;
    let first = out
        .transformed
        .first()
        .ok_or_else(|| AtopError::config("transform", "the draw has no purifier pass"))?;
    let (transformed, mask) = (first.image.clone().detach(), first.mask.clone().detach());
    Ok(DemoOutcome {
        clean_logits,
        adversarial_logits,
        defended_logits: out.logits.detach(),
        adversarial,
        transformed,
        mask,
        purified: out.purified.detach(),
    })
}

/// The class the attack pushes away from: the true label of a bundled
/// sample, the classifier's clean prediction for an upload.
pub fn attack_label(label: Option<i64>, clean_logits: &[f32]) -> i64 {
    label.unwrap_or_else(|| {
        clean_logits
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 { (i, v) } else { best }
            })
            .0 as i64
    })
}

/// Softmax probabilities of one row of logits, sorted by probability,
/// highest first: `(class, probability)`.
pub fn top_predictions(logits: &[f32]) -> Vec<(usize, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let mut out: Vec<(usize, f32)> = exp.iter().map(|&e| e / sum).enumerate().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_are_sorted_probabilities() {
        let top = top_predictions(&[0.0, 2.0f32.ln(), 0.0]);
        // exp: 1, 2, 1 -> 0.25, 0.5, 0.25; ties keep class order.
        assert_eq!(top[0].0, 1);
        assert!((top[0].1 - 0.5).abs() < 1e-6);
        assert_eq!((top[1].0, top[2].0), (0, 2));
        assert!((top[1].1 - 0.25).abs() < 1e-6);
        assert_eq!(attack_label(None, &[0.1, 3.0, -1.0]), 1);
        assert_eq!(attack_label(Some(7), &[0.1, 3.0, -1.0]), 7);
    }
}
