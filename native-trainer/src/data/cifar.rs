//! CIFAR-10 and CIFAR-100 in their binary distribution format.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{Dataset, file_hash, read_file};

pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Parses one binary batch file (see [`atop::formats::cifar::parse`]).
pub fn parse(path: &Path, bytes: &[u8], cifar100: bool) -> Result<(Vec<f32>, Vec<i64>)> {
    Ok(atop::formats::cifar::parse(
        &path.display().to_string(),
        bytes,
        cifar100,
    )?)
}

fn read_split(
    dir: &Path,
    files: &[&str],
    cifar100: bool,
    classes: &[String],
    name: &str,
) -> Result<Dataset> {
    let mut data = Dataset {
        name: name.to_string(),
        shape: [3, 32, 32],
        images: Vec::new(),
        labels: Vec::new(),
        class_names: classes.to_vec(),
        files: Vec::new(),
    };
    for f in files {
        let path = dir.join(f);
        let bytes = read_file(&path)?;
        let (images, labels) = parse(&path, &bytes, cifar100)?;
        data.files.push(file_hash(&path, &bytes));
        data.images.extend(images);
        data.labels.extend(labels);
    }
    Ok(data)
}

/// Class names from the distribution's text file when present.
fn class_names(dir: &Path, file: &str, fallback: Vec<String>) -> Vec<String> {
    crate::fsutil::read_text_bounded(
        &dir.join(file),
        crate::fsutil::read_limits::TEXT_FILE,
        "class names",
    )
    .map(|t| {
        t.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect::<Vec<_>>()
    })
    .ok()
    .filter(|names| names.len() == fallback.len())
    .unwrap_or(fallback)
}

/// Train and test splits from `cifar-10-batches-bin/` or `cifar-100-binary/`.
pub fn load(dir: &Path, cifar100: bool) -> Result<(Dataset, Dataset)> {
    if !dir.is_dir() {
        bail!("{}: CIFAR directory not found", dir.display());
    }
    if cifar100 {
        let classes = class_names(
            dir,
            "fine_label_names.txt",
            (0..100).map(|i| format!("class {i}")).collect(),
        );
        Ok((
            read_split(dir, &["train.bin"], true, &classes, "cifar100")?,
            read_split(dir, &["test.bin"], true, &classes, "cifar100")?,
        ))
    } else {
        let classes = class_names(
            dir,
            "batches.meta.txt",
            CIFAR10_CLASSES.map(String::from).to_vec(),
        );
        let train: Vec<String> = (1..=5).map(|i| format!("data_batch_{i}.bin")).collect();
        let train: Vec<&str> = train.iter().map(String::as_str).collect();
        Ok((
            read_split(dir, &train, false, &classes, "cifar10")
                .context("CIFAR-10 training batches")?,
            read_split(dir, &["test_batch.bin"], false, &classes, "cifar10")?,
        ))
    }
}
