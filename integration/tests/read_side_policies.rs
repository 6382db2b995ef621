//! Failure policies and the read-side circuit breaker against real read handlers, on both stores. A
//! "poison" event is one the handler refuses; a "follower" is the next event of the same shard, which only
//! moves once the poison event is dealt with; an event of another shard shows the rest keeps flowing.

use std::time::Duration;

use cos_integration::support::node::{Backend, TestNode, TestStore};
use cos_integration::support::read_handler::{Behaviour, ReadHandlerServer, Reply, Rule};
use cos_integration::support::read_side_node::{
    DELIVERY_WAIT, as_pairs, emit, id_outside_shard, ids_in_one_shard, manager, read_side_settings,
    read_side_status, revisions_of, wait_for_offset, wait_for_stop,
};
use cos_integration::support::script_handler::ScriptHandler;

const SHARDS: u32 = 16;

/// How long the tests watch for something that must not happen.
const QUIET: Duration = Duration::from_millis(700);

/// A node with one read side `view` on `server` with `policy`, plus `extra` settings.
async fn start(
    store: &TestStore,
    write_handler: std::net::SocketAddr,
    server: &ReadHandlerServer,
    policy: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<TestNode> {
    let mut settings_extra = vec![
        ("COS_READ_SIDE_CONFIG__FAILURE_POLICY__view", policy),
        ("COS_READ_SIDE_REPLAY_RETRIES", "2"),
        ("COS_READ_SIDE_REPLAY_INTERVAL", "100ms"),
    ];
    settings_extra.extend_from_slice(extra);
    let settings = read_side_settings(&[("view", server)], &settings_extra);
    TestNode::start(store, write_handler, &as_pairs(&settings)).await
}

/// Writes poison, then follower (same shard), then an event in another shard; returns their ids and shard.
async fn write_poison_follower_and_bystander(
    node: &mut TestNode,
) -> anyhow::Result<(String, String, String, u32)> {
    let (ids, shard) = ids_in_one_shard("acct", 2, SHARDS);
    let (poison, follower) = (ids[0].clone(), ids[1].clone());
    let bystander = id_outside_shard("other", shard, SHARDS);
    emit(node, &poison, "bad").await?;
    emit(node, &follower, "fine").await?;
    emit(node, &bystander, "fine").await?;
    Ok((poison, follower, bystander, shard))
}

fn attempts_for(server: &ReadHandlerServer, entity_id: &str) -> usize {
    revisions_of(&server.deliveries(), entity_id).len()
}

async fn stop_holds_the_shard_across_restarts_until_resumed(
    backend: Backend,
) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let (ids, _shard) = ids_in_one_shard("acct", 1, SHARDS);
    let server = ReadHandlerServer::start_grpc(Behaviour::new(Rule::Entity(
        ids[0].clone(),
        Reply::Unsuccessful,
    )))
    .await;
    let mut node = start(&store, running.address, &server, "STOP", &[]).await?;
    let (poison, follower, bystander, shard) =
        write_poison_follower_and_bystander(&mut node).await?;
    server.wait_for_accepted(1, DELIVERY_WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(revisions_of(&server.accepted(), &bystander), vec![1]);
    assert_eq!(attempts_for(&server, &poison), 1, "STOP does not retry");
    assert!(revisions_of(&server.deliveries(), &follower).is_empty());
    let status = read_side_status(&node, "view").await?;
    let stopped = &status.shards[shard as usize].stopped_reason;
    assert!(
        stopped.contains("STOP") && stopped.contains(&poison),
        "{stopped}"
    );

    // A restart does not undo the stop.
    node.stop().await?;
    server.set_behaviour(Behaviour::accept_all());
    let mut node = start(&store, running.address, &server, "STOP", &[]).await?;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        attempts_for(&server, &poison),
        1,
        "still stopped after a restart"
    );

    manager(&node)
        .await?
        .resume_read_side_by_shard(
            cos_core::proto::chief_of_state::v1::ResumeReadSideByShardRequest {
                read_side_id: "view".to_string(),
                cluster_shard_number: u64::from(shard),
            },
        )
        .await?;
    server.wait_for_accepted(3, DELIVERY_WAIT).await;
    assert_eq!(revisions_of(&server.accepted(), &poison), vec![1]);
    assert_eq!(revisions_of(&server.accepted(), &follower), vec![1]);
    let status = read_side_status(&node, "view").await?;
    assert_eq!(status.shards[shard as usize].stopped_reason, "");
    emit(&mut node, &follower, "more").await?;
    server.wait_for_accepted(4, DELIVERY_WAIT).await;
    node.stop().await
}

