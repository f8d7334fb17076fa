//! The golden files the PyTorch package (`python/`, `atop_torch`) is tested
//! against: a tiny artifact of each kind this package covers, a seeded batch,
//! the transform draw, and what atop computes from them. With
//! `ATOP_WRITE_GOLDEN=1` this test writes them; otherwise it checks that the
//! committed files still equal what atop computes, so the Python parity
//! tests always compare with the current Rust code.

use std::path::{Path, PathBuf};

use atop::artifact::{Artifact, Manifest};
use atop::defense::Defense;
use atop::model::classifier::{Normalization, ResNet18Config, SmallCnnConfig, WideResNetConfig};
use atop::model::{AutoencoderConfig, ClassifierConfig, InpainterConfig, PurifierConfig};
use atop::rng::{seeded, with_backend_seed};
use atop::transform::{MaskScope, TransformConfig, TransformKind};
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Distribution, Tensor};

use crate::common::values;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../python/tests/golden")
}

fn flat(t: Tensor<4>) -> Vec<f32> {
    values(t)
}

/// One golden case: the models, the transform and the seed.
struct Case {
    name: &'static str,
    classifier: ClassifierConfig,
    purifier: PurifierConfig,
    kind: TransformKind,
    scope: MaskScope,
    seed: u64,
    /// Redraw every 1-D tensor (biases, BatchNorm's scale, shift and
    /// running statistics) uniformly in this range, so that a BatchNorm's
    /// statistics are not burn's initial zeros and ones.
    redraw_vectors: Option<(f64, f64)>,
    /// The side the purifier works at (0: the image's own size).
    purify_size: usize,
}

/// Replaces every 1-D float tensor of a module with a uniform draw.
struct RedrawVectors {
    range: (f64, f64),
}

impl ModuleMapper for RedrawVectors {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if D != 1 {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let (lo, hi) = self.range;
        let drawn = Tensor::<D>::random(
            tensor.dims(),
            Distribution::Uniform(lo, hi),
            &tensor.device(),
        );
        Param::from_mapped_value(id, drawn, mapper)
    }
}

fn small_cnn() -> ClassifierConfig {
    ClassifierConfig::SmallCnn(SmallCnnConfig {
        width: 4,
        ..SmallCnnConfig::fashion_mnist()
    })
}

fn ae() -> PurifierConfig {
    PurifierConfig::Ae(AutoencoderConfig {
        image_channels: 1,
        width: 4,
    })
}

fn cases() -> Vec<Case> {
    let fmnist = Normalization {
        mean: vec![0.2860],
        std: vec![0.3530],
    };
    let base = |name, kind, scope, seed| Case {
        name,
        classifier: small_cnn(),
        purifier: ae(),
        kind,
        scope,
        seed,
        redraw_vectors: None,
        purify_size: 0,
    };
    vec![
        base("ae-rt2", TransformKind::Rt2, MaskScope::PerSample, 31),
        base("ae-rt3", TransformKind::Rt3, MaskScope::PerSample, 41),
        base(
            "ae-rt1-batch",
            TransformKind::Rt1,
            MaskScope::BatchShared,
            51,
        ),
        Case {
            purify_size: 35,
            ..base(
                "ae-rt2-purify35",
                TransformKind::Rt2,
                MaskScope::PerSample,
                91,
            )
        },
        Case {
            purifier: PurifierConfig::Gan(InpainterConfig {
                image_channels: 1,
                cnum: 4,
                ..InpainterConfig::default()
            }),
            redraw_vectors: Some((-0.2, 0.2)),
            ..base("gan-rt2", TransformKind::Rt2, MaskScope::PerSample, 61)
        },
        Case {
            classifier: ClassifierConfig::ResNet18(ResNet18Config {
                image_channels: 1,
                num_classes: 10,
                width: 4,
                normalization: fmnist.clone(),
            }),
            redraw_vectors: Some((0.5, 1.5)),
            ..base("resnet18-rt2", TransformKind::Rt2, MaskScope::PerSample, 71)
        },
        Case {
            classifier: ClassifierConfig::WideResnet(WideResNetConfig {
                image_channels: 1,
                num_classes: 10,
                depth: 10,
                widen_factor: 2,
                normalization: fmnist,
            }),
            redraw_vectors: Some((0.5, 1.5)),
            ..base("wrn10-2-rt2", TransformKind::Rt2, MaskScope::PerSample, 81)
        },
    ]
}

