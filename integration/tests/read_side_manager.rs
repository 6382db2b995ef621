//! ReadSideManagerService through a real gRPC client: offsets, pause / resume / restart / skip per shard and
//! for all shards, precise errors for bad shards and unknown read sides, pauses that survive restarts,
//! `autoStart: false`, and UNIMPLEMENTED when read sides are off (as in the original).

use std::time::Duration;

use cos_core::proto::chief_of_state::v1::{
    GetLatestOffsetByShardRequest, GetLatestOffsetRequest, PauseReadSideByShardRequest,
    RestartReadSideByShardRequest, ResumeReadSideRequest, SkipOffsetByShardRequest,
    SkipOffsetRequest,
};
use cos_integration::support::node::{Backend, TestNode, TestStore};
use cos_integration::support::read_handler::{Behaviour, ReadHandlerServer, Reply, Rule};
use cos_integration::support::read_side_node::{
    DELIVERY_WAIT, as_pairs, emit, id_outside_shard, ids_in_one_shard, manager, read_side_settings,
    read_side_status, revisions_of, wait_for_offset, wait_for_stop,
};
use cos_integration::support::script_handler::ScriptHandler;
use tonic::Code;

const SHARDS: u32 = 16;

/// How long the tests watch for something that must not happen.
const QUIET: Duration = Duration::from_millis(700);

async fn offsets_and_errors_name_shards_and_read_sides_precisely(
    backend: Backend,
) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let server = ReadHandlerServer::start_grpc(Behaviour::accept_all()).await;
    let settings = read_side_settings(&[("view", &server)], &[]);
    let mut node = TestNode::start(&store, running.address, &as_pairs(&settings)).await?;
    let (ids, shard) = ids_in_one_shard("acct", 2, SHARDS);
    emit(&mut node, &ids[0], "a,b").await?;
    emit(&mut node, &ids[1], "c").await?;
    server.wait_for_accepted(3, DELIVERY_WAIT).await;
    let mut client = manager(&node).await?;
    wait_for_offset(&node, "view", shard, 3).await?;

    let all = client
        .get_latest_offset(GetLatestOffsetRequest {
            read_side_id: "view".to_string(),
        })
        .await?
        .into_inner()
        .offsets;
    assert_eq!(all.len(), SHARDS as usize, "one entry per shard");
    for offset in &all {
        let expected = if offset.cluster_shard_number == u64::from(shard) {
            3
        } else {
            0
        };
        assert_eq!(offset.offset, expected, "{offset:?}");
    }
    let one = client
        .get_latest_offset_by_shard(GetLatestOffsetByShardRequest {
            read_side_id: "view".to_string(),
            cluster_shard_number: u64::from(shard),
        })
        .await?
        .into_inner()
        .offsets
        .map(|offset| (offset.cluster_shard_number, offset.offset));
    assert_eq!(one, Some((u64::from(shard), 3)));

    let out_of_range = client
        .pause_read_side_by_shard(PauseReadSideByShardRequest {
            read_side_id: "view".to_string(),
            cluster_shard_number: u64::from(SHARDS),
        })
        .await
        .expect_err("shard 16 of 16");
    assert_eq!(out_of_range.code(), Code::InvalidArgument);
    assert!(
        out_of_range.message().contains("0 to 15"),
        "{}",
        out_of_range.message()
    );
    let skip_out_of_range = client
        .skip_offset_by_shard(SkipOffsetByShardRequest {
            read_side_id: "view".to_string(),
            cluster_shard_number: 99,
        })
        .await
        .expect_err("shard 99");
    assert_eq!(skip_out_of_range.code(), Code::InvalidArgument);
    let unknown = client
        .get_latest_offset(GetLatestOffsetRequest {
            read_side_id: "nope".to_string(),
        })
        .await
        .expect_err("unknown read side");
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("nope"));
    let empty = client
        .resume_read_side(ResumeReadSideRequest {
            read_side_id: String::new(),
        })
        .await
        .expect_err("empty id");
    assert_eq!(empty.code(), Code::InvalidArgument);
    let nothing_to_skip = client
        .skip_offset_by_shard(SkipOffsetByShardRequest {
            read_side_id: "view".to_string(),
            cluster_shard_number: u64::from(shard),
        })
        .await
        .expect_err("all delivered");
    assert_eq!(nothing_to_skip.code(), Code::FailedPrecondition);
    node.stop().await
}

