//! Named parameters: a module's tensors as `(name, data)` pairs in the
//! PyTorch layout, and back. This is what lets an artifact be opened with
//! `safetensors.torch.load_file` and lets public PyTorch weights be imported.
//!
//! burn and PyTorch differ in three places, handled here once: BatchNorm's
//! `gamma`/`beta` are PyTorch's `weight`/`bias`; a Linear weight is stored
//! `[in, out]` by burn and `[out, in]` by PyTorch; and some architectures
//! rename fields (given as substring `renames` by the model's config).

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, TensorData};

use crate::error::{AtopError, Result};

/// How a parameter is stored differently in the PyTorch layout.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    Same,
    /// 2-D weight transposed.
    Transposed,
}

/// Tracks the module path during a visit and turns it into a PyTorch name.
#[derive(Default)]
struct PathTracker {
    names: Vec<String>,
    containers: Vec<String>,
}

impl PathTracker {
    fn enter(&mut self, name: &str, container: &str) {
        self.names.push(name.to_string());
        self.containers.push(container.to_string());
    }

    fn exit(&mut self) {
        self.names.pop();
        self.containers.pop();
    }

    /// The PyTorch name and layout of the parameter at the current path.
    fn torch_name(&self, renames: &[(&str, &str)]) -> (String, Layout) {
        // `containers[i]` is the type that holds field `names[i]`; the leaf's
        // owner is therefore the last container.
        let owner = self.containers.last().map(String::as_str).unwrap_or("");
        let leaf = self.names.last().map(String::as_str).unwrap_or("");
        // Enum variants (Classifier::SmallCnn, Purifier::Gan) are not part
        // of the PyTorch names: the manifest says which variant it is.
        let mut names: Vec<String> = self
            .names
            .iter()
            .zip(&self.containers)
            .filter(|(_, container)| !container.starts_with("Enum:"))
            .map(|(name, _)| name.clone())
            .collect();
        let mut layout = Layout::Same;
        if owner == "Struct:BatchNorm" {
            match leaf {
                "gamma" => *names.last_mut().expect("non-empty path") = "weight".into(),
                "beta" => *names.last_mut().expect("non-empty path") = "bias".into(),
                _ => {}
            }
        }
        if owner == "Struct:Linear" && leaf == "weight" {
            layout = Layout::Transposed;
        }
        let mut name = format!(".{}.", names.join("."));
        for (from, to) in renames {
            name = name.replace(from, to);
        }
        (name.trim_matches('.').to_string(), layout)
    }
}

fn to_torch_layout<const D: usize>(tensor: Tensor<D>, layout: Layout) -> TensorData {
    match layout {
        Layout::Same => tensor.into_data(),
        Layout::Transposed => tensor.transpose().into_data(),
    }
}

struct Exporter<'a> {
    path: PathTracker,
    renames: &'a [(&'a str, &'a str)],
    out: Vec<(String, TensorData)>,
}

impl ModuleVisitor for Exporter<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let (name, layout) = self.path.torch_name(self.renames);
        let data = to_torch_layout(param.val(), layout).convert::<f32>();
        self.out.push((name, data));
    }
}

/// All float parameters and buffers of `module`, with PyTorch names, as f32.
pub fn export_params<M: Module>(module: &M, renames: &[(&str, &str)]) -> Vec<(String, TensorData)> {
    let mut exporter = Exporter {
        path: PathTracker::default(),
        renames,
        out: Vec::new(),
    };
    module.visit(&mut exporter);
    exporter.out
}

struct Importer<'a> {
    path: PathTracker,
    renames: &'a [(&'a str, &'a str)],
    tensors: &'a BTreeMap<String, TensorData>,
    used: Vec<String>,
    errors: Vec<String>,
}