/// A case's artifact bytes and the JSON of its inputs and outputs.
fn golden(case: &Case) -> (Vec<u8>, serde_json::Value) {
    let device = Device::flex();
    let (classifier, purifier) = with_backend_seed(&device, case.seed, || {
        let c = case.classifier.init(&device).unwrap();
        let p = case.purifier.init(&device).unwrap();
        match case.redraw_vectors {
            Some(range) => (
                c.map(&mut RedrawVectors { range }),
                p.map(&mut RedrawVectors { range }),
            ),
            None => (c, p),
        }
    });
    let transform = TransformConfig {
        kind: case.kind,
        grid: 7,
        mask_scope: case.scope,
        ..TransformConfig::default()
    };
    let manifest = Manifest {
        classifier: Some(case.classifier.clone()),
        purifier: Some(case.purifier.clone()),
        transform: Some(transform.clone()),
        purify_size: case.purify_size,
        ..Manifest::default()
    };
    let artifact = Artifact::new(manifest, Some(&classifier), Some(&purifier), None).unwrap();
    let bytes = artifact.to_bytes().unwrap();
    let defense = Defense::from_artifact(&artifact, &device, "golden").unwrap();
    let seed = case.seed;
    let x = with_backend_seed(&device, seed + 1, || {
        Tensor::<4>::random([2, 1, 28, 28], Distribution::Uniform(0.0, 1.0), &device)
    });
    let draw = defense.draw(&mut seeded(seed + 2), x.dims()).unwrap();
    let out = defense.forward_with(x.clone(), &draw).unwrap();
    let passes: Vec<serde_json::Value> = (0..draw.num_passes())
        .map(|p| {
            serde_json::json!({
                "mask": flat(draw.mask(p, &device)),
                "noise": draw.noise(p, &device).map(flat),
                "transformed": flat(out.transformed[p].image.clone()),
            })
        })
        .collect();
    let logits = |t: Tensor<2>| crate::common::values2(t);
    let json = serde_json::json!({
        "shape": x.dims(),
        "draw_shape": draw.mask(0, &device).dims(),
        "x": flat(x.clone()),
        "passes": passes,
        "purified": flat(out.purified),
        "logits": logits(out.logits),
        "classifier_logits": logits(defense.classify(x).unwrap()),
    });
    (bytes, json)
}

#[test]
fn the_python_packages_golden_files_are_what_atop_computes() {
    let dir = golden_dir();
    let write = std::env::var_os("ATOP_WRITE_GOLDEN").is_some();
    for case in cases() {
        let name = case.name;
        let (bytes, json) = golden(&case);
        let (artifact_path, json_path) = (
            dir.join(format!("{name}.safetensors")),
            dir.join(format!("{name}.json")),
        );
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&artifact_path, &bytes).unwrap();
            std::fs::write(&json_path, serde_json::to_string(&json).unwrap()).unwrap();
            continue;
        }
        let committed =
            Artifact::from_bytes(&std::fs::read(&artifact_path).unwrap(), name).unwrap();
        let now = Artifact::from_bytes(&bytes, name).unwrap();
        assert_eq!(
            committed.manifest.payload_sha256, now.manifest.payload_sha256,
            "{name}: the weights moved; rerun with ATOP_WRITE_GOLDEN=1 and commit"
        );
        let stored: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
        for key in ["x", "purified", "logits", "classifier_logits"] {
            let (a, b) = (
                stored[key].as_array().unwrap(),
                json[key].as_array().unwrap(),
            );
            assert_eq!(a.len(), b.len(), "{name}.{key}");
            let worst = a.iter().zip(b).fold(0f64, |m, (p, q)| {
                m.max((p.as_f64().unwrap() - q.as_f64().unwrap()).abs())
            });
            assert!(
                worst < 1e-5,
                "{name}.{key} moved by {worst}; rerun with ATOP_WRITE_GOLDEN=1"
            );
        }
    }
}
