//! The browser demo's counterparts in the trainer: `atop export-web` bundles
//! test images into an artifact for the demo, and `atop attack` replays a
//! demo permalink natively (same shared code, so the same logits).

use std::path::Path;

use anyhow::{Context, Result, bail};
use atop::artifact::Samples;
use atop::demo::{self, DemoAttackRun, DemoModels, Permalink};
use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;

use crate::config::RunConfig;
use crate::fsutil::write_atomic;
use crate::fsutil::{read_artifact, write_artifact};

/// Indices of `count` test images, classes taken in turn (the first unused
/// image of class 0, of class 1, ...), so every class appears.
pub fn balanced_indices(labels: &[i64], classes: usize, count: usize) -> Vec<usize> {
    let mut per_class: Vec<std::collections::VecDeque<usize>> = vec![Default::default(); classes];
    for (i, &l) in labels.iter().enumerate() {
        if let Some(queue) = usize::try_from(l).ok().and_then(|l| per_class.get_mut(l)) {
            queue.push_back(i);
        }
    }
    let mut out = Vec::with_capacity(count);
    while out.len() < count && per_class.iter().any(|q| !q.is_empty()) {
        for queue in per_class.iter_mut() {
            if out.len() == count {
                break;
            }
            if let Some(i) = queue.pop_front() {
                out.push(i);
            }
        }
    }
    out
}

/// `atop export-web`: the artifact plus `count` test images of the config's dataset.
fn export_web(
    cfg: &RunConfig,
    artifact: &Path,
    count: usize,
    half: bool,
    out: &Path,
) -> Result<()> {
    if count == 0 {
        bail!("--samples must be at least 1");
    }
    let source = read_artifact(artifact)?;
    let (_, test) = crate::data::load(
        cfg.data.dataset,
        cfg.data.dir.as_deref(),
        cfg.data.image_size,
    )?;
    let indices = balanced_indices(&test.labels, test.class_names.len(), count);
    let subset = test.subset(&indices);
    let [c, h, w] = subset.shape;
    if let Some(d) = &source.manifest.dataset
        && d.image_shape != subset.shape
    {
        bail!(
            "{}: the artifact's models take {:?} images, {} has {:?}",
            artifact.display(),
            d.image_shape,
            subset.name,
            subset.shape
        );
    }
    let samples = Samples {
        images: TensorData::new(subset.images.clone(), [subset.len(), c, h, w]),
        labels: subset.labels.clone(),
    };
    let mut bundled = source.with_samples(&samples)?;
    if half {
        bundled = bundled.to_half();
    }
    write_artifact(out, &bundled)?;
    crate::stdout::print(&format!(
        "{}: {} weights, {} {} test images (indices {:?}), defense sha256 {}",
        out.display(),
        if half { "f16" } else { "f32" },
        subset.len(),
        subset.name,
        indices,
        bundled.manifest.defense_sha256
    ))
}

/// What `atop attack` prints: the numbers the browser shows for the same link.
#[derive(Serialize)]
pub struct AttackReport {
    pub permalink: String,
    pub label: i64,
    pub clean_logits: Vec<f32>,
    pub adversarial_logits: Vec<f32>,
    pub defended_logits: Vec<f32>,
    /// The adversarial image `[c, h, w]`, row-major, in [0,1].
    pub adversarial: Vec<f32>,
    pub predictions: Predictions,
}

#[derive(Serialize)]
pub struct Predictions {
    pub clean: String,
    pub adversarial: String,
    pub defended: String,
}

fn values<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<f32>> {
    Ok(atop::host::floats(t, what)?)
}

/// An adversarial image given as a JSON array of `[c, h, w]` values in
/// [0,1], as a `[1, c, h, w]` tensor on `device`.
fn read_adversarial(path: &Path, [c, h, w]: [usize; 3], device: &Device) -> Result<Tensor<4>> {
    use std::io::Read;
    let name = path.display();
    // An image of these sides is at most a few MB of JSON: read one byte
    // past that and refuse the file if it is there (a pipe or a growing file
    // included), so the work stays bounded.
    let limit = 64 * (c * h * w) as u64 + 4096;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_string(&mut text))
        .with_context(|| format!("--adversarial {name}"))?;
    if text.len() as u64 > limit {
        bail!("--adversarial {name}: more than {limit} bytes, too large for a {c}x{h}x{w} image");
    }
    let values: Vec<f32> = serde_json::from_str(&text)
        .with_context(|| format!("--adversarial {name}: expected a JSON array of numbers"))?;
    if values.len() != c * h * w {
        bail!(
            "--adversarial {name}: {} values, the models take {c}x{h}x{w} = {}",
            values.len(),
            c * h * w
        );
    }
    if let Some((i, v)) = values
        .iter()
        .enumerate()
        .find(|(_, v)| !(0.0..=1.0).contains(*v))
    {
        bail!("--adversarial {name}: value {i} is {v}, outside [0,1]");
    }
    Ok(Tensor::from_data(
        TensorData::new(values, [1, c, h, w]),
        device,
    ))
}

