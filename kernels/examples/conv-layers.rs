//! Times the convolution kernel on the quickstart AE's layers, one pass each
//! (forward, input gradient, weight gradient), by each method (direct where
//! it runs, and im2col + gemm), and prints ms and GFLOP/s:
//!
//!     cargo run --release -p atop-kernels --example conv-layers [batch]
//!
//! Which pass of which layer is slow, without the rest of a training step.

use std::time::Instant;

use atop_kernels::{
    ConvGeometry, ConvMethod, conv2d_backward_with, conv2d_forward_with, direct_available,
};

/// (name, channels in, channels out, image size, stride): the AE at width 16
/// on 28x28 (kernels 3x3, padding 1).
const LAYERS: [(&str, usize, usize, usize, usize); 8] = [
    ("enc1.conv1", 3, 16, 28, 1),
    ("enc1.conv2", 16, 16, 28, 1),
    ("down1", 16, 32, 28, 2),
    ("enc2.conv", 32, 32, 14, 1),
    ("bottleneck", 64, 64, 7, 1),
    ("up2", 64, 32, 14, 1),
    ("dec1.conv1", 32, 16, 28, 1),
    ("dec1.conv2", 16, 16, 28, 1),
];

/// The median of `repeats` timings of `f`, in ms.
fn median_ms(repeats: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[repeats / 2]
}

fn main() {
    let batch: usize = std::env::args()
        .nth(1)
        .and_then(|b| b.parse().ok())
        .unwrap_or(32);
    println!("batch {batch}, {} threads", rayon::current_num_threads());
    println!(
        "| layer | method | forward ms | input grad ms | weight grad ms | GFLOP/s (all three) |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, cin, cout, size, stride) in LAYERS {
        let g = ConvGeometry::new(
            [batch, cin, size, size],
            [cout, cin, 3, 3],
            [stride, stride],
            [(1, 1); 2],
            [1, 1],
        )
        .expect("the AE's layers fit");
        let fill = |len: usize| {
            (0..len)
                .map(|i| (i % 17) as f32 * 0.01)
                .collect::<Vec<f32>>()
        };
        let (x, w, dy) = (
            fill(batch * g.input_len()),
            fill(cout * g.patch_len()),
            fill(batch * g.output_len()),
        );
        for method in [ConvMethod::Auto, ConvMethod::Avx2, ConvMethod::Im2col] {
            let label = match method {
                ConvMethod::Im2col => "im2col",
                _ if !direct_available(&g) => continue, // im2col there too: timed below
                ConvMethod::Auto => "direct",
                ConvMethod::Avx2 => "direct, AVX2 only",
            };
            let forward = median_ms(9, || drop(conv2d_forward_with(&g, &x, &w, None, method)));
            let grad = |want| conv2d_backward_with(&g, &x, &w, &dy, want, method);
            let input = median_ms(9, || drop(grad([true, false])));
            let weight = median_ms(9, || drop(grad([false, true])));
            let flop = 2.0 * (batch * g.output_len() * g.patch_len()) as f64 * 3.0;
            let rate = flop / ((forward + input + weight) * 1e-3) / 1e9;
            println!("| {name} | {label} | {forward:.2} | {input:.2} | {weight:.2} | {rate:.1} |");
        }
    }
}
