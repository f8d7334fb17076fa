//! `atop eval` (with --protocol, --shard, --resume) and `atop eval merge`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use atop::artifact::sha256_hex;
use burn::tensor::Device;
use sha2::{Digest, Sha256};

use crate::cli::EvalArgs;
use crate::config::{EvalConfig, RunConfig};
use crate::eval::report;
use crate::eval::run::{DefenseInput, run_eval};
use crate::eval::{EvalReport, EvalRun, Shard};
use crate::train::pipeline;

/// What `atop eval` was asked to do.
pub struct EvalRequest<'a> {
    pub out: &'a Path,
    pub resume: bool,
    pub artifact: &'a Path,
    pub baseline: Option<&'a Path>,
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
    name: &str,
    path: &Path,
    artifact: &atop::artifact::Artifact,
    purifier: &'p atop::model::Purifier,
    cfg: &RunConfig,
    override_transform: bool,
) -> Result<DefenseInput<'p>> {
    let m = &artifact.manifest;
    let identity = format!(
        "artifact {} (defense sha256 {})",
        path.display(),
        m.defense_sha256
    );
    if override_transform {
        return Ok(DefenseInput {
            name: name.into(),
            purifier,
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
        name: name.into(),
        purifier,
        transform,
        purify_size: m.purify_size,
        source: identity,
    })
}

/// The configuration with its [eval] table replaced by a protocol file.
pub fn with_protocol(cfg: &RunConfig, protocol: Option<&Path>) -> Result<RunConfig> {
    let Some(path) = protocol else {
        return Ok(cfg.clone());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let eval: EvalConfig = toml::from_str(&text)
        .with_context(|| format!("{}: not an evaluation protocol", path.display()))?;
    let mut cfg = cfg.clone();
    cfg.eval = eval;
    cfg.validate()
        .with_context(|| format!("protocol {}", path.display()))?;
    Ok(cfg)
}

/// The state file of a run (one per shard).
pub fn state_path(out: &Path, shard: Option<Shard>) -> PathBuf {
    match shard {
        Some(s) => out.join(format!("eval-state-{}of{}.json", s.index, s.count)),
        None => out.join("eval-state.json"),
    }
}

/// Identifies protocol, seed, artifacts and shard for the resume check.
pub fn protocol_hash(
    cfg: &RunConfig,
    artifacts: &[(String, String)],
    defenses: &[report::DefenseRecord],
    shard: Option<Shard>,
) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_string(&cfg.eval).unwrap_or_default());
    h.update(cfg.run.seed.to_le_bytes());
    h.update(serde_json::to_string(defenses).unwrap_or_default());
    for (_, sha) in artifacts {
        h.update(sha.as_bytes());
    }
    h.update(serde_json::to_string(&shard).unwrap_or_default());
    format!("{:x}", h.finalize())
}

/// `atop eval`: the report, and its results chart.
pub fn run(args: &EvalArgs) -> Result<()> {
    let command_line = super::command_line();
    super::with_run(&args.run, |cfg, dev| {
        let request = EvalRequest {
            out: args.run.out(),
            resume: args.run.resume,
            artifact: args.artifact(),
            baseline: args.baseline.as_deref(),
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
    let data = pipeline::load_data(&cfg)?;
    let artifact = pipeline::read_artifact(req.artifact)?;
    let name = req.artifact.display().to_string();
    let classifier = artifact.classifier(device, &name)?;
    let purifier = artifact.purifier(device, &name)?;
    let mut artifacts = vec![(name.clone(), sha256_hex(&std::fs::read(req.artifact)?))];
    let base = match req.baseline {
        Some(b) => {
            let a = pipeline::read_artifact(b)?;
            artifacts.push((b.display().to_string(), sha256_hex(&std::fs::read(b)?)));
            let p = a.purifier(device, &b.display().to_string())?;
            Some((a, p))
        }
        None => None,
    };
    let mut inputs = Vec::new();
    if let (Some(b), Some((a, p))) = (req.baseline, &base) {
        inputs.push(defense_input(
            "baseline defense",
            b,
            a,
            p,
            &cfg,
            req.override_transform,
        )?);
    }
    inputs.push(defense_input(
        "defense",
        req.artifact,
        &artifact,
        &purifier,
        &cfg,
        req.override_transform,
    )?);
    let defenses = report::records(&inputs);
    let run = EvalRun {
        state_path: Some(state_path(req.out, req.shard)),
        protocol_hash: protocol_hash(&cfg, &artifacts, &defenses, req.shard),
        resume: req.resume,
        shard: req.shard,
    };
    let report = run_eval(&cfg, &data, &classifier, &inputs, device, &run)?;
    let title = match req.shard {
        Some(s) => format!("atop eval (shard {}/{})", s.index, s.count),
        None => "atop eval".into(),
    };
    let md = report::write(
        req.out,
        &report::Report {
            title: title.clone(),
            artifacts,
            defenses,
            dataset: data.test.name.clone(),
            command: req.command_line.into(),
            elapsed_seconds: start.elapsed().as_secs_f64(),
            eval: &report,
            training: None,
        },
    )?;
    if let Some(p) = &run.state_path {
        let _ = std::fs::remove_file(p);
    }
    crate::stdout::print(&md)?;
    Ok(report)
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
    let defenses = stored[0].defenses.clone();
    let parts: Vec<EvalReport> = stored.into_iter().map(|r| r.eval).collect();
    let defense_count = parts[0]
        .rows
        .iter()
        .filter(|r| r.attack == "clean" && r.model != "classifier")
        .count();
    let merged = crate::eval::merge(&parts, &names, defense_count)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let md = report::write(
        out,
        &report::Report {
            title: format!("atop eval (merged from {} shards)", parts.len()),
            artifacts,
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
