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

/// burn keeps one random generator per backend and process, and models
/// initialise from it. Seeding it and drawing from it happen under this lock,
/// so that two threads (tests run in parallel, each loading or building
/// models) cannot interleave their draws and a seed replays the same weights.
static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

std::thread_local! {
    /// Whether this thread holds [`BACKEND_RNG`] (so nested calls do not
    /// lock it twice).
    static HOLDS_BACKEND_RNG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `draw` (model initialisation, random tensors) while no other thread
/// draws from the backend's generator. Every model's `init` goes through
/// it and draws its parameters there (burn would draw them lazily, at
/// first use, outside any lock); nested calls on one thread run directly.
pub fn backend_draws<T>(draw: impl FnOnce() -> T) -> T {
    if HOLDS_BACKEND_RNG.get() {
        return draw();
    }
    // A panic while held poisons nothing we keep: the lock guards no data.
    let _held = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            HOLDS_BACKEND_RNG.set(false);
        }
    }
    HOLDS_BACKEND_RNG.set(true);
    let _release = Release;
    draw()
}

/// Seeds the backend's generator and runs `draw` under [`backend_draws`],
/// so that the seed alone decides what `draw` gets.
pub fn with_backend_seed<T>(
    device: &burn::tensor::Device,
    seed: u64,
    draw: impl FnOnce() -> T,
) -> T {
    backend_draws(|| {
        device.seed(seed);
        draw()
    })
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

/// Mixes a seed with a counter (SplitMix64's finalizer), for per-epoch,
/// per-step and per-batch streams.
pub fn mix(seed: u64, counter: u64) -> u64 {
    let mut z = seed ^ counter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The named random streams of a run, each the run seed XOR a salt, so
/// that no two purposes share a stream. The values are part of every
/// recorded result: changing one changes what a seed replays.
pub mod stream {
    /// The validation split carved from the training data.
    pub const VALIDATION_SPLIT: u64 = 0x5A11;
    /// Data order of each stage, and the device seed (model
    /// initialisation) of the GAN stages; the classifier initialises from
    /// the run seed itself.
    pub const TRAIN_CLASSIFIER: u64 = 1;
    pub const PRETRAIN: u64 = 2;
    pub const FINETUNE: u64 = 3;
    /// Per-step draws inside a stage (transform, attack start), mixed with the step.
    pub const TRAINING_STEP: u64 = 0xA70F;
    /// Per-epoch validation draws, mixed with the epoch.
    pub const VALIDATION: u64 = 0x7A1;
    /// The evaluation: attacks and scoring draws.
    pub const EVALUATION: u64 = 0xE7A1;
    /// Within an evaluation: clean scoring, attack runs, their scoring, and
    /// the gradient sanity check, each mixed with the batch (and attack).
    pub const EVAL_CLEAN: u64 = 0xC1EA;
    /// Transform draws of the clean transform-only diagnostic row.
    pub const EVAL_TRANSFORM_ONLY: u64 = 0x7F0;
    pub const EVAL_ATTACK: u64 = 0xA77C;
    pub const EVAL_DEFENSE_SCORE: u64 = 0xDEF;
    pub const SANITY: u64 = 0x5A17;
    /// The under-tuning probe: a stronger rerun of each attack on a slice.
    pub const EVAL_TUNING_PROBE: u64 = 0x7B0BE;
}

#[cfg(test)]
mod mix_tests {
    use super::mix;

    #[test]
    fn mix_is_splitmix64() {
        // SplitMix64's first output for state 0 + golden gamma (the reference
        // implementation's stream from seed 0).
        assert_eq!(mix(0, 1), 0xE220_A839_7B1D_CDAF);
        assert_ne!(mix(1, 2), mix(2, 1));
    }
}
