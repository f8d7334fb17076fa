//! What every attack shares: threat-model projection, per-sample losses and
//! the EOT-averaged gradient of a per-sample loss.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::target::AttackTarget;
use crate::error::{AtopError, Result};
use crate::rng::{AtopRng, fill_standard_normal};

/// The threat model's norm.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    #[default]
    Linf,
    L2,
}

impl Norm {
    pub fn name(self) -> &'static str {
        match self {
            Norm::Linf => "Linf",
            Norm::L2 => "L2",
        }
    }
}

pub(crate) fn check_eps(eps: f64) -> Result<()> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(AtopError::config(
            "attack.eps",
            format!("must be finite and >= 0, got {eps}"),
        ))
    }
}

pub(crate) fn check_labels(labels: &[i64], dims: [usize; 4]) -> Result<()> {
    if labels.len() == dims[0] {
        Ok(())
    } else {
        Err(AtopError::shape(
            "attack labels",
            format!("{} labels", dims[0]),
            &[labels.len()],
        ))
    }
}

pub(crate) fn int_tensor(values: &[i64], device: &burn::tensor::Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

pub(crate) fn to_f32(t: Tensor<1>, what: &str) -> Result<Vec<f32>> {
    crate::host::floats(t, what)
}

pub(crate) fn to_i64(t: Tensor<1, Int>, what: &str) -> Result<Vec<i64>> {
    crate::host::ints(t, what)
}

/// Per-sample Euclidean norm, shaped [n, 1, 1, 1] for broadcasting.
pub(crate) fn per_sample_norm(t: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = t.dims();
    t.powi_scalar(2)
        .reshape([n, c * h * w])
        .sum_dim(1)
        .sqrt()
        .reshape([n, 1, 1, 1])
}

/// Projects `x_adv` onto the eps-ball around `x` and then the [0,1] box.
pub fn project(x_adv: Tensor<4>, x: &Tensor<4>, norm: Norm, eps: f64) -> Tensor<4> {
    let delta = x_adv - x.clone();
    let delta = match norm {
        Norm::Linf => delta.clamp(-eps, eps),
        Norm::L2 => {
            let length = per_sample_norm(delta.clone()).clamp_min(1e-12);
            let factor = length.recip().mul_scalar(eps).clamp_max(1.0);
            delta * factor
        }
    };
    (x.clone() + delta).clamp(0.0, 1.0)
}

/// The steepest-ascent direction of `g` for the norm (sign, or unit L2).
pub(crate) fn ascent_direction(g: Tensor<4>, norm: Norm) -> Tensor<4> {
    match norm {
        Norm::Linf => g.sign(),
        Norm::L2 => {
            let length = per_sample_norm(g.clone()).clamp_min(1e-12);
            g / length
        }
    }
}

/// Standard normal noise shaped like `like`, from the caller's generator.
pub(crate) fn normal_like(like: &Tensor<4>, rng: &mut AtopRng) -> Tensor<4> {
    let dims = like.dims();
    let mut noise = vec![0f32; dims.iter().product()];
    fill_standard_normal(rng, &mut noise);
    Tensor::from_data(TensorData::new(noise, dims), &like.device())
}

/// Per point of `points`, the class ranked `rank`-th (1 = highest logit)
/// among the classes other than its label; `ranked` holds each point's
/// classes sorted by descending clean logit, `k` per point. The targets of
/// APGD-T and FAB-T (AutoAttack: ranks 1 to 9).
pub(crate) fn targets_by_rank(
    ranked: &[i64],
    k: usize,
    labels: &[i64],
    points: &[usize],
    rank: usize,
) -> Vec<i64> {
    points
        .iter()
        .map(|&i| {
            let row = &ranked[i * k..(i + 1) * k];
            row.iter()
                .copied()
                .filter(|&c| c != labels[i])
                .nth(rank - 1)
                .unwrap_or(row[0])
        })
        .collect()
}

/// Uniform noise in (-1, 1) shaped like `like`, from the caller's generator.
pub(crate) fn symmetric_uniform_like(like: &Tensor<4>, rng: &mut AtopRng) -> Tensor<4> {
    use rand::RngExt;
    let dims = like.dims();
    let noise: Vec<f32> = (0..dims.iter().product::<usize>())
        .map(|_| (2.0 * rng.random::<f64>() - 1.0) as f32)
        .collect();
    Tensor::from_data(TensorData::new(noise, dims), &like.device())
}

/// Broadcasts a per-sample flag [n] over images [n, c, h, w].
pub(crate) fn sample_mask(
    flags: &[bool],
    dims: [usize; 4],
    device: &burn::tensor::Device,
) -> Tensor<4, Bool> {
    Tensor::<1, Bool>::from_data(TensorData::new(flags.to_vec(), [flags.len()]), device)
        .reshape([dims[0], 1, 1, 1])
        .expand(dims)
}

/// What an attack keeps per point, over its iterations, restarts and (in
/// AutoAttack) its component attacks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum IterateSelection {
    /// The official AutoAttack code's rule: an iterate that one forward pass
    /// misclassified wins, and later restarts or attacks run only on points
    /// no single draw has fooled yet. Exact for a deterministic model; on a
    /// randomized defense one lucky draw decides, which overstates it.
    #[default]
    FirstFooled,
    /// Every point is attacked by every restart and component, and keeps
    /// the iterate of highest EOT-mean loss (across components, of highest
    /// EOT-mean margin, the one loss they share); scoring over draws then
    /// judges that image.
    BestLoss,
}

