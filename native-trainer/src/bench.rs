//! `atop bench`: median wall time of one training step of each stage and
//! of one PGD step, at fixed batch sizes, on the chosen device; with
//! `--scale cifar`, of the paper's CIFAR-scale models instead.

use std::time::Instant;

use anyhow::Result;
use atop::attack::{
    ApgdConfig, ClassifierTarget, DefenseTarget, GradientMode, PgdConfig, apgd, pgd,
};
use atop::defense::Defense;
use atop::rng::{AtopRng, seeded};
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Distribution, Tensor};
use serde::Serialize;

use atop::model::classifier::{ResNet18Config, WideResNetConfig};
use atop::model::{Classifier, ClassifierConfig, InpainterConfig, Purifier, PurifierConfig};
use atop::transform::{TransformConfig, TransformedImage};

use crate::config::{AttackThrough, GanTerm, RunConfig};
use crate::train::blocks::{Held, adam, cross_entropy, first_pass};
use crate::train::finetune::training_attack;
use crate::train::purifier::{LossTerm, PurifierBatch, PurifierTraining};

#[derive(Serialize)]
pub struct BenchRow {
    pub name: String,
    pub batch: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub repeats: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time<F: FnMut() -> Result<()>>(
    name: &str,
    batch: usize,
    warmup: usize,
    repeats: usize,
    device: &Device,
    mut f: F,
) -> Result<BenchRow> {
    for _ in 0..warmup {
        f()?;
    }
    let _ = device.sync();
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        f()?;
        let _ = device.sync();
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let row = BenchRow {
        name: name.to_string(),
        batch,
        median_ms: median(times.clone()),
        min_ms: times.iter().cloned().fold(f64::INFINITY, f64::min),
        repeats,
    };
    eprintln!(
        "{:<28} batch {:>4}  median {:>9.2} ms  min {:>9.2} ms",
        row.name, batch, row.median_ms, row.min_ms
    );
    Ok(row)
}

/// Whether `--only` selects the benchmark `name`.
fn selected(only: Option<&str>, name: &str) -> bool {
    only.is_none_or(|o| name.contains(o))
}

/// Refuses an `--only` that selects nothing, before anything is timed (an
/// empty table would read as a bench that ran).
fn check_only(only: Option<&str>, names: &[&str]) -> Result<()> {
    match only {
        Some(o) if !names.iter().any(|n| selected(only, n)) => anyhow::bail!(
            "--only {o:?} selects no benchmark; the names it is matched against: {}",
            names.join(", ")
        ),
        _ => Ok(()),
    }
}

/// The groups `--only` picks from at the quickstart's scale.
const FMNIST_GROUPS: [&str; 6] = [
    "classifier",
    "pretrain",
    "forward",
    "finetune",
    "pgd",
    "attack",
];
/// The rows of the CIFAR scale.
const CIFAR_ROWS: [&str; 3] = [
    "WRN-28-10 train step (32x32)",
    "ResNet-18 train step (32x32)",
    "inpainter cnum 48 forward+backward (256x256)",
];

/// One training step of `classifier` on `(x, labels)`: cross-entropy, Adam.
fn classifier_train_step(
    classifier: &mut Held<Classifier>,
    optim: &mut ModuleOptimizer,
    x: &Tensor<4>,
    labels: &[i64],
) -> Result<()> {
    let loss = cross_entropy(classifier.get().forward(x.clone())?, labels);
    let grads = GradientsParams::from_grads(loss.backward(), classifier.get());
    classifier.replace(|m| optim.step(1e-3, m, grads));
    Ok(())
}

/// The purifier's name in a row's name, so that figures of one purifier are
/// never compared with another's (scripts/bench-vs-pytorch.py times the GAN).
fn purifier_kind(config: &PurifierConfig) -> &'static str {
    match config {
        PurifierConfig::Gan(_) => "GAN",
        PurifierConfig::Ae(_) => "AE",
        PurifierConfig::Identity(_) => "identity",
    }
}

