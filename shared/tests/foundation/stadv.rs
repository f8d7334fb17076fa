//! StAdv: the flow's warp against hand-computed values, its bound, the
//! [0,1] box, its strength on a trained model and its gradient through the
//! whole defense.

use atop::attack::{
    ClassifierTarget, DefenseTarget, GradientMode, StadvConfig, flow_smoothness, stadv,
    stadv_flow_gradient, warp_by_flow,
};
use atop::defense::Defense;
use atop::rng::seeded;
use atop::transform::TransformConfig;
use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};

use crate::common::*;

fn image(values: Vec<f32>, dims: [usize; 4]) -> Tensor<4> {
    Tensor::from_data(TensorData::new(values, dims), &device())
}

#[test]
fn the_warp_matches_hand_computed_resampling() {
    // One row of 5 pixels: 0, 0.25, 0.5, 0.75, 1.
    let x = image(vec![0.0, 0.25, 0.5, 0.75, 1.0], [1, 1, 1, 5]);
    let flow_of = |dx: f32| {
        let mut f = vec![dx; 5];
        f.extend([0.0; 5]);
        image(f, [1, 2, 1, 5])
    };
    assert_eq!(
        values(warp_by_flow(x.clone(), flow_of(0.0))),
        values(x.clone())
    );
    // Normalized 0.5 is one pixel here ((5 - 1) / 2 = 2 pixels per unit):
    // each pixel takes its right neighbour; the last repeats the border.
    let shifted = values(warp_by_flow(x.clone(), flow_of(0.5)));
    assert!(
        max_abs_diff(&shifted, &[0.25, 0.5, 0.75, 1.0, 1.0]) < 1e-6,
        "{shifted:?}"
    );
    // A quarter unit is half a pixel: the mean of two neighbours.
    let half = values(warp_by_flow(x.clone(), flow_of(-0.25)));
    assert!(
        max_abs_diff(&half, &[0.0, 0.125, 0.375, 0.625, 0.875]) < 1e-6,
        "{half:?}"
    );
    // A constant flow is perfectly smooth; a step costs sqrt(du^2) per edge.
    let smooth = atop::host::floats(flow_smoothness(&flow_of(0.3)), "flow loss").unwrap();
    assert!(smooth[0] < 1e-3, "{smooth:?}");
    let mut step = vec![0.0, 0.0, 0.0, 0.2, 0.2];
    step.extend([0.0; 5]);
    let rough =
        atop::host::floats(flow_smoothness(&image(step, [1, 2, 1, 5])), "flow loss").unwrap();
    assert!((rough[0] - 0.2).abs() < 1e-3, "{rough:?}");
}

#[test]
fn stadv_stays_in_its_bound_and_the_box_and_breaks_a_trained_model() {
    let (classifier, x, y, _) = crate::parity::fixture();
    let (x, y) = (x.narrow(0, 0, 64), y[..64].to_vec());
    let target = ClassifierTarget(&classifier);
    let clean = score(&target, x.clone(), &y);
    let cfg = StadvConfig {
        steps: 30,
        ..StadvConfig::default()
    };
    let (adv, flow) = stadv(&target, x.clone(), &y, &cfg, &mut seeded(3)).unwrap();
    let flow = values(flow);
    let largest = flow.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        largest <= 0.05 + 1e-6,
        "flow {largest} beyond the bound 0.05"
    );
    assert!(largest > 0.01, "the flow did not move ({largest})");
    assert!(values(adv.clone()).iter().all(|v| (0.0..=1.0).contains(v)));
    let robust = score(&target, adv, &y);
    assert!(clean > 0.8, "fixture clean accuracy {clean}");
    assert!(robust < clean / 2.0, "StAdv {robust} vs clean {clean}");
}

#[test]
fn stadv_gradients_reach_the_flow_through_the_whole_defense() {
    let (classifier, x, y, _) = crate::parity::fixture();
    let (x, y) = (x.narrow(0, 0, 8), y[..8].to_vec());
    let d = device().autodiff();
    let defense = Defense::new(
        TransformConfig {
            grid: 7,
            ..TransformConfig::rt2()
        },
        small_gan(1).init(&d).unwrap().freeze(),
        classifier,
    );
    let labels = Tensor::<1, Int>::from_data(TensorData::new(y.clone(), [8]), &d);
    let flow = Tensor::<4>::zeros([8, 2, 28, 28], &d);
    let cfg = StadvConfig {
        eot: 2,
        ..StadvConfig::default()
    };
    for mode in [GradientMode::Full, GradientMode::Bpda] {
        let target = DefenseTarget::new(&defense, mode);
        let g = stadv_flow_gradient(&target, &x, &flow, &labels, &cfg, &mut seeded(4)).unwrap();
        let g = values(g);
        assert!(g.iter().all(|v| v.is_finite()), "{mode:?}: non-finite");
        let moved = g
            .chunks(2 * 784)
            .filter(|s| s.iter().any(|&v| v != 0.0))
            .count();
        assert_eq!(
            moved, 8,
            "{mode:?}: no gradient reached the flow of some points"
        );
    }
}

fn score(target: &dyn atop::attack::AttackTarget, x: Tensor<4>, y: &[i64]) -> f64 {
    atop::attack::score_randomized(target, x, y, 1, &mut seeded(0))
        .unwrap()
        .every_draw_accuracy()
}
