//! Robust evaluation on a seeded test subset: clean accuracy and, per attack
//! and gradient mode, robust accuracy of the bare classifier and of each
//! defense; randomized defenses are scored over several final draws
//! ("robust in every draw" and majority vote), plus the worst case over the
//! attacks of each threat model. The work is cut into (model, attack, batch)
//! units, each seeded by its position alone, so a run can be resumed from a
//! state file and split into shards whose merge equals the whole run.

mod attacks;
pub mod probe;
pub mod report;
pub mod run;
pub mod sanity;
pub mod shard;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::{Context, Result};
use atop::attack::{
    AttackTarget, ClassifierTarget, DefenseTarget, GradientMode, TransformOnlyTarget,
    score_randomized,
};
use atop::defense::Defense;
use atop::model::Classifier;
use atop::rng::{mix, permutation, seeded, stream};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

pub use attacks::attack_name;
use attacks::run_attack;
pub use shard::{Shard, merge};

use crate::config::{EvalAttack, EvalConfig};
use crate::data::Dataset;
use crate::fsutil::write_atomic;
use crate::progress::Progress;

/// One row of the results table.
/// What a row evaluates.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RowKind {
    /// A bare classifier (deterministic: one draw).
    Classifier,
    /// A randomized defense: transform, purifier, classifier.
    #[default]
    Defense,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EvalRow {
    /// The classifier's or the defense's name.
    pub model: String,
    /// Reports made before bare classifiers had their own kind read as
    /// defenses; [`EvalRow::recount`] fixes the row named "classifier".
    #[serde(default)]
    pub kind: RowKind,
    /// "clean", the attack's name, or "worst case".
    pub attack: String,
    pub norm: String,
    pub eps: f64,
    pub steps: usize,
    pub eot: usize,
    /// Runs from independent random starts per point (1 = no restart; 0 on
    /// clean and worst-case rows).
    pub restarts: usize,
    /// Gradient mode of the attack ("-" for clean and worst-case rows).
    pub mode: String,
    /// The fixed step size the attack ran with (PGD, FGSM, StAdv); None
    /// where the attack adapts its own (APGD) or on clean rows.
    #[serde(default)]
    pub step_size: Option<f64>,
    /// The loss the attack ascended ("-" on clean and worst-case rows).
    #[serde(default)]
    pub loss: String,
    /// What APGD and AutoAttack kept per point (`first-fooled`, the
    /// official rule, or `best-loss`); empty for other attacks.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selection: String,
    pub draws: usize,
    /// Expected accuracy of one query: the fraction of (point, draw) pairs
    /// classified correctly (what other papers report for randomized defenses).
    #[serde(default)]
    pub accuracy_mean: f64,
    pub accuracy_every_draw: f64,
    pub accuracy_majority: f64,
    /// Per point: correct in every draw.
    pub robust_flags: Vec<bool>,
    /// Per point: in how many of the `draws` final draws it was correct.
    #[serde(default)]
    pub correct_counts: Vec<usize>,
    /// The protocol's name (`protocol` in the [eval] table or protocol file),
    /// so a reduced protocol's rows say so wherever they are copied.
    #[serde(default)]
    pub protocol: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EvalReport {
    pub subset_seed: u64,
    /// The whole subset's test indices, in evaluation order.
    pub indices: Vec<usize>,
    /// Positions in `indices` this report covers (all, unless a shard).
    #[serde(default)]
    pub positions: Vec<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    pub rows: Vec<EvalRow>,
    /// Sanity-check warnings: the gradient checks, then the table checks.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The gradient checks and the under-tuning check's warnings (run on
    /// batch 0 only, so a merge of shards takes them from the shard that
    /// had it and redoes the table checks).
    #[serde(default)]
    pub gradient_warnings: Vec<String>,
    /// The under-tuning check: every probed attack's figure beside a
    /// stronger rerun's, on the same points.
    #[serde(default)]
    pub tuning_probes: Vec<probe::ProbeRecord>,
}

/// The seeded subset of test indices.
pub fn subset_indices(test_len: usize, subset: usize, seed: u64) -> Vec<usize> {
    let mut order = permutation(&mut seeded(seed), test_len);
    order.truncate(subset.min(test_len));
    order
}

fn row(
    model: &str,
    kind: RowKind,
    attack: Option<&EvalAttack>,
    draws: usize,
    counts: Vec<usize>,
) -> EvalRow {
    let mut r = EvalRow {
        model: model.to_string(),
        kind,
        attack: attack.map_or("clean".into(), attack_name),
        norm: attack.map_or("-".into(), threat_model),
        eps: attack.map_or(0.0, |a| a.eps),
        // Square's budget is its queries, and it takes no gradient samples.
        steps: attack.map_or(0, |a| {
            if a.attack.uses_gradients() {
                a.steps
            } else {
                a.queries
            }
        }),
        // A bare classifier is deterministic: its attacks take one gradient
        // sample whatever the protocol's EOT (AttackTarget::is_randomized).
        eot: attack.map_or(0, |a| match (a.attack.uses_gradients(), kind) {
            (false, _) => 0,
            (true, RowKind::Classifier) => 1,
            (true, RowKind::Defense) => a.eot,
        }),
        restarts: attack.map_or(0, |a| a.restarts),
        step_size: attack.and_then(EvalAttack::effective_step_size),
        loss: attack.map_or("-".into(), |a| a.loss_name().to_string()),
        selection: attack.map_or(String::new(), |a| {
            // What the attack saw: the defense's random transform, unless it
            // attacked the bare classifier or one frozen draw.
            let randomized = kind == RowKind::Defense
                && matches!(a.mode, GradientMode::Full | GradientMode::Bpda);
            probe::selection_of(a, randomized).to_string()
        }),
        mode: attack.map_or("-".into(), |a| {
            if a.attack.uses_gradients() {
                a.mode.name().to_string()
            } else {
                "black-box".into()
            }
        }),
        draws,
        accuracy_mean: 0.0,
        accuracy_every_draw: 0.0,
        accuracy_majority: 0.0,
        robust_flags: Vec::new(),
        correct_counts: counts,
        protocol: String::new(),
    };
    r.recount();
    r
}

impl EvalRow {
    /// Flags and accuracies from `correct_counts`.
    pub fn recount(&mut self) {
        if self.model == "classifier" {
            self.kind = RowKind::Classifier;
        }
        let n = self.correct_counts.len().max(1) as f64;
        let correct: usize = self.correct_counts.iter().sum();
        self.accuracy_mean = correct as f64 / (n * self.draws.max(1) as f64);
        self.robust_flags = self
            .correct_counts
            .iter()
            .map(|&c| c == self.draws)
            .collect();
        self.accuracy_every_draw = self.robust_flags.iter().filter(|&&f| f).count() as f64 / n;
        self.accuracy_majority = self
            .correct_counts
            .iter()
            .filter(|&&c| 2 * c > self.draws)
            .count() as f64
            / n;
    }
}

/// The row's threat model: the norm, or StAdv's bounded flow.
fn threat_model(a: &EvalAttack) -> String {
    match a.attack {
        crate::config::EvalAttackKind::Stadv => "flow-linf".into(),
        _ => format!("{:?}", a.norm).to_lowercase(),
    }
}

/// The attack name of the clean row through the transform alone.
pub const TRANSFORM_ONLY: &str = "clean, transform only";

/// Whether a row is an attack's (not a clean row or a worst case).
pub fn is_attack_row(r: &EvalRow) -> bool {
    !matches!(r.attack.as_str(), "clean" | TRANSFORM_ONLY | "worst case")
}

/// Per model and threat model (norm, eps), a point survives the worst case
/// only if it survives every attack: the per-point minimum of the counts.
pub fn worst_case_rows(rows: &[EvalRow]) -> Vec<EvalRow> {
    // (model, norm, eps bits) -> its attack rows, in first-seen order.
    type ThreatModel = (String, String, u64);
    let mut groups: Vec<(ThreatModel, Vec<&EvalRow>)> = Vec::new();
    for r in rows.iter().filter(|r| is_attack_row(r)) {
        let key = (r.model.clone(), r.norm.clone(), r.eps.to_bits());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    groups
        .into_iter()
        .filter(|(_, members)| members.len() > 1)
        .map(|(_, members)| {
            let first = members[0];
            let counts = (0..first.correct_counts.len())
                .map(|i| {
                    members
                        .iter()
                        .map(|m| m.correct_counts[i])
                        .min()
                        .unwrap_or(0)
                })
                .collect();
            let mut r = EvalRow {
                attack: "worst case".into(),
                steps: 0,
                eot: 0,
                restarts: 0,
                mode: "-".into(),
                step_size: None,
                loss: "-".into(),
                selection: String::new(),
                correct_counts: counts,
                ..first.clone()
            };
            r.recount();
            r
        })
        .collect()
}

/// Where a run keeps its finished units, and which part of the subset it runs.
pub struct EvalRun {
    /// The state file (`None`: nothing kept).
    pub state_path: Option<PathBuf>,
    /// Identifies the protocol, artifacts and shard; a state file made for
    /// another one is refused.
    pub protocol_hash: String,
    pub resume: bool,
    pub shard: Option<Shard>,
}

#[derive(Serialize, Deserialize, Default)]
struct EvalState {
    protocol_hash: String,
    /// "model|attack|batch" -> correct counts per point of the batch.
    units: BTreeMap<String, Vec<usize>>,
}

impl EvalState {
    fn load(run: &EvalRun) -> Result<Self> {
        let fresh = || EvalState {
            protocol_hash: run.protocol_hash.clone(),
            units: BTreeMap::new(),
        };
        let Some(path) = &run.state_path else {
            return Ok(fresh());
        };
        if !run.resume || !path.exists() {
            return Ok(fresh());
        }
        let text = crate::fsutil::read_text_bounded(
            path,
            crate::fsutil::read_limits::RUN_RECORD,
            "evaluation state",
        )?;
        let state: EvalState = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an evaluation state file", path.display()))?;
        if state.protocol_hash != run.protocol_hash {
            anyhow::bail!(
                "{}: made for a different configuration, artifact or shard; remove it or drop --resume",
                path.display()
            );
        }
        tracing::info!(
            units = state.units.len(),
            "resuming evaluation from {}",
            path.display()
        );
        Ok(state)
    }

    fn save(&self, run: &EvalRun) -> Result<()> {
        match &run.state_path {
            Some(path) => write_atomic(path, serde_json::to_string(self)?.as_bytes()),
            None => Ok(()),
        }
    }
}

/// A defense under evaluation, with the bare classifier it wraps (whose
/// adversarials the classifier-only transfer attack scores on it).
pub struct EvalDefense<'a> {
    pub name: &'a str,
    pub defense: &'a Defense,
    /// Index into [`EvalInputs::classifiers`].
    pub classifier: usize,
}

/// What an evaluation runs on: bare classifiers and defenses, side by side.
/// Models must live on an autodiff `device` and be frozen.
pub struct EvalInputs<'a> {
    pub classifiers: &'a [(&'a str, &'a Classifier)],
    pub defenses: &'a [EvalDefense<'a>],
    pub test: &'a Dataset,
    pub indices: &'a [usize],
    pub cfg: &'a EvalConfig,
    pub seed: u64,
    pub device: &'a Device,
}

