//! The command line: every subcommand and its arguments (clap).

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::eval::Shard;

#[derive(Parser)]
#[command(
    name = "atop",
    version,
    about = "AToP: adversarial training on purification"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct RunArgs {
    /// Run configuration (TOML, see configs/).
    #[arg(long, default_value = "configs/fmnist.toml")]
    pub config: PathBuf,
    /// Override a configuration value, e.g. `--set finetune.lambda=0.1` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Output directory (artifacts, checkpoints, metrics, reports).
    // An Option only so that `atop eval merge` can leave it out; clap
    // requires it everywhere else.
    #[arg(long, required = true)]
    out: Option<PathBuf>,
    /// Continue from the checkpoints in --out.
    #[arg(long)]
    pub resume: bool,
    /// Compute device: `flex` (pure-Rust CPU, default); with the `tch`
    /// feature also `cpu` (LibTorch) and `cuda:N`.
    #[arg(long, default_value = "flex")]
    pub device: String,
}

impl RunArgs {
    pub fn out(&self) -> &Path {
        self.out.as_deref().unwrap_or(Path::new("."))
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Train the classifier normally.
    TrainClassifier(RunArgs),
    /// Pre-train the purifier (GAN or AE) to rebuild images from t(x).
    Pretrain(RunArgs),
    /// AToP fine-tuning of a pre-trained purifier against a frozen classifier.
    Finetune(FinetuneArgs),
    /// Robust evaluation of an artifact's classifier and defense
    /// (`atop eval merge --out D SHARD...` combines `--shard` runs).
    Eval(EvalCommand),
    /// Fashion-MNIST with small models: train the classifier, AToP-fine-tune
    /// the shipped pre-trained purifier against it, evaluate, report.
    Quickstart(QuickstartArgs),
    /// Median time of one training step per stage and of one PGD step.
    Bench(BenchArgs),
    /// Verify an artifact (format version, payload hash, defense identity,
    /// configurations against tensors) and print its manifest.
    Inspect {
        artifact: PathBuf,
        /// Print the manifest as JSON only.
        #[arg(long)]
        json: bool,
    },
    /// Rewrite an artifact of an older format (1) as the current one: the
    /// payload is verified and its defense identity computed and recorded.
    Upgrade {
        artifact: PathBuf,
        /// Output artifact.
        #[arg(long)]
        out: PathBuf,
    },
    /// Redraw the PNG plots of an output directory from its metrics.jsonl and report.json.
    Plot { dir: PathBuf },
    /// Replay a browser-demo permalink: the same attack on the same image,
    /// printing the logits the demo shows (JSON).
    Attack {
        /// The artifact the link names (by its defense SHA-256).
        #[arg(long)]
        artifact: PathBuf,
        /// The permalink, or just its query string (`v=2&artifact=...`).
        #[arg(long)]
        link: String,
        #[arg(long, default_value = "flex")]
        device: String,
        /// Write the JSON here instead of printing it.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Score this adversarial image instead of running the link's
        /// attack: a JSON array of the image's c*h*w values in [0,1] (the
        /// `adversarial` field of an earlier report, or the page's
        /// `data-adversarial`). Separates how the defense scores an image
        /// from how the attack reached it.
        #[arg(long, value_name = "FILE")]
        adversarial: Option<PathBuf>,
    },
    /// Bundle test images into an artifact for the browser demo.
    ExportWeb(ExportWebArgs),
    /// PyTorch weights (.safetensors, or a .pt/.pth state dict read without
    /// executing pickle code) into a classifier artifact of the
    /// configuration's architecture and normalization
    /// (`D/classifier.safetensors`), or with `--model purifier` into a
    /// purifier artifact (`D/purifier.safetensors`, e.g. a DeepFillv2
    /// generator's weights).
    Import(ImportArgs),
    /// Rerun the stage that made an artifact (its recorded configuration,
    /// seeds, data and inputs) and compare the new weights with it.
    Reproduce(ReproduceArgs),
}

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The PyTorch weights: a state dict in a .safetensors or .pt/.pth file.
    pub weights: PathBuf,
    /// Remove this prefix from every key (`module.` is removed when every
    /// key has it).
    #[arg(long)]
    pub strip_prefix: Option<String>,
    /// What the weights are: the configuration's `classifier` or its `purifier`.
    #[arg(long, value_enum, default_value = "classifier")]
    pub model: ImportedModel,
    /// The entry of a .pt checkpoint that holds the state dict (DeepFillv2's
    /// checkpoints keep the generator under `G`); by default `state_dict`
    /// when there is one, else the whole file.
    #[arg(long, value_name = "KEY")]
    pub state_dict_key: Option<String>,
}

