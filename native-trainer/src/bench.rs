//! `atop bench`: median wall time of one training step of each stage and
//! of one PGD step, at fixed batch sizes, on the chosen device.

use std::time::Instant;

use anyhow::Result;
use atop::attack::{
    ApgdConfig, ClassifierTarget, DefenseTarget, GradientMode, PgdConfig, apgd, pgd,
};
use atop::defense::Defense;
use atop::rng::seeded;
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor};
use serde::Serialize;

use crate::config::RunConfig;
use crate::stages::pretrain::PurifierTraining;
use crate::stages::{adam, cross_entropy, first_pass};

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

pub fn run(
    cfg: &RunConfig,
    device: &Device,
    batch: usize,
    repeats: usize,
    only: Option<&str>,
) -> Result<Vec<BenchRow>> {
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
    let labels: Vec<i64> = (0..batch as i64)
        .map(|i| i % cfg.classifier.num_classes() as i64)
        .collect();
    let wanted = |n: &str| only.is_none_or(|o| n.contains(o));
    let mut rows = Vec::new();

    let mut classifier = Some(cfg.classifier.init(&ad)?);
    let mut optim = adam(&cfg.train_classifier);
    if wanted("classifier") {
        rows.push(time(
            "classifier train step",
            batch,
            2,
            repeats,
            &ad,
            || {
                let m = classifier.take().expect("model");
                let loss = cross_entropy(m.forward(x.clone())?, &labels);
                let grads = GradientsParams::from_grads(loss.backward(), &m);
                classifier = Some(optim.step(1e-3, m, grads));
                Ok(())
            },
        )?);
    }
    let frozen = classifier.take().expect("model").freeze();

    let purifier = cfg.purifier.init(&ad)?;
    let disc = cfg.discriminator_config().init(&ad)?;
    let mut training = PurifierTraining::new(purifier, Some(disc), &cfg.pretrain);
    let transform = cfg.transform.clone();
    if wanted("pretrain") {
        let mut rng = seeded(1);
        rows.push(time(
            "purifier pretrain step",
            batch,
            1,
            repeats,
            &ad,
            || {
                let draw = transform.draw(&mut rng, x.dims())?;
                let t = first_pass(draw.apply(x.clone())?);
                training.step(t.image, t.mask, x.clone(), 1e-4, true, |_| Ok(None))?;
                Ok(())
            },
        )?);
    }
    if wanted("forward") {
        let mut rng = seeded(4);
        let p = training.purifier().clone();
        rows.push(time(
            "purifier forward+backward",
            batch,
            1,
            repeats,
            &ad,
            || {
                let draw = transform.draw(&mut rng, x.dims())?;
                let t = first_pass(draw.apply(x.clone())?);
                let out = p.purify(t.image, t.mask)?;
                let _ = out.image.mean().backward();
                Ok(())
            },
        )?);
    }
    if wanted("finetune") {
        let mut rng = seeded(2);
        let fcfg = cfg.finetune.clone();
        rows.push(time("AToP finetune step", batch, 1, repeats, &ad, || {
            let x_adv = crate::stages::finetune::training_attack(
                &fcfg,
                &frozen,
                None,
                x.clone(),
                &labels,
                &mut rng,
            )?;
            let draw = transform.draw(&mut rng, x.dims())?;
            let t = first_pass(draw.apply(x_adv)?);
            training.step(t.image, t.mask, x.clone(), 1e-4, true, |purified| {
                Ok(Some((
                    "ce".into(),
                    cross_entropy(frozen.forward(purified)?, &labels).mul_scalar(0.1),
                )))
            })?;
            Ok(())
        })?);
    }
    let one_step = PgdConfig {
        steps: 1,
        eps: 8.0 / 255.0,
        ..PgdConfig::default()
    };
    if wanted("pgd") {
        let mut rng = seeded(3);
        let target = ClassifierTarget(&frozen);
        rows.push(time(
            "PGD step (classifier)",
            batch,
            1,
            repeats,
            &ad,
            || {
                pgd(&target, x.clone(), &labels, &one_step, &mut rng)?;
                Ok(())
            },
        )?);
        let defense = Defense::new(
            transform.clone(),
            training.purifier().clone().freeze(),
            frozen.clone(),
        );
        let target = DefenseTarget::new(&defense, GradientMode::Full);
        rows.push(time(
            "PGD step (defense, EOT 1)",
            batch,
            1,
            repeats,
            &ad,
            || {
                pgd(&target, x.clone(), &labels, &one_step, &mut rng)?;
                Ok(())
            },
        )?);
    }
    // Whole attacks on the classifier, for throughput in images per second
    // (the twin script times torchattacks' PGD and APGD on the same network).
    if wanted("attack") {
        let mut rng = seeded(4);
        let target = ClassifierTarget(&frozen);
        // Labels = the model's own predictions, so every point is attacked
        // (APGD, like torchattacks', skips points already misclassified).
        let predicted = atop::host::ints(frozen.forward(x.clone())?.argmax(1), "predictions")?;
        let labels = &predicted;
        let pgd20 = PgdConfig {
            steps: 20,
            eps: 8.0 / 255.0,
            step_size: Some(2.0 / 255.0),
            ..PgdConfig::default()
        };
        rows.push(time(
            "PGD-20 attack (classifier)",
            batch,
            1,
            repeats.min(3),
            &ad,
            || {
                pgd(&target, x.clone(), labels, &pgd20, &mut rng)?;
                Ok(())
            },
        )?);
        let apgd100 = ApgdConfig {
            eps: 8.0 / 255.0,
            ..ApgdConfig::default()
        };
        rows.push(time(
            "APGD-CE-100 attack (classifier)",
            batch,
            1,
            repeats.min(3),
            &ad,
            || {
                apgd(&target, x.clone(), labels, &apgd100, &mut rng)?;
                Ok(())
            },
        )?);
        for row in &rows[rows.len() - 2..] {
            eprintln!(
                "{:<32} {:>9.0} images/s",
                row.name,
                row.batch as f64 / (row.median_ms / 1e3)
            );
        }
    }
    Ok(rows)
}