impl IterateSelection {
    /// The rule that runs against a target: best-loss only where the target
    /// is randomized. On a deterministic one a single pass decides exactly,
    /// and first-fooled keeps every point that any restart or component
    /// fooled (best-loss would keep one iterate per point and can lose a
    /// fooling one: 1 point in 128 on the PGD-AT classifier).
    pub fn against(self, randomized: bool) -> Self {
        if randomized { self } else { Self::FirstFooled }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::FirstFooled => "first-fooled",
            Self::BestLoss => "best-loss",
        }
    }
}

/// Per point, the margin max_{j != y} z_j - z_y averaged over `eot` draws
/// of a randomized target (one pass for a deterministic one); no gradient.
pub(crate) fn mean_margin<T: AttackTarget + ?Sized>(
    target: &T,
    x: &Tensor<4>,
    labels: &[i64],
    eot: usize,
    rng: &mut AtopRng,
) -> Result<Vec<f32>> {
    let n = x.dims()[0];
    let eot = if target.is_randomized() {
        eot.max(1)
    } else {
        1
    };
    let x_rep = x.clone().detach().repeat_dim(0, eot);
    let y = int_tensor(labels, &x.device()).repeat_dim(0, eot);
    let logits = target.logits(x_rep, rng)?.detach();
    let margin = per_sample_loss(AttackLoss::Margin, logits, &y, None)?;
    to_f32(margin.reshape([eot, n]).mean_dim(0).reshape([n]), "margin")
}

/// Keeps, per point, `candidate` where its score beats `best_score` (NaN
/// never wins), updating the scores.
pub(crate) fn keep_higher(
    best: Tensor<4>,
    best_score: &mut [f32],
    candidate: Tensor<4>,
    score: &[f32],
) -> Tensor<4> {
    let take: Vec<bool> = score
        .iter()
        .zip(best_score.iter())
        .map(|(s, b)| s > b)
        .collect();
    for ((b, s), t) in best_score.iter_mut().zip(score).zip(&take) {
        if *t {
            *b = *s;
        }
    }
    let mask = sample_mask(&take, best.dims(), &best.device());
    best.mask_where(mask, candidate)
}

