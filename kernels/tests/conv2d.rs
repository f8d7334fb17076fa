//! The convolution kernel on plain slices: a case computed by hand, refused
//! geometries, and bits that do not depend on the number of threads. (Its
//! comparison with burn's own convolution on random shapes, values and
//! gradients, is in the atop crate: shared/src/kernels/tests.rs.)

use atop_kernels::{ConvGeometry, conv2d_backward, conv2d_forward, relu_output_grad};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn a_hand_computed_strided_padded_convolution() {
    // x = 1..=9 in a 3x3 image, a 2x2 kernel of ones, stride 2, one zero
    // before the first row and column: outputs read the windows
    // {0,0,0,1}, {0,0,2,3}, {0,4,0,7}, {5,6,8,9}.
    let g =
        ConvGeometry::new([1, 1, 3, 3], [1, 1, 2, 2], [2, 2], [(1, 0), (1, 0)], [1, 1]).unwrap();
    assert_eq!(g.out, [2, 2]);
    let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let y = conv2d_forward(&g, &x, &[1.0; 4], Some(&[0.5]));
    assert_eq!(y, vec![1.5, 5.5, 11.5, 28.5]);
    // With dy = 1 everywhere each input is counted once per window it is in
    // (each once here: the windows do not overlap), and each weight tap sums
    // the inputs it reads: tap (0,0) reads 0,0,0,5; (0,1) 0,0,4,6; (1,0)
    // 0,2,0,8; (1,1) 1,3,7,9.
    let (dx, dw) = conv2d_backward(&g, &x, &[1.0; 4], &[1.0; 4], true, true);
    assert_eq!(dx.unwrap(), vec![1.0; 9]);
    assert_eq!(dw.unwrap(), vec![5.0, 10.0, 10.0, 20.0]);
}

#[test]
fn geometries_that_do_not_fit_are_refused() {
    // A 5x5 kernel on a 3x3 image without padding, a zero stride, and a
    // weight whose input channels do not match.
    assert!(ConvGeometry::new([1, 1, 3, 3], [1, 1, 5, 5], [1, 1], [(0, 0); 2], [1, 1]).is_none());
    assert!(ConvGeometry::new([1, 1, 3, 3], [1, 1, 1, 1], [0, 1], [(0, 0); 2], [1, 1]).is_none());
    assert!(ConvGeometry::new([1, 2, 3, 3], [1, 1, 1, 1], [1, 1], [(0, 0); 2], [1, 1]).is_none());
}

#[test]
fn the_results_have_the_same_bits_on_any_number_of_threads() {
    // A 9x9 image (one sample per gemm group) and a 4x4 one (the whole
    // batch in one group, so gemm splits the call between threads).
    for size in [9, 4] {
        let g = ConvGeometry::new(
            [20, 5, size, size],
            [7, 5, 3, 3],
            [1, 1],
            [(1, 1); 2],
            [1, 1],
        )
        .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut draw = |len: usize| {
            (0..len)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect::<Vec<_>>()
        };
        let (x, w, dy) = (
            draw(20 * 5 * size * size),
            draw(7 * 5 * 9),
            draw(20 * 7 * size * size),
        );
        let on_threads = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let y = conv2d_forward(&g, &x, &w, None);
                (y, conv2d_backward(&g, &x, &w, &dy, true, true))
            })
        };
        let one = on_threads(1);
        for threads in [2, 3, 5] {
            assert!(
                on_threads(threads) == one,
                "{size}x{size}, {threads} threads"
            );
        }
    }
}

