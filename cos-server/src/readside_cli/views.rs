//! The data behind `cos readside` output: serde views of the node's replies with the derived numbers
//! (state, backlog, counts) computed once, so the tables and the `--json` documents always agree.

use cos_core::proto::chief_of_state::v1::ReadSideOffset;
use cos_core::proto::internal::{ReadSideShardStatus, ReadSideStatus};
use serde::Serialize;

use super::skipped::SkippedRecord;

/// Where a read side stands on one shard, most severe first: a stop needs an operator, a pause was asked
/// for, a disabled read side never runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardState {
    Stopped,
    Paused,
    Disabled,
    Running,
}

impl ShardState {
    /// Derives the state from the flags the node reports.
    pub fn of(read_side_enabled: bool, shard: &ReadSideShardStatus) -> ShardState {
        if !shard.stopped_reason.is_empty() {
            ShardState::Stopped
        } else if shard.paused {
            ShardState::Paused
        } else if !read_side_enabled {
            ShardState::Disabled
        } else {
            ShardState::Running
        }
    }

    /// The word used in tables and JSON.
    pub fn label(self) -> &'static str {
        match self {
            ShardState::Stopped => "stopped",
            ShardState::Paused => "paused",
            ShardState::Disabled => "disabled",
            ShardState::Running => "running",
        }
    }
}

/// `--json` of `list`.
#[derive(Debug, Serialize)]
pub struct ListView {
    pub read_sides: Vec<ReadSideView>,
}

/// One read side in `list --json`, with counts and backlog precomputed so scripts need not redo them.
#[derive(Debug, Serialize)]
pub struct ReadSideView {
    pub read_side_id: String,
    pub enabled: bool,
    pub protocol: String,
    pub address: String,
    pub failure_policy: String,
    pub auto_start: bool,
    /// Empty means every entity type.
    pub entity_types: Vec<String>,
    pub shards_running: usize,
    pub shards_paused: usize,
    pub shards_stopped: usize,
    pub backlog: u64,
    pub shards: Vec<ShardView>,
}

/// One shard of a read side in `list --json`.
#[derive(Debug, Serialize)]
pub struct ShardView {
    pub shard: u32,
    pub offset: u64,
    pub latest_offset: u64,
    pub backlog: u64,
    pub state: ShardState,
    pub paused: bool,
    pub stopped_reason: Option<String>,
}

impl ReadSideView {
    /// Computes counts and backlog from the node's status of one read side.
    pub fn from_status(status: &ReadSideStatus) -> ReadSideView {
        let mut shards = Vec::with_capacity(status.shards.len());
        for shard in &status.shards {
            shards.push(ShardView {
                shard: shard.shard,
                offset: shard.offset,
                latest_offset: shard.latest_offset,
                backlog: shard.latest_offset.saturating_sub(shard.offset),
                state: ShardState::of(status.enabled, shard),
                paused: shard.paused,
                stopped_reason: non_empty(&shard.stopped_reason),
            });
        }
        let count = |state: ShardState| shards.iter().filter(|shard| shard.state == state).count();
        ReadSideView {
            read_side_id: status.read_side_id.clone(),
            enabled: status.enabled,
            protocol: status.protocol.clone(),
            address: status.address.clone(),
            failure_policy: status.failure_policy.clone(),
            auto_start: status.auto_start,
            entity_types: status.entity_types.clone(),
            shards_running: count(ShardState::Running),
            shards_paused: count(ShardState::Paused),
            shards_stopped: count(ShardState::Stopped),
            backlog: shards.iter().map(|shard| shard.backlog).sum(),
            shards,
        }
    }
}

fn non_empty(text: &str) -> Option<String> {
    if text.is_empty() {
        None
    } else {
        Some(text.to_string())
    }
}

/// `--json` of `offsets`.
#[derive(Debug, Serialize)]
pub struct OffsetsView {
    pub read_side_id: String,
    pub offsets: Vec<OffsetView>,
}

/// One shard's offset; the status fields are absent when the node did not list this read side.
#[derive(Debug, Serialize)]
pub struct OffsetView {
    pub shard: u64,
    pub offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<ShardState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
}

