//! `cos readside`: the operator's command line for read sides on a running node. It lists them, shows
//! offsets and backlog, and pauses, resumes, restarts or skips them, over the node's gRPC port
//! (`chief_of_state.v1.ReadSideManagerService` and `cos.internal.v1.ReadSideAdmin`).
//!
//! [`run`] does the work and returns the text for stdout, so tests can call it in-process;
//! [`run_to_exit_code`] is what the `cos` binary calls.

mod client;
mod error;
mod render;
mod skipped;
mod table;
mod views;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use client::{
    CONNECT_TIMEOUT, DEFAULT_ADDRESS, DEFAULT_PORT, NodeAddress, NodeClient, REQUEST_TIMEOUT,
    SteerAction, SteerOutcome,
};
pub use error::{CliError, EXIT_SERVER_ERROR, EXIT_UNREACHABLE, EXIT_USAGE, grpc_code_name};
pub use skipped::{SKIPPED_HEADER, SkippedEvent, SkippedRecord};
pub use views::{
    ListView, OffsetView, OffsetsView, ReadSideView, ShardState, ShardView, SteerView,
};

/// `cos readside ...`: the node to talk to, the output format and what to do.
#[derive(Debug, Clone, Args)]
pub struct ReadSideCommand {
    /// gRPC address of a CoS node: http(s)://host:port, host:port or host (port 9000).
    #[arg(long, global = true, env = "COS_CLI_ADDRESS", default_value = DEFAULT_ADDRESS)]
    pub address: String,
    /// Print one JSON document instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub action: ReadSideAction,
}

/// The read-side operations, one per subcommand.
#[derive(Debug, Clone, Subcommand)]
pub enum ReadSideAction {
    /// List the configured read sides with their shard states and total backlog.
    List,
    /// Show the stored offset of a read side on each shard (and its latest offset and backlog).
    Offsets(ReadSideTarget),
    /// Pause a read side: its handler receives nothing until it is resumed.
    Pause(ReadSideTarget),
    /// Resume a paused or stopped read side: its handler receives events again.
    Resume(ReadSideTarget),
    /// Restart a read side from the beginning of the journal: every event is delivered again.
    Restart(ReadSideTarget),
    /// Skip the next event of a read side (the one it is stuck on) and report which event that was.
    Skip(ReadSideTarget),
}

/// Which read side, and optionally which shard, an operation applies to.
#[derive(Debug, Clone, Args)]
pub struct ReadSideTarget {
    /// The read side id, as configured (`COS_READ_SIDE_CONFIG__<ID>__...`).
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub read_side_id: String,
    /// Apply to this cluster shard only; without it the operation applies to every shard.
    #[arg(long, value_name = "N")]
    pub shard: Option<u64>,
}

/// Parses `readside` arguments (without the leading `cos readside`), e.g. `["pause", "accounts",
/// "--shard", "3"]`, exactly as the binary would; for tests that want the command line's defaults.
pub fn parse_args<I, T>(args: I) -> Result<ReadSideCommand, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    /// The same arguments as `cos readside`, as a standalone parser.
    #[derive(Parser)]
    #[command(name = "cos readside")]
    struct Standalone {
        #[command(flatten)]
        command: ReadSideCommand,
    }
    let program = std::iter::once(std::ffi::OsString::from("cos-readside"));
    let arguments = program.chain(args.into_iter().map(Into::into));
    Standalone::try_parse_from(arguments).map(|standalone| standalone.command)
}

/// Runs one command against the node and returns what goes to stdout (ending in a newline).
pub async fn run(command: ReadSideCommand) -> Result<String, CliError> {
    let address = NodeAddress::parse(&command.address)?;
    let mut client = NodeClient::connect(&address).await?;
    match command.action {
        ReadSideAction::List => {
            let read_sides = client.list_read_sides().await?;
            render::render_list(&read_sides, command.json)
        }
        ReadSideAction::Offsets(target) => {
            let offsets = client
                .latest_offsets(&target.read_side_id, target.shard)
                .await?;
            // Best effort: the latest offsets and states make the backlog visible, but the offsets alone
            // are the answer when the node cannot list read sides, so a failure here is not reported.
            let status = match client.list_read_sides().await {
                Ok(read_sides) => read_sides
                    .into_iter()
                    .find(|read_side| read_side.read_side_id == target.read_side_id),
                Err(_) => None,
            };
            render::render_offsets(
                &target.read_side_id,
                &offsets,
                status.as_ref(),
                command.json,
            )
        }
        ReadSideAction::Pause(target) => {
            steer(&mut client, SteerAction::Pause, target, command.json).await
        }
        ReadSideAction::Resume(target) => {
            steer(&mut client, SteerAction::Resume, target, command.json).await
        }
        ReadSideAction::Restart(target) => {
            steer(&mut client, SteerAction::Restart, target, command.json).await
        }
        ReadSideAction::Skip(target) => {
            steer(&mut client, SteerAction::Skip, target, command.json).await
        }
    }
}

