//! When to take a snapshot and what it makes obsolete: a snapshot whenever a revision is a multiple of the
//! frequency; keep the newest `retain` of them; optionally compact events the oldest kept one covers.

use prost::Message;

use crate::domain::Revision;
use crate::proto::chief_of_state::v1::StateWrapper;
use crate::settings::SnapshotSettings;
use crate::store::SnapshotWrite;

/// The revision to snapshot among a write's new revisions `first..=last` (one command's, or those of the
/// commands sharing the write): the highest multiple of the frequency, if any (a write crossing several
/// multiples snapshots only the highest). Cheap: decides before any state is copied.
pub fn revision_to_snapshot(
    settings: &SnapshotSettings,
    first: Revision,
    last: Revision,
) -> Option<Revision> {
    if !settings.enabled || settings.frequency == 0 || last < first {
        return None;
    }
    let highest_multiple = last - last % settings.frequency;
    (highest_multiple >= first && highest_multiple > 0).then_some(highest_multiple)
}

/// The snapshot write for a state chosen by [`revision_to_snapshot`], with what retention and compaction
/// then delete.
pub fn snapshot_write(settings: &SnapshotSettings, state: &StateWrapper) -> SnapshotWrite {
    let revision = state.meta.as_ref().map_or(0, |meta| meta.revision_number);
    let keep_from = oldest_retained(settings, revision);
    SnapshotWrite {
        revision,
        payload: state.encode_to_vec(),
        delete_snapshots_before: keep_from,
        delete_events_through: settings.delete_events.then_some(keep_from),
    }
}

/// The revision of the oldest snapshot that retention keeps once `revision` is snapshotted.
pub fn oldest_retained(settings: &SnapshotSettings, revision: Revision) -> Revision {
    let retained_span = settings
        .retain
        .saturating_sub(1)
        .saturating_mul(settings.frequency);
    revision.saturating_sub(retained_span).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::chief_of_state::v1::MetaData;

    fn state_at(revision: Revision) -> StateWrapper {
        StateWrapper {
            state: None,
            meta: Some(MetaData {
                revision_number: revision,
                ..MetaData::default()
            }),
        }
    }

    fn settings(frequency: u32, retain: u32, delete_events: bool) -> SnapshotSettings {
        SnapshotSettings {
            enabled: true,
            frequency,
            retain,
            delete_events,
        }
    }

    #[test]
    fn snapshots_only_on_multiples_of_the_frequency() {
        let policy = settings(3, 2, false);
        assert_eq!(revision_to_snapshot(&policy, 1, 2), None);
        assert_eq!(revision_to_snapshot(&policy, 2, 4), Some(3));
        let plan = snapshot_write(&policy, &state_at(3));
        assert_eq!(plan.revision, 3);
        assert_eq!(plan.delete_events_through, None);
    }

    #[test]
    fn a_command_crossing_two_multiples_snapshots_the_highest() {
        let policy = settings(2, 2, true);
        assert_eq!(revision_to_snapshot(&policy, 1, 5), Some(4));
        let plan = snapshot_write(&policy, &state_at(4));
        assert_eq!(plan.delete_snapshots_before, 2);
        assert_eq!(plan.delete_events_through, Some(2));
    }

    #[test]
    fn retention_keeps_the_newest_n() {
        let policy = settings(100, 2, true);
        let plan = snapshot_write(&policy, &state_at(300));
        assert_eq!(plan.delete_snapshots_before, 200);
        assert_eq!(plan.delete_events_through, Some(200));
        assert_eq!(oldest_retained(&policy, 100), 1);
    }

    #[test]
    fn disabled_never_snapshots() {
        let mut policy = settings(1, 1, false);
        policy.enabled = false;
        assert_eq!(revision_to_snapshot(&policy, 1, 1), None);
    }
}
