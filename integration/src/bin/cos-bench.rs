//! `cos-bench`: measures Chief of State against baselines taken in the same run (see docs/performance.md).
//!
//! `cos-bench run [--quick]` starts the write handler, an echo server, a read handler and Chief of State as
//! separate processes, drives load over gRPC from this one, and prints a markdown table. `cos-bench handler`,
//! `cos-bench echo` and `cos-bench read-handler` are the child processes it starts.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cos_integration::bench::report::markdown;
use cos_integration::bench::scenarios::{BenchConfig, PostgresTarget, run_all};
use cos_integration::bench::{counter_handler, echo, read_handler};

#[derive(Parser)]
#[command(
    name = "cos-bench",
    about = "Benchmarks Chief of State against same-run baselines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every scenario and print the report.
    Run {
        /// A seconds-long smoke run with tiny sizes.
        #[arg(long)]
        quick: bool,
        /// Seconds per throughput scenario (overrides the preset).
        #[arg(long)]
        seconds: Option<u64>,
        /// Concurrent clients (overrides the preset).
        #[arg(long)]
        concurrency: Option<usize>,
        /// PostgreSQL host; PostgreSQL scenarios are skipped with --no-postgres.
        #[arg(long, env = "COS_TEST_PG_HOST", default_value = "127.0.0.1")]
        pg_host: String,
        #[arg(long, env = "COS_TEST_PG_PORT", default_value_t = 5432)]
        pg_port: u16,
        #[arg(long, env = "COS_TEST_PG_USER", default_value = "postgres")]
        pg_user: String,
        #[arg(long, env = "COS_TEST_PG_DB", default_value = "postgres")]
        pg_database: String,
        #[arg(long)]
        no_postgres: bool,
        /// Only these scenario groups (comma-separated: write, recovery, memory, readside, cluster); baselines
        /// always run.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Distinct entities for the passivation memory scenario (overrides the preset).
        #[arg(long)]
        distinct_entities: Option<usize>,
    },
    /// Serve the counter write handler (a child process of `run`).
    Handler {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Serve the bare echo service (a child process of `run`).
    Echo {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Serve the recording read handler, one line per delivery on stdout (a child process of `run`).
    ReadHandler {
        #[arg(long)]
        listen: SocketAddr,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cos-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Handler { listen } => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            counter_handler::serve(listener).await?;
        }
        Command::Echo { listen } => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            echo::serve(listener).await?;
        }
        Command::ReadHandler { listen } => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            read_handler::serve(listener).await?;
        }
        Command::Run {
            quick,
            seconds,
            concurrency,
            pg_host,
            pg_port,
            pg_user,
            pg_database,
            no_postgres,
            only,
            distinct_entities,
        } => {
            let postgres = (!no_postgres).then_some(PostgresTarget {
                host: pg_host,
                port: pg_port,
                user: pg_user,
                database: pg_database,
            });
            let mut config = if quick {
                BenchConfig::quick(postgres)
            } else {
                BenchConfig::full(postgres)
            };
            if let Some(seconds) = seconds {
                config.duration = Duration::from_secs(seconds);
            }
            if let Some(concurrency) = concurrency {
                config.concurrency = concurrency;
            }
            if let Some(distinct) = distinct_entities {
                config.distinct_entities = distinct;
            }
            config.only = only;
            println!("{}", machine_line());
            let rows = run_all(&config).await?;
            println!("{}", markdown(&rows));
        }
    }
    Ok(())
}

/// Which machine the figures come from.
fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".to_string());
    let cores = std::thread::available_parallelism().map_or(0, |cores| cores.get());
    format!("machine: {cores} cores, {cpu}\n")
}
