use atop::defense::Defense;
use atop::rng::seeded;
use atop::transform::TransformConfig;
use burn::module::Module;
use burn::tensor::Int;
use burn::tensor::Tensor;
use burn::tensor::TensorData;
use burn::tensor::loss::cross_entropy_with_logits;

use crate::common::*;

fn fmnist_defense(transform: TransformConfig, device: &burn::tensor::Device) -> Defense {
    let classifier = small_cnn_fmnist().init(device).unwrap();
    let purifier = small_gan(1).init(device).unwrap();
    Defense::new(transform, purifier, classifier)
}

fn rt_fmnist(mut cfg: TransformConfig) -> TransformConfig {
    cfg.grid = 7; // 28x28 in 4x4 cells
    cfg
}

#[test]
fn defense_returns_logits_and_intermediate_images() {
    let d = device();
    for cfg in [
        TransformConfig::rt1(),
        TransformConfig::rt2(),
        TransformConfig::rt3(),
    ] {
        let cfg = rt_fmnist(cfg);
        let passes = cfg.num_passes();
        let defense = fmnist_defense(cfg, &d);
        let out = defense
            .forward(images([3, 1, 28, 28], 0, &d), &mut seeded(1))
            .unwrap();
        assert_eq!(out.logits.dims(), [3, 10]);
        assert_eq!(out.purified.dims(), [3, 1, 28, 28]);
        assert_eq!(out.transformed.len(), passes);
        assert_eq!(out.coarse.len(), passes);
        let purified = values(out.purified);
        assert!(
            purified
                .iter()
                .all(|v| v.is_finite() && (0.0..=1.0).contains(v))
        );
    }
}

#[test]
fn a_kept_draw_replays_exactly_and_a_new_seed_differs() {
    let d = device();
    let defense = fmnist_defense(rt_fmnist(TransformConfig::rt2()), &d);
    let x = images([2, 1, 28, 28], 4, &d);
    let draw = defense.draw(&mut seeded(5), x.dims()).unwrap();
    let a = values2(defense.forward_with(x.clone(), &draw).unwrap().logits);
    let b = values2(defense.forward(x.clone(), &mut seeded(5)).unwrap().logits);
    let c = values2(defense.forward(x, &mut seeded(6)).unwrap().logits);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn rt3_takes_each_pixel_from_the_pass_that_masked_it() {
    // With an all-white image and RT1-style passes (no noise), each pass's
    // output is masked by its own mask: summing the masks must give 1, so
    // the combined image equals the per-pass images inside their masks.
    let d = device();
    let cfg = rt_fmnist(TransformConfig {
        noise_sigma: 0.0,
        ..TransformConfig::rt3()
    });
    let defense = fmnist_defense(cfg, &d);
    let x = images([1, 1, 28, 28], 1, &d);
    let draw = defense.draw(&mut seeded(2), x.dims()).unwrap();
    let parts = defense.purify_with(x, &draw).unwrap();
    let mut expected = vec![0f32; 28 * 28];
    for (pass, t) in parts.transformed.iter().enumerate() {
        let single = defense
            .purifier
            .purify(t.image.clone(), t.mask.clone())
            .unwrap()
            .image;
        let mask = values(draw.mask(pass, &d));
        for ((e, v), m) in expected.iter_mut().zip(values(single)).zip(mask) {
            *e += v * m;
        }
    }
    assert!(max_abs_diff(&values(parts.purified), &expected) < 1e-5);
}

#[test]
fn gradients_flow_from_the_classifier_loss_through_the_purifier_to_the_input() {
    let d = device().autodiff();
    let defense = fmnist_defense(rt_fmnist(TransformConfig::rt2()), &d);
    // The classifier is frozen as in AToP; the purifier trains.
    let defense = Defense {
        classifier: defense.classifier.freeze(),
        ..defense
    };
    let x = images([2, 1, 28, 28], 3, &d).require_grad();
    let out = defense.forward(x.clone(), &mut seeded(0)).unwrap();
    let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 7], [2]), &d);
    let loss = cross_entropy_with_logits(out.logits, labels.one_hot::<2>(10).float());
    let grads = loss.backward();

    let gx = x.grad(&grads).expect("input has a gradient");
    let gx = gx.into_data().try_to_vec::<f32>().unwrap();
    assert!(gx.iter().all(|v| v.is_finite()));
    assert!(gx.iter().any(|v| *v != 0.0), "input gradient is all zero");

    let atop::model::Purifier::Gan(g) = &defense.purifier else {
        unreachable!()
    };
    let gw = g
        .stage2
        .conv_to_rgb
        .conv
        .weight
        .grad(&grads)
        .expect("purifier weight has a gradient");
    assert!(gw.abs().sum().into_scalar::<f32>() > 0.0);
    let atop::model::Classifier::SmallCnn(c) = &defense.classifier else {
        unreachable!()
    };
    assert!(
        c.fc2.weight.grad(&grads).is_none(),
        "frozen classifier got a gradient"
    );
}

#[test]
fn defense_rejects_images_with_the_wrong_channel_count() {
    let d = device();
    let defense = fmnist_defense(rt_fmnist(TransformConfig::rt2()), &d);
    let err = defense
        .forward(images([1, 3, 28, 28], 0, &d), &mut seeded(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("purifier image"), "{err}");
    let err = defense
        .forward(images([1, 1, 32, 32], 0, &d), &mut seeded(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("grid"), "{err}");
}

#[test]
fn the_transform_only_target_classifies_the_raw_transform_output() {
    use atop::attack::{AttackTarget, TransformOnlyTarget};
    let d = device();
    let x = images([4, 1, 28, 28], 3, &d);
    // A transform that changes nothing leaves the classifier's own logits.
    let identity = TransformConfig {
        missing_rate: 0.0,
        noise_sigma: 0.0,
        ..rt_fmnist(TransformConfig::rt2())
    };
    let defense = fmnist_defense(identity, &d);
    let raw = TransformOnlyTarget(&defense)
        .logits(x.clone(), &mut seeded(1))
        .unwrap();
    let direct = defense.classify(x.clone()).unwrap();
    assert!(max_abs_diff(&values2(raw), &values2(direct.clone())) < 1e-5);
    // A real draw: the classifier of the draw's transformed image, no purifier.
    let defense = fmnist_defense(rt_fmnist(TransformConfig::rt2()), &d);
    let draw = defense.draw(&mut seeded(2), x.dims()).unwrap();
    let expected = defense
        .classify(draw.apply(x.clone()).unwrap().swap_remove(0).image)
        .unwrap();
    let got = defense.transform_only_with(x, &draw).unwrap();
    assert!(max_abs_diff(&values2(got), &values2(expected)) < 1e-6);
}
