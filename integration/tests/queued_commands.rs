//! Commands that queue up behind one entity's write share the next write: each still runs on the state the
//! previous one produced and gets its own revision, no answer is given before the write settles, and when
//! that write fails every command in it fails and none of them leaves a trace.

use std::time::Duration;

use cos_core::proto::chief_of_state::v1::{EventWrapper, GetStateRequest, ProcessCommandRequest};
use cos_core::store::Journal;
use cos_integration::support::faulty_journal::FaultyNode;
use cos_integration::support::node::{Backend, default_key};
use cos_integration::support::script_handler::{any_text, text_any};
use cos_integration::support::wait_until;
use prost::Message;
use tonic::Code;

fn command(entity_id: &str, script: &str) -> ProcessCommandRequest {
    ProcessCommandRequest {
        entity_id: entity_id.to_string(),
        command: Some(text_any(script)),
    }
}

/// Stored revisions with the state each one carries.
async fn stored(journal: &dyn Journal, entity_id: &str) -> anyhow::Result<Vec<(u32, Vec<u8>)>> {
    let rows = journal.events_after(&default_key(entity_id)?, 0).await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.revision, row.payload))
        .collect())
}

async fn commands_queued_behind_a_write_share_the_next_one_and_keep_their_order(
    backend: Backend,
) -> anyhow::Result<()> {
    let started = FaultyNode::start(backend, &[]).await?;
    let faulty = started.journal.clone();
    let node = started.node;
    // Slow commits, so that the other commands queue up behind the first write.
    faulty.delay_appends(Duration::from_millis(200));
    let count = 20;
    let mut tasks = Vec::new();
    for index in 0..count {
        let mut client = node.client.clone();
        tasks.push(tokio::spawn(async move {
            let reply = client
                .process_command(command("hot", &format!("emit:e{index}")))
                .await?
                .into_inner();
            anyhow::Ok((index, reply))
        }));
    }
    let mut by_revision = Vec::new();
    for task in tasks {
        let (index, reply) = task.await??;
        let revision = reply.meta.as_ref().map_or(0, |meta| meta.revision_number);
        let state = any_text(reply.state.as_ref());
        let parts: Vec<&str> = state.split('|').collect();
        // Each command ran on the state of all commands before it, and its answer ends with its own event.
        assert_eq!(parts.len(), revision as usize, "{state}");
        assert_eq!(parts.last().copied(), Some(format!("e{index}").as_str()));
        by_revision.push((revision, state));
    }
    by_revision.sort();
    let revisions: Vec<u32> = by_revision.iter().map(|(revision, _)| *revision).collect();
    assert_eq!(revisions, (1..=count).collect::<Vec<u32>>());
    // Every answer is a prefix of the next: one history, no fork.
    for pair in by_revision.windows(2) {
        assert!(pair[1].1.starts_with(&format!("{}|", pair[0].1)));
    }
    let rows = stored(faulty.as_ref(), "hot").await?;
    let stored_states: Vec<(u32, String)> = rows
        .iter()
        .map(|(revision, payload)| {
            let event = EventWrapper::decode(payload.as_slice())?;
            anyhow::Ok((*revision, any_text(event.resulting_state.as_ref())))
        })
        .collect::<Result<_, _>>()?;
    assert_eq!(
        stored_states, by_revision,
        "every answer is what was stored"
    );
    let writes = faulty.append_calls();
    assert!(
        writes <= 5,
        "{count} commands queued behind 200 ms commits share writes: {writes} writes"
    );
    node.stop().await
}

/// How the shared write of the second test fails.
#[derive(Clone, Copy)]
enum Fault {
    /// The database cannot be reached.
    Unreachable,
    /// The database refuses the write's data: which command's cannot be told.
    DataRefused,
}

async fn a_failed_shared_write_fails_all_its_commands_and_reads_see_only_stored_states(
    backend: Backend,
) -> anyhow::Result<()> {
    shared_write_fails(backend, Fault::Unreachable).await
}

async fn a_shared_write_whose_data_is_refused_fails_all_its_commands_retryably(
    backend: Backend,
) -> anyhow::Result<()> {
    shared_write_fails(backend, Fault::DataRefused).await
}