async fn skip_passes_over_a_refused_event_at_once(backend: Backend) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let (ids, _shard) = ids_in_one_shard("acct", 1, SHARDS);
    let server =
        ReadHandlerServer::start_http(Behaviour::new(Rule::Entity(ids[0].clone(), Reply::Fail)))
            .await;
    let mut node = start(&store, running.address, &server, "SKIP", &[]).await?;
    let (poison, follower, bystander, _) = write_poison_follower_and_bystander(&mut node).await?;
    server.wait_for_accepted(2, DELIVERY_WAIT).await;
    assert_eq!(revisions_of(&server.accepted(), &follower), vec![1]);
    assert_eq!(revisions_of(&server.accepted(), &bystander), vec![1]);
    tokio::time::sleep(QUIET).await;
    assert_eq!(attempts_for(&server, &poison), 1, "SKIP does not retry");
    assert!(revisions_of(&server.accepted(), &poison).is_empty());
    node.stop().await
}

async fn replay_skip_retries_then_skips(backend: Backend) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let (ids, _shard) = ids_in_one_shard("acct", 1, SHARDS);
    let server = ReadHandlerServer::start_grpc(Behaviour::new(Rule::Entity(
        ids[0].clone(),
        Reply::Unsuccessful,
    )))
    .await;
    let mut node = start(&store, running.address, &server, "REPLAY_SKIP", &[]).await?;
    let (poison, follower, _, _) = write_poison_follower_and_bystander(&mut node).await?;
    server.wait_for_accepted(2, DELIVERY_WAIT).await;
    assert_eq!(revisions_of(&server.accepted(), &follower), vec![1]);
    assert_eq!(
        attempts_for(&server, &poison),
        3,
        "the first try and two replays"
    );
    node.stop().await
}

async fn replay_stop_retries_then_stops(backend: Backend) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let (ids, shard) = ids_in_one_shard("acct", 1, SHARDS);
    let server =
        ReadHandlerServer::start_http(Behaviour::new(Rule::Entity(ids[0].clone(), Reply::Fail)))
            .await;
    let mut node = start(&store, running.address, &server, "REPLAY_STOP", &[]).await?;
    let (poison, follower, bystander, _) = write_poison_follower_and_bystander(&mut node).await?;
    server.wait_for_accepted(1, DELIVERY_WAIT).await;
    assert_eq!(revisions_of(&server.accepted(), &bystander), vec![1]);
    let stopped =
        cos_integration::support::wait_until(DELIVERY_WAIT, || attempts_for(&server, &poison) >= 3)
            .await;
    assert!(stopped, "three attempts");
    tokio::time::sleep(QUIET).await;
    assert_eq!(attempts_for(&server, &poison), 3);
    assert!(revisions_of(&server.deliveries(), &follower).is_empty());
    let status = read_side_status(&node, "view").await?;
    assert!(
        status.shards[shard as usize]
            .stopped_reason
            .starts_with("REPLAY_STOP"),
        "{:?}",
        status.shards[shard as usize]
    );
    node.stop().await
}

async fn the_breaker_opens_after_failures_and_closes_after_a_good_trial(
    backend: Backend,
) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let (ids, shard) = ids_in_one_shard("acct", 1, SHARDS);
    let server =
        ReadHandlerServer::start_grpc(Behaviour::new(Rule::Entity(ids[0].clone(), Reply::Fail)))
            .await;
    let breaker = [
        ("COS_READ_SIDE_BREAKER_ENABLED", "true"),
        ("COS_READ_SIDE_BREAKER_MAX_FAILURES", "2"),
        ("COS_READ_SIDE_BREAKER_RESET_TIMEOUT", "1s"),
    ];
    let mut node = start(&store, running.address, &server, "REPLAY_STOP", &breaker).await?;
    // No bystander here: a success on another shard in between would reset the failures in a row.
    let (ids, _) = ids_in_one_shard("acct", 2, SHARDS);
    let (poison, follower) = (ids[0].clone(), ids[1].clone());
    emit(&mut node, &poison, "bad").await?;
    emit(&mut node, &follower, "fine").await?;
    let reason = wait_for_stop(&node, "view", shard).await?;
    // Three attempts were made (the first and two replays 100 ms apart), but the breaker opened after two
    // failures, so the third never reached the handler.
    assert_eq!(attempts_for(&server, &poison), 2);
    assert!(reason.contains("circuit breaker is open"), "{reason}");

    // After the reset timeout a trial call goes through; it succeeds and closes the breaker.
    server.set_behaviour(Behaviour::accept_all());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    manager(&node)
        .await?
        .resume_read_side(cos_core::proto::chief_of_state::v1::ResumeReadSideRequest {
            read_side_id: "view".to_string(),
        })
        .await?;
    server.wait_for_accepted(2, DELIVERY_WAIT).await;
    assert_eq!(revisions_of(&server.accepted(), &poison), vec![1]);
    assert_eq!(revisions_of(&server.accepted(), &follower), vec![1]);
    node.stop().await
}