/// The units of work (model x attack x batch) already done, saved as each
/// finishes, so a killed evaluation resumes where it stopped.
struct Units<'r> {
    state: EvalState,
    run: &'r EvalRun,
    bar: Progress,
}

impl Units<'_> {
    /// The correct counts of unit `key`, computed unless the state has them.
    fn get(
        &mut self,
        key: String,
        compute: impl FnOnce() -> Result<Vec<usize>>,
    ) -> Result<Vec<usize>> {
        let counts = match self.state.units.get(&key) {
            Some(c) => c.clone(),
            None => {
                let c = compute()?;
                self.state.units.insert(key, c.clone());
                self.state.save(self.run)?;
                c
            }
        };
        self.bar.inc(1);
        Ok(counts)
    }
}

/// The batches of the subset, and those this run (or shard) owns.
struct Batches<'a> {
    inputs: &'a EvalInputs<'a>,
    all: Vec<&'a [usize]>,
    mine: Vec<usize>,
}

impl<'a> Batches<'a> {
    fn new(inputs: &'a EvalInputs<'a>, run: &EvalRun) -> Self {
        let all: Vec<&[usize]> = inputs.indices.chunks(inputs.cfg.batch_size).collect();
        let mine = (0..all.len())
            .filter(|&b| run.shard.is_none_or(|s| s.owns(b)))
            .collect();
        Self { inputs, all, mine }
    }

