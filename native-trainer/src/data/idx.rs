//! IDX files (MNIST, Fashion-MNIST), gzip-compressed or raw.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{Dataset, file_hash, read_file};

pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const STEMS: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// The file for `stem`, with or without `.gz`.
fn find_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// The first directory that holds all four IDX files.
pub fn find_dir(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates
        .iter()
        .find(|d| STEMS.iter().all(|s| find_file(d, s).is_some()))
        .cloned()
}

/// Decompresses gzip data (detected by its magic bytes) or returns it as is.
/// Decompressed IDX data is refused past this size (Fashion-MNIST's largest
/// file is 47 MB; this bounds the memory a gzip bomb can take).
pub const MAX_DECOMPRESSED_BYTES: u64 = 1 << 31;

fn maybe_gunzip(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .take(MAX_DECOMPRESSED_BYTES + 1)
            .read_to_end(&mut out)
            .with_context(|| format!("{}: corrupted or truncated gzip data", path.display()))?;
        if out.len() as u64 > MAX_DECOMPRESSED_BYTES {
            bail!(
                "{}: decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes, the limit for an IDX file",
                path.display()
            );
        }
        Ok(out)
    } else {
        Ok(bytes)
    }
}

/// Parses an IDX file of unsigned bytes: returns (dims, data).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, Vec<u8>)> {
    Ok(atop::formats::idx::parse(
        &path.display().to_string(),
        bytes,
    )?)
}

/// Reads an images file and a labels file into a dataset.
pub fn load_split(images: &Path, labels: &Path, name: &str, classes: &[String]) -> Result<Dataset> {
    let image_bytes = read_file(images)?;
    let label_bytes = read_file(labels)?;
    let files = vec![
        file_hash(images, &image_bytes),
        file_hash(labels, &label_bytes),
    ];
    let (idims, pixels) = parse(images, &maybe_gunzip(images, image_bytes)?)?;
    let (ldims, raw_labels) = parse(labels, &maybe_gunzip(labels, label_bytes)?)?;
    if idims.len() != 3 {
        bail!(
            "{}: expected images [n, h, w], got dims {idims:?}",
            images.display()
        );
    }
    if ldims.len() != 1 || ldims[0] != idims[0] {
        bail!(
            "{} has {:?} labels but {} has {} images",
            labels.display(),
            ldims,
            images.display(),
            idims[0]
        );
    }
    let data = Dataset {
        name: name.to_string(),
        shape: [1, idims[1], idims[2]],
        images: pixels.iter().map(|&p| p as f32 / 255.0).collect(),
        labels: raw_labels.iter().map(|&l| l as i64).collect(),
        class_names: classes.to_vec(),
        files,
    };
    data.validate()
        .with_context(|| format!("{}", labels.display()))?;
    Ok(data)
}

/// Train and test splits from a directory of the four standard files.
pub fn load_pair(dir: &Path, name: &str, classes: &[String]) -> Result<(Dataset, Dataset)> {
    let file = |stem: &str| {
        find_file(dir, stem).with_context(|| format!("{}: missing {stem}(.gz)", dir.display()))
    };
    Ok((
        load_split(&file(STEMS[0])?, &file(STEMS[1])?, name, classes)?,
        load_split(&file(STEMS[2])?, &file(STEMS[3])?, name, classes)?,
    ))
}
