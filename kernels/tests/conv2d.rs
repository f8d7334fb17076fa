//! The convolution kernel on plain slices: a case computed by hand, refused
//! geometries, and bits that do not depend on the number of threads. (Its
//! comparison with burn's own convolution on random shapes, values and
//! gradients, is in the atop crate: shared/src/kernels/tests.rs.)

use atop_kernels::{ConvGeometry, conv2d_backward, conv2d_forward};
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
