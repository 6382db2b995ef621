//! The write path end to end, on SQLite and on PostgreSQL: a real node, a real write handler, gRPC over
//! loopback sockets. Every scenario runs once per store.

use std::time::Duration;

use cos_core::domain::EMPTY_TYPE_URL;
use cos_core::proto::chief_of_state::v1::chief_of_state_service_client::ChiefOfStateServiceClient;
use cos_core::proto::chief_of_state::v1::{
    GetStateRequest, GetStateResponse, ProcessCommandRequest, ProcessCommandResponse, header,
};
use cos_core::store::decode_event;
use cos_integration::support::node::{
    Backend, TestNode, TestStore, default_key, write_behind_its_back,
};
use cos_integration::support::script_handler::{ScriptHandler, any_text, text_any};
use cos_integration::support::{ClosedPort, wait_until};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

type Client = ChiefOfStateServiceClient<Channel>;

fn command(entity_id: &str, script: &str) -> ProcessCommandRequest {
    ProcessCommandRequest {
        entity_id: entity_id.to_string(),
        command: Some(text_any(script)),
    }
}

async fn send(
    client: &mut Client,
    entity_id: &str,
    script: &str,
) -> Result<ProcessCommandResponse, Status> {
    client
        .process_command(command(entity_id, script))
        .await
        .map(tonic::Response::into_inner)
}

async fn get_state(client: &mut Client, entity_id: &str) -> Result<GetStateResponse, Status> {
    client
        .get_state(GetStateRequest {
            entity_id: entity_id.to_string(),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn revision(response: &ProcessCommandResponse) -> u32 {
    response
        .meta
        .as_ref()
        .map_or(0, |meta| meta.revision_number)
}

/// Revisions and resulting states stored in the journal for an entity of the default type.
async fn journal_contents(
    store: &TestStore,
    entity_id: &str,
) -> anyhow::Result<Vec<(u32, String)>> {
    let journal = store.open_journal().await?;
    let rows = journal.events_after(&default_key(entity_id)?, 0).await?;
    let mut contents = Vec::new();
    for row in rows {
        let wrapper = decode_event(&row)?;
        contents.push((row.revision, any_text(wrapper.resulting_state.as_ref())));
    }
    journal.close().await;
    Ok(contents)
}

async fn setup(
    backend: Backend,
    extra: &[(&str, &str)],
) -> anyhow::Result<(
    TestStore,
    ScriptHandler,
    cos_integration::support::script_handler::RunningHandler,
    TestNode,
)> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let node = TestNode::start(&store, running.address, extra).await?;
    Ok((store, handler, running, node))
}

async fn revisions_count_up_from_one_and_get_state_agrees(backend: Backend) -> anyhow::Result<()> {
    let (_store, _handler, _running, mut node) = setup(backend, &[]).await?;
    for (index, event) in ["a", "b", "c"].iter().enumerate() {
        let response = send(&mut node.client, "acct-1", &format!("emit:{event}")).await?;
        assert_eq!(revision(&response), u32::try_from(index + 1)?);
        assert_eq!(
            response.meta.as_ref().map(|m| m.entity_id.as_str()),
            Some("acct-1")
        );
        assert!(
            response
                .meta
                .as_ref()
                .and_then(|m| m.revision_date)
                .is_some()
        );
    }
    let state = get_state(&mut node.client, "acct-1").await?;
    assert_eq!(any_text(state.state.as_ref()), "a|b|c");
    assert_eq!(state.meta.map(|m| m.revision_number), Some(3));
    node.stop().await
}

async fn no_op_commands_change_nothing_on_new_and_existing_entities(
    backend: Backend,
) -> anyhow::Result<()> {
    let (store, handler, _running, mut node) = setup(backend, &[]).await?;
    let fresh = send(&mut node.client, "acct-2", "noop").await?;
    assert_eq!(revision(&fresh), 0);
    assert_eq!(
        fresh.state.as_ref().map(|s| s.type_url.as_str()),
        Some(EMPTY_TYPE_URL)
    );
    let missing = get_state(&mut node.client, "acct-2")
        .await
        .expect_err("never written");
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(missing.message(), "");

    send(&mut node.client, "acct-2", "emit:x").await?;
    let unchanged = send(&mut node.client, "acct-2", "noop").await?;
    assert_eq!(revision(&unchanged), 1);
    assert_eq!(any_text(unchanged.state.as_ref()), "x");
    assert_eq!(handler.events().len(), 1, "a no-op calls no HandleEvent");
    node.stop().await?;
    assert_eq!(
        journal_contents(&store, "acct-2").await?,
        vec![(1, "x".to_string())]
    );
    Ok(())
}

async fn multi_event_command_chains_states_and_revisions(backend: Backend) -> anyhow::Result<()> {
    let (store, handler, _running, mut node) = setup(backend, &[]).await?;
    let response = send(&mut node.client, "acct-3", "emit:a,b,c").await?;
    assert_eq!(revision(&response), 3);
    assert_eq!(any_text(response.state.as_ref()), "a|b|c");
    let seen: Vec<(String, String, u32)> = handler
        .events()
        .into_iter()
        .map(|event| (event.event, event.prior_state, event.revision))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("a".to_string(), String::new(), 1),
            ("b".to_string(), "a".to_string(), 2),
            ("c".to_string(), "a|b".to_string(), 3),
        ]
    );
    let legacy = send(&mut node.client, "acct-3", "emit-legacy:d").await?;
    assert_eq!(revision(&legacy), 4);
    node.stop().await?;
    assert_eq!(
        journal_contents(&store, "acct-3").await?,
        vec![
            (1, "a".to_string()),
            (2, "a|b".to_string()),
            (3, "a|b|c".to_string()),
            (4, "a|b|c|d".to_string()),
        ]
    );
    Ok(())
}

