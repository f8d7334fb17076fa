//! An evaluation as the commands run it: the frozen bare classifiers and
//! the defenses built from their artifacts' purifiers and transforms.

use anyhow::{Context, Result};
use atop::defense::Defense;
use atop::model::{Classifier, Purifier};
use atop::rng::stream;
use atop::transform::TransformConfig;
use burn::module::Module;
use burn::tensor::Device;

use super::{EvalDefense, EvalInputs, EvalReport, EvalRun, evaluate, subset_indices};
use crate::config::{EvalSplit, RunConfig};
use crate::train::pipeline::RunData;

/// A defense to evaluate: the purifier with the transform and purify size
/// it goes with (its artifact's, or an explicit override).
pub struct DefenseInput<'a> {
    pub name: String,
    pub purifier: &'a Purifier,
    /// Index of the classifier (in the evaluation's list) the purifier protects.
    pub classifier: usize,
    pub transform: TransformConfig,
    pub purify_size: usize,
    /// Where transform and purify size come from, as the report says it.
    pub source: String,
}

/// Evaluates the named bare classifiers and the given defenses.
pub fn run_eval(
    cfg: &RunConfig,
    data: &RunData,
    classifiers: &[(String, &Classifier)],
    inputs: &[DefenseInput],
    device: &Device,
    run: &EvalRun,
) -> Result<EvalReport> {
    let ad = device.clone().autodiff();
    let frozen: Vec<Classifier> = classifiers
        .iter()
        .map(|(_, c)| (*c).clone().fork(&ad).freeze())
        .collect();
    let mut defenses = Vec::new();
    for d in inputs {
        let classifier = frozen.get(d.classifier).with_context(|| {
            format!("defense {}: no classifier number {}", d.name, d.classifier)
        })?;
        let purifier = d.purifier.clone().fork(&ad).freeze();
        let defense = Defense::new(d.transform.clone(), purifier, classifier.clone())
            .with_purify_size(d.purify_size);
        defenses.push(defense);
    }
    let named: Vec<(&str, &Classifier)> = classifiers
        .iter()
        .zip(&frozen)
        .map(|((n, _), c)| (n.as_str(), c))
        .collect();
    let refs: Vec<EvalDefense> = inputs
        .iter()
        .zip(&defenses)
        .map(|(d, defense)| EvalDefense {
            name: &d.name,
            defense,
            classifier: d.classifier,
        })
        .collect();
    let points = match cfg.eval.split {
        EvalSplit::Test => &data.test,
        EvalSplit::Validation => &data.val,
    };
    let indices = subset_indices(points.len(), cfg.eval.subset, cfg.eval.subset_seed);
    let inputs = EvalInputs {
        classifiers: &named,
        defenses: &refs,
        test: points,
        indices: &indices,
        cfg: &cfg.eval,
        seed: cfg.run.seed ^ stream::EVALUATION,
        device: &ad,
    };
    evaluate(&inputs, run)
}
