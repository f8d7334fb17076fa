//! The stages as the CLI runs them: load data and inputs, train, select,
//! write the artifact atomically.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use atop::artifact::{Artifact, DatasetInfo, Manifest, Metric};

use atop::model::{Classifier, ClassifierConfig, IdentityConfig, Purifier, PurifierConfig};
use atop::rng::{stream, with_backend_seed};

use burn::module::Module;
use burn::tensor::Device;
use sha2::{Digest, Sha256};

use crate::config::{AttackThrough, RunConfig, TrainingAttackKind};

use crate::fsutil::write_artifact;
use crate::run_data::RunData;
use crate::train::classifier::ClassifierStage;
use crate::train::finetune::FinetuneStage;
use crate::train::gan_health::GanHealth;
use crate::train::pretrain::PretrainStage;
use crate::train::purifier::PurifierTraining;
use crate::train::{Outcome, Schedule, run_stage};

/// What every stage driver works from: the resolved configuration, the
/// run's data, the device, the output directory, whether to resume, and the
/// command line that started it (recorded in the manifest).
pub struct StageContext<'a> {
    pub cfg: &'a RunConfig,
    pub data: &'a RunData,
    pub device: &'a Device,
    pub out: &'a Path,
    pub resume: bool,
    pub command: &'a str,
}

