//! Parity with the reference implementations: the official AutoAttack
//! (PyPI pyautoattack) and torchattacks, run by
//! scripts/parity/make_parity_golden.py on the same small classifier and the
//! same 256 Fashion-MNIST test images; their robust accuracies are committed
//! in golden/parity/parity.json, so this test needs no PyTorch.

use atop::artifact::Artifact;
use atop::attack::{
    ApgdConfig, AutoAttackConfig, ClassifierTarget, apgd, apgd_targeted, autoattack,
    score_randomized,
};
use atop::model::Classifier;
use atop::rng::seeded;
use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use safetensors::SafeTensors;

use crate::common::*;

const MODEL: &[u8] = include_bytes!("../golden/parity/classifier.safetensors");
const IMAGES: &[u8] = include_bytes!("../golden/parity/images.safetensors");
const GOLDEN: &str = include_str!("../golden/parity/parity.json");

/// Two points of accuracy on 256 images (the tolerance).
const TOLERANCE: f64 = 0.02;

pub fn fixture() -> (Classifier, Tensor<4>, Vec<i64>, serde_json::Value) {
    let d = device().autodiff();
    let artifact = Artifact::from_bytes(MODEL, "parity classifier").unwrap();
    // Frozen: attacks need gradients for the input only.
    let classifier = artifact
        .classifier(&d, "parity classifier")
        .unwrap()
        .freeze();
    let st = SafeTensors::deserialize(IMAGES).unwrap();
    let images = st.tensor("images").unwrap();
    let pixels: Vec<f32> = images.data().iter().map(|&b| b as f32 / 255.0).collect();
    let n = images.shape()[0];
    let labels: Vec<i64> = st
        .tensor("labels")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let x = Tensor::<4>::from_data(TensorData::new(pixels, [n, 1, 28, 28]), &d);
    (classifier, x, labels, serde_json::from_str(GOLDEN).unwrap())
}

fn accuracy(model: &Classifier, x: Tensor<4>, y: &[i64]) -> f64 {
    score_randomized(&ClassifierTarget(model), x, y, 1, &mut seeded(0))
        .unwrap()
        .every_draw_accuracy()
}

fn golden_accuracy(golden: &serde_json::Value, name: &str) -> f64 {
    golden["robust_accuracy"][name].as_f64().unwrap()
}

#[test]
fn parity_fixture_is_the_same_model_and_images() {
    let (model, x, y, golden) = fixture();
    assert_eq!(y.len(), 256);
    let logits = model.forward(x.clone().narrow(0, 0, 4)).unwrap();
    let ours = values2(logits);
    let theirs: Vec<f32> = golden["logits_first4"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect();
    assert!(
        max_abs_diff(&ours, &theirs) < 1e-4,
        "{ours:?} vs {theirs:?}"
    );
    let clean = accuracy(&model, x, &y);
    assert_eq!(clean, golden["clean_accuracy"].as_f64().unwrap());
}

#[test]
fn apgd_ce_apgd_t_and_standard_autoattack_match_the_official_code() {
    let (model, x, y, golden) = fixture();
    let target = ClassifierTarget(&model);
    let eps = golden["eps"].as_f64().unwrap();
    let apgd_cfg = ApgdConfig {
        eps,
        ..ApgdConfig::default()
    };
    let ce = accuracy(
        &model,
        apgd(&target, x.clone(), &y, &apgd_cfg, &mut seeded(0)).unwrap(),
        &y,
    );
    let dlr_t = ApgdConfig {
        loss: atop::attack::ApgdLoss::Dlr,
        ..apgd_cfg
    };
    let t = accuracy(
        &model,
        apgd_targeted(&target, x.clone(), &y, &dlr_t, 9, &mut seeded(0)).unwrap(),
        &y,
    );
    let standard = AutoAttackConfig {
        eps,
        ..AutoAttackConfig::default()
    };
    let aa = autoattack(&target, x.clone(), &y, &standard, &mut seeded(0)).unwrap();
    let std_acc = accuracy(&model, aa.adversarial, &y);
    let report = format!(
        "atop vs official: APGD-CE {ce} vs {}, APGD-T {t} vs {}, standard {std_acc} vs {}",
        golden_accuracy(&golden, "autoattack apgd-ce"),
        golden_accuracy(&golden, "autoattack apgd-t"),
        golden_accuracy(&golden, "autoattack standard"),
    );
    eprintln!("{report}");
    for (ours, name) in [
        (ce, "autoattack apgd-ce"),
        (t, "autoattack apgd-t"),
        (std_acc, "autoattack standard"),
    ] {
        let theirs = golden_accuracy(&golden, name);
        assert!((ours - theirs).abs() <= TOLERANCE, "{name}: {report}");
    }
}
