//! `atop eval` (with --protocol, --shard, --resume) and `atop eval merge`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use atop::artifact::{Artifact, sha256_hex};
use atop::model::{Classifier, Purifier};
use burn::tensor::Device;

use crate::cli::EvalArgs;
use crate::config::{EvalConfig, RunConfig};
use crate::eval::report;
use crate::eval::run::{DefenseInput, EvalJob, evaluate_and_report};
use crate::eval::{EvalReport, Shard};

/// What `atop eval` was asked to do.
pub struct EvalRequest<'a> {
    pub out: &'a Path,
    pub resume: bool,
    /// The artifacts, evaluated side by side in this order.
    pub artifacts: &'a [PathBuf],
    pub protocol: Option<&'a Path>,
    pub shard: Option<Shard>,
    pub command_line: &'a str,
    /// Evaluate with the run configuration's [transform] and purify size
    /// instead of each artifact's (an ablation, said so in the report).
    pub override_transform: bool,
    /// The `--set` overrides, to refuse transform settings that would be ignored.
    pub overrides: &'a [String],
}

/// The defense an artifact holds, with its transform, or the override.
fn defense_input<'p>(
    subject: &'p PurifierSubject,
    loaded: &Loaded,
    cfg: &RunConfig,
    override_transform: bool,
) -> Result<DefenseInput<'p>> {
    let (name, path, purifier) = (&subject.name, &loaded.path, &subject.purifier);
    let m = &loaded.artifact.manifest;
    let identity = format!(
        "artifact {} (defense sha256 {})",
        path.display(),
        m.defense_sha256
    );
    if override_transform {
        return Ok(DefenseInput {
            name: name.clone(),
            purifier,
            classifier: subject.classifier,
            transform: cfg.transform.clone(),
            purify_size: cfg.data.purify_size,
            source: format!(
                "OVERRIDE (--override-transform): the run configuration's [transform] and \
                 data.purify_size, not those {identity} was trained with"
            ),
        });
    }
    let transform = m.transform.clone().with_context(|| {
        format!(
            "{}: the manifest names no transform; give one with --override-transform",
            path.display()
        )
    })?;
    Ok(DefenseInput {
        name: name.clone(),
        purifier,
        classifier: subject.classifier,
        transform,
        purify_size: m.purify_size,
        source: identity,
    })
}

/// An artifact given to `atop eval`, read and labelled by its file name.
struct Loaded {
    path: PathBuf,
    label: String,
    file_sha256: String,
    artifact: Artifact,
}

fn load_artifacts(paths: &[PathBuf]) -> Result<Vec<Loaded>> {
    if paths.is_empty() {
        bail!("atop eval: name at least one --artifact");
    }
    let labels = labels(paths);
    let mut loaded: Vec<Loaded> = Vec::new();
    for (path, label) in paths.iter().zip(labels) {
        if loaded.iter().any(|l| l.path == *path) {
            bail!("--artifact {}: given twice", path.display());
        }
        let bytes = crate::fsutil::read_artifact_bytes(path)?;
        let artifact = Artifact::from_bytes(&bytes, &path.display().to_string())?;
        loaded.push(Loaded {
            path: path.clone(),
            label,
            file_sha256: sha256_hex(&bytes),
            artifact,
        });
    }
    Ok(loaded)
}

/// Short names for the artifacts: the file stem, with its directory where
/// two stems agree (`quickstart/classifier`, `fmnist-at/classifier`), and a
/// number where even those agree.
fn labels(paths: &[PathBuf]) -> Vec<String> {
    let stem = |p: &Path| {
        p.file_stem()
            .map_or("artifact".into(), |s| s.to_string_lossy().into_owned())
    };
    let with_dir = |p: &Path| match p.parent().and_then(|d| d.file_name()) {
        Some(d) => format!("{}/{}", d.to_string_lossy(), stem(p)),
        None => stem(p),
    };
    let stems: Vec<String> = paths.iter().map(|p| stem(p)).collect();
    let mut labels: Vec<String> = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let shared = stems.iter().filter(|s| **s == stems[i]).count() > 1;
        let base = if shared {
            with_dir(p)
        } else {
            stems[i].clone()
        };
        let same = labels
            .iter()
            .filter(|l| **l == base || l.starts_with(&format!("{base} #")))
            .count();
        labels.push(if same == 0 {
            base
        } else {
            format!("{base} #{}", same + 1)
        });
    }
    labels
}

/// A purifier to put in front of a classifier.
struct PurifierSubject {
    name: String,
    purifier: Purifier,
    /// Index into [`Subjects::classifiers`].
    classifier: usize,
    /// Index into the loaded artifacts.
    artifact: usize,
}

