//! `cos readside` against a running node: the real binary for listing (JSON) and errors, the same code
//! in-process for the steering commands, and what they did checked at the read handler.

use std::process::Command;
use std::time::Duration;

use cos_integration::bench::process::sibling_binary;
use cos_integration::support::node::{Backend, TestNode, TestStore};
use cos_integration::support::read_handler::{Behaviour, ReadHandlerServer, Reply, Rule};
use cos_integration::support::read_side_node::{
    DELIVERY_WAIT, as_pairs, emit, ids_in_one_shard, read_side_settings, read_side_status,
    revisions_of,
};
use cos_integration::support::script_handler::ScriptHandler;
use cos_server::readside_cli::{self, EXIT_SERVER_ERROR, EXIT_UNREACHABLE};
use serde_json::Value;

const SHARDS: u32 = 16;

/// Runs `cos readside <args>` as a process; returns (exit code, stdout, stderr).
fn cos_readside(address: &str, args: &[&str]) -> (i32, String, String) {
    let binary = sibling_binary("cos").unwrap_or_else(|error| panic!("{error}"));
    let output = Command::new(binary)
        .arg("readside")
        .args(args)
        .arg("--address")
        .arg(address)
        .env_clear()
        .output()
        .expect("cos runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `cos readside <args>` in-process against `address`.
async fn run(address: &str, args: &[&str]) -> Result<String, readside_cli::CliError> {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--address", address]);
    let command = readside_cli::parse_args(all).expect("valid arguments");
    readside_cli::run(command).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_skip_pause_resume_and_restart_from_the_command_line() -> anyhow::Result<()>
{
    let store = TestStore::new(Backend::Sqlite)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let (ids, shard) = ids_in_one_shard("acct", 2, SHARDS);
    let (poison, follower) = (ids[0].clone(), ids[1].clone());
    let server =
        ReadHandlerServer::start_grpc(Behaviour::new(Rule::Entity(poison.clone(), Reply::Fail)))
            .await;
    let settings = read_side_settings(&[("view", &server)], &[]);
    let mut node = TestNode::start(&store, running.address, &as_pairs(&settings)).await?;
    let address = format!("http://{}", node.node.local_address());
    emit(&mut node, &poison, "bad").await?;
    emit(&mut node, &follower, "fine").await?;
    let stopped = cos_integration::support::wait_until(DELIVERY_WAIT, || {
        revisions_of(&server.deliveries(), &poison).len() == 1
    })
    .await;
    assert!(stopped);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The binary lists the stop, as JSON for scripts.
    let (code, stdout, stderr) = cos_readside(&address, &["list", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout)?;
    let view = &listed["read_sides"][0];
    assert_eq!(view["read_side_id"], "view");
    assert_eq!(view["shards_stopped"], 1);
    assert_eq!(view["backlog"], 2);
    let shard_view = &view["shards"][shard as usize];
    assert_eq!(shard_view["state"], "stopped");
    assert!(
        shard_view["stopped_reason"]
            .as_str()
            .is_some_and(|reason| reason.contains(&poison)),
        "{shard_view}"
    );
    // And as a table for people.
    let table = run(&address, &["offsets", "view"]).await?;
    assert!(table.contains("stopped"), "{table}");

    // Skip names the event it passed over; the follower then flows.
    let skipped = run(&address, &["skip", "view", "--shard", &shard.to_string()]).await?;
    assert!(skipped.contains(&poison), "{skipped}");
    server.wait_for_accepted(1, DELIVERY_WAIT).await;
    assert_eq!(revisions_of(&server.accepted(), &follower), vec![1]);

    // Pause everything, then resume: held events flow again.
    run(&address, &["pause", "view"]).await?;
    let status = read_side_status(&node, "view").await?;
    assert!(status.shards.iter().all(|shard| shard.paused));
    emit(&mut node, &follower, "held").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(revisions_of(&server.accepted(), &follower), vec![1]);
    run(&address, &["resume", "view"]).await?;
    server.wait_for_accepted(2, DELIVERY_WAIT).await;

    // Restart one shard: its history comes again (the poison event too, now accepted).
    server.set_behaviour(Behaviour::accept_all());
    run(
        &address,
        &["restart", "view", "--shard", &shard.to_string()],
    )
    .await?;
    server.wait_for_accepted(5, DELIVERY_WAIT).await;
    assert_eq!(
        revisions_of(&server.accepted(), &follower),
        vec![1, 2, 1, 2]
    );
    assert_eq!(revisions_of(&server.accepted(), &poison), vec![1]);

    // Errors: an unknown read side is the server's NOT_FOUND, exit 1.
    let (code, _, stderr) = cos_readside(&address, &["offsets", "nope"]);
    assert_eq!(code, i32::from(EXIT_SERVER_ERROR), "{stderr}");
    assert!(
        stderr.contains("NOT_FOUND") && stderr.contains("nope"),
        "{stderr}"
    );
    node.stop().await?;

    // A node that is gone: exit 3, naming the address.
    let (code, _, stderr) = cos_readside(&address, &["list"]);
    assert_eq!(code, i32::from(EXIT_UNREACHABLE), "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
    Ok(())
}