/// The per-sample objective an attack ascends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttackLoss {
    /// Cross-entropy of the true label.
    CrossEntropy,
    /// Difference of logits ratio (Croce & Hein 2020): shift- and
    /// scale-invariant margin, untargeted.
    Dlr,
    /// Targeted DLR towards the given labels.
    DlrTargeted,
    /// Negative margin: max other logit minus the true logit (> 0 once wrong).
    Margin,
}

/// Per-sample loss values [n] of `logits` for `labels` (and `targets` for
/// the targeted loss). Differentiable through `logits`.
/// `[n, k]` one-hot rows of `labels`, built on the device by comparison.
/// burn's `one_hot` reads the labels back to check their range, which a
/// browser's WebGPU cannot do; a label outside `0..k` gives a zero row here.
pub(crate) fn one_hot(labels: &Tensor<1, Int>, k: usize) -> Tensor<2, Bool> {
    let [n] = labels.dims();
    let classes = Tensor::<1, Int>::arange(0..k as i64, &labels.device())
        .reshape([1, k])
        .expand([n, k]);
    labels.clone().reshape([n, 1]).expand([n, k]).equal(classes)
}

pub fn per_sample_loss(
    loss: AttackLoss,
    logits: Tensor<2>,
    labels: &Tensor<1, Int>,
    targets: Option<&Tensor<1, Int>>,
) -> Result<Tensor<1>> {
    let [n, k] = logits.dims();
    let is_label = one_hot(labels, k);
    let true_logit = (logits.clone() * is_label.clone().float())
        .sum_dim(1)
        .reshape([n]);
    let max_other = || {
        logits
            .clone()
            .mask_fill(is_label.clone(), f32::NEG_INFINITY)
            .max_dim(1)
            .reshape([n])
    };
    // Sorted logits: the order is taken on detached values and gathered from
    // the live ones, so the gradient flows through the chosen entries.
    let sorted = |count: usize| -> Result<Tensor<2>> {
        if k < count {
            return Err(AtopError::config(
                "attack.loss",
                format!("DLR needs at least {count} classes, the model has {k}"),
            ));
        }
        let (_, order) = logits.clone().detach().sort_descending_with_indices(1);
        Ok(logits.clone().gather(1, order.narrow(1, 0, count)))
    };
    Ok(match loss {
        AttackLoss::CrossEntropy => (log_softmax(logits.clone(), 1) * is_label.float())
            .sum_dim(1)
            .reshape([n])
            .neg(),
        AttackLoss::Margin => max_other() - true_logit,
        AttackLoss::Dlr => {
            let top = sorted(3)?;
            let denom = top.clone().narrow(1, 0, 1) - top.narrow(1, 2, 1);
            (true_logit - max_other()).neg() / (denom.reshape([n]) + 1e-12)
        }
        AttackLoss::DlrTargeted => {
            let targets = targets.ok_or_else(|| {
                AtopError::config("attack.loss", "the targeted DLR loss needs target labels")
            })?;
            let target_logit = (logits.clone() * one_hot(targets, k).float())
                .sum_dim(1)
                .reshape([n]);
            let top = sorted(4)?;
            let denom = top.clone().narrow(1, 0, 1)
                - (top.clone().narrow(1, 2, 1) + top.narrow(1, 3, 1)).mul_scalar(0.5);
            (true_logit - target_logit).neg() / (denom.reshape([n]) + 1e-12)
        }
    })
}

/// One evaluation of an attack objective at `x`.
pub(crate) struct Evaluation {
    /// d(loss)/dx per sample, averaged over the EOT draws.
    pub grad: Tensor<4>,
    /// Per-sample loss, averaged over the EOT draws.
    pub loss: Vec<f32>,
    /// Per-sample prediction wrong (argmax of the EOT-averaged logits).
    pub wrong: Vec<bool>,
}

