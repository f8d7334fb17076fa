//! The gemm crate's speed on the shapes the convolution hands it, with
//! column-major operands (no packing to do): the ceiling our kernel's passes
//! can approach on this machine.
//!
//!     cargo run --release -p atop-kernels --example gemm-ceiling

use std::time::Instant;

/// (m, n, k): a square reference, then the AE's 3x3 layers at 28x28 as the
/// kernel calls gemm: forward (pixels x cout x patch), weight gradient
/// (patch x cout x pixels), and input gradient by col2im (pixels x patch x cout).
const SHAPES: [(usize, usize, usize); 5] = [
    (1024, 1024, 1024),
    (2352, 16, 144),
    (288, 16, 2352),
    (2352, 288, 16),
    (2352, 288, 144),
];

fn main() {
    println!("| m x n x k | one thread GFLOP/s | all threads GFLOP/s |");
    println!("|---|---|---|");
    for (m, n, k) in SHAPES {
        let lhs = vec![0.5f32; m * k];
        let rhs = vec![0.25f32; k * n];
        let mut dst = vec![0f32; m * n];
        let mut rate = |parallelism: gemm::Parallelism| {
            let mut best = f64::MAX;
            for _ in 0..20 {
                let start = Instant::now();
                // SAFETY: dst is m x n, lhs m x k and rhs k x n, all
                // column-major and exactly that long.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        dst.as_mut_ptr(),
                        m as isize,
                        1,
                        false,
                        lhs.as_ptr(),
                        m as isize,
                        1,
                        rhs.as_ptr(),
                        k as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        parallelism,
                    );
                }
                best = best.min(start.elapsed().as_secs_f64());
            }
            2.0 * (m * n * k) as f64 / best / 1e9
        };
        let one = rate(gemm::Parallelism::None);
        let all = rate(gemm::Parallelism::Rayon(rayon::current_num_threads()));
        println!("| {m} x {n} x {k} | {one:.1} | {all:.1} |");
    }
}