async fn an_operator_skip_during_replays_is_not_undone_by_the_failing_worker(
    backend: Backend,
) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let (ids, shard) = ids_in_one_shard("acct", 2, SHARDS);
    let (poison, follower) = (ids[0].clone(), ids[1].clone());
    let server =
        ReadHandlerServer::start_grpc(Behaviour::new(Rule::Entity(poison.clone(), Reply::Fail)))
            .await;
    let slow_replays = [("COS_READ_SIDE_REPLAY_INTERVAL", "1s")];
    let mut node = start(
        &store,
        running.address,
        &server,
        "REPLAY_STOP",
        &slow_replays,
    )
    .await?;
    emit(&mut node, &poison, "bad").await?;
    emit(&mut node, &follower, "fine").await?;
    let failed_once =
        cos_integration::support::wait_until(DELIVERY_WAIT, || attempts_for(&server, &poison) == 1)
            .await;
    assert!(failed_once);
    manager(&node)
        .await?
        .skip_offset_by_shard(
            cos_core::proto::chief_of_state::v1::SkipOffsetByShardRequest {
                read_side_id: "view".to_string(),
                cluster_shard_number: u64::from(shard),
            },
        )
        .await?;
    server.wait_for_accepted(1, DELIVERY_WAIT).await;
    assert_eq!(revisions_of(&server.accepted(), &follower), vec![1]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        attempts_for(&server, &poison),
        1,
        "no replay after the skip"
    );
    let status = read_side_status(&node, "view").await?;
    assert_eq!(
        status.shards[shard as usize].stopped_reason, "",
        "not stopped"
    );
    emit(&mut node, &follower, "more").await?;
    server.wait_for_accepted(2, DELIVERY_WAIT).await;
    node.stop().await
}

async fn compaction_keeps_what_a_paused_read_side_has_not_delivered(
    backend: Backend,
) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let server = ReadHandlerServer::start_grpc(Behaviour::accept_all()).await;
    let compaction = [
        ("COS_READ_SIDE_CONFIG__AUTO_START__view", "false"),
        ("COS_SNAPSHOT_FREQUENCY", "2"),
        ("COS_NUM_SNAPSHOTS_TO_RETAIN", "1"),
        ("COS_JOURNAL_LOGICAL_DELETION", "true"),
    ];
    let mut node = start(&store, running.address, &server, "STOP", &compaction).await?;
    for index in 0..8 {
        emit(&mut node, "compacted", &format!("e{index}")).await?;
    }
    let journal = store.open_journal().await?;
    let shard = cos_core::sharding::shard_of("compacted", SHARDS);
    assert_eq!(
        journal.shard_events_after(shard, 0, 100).await?.len(),
        8,
        "snapshots at 2, 4, 6 and 8 deleted nothing the paused read side still needs"
    );
    manager(&node)
        .await?
        .resume_read_side(cos_core::proto::chief_of_state::v1::ResumeReadSideRequest {
            read_side_id: "view".to_string(),
        })
        .await?;
    let accepted = server.wait_for_accepted(8, DELIVERY_WAIT).await;
    assert_eq!(
        revisions_of(&accepted, "compacted"),
        (1..=8).collect::<Vec<_>>()
    );
    // Delivered: the next snapshot compacts as configured (through revision 10).
    emit(&mut node, "compacted", "e8").await?;
    emit(&mut node, "compacted", "e9").await?;
    server.wait_for_accepted(10, DELIVERY_WAIT).await;
    wait_for_offset(&node, "view", shard, 10).await?;
    emit(&mut node, "compacted", "e10").await?;
    emit(&mut node, "compacted", "e11").await?;
    server.wait_for_accepted(12, DELIVERY_WAIT).await;
    let left: Vec<u32> = journal
        .shard_events_after(shard, 0, 100)
        .await?
        .iter()
        .map(|event| event.revision)
        .collect();
    assert!(
        left.iter().all(|revision| *revision > 10),
        "delivered events were compacted: {left:?}"
    );
    journal.close().await;
    node.stop().await
}

cos_integration::on_both_stores!(
    an_operator_skip_during_replays_is_not_undone_by_the_failing_worker,
    compaction_keeps_what_a_paused_read_side_has_not_delivered,
    stop_holds_the_shard_across_restarts_until_resumed,
    skip_passes_over_a_refused_event_at_once,
    replay_skip_retries_then_skips,
    replay_stop_retries_then_stops,
    the_breaker_opens_after_failures_and_closes_after_a_good_trial,
);
