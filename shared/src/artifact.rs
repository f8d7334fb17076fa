//! The artifact: one `.safetensors` file with the trained weights and a JSON
//! manifest, written by the trainer and loaded unchanged by the browser.
//!
//! * Tensors live under the prefixes `classifier.` and `purifier.` (PyTorch
//!   parameter names, see [`crate::params`]) and, for the demo's bundled test
//!   images, `samples.images` (f32 `[n, c, h, w]` in [0,1]) and
//!   `samples.labels` (i64 `[n]`).
//! * The safetensors header metadata key `atop` holds the [`Manifest`] JSON.
//! * `payload_sha256` is the SHA-256 of the tensors in a canonical order
//!   (see [`payload_sha256`]), independent of how the file lays them out, so
//!   anyone can recompute it from the tensors alone.
//!
//! Loading checks the format version and the payload hash and says which
//! file is wrong and how. Writing to disk (atomically) is the caller's job:
//! this crate does not touch the file system.

use std::collections::{BTreeMap, HashMap};

use burn::tensor::{Device, TensorData};
use half::f16;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AtopError, Result};
use crate::model::{Classifier, ClassifierConfig, Purifier, PurifierConfig};
use crate::params::{export_params, import_params};
use crate::transform::TransformConfig;

/// Version of the artifact layout; bumped on any incompatible change.
/// Version 2 added the defense identity (`defense_sha256`) and `purify_size`.
pub const FORMAT_VERSION: u32 = 2;
/// Header metadata key that holds the manifest.
pub const MANIFEST_KEY: &str = "atop";
pub const CLASSIFIER_PREFIX: &str = "classifier.";
pub const PURIFIER_PREFIX: &str = "purifier.";
pub const SAMPLE_IMAGES: &str = "samples.images";
pub const SAMPLE_LABELS: &str = "samples.labels";

/// A data file the model was trained or evaluated on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileHash {
    pub path: String,
    pub sha256: String,
}

/// Which data the artifact's models are for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatasetInfo {
    pub name: String,
    /// `[c, h, w]` of the images the models take.
    pub image_shape: [usize; 3],
    pub class_names: Vec<String>,
    #[serde(default)]
    pub files: Vec<FileHash>,
}

/// One measured figure with the protocol that produced it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    /// Attack, norm, epsilon, gradient mode, EOT, subset, seeds, ...
    #[serde(default)]
    pub protocol: serde_json::Value,
}

/// The artifact's manifest (header metadata key `atop`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    /// Version of the code that wrote the artifact.
    pub code_version: String,
    /// Classifier architecture, including its input normalisation.
    pub classifier: Option<ClassifierConfig>,
    pub purifier: Option<PurifierConfig>,
    pub transform: Option<TransformConfig>,
    /// Side the purifier works at (images are resized to it and back);
    /// 0 = the images' own size.
    #[serde(default)]
    pub purify_size: usize,
    pub dataset: Option<DatasetInfo>,
    /// Named seeds of the run (training, data split, evaluation subset, ...).
    #[serde(default)]
    pub seeds: BTreeMap<String, u64>,
    /// The resolved training configuration, as the trainer recorded it.
    #[serde(default)]
    pub training: serde_json::Value,
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// SHA-256 of the tensor payload; filled in when the artifact is written.
    #[serde(default)]
    pub payload_sha256: String,
    /// The artifact's identity: SHA-256 of everything that decides what the
    /// defense computes (see [`Manifest::defense_identity`]). Permalinks,
    /// reports and the browser cite it; metrics stay outside it.
    #[serde(default)]
    pub defense_sha256: String,
}

/// The fields of a manifest that decide what the defense computes.
#[derive(Serialize)]
struct DefenseFields<'a> {
    format_version: u32,
    payload_sha256: &'a str,
    classifier: &'a Option<ClassifierConfig>,
    purifier: &'a Option<PurifierConfig>,
    transform: &'a Option<TransformConfig>,
    purify_size: usize,
    image_shape: Option<[usize; 3]>,
    class_names: Option<&'a [String]>,
}

