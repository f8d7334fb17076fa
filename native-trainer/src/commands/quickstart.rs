//! `atop quickstart`: every stage on Fashion-MNIST with small models, then
//! the evaluation of the classifier and both defenses.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use atop::artifact::sha256_hex;
use burn::tensor::Device;

use super::{command_line, draw_plots, with_run};
use crate::cli::RunArgs;
use crate::config::RunConfig;
use crate::eval::report;
use crate::eval::run::{DefenseInput, run_eval};
use crate::train::pipeline;
use crate::{eval, stdout};

pub fn run(run: &RunArgs) -> Result<()> {
    with_run(run, |cfg, dev| quickstart(cfg, dev, run, &command_line()))
}

fn quickstart(cfg: &RunConfig, device: &Device, run: &RunArgs, command_line: &str) -> Result<()> {
    let start = Instant::now();
    let out = run.out();
    let data = pipeline::load_data(cfg)?;
    let classifier = pipeline::train_classifier(cfg, &data, device, out, run.resume)?;
    let pretrained = pipeline::pretrain(cfg, &data, device, out, run.resume)?;
    let inputs = pipeline::FinetuneInputs {
        classifier: classifier.model.clone(),
        classifier_config: cfg.classifier.clone(),
        purifier: pretrained.model.clone(),
        purifier_config: cfg.purifier.clone(),
        id: "quickstart".into(),
    };
    let finetuned = pipeline::finetune(cfg, &data, inputs, device, out, run.resume)?;
    // The quickstart's artifact is the fine-tuned one, under its public name.
    let final_path = out.join("fmnist-atop.safetensors");
    std::fs::copy(&finetuned.artifact_path, &final_path)
        .with_context(|| format!("cannot write {}", final_path.display()))?;
    let sha = |p: &Path| -> Result<(String, String)> {
        Ok((p.display().to_string(), sha256_hex(&std::fs::read(p)?)))
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
    let defenses = report::records(&inputs);
    let eval = run_eval(
        cfg,
        &data,
        &[("classifier".into(), &classifier.model)],
        &inputs,
        device,
        &eval::EvalRun {
            state_path: Some(super::eval::state_path(out, None)),
            protocol_hash: super::eval::protocol_hash(cfg, &artifacts, &defenses, None),
            resume: run.resume,
            shard: None,
        },
    )?;
    let md = report::write(
        out,
        &report::Report {
            title: "atop quickstart: Fashion-MNIST".into(),
            artifacts,
            classifiers: vec![report::ClassifierRecord {
                name: "classifier".into(),
                source: format!("trained into {}", classifier.artifact_path.display()),
                training: "standard training".into(),
            }],
            defenses,
            dataset: crate::eval::report::dataset_label(&data.test.name, cfg.eval.split),
            command: command_line.into(),
            elapsed_seconds: start.elapsed().as_secs_f64(),
            eval: &eval,
            training: Some(serde_json::json!({
                "classifier_validation_accuracy": classifier.validation,
                "pretrain_validation_score": pretrained.validation,
                "finetune_validation_robust_accuracy": finetuned.validation,
                "warnings": pretrained.warnings.iter().chain(&finetuned.warnings).collect::<Vec<_>>(),
            })),
        },
    )?;
    let _ = std::fs::remove_file(super::eval::state_path(out, None));
    stdout::print(&md)?;
    draw_plots(out, Some((&eval, "atop quickstart: Fashion-MNIST")))
}
