//! Attack schedules: step-size bounds, the step that runs, a larger step
//! where the default one stalls, and AutoAttack's iterate selection on a
//! randomized target.

use atop::attack::{
    AttackTarget, AutoAttackConfig, AutoAttackVersion, IterateSelection, Norm, PgdConfig, PgdLoss,
    autoattack, pgd, score_randomized,
};
use atop::rng::{AtopRng, fill_standard_normal, seeded};
use burn::tensor::activation::relu;
use burn::tensor::{Tensor, TensorData};
use rand::RngExt;

use crate::common::*;

/// A randomized toy target on 4x4 images around 0.5 with three classes
/// (label 0). The score of class 1 is `slope` * sum(relu(d - plateau)) +
/// `linear` * sum(d) + `offset`, with d = x - 0.5, plus uniform noise of
/// half-width `value_noise` on its value and N(0, 1) noise of weight
/// `gradient_noise` on its gradient alone (each call draws both afresh).
struct Toy {
    plateau: f64,
    slope: f64,
    linear: f64,
    offset: f64,
    value_noise: f64,
    gradient_noise: f64,
}

impl AttackTarget for Toy {
    fn logits(&self, x: Tensor<4>, rng: &mut AtopRng) -> atop::error::Result<Tensor<2>> {
        let [n, ..] = x.dims();
        let device = x.device();
        let d = (x - 0.5).reshape([n, 16]);
        let mut z = vec![0f32; n * 16];
        fill_standard_normal(rng, &mut z);
        let z = Tensor::<2>::from_data(TensorData::new(z, [n, 16]), &device);
        let noisy = (d.clone() * z).sum_dim(1).mul_scalar(self.gradient_noise);
        let value: Vec<f32> = (0..n)
            .map(|_| rng.random_range(-1.0..1.0) as f32 * self.value_noise as f32)
            .collect();
        let value = Tensor::<2>::from_data(TensorData::new(value, [n, 1]), &device);
        let score = relu(d.clone() - self.plateau)
            .sum_dim(1)
            .mul_scalar(self.slope)
            + d.sum_dim(1).mul_scalar(self.linear)
            + (noisy.clone() - noisy.detach())
            + value
            + self.offset;
        let zeros = Tensor::<2>::zeros([n, 1], &device);
        let far = Tensor::<2>::full([n, 1], -10.0, &device);
        Ok(Tensor::cat(vec![zeros, score, far], 1))
    }

    fn is_randomized(&self) -> bool {
        self.value_noise > 0.0 || self.gradient_noise > 0.0
    }
}

fn centre(n: usize) -> (Tensor<4>, Vec<i64>) {
    let d = device().autodiff();
    (Tensor::<4>::full([n, 1, 4, 4], 0.5, &d), vec![0; n])
}