impl OffsetView {
    /// Joins a stored offset with the shard's status from ListReadSides, when the node listed it.
    pub fn new(offset: &ReadSideOffset, status: Option<&ReadSideStatus>) -> OffsetView {
        let mut view = OffsetView {
            shard: offset.cluster_shard_number,
            offset: offset.offset,
            latest_offset: None,
            backlog: None,
            state: None,
            paused: None,
            stopped_reason: None,
        };
        let Some(status) = status else {
            return view;
        };
        let shard_status = status
            .shards
            .iter()
            .find(|shard| u64::from(shard.shard) == offset.cluster_shard_number);
        if let Some(shard) = shard_status {
            view.latest_offset = Some(shard.latest_offset);
            view.backlog = Some(shard.latest_offset.saturating_sub(offset.offset));
            view.state = Some(ShardState::of(status.enabled, shard));
            view.paused = Some(shard.paused);
            view.stopped_reason = non_empty(&shard.stopped_reason);
        }
        view
    }
}

/// `--json` of pause, resume, restart and skip.
#[derive(Debug, Serialize)]
pub struct SteerView {
    pub read_side_id: String,
    pub action: &'static str,
    /// `null` when the action applied to every shard.
    pub shard: Option<u64>,
    pub successful: bool,
    /// Only for `skip`: the events the node stepped over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Vec<SkippedRecord>>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn shard(
        shard: u32,
        offset: u64,
        latest: u64,
        paused: bool,
        stopped: &str,
    ) -> ReadSideShardStatus {
        ReadSideShardStatus {
            shard,
            offset,
            latest_offset: latest,
            paused,
            stopped_reason: stopped.to_string(),
        }
    }

    pub(crate) fn accounts() -> ReadSideStatus {
        ReadSideStatus {
            read_side_id: "accounts".to_string(),
            enabled: true,
            protocol: "grpc".to_string(),
            address: "projector:50052".to_string(),
            failure_policy: "STOP".to_string(),
            auto_start: true,
            entity_types: Vec::new(),
            shards: vec![
                shard(0, 40, 45, false, ""),
                shard(1, 10, 10, true, ""),
                shard(2, 7, 9, false, "handler returned INTERNAL at offset 8"),
            ],
        }
    }

    fn json_of<T: Serialize>(value: &T) -> serde_json::Value {
        match serde_json::to_value(value) {
            Ok(json) => json,
            Err(error) => panic!("not serialisable: {error}"),
        }
    }

    #[test]
    fn list_json_carries_the_full_structure_with_per_shard_status() {
        let read_side = json_of(&ReadSideView::from_status(&accounts()));
        assert_eq!(read_side["read_side_id"], "accounts");
        assert_eq!(read_side["auto_start"], true);
        assert_eq!(read_side["entity_types"], json!([]));
        assert_eq!(read_side["shards_running"], 1);
        assert_eq!(read_side["shards_paused"], 1);
        assert_eq!(read_side["shards_stopped"], 1);
        assert_eq!(read_side["backlog"], 7);
        assert_eq!(
            read_side["shards"][2],
            json!({
                "shard": 2, "offset": 7, "latest_offset": 9, "backlog": 2, "state": "stopped",
                "paused": false, "stopped_reason": "handler returned INTERNAL at offset 8"
            })
        );
        assert_eq!(read_side["shards"][0]["stopped_reason"], json!(null));
    }

    #[test]
    fn offset_view_has_status_fields_only_when_the_read_side_was_listed() {
        let offset = ReadSideOffset {
            cluster_shard_number: 1,
            offset: 10,
        };
        assert_eq!(
            json_of(&OffsetView::new(&offset, None)),
            json!({"shard": 1, "offset": 10})
        );
        assert_eq!(
            json_of(&OffsetView::new(&offset, Some(&accounts()))),
            json!({
                "shard": 1, "offset": 10, "latest_offset": 10, "backlog": 0,
                "state": "paused", "paused": true
            })
        );
    }

    #[test]
    fn shard_state_prefers_stopped_over_paused_over_disabled() {
        let stopped_and_paused = shard(0, 0, 0, true, "failed");
        assert_eq!(
            ShardState::of(true, &stopped_and_paused),
            ShardState::Stopped
        );
        assert_eq!(
            ShardState::of(false, &shard(0, 0, 0, true, "")),
            ShardState::Paused
        );
        assert_eq!(
            ShardState::of(false, &shard(0, 0, 0, false, "")),
            ShardState::Disabled
        );
        assert_eq!(
            ShardState::of(true, &shard(0, 0, 0, false, "")),
            ShardState::Running
        );
    }

    #[test]
    fn backlog_never_underflows_when_the_offset_is_ahead_of_the_latest() {
        let mut ahead = accounts();
        ahead.shards = vec![shard(0, 9, 5, false, "")];
        assert_eq!(ReadSideView::from_status(&ahead).backlog, 0);
    }
}
