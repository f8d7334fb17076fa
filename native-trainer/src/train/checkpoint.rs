//! Checkpoints.
//!
//! A checkpoint is one file: a magic line, then named blobs (the run state
//! as JSON, module and optimizer records in burn's burnpack bytes). It is
//! written to a temporary file in the same directory, synced, and renamed
//! over the old one, so a kill at any moment leaves either the old or the
//! new checkpoint, never a partial one.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

const MAGIC: &[u8; 10] = b"ATOPCKPT1\n";

/// The resumable state of a training stage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StageState {
    pub stage: String,
    /// Hash of the resolved configuration the run was started with.
    pub config_hash: String,
    /// Epoch in progress and optimiser steps done in it.
    pub epoch: usize,
    pub step_in_epoch: usize,
    pub global_step: usize,
    /// Best validation score so far (higher is better) and its epoch.
    pub best_score: Option<f64>,
    pub best_epoch: Option<usize>,
    pub done: bool,
    /// Wall seconds spent in the stage so far, summed over resumed runs
    /// (up to the last checkpoint), so the artifact can name its cost.
    #[serde(default)]
    pub wall_seconds: f64,
}

/// Named blobs plus the state.
pub struct Checkpoint {
    pub state: StageState,
    pub blobs: BTreeMap<String, Vec<u8>>,
}

impl Checkpoint {
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = MAGIC.to_vec();
        let state = serde_json::to_vec(&self.state)?;
        let mut entries: Vec<(&str, &[u8])> = vec![("state", &state)];
        entries.extend(self.blobs.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
        out.extend((entries.len() as u32).to_le_bytes());
        for (name, blob) in entries {
            out.extend((name.len() as u32).to_le_bytes());
            out.extend(name.as_bytes());
            out.extend((blob.len() as u64).to_le_bytes());
            out.extend(blob);
        }
        Ok(out)
    }

    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |what: &str| anyhow::anyhow!("checkpoint {}: {what}", path.display());
        if !bytes.starts_with(MAGIC) {
            return Err(bad("not an atop checkpoint (bad magic)"));
        }
        let mut at = MAGIC.len();
        let mut take = |n: usize| -> Result<&[u8]> {
            let end = at
                .checked_add(n)
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| bad("truncated"))?;
            let s = &bytes[at..end];
            at = end;
            Ok(s)
        };
        let count = u32::from_le_bytes(take(4)?.try_into()?) as usize;
        let mut blobs = BTreeMap::new();
        for _ in 0..count {
            let len = u32::from_le_bytes(take(4)?.try_into()?) as usize;
            let name = String::from_utf8(take(len)?.to_vec())
                .map_err(|_| bad("blob name is not UTF-8"))?;
            let len = u64::from_le_bytes(take(8)?.try_into()?) as usize;
            blobs.insert(name, take(len)?.to_vec());
        }
        let state = blobs.remove("state").ok_or_else(|| bad("has no state"))?;
        let state = serde_json::from_slice(&state)
            .map_err(|e| bad(&format!("state is unreadable: {e}")))?;
        Ok(Self { state, blobs })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = crate::fsutil::read_bounded(
            path,
            crate::fsutil::read_limits::MODEL_FILE,
            "checkpoint",
        )?;
        Self::from_bytes(&bytes, path)
    }

    /// Loads a checkpoint to resume from, refusing one made with another configuration.
    pub fn load_for_resume(path: &Path, stage: &str, config_hash: &str) -> Result<Self> {
        let ckpt = Self::load(path)?;
        if ckpt.state.stage != stage {
            bail!(
                "checkpoint {} is from stage `{}`, not `{stage}`",
                path.display(),
                ckpt.state.stage
            );
        }
        if ckpt.state.config_hash != config_hash {
            bail!(
                "checkpoint {} was made with a different configuration (hash {} vs {config_hash}); \
                 start without --resume or use the original configuration",
                path.display(),
                ckpt.state.config_hash
            );
        }
        Ok(ckpt)
    }
}

/// A named blob of a checkpoint, or an error naming the file.
pub fn blob<'a>(blobs: &'a BTreeMap<String, Vec<u8>>, name: &str, path: &Path) -> Result<&'a [u8]> {
    blobs
        .get(name)
        .map(Vec::as_slice)
        .with_context(|| format!("checkpoint {} has no `{name}`", path.display()))
}

/// A module's record (weights with their parameter ids) as bytes.
pub fn module_bytes<M: Module>(module: &M) -> Result<Vec<u8>> {
    // burn's RunningState (batch-norm statistics, spectral-norm vectors)
    // keeps its last update pending, and a record holds only the committed
    // value; `valid()` commits it in place (the states are shared handles),
    // so the checkpoint is the state the next step reads.
    let _ = module.valid();
    let bytes = module
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(bytes.to_vec())
}

/// Loads a module record saved by [`module_bytes`] into `module`.
pub fn load_module<M: Module>(module: M, bytes: &[u8], what: &str) -> Result<M> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| anyhow::anyhow!("{what}: unreadable module record: {e:?}"))?;
    module
        .try_load_record(record)
        .map_err(|e| anyhow::anyhow!("{what}: does not fit the model: {e:?}"))
}

pub fn optimizer_bytes(optim: &ModuleOptimizer) -> Result<Vec<u8>> {
    Ok(optim
        .into_bytes()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .to_vec())
}

pub fn load_optimizer(optim: ModuleOptimizer, bytes: &[u8], what: &str) -> Result<ModuleOptimizer> {
    optim
        .from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| anyhow::anyhow!("{what}: unreadable optimizer state: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(hash: &str) -> StageState {
        StageState {
            stage: "pretrain".into(),
            config_hash: hash.into(),
            epoch: 1,
            step_in_epoch: 7,
            global_step: 20,
            best_score: Some(0.5),
            best_epoch: Some(0),
            done: false,
            wall_seconds: 0.0,
        }
    }

    #[test]
    fn checkpoints_round_trip_and_refuse_other_configs() {
        let dir = std::env::temp_dir().join(format!("atop-ckpt-{}", std::process::id()));
        let path = dir.join("pretrain.ckpt");
        let ckpt = Checkpoint {
            state: state("abc"),
            blobs: BTreeMap::from([("model".to_string(), vec![1, 2, 3])]),
        };
        ckpt.save(&path).unwrap();
        let back = Checkpoint::load_for_resume(&path, "pretrain", "abc").unwrap();
        assert_eq!(back.state, ckpt.state);
        assert_eq!(back.blobs, ckpt.blobs);
        let e = format!(
            "{:#}",
            Checkpoint::load_for_resume(&path, "pretrain", "xyz")
                .err()
                .unwrap()
        );
        assert!(e.contains("different configuration"), "{e}");
        let e = format!(
            "{:#}",
            Checkpoint::load_for_resume(&path, "finetune", "abc")
                .err()
                .unwrap()
        );
        assert!(e.contains("from stage `pretrain`"), "{e}");
        // A truncated checkpoint is refused, not half-read.
        let bytes = std::fs::read(&path).unwrap();
        let e = format!(
            "{:#}",
            Checkpoint::from_bytes(&bytes[..bytes.len() - 2], &path)
                .err()
                .unwrap()
        );
        assert!(e.contains("truncated"), "{e}");
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
