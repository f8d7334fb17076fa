use std::collections::BTreeMap;

use atop::artifact::{
    Artifact, DatasetInfo, FORMAT_VERSION, Manifest, Metric, Samples, StoredTensor,
};
use atop::model::ClassifierConfig;
use atop::model::classifier::SmallCnnConfig;
use atop::transform::TransformConfig;
use burn::tensor::TensorData;

use crate::common::*;

fn example() -> (Artifact, atop::model::Classifier, atop::model::Purifier) {
    let d = device();
    let classifier_cfg = small_cnn_fmnist();
    let purifier_cfg = small_gan(1);
    let classifier = classifier_cfg.init(&d).unwrap();
    let purifier = purifier_cfg.init(&d).unwrap();
    let manifest = Manifest {
        classifier: Some(classifier_cfg),
        purifier: Some(purifier_cfg),
        transform: Some(TransformConfig {
            grid: 7,
            ..TransformConfig::rt2()
        }),
        dataset: Some(DatasetInfo {
            name: "fashion-mnist".into(),
            image_shape: [1, 28, 28],
            class_names: (0..10).map(|i| format!("class {i}")).collect(),
            files: vec![],
        }),
        seeds: BTreeMap::from([("train".to_string(), 777)]),
        training: serde_json::json!({"lambda": 0.05}),
        metrics: vec![Metric {
            name: "clean_accuracy".into(),
            value: 0.5,
            protocol: serde_json::json!({"subset": 512}),
        }],
        ..Manifest::default()
    };
    let samples = Samples {
        images: images([3, 1, 28, 28], 9, &d).into_data(),
        labels: vec![0, 4, 9],
    };
    let artifact =
        Artifact::new(manifest, Some(&classifier), Some(&purifier), Some(&samples)).unwrap();
    (artifact, classifier, purifier)
}

#[test]
fn round_trip_gives_identical_tensors_manifest_and_outputs() {
    let d = device();
    let (artifact, classifier, purifier) = example();
    let bytes = artifact.to_bytes().unwrap();
    let loaded = Artifact::from_bytes(&bytes, "mem.safetensors").unwrap();
    assert_eq!(loaded, artifact);
    assert_eq!(loaded.manifest.payload_sha256.len(), 64);
    assert!(loaded.tensors.contains_key("classifier.fc1.weight"));
    assert!(
        loaded
            .tensors
            .contains_key("purifier.stage1.conv1.conv.weight")
    );

    let x = images([2, 1, 28, 28], 1, &d);
    let c2 = loaded.classifier(&d, "mem").unwrap();
    assert_eq!(
        values2(c2.forward(x.clone()).unwrap()),
        values2(classifier.forward(x.clone()).unwrap())
    );
    let p2 = loaded.purifier(&d, "mem").unwrap();
    let mask = images([2, 1, 28, 28], 2, &d).greater_elem(0.5).float();
    assert_eq!(
        values(p2.purify(x.clone(), mask.clone()).unwrap().image),
        values(purifier.purify(x, mask).unwrap().image)
    );
    let samples = loaded.samples("mem").unwrap().unwrap();
    assert_eq!(samples.labels, vec![0, 4, 9]);
    assert_eq!(samples.images.shape().as_slice(), &[3, 1, 28, 28]);
}

#[test]
fn half_precision_weights_round_trip_and_keep_the_samples_exact() {
    let d = device();
    let (artifact, classifier, _) = example();
    let half = artifact.clone().to_half();
    assert_ne!(
        half.manifest.payload_sha256,
        artifact.manifest.payload_sha256
    );
    let bytes = half.to_bytes().unwrap();
    assert!(bytes.len() < artifact.to_bytes().unwrap().len() * 6 / 10);
    let loaded = Artifact::from_bytes(&bytes, "half.safetensors").unwrap();
    assert_eq!(loaded, half);
    assert!(matches!(
        loaded.tensors["classifier.fc1.weight"],
        StoredTensor::F16 { .. }
    ));
    // Sample images stay f32: they are the dataset's exact values.
    assert_eq!(
        loaded.samples("half").unwrap(),
        artifact.samples("f32").unwrap()
    );
    // Weights within f16 rounding (relative 2^-11), so outputs nearly equal.
    let x = images([2, 1, 28, 28], 1, &d);
    let full = values2(classifier.forward(x.clone()).unwrap());
    let rounded = values2(loaded.classifier(&d, "half").unwrap().forward(x).unwrap());
    let scale = full.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(&full, &rounded);
    assert!(diff > 0.0 && diff < 1e-2 * scale.max(1.0), "{diff}");
}