/// The fine-tuning attack in a row's name, e.g. "FGSM on the classifier".
fn training_attack_name(finetune: &crate::config::FinetuneConfig) -> String {
    use crate::config::TrainingAttackKind;
    let attack = match finetune.attack {
        TrainingAttackKind::Fgsm => "FGSM".to_string(),
        TrainingAttackKind::Pgd => format!("PGD-{}", finetune.attack_steps),
    };
    let through = match finetune.attack_through {
        AttackThrough::Classifier => "the classifier",
        AttackThrough::Defense => "the defense",
    };
    format!("{attack} on {through}")
}

/// One forward+backward through `purifier` of a fresh transform draw of `x`.
fn purify_backward(
    purifier: &Purifier,
    transform: &TransformConfig,
    rng: &mut AtopRng,
    x: &Tensor<4>,
) -> Result<()> {
    let t = first_pass(transform.draw(rng, x.dims())?.apply(x.clone())?);
    let out = purifier.purify(t.image, t.mask)?;
    let _ = out.image.mean().backward();
    Ok(())
}

/// Which models `atop bench` times.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Scale {
    /// The configuration's models at their own image size.
    Fmnist,
    /// The paper's CIFAR-scale models, whatever the configuration says.
    Cifar,
}

/// The CIFAR-scale rows: whether the small models' ratios to PyTorch are
/// per-op dispatch overhead (which fades as each op gets bigger) or kernel
/// cost (which does not). The twin script's `--scale cifar` times the same.
pub fn run_cifar_scale(
    device: &Device,
    batch: usize,
    repeats: usize,
    only: Option<&str>,
) -> Result<Vec<BenchRow>> {
    check_only(only, &CIFAR_ROWS)?;
    let wanted = |n: &str| selected(only, n);
    let ad = device.clone().autodiff();
    ad.seed(777);
    let mut rows = Vec::new();
    let image = |side: usize| {
        Tensor::<4>::random([batch, 3, side, side], Distribution::Uniform(0.0, 1.0), &ad)
    };
    let labels: Vec<i64> = (0..batch as i64).map(|i| i % 10).collect();
    let classifiers = [
        (
            CIFAR_ROWS[0],
            ClassifierConfig::WideResnet(WideResNetConfig::wrn_28_10()),
        ),
        (
            CIFAR_ROWS[1],
            ClassifierConfig::ResNet18(ResNet18Config::cifar10()),
        ),
    ];
    for (name, config) in classifiers {
        if !wanted(name) {
            continue;
        }
        let mut classifier = Held::new(config.init(&ad)?);
        let mut optim = burn::optim::AdamConfig::new().init();
        let x = image(32);
        rows.push(time(name, batch, 1, repeats, &ad, || {
            classifier_train_step(&mut classifier, &mut optim, &x, &labels)
        })?);
    }
    let name = CIFAR_ROWS[2];
    if wanted(name) {
        // The paper's generator on the paper's path: RT2 (8x8 cells) at 256x256.
        let purifier = PurifierConfig::Gan(InpainterConfig::default()).init(&ad)?;
        let transform = TransformConfig::default();
        let x = image(256);
        let mut rng = seeded(4);
        rows.push(time(name, batch, 1, repeats, &ad, || {
            purify_backward(&purifier, &transform, &mut rng, &x)
        })?);
    }
    Ok(rows)
}

/// What every benchmark runs on: one batch of random images on the
/// autodiff device, with labels, and the settings of the run.
struct Bench<'a> {
    cfg: &'a RunConfig,
    ad: Device,
    x: Tensor<4>,
    labels: Vec<i64>,
    batch: usize,
    repeats: usize,
    rows: Vec<BenchRow>,
}