    fn get(&self, b: usize) -> (Tensor<4>, Vec<i64>) {
        self.inputs
            .test
            .batch(self.all[b], None, self.inputs.device)
    }

    /// Positions in the subset of the points this run covers.
    fn positions(&self) -> Vec<usize> {
        let size = self.inputs.cfg.batch_size;
        self.mine
            .iter()
            .flat_map(|&b| b * size..b * size + self.all[b].len())
            .collect()
    }
}

/// Evaluates the classifier and each named defense on the subset.
pub fn evaluate(inputs: &EvalInputs, run: &EvalRun) -> Result<EvalReport> {
    let (cfg, defenses) = (inputs.cfg, inputs.defenses);
    let batches = Batches::new(inputs, run);
    let models = inputs.classifiers.len() + defenses.len();
    let probes = match cfg.tuning_probe.points > 0 && batches.mine.first() == Some(&0) {
        true => defenses.len() * cfg.attacks.iter().filter(|a| probe::probed(a)).count(),
        false => 0,
    };
    let work = batches.mine.len() * (models * (1 + cfg.attacks.len()) + defenses.len()) + probes;
    let bar = Progress::new("eval", work, 0);
    let mut units = Units {
        state: EvalState::load(run)?,
        run,
        bar,
    };
    let mut rows = clean_rows(&batches, &mut units)?;
    for (a, attack) in cfg.attacks.iter().enumerate() {
        units.bar.set_message(format!(
            "{} eps {:.4} {}",
            attack_name(attack),
            attack.eps,
            attack.mode.name()
        ));
        rows.extend(attack_rows(&batches, a, attack, &mut units)?);
    }
    units.bar.set_message("under-tuning check");
    let tuning_probes = probe::tuning_probes(&batches, &rows, &mut units)?;
    units.bar.finish();
    let worst = worst_case_rows(&rows);
    rows.extend(worst);
    for r in &mut rows {
        r.protocol = cfg.protocol.clone();
    }

    // Gradient checks on batch 0 (so a merge of shards reports what one run would).
    let gradient_warnings = if batches.mine.first() == Some(&0) {
        let (x, y) = batches.get(0);
        sanity::gradient_warnings(
            inputs.classifiers,
            defenses,
            &cfg.attacks,
            x,
            &y,
            inputs.seed,
        )?
    } else {
        Vec::new()
    };
    let mut gradient_warnings = gradient_warnings;
    gradient_warnings.extend(tuning_probes.iter().filter_map(probe::ProbeRecord::warning));
    let mut warnings = gradient_warnings.clone();
    warnings.extend(sanity::row_warnings(&rows));
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok(EvalReport {
        subset_seed: cfg.subset_seed,
        indices: inputs.indices.to_vec(),
        positions: batches.positions(),
        shard: run.shard,
        rows,
        warnings,
        gradient_warnings,
        tuning_probes,
    })
}

