//! Our convolution (routed through burn's extension on flex) against burn's
//! own flex op on random shapes: values and all three gradients to 1e-4 of
//! the reference's largest magnitude. The slice kernels' own tests (a
//! hand-computed case, thread-count independence) are in kernels/tests.

use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use atop_kernels::{ConvGeometry, FeatureActivation};

fn values(t: Tensor<4>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// Fails unless `ours` is within 1e-4 of the reference's largest magnitude.
fn assert_close(what: &str, ours: &[f32], reference: &[f32]) {
    assert_eq!(ours.len(), reference.len(), "{what}: lengths differ");
    let scale = reference.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let worst = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-4 * scale,
        "{what}: largest difference {worst} against a scale of {scale}"
    );
}

/// A convolution's shapes: x `[batch, cin, h, w]`, weight `[cout, cin, kh, kw]`.
#[derive(Debug, Clone, Copy)]
struct Case {
    input: [usize; 4],
    channels_out: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [(usize, usize); 2],
    dilation: [usize; 2],
    with_bias: bool,
}

/// Random shapes drawn from `rng`, up to 18 samples of 11x11.
fn random_case(rng: &mut ChaCha8Rng) -> Case {
    let input = [
        rng.random_range(1..=18),
        rng.random_range(1..=6),
        rng.random_range(1..=11),
        rng.random_range(1..=11),
    ];
    Case {
        input,
        channels_out: rng.random_range(1..=7),
        kernel: [rng.random_range(1..=4), rng.random_range(1..=4)],
        stride: [rng.random_range(1..=3), rng.random_range(1..=3)],
        dilation: [rng.random_range(1..=2), rng.random_range(1..=2)],
        padding: [
            (rng.random_range(0..=2), rng.random_range(0..=2)),
            (rng.random_range(0..=2), rng.random_range(0..=2)),
        ],
        with_bias: rng.random_bool(0.5),
    }
}

/// Our conv and burn's on the same autodiff tensors (drawn from `rng`) on
/// `device`, their outputs and gradients compared; false when the kernel
/// does not fit the image.
fn compare_with_burn(rng: &mut ChaCha8Rng, case: Case, device: &Device) -> bool {
    let Case {
        input: [batch, cin, h, w],
        channels_out: cout,
        kernel,
        stride,
        padding,
        dilation,
        with_bias,
    } = case;
    let Some(g) = ConvGeometry::new(
        [batch, cin, h, w],
        [cout, cin, kernel[0], kernel[1]],
        stride,
        padding,
        dilation,
    ) else {
        return false;
    };
    let options = ConvOptions::new_with_padding(stride, padding, dilation, 1);
    let what = format!("{case:?}");
    let mut draw = |shape: Vec<usize>| {
        let len = shape.iter().product();
        let v: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        TensorData::new(v, shape)
    };
    let x0 = draw(vec![batch, cin, h, w]);
    let w0 = draw(vec![cout, cin, kernel[0], kernel[1]]);
    let b0 = draw(vec![cout]);
    // A random linear read-out, so every output element gets its own
    // upstream gradient.
    let readout = draw(vec![batch, cout, g.out[0], g.out[1]]);
    let run = |ours: bool| {
        let x = Tensor::<4>::from_data(x0.clone(), device).require_grad();
        let weight = Tensor::<4>::from_data(w0.clone(), device).require_grad();
        let bias = Tensor::<1>::from_data(b0.clone(), device).require_grad();
        let b = with_bias.then(|| bias.clone());
        let y = if ours {
            super::conv2d(x.clone(), weight.clone(), b, options.clone())
        } else {
            burn_conv2d(x.clone(), weight.clone(), b, options.clone())
        };
        let grads = (y.clone() * Tensor::from_data(readout.clone(), device))
            .sum()
            .backward();
        let bias_grad: Vec<f32> = if with_bias {
            bias.grad(&grads)
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        } else {
            Vec::new()
        };
        (
            values(y),
            values(x.grad(&grads).unwrap()),
            values(weight.grad(&grads).unwrap()),
            bias_grad,
        )
    };
    let (ours, reference) = (run(true), run(false));
    assert_close(&format!("{what}: output"), &ours.0, &reference.0);
    assert_close(&format!("{what}: input gradient"), &ours.1, &reference.1);
    assert_close(&format!("{what}: weight gradient"), &ours.2, &reference.2);
    assert_close(&format!("{what}: bias gradient"), &ours.3, &reference.3);
    true
}

/// 60 random shapes on `device`, most of which must fit and agree.
fn compare_random_shapes(device: &Device) {
    let mut rng = ChaCha8Rng::seed_from_u64(20261203);
    let compared = (0..60)
        .filter(|_| {
            let case = random_case(&mut rng);
            compare_with_burn(&mut rng, case, device)
        })
        .count();
    // Draws whose kernel does not fit are skipped; most must run.
    assert!(
        compared >= 40,
        "only {compared} of 60 random shapes were compared"
    );
}