/// SHA-256 of the resolved configuration plus stage inputs.
pub fn config_hash(cfg: &RunConfig, extra: &str) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(cfg).unwrap_or_default());
    h.update(extra.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A stage's manifest: the data, the seeds, and how it was made (the
/// command, the resolved configuration and the stage's wall time; none of
/// these enter the defense identity, so reruns keep the same one).
fn manifest(ctx: &StageContext, stage: &str, outcome: &Outcome) -> Manifest {
    let (cfg, data) = (ctx.cfg, ctx.data);
    let mut files = data.train.files.clone();
    files.extend(data.test.files.iter().cloned());
    files.dedup();
    Manifest {
        classifier: Some(cfg.classifier.clone()),
        purifier: None,
        transform: None,
        dataset: Some(DatasetInfo {
            name: data.train.name.clone(),
            image_shape: data.train.shape,
            class_names: data.train.class_names.clone(),
            files,
        }),
        seeds: [
            ("run".to_string(), cfg.run.seed),
            ("eval_subset".to_string(), cfg.eval.subset_seed),
        ]
        .into(),
        training: serde_json::json!({
            "stage": stage,
            "command": ctx.command,
            "wall_seconds": outcome.wall_seconds,
            "config": cfg,
        }),
        ..Manifest::default()
    }
}

fn schedule(
    o: &crate::config::OptimConfig,
    train_len: usize,
    cfg: &RunConfig,
    salt: u64,
) -> Schedule {
    Schedule {
        epochs: o.epochs,
        batch_size: o.batch_size,
        max_steps_per_epoch: o.max_steps_per_epoch,
        train_len,
        checkpoint_every: cfg.run.checkpoint_every,
        seed: cfg.run.seed ^ salt,
        lr_schedule: o.lr_schedule,
        warmup_steps: o.warmup_steps,
    }
}

/// What a stage's training cost, for the manifest and the comparison
/// table: optimiser steps, the training attack's gradient evaluations
/// (images x gradient passes, through what it attacks), and wall seconds.
fn training_compute(
    outcome: &Outcome,
    batch_size: usize,
    attack_steps: usize,
    through: &str,
) -> serde_json::Value {
    serde_json::json!({
        "optimizer_steps": outcome.steps,
        "images": outcome.steps * batch_size,
        "attack_gradient_evaluations": outcome.steps * batch_size * attack_steps,
        "attack_gradients_through": through,
        "wall_seconds": outcome.wall_seconds,
    })
}

pub struct StageResult<M> {
    pub model: M,
    pub artifact_path: PathBuf,
    /// The artifact as a later stage's manifest records its input
    /// ([`input_source`]: path and identities).
    pub source: serde_json::Value,
    pub validation: Option<f64>,
    /// Training warnings (the discriminator's health).
    pub warnings: Vec<String>,
}

/// The GAN health of `stage`: its warnings (logged), and its metrics added
/// to the artifact's manifest.
fn gan_health(out: &Path, stage: &str, m: &mut Manifest) -> Result<Vec<String>> {
    Ok(match GanHealth::read(out, stage)? {
        Some(h) => {
            m.metrics.extend(h.metrics());
            h.report()
        }
        None => Vec::new(),
    })
}

/// Trains the classifier; writes `out/classifier.safetensors`.
pub fn train_classifier(ctx: &StageContext) -> Result<StageResult<Classifier>> {
    let (cfg, data, device, out, resume) = (ctx.cfg, ctx.data, ctx.device, ctx.out, ctx.resume);
    let train_device = device.clone().autodiff();
    // The classifier initialises from the run seed itself.
    let model = with_backend_seed(&train_device, cfg.run.seed, || {
        cfg.classifier.init(&train_device)
    })?;
    let mut stage = ClassifierStage::new(
        model,
        &cfg.train_classifier,
        &data.train,
        &data.val,
        cfg.data.augment.clone(),
        train_device,
    );
    if cfg.train_classifier.transform_inputs {
        stage.input_transform = Some((cfg.transform.clone(), cfg.data.purify_size));
    }
    let outcome = run_stage(
        &mut stage,
        &schedule(
            &cfg.train_classifier.optim,
            data.train.len(),
            cfg,
            stream::TRAIN_CLASSIFIER,
        ),
        out,
        &config_hash(cfg, "train-classifier"),
        resume,
    )?;
    let attack = stage.attack.clone();
    let model = stage.into_model();
    let mut m = manifest(ctx, "train-classifier", &outcome);
    if let Some(a) = &attack {
        m.training["adversarial_training"] = a.record();
    }
    let attack_steps = match attack {
        Some(_) => cfg.train_classifier.attack_steps,
        None => 0,
    };
    m.training["compute"] = training_compute(
        &outcome,
        cfg.train_classifier.optim.batch_size,
        attack_steps,
        "classifier",
    );
    if let Some(v) = outcome.best_score {
        let (name, protocol) = match &attack {
            None => ("validation_accuracy", serde_json::Value::Null),
            Some(a) => ("validation_robust_accuracy_training_attack", a.record()),
        };
        m.metrics.push(Metric {
            name: name.into(),
            value: v,
            protocol: serde_json::json!({
                "split": "validation carved from training data",
                "epoch": outcome.best_epoch,
                "attack": protocol,
            }),
        });
    }
    // A classifier of transform outputs goes with the identity purifier and
    // its transform, so that `atop eval` scores it on them.
    let identity = match cfg.train_classifier.transform_inputs {
        false => None,
        true => {
            let config = PurifierConfig::Identity(IdentityConfig {
                image_channels: cfg.classifier.image_channels(),
            });
            let purifier = config.init(device)?;
            m.purifier = Some(config);
            m.transform = Some(cfg.transform.clone());
            m.purify_size = cfg.data.purify_size;
            Some(purifier)
        }
    };
    let artifact = Artifact::new(m, Some(&model.valid()), identity.as_ref(), None)?;
    let path = out.join("classifier.safetensors");
    write_artifact(&path, &artifact)?;
    Ok(StageResult {
        source: input_source(&path, &artifact),
        model,
        artifact_path: path,
        validation: outcome.best_score,
        warnings: Vec::new(),
    })
}

/// The identity purifier has nothing to train.
fn refuse_identity(purifier: &PurifierConfig, stage: &str) -> Result<()> {
    if matches!(purifier, PurifierConfig::Identity(_)) {
        anyhow::bail!(
            "{stage}: purifier.kind = \"identity\" has no weights to train (it is for \
             train_classifier.transform_inputs)"
        );
    }
    Ok(())
}

/// The manifest metric of a pre-trained purifier: its validation L1 (the
/// stage's selection score is minus it).
pub const RECONSTRUCTION_METRIC: &str = "validation_reconstruction_l1";

/// Pre-trains the purifier; writes `out/purifier-pretrained.safetensors`.
pub fn pretrain(ctx: &StageContext) -> Result<StageResult<Purifier>> {
    let (cfg, data, device, out, resume) = (ctx.cfg, ctx.data, ctx.device, ctx.out, ctx.resume);
    refuse_identity(&cfg.purifier, "pretrain")?;
    let train_device = device.clone().autodiff();
    let (purifier, discriminator) =
        with_backend_seed(&train_device, cfg.run.seed ^ stream::PRETRAIN, || {
            anyhow::Ok((
                cfg.purifier.init(&train_device)?,
                cfg.discriminator_config().init(&train_device)?,
            ))
        })?;
    let mut stage = PretrainStage {
        training: PurifierTraining::new(purifier, Some(discriminator), &cfg.pretrain),
        transform: cfg.transform.clone(),
        cfg: cfg.pretrain.clone(),
        train: &data.train,
        val: &data.val,
        device: train_device,
        purify_size: cfg.data.purify_size,
    };
    let outcome = run_stage(
        &mut stage,
        &schedule(&cfg.pretrain, data.train.len(), cfg, stream::PRETRAIN),
        out,
        &config_hash(cfg, "pretrain"),
        resume,
    )?;
    let purifier = stage.training.purifier().clone();
    let mut m = manifest(ctx, "pretrain", &outcome);
    let warnings = gan_health(out, "pretrain", &mut m)?;
    m.classifier = None;
    m.purifier = Some(cfg.purifier.clone());
    m.transform = Some(cfg.transform.clone());
    m.purify_size = cfg.data.purify_size;
    if let Some(v) = outcome.best_score {
        m.metrics.push(Metric {
            name: RECONSTRUCTION_METRIC.into(),
            value: -v,
            protocol: serde_json::json!({"range": "[-1,1]", "epoch": outcome.best_epoch}),
        });
    }
    let artifact = Artifact::new(m, None, Some(&purifier.valid()), None)?;
    let path = out.join("purifier-pretrained.safetensors");
    write_artifact(&path, &artifact)?;
    Ok(StageResult {
        source: input_source(&path, &artifact),
        model: purifier,
        artifact_path: path,
        validation: outcome.best_score,
        warnings,
    })
}

/// AToP's batch size, gradient passes per training attack, and what the
/// attack differentiates through.
fn finetune_compute_terms(cfg: &RunConfig) -> (usize, usize, &'static str) {
    let attack_steps = match cfg.finetune.attack {
        TrainingAttackKind::Fgsm => 1,
        TrainingAttackKind::Pgd => cfg.finetune.attack_steps.max(1),
    };
    let through = match cfg.finetune.attack_through {
        AttackThrough::Defense => "defense",
        AttackThrough::Classifier => "classifier",
    };
    (cfg.finetune.optim.batch_size, attack_steps, through)
}

/// What fine-tuning starts from: the models and the configurations that
/// describe them (from their artifacts, not from the run configuration).
pub struct FinetuneInputs {
    pub classifier: Classifier,
    pub classifier_config: ClassifierConfig,
    pub purifier: Purifier,
    pub purifier_config: PurifierConfig,
    /// Identifies the inputs (their payload hashes) in the checkpoint's config hash.
    pub id: String,
    /// Where the inputs came from (artifact paths and identities), recorded
    /// in the manifest as `training.inputs` so `atop reproduce` finds them.
    pub sources: serde_json::Value,
}

/// An input artifact as a manifest records it: its path and identity.
pub fn input_source(path: &Path, artifact: &Artifact) -> serde_json::Value {
    serde_json::json!({
        "path": path.display().to_string(),
        "defense_sha256": artifact.manifest.defense_sha256,
        "payload_sha256": artifact.manifest.payload_sha256,
    })
}

/// AToP fine-tuning of the input purifier against the frozen classifier;
/// writes `out/atop.safetensors` (classifier + fine-tuned purifier + transform).
pub fn finetune(ctx: &StageContext, inputs: FinetuneInputs) -> Result<StageResult<Purifier>> {
    let (cfg, data, device, out, resume) = (ctx.cfg, ctx.data, ctx.device, ctx.out, ctx.resume);
    let FinetuneInputs {
        classifier,
        classifier_config,
        purifier,
        purifier_config,
        id,
        sources,
    } = inputs;
    refuse_identity(&purifier_config, "finetune")?;
    let train_device = device.clone().autodiff();
    let classifier = classifier.fork(&train_device).freeze();
    let purifier = purifier.fork(&train_device).train();
    let discriminator = with_backend_seed(&train_device, cfg.run.seed ^ stream::FINETUNE, || {
        cfg.discriminator_config().init(&train_device)
    })?;
    let mut stage = FinetuneStage {
        training: PurifierTraining::new(purifier, Some(discriminator), &cfg.finetune.optim),
        classifier: classifier.clone(),
        transform: cfg.transform.clone(),
        cfg: cfg.finetune.clone(),
        train: &data.train,
        val: &data.val,
        device: train_device,
        purify_size: cfg.data.purify_size,
        epoch_writer: None,
    };
    if cfg.finetune.keep_epoch_artifacts {
        let (classifier, base) = (
            classifier.valid(),
            manifest(ctx, "finetune", &Outcome::none()),
        );
        let mut base = base;
        base.classifier = Some(classifier_config.clone());
        base.purifier = Some(purifier_config.clone());
        base.transform = Some(cfg.transform.clone());
        base.purify_size = cfg.data.purify_size;
        let dir = out.join("epochs");
        let (batch, attack_steps, through) = finetune_compute_terms(cfg);
        stage.epoch_writer = Some(Box::new(move |end, purifier| {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let mut m = base.clone();
            let so_far = Outcome {
                best_score: None,
                best_epoch: None,
                wall_seconds: end.wall_seconds,
                steps: end.steps,
            };
            m.training["epoch"] = serde_json::json!(end.epoch);
            m.training["wall_seconds"] = serde_json::json!(end.wall_seconds);
            m.training["compute"] = training_compute(&so_far, batch, attack_steps, through);
            m.metrics.push(Metric {
                name: "validation_robust_accuracy_training_attack".into(),
                value: end.validation,
                protocol: serde_json::json!({"epoch": end.epoch, "split": "validation carved from training data"}),
            });
            let epoch = end.epoch;
            write_artifact(
                &dir.join(format!("atop-epoch-{epoch:03}.safetensors")),
                &Artifact::new(m, Some(&classifier), Some(purifier), None)?,
            )
        }));
    }
    let outcome = run_stage(
        &mut stage,
        &schedule(&cfg.finetune.optim, data.train.len(), cfg, stream::FINETUNE),
        out,
        &config_hash(cfg, &format!("finetune {id}")),
        resume,
    )?;
    let purifier = stage.training.purifier().clone();
    let mut m = manifest(ctx, "finetune", &outcome);
    let warnings = gan_health(out, "finetune", &mut m)?;
    let (batch, attack_steps, through) = finetune_compute_terms(cfg);
    m.training["compute"] = training_compute(&outcome, batch, attack_steps, through);
    m.training["inputs"] = sources;
    m.classifier = Some(classifier_config);
    m.purifier = Some(purifier_config);
    m.transform = Some(cfg.transform.clone());
    m.purify_size = cfg.data.purify_size;
    if let Some(v) = outcome.best_score {
        m.metrics.push(Metric {
            name: "validation_robust_accuracy_training_attack".into(),
            value: v,
            protocol: serde_json::json!({
                "attack": cfg.finetune.attack, "through": cfg.finetune.attack_through,
                "eps": cfg.finetune.attack_eps, "epoch": outcome.best_epoch,
                "split": "validation carved from training data",
                "reconstruction_target": "clean",
            }),
        });
    }
    let artifact = Artifact::new(m, Some(&classifier.valid()), Some(&purifier.valid()), None)?;
    let path = out.join("atop.safetensors");
    write_artifact(&path, &artifact)?;
    Ok(StageResult {
        source: input_source(&path, &artifact),
        model: purifier,
        artifact_path: path,
        validation: outcome.best_score,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_purifier_is_not_trained() {
        let identity = PurifierConfig::Identity(IdentityConfig { image_channels: 1 });
        let e = refuse_identity(&identity, "pretrain")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("pretrain:") && e.contains("no weights"),
            "{e}"
        );
    }
}