/// An [`Evaluation`] still on the device: loss and prediction stay
/// tensors. An attack step built on it never waits for the device, which is
/// what a browser's WebGPU needs (it cannot block on reads).
pub(crate) struct DeviceEvaluation {
    pub grad: Tensor<4>,
    pub loss: Tensor<1>,
    pub wrong: Tensor<1, Bool>,
}

impl DeviceEvaluation {
    /// Reads loss and prediction back to the host (blocking).
    pub fn into_host(self) -> Result<Evaluation> {
        Ok(Evaluation {
            grad: self.grad,
            loss: to_f32(self.loss, "attack loss")?,
            wrong: crate::host::bools(self.wrong, "attack predictions")?,
        })
    }
}

/// The most input values (images x channels x pixels) one EOT pass sends
/// through a target: 2^22, i.e. 5,350 Fashion-MNIST images or 21 at the
/// paper's 256x256 RGB purification path. A larger repeated batch is cut
/// into chunks of whole draws, each differentiated on its own and the
/// gradients summed, which bounds activation memory to one chunk's.
pub const DEFAULT_EOT_CHUNK_VALUES: usize = 1 << 22;

/// The bound that runs one EOT draw (of the whole batch) per pass: what CPUs
/// run fastest, as a loop over the draws would.
pub const ONE_DRAW_PER_PASS: usize = 1;

thread_local! {
    // Per thread, so that one caller's bound (a test's) never changes how
    // another thread's attack runs.
    static EOT_CHUNK_VALUES: std::cell::Cell<usize> =
        const { std::cell::Cell::new(DEFAULT_EOT_CHUNK_VALUES) };
}

/// Sets this thread's bound on input values per EOT pass (at least one
/// image per pass, whatever the bound); returns the previous bound.
pub fn set_eot_chunk_values(values: usize) -> usize {
    EOT_CHUNK_VALUES.with(|v| v.replace(values.max(1)))
}

/// This thread's bound on input values per EOT pass.
pub fn eot_chunk_values() -> usize {
    EOT_CHUNK_VALUES.with(|v| v.get())
}

/// Loss, gradient and prediction at `x`, with `eot` draws of a randomized
/// target run as one repeated batch, or, over [`eot_chunk_values`], as
/// chunks of whole draws that see the draws the whole batch would have
/// (the draw is taken ahead for the whole repeated batch and sliced), so
/// chunking changes memory, not the gradient.
pub(crate) fn evaluate<T: AttackTarget + ?Sized>(
    target: &T,
    x: &Tensor<4>,
    labels: &Tensor<1, Int>,
    targets: Option<&Tensor<1, Int>>,
    loss: AttackLoss,
    eot: usize,
    rng: &mut AtopRng,
) -> Result<DeviceEvaluation> {
    let dims = x.dims();
    let [n, ..] = dims;
    let eot = if target.is_randomized() {
        eot.max(1)
    } else {
        1
    };
    let per_image: usize = dims[1..].iter().product();
    let per_chunk = (eot_chunk_values() / (n * per_image).max(1)).clamp(1, eot);
    let x = x.clone().detach().require_grad();
    let repeat = |t: Tensor<1, Int>, k: usize| if k > 1 { t.repeat_dim(0, k) } else { t };
    let rows = |t: &Tensor<4>, k: usize| {
        if k > 1 {
            t.clone().repeat_dim(0, k)
        } else {
            t.clone()
        }
    };
    // One chunk: the historical single repeated batch, drawn as it always was.
    let ahead = match per_chunk < eot {
        true => target.draw_ahead(rng, [n * eot, dims[1], dims[2], dims[3]])?,
        false => None,
    };
    let (mut grad, mut all_logits, mut all_losses) = (None, Vec::new(), Vec::new());
    let mut done = 0;
    while done < eot {
        let k = per_chunk.min(eot - done);
        let draw = match &ahead {
            Some(d) => Some(d.rows(done * n, k * n)?),
            None => None,
        };
        let logits = target.logits_drawn(rows(&x, k), draw.as_ref(), rng)?;
        let losses = per_sample_loss(
            loss,
            logits.clone(),
            &repeat(labels.clone(), k),
            targets.map(|t| repeat(t.clone(), k)).as_ref(),
        )?;
        let grads = losses.clone().sum().div_scalar(eot as f64).backward();
        let g = input_gradient(&x, &grads)?;
        grad = Some(match grad {
            None => g,
            Some(acc) => acc + g,
        });
        all_logits.push(logits.detach());
        all_losses.push(losses.detach());
        done += k;
    }
    let logits = Tensor::cat(all_logits, 0);
    let [_, classes] = logits.dims();
    let mean_logits = logits
        .reshape([eot, n, classes])
        .mean_dim(0)
        .reshape([n, classes]);
    let wrong = mean_logits.argmax(1).reshape([n]).not_equal(labels.clone());
    Ok(DeviceEvaluation {
        grad: grad.ok_or_else(|| AtopError::config("attack.eot", "no EOT draw was taken"))?,
        loss: Tensor::cat(all_losses, 0)
            .reshape([eot, n])
            .mean_dim(0)
            .reshape([n]),
        wrong,
    })
}

