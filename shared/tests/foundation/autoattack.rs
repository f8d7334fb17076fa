use atop::attack::{
    ApgdConfig, ApgdLoss, AttackLoss, AutoAttackComponent, AutoAttackConfig, AutoAttackVersion,
    ClassifierTarget, CwConfig, FabConfig, Norm, SquareConfig, apgd, apgd_targeted, autoattack,
    carlini_wagner_l2, fab_targeted, per_sample_loss, project_onto_hyperplane_in_box,
    score_randomized, square,
};
use atop::rng::seeded;
use burn::tensor::{Int, Tensor, TensorData};

use crate::common::*;

/// A small classifier trained on four classes of noisy flat images (mean
/// brightness 0.1, 0.35, 0.6, 0.85): DLR needs at least four classes.
pub fn four_class_classifier() -> (atop::model::Classifier, Tensor<4>, Vec<i64>) {
    let d = device().autodiff();
    let n = 48;
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 4).collect();
    let level: Vec<f32> = labels.iter().map(|&l| 0.1 + 0.25 * l as f32).collect();
    let x = (images([n, 1, 28, 28], 5, &d) - 0.5).mul_scalar(0.2)
        + Tensor::<4>::from_data(TensorData::new(level, [n, 1, 1, 1]), &d);
    let x = x.clamp(0.0, 1.0).detach();
    let model = train_toy_classifier(4, &x, &labels, 60, 5e-3, 11);
    (model, x, labels)
}

fn accuracy(model: &atop::model::Classifier, x: Tensor<4>, y: &[i64]) -> f64 {
    score_randomized(&ClassifierTarget(model), x, y, 1, &mut seeded(0))
        .unwrap()
        .every_draw_accuracy()
}

#[test]
fn apgd_checkpoints_follow_the_published_schedule() {
    let at = |steps| {
        ApgdConfig {
            steps,
            ..ApgdConfig::default()
        }
        .checkpoints()
    };
    // 22% first, intervals shrinking by 3% to at least 6%.
    assert_eq!(at(100), vec![22, 41, 57, 70, 80, 87, 93, 99]);
    assert_eq!(at(10), vec![2, 3, 4, 5, 6, 7, 8, 9, 10]);
}

#[test]
fn per_sample_losses_match_hand_computed_values() {
    let d = device();
    let logits = Tensor::<2>::from_data(
        TensorData::new(vec![3.0f32, 1.0, 2.0, 0.0, 0.0, 4.0, 1.0, 2.0], [2, 4]),
        &d,
    );
    let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2], [2]), &d);
    let t = Tensor::<1, Int>::from_data(TensorData::new(vec![3i64, 1], [2]), &d);
    let loss = |kind| {
        per_sample_loss(kind, logits.clone(), &y, Some(&t))
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    // Sample 0: z = [3,1,2,0], y = 0. Sample 1: z = [0,4,1,2], y = 2.
    let lse0 = (3f32.exp() + 1f32.exp() + 2f32.exp() + 1.0).ln();
    let lse1 = (1.0 + 4f32.exp() + 1f32.exp() + 2f32.exp()).ln();
    let expect = [
        (AttackLoss::CrossEntropy, [lse0 - 3.0, lse1 - 1.0]),
        (AttackLoss::Margin, [2.0 - 3.0, 4.0 - 1.0]),
        // -(z_y - max_other) / (z_1st - z_3rd)
        (
            AttackLoss::Dlr,
            [-(3.0 - 2.0) / (3.0 - 1.0), -(1.0 - 4.0) / (4.0 - 1.0)],
        ),
        // -(z_y - z_t) / (z_1st - (z_3rd + z_4th) / 2)
        (
            AttackLoss::DlrTargeted,
            [-(3.0 - 0.0) / (3.0 - 0.5), -(1.0 - 4.0) / (4.0 - 0.5)],
        ),
    ];
    for (kind, want) in expect {
        let got = loss(kind);
        assert!(
            max_abs_diff(&got, &want) < 1e-5,
            "{kind:?}: {got:?} vs {want:?}"
        );
    }
    // Too few classes for DLR is an error, not a wrong number.
    let two = logits.narrow(1, 0, 2);
    assert!(per_sample_loss(AttackLoss::Dlr, two, &y.clone().clamp(0, 1), None).is_err());
}

