//! Training metrics as JSON lines (one object per step or validation).
//!
//! The file outlives the runs that write it, so opening it for a stage
//! first puts it in order: a torn last line (a killed or disk-full run) is
//! dropped, and so are the rows of this stage that the run is about to
//! write again (all of them on a fresh start, those past the checkpoint on
//! a resume). A resumed run then leaves exactly the rows of an
//! uninterrupted one.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MetricLine {
    pub stage: String,
    pub epoch: usize,
    /// The global step count after this step (1-based); 0 on validation rows.
    pub step: usize,
    #[serde(default)]
    pub losses: BTreeMap<String, f64>,
    #[serde(default)]
    pub validation: Option<f64>,
}

/// Where a stage (re)starts: what of its earlier rows stays valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// A fresh start: every earlier row of the stage is stale.
    Fresh,
    /// A resume from a checkpoint taken after `global_step` steps, in
    /// epoch `epoch` (whose validation has not run yet).
    From { global_step: usize, epoch: usize },
}

impl Replay {
    fn keeps(self, line: &MetricLine) -> bool {
        match self {
            Replay::Fresh => false,
            Replay::From { global_step, epoch } => match line.validation {
                Some(_) => line.epoch < epoch,
                None => line.step <= global_step,
            },
        }
    }
}

/// The records of a metrics file. A last line without its newline is what
/// an interrupted write leaves: it is skipped with a warning. Any other
/// unreadable line is an error naming the file and line.
pub fn read(path: &Path) -> Result<Vec<MetricLine>> {
    let text = crate::fsutil::read_text_bounded(
        path,
        crate::fsutil::read_limits::RUN_RECORD,
        "metrics log",
    )?;
    Ok(parse(&text, path)?.into_iter().map(|(_, m)| m).collect())
}

/// Each complete record with its line as written (rewriting keeps the
/// text: a float printed, parsed and printed again can change its last digit).
fn parse<'t>(text: &'t str, path: &Path) -> Result<Vec<(&'t str, MetricLine)>> {
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    let torn = &text[complete.len()..];
    if !torn.trim().is_empty() {
        tracing::warn!(
            "{}: the last line is incomplete (an interrupted write); it is ignored",
            path.display()
        );
    }
    let mut lines = Vec::new();
    for (n, line) in complete.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(m) => lines.push((line, m)),
            Err(e) => bail!(
                "{} line {}: not a metrics record: {e}",
                path.display(),
                n + 1
            ),
        }
    }
    Ok(lines)
}

pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens `path` to append the rows of `stage`, after dropping a torn
    /// last line and the rows of `stage` that `replay` will write again.
    pub fn open(path: &Path, stage: &str, replay: Replay) -> Result<Self> {
        if path.exists() {
            let text = crate::fsutil::read_text_bounded(
                path,
                crate::fsutil::read_limits::RUN_RECORD,
                "metrics log",
            )?;
            let lines = parse(&text, path)?;
            let kept: Vec<&str> = lines
                .iter()
                .filter(|(_, l)| l.stage != stage || replay.keeps(l))
                .map(|(text, _)| *text)
                .collect();
            if kept.len() != lines.len() || !text.is_empty() && !text.ends_with('\n') {
                let mut out = String::new();
                for line in kept {
                    out.push_str(line);
                    out.push('\n');
                }
                write_atomic(path, out.as_bytes())?;
            }
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open metrics file {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    fn write(&mut self, line: &MetricLine) -> Result<()> {
        let mut text = serde_json::to_string(line)?;
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    pub fn log_step(
        &mut self,
        stage: &str,
        epoch: usize,
        step: usize,
        losses: &BTreeMap<String, f64>,
    ) -> Result<()> {
        self.write(&MetricLine {
            stage: stage.into(),
            epoch,
            step,
            losses: losses.clone(),
            validation: None,
        })
    }

    pub fn log_validation(&mut self, stage: &str, epoch: usize, score: f64) -> Result<()> {
        self.write(&MetricLine {
            stage: stage.into(),
            epoch,
            step: 0,
            losses: BTreeMap::new(),
            validation: Some(score),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(stage: &str, epoch: usize, step: usize) -> MetricLine {
        MetricLine {
            stage: stage.into(),
            epoch,
            step,
            losses: BTreeMap::from([("loss".to_string(), step as f64)]),
            validation: None,
        }
    }

    fn validation(stage: &str, epoch: usize) -> MetricLine {
        MetricLine {
            stage: stage.into(),
            epoch,
            step: 0,
            losses: BTreeMap::new(),
            validation: Some(0.5),
        }
    }

    fn text(lines: &[MetricLine]) -> String {
        lines
            .iter()
            .map(|l| serde_json::to_string(l).unwrap() + "\n")
            .collect()
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_replayed_rows_go() {
        let dir = std::env::temp_dir().join(format!("atop-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        let earlier = vec![
            step("train-classifier", 0, 1),
            validation("train-classifier", 0),
            step("pretrain", 0, 1),
            step("pretrain", 0, 2),
            validation("pretrain", 0),
            step("pretrain", 1, 3),
            step("pretrain", 1, 4),
        ];
        // A disk-full stop: the last record is cut mid-line.
        let mut content = text(&earlier);
        content.push_str(r#"{"stage":"pretrain","epoch":1,"st"#);
        std::fs::write(&path, &content).unwrap();
        assert_eq!(read(&path).unwrap(), earlier, "the torn line is skipped");

        // Resuming pretrain from a checkpoint after step 3 (epoch 1).
        let replay = Replay::From {
            global_step: 3,
            epoch: 1,
        };
        let mut log = MetricsLog::open(&path, "pretrain", replay).unwrap();
        log.log_step("pretrain", 1, 4, &BTreeMap::new()).unwrap();
        let lines = read(&path).unwrap();
        assert_eq!(lines[..6], earlier[..6]);
        assert_eq!(lines.len(), 7, "step 4 once, not twice: {lines:?}");
        assert!(std::fs::read_to_string(&path).unwrap().ends_with('\n'));

        // A resume before the epoch-0 validation drops that row too.
        let replay = Replay::From {
            global_step: 2,
            epoch: 0,
        };
        drop(MetricsLog::open(&path, "pretrain", replay).unwrap());
        assert_eq!(read(&path).unwrap(), earlier[..4]);

        // A fresh start of a stage drops its rows and keeps the others'.
        drop(MetricsLog::open(&path, "pretrain", Replay::Fresh).unwrap());
        assert_eq!(read(&path).unwrap(), earlier[..2]);

        // A garbled line that is not the last one is an error naming it.
        std::fs::write(&path, format!("not json\n{}", text(&earlier))).unwrap();
        let e = format!("{:#}", read(&path).unwrap_err());
        assert!(e.contains("line 1: not a metrics record"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