impl Manifest {
    /// SHA-256 over the defense: the tensor payload (weights and bundled
    /// samples), the classifier configuration with its normalization, the
    /// purifier configuration, the transform, the purify size, and the image
    /// shape and class names. Editing any of them changes the identity;
    /// metrics, seeds and the training record do not.
    pub fn defense_identity(&self) -> String {
        let fields = DefenseFields {
            format_version: self.format_version,
            payload_sha256: &self.payload_sha256,
            classifier: &self.classifier,
            purifier: &self.purifier,
            transform: &self.transform,
            purify_size: self.purify_size,
            image_shape: self.dataset.as_ref().map(|d| d.image_shape),
            class_names: self.dataset.as_ref().map(|d| d.class_names.as_slice()),
        };
        // Struct fields serialise in declaration order, so the JSON is canonical.
        let json = serde_json::to_vec(&fields).unwrap_or_default();
        let mut hasher = Sha256::new();
        hasher.update(b"atop-defense\0");
        hasher.update(json);
        hex(&hasher.finalize())
    }

    /// Recomputes both hashes from `tensors`.
    fn seal(&mut self, tensors: &BTreeMap<String, StoredTensor>) {
        self.payload_sha256 = payload_sha256(tensors);
        self.defense_sha256 = self.defense_identity();
    }
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            format_version: FORMAT_VERSION,
            code_version: env!("CARGO_PKG_VERSION").to_string(),
            classifier: None,
            purifier: None,
            transform: None,
            purify_size: 0,
            dataset: None,
            seeds: BTreeMap::new(),
            training: serde_json::Value::Null,
            metrics: Vec::new(),
            payload_sha256: String::new(),
            defense_sha256: String::new(),
        }
    }
}

/// A tensor as stored in the file.
#[derive(Clone, Debug, PartialEq)]
pub enum StoredTensor {
    F32 {
        shape: Vec<usize>,
        values: Vec<f32>,
    },
    /// Half precision, for artifacts shipped to the browser (half the bytes;
    /// loaded as f32).
    F16 {
        shape: Vec<usize>,
        values: Vec<f16>,
    },
    I64 {
        shape: Vec<usize>,
        values: Vec<i64>,
    },
}

impl StoredTensor {
    pub fn shape(&self) -> &[usize] {
        match self {
            StoredTensor::F32 { shape, .. }
            | StoredTensor::F16 { shape, .. }
            | StoredTensor::I64 { shape, .. } => shape,
        }
    }

    fn dtype(&self) -> Dtype {
        match self {
            StoredTensor::F32 { .. } => Dtype::F32,
            StoredTensor::F16 { .. } => Dtype::F16,
            StoredTensor::I64 { .. } => Dtype::I64,
        }
    }

