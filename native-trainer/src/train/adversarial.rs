//! Adversarial training of the classifier, the baselines AToP is held to:
//! Madry et al.'s PGD-AT and TRADES (Zhang et al., ICML 2019). The training
//! attack runs on a frozen copy of the current model ([`frozen_copy`]), so
//! it adds no parameter gradients, and takes its random start from the
//! stage's seeded generator.

use anyhow::Result;
use atop::attack::{ClassifierTarget, Norm, PgdConfig, PgdLoss, pgd, project};
use atop::model::Classifier;
use atop::rng::{AtopRng, fill_standard_normal};
use burn::module::Module;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Tensor, TensorData};

use super::blocks::{accuracy_of, cross_entropy};
use crate::config::{AdversarialTraining, ClassifierTrainingConfig};
use crate::data::Dataset;

/// The training attack: L-infinity, random start, fixed step size.
#[derive(Clone, Debug)]
pub struct TrainingAttack {
    pub kind: AdversarialTraining,
    pub eps: f64,
    pub steps: usize,
    pub step_size: f64,
    pub trades_beta: f64,
}

impl TrainingAttack {
    /// `None` for standard training.
    pub fn from_config(cfg: &ClassifierTrainingConfig) -> Option<Self> {
        (cfg.adversarial != AdversarialTraining::None).then_some(Self {
            kind: cfg.adversarial,
            eps: cfg.attack_eps,
            steps: cfg.attack_steps,
            step_size: cfg.attack_step_size,
            trades_beta: cfg.trades_beta,
        })
    }

    /// What the manifest records of it.
    pub fn record(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "method": self.kind.name(),
            "norm": "linf",
            "eps": self.eps,
            "steps": self.steps,
            "step_size": self.step_size,
            "random_start": true,
        });
        if self.kind == AdversarialTraining::Trades {
            v["trades_beta"] = self.trades_beta.into();
            v["inner_loss"] = "kl".into();
        }
        v
    }

    /// Adversarial examples for `x` against `model` (PGD on the
    /// cross-entropy for PGD-AT; TRADES' KL ascent from a small normal start).
    /// `frozen` is a [`frozen_copy`] of the model.
    pub fn perturb(
        &self,
        frozen: &Classifier,
        x: Tensor<4>,
        labels: &[i64],
        rng: &mut AtopRng,
    ) -> Result<Tensor<4>> {
        match self.kind {
            AdversarialTraining::Trades => self.trades_perturb(frozen, x, rng),
            _ => {
                let cfg = PgdConfig {
                    norm: Norm::Linf,
                    eps: self.eps,
                    step_size: Some(self.step_size),
                    steps: self.steps,
                    random_start: true,
                    restarts: 1,
                    eot: 1,
                    loss: PgdLoss::Ce,
                };
                Ok(pgd(&ClassifierTarget(frozen), x, labels, &cfg, rng)?)
            }
        }
    }

    /// TRADES' inner maximisation: sign ascent on KL(f(x) || f(x')) from
    /// x + 0.001 N(0, 1), projected onto the eps-ball and [0, 1].
    fn trades_perturb(
        &self,
        model: &Classifier,
        x: Tensor<4>,
        rng: &mut AtopRng,
    ) -> Result<Tensor<4>> {
        let x = x.detach();
        let dims = x.dims();
        let mut noise = vec![0f32; dims.iter().product()];
        fill_standard_normal(rng, &mut noise);
        let start = Tensor::<4>::from_data(TensorData::new(noise, dims), &x.device());
        let mut x_adv = (x.clone() + start.mul_scalar(0.001)).clamp(0.0, 1.0);
        let clean = model.forward(x.clone())?.detach();
        for _ in 0..self.steps {
            let probe = x_adv.clone().detach().require_grad();
            let kl = kl_divergence(clean.clone(), model.forward(probe.clone())?).sum();
            let grad = probe
                .grad(&kl.backward())
                .ok_or_else(|| anyhow::anyhow!("TRADES: no gradient reached the input"))?;
            let stepped = x_adv + grad.sign().mul_scalar(self.step_size);
            x_adv = project(stepped, &x, Norm::Linf, self.eps);
        }
        Ok(x_adv.detach())
    }

    /// The training loss on a batch and its adversarials.
    pub fn loss(
        &self,
        model: &Classifier,
        x: Tensor<4>,
        x_adv: Tensor<4>,
        labels: &[i64],
    ) -> Result<Tensor<1>> {
        Ok(match self.kind {
            AdversarialTraining::Trades => {
                let [n, ..] = x.dims();
                let clean = model.forward(x)?;
                let natural = cross_entropy(clean.clone(), labels);
                let robust = kl_divergence(clean, model.forward(x_adv)?)
                    .sum()
                    .div_scalar(n as f64);
                natural + robust.mul_scalar(self.trades_beta)
            }
            _ => cross_entropy(model.forward(x_adv)?, labels),
        })
    }

    /// Accuracy on `data` under this attack (checkpoint selection), with
    /// `model` a [`frozen_copy`] on the autodiff `device`.
    pub fn robust_accuracy(
        &self,
        model: &Classifier,
        data: &Dataset,
        batch: usize,
        device: &Device,
        rng: &mut AtopRng,
    ) -> Result<f64> {
        accuracy_of(data, batch, device, |x, y| {
            Ok(model.forward(self.perturb(model, x, y, rng)?)?)
        })
    }
}

/// A copy of the model under training whose parameters track no
/// gradients, for attacking it. (Freezing a plain clone would also untrack
/// the original's parameters, which share their autodiff state.)
pub fn frozen_copy(model: &Classifier, device: &Device) -> Classifier {
    model.valid().fork(device).freeze()
}

/// KL(softmax(p) || softmax(q)) per sample, `[n]`, from logits.
fn kl_divergence(p_logits: Tensor<2>, q_logits: Tensor<2>) -> Tensor<1> {
    let [n, _] = p_logits.dims();
    let log_p = log_softmax(p_logits.clone(), 1);
    let p = softmax(p_logits, 1);
    (p * (log_p - log_softmax(q_logits, 1)))
        .sum_dim(1)
        .reshape([n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_divergence_matches_a_hand_computed_value() {
        let d = burn::tensor::Device::default();
        let p = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 0.0], [1, 2]), &d);
        let q = Tensor::<2>::from_data(TensorData::new(vec![(3.0f32).ln(), 0.0], [1, 2]), &d);
        // p = (1/2, 1/2), q = (3/4, 1/4): KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3).
        let kl = atop::host::floats(kl_divergence(p.clone(), q), "kl").unwrap();
        assert!((kl[0] - 0.5 * (4.0f32 / 3.0).ln()).abs() < 1e-6, "{kl:?}");
        let zero = atop::host::floats(kl_divergence(p.clone(), p), "kl").unwrap();
        assert!(zero[0].abs() < 1e-7);
    }
}