/// What the artifacts hold, named for the report: each distinct classifier
/// (by its own hash, so a defense's classifier is not evaluated twice) and
/// each purifier, in front of its artifact's classifier or, when the
/// artifact holds none, the first one given.
struct Subjects {
    /// Each with its record, whose `name` names its rows.
    classifiers: Vec<(Classifier, report::ClassifierRecord)>,
    purifiers: Vec<PurifierSubject>,
}

impl Subjects {
    fn new(loaded: &[Loaded], device: &Device) -> Result<Self> {
        let mut hashes: Vec<String> = Vec::new();
        let mut owners: Vec<Option<usize>> = Vec::new();
        let mut classifiers = Vec::new();
        for l in loaded {
            let Some(hash) = l.artifact.classifier_sha256() else {
                owners.push(None);
                continue;
            };
            if let Some(i) = hashes.iter().position(|h| *h == hash) {
                owners.push(Some(i));
                continue;
            }
            let name = l.path.display().to_string();
            let model = l.artifact.classifier(device, &name)?;
            let record = report::ClassifierRecord {
                name: l.label.clone(),
                source: format!("artifact {name} (classifier sha256 {hash})"),
                training: classifier_training(&l.artifact.manifest),
            };
            owners.push(Some(classifiers.len()));
            hashes.push(hash);
            classifiers.push((model, record));
        }
        if classifiers.is_empty() {
            bail!(
                "none of the artifacts holds a classifier: give one that does (e.g. classifier.safetensors) with --artifact"
            );
        }
        let mut purifiers = Vec::new();
        for (a, l) in loaded.iter().enumerate() {
            if l.artifact.manifest.purifier.is_none() {
                continue;
            }
            let purifier = l.artifact.purifier(device, &l.path.display().to_string())?;
            purifiers.push(PurifierSubject {
                name: l.label.clone(),
                purifier,
                classifier: owners[a].unwrap_or(0),
                artifact: a,
            });
        }
        // One classifier and at most one defense keep the short names.
        let single = classifiers.len() == 1 && purifiers.len() <= 1;
        for (_, record) in &mut classifiers {
            if single {
                record.name = "classifier".into();
            } else {
                record.name = format!("classifier: {}", record.name);
            }
        }
        for p in &mut purifiers {
            p.name = if single {
                "defense".into()
            } else {
                format!("defense: {}", p.name)
            };
        }
        Ok(Self {
            classifiers,
            purifiers,
        })
    }
}

/// How an artifact's classifier was trained, as its manifest says.
fn classifier_training(m: &atop::artifact::Manifest) -> String {
    match m.training.get("adversarial_training") {
        Some(v) => format!("adversarial training {v}"),
        None => "standard training (or not recorded)".into(),
    }
}

/// The configuration with its [eval] table replaced by a protocol file.
pub fn with_protocol(cfg: &RunConfig, protocol: Option<&Path>) -> Result<RunConfig> {
    let Some(path) = protocol else {
        return Ok(cfg.clone());
    };
    let text =
        crate::fsutil::read_text_bounded(path, crate::fsutil::read_limits::TEXT_FILE, "protocol")?;
    let eval: EvalConfig = toml::from_str(&text)
        .with_context(|| format!("{}: not an evaluation protocol", path.display()))?;
    let mut cfg = cfg.clone();
    cfg.eval = eval;
    cfg.validate()
        .with_context(|| format!("protocol {}", path.display()))?;
    Ok(cfg)
}

/// `atop eval`: the report, and its results chart.
pub fn run(args: &EvalArgs) -> Result<()> {
    let command_line = super::command_line();
    super::with_run(&args.run, |cfg, dev| {
        let request = EvalRequest {
            out: args.run.out(),
            resume: args.run.resume,
            artifacts: &args.artifacts(),
            protocol: args.protocol.as_deref(),
            shard: args.shard,
            command_line: &command_line,
            override_transform: args.override_transform,
            overrides: &args.run.overrides,
        };
        let report = eval_command(cfg, dev, &request)?;
        super::draw_plots(args.run.out(), Some((&report, "atop eval")))
    })
}

/// `atop eval merge`: one report from the shards', under the output
/// directory's lock.
pub fn merge(out: &Path, reports: &[PathBuf]) -> Result<()> {
    let command_line = super::command_line();
    let _lock = crate::fsutil::OutputLock::acquire(out, &command_line)?;
    let report = merge_command(out, reports, &command_line)?;
    super::draw_plots(out, Some((&report, "atop eval (merged)")))
}

