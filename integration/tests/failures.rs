//! Failures between "decided" and "replied": failed and slow commits, conflicts with requests queued
//! behind them, and shutdown with commands in flight. The client's answer must always match the journal.

use std::time::Duration;

use cos_core::proto::chief_of_state::v1::ProcessCommandRequest;
use cos_core::store::Journal;
use cos_integration::support::faulty_journal::FaultyNode;
use cos_integration::support::node::{Backend, default_key, write_behind_its_back};
use cos_integration::support::script_handler::{any_text, text_any};
use cos_integration::support::wait_until;
use tonic::Code;

fn command(entity_id: &str, script: &str) -> ProcessCommandRequest {
    ProcessCommandRequest {
        entity_id: entity_id.to_string(),
        command: Some(text_any(script)),
    }
}

async fn stored_revisions(journal: &dyn Journal, entity_id: &str) -> anyhow::Result<Vec<u32>> {
    let rows = journal.events_after(&default_key(entity_id)?, 0).await?;
    Ok(rows.into_iter().map(|row| row.revision).collect())
}

async fn a_failed_commit_is_reported_and_the_entity_rereads_the_store(
    backend: Backend,
) -> anyhow::Result<()> {
    let started = FaultyNode::start(backend, &[]).await?;
    let faulty = started.journal.clone();
    let mut node = started.node;
    faulty.fail_next_appends(1);
    let error = node
        .client
        .process_command(command("f-1", "emit:a"))
        .await
        .expect_err("commit fails");
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");
    assert!(stored_revisions(faulty.as_ref(), "f-1").await?.is_empty());
    let next = node
        .client
        .process_command(command("f-1", "emit:b"))
        .await?
        .into_inner();
    assert_eq!(next.meta.map(|m| m.revision_number), Some(1));
    assert_eq!(
        any_text(next.state.as_ref()),
        "b",
        "the failed command left no trace"
    );
    node.stop().await
}

async fn answers_near_the_deadline_always_match_the_journal(
    backend: Backend,
) -> anyhow::Result<()> {
    let started = FaultyNode::start(backend, &[("COS_COMMAND_HANDLER_TIMEOUT", "1")]).await?;
    let faulty = started.journal.clone();
    let node = started.node;
    faulty.delay_appends(Duration::from_millis(250));
    let handler_delays = [600_u64, 750, 850, 880, 910, 950, 990];
    let mut tasks = Vec::new();
    for delay in handler_delays {
        let mut client = node.client.clone();
        tasks.push(tokio::spawn(async move {
            let entity_id = format!("edge-{delay}");
            let outcome = client
                .process_command(command(&entity_id, &format!("sleep:{delay}:late")))
                .await;
            (entity_id, outcome)
        }));
    }
    let (mut succeeded, mut refused) = (0, 0);
    for task in tasks {
        let (entity_id, outcome) = task.await?;
        let stored = stored_revisions(faulty.as_ref(), &entity_id).await?;
        match outcome {
            Ok(reply) => {
                succeeded += 1;
                assert_eq!(reply.into_inner().meta.map(|m| m.revision_number), Some(1));
                assert_eq!(
                    stored,
                    vec![1],
                    "{entity_id}: success must be in the journal"
                );
            }
            Err(status) => {
                refused += 1;
                assert_eq!(
                    status.code(),
                    Code::DeadlineExceeded,
                    "{entity_id}: {status:?}"
                );
                assert!(
                    stored.is_empty(),
                    "{entity_id}: a refused command must leave no trace"
                );
            }
        }
    }
    assert!(
        succeeded > 0 && refused > 0,
        "both sides of the boundary exercised: {succeeded} ok, {refused} refused"
    );
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_still_queued_at_its_deadline_is_never_made() -> anyhow::Result<()> {
    // SQLite has one transaction slot: a slow commit holds it while the next command's deadline passes.
    let started = FaultyNode::start(Backend::Sqlite, &[]).await?;
    let faulty = started.journal.clone();
    let node = started.node;
    faulty.delay_appends(Duration::from_millis(600));
    let mut slow_client = node.client.clone();
    let slow = tokio::spawn(async move {
        slow_client
            .process_command(command("slot-holder", "emit:a"))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut request = tonic::Request::new(command("queued", "emit:b"));
    request.set_timeout(Duration::from_millis(300));
    let mut client = node.client.clone();
    let error = client
        .process_command(request)
        .await
        .expect_err("deadline passes in the queue");
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
    assert!(slow.await?.is_ok());
    assert_eq!(
        stored_revisions(faulty.as_ref(), "slot-holder").await?,
        vec![1]
    );
    // Give the writer time to (wrongly) write the expired request, then check it did not.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        stored_revisions(faulty.as_ref(), "queued")
            .await?
            .is_empty()
    );
    node.stop().await
}

async fn requests_queued_behind_a_conflict_are_all_answered(
    backend: Backend,
) -> anyhow::Result<()> {
    let started = FaultyNode::start(backend, &[]).await?;
    let store = &started.store;
    let mut node = started.node;
    node.client
        .process_command(command("busy", "emit:a"))
        .await?;
    assert_eq!(write_behind_its_back(store, "busy").await?, 2);
    let journal = store.open_journal().await?;
    let mut tasks = Vec::new();
    for index in 0..8 {
        let mut client = node.client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .process_command(command("busy", &format!("emit:q{index}")))
                .await
        }));
    }
    let (mut aborted, mut revisions) = (0, Vec::new());
    for task in tasks {
        match task.await? {
            Ok(reply) => revisions.push(reply.into_inner().meta.map_or(0, |m| m.revision_number)),
            Err(status) if status.code() == Code::Aborted => aborted += 1,
            Err(status) => panic!("a queued request was lost or failed: {status:?}"),
        }
    }
    assert_eq!(aborted, 1, "only the command that met the conflict fails");
    revisions.sort_unstable();
    assert_eq!(revisions, (3..=9).collect::<Vec<u32>>());
    assert_eq!(
        stored_revisions(journal.as_ref(), "busy").await?,
        (1..=9).collect::<Vec<u32>>()
    );
    journal.close().await;
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_commands_in_flight() -> anyhow::Result<()> {
    let started = FaultyNode::start(Backend::Sqlite, &[]).await?;
    let store = &started.store;
    let handler = started.handler.clone();
    let node = started.node;
    let mut client = node.client.clone();
    let in_flight = tokio::spawn(async move {
        client
            .process_command(command("inflight", "sleep:600:done"))
            .await
    });
    assert!(wait_until(Duration::from_secs(5), || !handler.commands().is_empty()).await);
    node.node.shutdown().await?;
    let reply = in_flight
        .await?
        .map_err(|status| anyhow::anyhow!("in-flight command failed: {status:?}"))?;
    assert_eq!(reply.into_inner().meta.map(|m| m.revision_number), Some(1));
    let journal = store.open_journal().await?;
    assert_eq!(
        stored_revisions(journal.as_ref(), "inflight").await?,
        vec![1]
    );
    journal.close().await;
    Ok(())
}

cos_integration::on_both_stores!(
    a_failed_commit_is_reported_and_the_entity_rereads_the_store,
    answers_near_the_deadline_always_match_the_journal,
    requests_queued_behind_a_conflict_are_all_answered,
);
