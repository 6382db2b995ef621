//! The read-side position contract on both stores: positions start at zero, the worker's offset commit is a
//! compare-and-set, operators' restarts and skips clear a stop, pauses survive a reopen, and journal
//! compaction keeps every event a guarding read side has not delivered yet.

use std::sync::Arc;

use cos_core::domain::{EntityKey, Revision};
use cos_core::proto::chief_of_state::v1::{EventWrapper, MetaData, StateWrapper};
use cos_core::store::read_sides::{ReadSidePosition, ReadSideStore};
use cos_core::store::{AppendRequest, EncodedEvent, Journal, SnapshotWrite};
use cos_integration::support::node::{Backend, TestStore, default_key};
use cos_integration::support::script_handler::text_any;
use prost::Message;

fn position(offset: u64, paused: bool, stopped: Option<&str>) -> ReadSidePosition {
    ReadSidePosition {
        offset,
        paused,
        stopped: stopped.map(str::to_string),
        epoch: 0,
    }
}

/// [`position`] after `epoch` operator moves of the offset.
fn moved(offset: u64, paused: bool, stopped: Option<&str>, epoch: u64) -> ReadSidePosition {
    ReadSidePosition {
        epoch,
        ..position(offset, paused, stopped)
    }
}

async fn open(backend: Backend) -> anyhow::Result<(TestStore, Arc<dyn ReadSideStore>)> {
    let store = TestStore::new(backend)?;
    let positions = store.open_read_side_store().await?;
    Ok((store, positions))
}

async fn positions_start_at_zero_and_ensure_never_undoes_an_operator(
    backend: Backend,
) -> anyhow::Result<()> {
    let (store, positions) = open(backend).await?;
    assert_eq!(
        positions.position("search", 3).await?,
        position(0, false, None)
    );

    positions.ensure_positions("search", 4, false).await?;
    positions.ensure_positions("manual", 2, true).await?;
    positions.set_paused("search", 1, true).await?;
    positions.set_paused("manual", 0, false).await?;
    // A second start-up with the same settings changes nothing an operator did.
    positions.ensure_positions("search", 4, false).await?;
    positions.ensure_positions("manual", 2, true).await?;

    let search: Vec<(u32, ReadSidePosition)> = positions.positions("search").await?;
    assert_eq!(
        search,
        vec![
            (0, position(0, false, None)),
            (1, position(0, true, None)),
            (2, position(0, false, None)),
            (3, position(0, false, None)),
        ]
    );
    assert_eq!(
        positions.positions("manual").await?,
        vec![(0, position(0, false, None)), (1, position(0, true, None))]
    );
    drop(positions);
    let reopened = store.open_read_side_store().await?;
    assert_eq!(
        reopened.position("search", 1).await?,
        position(0, true, None)
    );
    Ok(())
}

async fn the_worker_commit_is_a_compare_and_set(backend: Backend) -> anyhow::Result<()> {
    let (_store, positions) = open(backend).await?;
    positions.ensure_positions("search", 2, false).await?;
    assert!(positions.advance_offset("search", 1, 0, 0, 5).await?);
    assert!(
        !positions.advance_offset("search", 1, 0, 0, 9).await?,
        "a worker that started from 0 must not overwrite 5"
    );
    assert!(positions.advance_offset("search", 1, 5, 0, 6).await?);
    assert_eq!(positions.position("search", 1).await?.offset, 6);
    assert_eq!(positions.position("search", 0).await?.offset, 0);

    // An operator's pause wins over a worker that is still delivering.
    positions.set_paused("search", 1, true).await?;
    assert!(!positions.advance_offset("search", 1, 6, 0, 7).await?);
    positions.set_paused("search", 1, false).await?;
    assert!(positions.advance_offset("search", 1, 6, 0, 7).await?);

    // A worker's stop only lands where the worker stands; a stopped shard takes no commit.
    assert!(!positions.set_stopped("search", 1, 6, 0, "late").await?);
    assert!(
        positions
            .set_stopped("search", 1, 7, 0, "STOP at 8")
            .await?
    );
    assert!(!positions.advance_offset("search", 1, 7, 0, 8).await?);
    assert_eq!(
        positions.position("search", 1).await?,
        position(7, false, Some("STOP at 8"))
    );

    // A restart back to the offset a worker started from still voids that worker's pending write.
    assert!(positions.reset_offset("search", 0, None, 0).await?);
    assert!(!positions.advance_offset("search", 0, 0, 0, 3).await?);
    assert!(positions.advance_offset("search", 0, 0, 1, 3).await?);
    Ok(())
}