#[test]
fn apgd_stays_in_the_eps_ball_and_the_box() {
    let (model, x, y) = four_class_classifier();
    let target = ClassifierTarget(&model);
    for norm in [Norm::Linf, Norm::L2] {
        let eps = if norm == Norm::Linf { 0.05 } else { 0.8 };
        for loss in [ApgdLoss::Ce, ApgdLoss::Dlr] {
            let cfg = ApgdConfig {
                norm,
                eps,
                steps: 8,
                loss,
                ..ApgdConfig::default()
            };
            let untargeted = apgd(&target, x.clone(), &y, &cfg, &mut seeded(1)).unwrap();
            let targeted = apgd_targeted(&target, x.clone(), &y, &cfg, 3, &mut seeded(1)).unwrap();
            for (adv, what) in [(untargeted, "APGD"), (targeted, "APGD-T")] {
                assert_in_ball(&adv, &x, norm, eps, &format!("{what} {norm:?} {loss:?}"));
            }
        }
    }
}

#[test]
fn apgd_breaks_the_toy_classifier_and_replays_from_its_seed() {
    let (model, x, y) = four_class_classifier();
    let clean = accuracy(&model, x.clone(), &y);
    assert!(clean >= 0.9, "the toy classifier did not train: {clean}");
    let target = ClassifierTarget(&model);
    let cfg = ApgdConfig {
        eps: 0.25,
        steps: 20,
        ..ApgdConfig::default()
    };
    let ce = apgd(&target, x.clone(), &y, &cfg, &mut seeded(4)).unwrap();
    let again = apgd(&target, x.clone(), &y, &cfg, &mut seeded(4)).unwrap();
    assert_eq!(values(ce.clone()), values(again), "same seed, other result");
    let ce_acc = accuracy(&model, ce, &y);
    let dlr = ApgdConfig {
        loss: ApgdLoss::Dlr,
        ..cfg.clone()
    };
    let dlr_acc = accuracy(
        &model,
        apgd(&target, x.clone(), &y, &dlr, &mut seeded(4)).unwrap(),
        &y,
    );
    let t_acc = accuracy(
        &model,
        apgd_targeted(&target, x.clone(), &y, &dlr, 3, &mut seeded(4)).unwrap(),
        &y,
    );
    // On this toy the darkest class saturates the softmax: its cross-entropy
    // gradient underflows to zero, which is the masking DLR was made for.
    assert!(ce_acc <= 0.3, "APGD-CE {ce_acc} vs clean {clean}");
    assert!(dlr_acc <= 0.1, "APGD-DLR {dlr_acc} vs clean {clean}");
    assert!(t_acc <= 0.1, "APGD-T {t_acc} vs clean {clean}");
    // A radius too small to cross to another class leaves it mostly right.
    let tiny = ApgdConfig {
        eps: 0.01,
        loss: ApgdLoss::Dlr,
        ..cfg
    };
    let tiny_acc = accuracy(
        &model,
        apgd(&target, x.clone(), &y, &tiny, &mut seeded(4)).unwrap(),
        &y,
    );
    assert!(tiny_acc >= 0.8, "eps 0.01 broke {tiny_acc}");
}

#[test]
fn square_window_schedule_halves_at_the_published_iterations() {
    let cfg = SquareConfig::default();
    let p = |it| cfg.window_fraction(it);
    assert_eq!(p(0), 0.8);
    assert_eq!(p(10), 0.8);
    assert_eq!(p(11), 0.4);
    assert_eq!(p(51), 0.2);
    assert_eq!(p(4999), 0.8 / 128.0);
    let rescaled = SquareConfig {
        queries: 1000,
        rescale_schedule: true,
        ..cfg
    };
    // 100 of 1000 queries is 1000 of 10 000.
    assert_eq!(rescaled.window_fraction(100), 0.8 / 16.0);
}

