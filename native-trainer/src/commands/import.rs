//! `atop import WEIGHTS --out D`: PyTorch weights (a `.safetensors` file, or
//! a `.pt`/`.pth` state dict read by burn's PyTorch reader, which parses the
//! pickle without executing it) into an `atop` classifier artifact of the run
//! configuration's architecture and input normalization, in the PyTorch key
//! layout atop's artifacts use (RobustBench's for ResNet-18 and WRN-28-10),
//! or with `--model purifier` into a purifier artifact of the configuration's
//! purifier and transform (the GAN inpainter's names are the public PyTorch
//! DeepFillv2's). Missing, unexpected and mis-shaped keys are errors that
//! name them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use atop::artifact::{Artifact, Manifest, sha256_hex};
use atop::model::ClassifierConfig;
use atop::params::import_params;
use burn::tensor::{Device, TensorData};
use pytorch_reader::{DType, PickleValue, PytorchReader};

use super::{command_line, with_run};
use crate::cli::{ImportArgs, ImportedModel};
use crate::fsutil::{read_bounded, read_limits, write_artifact};

/// f32 values from little- or native-endian bytes of a float dtype.
fn floats(bytes: &[u8], dtype: &str, name: &str) -> Result<Vec<f32>> {
    Ok(match dtype {
        "F32" => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        "F64" => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        "F16" => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        "BF16" => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => bail!("tensor `{name}` has dtype {other}; weights must be floating point"),
    })
}

fn read_safetensors(bytes: &[u8], path: &Path) -> Result<BTreeMap<String, TensorData>> {
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a safetensors file: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, view) in file.tensors() {
        let dtype = format!("{:?}", view.dtype());
        let values = floats(view.data(), &dtype, &name)?;
        out.insert(name, TensorData::new(values, view.shape().to_vec()));
    }
    Ok(out)
}

/// The first entry of a pickle that is a Python object other than a tensor
/// (a call such as `os.system` a pickle can carry): its key path and type.
fn foreign_object(value: &PickleValue, at: &str) -> Option<(String, String)> {
    match value {
        PickleValue::Dict(d) => {
            let mut keys: Vec<&String> = d.keys().collect();
            keys.sort();
            keys.into_iter().find_map(|k| {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                foreign_object(&d[k], &path)
            })
        }
        PickleValue::List(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| foreign_object(v, &format!("{at}[{i}]"))),
        PickleValue::Unsupported(kind)
            if !(kind.contains("Tensor")
                || kind.contains("Storage")
                || kind.contains("Parameter")) =>
        {
            Some((at.to_string(), kind.clone()))
        }
        _ => None,
    }
}

fn read_pytorch(path: &Path, key: Option<&str>) -> Result<BTreeMap<String, TensorData>> {
    // The pickle is parsed, never run; an object that is not a tensor (what
    // a malicious pickle uses to run code) is refused by name.
    let tree = PytorchReader::read_pickle_data(path, None)
        .map_err(|e| anyhow::anyhow!("{}: not a PyTorch state dict: {e}", path.display()))?;
    if let Some((key, kind)) = foreign_object(&tree, "") {
        bail!(
            "{}: entry `{key}` is a pickled Python object ({kind}), not a tensor; refused: \
             atop reads state dicts of tensors only and never runs pickled code",
            path.display()
        );
    }
    let reader = match key {
        Some(key) => PytorchReader::with_top_level_key(path, key)
            .map_err(|e| anyhow::anyhow!("{}: no state dict under `{key}`: {e}", path.display()))?,
        None => PytorchReader::with_top_level_key(path, "state_dict")
            .or_else(|_| PytorchReader::new(path))
            .map_err(|e| anyhow::anyhow!("{}: not a PyTorch state dict: {e}", path.display()))?,
    };
    let total: usize = reader.tensors().values().map(|t| t.byte_len()).sum();
    if total as u64 > read_limits::MODEL_FILE {
        bail!(
            "{}: {} MiB of tensors, over the limit of {} MiB",
            path.display(),
            total >> 20,
            read_limits::MODEL_FILE >> 20
        );
    }
    let mut out = BTreeMap::new();
    for (name, tensor) in reader.into_tensors() {
        let dtype = match tensor.dtype() {
            DType::F32 => "F32",
            DType::F64 => "F64",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            _ if name.ends_with("num_batches_tracked") => continue,
            other => bail!("tensor `{name}` has dtype {other:?}; weights must be floating point"),
        };
        let shape = tensor.shape().to_vec();
        let bytes = tensor
            .read()
            .with_context(|| format!("{}: tensor `{name}`", path.display()))?;
        // The reader hands back native-endian bytes; every target here is little-endian.
        let values = floats(&bytes, dtype, &name)?;
        out.insert(name, TensorData::new(values, shape));
    }
    Ok(out)
}