async fn stops_hold_until_resumed_restarted_or_skipped(backend: Backend) -> anyhow::Result<()> {
    let (_store, positions) = open(backend).await?;
    positions.ensure_positions("search", 3, false).await?;
    for shard in 0..3 {
        positions.advance_offset("search", shard, 0, 0, 10).await?;
        assert!(
            positions
                .set_stopped("search", shard, 10, 0, "STOP at 11")
                .await?
        );
    }
    assert_eq!(
        positions.position("search", 0).await?,
        position(10, false, Some("STOP at 11"))
    );
    assert!(!positions.position("search", 0).await?.is_running());

    // Pausing a stopped shard keeps the stop; resuming clears both.
    positions.set_paused("search", 0, true).await?;
    assert_eq!(
        positions.position("search", 0).await?,
        position(10, true, Some("STOP at 11"))
    );
    positions.set_paused("search", 0, false).await?;
    assert_eq!(
        positions.position("search", 0).await?,
        position(10, false, None)
    );

    // A restart goes back to 0 (and bumps the epoch); a skip is a compare-and-set from the offset the
    // operator saw.
    assert!(positions.reset_offset("search", 1, None, 0).await?);
    assert_eq!(
        positions.position("search", 1).await?,
        moved(0, false, None, 1)
    );
    assert!(!positions.reset_offset("search", 2, Some(9), 11).await?);
    assert_eq!(
        positions.position("search", 2).await?,
        position(10, false, Some("STOP at 11")),
        "a skip from a stale offset changes nothing"
    );
    assert!(positions.reset_offset("search", 2, Some(10), 11).await?);
    assert_eq!(
        positions.position("search", 2).await?,
        moved(11, false, None, 1)
    );
    Ok(())
}

fn key(id: &str) -> anyhow::Result<EntityKey> {
    default_key(id)
}

fn event(revision: Revision) -> EncodedEvent {
    let wrapper = EventWrapper {
        event: Some(text_any(&format!("e{revision}"))),
        resulting_state: Some(text_any(&format!("s{revision}"))),
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

/// Appends revision `revision` on shard 2, compacting everything up to it when `compact`.
async fn append(
    journal: &dyn Journal,
    key: &EntityKey,
    revision: Revision,
    compact: bool,
) -> anyhow::Result<()> {
    let snapshot = compact.then(|| SnapshotWrite {
        revision,
        payload: StateWrapper {
            state: Some(text_any(&format!("s{revision}"))),
            meta: Some(MetaData {
                revision_number: revision,
                ..MetaData::default()
            }),
        }
        .encode_to_vec(),
        delete_snapshots_before: revision,
        delete_events_through: Some(revision),
    });
    journal
        .append_atomically(&[AppendRequest {
            key: key.clone(),
            expected_revision: revision - 1,
            shard: 2,
            events: vec![event(revision)],
            snapshot,
        }])
        .await?;
    Ok(())
}

/// The shard offsets still in the journal on shard 2, where [`append`] writes.
async fn offsets_on_shard_two(journal: &dyn Journal) -> anyhow::Result<Vec<u64>> {
    let events = journal.shard_events_after(2, 0, 10).await?;
    Ok(events.iter().map(|event| event.offset).collect())
}

async fn compaction_keeps_what_a_guarding_read_side_has_not_delivered(
    backend: Backend,
) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let (journal, positions_of_journal) = store.open_store_pair().await?;
    positions_of_journal
        .ensure_positions("search", 4, false)
        .await?;
    positions_of_journal
        .ensure_positions("audit", 4, false)
        .await?;
    journal.guard_compaction(vec!["search".to_string(), "audit".to_string()]);

    let guarded = key("guarded")?;
    for revision in 1..=3 {
        append(journal.as_ref(), &guarded, revision, false).await?;
    }
    // "search" delivered shard offsets 1 and 2, "audit" only 1.
    positions_of_journal
        .advance_offset("search", 2, 0, 0, 2)
        .await?;
    positions_of_journal
        .advance_offset("audit", 2, 0, 0, 1)
        .await?;
    append(journal.as_ref(), &guarded, 4, true).await?;
    let kept = offsets_on_shard_two(journal.as_ref()).await?;
    assert_eq!(
        kept,
        vec![2, 3, 4],
        "offset 1 was delivered by both, the rest by at most one"
    );

    // Once every guarding read side caught up, the next compaction takes what was kept.
    positions_of_journal
        .advance_offset("audit", 2, 1, 0, 4)
        .await?;
    positions_of_journal
        .advance_offset("search", 2, 2, 0, 4)
        .await?;
    append(journal.as_ref(), &guarded, 5, true).await?;
    let kept = offsets_on_shard_two(journal.as_ref()).await?;
    assert_eq!(
        kept,
        vec![5],
        "the newest event is not delivered yet, so it stays"
    );

    // A guarding read side without a position on the shard has delivered nothing: everything stays.
    journal.guard_compaction(vec!["search".to_string(), "ghost".to_string()]);
    append(journal.as_ref(), &guarded, 6, true).await?;
    let kept = offsets_on_shard_two(journal.as_ref()).await?;
    assert_eq!(kept, vec![5, 6]);

    // Without guarding read sides compaction deletes as before.
    journal.guard_compaction(Vec::new());
    append(journal.as_ref(), &guarded, 7, true).await?;
    assert!(journal.shard_events_after(2, 0, 10).await?.is_empty());
    let latest: Vec<(u32, u64)> = positions_of_journal.latest_offsets().await?;
    assert_eq!(latest, vec![(2, 7)]);
    journal.close().await;
    Ok(())
}

cos_integration::on_both_stores!(
    positions_start_at_zero_and_ensure_never_undoes_an_operator,
    the_worker_commit_is_a_compare_and_set,
    stops_hold_until_resumed_restarted_or_skipped,
    compaction_keeps_what_a_guarding_read_side_has_not_delivered,
);