async fn handler_errors_reach_the_client_with_code_message_and_details(
    backend: Backend,
) -> anyhow::Result<()> {
    let (store, _handler, _running, mut node) = setup(backend, &[]).await?;
    let error = send(
        &mut node.client,
        "acct-4",
        "fail-details:9:insufficient funds",
    )
    .await
    .expect_err("handler refuses");
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(error.message(), "insufficient funds");
    let details = error.get_error_details();
    let bad_request = details.bad_request().expect("BadRequest detail survives");
    assert_eq!(bad_request.field_violations[0].field, "amount");

    let bare = send(&mut node.client, "acct-4", "fail:2:")
        .await
        .expect_err("unknown");
    assert_eq!(bare.code(), Code::Unknown);
    assert_eq!(bare.message(), "");
    node.stop().await?;
    assert!(journal_contents(&store, "acct-4").await?.is_empty());
    Ok(())
}

async fn an_unreachable_handler_gives_unavailable(backend: Backend) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let reserved = ClosedPort::reserve()?;
    let closed_port = reserved.address();
    let mut node = TestNode::start(&store, closed_port, &[]).await?;
    let error = send(&mut node.client, "acct-5", "emit:a")
        .await
        .expect_err("nobody listens");
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");
    assert!(
        error.message().contains(&closed_port.to_string()),
        "{}",
        error.message()
    );
    node.stop().await?;
    assert!(journal_contents(&store, "acct-5").await?.is_empty());
    Ok(())
}

async fn a_slow_handler_times_out_and_its_command_is_never_persisted(
    backend: Backend,
) -> anyhow::Result<()> {
    let (store, handler, _running, mut node) =
        setup(backend, &[("COS_COMMAND_HANDLER_TIMEOUT", "1")]).await?;
    let error = send(&mut node.client, "acct-6", "sleep:1800:late")
        .await
        .expect_err("too slow");
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
    assert!(
        wait_until(Duration::from_secs(5), || handler.finished_sleeps() == 1).await,
        "the handler eventually answers"
    );
    // The late answer arrived; give the entity a moment to (wrongly) act on it, then check it did not.
    let missing = get_state(&mut node.client, "acct-6")
        .await
        .expect_err("nothing persisted");
    assert_eq!(missing.code(), Code::NotFound);
    let next = send(&mut node.client, "acct-6", "emit:x").await?;
    assert_eq!(revision(&next), 1);

    // A client deadline shorter than the server's is honoured too. (600 ms: the server answers about 100 ms
    // before it, room enough for a busy CI machine; at 200 ms the room was under 40 ms.)
    let mut request = tonic::Request::new(command("acct-7", "sleep:1500:late"));
    request.set_timeout(Duration::from_millis(600));
    let error = node
        .client
        .process_command(request)
        .await
        .expect_err("client deadline");
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
    assert!(wait_until(Duration::from_secs(5), || handler.finished_sleeps() == 2).await);
    node.stop().await?;
    assert_eq!(
        journal_contents(&store, "acct-6").await?,
        vec![(1, "x".to_string())]
    );
    assert!(journal_contents(&store, "acct-7").await?.is_empty());
    Ok(())
}