pub fn run(
    cfg: &RunConfig,
    device: &Device,
    batch: usize,
    repeats: usize,
    only: Option<&str>,
) -> Result<Vec<BenchRow>> {
    check_only(only, &FMNIST_GROUPS)?;
    // The EOT rows run as `atop eval` would with this configuration.
    cfg.eval.apply_eot_chunk_values();
    let mut bench = Bench::new(cfg, device, batch, repeats);
    let wanted = |n: &str| selected(only, n);
    let classifier = bench.classifier_step(wanted("classifier"))?.freeze();
    let purifier = bench.purifier_steps(&classifier, &wanted)?;
    if wanted("pgd") {
        bench.pgd_steps(&classifier, purifier)?;
    }
    if wanted("attack") {
        bench.whole_attacks(&classifier)?;
    }
    Ok(bench.rows)
}

impl<'a> Bench<'a> {
    fn new(cfg: &'a RunConfig, device: &Device, batch: usize, repeats: usize) -> Self {
        let ad = device.clone().autodiff();
        ad.seed(cfg.run.seed);
        let channels = cfg.classifier.image_channels();
        let (h, w) = match &cfg.classifier {
            atop::model::ClassifierConfig::SmallCnn(c) => (c.image_size[0], c.image_size[1]),
            _ => (32, 32),
        };
        let x = Tensor::<4>::random(
            [batch, channels, h, w],
            Distribution::Uniform(0.0, 1.0),
            &ad,
        );
        let labels = (0..batch as i64)
            .map(|i| i % cfg.classifier.num_classes() as i64)
            .collect();
        Self {
            cfg,
            ad,
            x,
            labels,
            batch,
            repeats,
            rows: Vec::new(),
        }
    }

    fn time(
        &mut self,
        name: &str,
        warmup: usize,
        repeats: usize,
        f: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        let row = time(name, self.batch, warmup, repeats, &self.ad, f)?;
        self.rows.push(row);
        Ok(())
    }

    /// The classifier's training step (when `timed`); returns the classifier.
    fn classifier_step(&mut self, timed: bool) -> Result<Classifier> {
        let mut classifier = Held::new(self.cfg.classifier.init(&self.ad)?);
        let mut optim = adam(&self.cfg.train_classifier.optim);
        if timed {
            let (x, labels) = (self.x.clone(), self.labels.clone());
            self.time("classifier train step", 2, self.repeats, || {
                classifier_train_step(&mut classifier, &mut optim, &x, &labels)
            })?;
        }
        Ok(classifier.into_inner())
    }