#[test]
fn truncated_artifact_is_a_clear_error() {
    let bytes = example().0.to_bytes().unwrap();
    for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
        let err = Artifact::from_bytes(&bytes[..cut], "model.safetensors")
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.safetensors"), "{err}");
        assert!(err.contains("truncated or corrupted"), "cut {cut}: {err}");
    }
}

#[test]
fn a_changed_weight_fails_the_hash_check() {
    let mut bytes = example().0.to_bytes().unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x55;
    let err = Artifact::from_bytes(&bytes, "model.safetensors")
        .unwrap_err()
        .to_string();
    assert!(err.contains("payload hash mismatch"), "{err}");
}

fn with_manifest(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let (artifact, ..) = example();
    let mut json = serde_json::to_value(&artifact.manifest).unwrap();
    edit(&mut json);
    let manifest: Manifest = match serde_json::from_value(json.clone()) {
        Ok(m) => m,
        // Not representable as a Manifest: write the raw JSON ourselves.
        Err(_) => return raw_file(&artifact.tensors, &json.to_string()),
    };
    Artifact {
        manifest,
        tensors: artifact.tensors,
    }
    .to_bytes()
    .unwrap()
}

fn raw_file(tensors: &BTreeMap<String, StoredTensor>, json: &str) -> Vec<u8> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .filter_map(|(n, t)| match t {
            StoredTensor::F32 { shape, values } => Some((
                n.clone(),
                shape.clone(),
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )),
            StoredTensor::F16 { .. } | StoredTensor::I64 { .. } => None,
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    let meta = std::collections::HashMap::from([("atop".to_string(), json.to_string())]);
    safetensors::serialize(views, Some(meta)).unwrap()
}

#[test]
fn a_wrong_format_version_is_named() {
    let bytes = with_manifest(|m| m["format_version"] = serde_json::json!(FORMAT_VERSION + 1));
    let err = Artifact::from_bytes(&bytes, "old.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("old.safetensors") && err.contains("format version"),
        "{err}"
    );
}

#[test]
fn a_manifest_naming_another_model_is_rejected_when_loading_it() {
    let d = device();
    let bytes = with_manifest(|m| {
        let cfg = ClassifierConfig::SmallCnn(SmallCnnConfig {
            width: 16,
            ..SmallCnnConfig::fashion_mnist()
        });
        m["classifier"] = serde_json::to_value(cfg).unwrap();
    });
    let artifact = Artifact::from_bytes(&bytes, "mixed.safetensors").unwrap();
    let err = artifact
        .classifier(&d, "mixed.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mixed.safetensors") && err.contains("does not match"),
        "{err}"
    );
    assert!(
        err.contains("conv1.weight"),
        "the error names a tensor: {err}"
    );

    let bytes = with_manifest(|m| m["purifier"] = serde_json::to_value(small_ae(1)).unwrap());
    let artifact = Artifact::from_bytes(&bytes, "mixed.safetensors").unwrap();
    let err = artifact
        .purifier(&d, "mixed.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("purifier") && err.contains("does not match"),
        "{err}"
    );
}

#[test]
fn a_file_without_a_manifest_or_with_a_broken_one_is_named() {
    let (artifact, ..) = example();
    let plain = safetensors::serialize(
        vec![(
            "x",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0, 0, 0, 0])
                .unwrap(),
        )],
        None,
    )
    .unwrap();
    let err = Artifact::from_bytes(&plain, "other.safetensors")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an atop artifact"), "{err}");
    let broken = raw_file(&artifact.tensors, "{not json");
    let err = Artifact::from_bytes(&broken, "b.safetensors")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not valid JSON"), "{err}");
    let unknown = with_manifest(|m| m["surprise"] = serde_json::json!(1));
    let err = Artifact::from_bytes(&unknown, "u.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not match the format") && err.contains("surprise"),
        "{err}"
    );
}