fn eval_command(cfg: &RunConfig, device: &Device, req: &EvalRequest) -> Result<EvalReport> {
    let start = Instant::now();
    if !req.override_transform
        && let Some(o) = req
            .overrides
            .iter()
            .find(|o| o.starts_with("transform.") || o.starts_with("data.purify_size"))
    {
        bail!(
            "--set {o}: atop eval takes the transform and purify size from the artifact; \
             add --override-transform to evaluate with the run configuration's instead (an ablation)"
        );
    }
    let cfg = with_protocol(cfg, req.protocol)?;
    let data = crate::run_data::load_data(&cfg)?;
    let loaded = load_artifacts(req.artifacts)?;
    let subjects = Subjects::new(&loaded, device)?;
    let artifacts: Vec<(String, String)> = loaded
        .iter()
        .map(|l| (l.path.display().to_string(), l.file_sha256.clone()))
        .collect();
    let mut inputs = Vec::new();
    for p in &subjects.purifiers {
        let l = &loaded[p.artifact];
        let mut input = defense_input(p, l, &cfg, req.override_transform)?;
        if l.artifact.manifest.classifier.is_none() {
            input.source = format!(
                "{}; in front of {} (the artifact holds no classifier)",
                input.source, subjects.classifiers[p.classifier].1.name
            );
        }
        inputs.push(input);
    }
    let classifiers: Vec<(String, &Classifier)> = subjects
        .classifiers
        .iter()
        .map(|(c, r)| (r.name.clone(), c))
        .collect();
    evaluate_and_report(EvalJob {
        cfg: &cfg,
        data: &data,
        classifiers: &classifiers,
        classifier_records: subjects
            .classifiers
            .iter()
            .map(|(_, r)| r.clone())
            .collect(),
        inputs: &inputs,
        device,
        out: req.out,
        resume: req.resume,
        shard: req.shard,
        artifacts,
        title: match req.shard {
            Some(s) => format!("atop eval (shard {}/{})", s.index, s.count),
            None => "atop eval".into(),
        },
        command: req.command_line,
        started: start,
        training: None,
    })
}

/// `atop eval merge --out D REPORT...`: one report from the shards'.
fn merge_command(out: &Path, inputs: &[PathBuf], command_line: &str) -> Result<EvalReport> {
    if inputs.is_empty() {
        bail!("eval merge: name the shards' report.json files (or their directories)");
    }
    let mut stored = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for input in inputs {
        let path = if input.is_dir() {
            input.join("report.json")
        } else {
            input.clone()
        };
        let report = report::read(&path)?;
        if report.eval.shard.is_none() {
            bail!(
                "{}: not a shard report (made without --shard)",
                path.display()
            );
        }
        let hashes = |r: &report::StoredReport| -> Vec<String> {
            r.artifacts.iter().map(|(_, sha)| sha.clone()).collect()
        };
        if let Some(first) = stored.first()
            && hashes(first) != hashes(&report)
        {
            bail!(
                "{}: made from other artifacts than {}",
                path.display(),
                names[0]
            );
        }
        names.push(path.display().to_string());
        stored.push(report);
    }
    // The shards' compute time, summed.
    let elapsed = stored.iter().map(|r| r.elapsed_seconds).sum();
    let (artifacts, dataset) = (stored[0].artifacts.clone(), stored[0].dataset.clone());
    let (classifiers, defenses) = (stored[0].classifiers.clone(), stored[0].defenses.clone());
    let parts: Vec<EvalReport> = stored.into_iter().map(|r| r.eval).collect();
    let merged = crate::eval::merge(&parts, &names)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let md = report::write(
        out,
        &report::Report {
            title: format!("atop eval (merged from {} shards)", parts.len()),
            artifacts,
            classifiers,
            defenses,
            dataset,
            command: command_line.into(),
            elapsed_seconds: elapsed,
            eval: &merged,
            training: None,
        },
    )?;
    crate::stdout::print(&md)?;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_labelled_by_stem_then_directory_then_number() {
        let p = |s: &str| PathBuf::from(s);
        let got = labels(&[
            p("runs/quickstart/classifier.safetensors"),
            p("runs/fmnist-at/classifier.safetensors"),
            p("runs/quickstart/fmnist-atop.safetensors"),
            p("a/x/classifier.safetensors"),
            p("b/x/classifier.safetensors"),
        ]);
        assert_eq!(
            got,
            [
                "quickstart/classifier",
                "fmnist-at/classifier",
                "fmnist-atop",
                "x/classifier",
                "x/classifier #2"
            ]
        );
    }
}
