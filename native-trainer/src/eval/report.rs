//! report.json and report.md for an evaluation.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use atop::transform::TransformConfig;
use serde::{Deserialize, Serialize};

use crate::eval::EvalReport;
use crate::fsutil::write_atomic;

/// Which transform a defense was evaluated with, and where it came from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DefenseRecord {
    pub name: String,
    pub transform: TransformConfig,
    pub purify_size: usize,
    /// "artifact <path> (defense sha256 ...)" or an override, said as such.
    pub source: String,
}

/// A bare classifier evaluated, where it comes from and how it was trained.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ClassifierRecord {
    pub name: String,
    /// "artifact <path> (classifier sha256 ...)".
    pub source: String,
    /// Standard or adversarial training (with its attack), from the manifest.
    pub training: String,
}

#[derive(Serialize)]
pub struct Report<'a> {
    pub title: String,
    /// Artifact files evaluated, with their SHA-256.
    pub artifacts: Vec<(String, String)>,
    /// The bare classifiers evaluated.
    pub classifiers: Vec<ClassifierRecord>,
    /// The transform each defense was evaluated with.
    pub defenses: Vec<DefenseRecord>,
    pub dataset: String,
    pub command: String,
    pub elapsed_seconds: f64,
    pub eval: &'a EvalReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training: Option<serde_json::Value>,
}

/// A report.json as read back (`atop plot`, `atop eval merge`).
#[derive(Deserialize)]
pub struct StoredReport {
    pub title: String,
    pub artifacts: Vec<(String, String)>,
    #[serde(default)]
    pub classifiers: Vec<ClassifierRecord>,
    #[serde(default)]
    pub defenses: Vec<DefenseRecord>,
    pub dataset: String,
    pub elapsed_seconds: f64,
    pub eval: EvalReport,
}

/// Reads a report.json written by [`write`], naming the file when it is not one.
pub fn read(path: &Path) -> Result<StoredReport> {
    let text =
        crate::fsutil::read_text_bounded(path, crate::fsutil::read_limits::RUN_RECORD, "report")?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let mut report: StoredReport = serde_json::from_value(value)
        .with_context(|| format!("{}: no evaluation table under \"eval\"", path.display()))?;
    // Reports written before `accuracy_mean` existed get it from their counts.
    for row in &mut report.eval.rows {
        row.recount();
    }
    Ok(report)
}

/// The dataset line of a report: the test set, or the validation split
/// said as such (a study's figures are not test figures).
pub fn dataset_label(name: &str, split: crate::config::EvalSplit) -> String {
    match split {
        crate::config::EvalSplit::Test => name.to_string(),
        crate::config::EvalSplit::Validation => {
            format!("{name}, VALIDATION split carved from the training data (not the test set)")
        }
    }
}

/// What the report says of each evaluated defense.
pub fn records(inputs: &[crate::eval::run::DefenseInput]) -> Vec<DefenseRecord> {
    inputs
        .iter()
        .map(|d| DefenseRecord {
            name: d.name.clone(),
            transform: d.transform.clone(),
            purify_size: d.purify_size,
            source: d.source.clone(),
        })
        .collect()
}