/// Clean accuracy of each classifier and each defense, and of each
/// defense's transform alone.
fn clean_rows(batches: &Batches, units: &mut Units) -> Result<Vec<EvalRow>> {
    let i = batches.inputs;
    let draws = i.cfg.score_draws;
    let mut rows = Vec::new();
    for (name, classifier) in i.classifiers {
        let unit = format!("{name}|clean");
        let counts = clean_counts(batches, units, &ClassifierTarget(classifier), &unit, 0, 1)?;
        rows.push(row(name, RowKind::Classifier, None, 1, counts));
    }
    for d in i.defenses {
        let target = DefenseTarget::new(d.defense, GradientMode::Full);
        let unit = format!("{}|clean", d.name);
        let counts = clean_counts(batches, units, &target, &unit, stream::EVAL_CLEAN, draws)?;
        rows.push(row(d.name, RowKind::Defense, None, draws, counts));
        // The same clean images through the transform alone: how much of the
        // loss is the transform's and how much the purifier's.
        let target = TransformOnlyTarget(d.defense);
        let unit = format!("{}|transform-only", d.name);
        let counts = clean_counts(
            batches,
            units,
            &target,
            &unit,
            stream::EVAL_TRANSFORM_ONLY,
            draws,
        )?;
        let mut r = row(d.name, RowKind::Defense, None, draws, counts);
        r.attack = TRANSFORM_ONLY.into();
        rows.push(r);
    }
    Ok(rows)
}