#[test]
fn matches_burns_convolution_and_its_gradients_on_random_shapes() {
    compare_random_shapes(&Device::flex().autodiff());
}

#[test]
fn matches_burns_convolution_on_images_cut_into_row_tiles() {
    // Wide patches (40 channels) on 20x20 and 24x24 outputs: one sample per
    // gemm call, its output rows cut into tiles written in place, and the
    // input gradient through the flipped kernel. Stride 2 (12x12 outputs):
    // samples grouped per call, the input gradient through col2im.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (stride, size, with_bias) in [(1, 20, true), (1, 24, false), (2, 24, true)] {
        let case = Case {
            input: [3, 40, size, size],
            channels_out: 8,
            kernel: [3, 3],
            stride: [stride; 2],
            padding: [(1, 1); 2],
            dilation: [1, 1],
            with_bias,
        };
        let device = Device::flex().autodiff();
        assert!(
            compare_with_burn(&mut rng, case, &device),
            "{case:?} must fit"
        );
    }
}

#[test]
fn the_purifiers_shapes_match_burns_convolution() {
    // The AE's 3x3 layers at batch 32, stride 1 and 2, and its 1x1 output.
    let device = Device::flex();
    for (cin, cout, k, stride, pad, size) in [
        (3, 16, 3, 1, 1, 28),
        (16, 32, 3, 2, 1, 28),
        (16, 1, 1, 1, 0, 28),
    ] {
        let x = Tensor::<4>::random([32, cin, size, size], Distribution::Default, &device);
        let w = Tensor::<4>::random([cout, cin, k, k], Distribution::Default, &device);
        let options = ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1);
        let ours = values(super::conv2d(x.clone(), w.clone(), None, options.clone()));
        let reference = values(burn_conv2d(x, w, None, options));
        assert_close(&format!("{cin}->{cout} k{k} s{stride}"), &ours, &reference);
    }
}

#[test]
fn groups_and_other_dtypes_fall_back_to_burns_op() {
    let device = Device::flex();
    let x = Tensor::<4>::random([2, 4, 6, 6], Distribution::Default, &device);
    let w = Tensor::<4>::random([6, 2, 3, 3], Distribution::Default, &device);
    let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 2);
    let ours = values(super::conv2d(x.clone(), w.clone(), None, options.clone()));
    assert_eq!(ours, values(burn_conv2d(x, w, None, options)));
}

#[test]
fn the_fused_gated_activation_matches_burns_ops_and_their_gradients() {
    compare_gated_activation(&Device::flex().autodiff());
}

/// The fused gated activation against burn's composed ops on `device`.
fn compare_gated_activation(device: &Device) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (activation, shape) in [
        (FeatureActivation::Elu, [3, 8, 5, 7]),
        (FeatureActivation::Relu, [2, 6, 4, 4]),
        (FeatureActivation::Elu, [1, 2, 1, 1]),
    ] {
        // Values up to +-30: ELU's exp must not overflow on the positive side.
        let len = shape.iter().product();
        let y: Vec<f32> = (0..len).map(|_| rng.random_range(-30.0f32..30.0)).collect();
        let y = TensorData::new(y, shape);
        let out_shape = [shape[0], shape[1] / 2, shape[2], shape[3]];
        let len = out_shape.iter().product();
        let readout: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let readout = TensorData::new(readout, out_shape);
        let run = |fused: bool| {
            let y = Tensor::<4>::from_data(y.clone(), device).require_grad();
            let out = if fused {
                super::gated_activation(y.clone(), activation)
            } else {
                super::gate::composed(y.clone(), activation)
            };
            let grads = (out.clone() * Tensor::from_data(readout.clone(), device))
                .sum()
                .backward();
            (values(out), values(y.grad(&grads).unwrap()))
        };
        let (fused, reference) = (run(true), run(false));
        let what = format!("{activation:?} {shape:?}");
        assert!(
            fused.0.iter().chain(&fused.1).all(|v| v.is_finite()),
            "{what}: not finite"
        );
        assert_close(&format!("{what}: output"), &fused.0, &reference.0);
        assert_close(&format!("{what}: gradient"), &fused.1, &reference.1);
    }
}