    /// Little-endian bytes, as safetensors stores them.
    fn bytes(&self) -> Vec<u8> {
        match self {
            StoredTensor::F32 { values, .. } => {
                values.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            StoredTensor::F16 { values, .. } => {
                values.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            StoredTensor::I64 { values, .. } => {
                values.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
        }
    }

    fn from_data(name: &str, data: TensorData) -> Result<Self> {
        let shape = data.shape().to_vec();
        let values = data
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| AtopError::tensor(name, format!("cannot read as f32: {e:?}")))?;
        Ok(StoredTensor::F32 { shape, values })
    }

    /// The tensor's values as burn data (`name` names it in errors).
    pub fn to_data(&self, name: &str) -> Result<TensorData> {
        match self {
            StoredTensor::F32 { shape, values } => {
                Ok(TensorData::new(values.clone(), shape.clone()))
            }
            StoredTensor::F16 { shape, values } => Ok(TensorData::new(
                values.iter().map(|v| v.to_f32()).collect::<Vec<f32>>(),
                shape.clone(),
            )),
            StoredTensor::I64 { .. } => {
                Err(AtopError::tensor(name, "is i64 where weights must be f32"))
            }
        }
    }
}

/// SHA-256 over all tensors in name order: for each, the name, a 0 byte, the
/// dtype name, a 0 byte, the rank and each dimension as u64 little-endian,
/// and the little-endian element bytes.
pub fn payload_sha256(tensors: &BTreeMap<String, StoredTensor>) -> String {
    hash_tensors(Sha256::new(), tensors.iter())
}

fn hash_tensors<'a>(
    mut hasher: Sha256,
    tensors: impl Iterator<Item = (&'a String, &'a StoredTensor)>,
) -> String {
    for (name, tensor) in tensors {
        hasher.update(name.as_bytes());
        hasher.update([0u8]);
        hasher.update(format!("{:?}", tensor.dtype()).as_bytes());
        hasher.update([0u8]);
        hasher.update((tensor.shape().len() as u64).to_le_bytes());
        for &d in tensor.shape() {
            hasher.update((d as u64).to_le_bytes());
        }
        hasher.update(tensor.bytes());
    }
    hex(&hasher.finalize())
}

/// The longest safetensors header an artifact may have (its manifest and
/// tensor index; a WRN-28-10 artifact's is under 100 KB).
pub const MAX_HEADER_BYTES: u64 = 100 << 20;

/// The length of the header that follows an artifact's first 8 bytes (the
/// safetensors length prefix), checked against [`MAX_HEADER_BYTES`], so a
/// reader of a file or a stream knows how much to read next.
pub fn header_length(first: [u8; 8], source_name: &str) -> Result<u64> {
    let n = u64::from_le_bytes(first);
    if !(2..=MAX_HEADER_BYTES).contains(&n) {
        return Err(AtopError::artifact(
            source_name,
            format!(
                "is not an artifact: its safetensors header length is {n} bytes (2 to {MAX_HEADER_BYTES} expected)"
            ),
        ));
    }
    Ok(n)
}

/// The whole artifact's length as its first bytes declare it: `head` is the
/// 8-byte prefix and the header; the end of the last tensor's data follows.
pub fn declared_length(head: &[u8], source_name: &str) -> Result<u64> {
    let err = |reason: String| AtopError::artifact(source_name, reason);
    let first: [u8; 8] = head
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| err("is shorter than a safetensors length prefix".into()))?;
    let n = header_length(first, source_name)?;
    let header = head
        .get(8..8 + n as usize)
        .ok_or_else(|| err(format!("ends inside its {n}-byte header")))?;
    let index: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| {
            err(format!(
                "is not an artifact: its header is not a JSON object: {e}"
            ))
        })?;
    let mut end = 0u64;
    for (name, entry) in index.iter().filter(|(k, _)| *k != "__metadata__") {
        let offsets = entry
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .and_then(|o| o.get(1))
            .and_then(|e| e.as_u64())
            .ok_or_else(|| err(format!("tensor `{name}` has no data offsets in the header")))?;
        end = end.max(offsets);
    }
    Ok(8 + n + end)
}

/// The manifest (as JSON) and the tensors of a safetensors file.
fn read_parts(
    bytes: &[u8],
    source_name: &str,
) -> Result<(serde_json::Value, BTreeMap<String, StoredTensor>)> {
    let err = |reason: String| AtopError::artifact(source_name, reason);
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| {
        err(format!(
            "is not a readable safetensors file (truncated or corrupted?): {e}"
        ))
    })?;
    let json = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(MANIFEST_KEY))
        .ok_or_else(|| {
            err(format!(
                "has no `{MANIFEST_KEY}` manifest in its header: not an atop artifact"
            ))
        })?;
    let json: serde_json::Value =
        serde_json::from_str(json).map_err(|e| err(format!("manifest is not valid JSON: {e}")))?;
    let file = SafeTensors::deserialize(bytes).map_err(|e| {
        err(format!(
            "is not a readable safetensors file (truncated or corrupted?): {e}"
        ))
    })?;
    let mut tensors = BTreeMap::new();
    for (name, view) in file.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let tensor = match view.dtype() {
            Dtype::F32 => StoredTensor::F32 {
                shape,
                values: data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            },
            Dtype::F16 => StoredTensor::F16 {
                shape,
                values: data
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            },
            Dtype::I64 => StoredTensor::I64 {
                shape,
                values: data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("chunk of 8")))
                    .collect(),
            },
            other => {
                return Err(err(format!(
                    "tensor `{name}` has dtype {other:?}; only F32, F16 and I64 are used"
                )));
            }
        };
        tensors.insert(name, tensor);
    }
    Ok((json, tensors))
}

