//! The data of a run: the training set less a validation split carved from
//! it (for selection, never the test set), and the test set, as the run
//! configuration says.

use anyhow::Result;
use atop::rng::stream;

use crate::config::RunConfig;
use crate::data::{self, Dataset};

/// Train / validation / test data of a run.
pub struct RunData {
    pub train: Dataset,
    pub val: Dataset,
    pub test: Dataset,
}

pub fn load_data(cfg: &RunConfig) -> Result<RunData> {
    let (train_all, test) = data::load(
        cfg.data.dataset,
        cfg.data.dir.as_deref(),
        cfg.data.image_size,
    )?;
    cfg.validate_for_images(train_all.shape)?;
    let channels = cfg.classifier.image_channels();
    if train_all.shape[0] != channels {
        anyhow::bail!(
            "{} images have {} channels but classifier.image_channels is {channels}",
            train_all.name,
            train_all.shape[0]
        );
    }
    let (mut train, mut val) = data::split_validation(
        &train_all,
        cfg.data.validation_fraction,
        cfg.run.seed ^ stream::VALIDATION_SPLIT,
    )?;
    if cfg.data.validation_limit > 0 && cfg.data.validation_limit < val.len() {
        let keep: Vec<usize> = (0..cfg.data.validation_limit).collect();
        val = val.subset(&keep);
    }
    if cfg.data.train_limit > 0 && cfg.data.train_limit < train.len() {
        let keep: Vec<usize> = (0..cfg.data.train_limit).collect();
        train = train.subset(&keep);
    }
    tracing::info!(
        dataset = train.name,
        train = train.len(),
        validation = val.len(),
        test = test.len(),
        "data loaded"
    );
    Ok(RunData { train, val, test })
}