async fn a_paused_shard_waits_and_the_pause_survives_a_restart(
    backend: Backend,
) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let server = ReadHandlerServer::start_http(Behaviour::accept_all()).await;
    let settings = read_side_settings(&[("view", &server)], &[]);
    let mut node = TestNode::start(&store, running.address, &as_pairs(&settings)).await?;
    let (ids, shard) = ids_in_one_shard("acct", 1, SHARDS);
    let other = id_outside_shard("other", shard, SHARDS);
    let reply = manager(&node)
        .await?
        .pause_read_side_by_shard(PauseReadSideByShardRequest {
            read_side_id: "view".to_string(),
            cluster_shard_number: u64::from(shard),
        })
        .await?
        .into_inner();
    assert!(reply.successful);
    emit(&mut node, &ids[0], "held").await?;
    emit(&mut node, &other, "flows").await?;
    server.wait_for_accepted(1, DELIVERY_WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(revisions_of(&server.accepted(), &other), vec![1]);
    assert!(
        revisions_of(&server.deliveries(), &ids[0]).is_empty(),
        "paused"
    );

    node.stop().await?;
    let mut node = TestNode::start(&store, running.address, &as_pairs(&settings)).await?;
    tokio::time::sleep(QUIET).await;
    assert!(
        revisions_of(&server.deliveries(), &ids[0]).is_empty(),
        "still paused after a restart"
    );
    assert!(read_side_status(&node, "view").await?.shards[shard as usize].paused);

    manager(&node)
        .await?
        .resume_read_side(ResumeReadSideRequest {
            read_side_id: "view".to_string(),
        })
        .await?;
    server.wait_for_accepted(2, DELIVERY_WAIT).await;
    assert_eq!(revisions_of(&server.accepted(), &ids[0]), vec![1]);
    emit(&mut node, &ids[0], "after").await?;
    server.wait_for_accepted(3, DELIVERY_WAIT).await;
    node.stop().await
}

async fn restart_redelivers_a_shard_from_the_beginning(backend: Backend) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let server = ReadHandlerServer::start_grpc(Behaviour::accept_all()).await;
    let settings = read_side_settings(&[("view", &server)], &[]);
    let mut node = TestNode::start(&store, running.address, &as_pairs(&settings)).await?;
    let (ids, shard) = ids_in_one_shard("acct", 1, SHARDS);
    let other = id_outside_shard("other", shard, SHARDS);
    emit(&mut node, &ids[0], "a,b").await?;
    emit(&mut node, &other, "c").await?;
    server.wait_for_accepted(3, DELIVERY_WAIT).await;

    let reply = manager(&node)
        .await?
        .restart_read_side_by_shard(RestartReadSideByShardRequest {
            read_side_id: "view".to_string(),
            cluster_shard_number: u64::from(shard),
        })
        .await?
        .into_inner();
    assert!(reply.successful);
    server.wait_for_accepted(5, DELIVERY_WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(revisions_of(&server.accepted(), &ids[0]), vec![1, 2, 1, 2]);
    assert_eq!(
        revisions_of(&server.accepted(), &other),
        vec![1],
        "other shards untouched"
    );
    node.stop().await
}

