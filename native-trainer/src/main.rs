//! `atop`: the native trainer and evaluator of atop-rs.
//!
//! This first version only reads artifacts (`atop inspect`); training,
//! fine-tuning and evaluation land with the trainer and evaluation issues.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use atop::artifact::{Artifact, sha256_hex};
use clap::{Parser, Subcommand};

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

#[derive(Subcommand)]
enum Command {
    /// Verify an artifact (format version, payload hash) and print its manifest.
    Inspect {
        /// The `.safetensors` artifact.
        artifact: PathBuf,
        /// Print the manifest as JSON only.
        #[arg(long)]
        json: bool,
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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { artifact, json } => inspect(&artifact, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn inspect(path: &Path, json: bool) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let artifact = Artifact::from_bytes(&bytes, &path.display().to_string())?;
    let manifest = &artifact.manifest;
    let text = serde_json::to_string_pretty(manifest)?;
    if json {
        println!("{text}");
        return Ok(());
    }
    println!("artifact        {}", path.display());
    println!("file sha256     {}", sha256_hex(&bytes));
    println!("payload sha256  {} (verified)", manifest.payload_sha256);
    println!("format version  {}", manifest.format_version);
    println!("written by      atop {}", manifest.code_version);
    println!("tensors         {}", artifact.tensors.len());
    println!("manifest:\n{text}");
    Ok(())
}