async fn steer(
    client: &mut NodeClient,
    action: SteerAction,
    target: ReadSideTarget,
    json: bool,
) -> Result<String, CliError> {
    let outcome = client
        .steer(action, &target.read_side_id, target.shard)
        .await?;
    if !outcome.successful {
        return Err(CliError::NotSuccessful {
            action: action.verb(),
            read_side_id: target.read_side_id,
            scope: render::scope(target.shard),
        });
    }
    render::render_steer(action, &target.read_side_id, target.shard, &outcome, json)
}

/// Runs the command on a single-threaded runtime, prints its output or its one-line error
/// (`cos readside: ...`) and returns the exit code: what `cos readside` does as a process.
pub fn run_to_exit_code(command: ReadSideCommand) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(command)),
        Err(error) => Err(CliError::Runtime(error)),
    };
    match result {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`cos readside list | head -1`) is not a failure of the command.
            match stdout
                .write_all(output.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("cos readside: cannot write output: {error}");
                    ExitCode::from(EXIT_SERVER_ERROR)
                }
            }
        }
        Err(error) => {
            eprintln!("cos readside: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket bound to a port on 127.0.0.1 that never listens: connections are refused, and the port is
    /// not handed to another test process while the socket lives.
    fn closed_port() -> tokio::net::TcpSocket {
        let socket = match tokio::net::TcpSocket::new_v4() {
            Ok(socket) => socket,
            Err(error) => panic!("cannot open a socket: {error}"),
        };
        if let Err(error) = socket.bind(([127, 0, 0, 1], 0).into()) {
            panic!("cannot bind a local port: {error}");
        }
        socket
    }

    fn command(args: &[&str]) -> ReadSideCommand {
        match parse_args(args) {
            Ok(command) => command,
            Err(error) => panic!("{args:?} did not parse: {error}"),
        }
    }

    #[tokio::test]
    async fn closed_port_is_reported_unreachable_with_exit_code_3() {
        let reserved = closed_port();
        let address = match reserved.local_addr() {
            Ok(address) => address.to_string(),
            Err(error) => panic!("no local address: {error}"),
        };
        for action in [
            vec!["list"],
            vec!["offsets", "accounts"],
            vec!["skip", "accounts", "--shard", "1"],
        ] {
            let mut args = action.clone();
            args.extend(["--address", address.as_str()]);
            let result = run(command(&args)).await;
            let Err(error) = result else {
                panic!("{args:?} succeeded against a closed port: {result:?}");
            };
            assert_eq!(error.exit_code(), EXIT_UNREACHABLE, "{error}");
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("cannot reach http://{address}: ")),
                "{message}"
            );
            assert!(message.to_lowercase().contains("refused"), "{message}");
        }
    }

    #[tokio::test]
    async fn invalid_address_is_a_usage_error_before_any_connection() {
        let result = run(command(&["list", "--address", "ftp://node:9000"])).await;
        let Err(error) = result else {
            panic!("an ftp address was accepted: {result:?}");
        };
        assert_eq!(error.exit_code(), EXIT_USAGE);
        assert!(
            error
                .to_string()
                .starts_with("invalid address \"ftp://node:9000\"")
        );
    }

    #[test]
    fn address_and_json_are_accepted_before_or_after_the_operation() {
        let before = command(&["--address", "node-1:50051", "--json", "pause", "accounts"]);
        let after = command(&["pause", "accounts", "--json", "--address", "node-1:50051"]);
        for parsed in [before, after] {
            assert_eq!(parsed.address, "node-1:50051");
            assert!(parsed.json);
            let ReadSideAction::Pause(target) = parsed.action else {
                panic!("expected pause, got {:?}", parsed.action);
            };
            assert_eq!(target.read_side_id, "accounts");
            assert_eq!(target.shard, None);
        }
    }

    #[test]
    fn shard_selects_one_shard() {
        let parsed = command(&["skip", "accounts", "--shard", "3"]);
        let ReadSideAction::Skip(target) = parsed.action else {
            panic!("expected skip, got {:?}", parsed.action);
        };
        assert_eq!(target.shard, Some(3));
        assert!(!parsed.json);
    }

    #[test]
    fn usage_errors_are_clap_errors_with_exit_code_2() {
        for args in [
            vec!["pause"],
            vec!["pause", ""],
            vec!["pause", "accounts", "--shard", "-1"],
            vec!["frobnicate"],
            vec![],
        ] {
            let result = parse_args(&args);
            let Err(error) = result else {
                panic!("{args:?} parsed: {result:?}");
            };
            assert_eq!(
                error.exit_code(),
                i32::from(EXIT_USAGE),
                "{args:?}: {error}"
            );
        }
    }
}
