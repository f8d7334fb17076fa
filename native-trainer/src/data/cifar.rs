//! CIFAR-10 and CIFAR-100 in their binary distribution format.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{Dataset, file_hash, read_file};

const PIXELS: usize = 3 * 32 * 32;

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

/// Parses one binary batch file. CIFAR-10 records are `label, 3072 pixels`;
/// CIFAR-100 records are `coarse, fine, 3072 pixels` (the fine label is used).
pub fn parse(path: &Path, bytes: &[u8], cifar100: bool) -> Result<(Vec<f32>, Vec<i64>)> {
    let label_bytes = if cifar100 { 2 } else { 1 };
    let record = label_bytes + PIXELS;
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        bail!(
            "{}: {} bytes is not a whole number of {record}-byte CIFAR{} records (truncated or wrong file?)",
            path.display(),
            bytes.len(),
            if cifar100 { "-100" } else { "-10" }
        );
    }
    let classes = if cifar100 { 100 } else { 10 };
    let n = bytes.len() / record;
    let mut images = Vec::with_capacity(n * PIXELS);
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        let label = rec[label_bytes - 1] as i64;
        if label >= classes {
            bail!(
                "{}: record {i} has label {label}, outside the {classes} classes",
                path.display()
            );
        }
        labels.push(label);
        images.extend(rec[label_bytes..].iter().map(|&p| p as f32 / 255.0));
    }
    Ok((images, labels))
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
    std::fs::read_to_string(dir.join(file))
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