/// Predictions wrong per sample, one forward pass (fresh draw), no gradient.
pub(crate) fn wrong_once<T: AttackTarget + ?Sized>(
    target: &T,
    x: &Tensor<4>,
    labels: &[i64],
    rng: &mut AtopRng,
) -> Result<Vec<bool>> {
    let score = super::score::score_randomized(target, x.clone(), labels, 1, rng)?;
    Ok(score.correct_counts.iter().map(|&c| c == 0).collect())
}

/// d(objective)/d(input) after `backward`, with the error every attack gives
/// when the model does not track gradients.
pub(crate) fn input_gradient<const D: usize>(
    input: &Tensor<D>,
    grads: &burn::tensor::Gradients,
) -> Result<Tensor<D>> {
    input.grad(grads).map(|g| g.detach()).ok_or_else(|| {
        AtopError::tensor(
            "attack input",
            "no gradient reached the input: is the model on an autodiff device?",
        )
    })
}

/// A host copy of a batch of images.
pub(crate) fn host_values(x: &Tensor<4>) -> Result<Vec<f32>> {
    crate::host::floats(x.clone(), "attack input")
}

/// The rows `positions` of a batch.
pub(crate) fn select_rows(x: &Tensor<4>, positions: &[usize]) -> Tensor<4> {
    let idx: Vec<i64> = positions.iter().map(|&i| i as i64).collect();
    x.clone().select(0, int_tensor(&idx, &x.device()))
}

/// `full` with its row `positions[j]` replaced by row j of `sub` wherever
/// `take[j]`.
pub(crate) fn scatter_rows(
    full: Tensor<4>,
    sub: Tensor<4>,
    positions: &[usize],
    take: &[bool],
) -> Tensor<4> {
    let dims = full.dims();
    let device = full.device();
    let mut source = vec![0i64; dims[0]];
    let mut replace = vec![false; dims[0]];
    for (j, &i) in positions.iter().enumerate() {
        source[i] = j as i64;
        replace[i] = take[j];
    }
    let spread = sub.select(0, int_tensor(&source, &device));
    full.mask_where(sample_mask(&replace, dims, &device), spread)
}

/// How many points of `x` get an all-zero, and how many a non-finite,
/// cross-entropy gradient from `target` (AutoAttack's sanity check: either
/// makes gradient-based robustness numbers unreliable).
pub fn gradient_health<T: AttackTarget + ?Sized>(
    target: &T,
    x: &Tensor<4>,
    labels: &[i64],
    rng: &mut AtopRng,
) -> Result<(usize, usize)> {
    let dims = x.dims();
    check_labels(labels, dims)?;
    let y = int_tensor(labels, &x.device());
    let ev = evaluate(target, x, &y, None, AttackLoss::CrossEntropy, 1, rng)?.into_host()?;
    let g = crate::host::floats(ev.grad, "input gradient")?;
    let size = g.len() / dims[0].max(1);
    let (mut zero, mut non_finite) = (0, 0);
    for sample in g.chunks(size.max(1)) {
        if sample.iter().any(|v| !v.is_finite()) {
            non_finite += 1;
        } else if sample.iter().all(|&v| v == 0.0) {
            zero += 1;
        }
    }
    Ok((zero, non_finite))
}