pub fn markdown(report: &Report) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# {}\n", report.title);
    let _ = writeln!(md, "* dataset: {}", report.dataset);
    for (path, sha) in &report.artifacts {
        let _ = writeln!(md, "* artifact: `{path}` (sha256 `{sha}`)");
    }
    for c in &report.classifiers {
        let _ = writeln!(md, "* {}: {}; {}", c.name, c.source, c.training);
    }
    for d in &report.defenses {
        let t = &d.transform;
        let _ = writeln!(
            md,
            "* {}: transform {:?}, noise sigma {}, missing rate {}, grid {}, passes {}, purify size {}; from {}",
            d.name,
            t.kind,
            t.noise_sigma,
            t.missing_rate,
            t.grid,
            t.passes,
            d.purify_size,
            d.source
        );
    }
    if let Some(p) = report.eval.rows.first().map(|r| &r.protocol)
        && !p.is_empty()
    {
        let _ = writeln!(md, "* protocol: {p}");
    }
    let _ = writeln!(
        md,
        "* subset: {} points, seed {} (indices in report.json)",
        report.eval.indices.len(),
        report.eval.subset_seed
    );
    let _ = writeln!(md, "* command: `{}`", report.command);
    let _ = writeln!(md, "* elapsed: {:.0} s\n", report.elapsed_seconds);
    let _ = writeln!(
        md,
        "| model | attack | norm | eps | steps | step size | loss | EOT | runs | gradient mode | draws | accuracy (mean over draws) | accuracy (every draw) | accuracy (majority) |"
    );
    let _ = writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in &report.eval.rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2}% | {:.2}% | {:.2}% |",
            r.model,
            attack_label(r),
            r.norm,
            if !crate::eval::is_attack_row(r) && r.attack != "worst case" {
                "-".into()
            } else {
                format!("{:.4}", r.eps)
            },
            if r.steps == 0 {
                "-".into()
            } else {
                r.steps.to_string()
            },
            step_label(r),
            if r.loss.is_empty() { "-" } else { &r.loss },
            if r.eot == 0 {
                "-".into()
            } else {
                r.eot.to_string()
            },
            // Runs from independent random starts (1 = no restart).
            if r.restarts == 0 {
                "-".into()
            } else {
                r.restarts.to_string()
            },
            r.mode,
            r.draws,
            100.0 * r.accuracy_mean,
            100.0 * r.accuracy_every_draw,
            100.0 * r.accuracy_majority
        );
    }
    let _ = writeln!(md, "\n## Sanity checks\n");
    if report.eval.warnings.is_empty() {
        let _ = writeln!(
            md,
            "No warnings: input gradients finite and non-zero on the first batch, no black-box attack stronger than the white-box ones, EOT used against randomized defenses."
        );
    }
    for w in &report.eval.warnings {
        let _ = writeln!(md, "* warning: {w}");
    }
    let probes = &report.eval.tuning_probes;
    if !probes.is_empty() {
        let _ = writeln!(
            md,
            "\nUnder-tuning check (each gradient attack on a randomized defense rerun with a larger step and more EOT on the first points; a warning above where the probe is stronger by more than {:.0} points):\n",
            100.0 * probes[0].margin
        );
        for p in probes {
            let verdict = if p.under_tuned() { "UNDER-TUNED" } else { "ok" };
            let _ = writeln!(md, "* {verdict}: {}", p.line());
        }
    }
    let training_warnings = report
        .training
        .as_ref()
        .and_then(|t| t.get("warnings"))
        .and_then(|w| w.as_array())
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str());
    for w in training_warnings {
        let _ = writeln!(md, "* training warning: {w}");
    }
    md
}

/// The attack as the table names it: APGD and AutoAttack say which iterate
/// they kept, and an AutoAttack row on a randomized defense that kept the
/// official single-draw choice says that it overstates.
pub fn attack_label(r: &crate::eval::EvalRow) -> String {
    match r.selection.as_str() {
        "" => r.attack.clone(),
        "first-fooled"
            if r.kind == crate::eval::RowKind::Defense
                && r.attack.starts_with("autoattack")
                && (r.mode == "full" || r.mode == "bpda") =>
        {
            format!(
                "{} (single-draw selection: overstates a randomized defense)",
                r.attack
            )
        }
        "first-fooled" => r.attack.clone(),
        s => format!("{} ({s})", r.attack),
    }
}

/// The step size column: the fixed step, "adaptive" for APGD, or "-".
fn step_label(r: &crate::eval::EvalRow) -> String {
    match r.step_size {
        Some(a) => format!("{a:.4}"),
        None if r.attack.starts_with("apgd") || r.attack.starts_with("autoattack") => {
            "adaptive".into()
        }
        None => "-".into(),
    }
}

/// Writes report.json and report.md into `dir`; returns the markdown.
pub fn write(dir: &Path, report: &Report) -> Result<String> {
    write_atomic(
        &dir.join("report.json"),
        serde_json::to_string_pretty(report)?.as_bytes(),
    )?;
    let md = markdown(report);
    write_atomic(&dir.join("report.md"), md.as_bytes())?;
    Ok(md)
}
