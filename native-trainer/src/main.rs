//! `atop`: trains classifiers, pre-trains purifiers, runs AToP fine-tuning
//! and robust evaluation, and inspects artifacts. `main` parses the command
//! line and hands it to [`commands::run`]; each subcommand is a module of
//! `commands/`.

mod bench;
mod cli;
mod commands;
mod config;
mod data;
mod eval;
mod fsutil;
mod heap;
mod metrics;
mod plot;
mod progress;
mod run_data;
mod stdout;
mod train;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before any thread starts.
    let heap_kept = heap::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in a log file.
        .with_ansi(progress::on_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    if heap_kept {
        tracing::debug!("malloc keeps freed memory for the next step (src/heap.rs)");
    } else {
        tracing::debug!("malloc left at its own or the environment's settings");
    }
    match commands::run(cli::Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away early (`atop inspect F | head -1`) is not an error.
        Err(e) if stdout::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