async fn shared_write_fails(backend: Backend, fault: Fault) -> anyhow::Result<()> {
    let started = FaultyNode::start(backend, &[]).await?;
    let faulty = started.journal.clone();
    let handler = started.handler.clone();
    let node = started.node;
    faulty.delay_appends(Duration::from_millis(200));
    // Write 1: the slow command alone. Write 2: the two commands queued behind it (the read ends the
    // batch, since it must see stored states only), made to fail. Write 3: the last command.
    match fault {
        Fault::Unreachable => faulty.fail_append_number(2),
        Fault::DataRefused => faulty.refuse_append_number(2),
    }
    let send = |script: &'static str| {
        let mut client = node.client.clone();
        tokio::spawn(async move { client.process_command(command("shared", script)).await })
    };
    let slow = send("sleep:500:x");
    assert!(wait_until(Duration::from_secs(5), || !handler.commands().is_empty()).await);
    // While the handler works on the slow command, the others queue up in this order.
    let pause = Duration::from_millis(40);
    let first = send("emit:a");
    tokio::time::sleep(pause).await;
    let second = send("emit:b");
    tokio::time::sleep(pause).await;
    let mut reader = node.client.clone();
    let read = tokio::spawn(async move {
        reader
            .get_state(GetStateRequest {
                entity_id: "shared".to_string(),
            })
            .await
    });
    tokio::time::sleep(pause).await;
    let last = send("emit:c");

    let slow = slow.await??.into_inner();
    assert_eq!(slow.meta.map(|meta| meta.revision_number), Some(1));
    for (name, failed) in [("a", first.await?), ("b", second.await?)] {
        let status = failed.expect_err("its shared write failed");
        // Retryable either way: a refusal of a shared write may be any of its commands' fault.
        assert_eq!(status.code(), Code::Unavailable, "{name}: {status:?}");
        if let Fault::DataRefused = fault {
            assert!(
                status.message().contains("shared by 2 commands"),
                "{status:?}"
            );
        }
    }
    let read = read.await??.into_inner();
    assert_eq!(
        (
            read.meta.map(|meta| meta.revision_number),
            any_text(read.state.as_ref())
        ),
        (Some(1), "x".to_string()),
        "the read sees the stored state, not the one the failed write would have made"
    );
    let last = last.await??.into_inner();
    assert_eq!(last.meta.map(|meta| meta.revision_number), Some(2));
    assert_eq!(
        any_text(last.state.as_ref()),
        "x|c",
        "a and b left no trace"
    );
    let revisions: Vec<u32> = stored(faulty.as_ref(), "shared")
        .await?
        .into_iter()
        .map(|(revision, _)| revision)
        .collect();
    assert_eq!(revisions, vec![1, 2]);
    assert_eq!(faulty.append_calls(), 3, "a and b shared one write");
    let handled: Vec<String> = handler
        .commands()
        .into_iter()
        .map(|command| format!("{}@{}", command.script, command.prior_state))
        .collect();
    assert_eq!(
        handled,
        ["sleep:500:x@", "emit:a@x", "emit:b@x|a", "emit:c@x"],
        "b ran on a's state; c ran on the stored state after the failure"
    );
    node.stop().await
}

async fn a_slow_command_joining_a_write_does_not_make_an_earlier_one_miss_its_deadline(
    backend: Backend,
) -> anyhow::Result<()> {
    let started = FaultyNode::start(backend, &[]).await?;
    let handler = started.handler.clone();
    let node = started.node;
    let first = {
        let mut client = node.client.clone();
        tokio::spawn(async move { client.process_command(command("late", "sleep:300:x")).await })
    };
    assert!(wait_until(Duration::from_secs(5), || !handler.commands().is_empty()).await);
    // Queued behind the first: a command due in a second, then a slow one with plenty of time.
    let mut due = tonic::Request::new(command("late", "emit:a"));
    due.set_timeout(Duration::from_millis(1_000));
    let due = {
        let mut client = node.client.clone();
        tokio::spawn(async move { client.process_command(due).await })
    };
    tokio::time::sleep(Duration::from_millis(40)).await;
    let slow = {
        let mut client = node.client.clone();
        tokio::spawn(async move {
            client
                .process_command(command("late", "sleep:1500:b"))
                .await
        })
    };

    assert_eq!(
        first
            .await??
            .into_inner()
            .meta
            .map(|meta| meta.revision_number),
        Some(1)
    );
    // Had the slow command been allowed to finish before the shared write, that write would have started
    // after the due command's deadline and both would have failed.
    let due = due
        .await?
        .map_err(|status| anyhow::anyhow!("due command: {status:?}"))?;
    assert_eq!(any_text(due.into_inner().state.as_ref()), "x|a");
    let slow = slow.await??.into_inner();
    assert_eq!(slow.meta.map(|meta| meta.revision_number), Some(3));
    assert_eq!(any_text(slow.state.as_ref()), "x|a|b");
    let slow_calls: Vec<String> = handler
        .commands()
        .into_iter()
        .filter(|command| command.script == "sleep:1500:b")
        .map(|command| command.prior_state)
        .collect();
    assert_eq!(
        slow_calls,
        ["x|a", "x|a"],
        "cut short while joining a's write, then run again once a was stored"
    );
    node.stop().await
}

cos_integration::on_both_stores!(
    commands_queued_behind_a_write_share_the_next_one_and_keep_their_order,
    a_failed_shared_write_fails_all_its_commands_and_reads_see_only_stored_states,
    a_shared_write_whose_data_is_refused_fails_all_its_commands_retryably,
    a_slow_command_joining_a_write_does_not_make_an_earlier_one_miss_its_deadline,
);
