//! `cos`: runs one Chief of State node; `cos readside ...` operates the read sides of a running one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cos_core::settings::{LoadOptions, Settings};
use cos_server::RunningNode;
use cos_server::readside_cli::{self, ReadSideCommand};

/// Chief of State: a persistence service for event-sourced applications.
///
/// Without a subcommand `cos` runs a node.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Optional YAML or TOML settings file; `COS_*` environment variables override it.
    #[arg(long, env = "COS_CONFIG_FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Operator commands against a running node; none of them start one.
#[derive(Subcommand)]
enum Command {
    /// Inspect and steer the read sides of a running node.
    Readside(ReadSideCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Readside(command)) => readside_cli::run_to_exit_code(command),
        None => run_node(cli.config),
    }
}

fn run_node(config: Option<PathBuf>) -> ExitCode {
    let (settings, warnings) =
        match Settings::load_with_warnings(&LoadOptions::from_process_env(config)) {
            Ok(loaded) => loaded,
            Err(error) => {
                eprintln!("cos: {error}");
                return ExitCode::from(2);
            }
        };
    if let Err(error) = cos_server::logging::init(&settings.logging) {
        eprintln!("cos: {error}");
        return ExitCode::from(2);
    }
    for warning in warnings {
        tracing::warn!(%warning, "settings warning");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cos: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "node failed");
            eprintln!("cos: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let mut node = RunningNode::start(settings).await?;
    cos_server::memory::spawn_trimmer(node.entity_census());
    let signal = tokio::select! {
        signal = shutdown_signal() => Some(signal),
        result = node.wait() => {
            result?;
            None
        }
    };
    if let Some(signal) = signal {
        tracing::info!(signal, "shutdown requested");
        node.begin_shutdown();
        node.wait().await?;
    }
    Ok(())
}

async fn shutdown_signal() -> &'static str {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        () = terminate => "SIGTERM",
    }
}
