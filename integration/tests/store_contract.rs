//! The storage contract, run against both implementations (the TiKV rule: a second implementation proves
//! the abstraction), plus group commit through the journal writer.

use std::sync::Arc;

use cos_core::domain::{EntityKey, Revision};
use cos_core::proto::chief_of_state::v1::{EventWrapper, MetaData, StateWrapper};
use cos_core::store::{
    AppendRequest, EncodedEvent, Journal, JournalWriter, RecoverySource, ShardCommits, ShardEvent,
    SnapshotWrite, StoreError, WriterOptions,
};
use cos_integration::support::database::{TestPostgres, own_connections_to};
use cos_integration::support::faulty_journal::FaultyJournal;
use cos_integration::support::node::{Backend, TestStore, default_key, typed_key};
use cos_integration::support::script_handler::{any_text, text_any};
use prost::Message;

fn event(revision: Revision, state: &str) -> EncodedEvent {
    let wrapper = EventWrapper {
        event: Some(text_any(&format!("e{revision}"))),
        resulting_state: Some(text_any(state)),
        meta: Some(MetaData {
            revision_number: revision,
            ..MetaData::default()
        }),
    };
    EncodedEvent {
        revision,
        payload: wrapper.encode_to_vec(),
    }
}

fn append(key: &EntityKey, events: Vec<EncodedEvent>) -> AppendRequest {
    let expected_revision = events.first().map_or(0, |event| event.revision - 1);
    AppendRequest {
        key: key.clone(),
        expected_revision,
        shard: 3,
        events,
        snapshot: None,
    }
}

fn snapshot(
    revision: Revision,
    state: &str,
    delete_before: Revision,
    delete_events: Option<Revision>,
) -> SnapshotWrite {
    let wrapper = StateWrapper {
        state: Some(text_any(state)),
        meta: Some(MetaData {
            revision_number: revision,
            ..MetaData::default()
        }),
    };
    SnapshotWrite {
        revision,
        payload: wrapper.encode_to_vec(),
        delete_snapshots_before: delete_before,
        delete_events_through: delete_events,
    }
}

async fn open(backend: Backend) -> anyhow::Result<(TestStore, Arc<dyn Journal>)> {
    let store = TestStore::new(backend)?;
    let journal = store.open_journal().await?;
    Ok((store, journal))
}

async fn a_second_writer_for_a_revision_is_rejected(backend: Backend) -> anyhow::Result<()> {
    let (_store, journal) = open(backend).await?;
    let key = default_key("dup")?;
    journal
        .append_atomically(&[append(&key, vec![event(1, "a")])])
        .await?;
    let error = journal
        .append_atomically(&[append(&key, vec![event(1, "other")])])
        .await
        .expect_err("revision 1 exists");
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
    let rows = journal.events_after(&key, 0).await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        any_text(
            cos_core::store::decode_event(&rows[0])?
                .resulting_state
                .as_ref()
        ),
        "a",
        "not overwritten"
    );
    journal.close().await;
    Ok(())
}

async fn a_failed_batch_writes_nothing(backend: Backend) -> anyhow::Result<()> {
    let (_store, journal) = open(backend).await?;
    let taken = default_key("taken")?;
    let innocent = default_key("innocent")?;
    journal
        .append_atomically(&[append(&taken, vec![event(1, "a")])])
        .await?;
    let result = journal
        .append_atomically(&[
            append(&innocent, vec![event(1, "x"), event(2, "x|y")]),
            append(&taken, vec![event(1, "b")]),
        ])
        .await;
    assert!(matches!(result, Err(StoreError::Conflict(_))));
    assert!(
        journal.events_after(&innocent, 0).await?.is_empty(),
        "all or nothing"
    );
    journal.close().await;
    Ok(())
}

