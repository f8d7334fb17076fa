//! An evaluation as the commands run it: the frozen bare classifiers and
//! the defenses built from their artifacts' purifiers and transforms.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use atop::defense::Defense;
use atop::model::{Classifier, Purifier};
use atop::rng::stream;
use atop::transform::TransformConfig;
use burn::module::Module;
use burn::tensor::Device;

use sha2::{Digest, Sha256};

use super::report::{self, ClassifierRecord, DefenseRecord};
use super::{EvalDefense, EvalInputs, EvalReport, EvalRun, Shard, evaluate, subset_indices};
use crate::config::{EvalSplit, RunConfig};
use crate::run_data::RunData;

/// A defense to evaluate: the purifier with the transform and purify size
/// it goes with (its artifact's, or an explicit override).
pub struct DefenseInput<'a> {
    pub name: String,
    pub purifier: &'a Purifier,
    /// Index of the classifier (in the evaluation's list) the purifier protects.
    pub classifier: usize,
    pub transform: TransformConfig,
    pub purify_size: usize,
    /// Where transform and purify size come from, as the report says it.
    pub source: String,
}

/// Evaluates the named bare classifiers and the given defenses.
pub fn run_eval(
    cfg: &RunConfig,
    data: &RunData,
    classifiers: &[(String, &Classifier)],
    inputs: &[DefenseInput],
    device: &Device,
    run: &EvalRun,
) -> Result<EvalReport> {
    cfg.eval.apply_eot_chunk_values();
    let ad = device.clone().autodiff();
    let frozen: Vec<Classifier> = classifiers
        .iter()
        .map(|(_, c)| (*c).clone().fork(&ad).freeze())
        .collect();
    let mut defenses = Vec::new();
    for d in inputs {
        let classifier = frozen.get(d.classifier).with_context(|| {
            format!("defense {}: no classifier number {}", d.name, d.classifier)
        })?;
        let purifier = d.purifier.clone().fork(&ad).freeze();
        let defense = Defense::new(d.transform.clone(), purifier, classifier.clone())
            .with_purify_size(d.purify_size);
        defenses.push(defense);
    }
    let named: Vec<(&str, &Classifier)> = classifiers
        .iter()
        .zip(&frozen)
        .map(|((n, _), c)| (n.as_str(), c))
        .collect();
    let refs: Vec<EvalDefense> = inputs
        .iter()
        .zip(&defenses)
        .map(|(d, defense)| EvalDefense {
            name: &d.name,
            defense,
            classifier: d.classifier,
        })
        .collect();
    let points = match cfg.eval.split {
        EvalSplit::Test => &data.test,
        EvalSplit::Validation => &data.val,
    };
    let indices = subset_indices(points.len(), cfg.eval.subset, cfg.eval.subset_seed);
    let inputs = EvalInputs {
        classifiers: &named,
        defenses: &refs,
        test: points,
        indices: &indices,
        cfg: &cfg.eval,
        seed: cfg.run.seed ^ stream::EVALUATION,
        device: &ad,
    };
    evaluate(&inputs, run)
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
    defenses: &[DefenseRecord],
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

/// An evaluation as a command runs it, through to its report: the models,
/// where it writes, and what the report says about them.
pub struct EvalJob<'a> {
    pub cfg: &'a RunConfig,
    pub data: &'a RunData,
    pub classifiers: &'a [(String, &'a Classifier)],
    pub classifier_records: Vec<ClassifierRecord>,
    pub inputs: &'a [DefenseInput<'a>],
    pub device: &'a Device,
    pub out: &'a Path,
    pub resume: bool,
    pub shard: Option<Shard>,
    /// Artifact files and their SHA-256, as the report lists them.
    pub artifacts: Vec<(String, String)>,
    pub title: String,
    pub command: &'a str,
    pub started: Instant,
    /// The training record a quickstart report carries.
    pub training: Option<serde_json::Value>,
}

/// Runs the evaluation (resumable from its state file), writes report.json
/// and report.md, removes the state file and prints the markdown.
pub fn evaluate_and_report(job: EvalJob) -> Result<EvalReport> {
    let defenses = report::records(job.inputs);
    let state = state_path(job.out, job.shard);
    let run = EvalRun {
        state_path: Some(state.clone()),
        protocol_hash: protocol_hash(job.cfg, &job.artifacts, &defenses, job.shard),
        resume: job.resume,
        shard: job.shard,
    };
    let eval = run_eval(
        job.cfg,
        job.data,
        job.classifiers,
        job.inputs,
        job.device,
        &run,
    )?;
    let md = report::write(
        job.out,
        &report::Report {
            title: job.title,
            artifacts: job.artifacts,
            classifiers: job.classifier_records,
            defenses,
            dataset: report::dataset_label(&job.data.test.name, job.cfg.eval.split),
            command: job.command.into(),
            elapsed_seconds: job.started.elapsed().as_secs_f64(),
            eval: &eval,
            training: job.training,
        },
    )?;
    let _ = std::fs::remove_file(state);
    crate::stdout::print(&md)?;
    Ok(eval)
}
