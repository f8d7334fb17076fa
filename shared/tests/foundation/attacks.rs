use atop::attack::{
    ClassifierTarget, DefenseTarget, GradientMode, Norm, PgdConfig, fgsm, pgd, score_randomized,
};
use atop::defense::Defense;
use atop::rng::seeded;
use atop::transform::TransformConfig;
use burn::module::Module;
use burn::tensor::{Tensor, TensorData};

use crate::common::*;

/// A tiny classifier trained for a few steps on two separable classes
/// (dark vs bright images), so attacks have something to break.
fn trained_classifier() -> (atop::model::Classifier, Tensor<4>, Vec<i64>) {
    let d = device().autodiff();
    let n = 32;
    let noise = images([n, 1, 28, 28], 7, &d).mul_scalar(0.3);
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
    let shift: Vec<f32> = labels
        .iter()
        .map(|&l| if l == 1 { 0.45 } else { 0.15 })
        .collect();
    let x = (noise + Tensor::<4>::from_data(TensorData::new(shift, [n, 1, 1, 1]), &d)).detach();
    let model = train_toy_classifier(2, &x, &labels, 12, 3e-3, 3);
    (model, x, labels)
}

fn accuracy(model: &atop::model::Classifier, x: Tensor<4>, y: &[i64]) -> f64 {
    let target = ClassifierTarget(model);
    score_randomized(&target, x, y, 1, &mut seeded(0))
        .unwrap()
        .every_draw_accuracy()
}

#[test]
fn attacks_stay_in_the_eps_ball_and_the_box() {
    let (model, x, y) = trained_classifier();
    let target = ClassifierTarget(&model);
    for norm in [Norm::Linf, Norm::L2] {
        let eps = if norm == Norm::Linf { 0.05 } else { 0.8 };
        let cfg = PgdConfig {
            norm,
            eps,
            steps: 5,
            restarts: 2,
            ..PgdConfig::default()
        };
        let adv = pgd(&target, x.clone(), &y, &cfg, &mut seeded(1)).unwrap();
        let delta = values(adv.clone() - x.clone());
        let adv_v = values(adv);
        assert!(
            adv_v.iter().all(|v| (0.0..=1.0).contains(v)),
            "{norm:?}: outside [0,1]"
        );
        for s in 0..y.len() {
            let d = &delta[s * 784..(s + 1) * 784];
            let size = match norm {
                Norm::Linf => d.iter().fold(0f32, |m, v| m.max(v.abs())),
                Norm::L2 => d.iter().map(|v| v * v).sum::<f32>().sqrt(),
            };
            assert!(
                size <= eps as f32 * (1.0 + 1e-4) + 1e-6,
                "{norm:?} sample {s}: {size} > {eps}"
            );
        }
    }
    let adv = fgsm(&target, x.clone(), &y, 0.03, 1, &mut seeded(2)).unwrap();
    let linf = max_abs_diff(&values(adv), &values(x));
    assert!(linf <= 0.03 + 1e-6 && linf > 0.02, "fgsm step {linf}");
}

#[test]
fn attacks_lower_accuracy_and_more_steps_are_no_weaker() {
    let (model, x, y) = trained_classifier();
    let clean = accuracy(&model, x.clone(), &y);
    assert!(clean >= 0.9, "the toy classifier did not train: {clean}");
    let target = ClassifierTarget(&model);
    let eps = 0.25;
    let fgsm_acc = accuracy(
        &model,
        fgsm(&target, x.clone(), &y, eps, 1, &mut seeded(1)).unwrap(),
        &y,
    );
    let pgd_few = PgdConfig {
        eps,
        steps: 2,
        ..PgdConfig::default()
    };
    let pgd_many = PgdConfig {
        eps,
        steps: 20,
        ..PgdConfig::default()
    };
    let few = accuracy(
        &model,
        pgd(&target, x.clone(), &y, &pgd_few, &mut seeded(1)).unwrap(),
        &y,
    );
    let many = accuracy(
        &model,
        pgd(&target, x.clone(), &y, &pgd_many, &mut seeded(1)).unwrap(),
        &y,
    );
    assert!(fgsm_acc < clean - 0.2, "fgsm {fgsm_acc} vs clean {clean}");
    assert!(many <= 0.25, "pgd-20 {many} vs clean {clean}");
    assert!(many <= few, "pgd-20 {many} weaker than pgd-2 {few}");
}

#[test]
fn gradient_modes_reach_the_input_through_the_defense() {
    let (classifier, x, y) = trained_classifier();
    let d = device().autodiff();
    let purifier = small_gan(1).init(&d).unwrap().freeze();
    let defense = Defense::new(
        TransformConfig {
            grid: 7,
            ..TransformConfig::rt2()
        },
        purifier,
        classifier,
    );
    let cfg = PgdConfig {
        eps: 0.1,
        steps: 1,
        random_start: false,
        ..PgdConfig::default()
    };
    for mode in [
        GradientMode::Full,
        GradientMode::Bpda,
        GradientMode::FixedRandomness,
    ] {
        let mut target = DefenseTarget::new(&defense, mode);
        if mode == GradientMode::FixedRandomness {
            target.freeze_draw(&mut seeded(5), x.dims()).unwrap();
        }
        let adv = pgd(&target, x.clone(), &y, &cfg, &mut seeded(6)).unwrap();
        let moved = max_abs_diff(&values(adv), &values(x.clone()));
        assert!(moved > 0.09, "{mode:?}: the attack did not move ({moved})");
    }
    // Randomized scoring counts per point over the draws.
    let target = DefenseTarget::new(&defense, GradientMode::Full);
    let score = score_randomized(&target, x, &y, 3, &mut seeded(1)).unwrap();
    assert_eq!(score.correct_counts.len(), y.len());
    assert!(score.correct_counts.iter().all(|&c| c <= 3));
    assert!(score.every_draw_accuracy() <= score.majority_accuracy());
}

#[test]
fn bad_attack_settings_are_errors() {
    let (model, x, y) = trained_classifier();
    let target = ClassifierTarget(&model);
    let bad = PgdConfig {
        eps: -0.1,
        ..PgdConfig::default()
    };
    assert!(
        pgd(&target, x.clone(), &y, &bad, &mut seeded(0))
            .unwrap_err()
            .to_string()
            .contains("eps")
    );
    let err = pgd(&target, x, &y[..3], &PgdConfig::default(), &mut seeded(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("labels"), "{err}");
}