#[test]
fn step_sizes_outside_zero_to_two_eps_are_named_errors() {
    let (x, y) = centre(2);
    let target = Toy {
        plateau: 0.0,
        slope: 0.0,
        linear: 1.0,
        offset: -1.0,
        value_noise: 0.0,
        gradient_noise: 0.0,
    };
    for bad in [f64::NAN, 0.0, -0.01, 0.2001, f64::INFINITY] {
        let cfg = PgdConfig {
            eps: 0.1,
            step_size: Some(bad),
            ..PgdConfig::default()
        };
        let e = pgd(&target, x.clone(), &y, &cfg, &mut seeded(0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("attack.step_size") && e.contains("0.2"),
            "{bad}: {e}"
        );
    }
    // 2 eps itself is allowed.
    let cfg = PgdConfig {
        eps: 0.1,
        step_size: Some(0.2),
        ..PgdConfig::default()
    };
    pgd(&target, x, &y, &cfg, &mut seeded(0)).unwrap();
}

#[test]
fn the_step_that_runs_is_the_one_given() {
    // A linear score and a clean start: one step moves every pixel by the step.
    let (x, y) = centre(3);
    let target = Toy {
        plateau: 0.0,
        slope: 0.0,
        linear: 1.0,
        offset: -5.0,
        value_noise: 0.0,
        gradient_noise: 0.0,
    };
    for (step, loss) in [
        (0.03, PgdLoss::Ce),
        (0.07, PgdLoss::Margin),
        (0.01, PgdLoss::Dlr),
    ] {
        let cfg = PgdConfig {
            eps: 0.1,
            steps: 1,
            step_size: Some(step),
            random_start: false,
            loss,
            ..PgdConfig::default()
        };
        assert_eq!(cfg.alpha(), step);
        let adv = pgd(&target, x.clone(), &y, &cfg, &mut seeded(0)).unwrap();
        let moved = values(adv - x.clone());
        assert!(
            moved.iter().all(|m| (m - step as f32).abs() < 1e-6),
            "{loss:?}: {:?}",
            &moved[..4]
        );
    }
    // Without a step size: 2.5 eps / steps.
    let cfg = PgdConfig {
        eps: 0.1,
        steps: 50,
        ..PgdConfig::default()
    };
    assert!((cfg.alpha() - 0.005).abs() < 1e-12);
}

#[test]
fn a_larger_step_breaks_a_randomized_target_where_the_default_schedule_stalls() {
    // Inside a plateau of half-width 0.06 the gradient is noise alone; past
    // it the score climbs steeply. The default step (2.5 eps / 100 = 0.0025)
    // diffuses too slowly to leave the plateau; a step of eps / 2 leaves it
    // within a few steps and then climbs to the corner.
    let (x, y) = centre(16);
    let target = Toy {
        plateau: 0.06,
        slope: 10.0,
        linear: 0.0,
        offset: -3.2,
        value_noise: 0.1,
        gradient_noise: 1.0,
    };
    let accuracy = |step_size: Option<f64>| {
        let cfg = PgdConfig {
            norm: Norm::Linf,
            eps: 0.1,
            steps: 100,
            step_size,
            ..PgdConfig::default()
        };
        let adv = pgd(&target, x.clone(), &y, &cfg, &mut seeded(3)).unwrap();
        score_randomized(&target, adv, &y, 4, &mut seeded(4))
            .unwrap()
            .mean_accuracy()
    };
    let (default, larger) = (accuracy(None), accuracy(Some(0.05)));
    assert!(default >= 0.75, "the default schedule broke it: {default}");
    assert!(larger <= 0.25, "the larger step did not: {larger}");
}

/// A linear score `0.3125 * sum - 0.3`, its value noisy by `value_noise`.
fn linear_toy(value_noise: f64) -> Toy {
    Toy {
        plateau: 0.0,
        slope: 0.0,
        linear: 0.3125,
        offset: -0.3,
        value_noise,
        gradient_noise: 0.0,
    }
}

/// AutoAttack rand (10 steps, EOT 4, L-inf 0.1) with `selection`.
fn rand_autoattack(
    target: &Toy,
    x: &Tensor<4>,
    y: &[i64],
    selection: IterateSelection,
) -> Tensor<4> {
    let cfg = AutoAttackConfig {
        norm: Norm::Linf,
        eps: 0.1,
        version: AutoAttackVersion::Rand,
        steps: 10,
        eot: 4,
        selection,
        ..AutoAttackConfig::default()
    };
    autoattack(target, x.clone(), y, &cfg, &mut seeded(5))
        .unwrap()
        .adversarial
}

#[test]
fn best_loss_autoattack_differs_from_the_official_single_draw_choice() {
    // A noisy value: one clean draw misclassifies about a third of the
    // points, and the official rule leaves those unattacked.
    let (x, y) = centre(64);
    let target = linear_toy(1.0);
    let run = |selection| {
        let adversarial = rand_autoattack(&target, &x, &y, selection);
        let untouched = values(adversarial.clone() - x.clone())
            .chunks(16)
            .filter(|d| d.iter().all(|v| *v == 0.0))
            .count();
        let score = score_randomized(&target, adversarial, &y, 20, &mut seeded(6)).unwrap();
        (untouched, score.mean_accuracy())
    };
    let (official_untouched, official) = run(IterateSelection::FirstFooled);
    let (best_untouched, best) = run(IterateSelection::BestLoss);
    assert!(
        official_untouched > 5,
        "{official_untouched} points left clean"
    );
    assert_eq!(best_untouched, 0);
    assert!(
        best < official - 0.04,
        "best-loss {best} vs official {official}"
    );
}

#[test]
fn a_deterministic_target_gets_the_first_fooled_rule_whatever_the_protocol_asks() {
    // Without noise one pass decides exactly, and first-fooled keeps every
    // point any component fooled; best-loss is asked for and not run.
    let (x, y) = centre(16);
    let target = linear_toy(0.0);
    let run = |selection| values(rand_autoattack(&target, &x, &y, selection));
    assert_eq!(
        run(IterateSelection::BestLoss),
        run(IterateSelection::FirstFooled)
    );
    assert_eq!(
        IterateSelection::BestLoss.against(false),
        IterateSelection::FirstFooled
    );
    assert_eq!(
        IterateSelection::BestLoss.against(true),
        IterateSelection::BestLoss
    );
}
