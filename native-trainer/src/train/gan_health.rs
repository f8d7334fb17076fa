//! The discriminator's health over a GAN stage, read from the stage's rows
//! in metrics.jsonl (so a resumed run counts the steps it replayed once):
//! a discriminator that scores real and purified images alike has stalled,
//! and a generator whose adversarial gradient is a sliver of the L1 term's
//! learns from L1 alone. Either, in most steps, is a warning in the run log,
//! the artifact's metrics and the quickstart's report.

use std::path::Path;

use anyhow::Result;
use atop::artifact::Metric;

/// |mean D(real) − mean D(fake)| below this: D does not tell them apart.
pub const STALLED_GAP: f64 = 0.05;
/// The adversarial term's gradient at the purified image below this
/// fraction of the L1 term's: it no longer steers the generator.
pub const VANISHED_RATIO: f64 = 0.01;
/// Warn when more than this fraction of a stage's steps are unhealthy.
pub const WARN_FRACTION: f64 = 0.5;

#[derive(Clone, Debug, PartialEq)]
pub struct GanHealth {
    pub stage: String,
    pub steps: usize,
    /// Steps whose score gap was below [`STALLED_GAP`].
    pub stalled: usize,
    /// Steps whose gradient ratio was below [`VANISHED_RATIO`].
    pub vanished: usize,
    /// The first step from which every later step stalled, if any.
    pub stalled_from: Option<usize>,
}

impl GanHealth {
    /// The health of `stage` in `dir/metrics.jsonl`; `None` without GAN rows.
    pub fn read(dir: &Path, stage: &str) -> Result<Option<Self>> {
        let path = dir.join("metrics.jsonl");
        if !path.exists() {
            return Ok(None);
        }
        let rows: Vec<(f64, f64)> = crate::metrics::read(&path)?
            .into_iter()
            .filter(|m| m.stage == stage && m.validation.is_none())
            .filter_map(|m| Some((*m.losses.get("d_gap")?, *m.losses.get("g_adv_ratio")?)))
            .collect();
        Ok(Self::from_steps(stage, &rows))
    }

    /// The health of (score gap, gradient ratio) per step.
    pub fn from_steps(stage: &str, steps: &[(f64, f64)]) -> Option<Self> {
        if steps.is_empty() {
            return None;
        }
        let stalled_at = |(gap, _): &(f64, f64)| gap.abs() < STALLED_GAP;
        let tail = steps.iter().rev().take_while(|s| stalled_at(s)).count();
        Some(Self {
            stage: stage.into(),
            steps: steps.len(),
            stalled: steps.iter().filter(|s| stalled_at(s)).count(),
            vanished: steps.iter().filter(|(_, r)| *r < VANISHED_RATIO).count(),
            stalled_from: (tail > 0).then(|| steps.len() - tail + 1),
        })
    }

    fn fraction(&self, count: usize) -> f64 {
        count as f64 / self.steps.max(1) as f64
    }

    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.fraction(self.stalled) > WARN_FRACTION {
            let from = self.stalled_from.map_or(String::new(), |s| {
                format!(", and in every step from step {s} on")
            });
            w.push(format!(
                "{}: the discriminator stalled: mean D(real) - D(fake) within {STALLED_GAP} in {} of {} steps ({:.0}%){from}",
                self.stage,
                self.stalled,
                self.steps,
                100.0 * self.fraction(self.stalled)
            ));
        }
        if self.fraction(self.vanished) > WARN_FRACTION {
            w.push(format!(
                "{}: the generator's adversarial gradient vanished: under {VANISHED_RATIO} of the L1 term's in {} of {} steps ({:.0}%); it learns from L1 alone",
                self.stage,
                self.vanished,
                self.steps,
                100.0 * self.fraction(self.vanished)
            ));
        }
        w
    }

    /// The artifact's record of it.
    pub fn metrics(&self) -> Vec<Metric> {
        let protocol = serde_json::json!({
            "stage": self.stage, "steps": self.steps,
            "stalled_gap": STALLED_GAP, "vanished_ratio": VANISHED_RATIO,
        });
        vec![
            Metric {
                name: "discriminator_stalled_fraction".into(),
                value: self.fraction(self.stalled),
                protocol: protocol.clone(),
            },
            Metric {
                name: "generator_adversarial_gradient_vanished_fraction".into(),
                value: self.fraction(self.vanished),
                protocol,
            },
        ]
    }

    /// Logs the warnings and returns them.
    pub fn report(&self) -> Vec<String> {
        let warnings = self.warnings();
        for w in &warnings {
            tracing::warn!("{w}");
        }
        tracing::info!(
            stage = self.stage,
            steps = self.steps,
            stalled = self.stalled,
            vanished = self.vanished,
            "discriminator health"
        );
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discriminator_that_dies_at_step_3_is_named_with_its_step() {
        let steps = [
            (0.8, 0.5),
            (0.3, 0.2),
            (0.01, 0.001),
            (0.0, 0.0),
            (0.02, 0.0),
        ];
        let h = GanHealth::from_steps("pretrain", &steps).unwrap();
        assert_eq!(
            (h.steps, h.stalled, h.vanished, h.stalled_from),
            (5, 3, 3, Some(3))
        );
        let w = h.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("3 of 5 steps") && w[0].contains("from step 3"),
            "{w:?}"
        );
        assert!(w[1].contains("learns from L1 alone"), "{w:?}");
        let healthy =
            GanHealth::from_steps("pretrain", &[(0.5, 0.3), (0.01, 0.5), (0.4, 0.2)]).unwrap();
        assert!(healthy.warnings().is_empty());
        assert_eq!(healthy.stalled_from, None);
        assert!(GanHealth::from_steps("pretrain", &[]).is_none());
    }
}