async fn latest_state_prefers_the_newest_of_snapshot_and_event(
    backend: Backend,
) -> anyhow::Result<()> {
    let (_store, journal) = open(backend).await?;
    let key = default_key("recover")?;
    assert!(journal.latest_state(&key).await?.is_none());
    journal
        .append_atomically(&[append(&key, vec![event(1, "a"), event(2, "a|b")])])
        .await?;
    let mut with_snapshot = append(&key, vec![event(3, "a|b|c")]);
    with_snapshot.snapshot = Some(snapshot(3, "a|b|c", 3, None));
    journal.append_atomically(&[with_snapshot]).await?;
    let latest = journal.latest_state(&key).await?.expect("state");
    assert_eq!(
        (latest.revision, latest.source),
        (3, RecoverySource::Snapshot),
        "a snapshot and an event of the same revision: the snapshot is read"
    );
    assert_eq!(any_text(latest.state.state.as_ref()), "a|b|c");
    journal
        .append_atomically(&[append(&key, vec![event(4, "a|b|c|d")])])
        .await?;
    let latest = journal.latest_state(&key).await?.expect("state");
    assert_eq!((latest.revision, latest.source), (4, RecoverySource::Event));
    assert_eq!(any_text(latest.state.state.as_ref()), "a|b|c|d");

    // Compaction removes the covered events; the snapshot then carries the state.
    let mut compacting = append(&key, vec![event(5, "a|b|c|d|e")]);
    compacting.snapshot = Some(snapshot(5, "a|b|c|d|e", 5, Some(5)));
    journal.append_atomically(&[compacting]).await?;
    assert_eq!(journal.snapshot_revisions(&key).await?, vec![5]);
    assert!(journal.events_after(&key, 0).await?.is_empty());
    let latest = journal.latest_state(&key).await?.expect("state");
    assert_eq!(
        (latest.revision, latest.source),
        (5, RecoverySource::Snapshot)
    );
    journal.close().await;
    Ok(())
}

async fn isolated_appends_refuse_only_the_conflicting_request(
    backend: Backend,
) -> anyhow::Result<()> {
    let (_store, journal) = open(backend).await?;
    let taken = default_key("iso-taken")?;
    let innocent = default_key("iso-innocent")?;
    journal
        .append_atomically(&[append(&taken, vec![event(1, "a")])])
        .await?;
    let outcomes = journal
        .append_batch(&[
            append(&innocent, vec![event(1, "x"), event(2, "x|y")]),
            append(&taken, vec![event(1, "b"), event(2, "b|c")]),
        ])
        .await?;
    assert!(outcomes[0].is_ok());
    assert!(
        matches!(outcomes[1], Err(StoreError::Conflict(_))),
        "{outcomes:?}"
    );
    assert_eq!(journal.events_after(&innocent, 0).await?.len(), 2);
    assert_eq!(
        journal.events_after(&taken, 0).await?.len(),
        1,
        "no part of the refused request is written"
    );
    journal.close().await;
    Ok(())
}

async fn a_batch_mixing_snapshots_and_plain_appends_is_written_per_request(
    backend: Backend,
) -> anyhow::Result<()> {
    let (_store, journal) = open(backend).await?;
    let fresh = default_key("mix-fresh")?;
    let snapshotted = default_key("mix-snapshotted")?;
    let stale = default_key("mix-stale")?;
    journal
        .append_atomically(&[
            append(&snapshotted, vec![event(1, "s")]),
            append(&stale, vec![event(1, "t"), event(2, "t|u")]),
        ])
        .await?;
    let mut with_snapshot = append(&snapshotted, vec![event(2, "s|2")]);
    with_snapshot.snapshot = Some(snapshot(2, "s|2", 1, None));
    let outcomes = journal
        .append_batch(&[
            append(&fresh, vec![event(1, "f")]),
            with_snapshot,
            append(&stale, vec![event(2, "old")]),
        ])
        .await?;
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "{outcomes:?}");
    assert!(
        matches!(outcomes[2], Err(StoreError::Conflict(_))),
        "{outcomes:?}"
    );
    assert_eq!(journal.head_revision(&fresh).await?, 1);
    assert_eq!(journal.head_revision(&snapshotted).await?, 2);
    assert_eq!(journal.snapshot_revisions(&snapshotted).await?, vec![2]);
    assert_eq!(journal.head_revision(&stale).await?, 2);
    let stale_rows = journal.events_after(&stale, 0).await?;
    assert_eq!(
        any_text(
            cos_core::store::decode_event(&stale_rows[1])?
                .resulting_state
                .as_ref()
        ),
        "t|u"
    );
    journal.close().await;
    Ok(())
}

async fn a_stale_writer_is_refused_even_after_compaction(backend: Backend) -> anyhow::Result<()> {
    let (_store, journal) = open(backend).await?;
    let key = default_key("compacted")?;
    journal
        .append_atomically(&[append(&key, vec![event(1, "a"), event(2, "a|b")])])
        .await?;
    let mut compacting = append(&key, vec![event(3, "a|b|c")]);
    compacting.snapshot = Some(snapshot(3, "a|b|c", 3, Some(3)));
    journal.append_atomically(&[compacting]).await?;
    assert!(
        journal.events_after(&key, 0).await?.is_empty(),
        "rows 1..3 compacted away"
    );
    // A writer that still believes the entity is at revision 1 writes revision 2: no row collides any more.
    let error = journal
        .append_atomically(&[append(&key, vec![event(2, "stale")])])
        .await
        .expect_err("the head is at 3");
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
    assert_eq!(journal.head_revision(&key).await?, 3);
    journal.close().await;
    Ok(())
}

