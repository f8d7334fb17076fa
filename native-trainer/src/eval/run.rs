//! An evaluation as the commands run it: the frozen classifier and the
//! defenses built from their artifacts' purifiers and transforms.

use anyhow::Result;
use atop::defense::Defense;
use atop::model::{Classifier, Purifier};
use atop::rng::stream;
use atop::transform::TransformConfig;
use burn::module::Module;
use burn::tensor::Device;

use super::{EvalInputs, EvalReport, EvalRun, evaluate, subset_indices};
use crate::config::RunConfig;
use crate::train::pipeline::RunData;

/// A defense to evaluate: the purifier with the transform and purify size
/// it goes with (its artifact's, or an explicit override).
pub struct DefenseInput<'a> {
    pub name: String,
    pub purifier: &'a Purifier,
    pub transform: TransformConfig,
    pub purify_size: usize,
    /// Where transform and purify size come from, as the report says it.
    pub source: String,
}

/// Evaluates the classifier and the given defenses.
pub fn run_eval(
    cfg: &RunConfig,
    data: &RunData,
    classifier: &Classifier,
    inputs: &[DefenseInput],
    device: &Device,
    run: &EvalRun,
) -> Result<EvalReport> {
    let ad = device.clone().autodiff();
    let classifier = classifier.clone().fork(&ad).freeze();
    let defenses: Vec<(String, Defense)> = inputs
        .iter()
        .map(|d| {
            let purifier = d.purifier.clone().fork(&ad).freeze();
            let defense = Defense::new(d.transform.clone(), purifier, classifier.clone())
                .with_purify_size(d.purify_size);
            (d.name.clone(), defense)
        })
        .collect();
    let refs: Vec<(&str, &Defense)> = defenses.iter().map(|(n, d)| (n.as_str(), d)).collect();
    let indices = subset_indices(data.test.len(), cfg.eval.subset, cfg.eval.subset_seed);
    let inputs = EvalInputs {
        classifier: &classifier,
        defenses: &refs,
        test: &data.test,
        indices: &indices,
        cfg: &cfg.eval,
        seed: cfg.run.seed ^ stream::EVALUATION,
        device: &ad,
    };
    evaluate(&inputs, run)
}