/// `atop attack`: replays a demo permalink on `artifact_path`; with
/// `adversarial`, scores that image instead of attacking.
fn attack(
    artifact_path: &Path,
    link: &str,
    adversarial: Option<&Path>,
    device: &Device,
) -> Result<AttackReport> {
    // The page's links carry the settings in the fragment (`...#v=2&...`).
    let query = link
        .rsplit_once('#')
        .or_else(|| link.rsplit_once('?'))
        .map_or(link, |(_, q)| q);
    let link = Permalink::from_query(query).context("--link")?;
    let name = artifact_path.display().to_string();
    let artifact = read_artifact(artifact_path)?;
    if artifact.manifest.defense_sha256 != link.artifact_sha256 {
        bail!(
            "--link names artifact {} but {name} holds {}",
            link.artifact_sha256,
            artifact.manifest.defense_sha256
        );
    }
    let models = DemoModels::load(&artifact, device, &name)?;
    let defense = models.defense(link.transform);
    let (image, label) = models.image(&link.image)?;
    let clean = values(defense.classify(image.clone())?, "clean logits")?;
    let label = demo::attack_label(label, &clean);
    let adversarial = match adversarial {
        Some(path) => read_adversarial(path, models.input, &image.device())?,
        None => {
            let mut run = DemoAttackRun::start(&defense, image.clone(), label, &link)?;
            let mut bar = crate::progress::Progress::new("attack", run.total_steps(), 0);
            while !run.is_finished() {
                run.step(&defense)?;
                bar.inc(1);
            }
            bar.finish();
            run.finish()
        }
    };
    let outcome = demo::outcome(&defense, image, adversarial, link.seed)?;
    let top = |logits: &[f32]| {
        let (class, p) = demo::top_predictions(logits)[0];
        format!("{} ({:.1}%)", models.class_names[class], 100.0 * p)
    };
    let clean_logits = values(outcome.clean_logits, "clean logits")?;
    let adversarial_logits = values(outcome.adversarial_logits, "adversarial logits")?;
    let defended_logits = values(outcome.defended_logits, "defended logits")?;
    Ok(AttackReport {
        permalink: link.to_query(),
        label,
        predictions: Predictions {
            clean: top(&clean_logits),
            adversarial: top(&adversarial_logits),
            defended: top(&defended_logits),
        },
        clean_logits,
        adversarial_logits,
        defended_logits,
        adversarial: values(outcome.adversarial, "adversarial image")?,
    })
}

/// `atop attack`: replays a link and prints (or writes) what the page shows.
pub fn attack_command(
    artifact: &Path,
    link: &str,
    adversarial: Option<&Path>,
    device: &Device,
    json: Option<&Path>,
) -> Result<()> {
    emit(&attack(artifact, link, adversarial, device)?, json)
}

/// `atop export-web`.
pub fn export_web_command(args: &crate::cli::ExportWebArgs) -> Result<()> {
    let cfg = RunConfig::load(&args.config, &args.overrides)?;
    export_web(&cfg, &args.artifact, args.samples, args.half, &args.out)
}

/// Writes the report as JSON to `path` (atomically) or prints it.
fn emit(report: &AttackReport, path: Option<&Path>) -> Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    match path {
        Some(p) => write_atomic(p, json.as_bytes()),
        None => crate::stdout::print(&json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_take_classes_in_turn() {
        let labels = [2, 0, 0, 1, 2, 1, 0];
        assert_eq!(balanced_indices(&labels, 3, 4), vec![1, 3, 0, 2]);
        // Fewer images than asked: all of them, still in turns.
        assert_eq!(balanced_indices(&labels, 3, 10), vec![1, 3, 0, 2, 5, 4, 6]);
    }
}