async fn state_and_revision_survive_a_restart(backend: Backend) -> anyhow::Result<()> {
    let (store, handler, running, mut node) = setup(backend, &[]).await?;
    send(&mut node.client, "acct-8", "emit:a,b").await?;
    node.stop().await?;

    let mut restarted = TestNode::start(&store, running.address, &[]).await?;
    let state = get_state(&mut restarted.client, "acct-8").await?;
    assert_eq!(any_text(state.state.as_ref()), "a|b");
    assert_eq!(state.meta.map(|m| m.revision_number), Some(2));
    let next = send(&mut restarted.client, "acct-8", "emit:c").await?;
    assert_eq!(revision(&next), 3);
    let last_command = handler.commands().pop().expect("command seen");
    assert_eq!(
        (
            last_command.prior_state.as_str(),
            last_command.prior_revision
        ),
        ("a|b", 2)
    );
    restarted.stop().await
}

async fn snapshots_are_taken_pruned_and_used_for_recovery(backend: Backend) -> anyhow::Result<()> {
    let settings = [
        ("COS_SNAPSHOT_FREQUENCY", "2"),
        ("COS_NUM_SNAPSHOTS_TO_RETAIN", "2"),
    ];
    let (store, _handler, running, mut node) = setup(backend, &settings).await?;
    for index in 1..=7 {
        send(&mut node.client, "acct-9", &format!("emit:e{index}")).await?;
    }
    node.stop().await?;
    let journal = store.open_journal().await?;
    let key = default_key("acct-9")?;
    assert_eq!(
        journal.snapshot_revisions(&key).await?,
        vec![4, 6],
        "two newest kept"
    );
    assert_eq!(
        journal.events_after(&key, 0).await?.len(),
        7,
        "no compaction by default"
    );
    journal.close().await;

    // With compaction and a single retained snapshot, the journal keeps nothing the snapshot covers, so a
    // correct recovery after restart must come from the snapshot.
    let compacting = [
        ("COS_SNAPSHOT_FREQUENCY", "2"),
        ("COS_NUM_SNAPSHOTS_TO_RETAIN", "1"),
        ("COS_JOURNAL_LOGICAL_DELETION", "true"),
    ];
    let mut node = TestNode::start(&store, running.address, &compacting).await?;
    send(&mut node.client, "acct-9", "emit:e8").await?;
    node.stop().await?;
    let journal = store.open_journal().await?;
    assert_eq!(journal.snapshot_revisions(&key).await?, vec![8]);
    assert!(
        journal.events_after(&key, 0).await?.is_empty(),
        "events covered by the snapshot deleted"
    );
    let recovered = journal.latest_state(&key).await?.expect("state stored");
    assert_eq!(recovered.source, cos_core::store::RecoverySource::Snapshot);
    journal.close().await;

    let mut node = TestNode::start(&store, running.address, &compacting).await?;
    let state = get_state(&mut node.client, "acct-9").await?;
    assert_eq!(any_text(state.state.as_ref()), "e1|e2|e3|e4|e5|e6|e7|e8");
    assert_eq!(state.meta.map(|m| m.revision_number), Some(8));
    let next = send(&mut node.client, "acct-9", "emit:e9").await?;
    assert_eq!(revision(&next), 9);
    node.stop().await
}

