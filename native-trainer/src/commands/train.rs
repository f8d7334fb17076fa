//! `atop train-classifier`, `atop pretrain` and `atop finetune`: one stage
//! each, its artifact, and its training curves.

use anyhow::{Context, Result};

use super::{draw_plots, with_run};
use crate::cli::{FinetuneArgs, RunArgs};
use crate::train::pipeline;

pub fn train_classifier(run: &RunArgs) -> Result<()> {
    with_run(run, |cfg, dev| {
        let data = pipeline::load_data(cfg)?;
        pipeline::train_classifier(cfg, &data, dev, run.out(), run.resume)?;
        draw_plots(run.out(), None)
    })
}

pub fn pretrain(run: &RunArgs) -> Result<()> {
    with_run(run, |cfg, dev| {
        let data = pipeline::load_data(cfg)?;
        pipeline::pretrain(cfg, &data, dev, run.out(), run.resume)?;
        draw_plots(run.out(), None)
    })
}

/// Fine-tunes the purifier of one artifact against the classifier of
/// another, with the model configurations their manifests name.
pub fn finetune(args: &FinetuneArgs) -> Result<()> {
    let run = &args.run;
    with_run(run, |cfg, dev| {
        let data = pipeline::load_data(cfg)?;
        let (c_path, p_path) = (&args.classifier, &args.purifier);
        let c = pipeline::read_artifact(c_path)?;
        let p = pipeline::read_artifact(p_path)?;
        let (c_name, p_name) = (c_path.display().to_string(), p_path.display().to_string());
        let inputs = pipeline::FinetuneInputs {
            id: format!(
                "{} {}",
                c.manifest.defense_sha256, p.manifest.defense_sha256
            ),
            classifier: c.classifier(dev, &c_name)?,
            classifier_config: c.manifest.classifier.clone().context("no classifier")?,
            purifier: p.purifier(dev, &p_name)?,
            purifier_config: p.manifest.purifier.clone().context("no purifier")?,
        };
        pipeline::finetune(cfg, &data, inputs, dev, run.out(), run.resume)?;
        draw_plots(run.out(), None)
    })
}