/// SHA-256 of a byte string, hex encoded (for artifact files and data files).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bundled test images for the demo.
#[derive(Clone, Debug, PartialEq)]
pub struct Samples {
    /// `[n, c, h, w]` in [0,1].
    pub images: TensorData,
    pub labels: Vec<i64>,
}

/// Weights plus manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Artifact {
    pub manifest: Manifest,
    /// Every tensor by its full name (with prefix).
    pub tensors: BTreeMap<String, StoredTensor>,
}

impl Artifact {
    /// Collects the models' weights under their prefixes. The manifest's
    /// `classifier` / `purifier` configs must describe the given models.
    pub fn new(
        mut manifest: Manifest,
        classifier: Option<&Classifier>,
        purifier: Option<&Purifier>,
        samples: Option<&Samples>,
    ) -> Result<Self> {
        let mut tensors = BTreeMap::new();
        if let Some(model) = classifier {
            let config = manifest.classifier.as_ref().ok_or_else(|| {
                AtopError::artifact(
                    "(new)",
                    "a classifier was given but the manifest has no classifier config",
                )
            })?;
            for (name, data) in export_params(model, config.torch_renames()) {
                let full = format!("{CLASSIFIER_PREFIX}{name}");
                tensors.insert(full.clone(), StoredTensor::from_data(&full, data)?);
            }
        }
        if let Some(model) = purifier {
            if manifest.purifier.is_none() {
                return Err(AtopError::artifact(
                    "(new)",
                    "a purifier was given but the manifest has no purifier config",
                ));
            }
            for (name, data) in export_params(model, &[]) {
                let full = format!("{PURIFIER_PREFIX}{name}");
                tensors.insert(full.clone(), StoredTensor::from_data(&full, data)?);
            }
        }
        if let Some(samples) = samples {
            let n = samples
                .images
                .shape()
                .as_slice()
                .first()
                .copied()
                .unwrap_or(0);
            if samples.images.shape().num_dims() != 4 || n != samples.labels.len() {
                return Err(AtopError::shape(
                    "sample images",
                    format!("[n, c, h, w] with n = {} labels", samples.labels.len()),
                    samples.images.shape().as_slice(),
                ));
            }
            tensors.insert(
                SAMPLE_IMAGES.to_string(),
                StoredTensor::from_data(SAMPLE_IMAGES, samples.images.clone())?,
            );
            tensors.insert(
                SAMPLE_LABELS.to_string(),
                StoredTensor::I64 {
                    shape: vec![n],
                    values: samples.labels.clone(),
                },
            );
        }
        manifest.format_version = FORMAT_VERSION;
        manifest.seal(&tensors);
        Ok(Self { manifest, tensors })
    }

