//! Seeded randomness. Every random draw in the project (masks, noise, attack
//! starts, data order) comes from a generator the caller creates from a seed,
//! so a run, an attack or an evaluation replays exactly.

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The project's generator: ChaCha8 is portable (same stream on every
/// platform, native and wasm) and fast.
pub type AtopRng = ChaCha8Rng;

/// A generator from a 64-bit seed.
pub fn seeded(seed: u64) -> AtopRng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A child generator for an independent stream, e.g. one per evaluation draw,
/// derived from the parent's next output (so it is itself reproducible).
pub fn fork<R: Rng + ?Sized>(rng: &mut R) -> AtopRng {
    ChaCha8Rng::seed_from_u64(rng.next_u64())
}

/// Fills `out` with independent standard normal samples (Box-Muller in f64,
/// so the values do not depend on a distribution crate's algorithm version).
pub fn fill_standard_normal<R: Rng + ?Sized>(rng: &mut R, out: &mut [f32]) {
    let mut chunks = out.chunks_exact_mut(2);
    for pair in &mut chunks {
        let (a, b) = box_muller(rng);
        pair[0] = a as f32;
        pair[1] = b as f32;
    }
    if let [last] = chunks.into_remainder() {
        *last = box_muller(rng).0 as f32;
    }
}

fn box_muller<R: Rng + ?Sized>(rng: &mut R) -> (f64, f64) {
    // u1 in (0, 1] so the logarithm is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    let radius = (-2.0 * u1.ln()).sqrt();
    let angle = 2.0 * std::f64::consts::PI * u2;
    (radius * angle.cos(), radius * angle.sin())
}

/// A uniform permutation of `0..n` (Fisher-Yates).
pub fn permutation<R: Rng + ?Sized>(rng: &mut R, n: usize) -> Vec<usize> {
    let mut items: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        items.swap(i, j);
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_samples_have_unit_moments() {
        let mut rng = seeded(1);
        let mut v = vec![0f32; 200_001];
        fill_standard_normal(&mut rng, &mut v);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
    }

    #[test]
    fn permutation_is_a_permutation_and_seeded() {
        let p = permutation(&mut seeded(3), 64);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..64).collect::<Vec<_>>());
        assert_eq!(p, permutation(&mut seeded(3), 64));
        assert_ne!(p, permutation(&mut seeded(4), 64));
    }
}
