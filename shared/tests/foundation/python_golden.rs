//! The golden files the PyTorch package (`python/`, `atop_torch`) is tested
//! against: a tiny artifact of each kind this package covers, a seeded batch,
//! the transform draw, and what atop computes from them. With
//! `ATOP_WRITE_GOLDEN=1` this test writes them; otherwise it checks that the
//! committed files still equal what atop computes, so the Python parity
//! tests always compare with the current Rust code.

use std::path::{Path, PathBuf};

use atop::artifact::{Artifact, Manifest};
use atop::defense::Defense;
use atop::model::classifier::SmallCnnConfig;
use atop::model::{AutoencoderConfig, ClassifierConfig, PurifierConfig};
use atop::rng::{seeded, with_backend_seed};
use atop::transform::{MaskScope, TransformConfig, TransformKind};
use burn::tensor::{Device, Distribution, Tensor};

use crate::common::values;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../python/tests/golden")
}

fn flat(t: Tensor<4>) -> Vec<f32> {
    values(t)
}

/// One golden case: the artifact's bytes and the JSON of inputs and outputs.
fn case(kind: TransformKind, scope: MaskScope, seed: u64) -> (Vec<u8>, serde_json::Value) {
    let device = Device::flex();
    let classifier_config = ClassifierConfig::SmallCnn(SmallCnnConfig {
        width: 4,
        ..SmallCnnConfig::fashion_mnist()
    });
    let purifier_config = PurifierConfig::Ae(AutoencoderConfig {
        image_channels: 1,
        width: 4,
    });
    let (classifier, purifier) = with_backend_seed(&device, seed, || {
        (
            classifier_config.init(&device).unwrap(),
            purifier_config.init(&device).unwrap(),
        )
    });
    let transform = TransformConfig {
        kind,
        grid: 7,
        mask_scope: scope,
        ..TransformConfig::default()
    };
    let manifest = Manifest {
        classifier: Some(classifier_config),
        purifier: Some(purifier_config),
        transform: Some(transform.clone()),
        ..Manifest::default()
    };
    let artifact = Artifact::new(manifest, Some(&classifier), Some(&purifier), None).unwrap();
    let bytes = artifact.to_bytes().unwrap();
    let defense = Defense::from_artifact(&artifact, &device, "golden").unwrap();
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
    let cases = [
        ("ae-rt2", TransformKind::Rt2, MaskScope::PerSample, 31),
        ("ae-rt3", TransformKind::Rt3, MaskScope::PerSample, 41),
        (
            "ae-rt1-batch",
            TransformKind::Rt1,
            MaskScope::BatchShared,
            51,
        ),
    ];
    for (name, kind, scope, seed) in cases {
        let (bytes, json) = case(kind, scope, seed);
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
