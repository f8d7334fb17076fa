//! Scoring a randomized defense: each point is classified under several
//! independent final draws; a point is "robust in every draw" only if all
//! draws are right, and "robust by majority" if more than half are.

use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::target::AttackTarget;
use crate::error::Result;
use crate::rng::AtopRng;

/// Per-point correctness over `draws` final evaluations.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RandomizedScore {
    pub draws: usize,
    /// For each point, how many draws classified it correctly.
    pub correct_counts: Vec<usize>,
}

impl RandomizedScore {
    pub fn every_draw(&self) -> Vec<bool> {
        self.correct_counts
            .iter()
            .map(|&c| c == self.draws)
            .collect()
    }

    pub fn majority(&self) -> Vec<bool> {
        self.correct_counts
            .iter()
            .map(|&c| 2 * c > self.draws)
            .collect()
    }

    /// Expected accuracy of one query: the fraction of (point, draw) pairs
    /// classified correctly.
    pub fn mean_accuracy(&self) -> f64 {
        let pairs = self.correct_counts.len() * self.draws;
        if pairs == 0 {
            return 0.0;
        }
        self.correct_counts.iter().sum::<usize>() as f64 / pairs as f64
    }

    pub fn every_draw_accuracy(&self) -> f64 {
        fraction(&self.every_draw())
    }

    pub fn majority_accuracy(&self) -> f64 {
        fraction(&self.majority())
    }
}

fn fraction(flags: &[bool]) -> f64 {
    if flags.is_empty() {
        return 0.0;
    }
    flags.iter().filter(|&&f| f).count() as f64 / flags.len() as f64
}

/// Classifies `x` `draws` times (fresh randomness each time) and counts
/// correct predictions per point. No gradients are taken.
pub fn score_randomized<T: AttackTarget + ?Sized>(
    target: &T,
    x: Tensor<4>,
    labels: &[i64],
    draws: usize,
    rng: &mut AtopRng,
) -> Result<RandomizedScore> {
    let n = labels.len();
    let device = x.device();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels.to_vec(), [n]), &device);
    let mut counts = vec![0usize; n];
    let draws = draws.max(1);
    for _ in 0..draws {
        let logits = target.logits(x.clone().detach(), rng)?.detach();
        let right = logits.argmax(1).reshape([n]).equal(y.clone());
        let right = crate::host::bools(right, "correct predictions")?;
        for (c, r) in counts.iter_mut().zip(right) {
            *c += usize::from(r);
        }
    }
    Ok(RandomizedScore {
        draws,
        correct_counts: counts,
    })
}
