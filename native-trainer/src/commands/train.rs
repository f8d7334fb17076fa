//! `atop train-classifier`, `atop pretrain` and `atop finetune`: one stage
//! each, its artifact, and its training curves.

use anyhow::{Context, Result};

use super::{command_line, draw_plots, with_run};
use crate::cli::{FinetuneArgs, RunArgs};
use crate::train::pipeline::{self, StageContext};

/// Runs `stage` with the run's configuration, data, device and output
/// directory (locked), then draws the training curves.
fn with_stage(run: &RunArgs, stage: impl FnOnce(&StageContext) -> Result<()>) -> Result<()> {
    let command = command_line();
    with_run(run, |cfg, device| {
        let data = crate::run_data::load_data(cfg)?;
        stage(&StageContext {
            cfg,
            data: &data,
            device,
            out: run.out(),
            resume: run.resume,
            command: &command,
        })?;
        draw_plots(run.out(), None)
    })
}

pub fn train_classifier(run: &RunArgs) -> Result<()> {
    with_stage(run, |ctx| pipeline::train_classifier(ctx).map(drop))
}

pub fn pretrain(run: &RunArgs) -> Result<()> {
    with_stage(run, |ctx| pipeline::pretrain(ctx).map(drop))
}

/// Fine-tunes the purifier of one artifact against the classifier of
/// another, with the model configurations their manifests name.
pub fn finetune(args: &FinetuneArgs) -> Result<()> {
    with_stage(&args.run, |ctx| {
        let (c_path, p_path) = (&args.classifier, &args.purifier);
        let c = crate::fsutil::read_artifact(c_path)?;
        let p = crate::fsutil::read_artifact(p_path)?;
        let (c_name, p_name) = (c_path.display().to_string(), p_path.display().to_string());
        let inputs = pipeline::FinetuneInputs {
            id: format!(
                "{} {}",
                c.manifest.defense_sha256, p.manifest.defense_sha256
            ),
            classifier: c.classifier(ctx.device, &c_name)?,
            classifier_config: c.manifest.classifier.clone().context("no classifier")?,
            purifier: p.purifier(ctx.device, &p_name)?,
            purifier_config: p.manifest.purifier.clone().context("no purifier")?,
            sources: serde_json::json!({
                "classifier": pipeline::input_source(c_path, &c),
                "purifier": pipeline::input_source(p_path, &p),
            }),
        };
        pipeline::finetune(ctx, inputs).map(drop)
    })
}