fn append_in_shard(key: &EntityKey, shard: u32, events: Vec<EncodedEvent>) -> AppendRequest {
    AppendRequest {
        shard,
        ..append(key, events)
    }
}

async fn shard_events(journal: &dyn Journal, shard: u32) -> anyhow::Result<Vec<ShardEvent>> {
    Ok(journal.shard_events_after(shard, 0, 10_000).await?)
}

async fn each_shard_numbers_its_events_without_gaps_in_commit_order(
    backend: Backend,
) -> anyhow::Result<()> {
    let (_store, journal) = open(backend).await?;
    let (writer, task) = JournalWriter::spawn(
        journal.clone(),
        WriterOptions {
            max_concurrent_batches: 2,
            ..WriterOptions::default()
        },
        ShardCommits::new(16),
    );
    let mut appends = Vec::new();
    for index in 0..60_u32 {
        let writer = writer.clone();
        let key = default_key(&format!("numbered-{index}"))?;
        let shard = index % 3;
        appends.push(tokio::spawn(async move {
            writer
                .append(
                    append_in_shard(&key, shard, vec![event(1, "a"), event(2, "a|b")]),
                    None,
                )
                .await
        }));
    }
    for handle in appends {
        handle.await??;
    }
    drop(writer);
    task.await?;
    for shard in 0..3 {
        let events = shard_events(journal.as_ref(), shard).await?;
        let offsets: Vec<u64> = events.iter().map(|event| event.offset).collect();
        assert_eq!(
            offsets,
            (1..=40).collect::<Vec<u64>>(),
            "shard {shard}: gap-free from 1"
        );
        for pair in events.windows(2) {
            if pair[0].key == pair[1].key {
                assert!(pair[0].revision < pair[1].revision, "per-entity order kept");
            }
        }
        let rest = journal.shard_events_after(shard, 30, 100).await?;
        assert_eq!(
            rest.first().map(|event| event.offset),
            Some(31),
            "reading resumes after an offset"
        );
    }
    journal.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_late_commit_is_numbered_before_anything_that_commits_after_it()
-> anyhow::Result<()> {
    // A writer that took offset 2 of shard 5 but has not committed yet holds the shard's counter: a later
    // append to the shard waits for it, so no reader can see offset 3 while offset 2 is still invisible.
    let (store, journal) = open(Backend::Postgres).await?;
    journal
        .append_atomically(&[append_in_shard(
            &default_key("late-first")?,
            5,
            vec![event(1, "x")],
        )])
        .await?;
    let pool = store.postgres_pool().await?;
    let mut slow_writer = pool.begin().await?;
    sqlx::query("UPDATE cos_shard_offsets SET last_offset = last_offset + 1 WHERE shard = 5")
        .execute(&mut *slow_writer)
        .await?;
    let blocked_journal = journal.clone();
    let blocked = tokio::spawn(async move {
        let key = default_key("late-second")?;
        blocked_journal
            .append_atomically(&[append_in_shard(&key, 5, vec![event(1, "y")])])
            .await?;
        anyhow::Ok(())
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !blocked.is_finished(),
        "the later append waits for the earlier numbering to commit"
    );
    assert_eq!(
        journal.shard_events_after(5, 1, 10).await?,
        Vec::new(),
        "nothing beyond offset 1 is visible"
    );
    let late_payload = cos_core::proto::chief_of_state::v1::EventWrapper {
        event: Some(text_any("late")),
        resulting_state: Some(text_any("late")),
        meta: Some(MetaData {
            revision_number: 1,
            ..MetaData::default()
        }),
    }
    .encode_to_vec();
    sqlx::query(
        "INSERT INTO cos_journal (entity_type, entity_id, revision, shard, event_payload, written_at, shard_offset) \
         VALUES ('default', 'late-slow', 1, 5, $1, 0, 2)",
    )
    .bind(late_payload)
    .execute(&mut *slow_writer)
    .await?;
    slow_writer.commit().await?;
    blocked.await??;
    let events = journal.shard_events_after(5, 1, 10).await?;
    let seen: Vec<(u64, &str)> = events
        .iter()
        .map(|event| (event.offset, event.key.entity_id.as_str()))
        .collect();
    assert_eq!(seen, vec![(2, "late-slow"), (3, "late-second")]);
    pool.close().await;
    journal.close().await;
    Ok(())
}

async fn entity_types_are_part_of_the_key(backend: Backend) -> anyhow::Result<()> {
    let (_store, journal) = open(backend).await?;
    let first = typed_key("alpha", "same")?;
    let second = typed_key("beta", "same")?;
    journal
        .append_atomically(&[
            append(&first, vec![event(1, "alpha")]),
            append(&second, vec![event(1, "beta")]),
        ])
        .await?;
    let alpha = journal.latest_state(&first).await?.expect("alpha");
    let beta = journal.latest_state(&second).await?.expect("beta");
    assert_eq!(any_text(alpha.state.state.as_ref()), "alpha");
    assert_eq!(any_text(beta.state.state.as_ref()), "beta");
    journal.close().await;
    Ok(())
}

async fn corrupt_payloads_are_reported_not_trusted(backend: Backend) -> anyhow::Result<()> {
    let (_store, journal) = open(backend).await?;
    let key = default_key("corrupt")?;
    journal
        .append_atomically(&[append(
            &key,
            vec![EncodedEvent {
                revision: 1,
                payload: vec![0xff, 0xff, 0xff],
            }],
        )])
        .await?;
    let error = journal.latest_state(&key).await.expect_err("undecodable");
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
    journal.close().await;
    Ok(())
}

async fn concurrent_appends_share_transactions_and_conflicts_stay_isolated(
    backend: Backend,
) -> anyhow::Result<()> {
    let (_store, journal) = open(backend).await?;
    let counting = Arc::new(FaultyJournal::new(journal.clone()));
    let taken = default_key("group-taken")?;
    journal
        .append_atomically(&[append(&taken, vec![event(1, "a")])])
        .await?;
    let options = WriterOptions {
        max_concurrent_batches: 1,
        ..WriterOptions::default()
    };
    let (writer, task) = JournalWriter::spawn(counting.clone(), options, ShardCommits::new(16));
    let mut appends = Vec::new();
    for index in 0..200 {
        let writer = writer.clone();
        let key = default_key(&format!("group-{index}"))?;
        appends.push(tokio::spawn(async move {
            writer.append(append(&key, vec![event(1, "x")]), None).await
        }));
    }
    let conflicting = {
        let writer = writer.clone();
        let taken = taken.clone();
        tokio::spawn(async move {
            writer
                .append(append(&taken, vec![event(1, "b")]), None)
                .await
        })
    };
    for handle in appends {
        handle.await??;
    }
    assert!(matches!(conflicting.await?, Err(StoreError::Conflict(_))));
    drop(writer);
    task.await?;
    let transactions = counting.append_calls();
    assert!(
        transactions < 150,
        "201 appends took {transactions} transactions: no grouping happened"
    );
    for index in 0..200 {
        assert_eq!(
            journal
                .events_after(&default_key(&format!("group-{index}"))?, 0)
                .await?
                .len(),
            1
        );
    }
    journal.close().await;
    Ok(())
}

#[tokio::test]
async fn postgres_connections_cut_while_idle_are_replaced_without_failing_a_request()
-> anyhow::Result<()> {
    // The pool checks only connections idle for a while (one round trip less per commit); this is the case
    // that check exists for: the database dropped them (a restart, an idle timeout in between).
    let (store, journal) = open(Backend::Postgres).await?;
    let key = default_key("cut-while-idle")?;
    journal
        .append_atomically(&[append(&key, vec![event(1, "a")])])
        .await?;
    let ports = own_connections_to(TestPostgres::from_env().port)?;
    let admin = store.postgres_pool().await?;
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'chief-of-state' AND client_port = ANY($1)",
    )
    .bind(&ports)
    .fetch_all(&admin)
    .await?;
    assert!(
        !cut.is_empty() && cut.iter().all(|terminated| *terminated),
        "the journal's connections were cut: {cut:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let recovered = journal.latest_state(&key).await?;
    assert_eq!(recovered.map(|stored| stored.revision), Some(1));
    journal
        .append_atomically(&[append(&key, vec![event(2, "b")])])
        .await?;
    assert_eq!(journal.events_after(&key, 0).await?.len(), 2);
    admin.close().await;
    journal.close().await;
    Ok(())
}

cos_integration::on_both_stores!(
    a_second_writer_for_a_revision_is_rejected,
    a_failed_batch_writes_nothing,
    isolated_appends_refuse_only_the_conflicting_request,
    a_stale_writer_is_refused_even_after_compaction,
    a_batch_mixing_snapshots_and_plain_appends_is_written_per_request,
    each_shard_numbers_its_events_without_gaps_in_commit_order,
    latest_state_prefers_the_newest_of_snapshot_and_event,
    entity_types_are_part_of_the_key,
    corrupt_payloads_are_reported_not_trusted,
    concurrent_appends_share_transactions_and_conflicts_stay_isolated,
);