#[cfg(test)]
mod eot_chunk_tests {
    use super::*;
    use crate::attack::DefenseTarget;
    use crate::attack::GradientMode;
    use crate::defense::Defense;
    use crate::model::classifier::SmallCnnConfig;
    use crate::model::{AutoencoderConfig, ClassifierConfig, PurifierConfig};
    use crate::rng::{seeded, with_backend_seed};
    use crate::transform::TransformConfig;
    use burn::module::Module;
    use burn::tensor::{Device, Distribution};

    fn values(t: Tensor<4>) -> Vec<f32> {
        crate::host::floats(t.flatten::<1>(0, 3), "test").unwrap()
    }

    #[test]
    fn chunked_eot_gives_the_unchunked_gradient_loss_and_prediction() {
        let device = Device::flex().autodiff();
        let (classifier, purifier) = with_backend_seed(&device, 11, || {
            let c = ClassifierConfig::SmallCnn(SmallCnnConfig {
                width: 4,
                ..SmallCnnConfig::fashion_mnist()
            });
            let p = PurifierConfig::Ae(AutoencoderConfig {
                image_channels: 1,
                width: 4,
            });
            (c.init(&device).unwrap(), p.init(&device).unwrap())
        });
        let defense = Defense::new(
            TransformConfig {
                grid: 7,
                ..TransformConfig::rt3()
            },
            purifier.freeze(),
            classifier.freeze(),
        );
        let x = Tensor::<4>::random([3, 1, 28, 28], Distribution::Uniform(0.0, 1.0), &device);
        let y = int_tensor(&[1, 4, 7], &device);
        for mode in [GradientMode::Full, GradientMode::Bpda] {
            let target = DefenseTarget::new(&defense, mode);
            let run = |chunk_values: usize| {
                let previous = set_eot_chunk_values(chunk_values);
                let ev = evaluate(
                    &target,
                    &x,
                    &y,
                    None,
                    AttackLoss::CrossEntropy,
                    5,
                    &mut seeded(3),
                )
                .unwrap()
                .into_host()
                .unwrap();
                set_eot_chunk_values(previous);
                (values(ev.grad), ev.loss, ev.wrong)
            };
            let whole = run(DEFAULT_EOT_CHUNK_VALUES);
            // 3 images of 784 values: one draw per pass, then two.
            for bound in [3 * 784, 2 * 3 * 784] {
                let chunked = run(bound);
                let scale = whole.0.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
                let diff = whole
                    .0
                    .iter()
                    .zip(&chunked.0)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    diff <= 1e-5 * scale,
                    "{mode:?}, bound {bound}: {diff} of {scale}"
                );
                for (a, b) in whole.1.iter().zip(&chunked.1) {
                    assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "loss {a} vs {b}");
                }
                assert_eq!(whole.2, chunked.2);
            }
        }
    }

    #[test]
    fn the_bound_is_per_thread_and_at_least_one_image() {
        assert_eq!(eot_chunk_values(), DEFAULT_EOT_CHUNK_VALUES);
        let previous = set_eot_chunk_values(0);
        assert_eq!(eot_chunk_values(), 1);
        std::thread::spawn(|| assert_eq!(eot_chunk_values(), DEFAULT_EOT_CHUNK_VALUES))
            .join()
            .unwrap();
        set_eot_chunk_values(previous);
    }
}
