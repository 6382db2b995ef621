//! Recovery reads of many entities at once: one statement on PostgreSQL, each entity with its own outcome,
//! and the recovery reader that groups concurrent recoveries into such statements.

use std::sync::Arc;

use cos_core::domain::{EntityKey, Revision};
use cos_core::proto::chief_of_state::v1::{EventWrapper, MetaData, StateWrapper};
use cos_core::store::{
    AppendRequest, EncodedEvent, Journal, RecoveryOptions, RecoveryReader, RecoverySource,
    SnapshotWrite, StoreError,
};
use cos_integration::support::faulty_journal::FaultyJournal;
use cos_integration::support::node::{Backend, TestStore, default_key};
use cos_integration::support::script_handler::{any_text, text_any};
use prost::Message;

fn meta(revision: Revision) -> MetaData {
    MetaData {
        revision_number: revision,
        ..MetaData::default()
    }
}

fn event(revision: Revision, state: &str) -> EncodedEvent {
    let wrapper = EventWrapper {
        event: Some(text_any("event")),
        resulting_state: Some(text_any(state)),
        meta: Some(meta(revision)),
    };
    EncodedEvent {
        revision,
        payload: wrapper.encode_to_vec(),
    }
}

fn append(
    key: &EntityKey,
    expected_revision: Revision,
    events: Vec<EncodedEvent>,
) -> AppendRequest {
    AppendRequest {
        key: key.clone(),
        shard: 0,
        expected_revision,
        events,
        snapshot: None,
    }
}

/// Four entities: events only (revision 2), a snapshot as new as its event (revision 1), nothing stored, and
/// an undecodable event.
async fn four_kinds_of_entity(journal: &dyn Journal) -> anyhow::Result<[EntityKey; 4]> {
    let events_only = default_key("many-events")?;
    let snapshotted = default_key("many-snapshot")?;
    let unknown = default_key("many-unknown")?;
    let corrupt = default_key("many-corrupt")?;
    let mut with_snapshot = append(&snapshotted, 0, vec![event(1, "s")]);
    with_snapshot.snapshot = Some(SnapshotWrite {
        revision: 1,
        payload: StateWrapper {
            state: Some(text_any("s")),
            meta: Some(meta(1)),
        }
        .encode_to_vec(),
        delete_snapshots_before: 0,
        delete_events_through: None,
    });
    let unreadable = EncodedEvent {
        revision: 1,
        payload: vec![0xff, 0xff, 0xff],
    };
    journal
        .append_atomically(&[
            append(&events_only, 0, vec![event(1, "a"), event(2, "a|b")]),
            with_snapshot,
            append(&corrupt, 0, vec![unreadable]),
        ])
        .await?;
    Ok([events_only, snapshotted, unknown, corrupt])
}

/// What a recovery found: revision, where it came from and the state's text.
type Recovered = Result<Option<(Revision, RecoverySource, String)>, StoreError>;

async fn many_entities_are_read_in_order_each_with_its_own_outcome(
    backend: Backend,
) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let journal = store.open_journal().await?;
    let [events_only, snapshotted, unknown, corrupt] =
        four_kinds_of_entity(journal.as_ref()).await?;
    // The same entity twice, too: each position gets its answer.
    let keys = [
        events_only.clone(),
        unknown.clone(),
        snapshotted.clone(),
        corrupt.clone(),
        events_only.clone(),
    ];
    let many = journal.newest_rows_of_many(&keys).await?;
    assert_eq!(many.len(), keys.len());
    for (key, rows) in keys.iter().zip(&many) {
        let alone = journal.newest_rows(key).await?;
        assert_eq!(rows.as_ref().ok(), Some(&alone), "{key}");
    }
    let states: Vec<Recovered> = many
        .into_iter()
        .map(|rows| {
            let state = rows?.into_state()?;
            Ok(state.map(|stored| {
                let text = any_text(stored.state.state.as_ref());
                (stored.revision, stored.source, text)
            }))
        })
        .collect();
    assert_eq!(
        states[0],
        Ok(Some((2, RecoverySource::Event, "a|b".into())))
    );
    assert_eq!(states[1], Ok(None));
    assert_eq!(
        states[2],
        Ok(Some((1, RecoverySource::Snapshot, "s".into())))
    );
    assert!(
        matches!(states[3], Err(StoreError::Corrupt(_))),
        "{:?}",
        states[3]
    );
    assert_eq!(states[4], states[0]);
    journal.close().await;
    Ok(())
}

async fn concurrent_recoveries_share_a_statement_and_keep_their_own_outcomes(
    backend: Backend,
) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let inner = store.open_journal().await?;
    let [events_only, snapshotted, unknown, corrupt] = four_kinds_of_entity(inner.as_ref()).await?;
    let journal = Arc::new(FaultyJournal::new(inner.clone()));
    let reader = RecoveryReader::spawn(
        journal.clone(),
        RecoveryOptions {
            max_batch_keys: 64,
            max_concurrent_reads: 1,
        },
    );
    // Forty recoveries asked for at once, ten of each kind.
    let keys: Vec<EntityKey> = [&events_only, &snapshotted, &unknown, &corrupt]
        .into_iter()
        .cycle()
        .take(40)
        .cloned()
        .collect();
    let outcomes =
        futures::future::join_all(keys.iter().map(|key| reader.latest_state(key.clone()))).await;
    for (key, outcome) in keys.iter().zip(outcomes) {
        match outcome {
            Ok(Some(stored)) if *key == events_only => assert_eq!(stored.revision, 2),
            Ok(Some(stored)) if *key == snapshotted => {
                assert_eq!(
                    (stored.revision, stored.source),
                    (1, RecoverySource::Snapshot)
                );
            }
            Ok(None) if *key == unknown => {}
            Err(StoreError::Corrupt(_)) if *key == corrupt => {}
            other => panic!("{key}: unexpected {other:?}"),
        }
    }
    assert_eq!(journal.recovery_reads(), 40);
    // One slot: the first recovery is read while the other 39 queue, and they share what follows.
    let statements = journal.recovery_statements();
    assert!(
        statements < 10,
        "40 concurrent recoveries took {statements} statements: nothing was shared"
    );
    inner.close().await;
    Ok(())
}

async fn a_journal_that_cannot_be_read_fails_every_recovery_of_the_batch(
    backend: Backend,
) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let journal = store.open_journal().await?;
    let [events_only, snapshotted, ..] = four_kinds_of_entity(journal.as_ref()).await?;
    journal.close().await;
    let reader = RecoveryReader::spawn(journal, RecoveryOptions::default());
    let outcomes = futures::future::join_all([
        reader.latest_state(events_only),
        reader.latest_state(snapshotted),
    ])
    .await;
    for outcome in outcomes {
        assert!(
            matches!(outcome, Err(StoreError::Unavailable(_))),
            "{outcome:?}"
        );
    }
    Ok(())
}

cos_integration::on_both_stores!(
    many_entities_are_read_in_order_each_with_its_own_outcome,
    concurrent_recoveries_share_a_statement_and_keep_their_own_outcomes,
    a_journal_that_cannot_be_read_fails_every_recovery_of_the_batch,
);