#[test]
fn square_stays_in_the_ball_lowers_accuracy_and_replays() {
    let (model, x, y) = four_class_classifier();
    let target = ClassifierTarget(&model);
    let clean = accuracy(&model, x.clone(), &y);
    for (norm, eps) in [(Norm::Linf, 0.25), (Norm::L2, 6.0)] {
        let cfg = SquareConfig {
            norm,
            eps,
            queries: 300,
            ..SquareConfig::default()
        };
        let adv = square(&target, x.clone(), &y, &cfg, &mut seeded(8)).unwrap();
        let again = square(&target, x.clone(), &y, &cfg, &mut seeded(8)).unwrap();
        assert_eq!(
            values(adv.clone()),
            values(again),
            "{norm:?}: same seed, other result"
        );
        assert_in_ball(&adv, &x, norm, eps, &format!("Square {norm:?}"));
        let acc = accuracy(&model, adv, &y);
        assert!(
            acc <= clean - 0.5,
            "Square {norm:?}: {acc} vs clean {clean}"
        );
    }
}

fn assert_in_ball(adv: &Tensor<4>, x: &Tensor<4>, norm: Norm, eps: f64, what: &str) {
    let delta = values(adv.clone() - x.clone());
    assert!(
        values(adv.clone()).iter().all(|v| (0.0..=1.0).contains(v)),
        "{what}: outside [0,1]"
    );
    let size = delta.len() / x.dims()[0];
    for (s, d) in delta.chunks(size).enumerate() {
        let length = match norm {
            Norm::Linf => d.iter().fold(0f32, |m, v| m.max(v.abs())),
            Norm::L2 => d.iter().map(|v| v * v).sum::<f32>().sqrt(),
        };
        assert!(
            length <= eps as f32 * (1.0 + 1e-4) + 1e-6,
            "{what} sample {s}: {length} > {eps}"
        );
    }
}

#[test]
fn fab_projection_matches_hand_computed_cases() {
    let close = |a: Vec<f32>, b: &[f32]| max_abs_diff(&a, b) < 1e-6;
    // L-infinity, box not binding: both coordinates move by 0.2.
    assert!(close(
        project_onto_hyperplane_in_box(&[0.5, 0.5], &[1.0, 1.0], 0.6, Norm::Linf),
        &[-0.2, -0.2]
    ));
    // L-infinity, the first coordinate hits 0: the second makes up the rest.
    assert!(close(
        project_onto_hyperplane_in_box(&[0.1, 0.5], &[1.0, 1.0], 0.2, Norm::Linf),
        &[-0.1, -0.3]
    ));
    // L2, box not binding: -c w / |w|^2 with c = 0.5, w = (1, 2).
    assert!(close(
        project_onto_hyperplane_in_box(&[0.5, 0.5], &[1.0, 2.0], 1.0, Norm::L2),
        &[-0.1, -0.2]
    ));
    // Moving up, with a negative weight: w . t must rise from -0.5 to 0.
    assert!(close(
        project_onto_hyperplane_in_box(&[0.5, 0.5], &[-1.0, 0.0], 0.0, Norm::L2),
        &[-0.5, 0.0]
    ));
    // Out of reach inside the box: everything moves to its bound.
    assert!(close(
        project_onto_hyperplane_in_box(&[0.5, 0.25], &[1.0, -1.0], -2.0, Norm::Linf),
        &[-0.5, 0.75]
    ));
}