async fn bad_entity_ids_are_rejected(backend: Backend) -> anyhow::Result<()> {
    let (store, handler, _running, mut node) = setup(backend, &[]).await?;
    let long_id = "x".repeat(300);
    let error = send(&mut node.client, &long_id, "emit:a")
        .await
        .expect_err("too long");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().contains("255"), "{}", error.message());
    let error = get_state(&mut node.client, &long_id)
        .await
        .expect_err("too long");
    assert_eq!(error.code(), Code::InvalidArgument);
    let error = send(&mut node.client, "", "emit:a")
        .await
        .expect_err("empty");
    assert_eq!(
        (error.code(), error.message()),
        (Code::InvalidArgument, "empty entity ID")
    );
    let error = get_state(&mut node.client, "").await.expect_err("empty");
    assert_eq!(
        (error.code(), error.message()),
        (Code::InvalidArgument, "empty entity ID")
    );
    assert!(
        handler.commands().is_empty(),
        "rejected before reaching the handler"
    );
    node.stop().await?;
    let journal = store.open_journal().await?;
    assert!(
        journal
            .latest_state(&default_key(&"x".repeat(255))?)
            .await?
            .is_none()
    );
    journal.close().await;
    Ok(())
}

async fn an_unknown_entity_type_is_rejected(backend: Backend) -> anyhow::Result<()> {
    let (_store, handler, _running, mut node) = setup(backend, &[]).await?;
    let mut request = tonic::Request::new(command("acct-10", "emit:a"));
    request
        .metadata_mut()
        .insert("x-cos-entity-type", "nope".parse()?);
    let error = node
        .client
        .process_command(request)
        .await
        .expect_err("unknown type");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().contains("nope"), "{}", error.message());
    assert!(handler.commands().is_empty());
    node.stop().await
}

async fn a_second_writer_is_rejected_and_the_stale_entity_steps_aside(
    backend: Backend,
) -> anyhow::Result<()> {
    let (store, handler, _running, mut node) = setup(backend, &[]).await?;
    send(&mut node.client, "acct-11", "emit:a").await?;
    // Another writer (say, a node on the wrong side of a partition) stores revision 2 behind our back.
    assert_eq!(write_behind_its_back(&store, "acct-11").await?, 2);

    let error = send(&mut node.client, "acct-11", "emit:b")
        .await
        .expect_err("conflict");
    assert_eq!(error.code(), Code::Aborted, "{error:?}");
    let retried = send(&mut node.client, "acct-11", "emit:c").await?;
    assert_eq!(revision(&retried), 3);
    assert_eq!(any_text(retried.state.as_ref()), "a|foreign|c");
    assert_eq!(handler.commands().last().map(|c| c.prior_revision), Some(2));
    node.stop().await?;
    let contents = journal_contents(&store, "acct-11").await?;
    assert_eq!(
        contents.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        contents[1].1, "a|foreign",
        "the first writer's revision 2 was never overwritten"
    );
    Ok(())
}

async fn fifty_concurrent_commands_to_one_entity_get_revisions_one_to_fifty(
    backend: Backend,
) -> anyhow::Result<()> {
    let (store, _handler, _running, node) = setup(backend, &[]).await?;
    let mut tasks = Vec::new();
    for index in 0..50 {
        let mut client = node.client.clone();
        tasks.push(tokio::spawn(async move {
            send(&mut client, "hot", &format!("emit:e{index}"))
                .await
                .map(|r| revision(&r))
        }));
    }
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.push(task.await??);
    }
    revisions.sort_unstable();
    assert_eq!(revisions, (1..=50).collect::<Vec<u32>>());
    node.stop().await?;
    let stored: Vec<u32> = journal_contents(&store, "hot")
        .await?
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert_eq!(stored, (1..=50).collect::<Vec<u32>>());
    Ok(())
}