async fn skip_passes_exactly_the_stuck_event_and_names_it(backend: Backend) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let (ids, shard) = ids_in_one_shard("acct", 2, SHARDS);
    let (poison, follower) = (ids[0].clone(), ids[1].clone());
    let server =
        ReadHandlerServer::start_grpc(Behaviour::new(Rule::Entity(poison.clone(), Reply::Fail)))
            .await;
    let settings = read_side_settings(&[("view", &server)], &[]);
    let mut node = TestNode::start(&store, running.address, &as_pairs(&settings)).await?;
    emit(&mut node, &follower, "before").await?;
    emit(&mut node, &poison, "bad").await?;
    emit(&mut node, &follower, "after").await?;
    server.wait_for_accepted(1, DELIVERY_WAIT).await;
    let stopped = cos_integration::support::wait_until(DELIVERY_WAIT, || {
        revisions_of(&server.deliveries(), &poison).len() == 1
    })
    .await;
    assert!(stopped);

    let response = manager(&node)
        .await?
        .skip_offset_by_shard(SkipOffsetByShardRequest {
            read_side_id: "view".to_string(),
            cluster_shard_number: u64::from(shard),
        })
        .await?;
    let skipped: Vec<String> = response
        .metadata()
        .get_all("x-cos-skipped")
        .iter()
        .filter_map(|value| value.to_str().ok().map(str::to_string))
        .collect();
    assert_eq!(
        skipped,
        vec![format!(
            "shard={shard} offset=2 entity_type=default entity_id={poison} revision=1"
        )]
    );
    assert!(response.into_inner().successful);
    server.wait_for_accepted(2, DELIVERY_WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(revisions_of(&server.accepted(), &follower), vec![1, 2]);
    assert!(
        revisions_of(&server.accepted(), &poison).is_empty(),
        "skipped, never accepted"
    );
    assert_eq!(revisions_of(&server.deliveries(), &poison).len(), 1);

    // Skipping on every shard passes over the stuck event of each stopped shard only: a paused shard with
    // a backlog keeps its events.
    let mut client = manager(&node).await?;
    let other = id_outside_shard("other", shard, SHARDS);
    let other_shard = cos_core::sharding::shard_of(&other, SHARDS);
    server.set_behaviour(Behaviour::new(Rule::EventText(
        "poison-2".to_string(),
        Reply::Fail,
    )));
    client
        .pause_read_side_by_shard(PauseReadSideByShardRequest {
            read_side_id: "view".to_string(),
            cluster_shard_number: u64::from(other_shard),
        })
        .await?;
    emit(&mut node, &other, "kept").await?;
    emit(&mut node, &follower, "poison-2").await?;
    let stopped = cos_integration::support::wait_until(DELIVERY_WAIT, || {
        revisions_of(&server.deliveries(), &follower).len() == 3
    })
    .await;
    assert!(stopped, "the third event of the follower was refused");
    let stopped_reason = wait_for_stop(&node, "view", shard).await?;
    assert!(stopped_reason.contains(&follower), "{stopped_reason}");
    let response = client
        .skip_offset(SkipOffsetRequest {
            read_side_id: "view".to_string(),
        })
        .await?;
    let skipped: Vec<String> = response
        .metadata()
        .get_all("x-cos-skipped")
        .iter()
        .filter_map(|value| value.to_str().ok().map(str::to_string))
        .collect();
    assert_eq!(
        skipped,
        vec![format!(
            "shard={shard} offset=4 entity_type=default entity_id={follower} revision=3"
        )]
    );
    let nothing_stopped = client
        .skip_offset(SkipOffsetRequest {
            read_side_id: "view".to_string(),
        })
        .await
        .expect_err("no shard is stopped any more");
    assert_eq!(nothing_stopped.code(), Code::FailedPrecondition);
    client
        .resume_read_side(ResumeReadSideRequest {
            read_side_id: "view".to_string(),
        })
        .await?;
    let accepted = server.wait_for_accepted(3, DELIVERY_WAIT).await;
    assert_eq!(
        revisions_of(&accepted, &other),
        vec![1],
        "the paused shard kept its event"
    );
    node.stop().await
}

async fn auto_start_false_starts_paused_and_a_resume_is_kept_across_restarts(
    backend: Backend,
) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let server = ReadHandlerServer::start_grpc(Behaviour::accept_all()).await;
    let settings = read_side_settings(
        &[("manual", &server)],
        &[("COS_READ_SIDE_CONFIG__AUTO_START__manual", "false")],
    );
    let mut node = TestNode::start(&store, running.address, &as_pairs(&settings)).await?;
    emit(&mut node, "acct-1", "a").await?;
    tokio::time::sleep(QUIET).await;
    assert!(server.deliveries().is_empty(), "starts paused");
    let status = read_side_status(&node, "manual").await?;
    assert!(status.shards.iter().all(|shard| shard.paused));
    assert!(!status.auto_start);

    manager(&node)
        .await?
        .resume_read_side(ResumeReadSideRequest {
            read_side_id: "manual".to_string(),
        })
        .await?;
    server.wait_for_accepted(1, DELIVERY_WAIT).await;
    node.stop().await?;
    // The operator resumed it: a restart does not pause it again.
    let mut node = TestNode::start(&store, running.address, &as_pairs(&settings)).await?;
    emit(&mut node, "acct-1", "b").await?;
    server.wait_for_accepted(2, DELIVERY_WAIT).await;
    node.stop().await
}

cos_integration::on_both_stores!(
    offsets_and_errors_name_shards_and_read_sides_precisely,
    a_paused_shard_waits_and_the_pause_survives_a_restart,
    restart_redelivers_a_shard_from_the_beginning,
    skip_passes_exactly_the_stuck_event_and_names_it,
    auto_start_false_starts_paused_and_a_resume_is_kept_across_restarts,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_read_sides_the_manager_is_unimplemented_as_in_the_original() -> anyhow::Result<()>
{
    let store = TestStore::new(Backend::Sqlite)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let node = TestNode::start(&store, running.address, &[]).await?;
    let error = manager(&node)
        .await?
        .get_latest_offset(GetLatestOffsetRequest {
            read_side_id: "view".to_string(),
        })
        .await
        .expect_err("not registered");
    assert_eq!(error.code(), Code::Unimplemented);
    node.stop().await
}
