//! `atop reproduce ARTIFACT --out D`: reruns the stage that made an
//! artifact, with the configuration, seeds and inputs its manifest records,
//! on the same data (checked by hash), then compares the new payload with
//! the artifact's: identical bits where the backend and thread geometry
//! allow it, otherwise a per-tensor difference report and the recorded
//! metrics side by side.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use atop::artifact::{Artifact, FileHash};

use super::{command_line, select_device};
use crate::config::RunConfig;
use crate::fsutil::{OutputLock, read_artifact, write_atomic};
use crate::run_data::{RunData, load_data};
use crate::train::pipeline::{self, StageContext};

/// What reproduce needs from a manifest, or the name of what is missing.
struct Recipe {
    stage: String,
    cfg: RunConfig,
    /// Finetune's input artifacts: (role, recorded path, recorded identity),
    /// each `None` where the manifest predates `training.inputs`.
    inputs: Vec<(String, Option<PathBuf>, Option<String>)>,
}

fn recipe(artifact: &Artifact, name: &str) -> Result<Recipe> {
    let training = &artifact.manifest.training;
    let stage = training["stage"].as_str().with_context(|| {
        format!("{name}: the manifest has no training.stage: it was not made by atop's training, so there is nothing to rerun")
    })?;
    if !matches!(stage, "train-classifier" | "pretrain" | "finetune") {
        bail!("{name}: training.stage `{stage}` is not one atop reproduce reruns");
    }
    let config = training
        .get("config")
        .filter(|c| !c.is_null())
        .with_context(|| {
            format!("{name}: the manifest records no training.config (the resolved configuration)")
        })?;
    let cfg: RunConfig = serde_json::from_value(config.clone()).with_context(|| {
        format!("{name}: training.config is not a configuration this atop reads")
    })?;
    cfg.validate()
        .with_context(|| format!("{name}: training.config"))?;
    let mut inputs = Vec::new();
    if stage == "finetune" {
        for role in ["classifier", "purifier"] {
            let source = &training["inputs"][role];
            inputs.push((
                role.to_string(),
                source["path"].as_str().map(PathBuf::from),
                source["defense_sha256"].as_str().map(String::from),
            ));
        }
    }
    Ok(Recipe {
        stage: stage.to_string(),
        cfg,
        inputs,
    })
}

/// The data files must be the ones the artifact was trained on.
fn check_data(artifact: &Artifact, data: &RunData, name: &str) -> Result<()> {
    let recorded: &[FileHash] = artifact
        .manifest
        .dataset
        .as_ref()
        .map_or(&[], |d| d.files.as_slice());
    let here: Vec<&FileHash> = data.train.files.iter().chain(&data.test.files).collect();
    for f in recorded {
        let found = here
            .iter()
            .find(|h| h.path == f.path || h.sha256 == f.sha256);
        match found {
            Some(h) if h.sha256 == f.sha256 => {}
            Some(h) => bail!(
                "{name}: data file {} has SHA-256 {}, the artifact was trained on {}",
                h.path,
                h.sha256,
                f.sha256
            ),
            None => bail!(
                "{name}: the data file {} ({}) is not among the data this configuration loads",
                f.path,
                f.sha256
            ),
        }
    }
    Ok(())
}

/// The finetune inputs, from the recorded paths or the overrides, checked
/// against the recorded identities.
fn finetune_inputs(
    recipe: &Recipe,
    overrides: [Option<&Path>; 2],
    device: &burn::tensor::Device,
) -> Result<pipeline::FinetuneInputs> {
    let mut loaded = Vec::new();
    for ((role, path, sha), given) in recipe.inputs.iter().zip(overrides) {
        let Some(path) = given.or(path.as_deref()) else {
            bail!(
                "the manifest records no training.inputs.{role} (the input's path and identity): \
                 pass --{role} to name the input artifact"
            );
        };
        let a =
            read_artifact(path).with_context(|| format!("the {role} input {}", path.display()))?;
        if let Some(sha) = sha
            && a.manifest.defense_sha256 != *sha
        {
            bail!(
                "{}: identity {} is not the {role} the artifact was fine-tuned from ({sha})",
                path.display(),
                a.manifest.defense_sha256
            );
        }
        loaded.push((path.to_path_buf(), a));
    }
    let [(c_path, c), (p_path, p)] = <[_; 2]>::try_from(loaded)
        .map_err(|_| anyhow::anyhow!("finetune needs a classifier and a purifier input"))?;
    let (c_name, p_name) = (c_path.display().to_string(), p_path.display().to_string());
    Ok(pipeline::FinetuneInputs {
        id: format!(
            "{} {}",
            c.manifest.defense_sha256, p.manifest.defense_sha256
        ),
        classifier: c.classifier(device, &c_name)?,
        classifier_config: c.manifest.classifier.clone().context("no classifier")?,
        purifier: p.purifier(device, &p_name)?,
        purifier_config: p.manifest.purifier.clone().context("no purifier")?,
        sources: serde_json::json!({
            "classifier": pipeline::input_source(&c_path, &c),
            "purifier": pipeline::input_source(&p_path, &p),
        }),
    })
}