#[test]
fn samples_must_match_their_labels() {
    let d = device();
    let classifier = small_cnn_fmnist().init(&d).unwrap();
    let manifest = Manifest {
        classifier: Some(small_cnn_fmnist()),
        ..Manifest::default()
    };
    let samples = Samples {
        images: TensorData::new(vec![0f32; 2 * 784], [2, 1, 28, 28]),
        labels: vec![1],
    };
    let err = Artifact::new(manifest, Some(&classifier), None, Some(&samples))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sample images"), "{err}");
}

#[test]
fn a_format_1_artifact_is_refused_by_name_and_upgrades_to_format_2() {
    // Without the i64 sample labels, which raw_file does not write.
    let (full, classifier, purifier) = example();
    let artifact = Artifact::new(full.manifest, Some(&classifier), Some(&purifier), None).unwrap();
    let mut json = serde_json::to_value(&artifact.manifest).unwrap();
    json["format_version"] = serde_json::json!(1);
    let fields = json.as_object_mut().unwrap();
    fields.remove("defense_sha256");
    fields.remove("purify_size");
    let v1 = raw_file(&artifact.tensors, &json.to_string());
    let err = Artifact::from_bytes(&v1, "v1.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("format version 1") && err.contains("atop upgrade"),
        "{err}"
    );
    let upgraded = Artifact::upgrade(&v1, "v1.safetensors").unwrap();
    assert_eq!(upgraded.manifest.format_version, FORMAT_VERSION);
    assert_eq!(
        upgraded.manifest.payload_sha256,
        artifact.manifest.payload_sha256
    );
    assert_eq!(
        upgraded.manifest.defense_sha256,
        artifact.manifest.defense_sha256
    );
    let again = Artifact::from_bytes(&upgraded.to_bytes().unwrap(), "v2").unwrap();
    assert_eq!(again, upgraded);
}

#[test]
fn the_classifier_identity_ignores_the_purifier_and_follows_the_weights() {
    let (full, classifier, _) = example();
    let d = device();
    let other_purifier = seeded_weights(small_gan(1).init(&d).unwrap(), 99);
    let mut manifest = full.manifest.clone();
    manifest.training = serde_json::json!({"stage": "another"});
    let same_classifier = Artifact::new(
        manifest.clone(),
        Some(&classifier),
        Some(&other_purifier),
        None,
    )
    .unwrap();
    assert_ne!(
        full.manifest.payload_sha256,
        same_classifier.manifest.payload_sha256
    );
    assert_eq!(
        full.classifier_sha256(),
        same_classifier.classifier_sha256()
    );
    let retrained = seeded_weights(small_cnn_fmnist().init(&d).unwrap(), 5);
    let other = Artifact::new(manifest.clone(), Some(&retrained), None, None).unwrap();
    assert_ne!(full.classifier_sha256(), other.classifier_sha256());
    manifest.classifier = None;
    let purifier_only = Artifact::new(manifest, None, Some(&other_purifier), None).unwrap();
    assert_eq!(purifier_only.classifier_sha256(), None);
}

/// A manifest's free-form numbers survive a save and load bit for bit: the
/// JSON reader parses decimals correctly rounded (serde_json's
/// `float_roundtrip`), where its fast default can land one ulp off and then
/// print a different shortest form (a fuzz find: 0.9990000257492066).
#[test]
fn manifest_numbers_round_trip_bit_for_bit() {
    let (mut artifact, _, _) = example();
    artifact.manifest.training =
        serde_json::from_str(r#"{"betas": [0.9990000257492066, 0.9990000128746033, 0.1]}"#)
            .unwrap();
    let expected: Vec<f64> = ["0.9990000257492066", "0.9990000128746033", "0.1"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let parsed: Vec<f64> = artifact.manifest.training["betas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(parsed, expected, "decimals parse correctly rounded");
    let mut again = artifact.clone();
    for _ in 0..3 {
        again = Artifact::from_bytes(&again.to_bytes().unwrap(), "mem.safetensors").unwrap();
    }
    assert_eq!(again, artifact);
}
