//! `atop`: trains classifiers, pre-trains purifiers, runs AToP fine-tuning
//! and robust evaluation, and inspects artifacts.

mod bench;
mod checkpoint;
mod config;
mod data;
mod demo_command;
mod eval;
mod eval_command;
mod fsutil;
mod metrics;
mod pipeline;
mod plot;
mod report;
mod runner;
mod stages;
mod stdout;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use atop::artifact::sha256_hex;
use burn::tensor::Device;
use clap::{Args, Parser, Subcommand};

use crate::config::RunConfig;

#[derive(Parser)]
#[command(
    name = "atop",
    version,
    about = "AToP: adversarial training on purification"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Run configuration (TOML, see configs/).
    #[arg(long, default_value = "configs/fmnist.toml")]
    config: PathBuf,
    /// Override a configuration value, e.g. `--set finetune.lambda=0.1` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Output directory (artifacts, checkpoints, metrics, reports).
    #[arg(long)]
    out: PathBuf,
    /// Continue from the checkpoints in --out.
    #[arg(long)]
    resume: bool,
    /// Compute device: `flex` (pure-Rust CPU, default); with the `tch`
    /// feature also `cpu` (LibTorch) and `cuda:N`.
    #[arg(long, default_value = "flex")]
    device: String,
}

#[derive(Subcommand)]
enum Command {
    /// Train the classifier normally.
    TrainClassifier(RunArgs),
    /// Pre-train the purifier (GAN or AE) to rebuild images from t(x).
    Pretrain(RunArgs),
    /// AToP fine-tuning of a pre-trained purifier against a frozen classifier.
    Finetune {
        #[command(flatten)]
        run: RunArgs,
        /// Artifact holding the classifier.
        #[arg(long)]
        classifier: PathBuf,
        /// Artifact holding the pre-trained purifier.
        #[arg(long)]
        purifier: PathBuf,
    },
    /// Robust evaluation of an artifact's classifier and defense
    /// (`atop eval merge --out D SHARD...` combines `--shard` runs).
    Eval {
        #[command(flatten)]
        run: RunArgs,
        /// Artifact with classifier and purifier.
        #[arg(long)]
        artifact: PathBuf,
        /// Another purifier artifact to evaluate side by side (e.g. before fine-tuning).
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Evaluation protocol: a TOML file with the keys of a config's [eval] table.
        #[arg(long)]
        protocol: Option<PathBuf>,
        /// Evaluate only the batches b with b % n == i (e.g. `--shard 0/4`).
        #[arg(long, value_name = "I/N")]
        shard: Option<eval::Shard>,
        /// Use the run configuration's [transform] and data.purify_size
        /// instead of the artifacts' (an ablation; the report says so).
        #[arg(long)]
        override_transform: bool,
    },
    /// Combine the report.json files of `atop eval --shard i/n` runs
    /// (invoked as `atop eval merge`).
    #[command(name = "eval-merge", hide = true)]
    EvalMerge {
        /// Output directory for the merged report.
        #[arg(long)]
        out: PathBuf,
        /// The shards' report.json files or output directories.
        reports: Vec<PathBuf>,
    },
    /// Every stage on Fashion-MNIST with small models, then the report.
    Quickstart(RunArgs),
    /// Median time of one training step per stage and of one PGD step.
    Bench {
        #[arg(long, default_value = "configs/fmnist.toml")]
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        #[arg(long, default_value = "flex")]
        device: String,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 10)]
        repeats: usize,
        /// Only the benchmarks whose name contains this word.
        #[arg(long)]
        only: Option<String>,
        /// Also write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Verify an artifact (format version, payload hash, defense identity,
    /// configurations against tensors) and print its manifest.
    Inspect {
        artifact: PathBuf,
        /// Print the manifest as JSON only.
        #[arg(long)]
        json: bool,
    },
    /// Redraw the PNG plots of an output directory from its metrics.jsonl and report.json.
    Plot { dir: PathBuf },
    /// Replay a browser-demo permalink: the same attack on the same image,
    /// printing the logits the demo shows (JSON).
    Attack {
        /// The artifact the link names (by its payload SHA-256).
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
    },
    /// Bundle test images into an artifact for the browser demo.
    ExportWeb {
        /// Configuration naming the dataset (its test split gives the images).
        #[arg(long, default_value = "configs/fmnist.toml")]
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Artifact with classifier, purifier and transform.
        #[arg(long)]
        artifact: PathBuf,
        /// Number of test images, classes taken in turn.
        #[arg(long, default_value_t = 40)]
        samples: usize,
        /// Store the weights as f16 (half the download; a new artifact with
        /// its own hash, computing with the rounded weights).
        #[arg(long)]
        half: bool,
        /// Output artifact.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    // `atop eval merge ...` is the hidden `eval-merge` subcommand.
    let mut args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("eval")
        && args.get(2).map(String::as_str) == Some("merge")
    {
        args.splice(1..3, ["eval-merge".to_string()]);
    }
    let result = match Cli::parse_from(args).command {
        Command::Inspect { artifact, json } => inspect(&artifact, json),
        Command::Plot { dir } => redraw_plots(&dir),
        Command::Attack {
            artifact,
            link,
            device,
            json,
        } => select_device(&device)
            .and_then(|dev| demo_command::attack(&artifact, &link, &dev))
            .and_then(|report| demo_command::emit(&report, json.as_deref())),
        Command::ExportWeb {
            config,
            overrides,
            artifact,
            samples,
            half,
            out,
        } => RunConfig::load(&config, &overrides)
            .and_then(|cfg| demo_command::export_web(&cfg, &artifact, samples, half, &out)),
        Command::TrainClassifier(run) => with_run(&run, |cfg, dev| {
            let data = pipeline::load_data(cfg)?;
            pipeline::train_classifier(cfg, &data, dev, &run.out, run.resume)?;
            draw_plots(&run.out, None)
        }),
        Command::Pretrain(run) => with_run(&run, |cfg, dev| {
            let data = pipeline::load_data(cfg)?;
            pipeline::pretrain(cfg, &data, dev, &run.out, run.resume)?;
            draw_plots(&run.out, None)
        }),
        Command::Finetune {
            run,
            classifier,
            purifier,
        } => with_run(&run, |cfg, dev| {
            let data = pipeline::load_data(cfg)?;
            let c = pipeline::read_artifact(&classifier)?;
            let p = pipeline::read_artifact(&purifier)?;
            let (c_name, p_name) = (
                classifier.display().to_string(),
                purifier.display().to_string(),
            );
            let inputs = pipeline::FinetuneInputs {
                id: format!(
                    "{} {}",
                    c.manifest.defense_sha256, p.manifest.defense_sha256
                ),
                classifier: c.classifier(dev, &c_name)?,
                classifier_config: c.manifest.classifier.clone().context("no classifier")?,
                purifier: p.purifier(dev, &p_name)?,
                purifier_config: p.manifest.purifier.clone().context("no purifier")?,
            };
            pipeline::finetune(cfg, &data, inputs, dev, &run.out, run.resume)?;
            draw_plots(&run.out, None)
        }),
        Command::Eval {
            run,
            artifact,
            baseline,
            protocol,
            shard,
            override_transform,
        } => with_run(&run, |cfg, dev| {
            let request = eval_command::EvalRequest {
                out: &run.out,
                resume: run.resume,
                artifact: &artifact,
                baseline: baseline.as_deref(),
                protocol: protocol.as_deref(),
                shard,
                command_line: &command_line,
                override_transform,
                overrides: &run.overrides,
            };
            let report = eval_command::eval_command(cfg, dev, &request)?;
            draw_plots(&run.out, Some((&report, "atop eval")))
        }),
        Command::EvalMerge { out, reports } => {
            eval_command::merge_command(&out, &reports, &command_line)
                .and_then(|report| draw_plots(&out, Some((&report, "atop eval (merged)"))))
        }
        Command::Bench {
            config,
            overrides,
            device,
            batch,
            repeats,
            only,
            json,
        } => (|| {
            let cfg = RunConfig::load(&config, &overrides)?;
            if repeats > 10_000 || batch == 0 || batch > config::limits::BATCH {
                bail!(
                    "--repeats {repeats} --batch {batch}: repeats must be at most 10000 and batch 1 to {}",
                    config::limits::BATCH
                );
            }
            let rows = bench::run(
                &cfg,
                &select_device(&device)?,
                batch,
                repeats.max(1),
                only.as_deref(),
            )?;
            if let Some(path) = json {
                fsutil::write_atomic(&path, serde_json::to_string_pretty(&rows)?.as_bytes())?;
            }
            Ok(())
        })(),
        Command::Quickstart(run) => {
            with_run(&run, |cfg, dev| quickstart(cfg, dev, &run, &command_line))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if stdout::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn with_run(run: &RunArgs, f: impl FnOnce(&RunConfig, &Device) -> Result<()>) -> Result<()> {
    let cfg = RunConfig::load(&run.config, &run.overrides)?;
    let device = select_device(&run.device)?;
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let _lock = fsutil::OutputLock::acquire(&run.out, &command_line)?;
    f(&cfg, &device)
}

// burn marks its LibTorch backend deprecated but it works in 0.22.1; it is
// the CUDA path of this trainer until a CubeCL backend replaces it.
#[cfg_attr(feature = "tch", allow(deprecated))]
fn select_device(name: &str) -> Result<Device> {
    match name {
        "flex" => Ok(Device::flex()),
        #[cfg(feature = "tch")]
        "cpu" => Ok(Device::libtorch()),
        #[cfg(feature = "tch")]
        cuda if cuda.starts_with("cuda:") => {
            let index: usize = cuda[5..]
                .parse()
                .with_context(|| format!("--device {cuda}: bad GPU index"))?;
            Ok(Device::libtorch_cuda(index))
        }
        #[cfg(not(feature = "tch"))]
        "cpu" | "cuda" => bail!(
            "--device {name} needs LibTorch: build with `--features tch` (scripts/setup-libtorch.sh)"
        ),
        #[cfg(not(feature = "tch"))]
        other if other.starts_with("cuda:") => {
            bail!(
                "--device {other} needs LibTorch: build with `--features tch` (scripts/setup-libtorch.sh)"
            )
        }
        other => bail!("--device {other}: expected flex, cpu or cuda:N"),
    }
}

fn quickstart(cfg: &RunConfig, device: &Device, run: &RunArgs, command_line: &str) -> Result<()> {
    let start = Instant::now();
    let out = &run.out;
    let data = pipeline::load_data(cfg)?;
    let classifier = pipeline::train_classifier(cfg, &data, device, out, run.resume)?;
    let pretrained = pipeline::pretrain(cfg, &data, device, out, run.resume)?;
    let inputs = pipeline::FinetuneInputs {
        classifier: classifier.model.clone(),
        classifier_config: cfg.classifier.clone(),
        purifier: pretrained.model.clone(),
        purifier_config: cfg.purifier.clone(),
        id: "quickstart".into(),
    };
    let finetuned = pipeline::finetune(cfg, &data, inputs, device, out, run.resume)?;
    // The quickstart's artifact is the fine-tuned one, under its public name.
    let final_path = out.join("fmnist-atop.safetensors");
    std::fs::copy(&finetuned.artifact_path, &final_path)
        .with_context(|| format!("cannot write {}", final_path.display()))?;
    let sha = |p: &Path| -> Result<(String, String)> {
        Ok((p.display().to_string(), sha256_hex(&std::fs::read(p)?)))
    };
    let artifacts = vec![
        sha(&classifier.artifact_path)?,
        sha(&pretrained.artifact_path)?,
        sha(&final_path)?,
    ];
    let defense = |name: &str, purifier, path: &Path| pipeline::DefenseInput {
        name: name.into(),
        purifier,
        transform: cfg.transform.clone(),
        purify_size: cfg.data.purify_size,
        source: format!("the run configuration, as trained into {}", path.display()),
    };
    let inputs = [
        defense(
            "RT+purifier (pre-trained)",
            &pretrained.model,
            &pretrained.artifact_path,
        ),
        defense("RT+purifier (AToP)", &finetuned.model, &final_path),
    ];
    let defenses = report::records(&inputs);
    let eval = pipeline::run_eval(
        cfg,
        &data,
        &classifier.model,
        &inputs,
        device,
        &eval::EvalRun {
            state_path: Some(eval_command::state_path(out, None)),
            protocol_hash: eval_command::protocol_hash(cfg, &artifacts, &defenses, None),
            resume: run.resume,
            shard: None,
        },
    )?;
    let md = report::write(
        out,
        &report::Report {
            title: "atop quickstart: Fashion-MNIST".into(),
            artifacts,
            defenses,
            dataset: data.test.name.clone(),
            command: command_line.into(),
            elapsed_seconds: start.elapsed().as_secs_f64(),
            eval: &eval,
            training: Some(serde_json::json!({
                "classifier_validation_accuracy": classifier.validation,
                "pretrain_validation_score": pretrained.validation,
                "finetune_validation_robust_accuracy": finetuned.validation,
            })),
        },
    )?;
    let _ = std::fs::remove_file(eval_command::state_path(out, None));
    stdout::print(&md)?;
    draw_plots(out, Some((&eval, "atop quickstart: Fashion-MNIST")))
}

/// Draws the training curves found in `dir` (and the results chart when
/// given), and names each file written.
fn draw_plots(dir: &Path, results: Option<(&eval::EvalReport, &str)>) -> Result<()> {
    let mut written = plot::training_curves(dir)?;
    if let Some((report, title)) = results {
        let path = dir.join("results.png");
        plot::results(report, &path, title)?;
        written.push(path);
    }
    for path in &written {
        tracing::info!("plot written: {}", path.display());
    }
    Ok(())
}

/// `atop plot DIR`: the plots again, from what a run left in DIR.
fn redraw_plots(dir: &Path) -> Result<()> {
    let report_path = dir.join("report.json");
    let results = if report_path.exists() {
        let stored = report::read(&report_path)?;
        Some((stored.eval, stored.title))
    } else {
        None
    };
    if results.is_none() && !dir.join("metrics.jsonl").exists() {
        bail!(
            "{}: nothing to plot (no metrics.jsonl or report.json)",
            dir.display()
        );
    }
    draw_plots(dir, results.as_ref().map(|(e, t)| (e, t.as_str())))
}

fn inspect(path: &Path, json: bool) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path.display().to_string();
    let artifact = atop::artifact::Artifact::from_bytes(&bytes, &name)?;
    artifact.check_models(&Device::flex(), &name)?;
    let manifest = &artifact.manifest;
    let text = serde_json::to_string_pretty(manifest)?;
    if json {
        return stdout::print(&text);
    }
    stdout::print(&format!(
        "artifact        {}\n\
         file sha256     {}\n\
         payload sha256  {} (verified)\n\
         defense sha256  {} (verified: weights, model configurations, transform)\n\
         format version  {}\n\
         written by      atop {}\n\
         tensors         {}\n\
         manifest:\n{text}",
        path.display(),
        sha256_hex(&bytes),
        manifest.payload_sha256,
        manifest.defense_sha256,
        manifest.format_version,
        manifest.code_version,
        artifact.tensors.len()
    ))
}