/// Per point of this run's batches, in how many of `draws` draws `target`
/// classifies the clean image right; the units are "`unit`|b", each seeded
/// by `salt` and its batch b.
fn clean_counts(
    batches: &Batches,
    units: &mut Units,
    target: &dyn AttackTarget,
    unit: &str,
    salt: u64,
    draws: usize,
) -> Result<Vec<usize>> {
    let mut counts = Vec::new();
    for &b in &batches.mine {
        counts.extend(units.get(format!("{unit}|{b}"), || {
            let (x, y) = batches.get(b);
            let mut rng = seeded(mix(batches.inputs.seed ^ salt, b as u64));
            Ok(score_randomized(target, x, &y, draws, &mut rng)?.correct_counts)
        })?);
    }
    Ok(counts)
}

/// Attack `a` on each classifier, then on each defense in its gradient
/// mode (the transfer mode reuses its classifier's adversarials).
fn attack_rows(
    batches: &Batches,
    a: usize,
    attack: &EvalAttack,
    units: &mut Units,
) -> Result<Vec<EvalRow>> {
    let i = batches.inputs;
    let (cfg, seed) = (i.cfg, i.seed);
    // Classifier `c`'s adversarials, also the transfer attack's.
    let classifier_adv =
        |c: usize, b: usize| -> Result<(Tensor<4>, Vec<i64>, atop::rng::AtopRng)> {
            let (x, y) = batches.get(b);
            let mut rng = seeded(mix(seed ^ stream::EVAL_ATTACK ^ a as u64, b as u64));
            let target = ClassifierTarget(i.classifiers[c].1);
            let x_adv = run_attack(&target, x, &y, attack, &mut rng)?;
            Ok((x_adv, y, rng))
        };
    let mut transfer: HashMap<(usize, usize), Tensor<4>> = HashMap::new();
    let mut rows = Vec::new();
    for (c, (name, classifier)) in i.classifiers.iter().enumerate() {
        let target = ClassifierTarget(classifier);
        let mut counts = Vec::new();
        for &b in &batches.mine {
            counts.extend(units.get(format!("{name}|{a}|{b}"), || {
                let (x_adv, y, mut rng) = classifier_adv(c, b)?;
                transfer.insert((c, b), x_adv.clone());
                Ok(score_randomized(&target, x_adv, &y, 1, &mut rng)?.correct_counts)
            })?);
        }
        rows.push(row(name, RowKind::Classifier, Some(attack), 1, counts));
    }
    for d in i.defenses {
        let mut counts = Vec::new();
        for &b in &batches.mine {
            counts.extend(units.get(format!("{}|{a}|{b}", d.name), || {
                let (x, y) = batches.get(b);
                let mut rng = seeded(mix(seed ^ stream::EVAL_DEFENSE_SCORE ^ a as u64, b as u64));
                let x_adv = match attack.mode {
                    GradientMode::ClassifierOnly => match transfer.get(&(d.classifier, b)) {
                        Some(t) => t.clone(),
                        // Resumed past the classifier's unit: replay it.
                        None => classifier_adv(d.classifier, b)?.0,
                    },
                    mode => {
                        let mut target = DefenseTarget::new(d.defense, mode);
                        if mode == GradientMode::FixedRandomness {
                            target.freeze_draw(&mut rng, x.dims())?;
                        }
                        run_attack(&target, x, &y, attack, &mut rng)?
                    }
                };
                let scorer = DefenseTarget::new(d.defense, GradientMode::Full);
                Ok(score_randomized(&scorer, x_adv, &y, cfg.score_draws, &mut rng)?.correct_counts)
            })?);
        }
        rows.push(row(
            d.name,
            RowKind::Defense,
            Some(attack),
            cfg.score_draws,
            counts,
        ));
    }
    Ok(rows)
}