/// Which model `atop import` fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportedModel {
    Classifier,
    Purifier,
}

#[derive(Args)]
pub struct ReproduceArgs {
    /// The artifact to reproduce.
    pub artifact: PathBuf,
    /// Output directory for the rerun (its artifact, checkpoints, reproduce.md).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue an interrupted rerun from its checkpoints.
    #[arg(long)]
    pub resume: bool,
    /// Compute device, as for the other commands.
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// The classifier input of a fine-tuned artifact, where it is no longer
    /// at the path its manifest records (checked against the recorded identity).
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// The purifier input, likewise.
    #[arg(long)]
    pub purifier: Option<PathBuf>,
}

#[derive(Args)]
pub struct QuickstartArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The pre-trained purifier that fine-tuning starts from (made by
    /// `atop pretrain --config configs/fmnist-pretrain.toml`; the GAN's
    /// is models/fmnist-gan-purifier.safetensors).
    #[arg(long, default_value = "models/fmnist-ae-purifier.safetensors")]
    pub purifier: PathBuf,
    /// Pre-train the purifier from scratch with the run configuration
    /// instead of starting from --purifier.
    #[arg(long, conflicts_with = "purifier")]
    pub pretrain: bool,
}

#[derive(Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Artifact holding the classifier.
    #[arg(long)]
    pub classifier: PathBuf,
    /// Artifact holding the pre-trained purifier.
    #[arg(long)]
    pub purifier: PathBuf,
}

/// `atop eval [ARGS]`, or `atop eval merge ...`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct EvalCommand {
    #[command(subcommand)]
    pub merge: Option<EvalSubcommand>,
    #[command(flatten)]
    pub args: EvalArgs,
}

#[derive(Subcommand)]
pub enum EvalSubcommand {
    /// Combine the report.json files of `atop eval --shard i/n` runs.
    Merge {
        /// Output directory for the merged report.
        #[arg(long)]
        out: PathBuf,
        /// The shards' report.json files or output directories.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
    },
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// An artifact to evaluate; repeat to evaluate several side by side
    /// (bare classifiers, AT classifiers, defenses). A purifier-only
    /// artifact goes in front of the first classifier given.
    #[arg(long = "artifact", required = true)]
    artifact: Vec<PathBuf>,
    /// Another artifact, evaluated before the --artifact ones (the same as
    /// giving it as the first --artifact; kept for older commands).
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Evaluation protocol: a TOML file with the keys of a config's [eval] table.
    #[arg(long)]
    pub protocol: Option<PathBuf>,
    /// Evaluate only the batches b with b % n == i (e.g. `--shard 0/4`).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Use the run configuration's [transform] and data.purify_size
    /// instead of the artifacts' (an ablation; the report says so).
    #[arg(long)]
    pub override_transform: bool,
}

impl EvalArgs {
    /// The artifacts in evaluation order: the baseline first, if any.
    pub fn artifacts(&self) -> Vec<PathBuf> {
        self.baseline
            .iter()
            .chain(&self.artifact)
            .cloned()
            .collect()
    }
}

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, default_value = "configs/fmnist.toml")]
    pub config: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    #[arg(long, default_value = "flex")]
    pub device: String,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    /// Only the benchmarks whose name contains this word: at the
    /// quickstart's scale a group (classifier, pretrain, forward, finetune,
    /// pgd, attack), at the CIFAR scale a row's name; one that selects
    /// nothing is refused.
    #[arg(long)]
    pub only: Option<String>,
    /// `fmnist`: the configuration's models at their size (the default).
    /// `cifar`: the paper's scale instead (no configuration is read):
    /// WRN-28-10 and ResNet-18 training steps at 32x32, and the cnum-48
    /// inpainter's forward+backward at 256x256.
    #[arg(long, value_enum, default_value = "fmnist")]
    pub scale: crate::bench::Scale,
    /// Also write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args)]
pub struct ExportWebArgs {
    /// Configuration naming the dataset (its test split gives the images).
    #[arg(long, default_value = "configs/fmnist.toml")]
    pub config: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Artifact with classifier, purifier and transform.
    #[arg(long)]
    pub artifact: PathBuf,
    /// Number of test images, classes taken in turn.
    #[arg(long, default_value_t = 40)]
    pub samples: usize,
    /// Store the weights as f16 (half the download; a new artifact with
    /// its own hash, computing with the rounded weights).
    #[arg(long)]
    pub half: bool,
    /// Output artifact.
    #[arg(long)]
    pub out: PathBuf,
}