/// Per tensor of the original: its largest absolute difference from the
/// rerun's (None where the rerun lacks it or the shape differs).
fn differences(original: &Artifact, rerun: &Artifact) -> Result<Vec<(String, Option<f32>)>> {
    let mut out = Vec::new();
    for (name, t) in &original.tensors {
        let diff = match rerun.tensors.get(name) {
            Some(r) if r.shape() == t.shape() => {
                let (a, b) = (t.to_data(name)?, r.to_data(name)?);
                let (a, b) = (
                    a.convert::<f32>().try_into_vec::<f32>(),
                    b.convert::<f32>().try_into_vec::<f32>(),
                );
                match (a, b) {
                    (Ok(a), Ok(b)) => Some(
                        a.iter()
                            .zip(&b)
                            .fold(0f32, |m, (x, y)| m.max((x - y).abs())),
                    ),
                    _ => None,
                }
            }
            _ => None,
        };
        out.push((name.clone(), diff));
    }
    Ok(out)
}

/// `atop reproduce`.
pub fn run(args: &crate::cli::ReproduceArgs) -> Result<()> {
    let name = args.artifact.display().to_string();
    let original = read_artifact(&args.artifact)?;
    let recipe = recipe(&original, &name)?;
    let device = select_device(&args.device)?;
    let command = command_line();
    let _lock = OutputLock::acquire(&args.out, &command)?;
    let data = load_data(&recipe.cfg)?;
    check_data(&original, &data, &name)?;
    let ctx = StageContext {
        cfg: &recipe.cfg,
        data: &data,
        device: &device,
        out: &args.out,
        resume: args.resume,
        command: &command,
    };
    let path = match recipe.stage.as_str() {
        "train-classifier" => pipeline::train_classifier(&ctx)?.artifact_path,
        "pretrain" => pipeline::pretrain(&ctx)?.artifact_path,
        _ => {
            let overrides = [args.classifier.as_deref(), args.purifier.as_deref()];
            let inputs = finetune_inputs(&recipe, overrides, &device)?;
            pipeline::finetune(&ctx, inputs)?.artifact_path
        }
    };
    let rerun = read_artifact(&path)?;
    let report = comparison(&name, &original, &path, &rerun)?;
    write_atomic(&args.out.join("reproduce.md"), report.as_bytes())?;
    crate::stdout::print(&report)
}

/// The comparison as markdown: identical bits, or per-tensor differences
/// and the recorded metrics side by side.
fn comparison(name: &str, original: &Artifact, path: &Path, rerun: &Artifact) -> Result<String> {
    let (a, b) = (&original.manifest, &rerun.manifest);
    let mut md = format!("# atop reproduce {name}\n\n* rerun: `{}`\n", path.display());
    let _ = writeln!(
        md,
        "* payload: original `{}`, rerun `{}`",
        a.payload_sha256, b.payload_sha256
    );
    if a.payload_sha256 == b.payload_sha256 {
        let _ = writeln!(
            md,
            "\n**Identical bits**: the rerun's weights are the artifact's."
        );
        return Ok(md);
    }
    let _ = writeln!(
        md,
        "\n**Not the same bits** (another backend, thread geometry or code gives other sums).\n\n| tensor | largest absolute difference |\n|---|---|"
    );
    for (tensor, diff) in differences(original, rerun)? {
        let cell = diff.map_or("missing or reshaped in the rerun".to_string(), |d| {
            format!("{d:.3e}")
        });
        let _ = writeln!(md, "| {tensor} | {cell} |");
    }
    let _ = writeln!(md, "\n| metric | original | rerun |\n|---|---|---|");
    for m in &a.metrics {
        let other = b.metrics.iter().find(|o| o.name == m.name);
        let cell = other.map_or("-".to_string(), |o| format!("{:.4}", o.value));
        let _ = writeln!(md, "| {} | {:.4} | {cell} |", m.name, m.value);
    }
    Ok(md)
}
