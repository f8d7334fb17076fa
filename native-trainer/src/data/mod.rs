//! Datasets in memory: images as f32 in [0,1] (`[n, c, h, w]` row-major) and
//! i64 labels, loaded from the datasets' own file formats.

pub mod cifar;
pub mod folder;
pub mod idx;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use atop::artifact::{FileHash, sha256_hex};
use atop::rng::{AtopRng, permutation, seeded};
use burn::tensor::{Device, Tensor, TensorData};
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// An in-memory image classification dataset.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    /// `[c, h, w]`.
    pub shape: [usize; 3],
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
    pub class_names: Vec<String>,
    /// The files it was read from, with their SHA-256.
    pub files: Vec<FileHash>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// The points at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            ..self.clone_meta()
        }
    }

    fn clone_meta(&self) -> Dataset {
        Dataset {
            name: self.name.clone(),
            shape: self.shape,
            images: Vec::new(),
            labels: Vec::new(),
            class_names: self.class_names.clone(),
            files: self.files.clone(),
        }
    }

    /// A batch as a tensor `[b, c, h, w]` and its labels, with optional
    /// training augmentation drawn from `rng`.
    pub fn batch(
        &self,
        indices: &[usize],
        augment: Option<(&Augment, &mut AtopRng)>,
        device: &Device,
    ) -> (Tensor<4>, Vec<i64>) {
        let [c, h, w] = self.shape;
        let mut data = Vec::with_capacity(indices.len() * self.image_len());
        match augment {
            Some((aug, rng)) if aug.is_active() => {
                for &i in indices {
                    data.extend(aug.apply(self.image(i), self.shape, rng));
                }
            }
            _ => {
                for &i in indices {
                    data.extend_from_slice(self.image(i));
                }
            }
        }
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        let tensor = Tensor::from_data(TensorData::new(data, [indices.len(), c, h, w]), device);
        (tensor, labels)
    }

    /// Checks that labels are within the class list and values within [0,1].
    pub fn validate(&self) -> Result<()> {
        if self.images.len() != self.len() * self.image_len() {
            bail!(
                "{}: {} image values for {} labels of shape {:?}",
                self.name,
                self.images.len(),
                self.len(),
                self.shape
            );
        }
        let classes = self.class_names.len() as i64;
        if let Some(bad) = self.labels.iter().find(|&&l| l < 0 || l >= classes) {
            bail!(
                "{}: label {bad} is outside the {classes} classes",
                self.name
            );
        }
        Ok(())
    }
}

/// Splits off a validation set from TRAINING data (seeded, stratified by
/// nothing: a uniform shuffle). Returns (train, validation).
pub fn split_validation(data: &Dataset, fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
    if !(0.0..1.0).contains(&fraction) {
        bail!("data.validation_fraction must be within [0, 1), got {fraction}");
    }
    let order = permutation(&mut seeded(seed), data.len());
    let n_val = (data.len() as f64 * fraction).round() as usize;
    let (val, train) = order.split_at(n_val);
    Ok((data.subset(train), data.subset(val)))
}

/// Training augmentation: random crop after zero padding, horizontal flip.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Augment {
    /// Zero padding before a random crop back to the original size (4 for CIFAR).
    pub crop_padding: usize,
    pub horizontal_flip: bool,
}

impl Augment {
    pub fn is_active(&self) -> bool {
        self.crop_padding > 0 || self.horizontal_flip
    }

    pub fn apply(&self, image: &[f32], [c, h, w]: [usize; 3], rng: &mut AtopRng) -> Vec<f32> {
        let p = self.crop_padding as i64;
        let dy = if p > 0 {
            rng.random_range(-p..=p) as isize
        } else {
            0
        };
        let dx = if p > 0 {
            rng.random_range(-p..=p) as isize
        } else {
            0
        };
        let flip = self.horizontal_flip && rng.random::<bool>();
        let mut out = vec![0f32; c * h * w];
        for ch in 0..c {
            for y in 0..h {
                let sy = y as isize + dy;
                if sy < 0 || sy >= h as isize {
                    continue;
                }
                for x in 0..w {
                    let xx = if flip { w - 1 - x } else { x };
                    let sx = xx as isize + dx;
                    if sx < 0 || sx >= w as isize {
                        continue;
                    }
                    out[(ch * h + y) * w + x] = image[(ch * h + sy as usize) * w + sx as usize];
                }
            }
        }
        out
    }
}

/// Reads a whole file, naming it in the error.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    crate::fsutil::read_bounded(path, crate::fsutil::read_limits::DATA_FILE, "data file")
}

/// Records a file's hash for the artifact's manifest.
pub fn file_hash(path: &Path, bytes: &[u8]) -> FileHash {
    FileHash {
        path: path.display().to_string(),
        sha256: sha256_hex(bytes),
    }
}

/// Where an IDX dataset is looked for when no directory is configured.
/// MNIST and Fashion-MNIST share their file names, so each is looked for
/// only in directories named after it: MNIST never silently loads
/// Fashion-MNIST.
pub fn idx_candidates(kind: DatasetKind) -> Vec<PathBuf> {
    match kind {
        DatasetKind::Mnist => vec![
            PathBuf::from("data/mnist"),
            PathBuf::from("/usr/share/datasets/mnist"),
        ],
        _ => vec![
            PathBuf::from("data/fashion-mnist"),
            PathBuf::from("data"),
            PathBuf::from("/usr/share/datasets/fashion-mnist"),
        ],
    }
}

/// Which dataset and where.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    FashionMnist,
    Mnist,
    Cifar10,
    Cifar100,
    Imagenette,
}

/// Loads the train and test parts of a dataset.
pub fn load(
    kind: DatasetKind,
    dir: Option<&Path>,
    image_size: usize,
) -> Result<(Dataset, Dataset)> {
    match kind {
        DatasetKind::FashionMnist | DatasetKind::Mnist => {
            let (name, classes) = match kind {
                DatasetKind::FashionMnist => (
                    "fashion-mnist",
                    idx::FASHION_MNIST_CLASSES.map(String::from).to_vec(),
                ),
                _ => ("mnist", (0..10).map(|d| d.to_string()).collect()),
            };
            let dir = match dir {
                Some(d) => d.to_path_buf(),
                None => {
                    let candidates = idx_candidates(kind);
                    idx::find_dir(&candidates).with_context(|| {
                        let places: Vec<String> =
                            candidates.iter().map(|p| p.display().to_string()).collect();
                        let hint = match kind {
                            DatasetKind::Mnist => "set data.dir to the directory of the MNIST IDX files",
                            _ => "install Debian's dataset-fashion-mnist or run scripts/fetch-data.sh",
                        };
                        format!("{name} not found in {}: {hint}", places.join(", "))
                    })?
                }
            };
            idx::load_pair(&dir, name, &classes)
        }
        DatasetKind::Cifar10 | DatasetKind::Cifar100 => {
            let dir = dir.context("data.dir must name the CIFAR binary directory")?;
            cifar::load(dir, kind == DatasetKind::Cifar100)
        }
        DatasetKind::Imagenette => {
            let dir =
                dir.context("data.dir must name the ImageNette directory (train/ and val/)")?;
            if image_size == 0 {
                bail!("data.image_size must be set for an image folder");
            }
            Ok((
                folder::load(&dir.join("train"), "imagenette", image_size)?,
                folder::load(&dir.join("val"), "imagenette", image_size)?,
            ))
        }
    }
}

#[cfg(test)]
mod tests;