    /// The file's bytes (safetensors with the manifest in the header).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut manifest = self.manifest.clone();
        manifest.seal(&self.tensors);
        let json = serde_json::to_string(&manifest).map_err(|e| {
            AtopError::artifact("(write)", format!("manifest does not serialise: {e}"))
        })?;
        let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.dtype(), t.shape().to_vec(), t.bytes()))
            .collect();
        let views = bytes
            .iter()
            .map(|(n, dtype, shape, data)| {
                TensorView::new(*dtype, shape.clone(), data)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| AtopError::tensor(n, format!("{e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata = HashMap::from([(MANIFEST_KEY.to_string(), json)]);
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| AtopError::artifact("(write)", format!("safetensors: {e}")))
    }

    /// Parses and verifies an artifact. `source_name` (a path or URL) is only
    /// used in error messages.
    pub fn from_bytes(bytes: &[u8], source_name: &str) -> Result<Self> {
        let (json, tensors) = read_parts(bytes, source_name)?;
        let version = json.get("format_version").and_then(|v| v.as_u64());
        if version != Some(u64::from(FORMAT_VERSION)) {
            return Err(AtopError::artifact(
                source_name,
                format!(
                    "has format version {}, this program reads version {FORMAT_VERSION}{}",
                    version.map_or("(missing)".to_string(), |v| v.to_string()),
                    if version == Some(1) {
                        " (`atop upgrade` rewrites a version-1 artifact)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        let manifest: Manifest = serde_json::from_value(json).map_err(|e| {
            AtopError::artifact(
                source_name,
                format!("manifest does not match the format: {e}"),
            )
        })?;
        let artifact = Self { manifest, tensors };
        artifact.verify(source_name)?;
        Ok(artifact)
    }

    /// Reads an artifact of format 1 (before the defense identity) or 2 and
    /// returns it as format 2: the payload hash is verified, the identity is
    /// computed from the manifest as it stands (format 1 never recorded one),
    /// and `purify_size` comes from the recorded training configuration.
    pub fn upgrade(bytes: &[u8], source_name: &str) -> Result<Self> {
        let (mut json, tensors) = read_parts(bytes, source_name)?;
        if json.get("format_version").and_then(|v| v.as_u64()) != Some(1) {
            return Self::from_bytes(bytes, source_name);
        }
        let purify_size = json
            .pointer("/training/config/data/purify_size")
            .cloned()
            .unwrap_or(serde_json::json!(0));
        json["format_version"] = serde_json::json!(FORMAT_VERSION);
        json["purify_size"] = purify_size;
        let mut manifest: Manifest = serde_json::from_value(json).map_err(|e| {
            AtopError::artifact(
                source_name,
                format!("manifest does not match the format: {e}"),
            )
        })?;
        if manifest.payload_sha256 != payload_sha256(&tensors) {
            return Err(AtopError::artifact(
                source_name,
                "payload hash mismatch: the file was modified or corrupted; not upgraded",
            ));
        }
        manifest.seal(&tensors);
        Ok(Self { manifest, tensors })
    }

    /// Checks the payload hash and the defense identity.
    fn verify(&self, source_name: &str) -> Result<()> {
        let err = |reason: String| AtopError::artifact(source_name, reason);
        let m = &self.manifest;
        let actual = payload_sha256(&self.tensors);
        if actual != m.payload_sha256 {
            return Err(err(format!(
                "payload hash mismatch: the manifest says {}, the tensors hash to {actual} (the file was modified or corrupted)",
                m.payload_sha256
            )));
        }
        let identity = m.defense_identity();
        if identity != m.defense_sha256 {
            return Err(err(format!(
                "defense identity mismatch: the manifest says {}, its weights, model configurations, \
                 transform and purify size hash to {identity} (the manifest was edited)",
                m.defense_sha256
            )));
        }
        Ok(())
    }

    /// The tensors under `prefix`, with the prefix removed.
    fn prefixed(&self, prefix: &str) -> Result<BTreeMap<String, TensorData>> {
        self.tensors
            .iter()
            .filter_map(|(name, t)| name.strip_prefix(prefix).map(|short| (name, short, t)))
            .map(|(name, short, t)| Ok((short.to_string(), t.to_data(name)?)))
            .collect()
    }

    /// The classifier's own identity: SHA-256 of its configuration and its
    /// tensors, so that artifacts holding the same classifier (a defense and
    /// the classifier it was fine-tuned against) are recognised as such.
    pub fn classifier_sha256(&self) -> Option<String> {
        let config = self.manifest.classifier.as_ref()?;
        let mut hasher = Sha256::new();
        hasher.update(b"atop-classifier\0");
        hasher.update(serde_json::to_vec(config).unwrap_or_default());
        Some(hash_tensors(
            hasher,
            self.tensors
                .iter()
                .filter(|(name, _)| name.starts_with(CLASSIFIER_PREFIX)),
        ))
    }

    /// Builds the classifier the manifest describes and loads its weights.
    pub fn classifier(&self, device: &Device, source_name: &str) -> Result<Classifier> {
        let config = self.manifest.classifier.as_ref().ok_or_else(|| {
            AtopError::artifact(
                source_name,
                "holds no classifier (manifest field `classifier` is empty)",
            )
        })?;
        let model = config.init(device)?;
        import_params(
            model,
            &self.prefixed(CLASSIFIER_PREFIX)?,
            config.torch_renames(),
        )
        .map_err(|e| {
            AtopError::artifact(
                source_name,
                format!("the classifier its manifest names does not match its tensors: {e}"),
            )
        })
    }

    /// Builds the purifier the manifest describes and loads its weights.
    pub fn purifier(&self, device: &Device, source_name: &str) -> Result<Purifier> {
        let config = self.manifest.purifier.as_ref().ok_or_else(|| {
            AtopError::artifact(
                source_name,
                "holds no purifier (manifest field `purifier` is empty)",
            )
        })?;
        let model = config.init(device)?;
        import_params(model, &self.prefixed(PURIFIER_PREFIX)?, &[]).map_err(|e| {
            AtopError::artifact(
                source_name,
                format!("the purifier its manifest names does not match its tensors: {e}"),
            )
        })
    }

    /// Builds every model the manifest names and loads its tensors, so a
    /// configuration that does not describe the tensors (a width edited in
    /// the manifest, say) is an error here rather than at first use.
    pub fn check_models(&self, device: &Device, source_name: &str) -> Result<()> {
        if self.manifest.classifier.is_some() {
            self.classifier(device, source_name)?;
        }
        if self.manifest.purifier.is_some() {
            self.purifier(device, source_name)?;
        }
        let unclaimed = self.tensors.keys().find(|name| {
            let claimed = |prefix: &str, present: bool| present && name.starts_with(prefix);
            !(claimed(CLASSIFIER_PREFIX, self.manifest.classifier.is_some())
                || claimed(PURIFIER_PREFIX, self.manifest.purifier.is_some())
                || name.starts_with("samples."))
        });
        match unclaimed {
            Some(name) => Err(AtopError::artifact(
                source_name,
                format!("tensor `{name}` belongs to no model the manifest names"),
            )),
            None => Ok(()),
        }
    }

    /// The same artifact with `samples` bundled (replacing any there), for
    /// the browser demo; the payload hash is recomputed.
    pub fn with_samples(mut self, samples: &Samples) -> Result<Self> {
        let bundled = Artifact::new(Manifest::default(), None, None, Some(samples))?;
        self.tensors.extend(bundled.tensors);
        self.manifest.seal(&self.tensors);
        Ok(self)
    }

    /// The same artifact with its weights stored as f16 (about half the
    /// bytes, for the browser; sample images stay exact f32). The models
    /// then compute with the rounded weights, so this is a new artifact with
    /// its own payload hash; its metrics were measured with f32 weights.
    pub fn to_half(mut self) -> Self {
        for (name, tensor) in self.tensors.iter_mut() {
            if name.starts_with("samples.") {
                continue;
            }
            if let StoredTensor::F32 { shape, values } = tensor {
                *tensor = StoredTensor::F16 {
                    shape: std::mem::take(shape),
                    values: values.iter().map(|&v| f16::from_f32(v)).collect(),
                };
            }
        }
        self.manifest.seal(&self.tensors);
        self
    }

    /// The bundled sample images, if any.
    pub fn samples(&self, source_name: &str) -> Result<Option<Samples>> {
        let (Some(images), Some(labels)) = (
            self.tensors.get(SAMPLE_IMAGES),
            self.tensors.get(SAMPLE_LABELS),
        ) else {
            return Ok(None);
        };
        let images = images.to_data(SAMPLE_IMAGES)?;
        let StoredTensor::I64 { values: labels, .. } = labels else {
            return Err(AtopError::artifact(
                source_name,
                format!("`{SAMPLE_LABELS}` must be i64"),
            ));
        };
        if images.shape().num_dims() != 4 || images.shape().as_slice()[0] != labels.len() {
            return Err(AtopError::artifact(
                source_name,
                format!(
                    "`{SAMPLE_IMAGES}` has shape {:?} but there are {} labels",
                    images.shape().as_slice(),
                    labels.len()
                ),
            ));
        }
        Ok(Some(Samples {
            images,
            labels: labels.clone(),
        }))
    }
}