async fn propagated_headers_reach_the_handler_and_persisted_headers_come_back(
    backend: Backend,
) -> anyhow::Result<()> {
    let settings = [
        (
            "COS_WRITE_SIDE_PROPAGATED_HEADERS",
            "x-trace-id, x-blob-bin",
        ),
        ("COS_WRITE_PERSISTED_HEADERS", "X-User"),
    ];
    let (_store, handler, _running, mut node) = setup(backend, &settings).await?;
    let mut request = tonic::Request::new(command("acct-12", "emit:a"));
    request
        .metadata_mut()
        .insert("x-trace-id", "trace-1".parse()?);
    request.metadata_mut().insert_bin(
        "x-blob-bin",
        tonic::metadata::MetadataValue::from_bytes(b"raw"),
    );
    request.metadata_mut().insert("x-user", "alice".parse()?);
    request
        .metadata_mut()
        .insert("x-other", "not configured".parse()?);
    let response = node.client.process_command(request).await?.into_inner();

    let seen = handler.commands().pop().expect("command seen").metadata;
    let has = |key: &str, value: &str| seen.iter().any(|(k, v)| k == key && v == value);
    assert!(has("x-trace-id", "trace-1"), "{seen:?}");
    assert!(has("x-blob-bin", "raw"), "{seen:?}");
    assert!(
        !seen.iter().any(|(k, _)| k == "x-user" || k == "x-other"),
        "{seen:?}"
    );

    let headers = response.meta.expect("meta").headers;
    assert_eq!(headers.len(), 1);
    assert_eq!(headers[0].key, "X-User");
    assert_eq!(
        headers[0].value,
        Some(header::Value::StringValue("alice".into()))
    );
    assert_eq!(handler.events()[0].header_keys, vec!["X-User".to_string()]);
    let state = get_state(&mut node.client, "acct-12").await?;
    assert_eq!(state.meta.expect("meta").headers.len(), 1);
    node.stop().await
}

async fn proto_validation_rejects_unlisted_types_and_leaves_no_trace(
    backend: Backend,
) -> anyhow::Result<()> {
    let settings = [
        ("COS_WRITE_SIDE_PROTO_VALIDATION", "true"),
        ("COS_WRITE_SIDE_EVENT_PROTOS", "google.protobuf.StringValue"),
        ("COS_WRITE_SIDE_STATE_PROTOS", "google.protobuf.StringValue"),
    ];
    let (store, handler, _running, mut node) = setup(backend, &settings).await?;
    let error = send(
        &mut node.client,
        "acct-13",
        "emit-type:type.googleapis.com/bank.Unknown",
    )
    .await
    .expect_err("unlisted event type");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(
        error.message(),
        "invalid event: type.googleapis.com/bank.Unknown"
    );
    assert!(
        handler.events().is_empty(),
        "checked before any HandleEvent"
    );
    send(&mut node.client, "acct-13", "emit:ok").await?;
    node.stop().await?;
    assert_eq!(
        journal_contents(&store, "acct-13").await?,
        vec![(1, "ok".to_string())]
    );
    Ok(())
}

async fn a_handler_reply_without_state_fails_the_whole_command(
    backend: Backend,
) -> anyhow::Result<()> {
    let (store, _handler, _running, mut node) = setup(backend, &[]).await?;
    let error = send(&mut node.client, "acct-14", "emit:a,!nostate")
        .await
        .expect_err("no state");
    assert_eq!(
        (error.code(), error.message()),
        (
            Code::InvalidArgument,
            "event handler replied with empty state"
        )
    );
    node.stop().await?;
    assert!(
        journal_contents(&store, "acct-14").await?.is_empty(),
        "not even the first event"
    );
    Ok(())
}

cos_integration::on_both_stores!(
    revisions_count_up_from_one_and_get_state_agrees,
    no_op_commands_change_nothing_on_new_and_existing_entities,
    multi_event_command_chains_states_and_revisions,
    handler_errors_reach_the_client_with_code_message_and_details,
    an_unreachable_handler_gives_unavailable,
    a_slow_handler_times_out_and_its_command_is_never_persisted,
    state_and_revision_survive_a_restart,
    snapshots_are_taken_pruned_and_used_for_recovery,
    bad_entity_ids_are_rejected,
    an_unknown_entity_type_is_rejected,
    a_second_writer_is_rejected_and_the_stale_entity_steps_aside,
    fifty_concurrent_commands_to_one_entity_get_revisions_one_to_fifty,
    propagated_headers_reach_the_handler_and_persisted_headers_come_back,
    proto_validation_rejects_unlisted_types_and_leaves_no_trace,
    a_handler_reply_without_state_fails_the_whole_command,
);