impl ModuleMapper for Importer<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (name, layout) = self.path.torch_name(self.renames);
        let Some(data) = self.tensors.get(&name) else {
            self.errors.push(format!("missing tensor `{name}`"));
            return param;
        };
        let mut expected: Vec<usize> = param.lazy_shape().to_vec();
        if layout == Layout::Transposed {
            expected.reverse();
        }
        if data.shape().as_slice() != expected.as_slice() {
            self.errors.push(format!(
                "tensor `{name}` has shape {:?}, the model needs {:?}",
                data.shape().as_slice(),
                expected
            ));
            return param;
        }
        let device = param.lazy_device();
        let data = data.clone().convert::<f32>();
        // Transposed on the host: the parameter is then contiguous, as a
        // freshly initialised one is (a strided view takes another matmul
        // path), and loading never reads back from the device (WebGPU in a
        // browser cannot).
        let data = match layout {
            Layout::Same => data,
            Layout::Transposed => match swap_last_two_dims(&data) {
                Some(t) => t,
                None => {
                    self.errors
                        .push(format!("tensor `{name}` cannot be transposed"));
                    return param;
                }
            },
        };
        self.used.push(name);
        let tensor = Tensor::<D>::from_data(data, &device);
        let id: ParamId = param.id;
        param.transform_for_load(tensor, id)
    }
}

/// `data` with its last two dimensions swapped (f32), or `None` when it has
/// fewer than two dimensions or is not f32.
fn swap_last_two_dims(data: &TensorData) -> Option<TensorData> {
    let shape = data.shape().as_slice().to_vec();
    let d = shape.len();
    if d < 2 {
        return None;
    }
    let (rows, cols) = (shape[d - 2], shape[d - 1]);
    let values = data.as_slice::<f32>().ok()?;
    let mut out = vec![0f32; values.len()];
    for (block_in, block_out) in values
        .chunks_exact(rows * cols)
        .zip(out.chunks_exact_mut(rows * cols))
    {
        for r in 0..rows {
            for c in 0..cols {
                block_out[c * rows + r] = block_in[r * cols + c];
            }
        }
    }
    let mut swapped = shape;
    swapped.swap(d - 2, d - 1);
    Some(TensorData::new(out, swapped))
}

/// Loads every float parameter of `module` from `tensors` (PyTorch names).
/// Fails, naming the tensors, when one is missing, has the wrong shape, or
/// when `tensors` holds names the module does not have.
pub fn import_params<M: Module>(
    module: M,
    tensors: &BTreeMap<String, TensorData>,
    renames: &[(&str, &str)],
) -> Result<M> {
    let mut importer = Importer {
        path: PathTracker::default(),
        renames,
        tensors,
        used: Vec::new(),
        errors: Vec::new(),
    };
    let module = module.map(&mut importer);
    let (missing, mut errors): (Vec<String>, Vec<String>) = importer
        .errors
        .into_iter()
        .partition(|e| e.starts_with("missing tensor"));
    // Mis-shaped first, then one line each for the missing and the
    // unexpected names, so a wrong prefix or architecture reads at once.
    if !missing.is_empty() {
        let names: Vec<&str> = missing
            .iter()
            .take(3)
            .map(|e| e.trim_start_matches("missing tensor "))
            .collect();
        errors.push(format!(
            "{} missing tensor(s), e.g. {}",
            missing.len(),
            names.join(", ")
        ));
    }
    let unused: Vec<&String> = tensors
        .keys()
        .filter(|k| !importer.used.contains(k))
        .collect();
    if !unused.is_empty() {
        let names: Vec<String> = unused.iter().take(3).map(|k| format!("`{k}`")).collect();
        errors.push(format!(
            "{} tensor(s) the model does not have, e.g. {}",
            unused.len(),
            names.join(", ")
        ));
    }
    if errors.is_empty() {
        Ok(module)
    } else {
        let more = if errors.len() > 3 {
            format!(" (and {} more problems)", errors.len() - 3)
        } else {
            String::new()
        };
        Err(AtopError::tensor(
            "model weights",
            format!(
                "do not match the architecture: {}{more}",
                errors[..errors.len().min(3)].join("; ")
            ),
        ))
    }
}