#[test]
fn fab_targeted_stays_in_the_ball_and_breaks_the_toy() {
    let (model, x, y) = four_class_classifier();
    let target = ClassifierTarget(&model);
    for (norm, eps) in [(Norm::Linf, 0.25), (Norm::L2, 6.0)] {
        let cfg = FabConfig {
            norm,
            eps,
            steps: 20,
            ..FabConfig::default()
        };
        let adv = fab_targeted(&target, x.clone(), &y, &cfg, 3, &mut seeded(2)).unwrap();
        assert_in_ball(&adv, &x, norm, eps, "FAB-T");
        let acc = accuracy(&model, adv, &y);
        assert!(acc <= 0.1, "FAB-T {norm:?}: {acc}");
    }
    // FAB is a minimum-norm attack: a radius below the boundary's distance
    // finds nothing and returns the clean images.
    let tiny = FabConfig {
        eps: 0.001,
        steps: 10,
        ..FabConfig::default()
    };
    let adv = fab_targeted(&target, x.clone(), &y, &tiny, 3, &mut seeded(2)).unwrap();
    assert_eq!(values(adv), values(x.clone()));
}

#[test]
fn autoattack_is_the_worst_case_of_its_attacks() {
    let (model, x, y) = four_class_classifier();
    let target = ClassifierTarget(&model);
    let base = AutoAttackConfig {
        eps: 0.12,
        steps: 10,
        target_classes: 3,
        square_queries: 100,
        ..AutoAttackConfig::default()
    };
    let result = autoattack(&target, x.clone(), &y, &base, &mut seeded(3)).unwrap();
    assert_in_ball(&result.adversarial, &x, Norm::Linf, 0.12, "AutoAttack");
    let names: Vec<&str> = result
        .robust_after
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(names, ["apgd-ce", "apgd-t", "fab-t", "square"]);
    // Robust flags only ever drop, and the final ones match a re-scoring.
    let mut prev = result.clean_robust.clone();
    for (name, flags) in &result.robust_after {
        assert!(
            flags.iter().zip(&prev).all(|(now, before)| !now || *before),
            "{name} revived a point"
        );
        prev = flags.clone();
    }
    let final_acc = prev.iter().filter(|&&r| r).count() as f64 / y.len() as f64;
    assert_eq!(accuracy(&model, result.adversarial.clone(), &y), final_acc);
    // No weaker than its first attack alone.
    let first_only = AutoAttackConfig {
        version: AutoAttackVersion::Custom,
        attacks: vec![AutoAttackComponent::ApgdCe],
        ..base.clone()
    };
    let alone = autoattack(&target, x.clone(), &y, &first_only, &mut seeded(3)).unwrap();
    let alone_acc = accuracy(&model, alone.adversarial, &y);
    assert!(
        final_acc <= alone_acc,
        "composition {final_acc} vs APGD-CE {alone_acc}"
    );
    eprintln!("AutoAttack toy: APGD-CE alone {alone_acc}, standard {final_acc}");
    // An empty custom list is refused.
    let empty = AutoAttackConfig {
        version: AutoAttackVersion::Custom,
        ..base
    };
    assert!(autoattack(&target, x, &y, &empty, &mut seeded(3)).is_err());
}

#[test]
fn carlini_wagner_stays_in_the_l2_ball_and_breaks_the_toy() {
    let (model, x, y) = four_class_classifier();
    let target = ClassifierTarget(&model);
    let cfg = CwConfig {
        eps: 6.0,
        c: 10.0,
        steps: 60,
        lr: 0.05,
        ..CwConfig::default()
    };
    let adv = carlini_wagner_l2(&target, x.clone(), &y, &cfg, &mut seeded(1)).unwrap();
    assert_in_ball(&adv, &x, Norm::L2, 6.0, "C&W");
    let acc = accuracy(&model, adv, &y);
    assert!(acc <= 0.2, "C&W: {acc}");
    // Nothing found within a tiny radius: the clean images come back.
    let tiny = CwConfig {
        eps: 1e-3,
        steps: 5,
        ..cfg
    };
    let adv = carlini_wagner_l2(&target, x.clone(), &y, &tiny, &mut seeded(1)).unwrap();
    assert_eq!(values(adv), values(x));
}