    /// Pre-training, forward+backward and AToP fine-tuning steps of the
    /// purifier; returns the purifier.
    fn purifier_steps(
        &mut self,
        frozen: &Classifier,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Result<Purifier> {
        let cfg = self.cfg;
        let kind = purifier_kind(&cfg.purifier);
        let purifier = cfg.purifier.init(&self.ad)?;
        let disc = cfg.discriminator_config().init(&self.ad)?;
        let mut training = PurifierTraining::new(purifier, Some(disc), &cfg.pretrain);
        let (x, labels, transform) = (self.x.clone(), self.labels.clone(), cfg.transform.clone());
        let batch_of = |t: TransformedImage| PurifierBatch {
            input: t.image,
            mask: t.mask,
            target: x.clone(),
        };
        if wanted("pretrain") {
            let mut rng = seeded(1);
            self.time(
                &format!("purifier pretrain step ({kind})"),
                1,
                self.repeats,
                || {
                    let t = first_pass(transform.draw(&mut rng, x.dims())?.apply(x.clone())?);
                    training.step(batch_of(t), 1e-4, GanTerm::Live)?;
                    Ok(())
                },
            )?;
        }
        if wanted("forward") {
            let mut rng = seeded(4);
            let p = training.purifier().clone();
            self.time(
                &format!("purifier forward+backward ({kind})"),
                1,
                self.repeats,
                || purify_backward(&p, &transform, &mut rng, &x),
            )?;
        }
        if wanted("finetune") {
            let mut rng = seeded(2);
            let fcfg = cfg.finetune.clone();
            let name = format!(
                "AToP finetune step ({kind}, {})",
                training_attack_name(&fcfg)
            );
            self.time(&name, 1, self.repeats, || {
                // As the fine-tuning stage does: an attack through the
                // defense sees the purifier as it is at this step.
                let defense = (fcfg.attack_through == AttackThrough::Defense).then(|| {
                    Defense::new(
                        transform.clone(),
                        training.purifier().clone().freeze(),
                        frozen.clone(),
                    )
                });
                let x_adv = training_attack(
                    &fcfg,
                    frozen,
                    defense.as_ref(),
                    x.clone(),
                    &labels,
                    &mut rng,
                )?;
                let t = first_pass(transform.draw(&mut rng, x.dims())?.apply(x_adv)?);
                training.step_with(batch_of(t), 1e-4, GanTerm::Live, |purified| {
                    let ce = cross_entropy(frozen.forward(purified)?, &labels);
                    Ok(vec![LossTerm {
                        name: "ce",
                        value: ce.mul_scalar(fcfg.lambda),
                    }])
                })?;
                Ok(())
            })?;
        }
        Ok(training.purifier().clone())
    }

    /// One PGD step on the classifier and on the whole defense.
    fn pgd_steps(&mut self, frozen: &Classifier, purifier: Purifier) -> Result<()> {
        let one_step = PgdConfig {
            steps: 1,
            eps: 8.0 / 255.0,
            ..PgdConfig::default()
        };
        let (x, labels) = (self.x.clone(), self.labels.clone());
        let mut rng = seeded(3);
        let target = ClassifierTarget(frozen);
        self.time("PGD step (classifier)", 1, self.repeats, || {
            pgd(&target, x.clone(), &labels, &one_step, &mut rng)?;
            Ok(())
        })?;
        let defense = Defense::new(
            self.cfg.transform.clone(),
            purifier.freeze(),
            frozen.clone(),
        );
        let target = DefenseTarget::new(&defense, GradientMode::Full);
        let name = format!(
            "PGD step (defense, {}, EOT 1)",
            purifier_kind(&self.cfg.purifier)
        );
        self.time(&name, 1, self.repeats, || {
            pgd(&target, x.clone(), &labels, &one_step, &mut rng)?;
            Ok(())
        })?;
        // The paper's EOT: 20 transform draws per gradient, chunked to the
        // EOT memory bound (the twin script times torchattacks' looped EOT
        // and a batched one).
        let eot20 = PgdConfig {
            eot: 20,
            ..one_step
        };
        let name = format!(
            "PGD step (defense, {}, EOT 20)",
            purifier_kind(&self.cfg.purifier)
        );
        self.time(&name, 1, self.repeats.min(5), || {
            pgd(&target, x.clone(), &labels, &eot20, &mut rng)?;
            Ok(())
        })
    }

    /// Whole attacks on the classifier, for throughput in images per second
    /// (the twin script times torchattacks' PGD and APGD on the same network).
    fn whole_attacks(&mut self, frozen: &Classifier) -> Result<()> {
        let mut rng = seeded(4);
        let target = ClassifierTarget(frozen);
        let x = self.x.clone();
        // Labels = the model's own predictions, so every point is attacked
        // (APGD, like torchattacks', skips points already misclassified).
        let labels = atop::host::ints(frozen.forward(x.clone())?.argmax(1), "predictions")?;
        let pgd20 = PgdConfig {
            steps: 20,
            eps: 8.0 / 255.0,
            step_size: Some(2.0 / 255.0),
            ..PgdConfig::default()
        };
        let repeats = self.repeats.min(3);
        self.time("PGD-20 attack (classifier)", 1, repeats, || {
            pgd(&target, x.clone(), &labels, &pgd20, &mut rng)?;
            Ok(())
        })?;
        let apgd100 = ApgdConfig {
            eps: 8.0 / 255.0,
            ..ApgdConfig::default()
        };
        self.time("APGD-CE-100 attack (classifier)", 1, repeats, || {
            apgd(&target, x.clone(), &labels, &apgd100, &mut rng)?;
            Ok(())
        })?;
        for row in &self.rows[self.rows.len() - 2..] {
            eprintln!(
                "{:<32} {:>9.0} images/s",
                row.name,
                row.batch as f64 / (row.median_ms / 1e3)
            );
        }
        Ok(())
    }
}
