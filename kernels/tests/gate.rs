//! The fused gated activation on values computed by hand. (Its comparison
//! with burn's composed ops, values and gradient, is in the atop crate.)

use atop_kernels::{FeatureActivation, GateShape, gated_backward, gated_forward};

fn shape(pixels: usize) -> GateShape {
    GateShape {
        batch: 1,
        channels: 1,
        pixels,
    }
}

#[test]
fn gated_activation_by_hand() {
    // One sample, one channel, three pixels: features (1, -1, 0), gates
    // (0, 0, 100). sigmoid(0) = 1/2, sigmoid(100) = 1 in f32.
    let y = [1.0, -1.0, 0.0, 0.0, 0.0, 100.0];
    let e = (-1.0f32).exp();
    let elu = gated_forward(&y, shape(3), FeatureActivation::Elu);
    assert_eq!(elu, vec![0.5, (e - 1.0) * 0.5, 0.0]);
    let relu = gated_forward(&y, shape(3), FeatureActivation::Relu);
    assert_eq!(relu, vec![0.5, 0.0, 0.0]);
    // With d_out = 1: features get sigmoid(g) * act'(f) (ELU: 1, e, 1 at 0),
    // gates act(f) * s * (1 - s) (1/4 of act(f) at g = 0, 0 at g = 100).
    let d = gated_backward(&y, &[1.0; 3], shape(3), FeatureActivation::Elu);
    assert_eq!(d, vec![0.5, 0.5 * e, 1.0, 0.25, 0.25 * (e - 1.0), 0.0]);
    // A large feature does not overflow ELU.
    let big = gated_forward(&[100.0, 0.0], shape(1), FeatureActivation::Elu);
    assert_eq!(big, vec![50.0]);
}
