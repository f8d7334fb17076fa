//! report.json and report.md for an evaluation.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;
use crate::eval::EvalReport;

#[derive(Serialize)]
pub struct Report<'a> {
    pub title: String,
    /// Artifact files evaluated, with their SHA-256.
    pub artifacts: Vec<(String, String)>,
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
    pub dataset: String,
    pub elapsed_seconds: f64,
    pub eval: EvalReport,
}

/// Reads a report.json written by [`write`], naming the file when it is not one.
pub fn read(path: &Path) -> Result<StoredReport> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    serde_json::from_value(value)
        .with_context(|| format!("{}: no evaluation table under \"eval\"", path.display()))
}

pub fn markdown(report: &Report) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# {}\n", report.title);
    let _ = writeln!(md, "* dataset: {}", report.dataset);
    for (path, sha) in &report.artifacts {
        let _ = writeln!(md, "* artifact: `{path}` (sha256 `{sha}`)");
    }
    let _ = writeln!(
        md,
        "* test subset: {} points, seed {} (indices in report.json)",
        report.eval.indices.len(),
        report.eval.subset_seed
    );
    let _ = writeln!(md, "* command: `{}`", report.command);
    let _ = writeln!(md, "* elapsed: {:.0} s\n", report.elapsed_seconds);
    let _ = writeln!(
        md,
        "| model | attack | norm | eps | steps | EOT | gradient mode | draws | accuracy (every draw) | accuracy (majority) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
    for r in &report.eval.rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.2}% | {:.2}% |",
            r.model,
            r.attack,
            r.norm,
            if r.attack == "clean" {
                "-".into()
            } else {
                format!("{:.4}", r.eps)
            },
            if r.steps == 0 {
                "-".into()
            } else {
                r.steps.to_string()
            },
            if r.eot == 0 {
                "-".into()
            } else {
                r.eot.to_string()
            },
            r.mode,
            r.draws,
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
    md
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
