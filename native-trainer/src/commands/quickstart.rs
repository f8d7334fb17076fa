//! `atop quickstart`: on Fashion-MNIST with small models, train the
//! classifier, AToP-fine-tune the shipped pre-trained purifier (or pre-train
//! one with `--pretrain`), then evaluate the classifier and both defenses.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use atop::artifact::sha256_hex;
use burn::tensor::Device;

use super::{command_line, draw_plots, with_run};
use crate::cli::QuickstartArgs;
use crate::config::RunConfig;
use crate::eval::report;
use crate::eval::run::{DefenseInput, EvalJob, evaluate_and_report};
use crate::train::pipeline;

pub fn run(args: &QuickstartArgs) -> Result<()> {
    with_run(&args.run, |cfg, dev| {
        quickstart(cfg, dev, args, &command_line())
    })
}

fn quickstart(
    cfg: &RunConfig,
    device: &Device,
    args: &QuickstartArgs,
    command_line: &str,
) -> Result<()> {
    let start = Instant::now();
    let run = &args.run;
    let out = run.out();
    // Checked before any training, so a wrong file fails in a second.
    let shipped = match args.pretrain {
        true => None,
        false => Some(shipped_purifier(cfg, &args.purifier, device)?),
    };
    let data = crate::run_data::load_data(cfg)?;
    let ctx = pipeline::StageContext {
        cfg,
        data: &data,
        device,
        out,
        resume: run.resume,
        command: command_line,
    };
    let classifier = pipeline::train_classifier(&ctx)?;
    let pretrained = match shipped {
        Some(purifier) => purifier,
        None => pipeline::pretrain(&ctx)?,
    };
    let inputs = pipeline::FinetuneInputs {
        classifier: classifier.model.clone(),
        classifier_config: cfg.classifier.clone(),
        purifier: pretrained.model.clone(),
        purifier_config: cfg.purifier.clone(),
        id: "quickstart".into(),
        sources: serde_json::json!({
            "classifier": classifier.source,
            "purifier": pretrained.source,
        }),
    };
    let finetuned = pipeline::finetune(&ctx, inputs)?;
    // The quickstart's artifact is the fine-tuned one, under its public name.
    let final_path = out.join("fmnist-atop.safetensors");
    std::fs::copy(&finetuned.artifact_path, &final_path)
        .with_context(|| format!("cannot write {}", final_path.display()))?;
    let sha = |p: &Path| -> Result<(String, String)> {
        Ok((
            p.display().to_string(),
            sha256_hex(&crate::fsutil::read_artifact_bytes(p)?),
        ))
    };
    let artifacts = vec![
        sha(&classifier.artifact_path)?,
        sha(&pretrained.artifact_path)?,
        sha(&final_path)?,
    ];
    let defense = |name: &str, purifier, path: &Path| DefenseInput {
        name: name.into(),
        purifier,
        classifier: 0,
        transform: cfg.transform.clone(),
        purify_size: cfg.data.purify_size,
        source: format!("the run configuration, as trained into {}", path.display()),
    };
    let inputs = [
        defense(
            "RT+purifier (pre-trained)",
            &pretrained.model,
            &pretrained.artifact_path,
        ),
        defense("RT+purifier (AToP)", &finetuned.model, &final_path),
    ];
    let eval = evaluate_and_report(EvalJob {
        cfg,
        data: &data,
        classifiers: &[("classifier".into(), &classifier.model)],
        classifier_records: vec![report::ClassifierRecord {
            name: "classifier".into(),
            source: format!("trained into {}", classifier.artifact_path.display()),
            training: "standard training".into(),
        }],
        inputs: &inputs,
        device,
        out,
        resume: run.resume,
        shard: None,
        artifacts,
        title: "atop quickstart: Fashion-MNIST".into(),
        command: command_line,
        started: start,
        training: Some(serde_json::json!({
            "classifier_validation_accuracy": classifier.validation,
            "pretrain_validation_score": pretrained.validation,
            "finetune_validation_robust_accuracy": finetuned.validation,
            "warnings": pretrained.warnings.iter().chain(&finetuned.warnings).collect::<Vec<_>>(),
        })),
    })?;
    draw_plots(out, Some((&eval, "atop quickstart: Fashion-MNIST")))
}