/// `conv2d_relu_module` against burn's convolution then burn's ReLU on
/// `device`: values and the input, weight and bias gradients.
fn compare_conv_relu(device: &Device) {
    use burn::module::Module;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    // Stride 1 (direct kernels, both tile kinds), 2 (im2col + a pass), and
    // groups (burn's convolution then its ReLU on flex).
    for (cin, cout, size, stride, groups) in [
        (3, 16, 28, 1, 1),
        (4, 9, 7, 1, 1),
        (3, 5, 9, 2, 1),
        (4, 6, 6, 1, 2),
    ] {
        let conv = Conv2dConfig::new([cin, cout], [3, 3])
            .with_stride([stride, stride])
            .with_groups(groups)
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device)
            .fork(device);
        let x0 = Tensor::<4>::random([2, cin, size, size], Distribution::Default, device);
        let run = |fused: bool| {
            let x = x0.clone().detach().require_grad();
            let y = if fused {
                super::conv2d_relu_module(&conv, x.clone())
            } else {
                burn::tensor::activation::relu(conv.forward(x.clone()))
            };
            let readout = y.clone().detach().mul_scalar(0.5).add_scalar(1.0);
            let grads = (y.clone() * readout).sum().backward();
            let bias = conv.bias.as_ref().unwrap().grad(&grads).unwrap();
            (
                values(y),
                values(x.grad(&grads).unwrap()),
                values(conv.weight.grad(&grads).unwrap()),
                bias.into_data().try_to_vec::<f32>().unwrap(),
            )
        };
        let (ours, reference) = (run(true), run(false));
        let what = format!("{cin}->{cout} on {size}x{size}, stride {stride}, groups {groups}");
        assert!(ours.0.contains(&0.0), "{what}: no output was clipped");
        assert_close(&format!("{what}: output"), &ours.0, &reference.0);
        assert_close(&format!("{what}: input gradient"), &ours.1, &reference.1);
        assert_close(&format!("{what}: weight gradient"), &ours.2, &reference.2);
        assert_close(&format!("{what}: bias gradient"), &ours.3, &reference.3);
    }
}

#[test]
fn the_convolution_with_its_relu_fused_matches_burns_ops_and_their_gradients() {
    compare_conv_relu(&Device::flex().autodiff());
}

/// LibTorch's routes (torch's convolution with `convolution_backward`
/// through its autograd, ReLU's `threshold_backward`, the gated activation's
/// five-pass backward) against burn's own ops on the same device.
#[cfg(feature = "tch")]
#[allow(deprecated)] // burn marks LibTorch deprecated; it works in 0.22.1
mod libtorch {
    use super::*;

    #[test]
    fn torchs_convolution_matches_burns_and_its_gradients_on_random_shapes() {
        compare_random_shapes(&Device::libtorch().autodiff());
    }

    #[test]
    fn torchs_gated_activation_matches_burns_ops_and_their_gradients() {
        compare_gated_activation(&Device::libtorch().autodiff());
    }

    #[test]
    fn torchs_convolution_then_relu_matches_burns_ops() {
        compare_conv_relu(&Device::libtorch().autodiff());
    }

    #[test]
    fn torchs_relu_matches_burns_and_its_gradient() {
        let device = Device::libtorch().autodiff();
        let x0 = TensorData::new(vec![-2.0f32, -0.5, 0.0, 0.25, 3.0, -1.0], [2, 3]);
        let readout = TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]);
        let x = Tensor::<2>::from_data(x0, &device).require_grad();
        let y = super::super::relu(x.clone());
        let grads = (y.clone() * Tensor::from_data(readout, &device))
            .sum()
            .backward();
        let y = y.into_data().try_to_vec::<f32>().unwrap();
        let dx = x
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(y, [0.0, 0.0, 0.0, 0.25, 3.0, 0.0]);
        // The gradient at 0 is 0, as torch's and burn's both define it.
        assert_eq!(dx, [0.0, 0.0, 0.0, 4.0, 5.0, 0.0]);
    }

    #[test]
    fn a_convolution_input_used_twice_keeps_its_gradient() {
        // x feeds the convolution and a later in-place-capable add: the
        // graph torch keeps must still see x's values at backward time.
        let device = Device::libtorch().autodiff();
        let x = Tensor::<4>::random([2, 3, 6, 6], Distribution::Default, &device).require_grad();
        let w = Tensor::<4>::random([4, 3, 3, 3], Distribution::Default, &device).require_grad();
        let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let run = |ours: bool| {
            let y = if ours {
                super::super::conv2d(x.clone(), w.clone(), None, options.clone())
            } else {
                burn_conv2d(x.clone(), w.clone(), None, options.clone())
            };
            let z = y.sum() + x.clone().mul_scalar(2.0).sum();
            let grads = z.backward();
            (
                values(x.grad(&grads).unwrap()),
                values(w.grad(&grads).unwrap()),
            )
        };
        let (ours, reference) = (run(true), run(false));
        assert_close("input gradient", &ours.0, &reference.0);
        assert_close("weight gradient", &ours.1, &reference.1);
    }
}