#[test]
fn the_direct_kernels_agree_with_im2col_on_stride_one_geometries() {
    use atop_kernels::{
        Activation, ConvMethod, conv2d_backward_with, conv2d_forward_activated,
        conv2d_forward_with, direct_available,
    };
    // Image widths below, at and past one 16-pixel tile, odd sizes, kernels
    // 1x1 to 5x5 with and without padding (asymmetric too), 1-9 channels.
    // Dilated too, as the inpainter's bottleneck (dilation 2-16 on 7x7).
    // (input, weight, padding, dilation)
    type Case = ([usize; 4], [usize; 4], [(usize, usize); 2], [usize; 2]);
    // 8 wide or less with 8+ output channels: the 8-channel narrow tiles,
    // a partial last block of channels too (12 and 9 outputs).
    let cases: [Case; 12] = [
        ([3, 2, 5, 7], [3, 2, 3, 3], [(1, 1), (1, 1)], [1, 1]),
        ([2, 3, 16, 16], [5, 3, 3, 3], [(1, 1), (1, 1)], [1, 1]),
        ([4, 4, 28, 28], [9, 4, 3, 3], [(1, 1), (1, 1)], [1, 1]),
        ([2, 5, 9, 33], [6, 5, 5, 5], [(2, 2), (2, 2)], [1, 1]),
        ([1, 3, 8, 11], [4, 3, 3, 2], [(0, 0), (1, 0)], [1, 1]),
        ([5, 7, 6, 6], [2, 7, 1, 1], [(0, 0), (0, 0)], [1, 1]),
        ([3, 2, 12, 12], [3, 2, 3, 3], [(0, 2), (2, 0)], [1, 1]),
        ([2, 8, 7, 7], [8, 8, 3, 3], [(4, 4), (4, 4)], [4, 4]),
        ([2, 4, 7, 7], [5, 4, 3, 3], [(16, 16), (16, 16)], [16, 16]),
        ([3, 3, 20, 20], [7, 3, 3, 5], [(2, 1), (4, 2)], [2, 1]),
        ([3, 12, 8, 8], [12, 12, 3, 3], [(1, 1), (1, 1)], [1, 1]),
        ([2, 16, 5, 6], [9, 16, 3, 3], [(1, 1), (1, 1)], [1, 1]),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut draw = |len: usize| {
        (0..len)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect::<Vec<_>>()
    };
    for (input, weight, padding, dilation) in cases {
        let g = ConvGeometry::new(input, weight, [1, 1], padding, dilation).unwrap();
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            direct_available(&g),
            std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("avx2")
        );
        let x = draw(g.batch * g.input_len());
        let w = draw(g.channels_out * g.patch_len());
        let b = draw(g.channels_out);
        let dy = draw(g.batch * g.output_len());
        let close = |a: &[f32], b: &[f32], what: &str| {
            assert_eq!(a.len(), b.len(), "{what} {input:?} {weight:?}");
            for (i, (p, q)) in a.iter().zip(b).enumerate() {
                assert!(
                    (p - q).abs() <= 1e-5 * (1.0 + q.abs()),
                    "{what} {input:?} {weight:?} [{i}]: {p} vs {q}"
                );
            }
        };
        let im2col = conv2d_forward_with(&g, &x, &w, Some(&b), ConvMethod::Im2col);
        let (dx2, dw2) = conv2d_backward_with(&g, &x, &w, &dy, [true, true], ConvMethod::Im2col);
        // Auto takes AVX-512's tiles where the CPU has them, Avx2 never.
        for method in [ConvMethod::Auto, ConvMethod::Avx2] {
            let direct = conv2d_forward_with(&g, &x, &w, Some(&b), method);
            close(&direct, &im2col, "forward");
            let (dx, dw) = conv2d_backward_with(&g, &x, &w, &dy, [true, true], method);
            close(&dx.unwrap(), dx2.as_ref().unwrap(), "input gradient");
            close(&dw.unwrap(), dw2.as_ref().unwrap(), "weight gradient");
            // Asked for one gradient, it gives that one alone.
            let (dx, dw) = conv2d_backward_with(&g, &x, &w, &dy, [false, true], method);
            assert!(dx.is_none() && dw.is_some());
            // ReLU applied as the tiles are stored, as a pass on im2col's output.
            let relu: Vec<f32> = im2col.iter().map(|v| v.max(0.0)).collect();
            for relu_method in [method, ConvMethod::Im2col] {
                let fused =
                    conv2d_forward_activated(&g, &x, &w, Some(&b), Activation::Relu, relu_method);
                close(&fused, &relu, "forward with ReLU");
            }
        }
    }
}

#[test]
fn the_relu_output_gradient_passes_where_the_output_is_positive_or_nan() {
    let y = [0.5, 0.0, -1.0, f32::NAN];
    let dy = [1.0, 2.0, 3.0, 4.0];
    assert_eq!(relu_output_grad(&y, &dy), [1.0, 0.0, 0.0, 4.0]);
}

#[test]
fn the_fused_relu_lets_nan_through_on_both_paths() {
    use atop_kernels::{Activation, ConvMethod, conv2d_forward_activated};
    // One NaN pixel in a 1x1 convolution's input, negative elsewhere: the
    // output is NaN there and 0 (clipped) everywhere else.
    let g = ConvGeometry::new([1, 1, 4, 20], [1, 1, 1, 1], [1, 1], [(0, 0); 2], [1, 1]).unwrap();
    let mut x = vec![-1.0f32; 80];
    x[17] = f32::NAN;
    for method in [ConvMethod::Auto, ConvMethod::Avx2, ConvMethod::Im2col] {
        let y = conv2d_forward_activated(&g, &x, &[1.0], None, Activation::Relu, method);
        assert!(y[17].is_nan(), "{method:?}: NaN was clipped");
        let others = y.iter().enumerate().filter(|&(i, _)| i != 17);
        assert!(others.into_iter().all(|(_, &v)| v == 0.0), "{method:?}");
    }
}