/// The pre-trained purifier the quickstart starts from. Fine-tuning and the
/// evaluation use the run configuration's transform, so the artifact must
/// have been pre-trained with that transform and purifier architecture.
fn shipped_purifier(
    cfg: &RunConfig,
    path: &Path,
    device: &Device,
) -> Result<pipeline::StageResult<atop::model::Purifier>> {
    let artifact = crate::fsutil::read_artifact(path)
        .context("the quickstart starts from this pre-trained purifier (or pass --pretrain)")?;
    let m = &artifact.manifest;
    let mismatch = if m.purifier.as_ref() != Some(&cfg.purifier) {
        Some("purifier")
    } else if m.transform.as_ref() != Some(&cfg.transform) {
        Some("transform")
    } else if m.purify_size != cfg.data.purify_size {
        Some("data.purify_size")
    } else {
        None
    };
    if let Some(section) = mismatch {
        anyhow::bail!(
            "{}: its [{section}] differs from the run configuration's, so fine-tuning would \
             train it for another setting; use the configuration it was pre-trained with \
             (`atop inspect {}`), or pre-train from scratch with --pretrain",
            path.display(),
            path.display()
        );
    }
    let model = artifact.purifier(device, &path.display().to_string())?;
    // The same score `pipeline::pretrain` returns: minus the validation L1.
    let validation = m
        .metrics
        .iter()
        .find(|metric| metric.name == pipeline::RECONSTRUCTION_METRIC)
        .map(|metric| -metric.value);
    tracing::info!("starting from the pre-trained purifier {}", path.display());
    Ok(pipeline::StageResult {
        model,
        artifact_path: path.to_path_buf(),
        source: pipeline::input_source(path, &artifact),
        validation,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository's pre-trained purifier (the conv AE) is what
    /// configs/fmnist-pretrain.toml makes, and `atop quickstart`
    /// (configs/fmnist.toml) accepts it.
    #[test]
    fn the_shipped_purifier_comes_from_fmnist_pretrain_and_fits_the_quickstart() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let quickstart = RunConfig::load(&root.join("configs/fmnist.toml"), &[]).unwrap();
        let pretrain = RunConfig::load(&root.join("configs/fmnist-pretrain.toml"), &[]).unwrap();
        let differ =
            |section: &str| format!("[{section}] of fmnist.toml and fmnist-pretrain.toml differ");
        assert_eq!(quickstart.data, pretrain.data, "{}", differ("data"));
        assert_eq!(
            quickstart.purifier,
            pretrain.purifier,
            "{}",
            differ("purifier")
        );
        assert_eq!(
            quickstart.discriminator,
            pretrain.discriminator,
            "{}",
            differ("discriminator")
        );
        assert_eq!(
            quickstart.transform,
            pretrain.transform,
            "{}",
            differ("transform")
        );
        assert_eq!(quickstart.run, pretrain.run, "{}", differ("run"));
        let path = root.join("models/fmnist-ae-purifier.safetensors");
        shipped_purifier(&quickstart, &path, &Device::flex()).unwrap();
        let artifact = crate::fsutil::read_artifact(&path).unwrap();
        let training = &artifact.manifest.training;
        assert_eq!(training["stage"], "pretrain");
        assert!(
            training["command"]
                .as_str()
                .unwrap()
                .contains("configs/fmnist-pretrain.toml"),
            "{}",
            training["command"]
        );
        assert_eq!(recorded_pretrain(training), pretrain.pretrain);
        assert!(training["wall_seconds"].as_f64().unwrap() > 0.0);
    }

    /// The repository's GAN inpainter is accepted by the quickstart with the
    /// GAN override the configurations give, and records that it was made by
    /// fmnist-pretrain.toml's budget.
    #[test]
    fn the_shipped_gan_purifier_fits_the_quickstart_with_the_gan_override() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let gan = r#"purifier={kind="gan",image_channels=1,cnum=16}"#.to_string();
        let quickstart = RunConfig::load(
            &root.join("configs/fmnist.toml"),
            std::slice::from_ref(&gan),
        )
        .unwrap();
        let pretrain = RunConfig::load(&root.join("configs/fmnist-pretrain.toml"), &[gan]).unwrap();
        let path = root.join("models/fmnist-gan-purifier.safetensors");
        shipped_purifier(&quickstart, &path, &Device::flex()).unwrap();
        // Without the override the AE configuration refuses it.
        let ae = RunConfig::load(&root.join("configs/fmnist.toml"), &[]).unwrap();
        assert!(shipped_purifier(&ae, &path, &Device::flex()).is_err());
        let training = &crate::fsutil::read_artifact(&path)
            .unwrap()
            .manifest
            .training;
        assert_eq!(recorded_pretrain(training), pretrain.pretrain);
    }

    /// The `[pretrain]` settings a pre-trained artifact's manifest records.
    fn recorded_pretrain(training: &serde_json::Value) -> crate::config::OptimConfig {
        serde_json::from_value(training["config"]["pretrain"].clone()).unwrap()
    }
}
