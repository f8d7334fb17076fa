//! Training metrics as JSON lines (one object per step or validation).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct MetricLine {
    pub stage: String,
    pub epoch: usize,
    pub step: usize,
    #[serde(default)]
    pub losses: BTreeMap<String, f64>,
    #[serde(default)]
    pub validation: Option<f64>,
}

pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Appends to `path` (a resumed run continues the same file).
    pub fn open(path: &Path) -> Result<Self> {
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
