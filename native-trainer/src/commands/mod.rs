//! One module per subcommand; [`run`] is the dispatch `main` calls.

pub mod demo;
pub mod eval;
mod import;
mod quickstart;
mod reproduce;
mod train;

use std::path::Path;

use anyhow::{Result, bail};
use atop::artifact::sha256_hex;
use burn::tensor::Device;

use crate::cli::{BenchArgs, Command, EvalCommand, EvalSubcommand, RunArgs};
use crate::config::RunConfig;
use crate::{bench, fsutil, plot, stdout};

/// Runs the parsed command line.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::TrainClassifier(run) => train::train_classifier(&run),
        Command::Pretrain(run) => train::pretrain(&run),
        Command::Finetune(args) => train::finetune(&args),
        Command::Eval(EvalCommand {
            merge: Some(EvalSubcommand::Merge { out, reports }),
            ..
        }) => eval::merge(&out, &reports),
        Command::Eval(EvalCommand { args, .. }) => eval::run(&args),
        Command::Quickstart(args) => quickstart::run(&args),
        Command::Bench(args) => bench(&args),
        Command::Inspect { artifact, json } => inspect(&artifact, json),
        Command::Plot { dir } => redraw_plots(&dir),
        Command::Upgrade { artifact, out } => upgrade(&artifact, &out),
        Command::Attack {
            artifact,
            link,
            device,
            json,
            adversarial,
        } => demo::attack_command(
            &artifact,
            &link,
            adversarial.as_deref(),
            &select_device(&device)?,
            json.as_deref(),
        ),
        Command::ExportWeb(args) => demo::export_web_command(&args),
        Command::Reproduce(args) => reproduce::run(&args),
        Command::Import(args) => import::run(&args),
    }
}

/// The command line as typed, for reports and the lock file.
pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// Loads the configuration, picks the device and holds the output
/// directory's lock while `f` runs.
pub fn with_run(run: &RunArgs, f: impl FnOnce(&RunConfig, &Device) -> Result<()>) -> Result<()> {
    let cfg = RunConfig::load(&run.config, &run.overrides)?;
    let device = select_device(&run.device)?;
    set_cpu_eot_passes(&run.device);
    let _lock = fsutil::OutputLock::acquire(run.out(), &command_line())?;
    f(&cfg, &device)
}

/// On CPUs (flex, LibTorch CPU) EOT's draws run one per pass: a repeated
/// batch of all the draws was 1.0-1.7x slower there, its activations
/// spilling out of the caches (docs/results/performance-profile.md). GPUs
/// keep the repeated batch up to the library's memory bound. A
/// configuration's `eval.eot_chunk_values` overrides either.
fn set_cpu_eot_passes(device_name: &str) {
    if matches!(device_name, "flex" | "cpu") {
        atop::attack::set_eot_chunk_values(atop::attack::ONE_DRAW_PER_PASS);
    }
}

// burn marks its LibTorch backend deprecated but it works in 0.22.1; it is
// the CUDA path of this trainer until a CubeCL backend replaces it.
#[cfg_attr(feature = "tch", allow(deprecated))]
pub fn select_device(name: &str) -> Result<Device> {
    match name {
        "flex" => Ok(Device::flex()),
        #[cfg(feature = "tch")]
        "cpu" => Ok(Device::libtorch()),
        #[cfg(feature = "tch")]
        cuda if cuda.starts_with("cuda:") => {
            let index: usize = cuda[5..]
                .parse()
                .map_err(|e| anyhow::anyhow!("--device {cuda}: bad GPU index: {e}"))?;
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

fn bench(args: &BenchArgs) -> Result<()> {
    let (batch, repeats) = (args.batch, args.repeats.max(1));
    if repeats > 10_000 || batch == 0 || batch > crate::config::limits::BATCH {
        bail!(
            "--repeats {repeats} --batch {batch}: repeats must be at most 10000 and batch 1 to {}",
            crate::config::limits::BATCH
        );
    }
    let device = select_device(&args.device)?;
    set_cpu_eot_passes(&args.device);
    let only = args.only.as_deref();
    let rows = match args.scale {
        bench::Scale::Fmnist => {
            let cfg = RunConfig::load(&args.config, &args.overrides)?;
            bench::run(&cfg, &device, batch, repeats, only)?
        }
        // The CIFAR-scale models are fixed; no configuration is read.
        bench::Scale::Cifar => bench::run_cifar_scale(&device, batch, repeats, only)?,
    };
    if let Some(path) = &args.json {
        fsutil::write_atomic(path, serde_json::to_string_pretty(&rows)?.as_bytes())?;
    }
    Ok(())
}

/// Draws the training curves found in `dir` (and the results chart when
/// given), and names each file written.
pub fn draw_plots(dir: &Path, results: Option<(&crate::eval::EvalReport, &str)>) -> Result<()> {
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
        let stored = crate::eval::report::read(&report_path)?;
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
    let bytes = crate::fsutil::read_artifact_bytes(path)?;
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

/// `atop upgrade IN --out OUT`.
fn upgrade(path: &Path, out: &Path) -> Result<()> {
    let bytes = crate::fsutil::read_artifact_bytes(path)?;
    let artifact = atop::artifact::Artifact::upgrade(&bytes, &path.display().to_string())?;
    crate::fsutil::write_artifact(out, &artifact)?;
    stdout::print(&format!(
        "{}: format {}, defense sha256 {}",
        out.display(),
        artifact.manifest.format_version,
        artifact.manifest.defense_sha256
    ))
}

#[cfg(test)]
mod tests {
    use super::set_cpu_eot_passes;
    use atop::attack::{DEFAULT_EOT_CHUNK_VALUES, ONE_DRAW_PER_PASS, eot_chunk_values};

    #[test]
    fn cpu_devices_run_one_eot_draw_per_pass_and_gpus_the_repeated_batch() {
        // The bound is per thread: each case on a fresh one.
        let after = |name: &'static str| {
            std::thread::spawn(move || {
                set_cpu_eot_passes(name);
                eot_chunk_values()
            })
            .join()
            .unwrap()
        };
        assert_eq!(after("flex"), ONE_DRAW_PER_PASS);
        assert_eq!(after("cpu"), ONE_DRAW_PER_PASS);
        assert_eq!(after("cuda:0"), DEFAULT_EOT_CHUNK_VALUES);
    }
}