/// The state dict's keys as the model names them: BatchNorm's step counter
/// dropped, and a prefix every key shares (`module.` from DataParallel, or
/// `--strip-prefix`) removed.
fn model_keys(
    mut tensors: BTreeMap<String, TensorData>,
    strip: Option<&str>,
) -> BTreeMap<String, TensorData> {
    tensors.retain(|k, _| !k.ends_with("num_batches_tracked"));
    let prefix = strip.map(String::from).or_else(|| {
        tensors
            .keys()
            .all(|k| k.starts_with("module."))
            .then(|| "module.".to_string())
    });
    match prefix {
        Some(p) => tensors
            .into_iter()
            .map(|(k, v)| (k.strip_prefix(&p).map(String::from).unwrap_or(k), v))
            .collect(),
        None => tensors,
    }
}

/// RobustBench's WideResNet builds a `sub_block1` that its forward pass never
/// calls, and its checkpoints carry that block's weights: dropped here
/// (with a log line) instead of refused as unexpected.
fn without_unused_blocks<'a>(
    config: &ClassifierConfig,
    tensors: &'a BTreeMap<String, TensorData>,
) -> std::borrow::Cow<'a, BTreeMap<String, TensorData>> {
    let unused = |k: &String| k.starts_with("sub_block1.");
    if !matches!(config, ClassifierConfig::WideResnet(_)) || !tensors.keys().any(unused) {
        return std::borrow::Cow::Borrowed(tensors);
    }
    let kept: BTreeMap<_, _> = tensors
        .iter()
        .filter(|(k, _)| !unused(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    tracing::info!(
        dropped = tensors.len() - kept.len(),
        "RobustBench's unused WideResNet `sub_block1` weights are not imported"
    );
    std::borrow::Cow::Owned(kept)
}

/// `atop import`.
pub fn run(args: &ImportArgs) -> Result<()> {
    let path = &args.weights;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    // Read once: the source's hash for the manifest, and the tensors of a
    // .safetensors file (burn's PyTorch reader opens a .pt itself).
    let source = read_bounded(path, read_limits::MODEL_FILE, "weights")?;
    let tensors = match ext {
        "safetensors" if args.state_dict_key.is_some() => bail!(
            "{}: --state-dict-key reads a .pt checkpoint; a .safetensors file is one state dict \
             (use --strip-prefix for a prefix its keys share)",
            path.display()
        ),
        "safetensors" => read_safetensors(&source, path)?,
        "pt" | "pth" | "bin" => read_pytorch(path, args.state_dict_key.as_deref())?,
        _ => bail!(
            "{}: give a .safetensors file or a .pt/.pth PyTorch state dict",
            path.display()
        ),
    };
    let tensors = model_keys(tensors, args.strip_prefix.as_deref());
    let command = command_line();
    with_run(&args.run, |cfg, _| {
        let mut manifest = Manifest {
            training: serde_json::json!({
                "stage": "import",
                "command": command,
                "source": path.display().to_string(),
                "source_sha256": sha256_hex(&source),
            }),
            ..Manifest::default()
        };
        let device = Device::flex();
        let does_not_fit = |what: &str, config: &dyn std::fmt::Debug| {
            format!(
                "{}: the weights do not fit {what} {config:?} of the configuration",
                path.display()
            )
        };
        let (artifact, name) = match args.model {
            ImportedModel::Classifier => {
                let config = cfg.classifier.clone();
                let tensors = without_unused_blocks(&config, &tensors);
                let model = import_params(config.init(&device)?, &tensors, config.torch_renames())
                    .with_context(|| does_not_fit("classifier", &config))?;
                manifest.classifier = Some(config);
                (
                    Artifact::new(manifest, Some(&model), None, None)?,
                    "classifier",
                )
            }
            ImportedModel::Purifier => {
                let config = cfg.purifier.clone();
                let model = import_params(config.init(&device)?, &tensors, &[])
                    .with_context(|| does_not_fit("purifier", &config))?;
                manifest.purifier = Some(config);
                manifest.transform = Some(cfg.transform.clone());
                manifest.purify_size = cfg.data.purify_size;
                (
                    Artifact::new(manifest, None, Some(&model), None)?,
                    "purifier",
                )
            }
        };
        let out = args.run.out().join(format!("{name}.safetensors"));
        write_artifact(&out, &artifact)?;
        crate::stdout::print(&format!(
            "imported {} -> {}\n",
            path.display(),
            out.display()
        ))
    })
}
