//! What `cos readside` prints: aligned tables for people, one JSON document (`--json`) for scripts.

use cos_core::proto::chief_of_state::v1::ReadSideOffset;
use cos_core::proto::internal::ReadSideStatus;
use serde::Serialize;

use super::client::{SteerAction, SteerOutcome};
use super::error::CliError;
use super::table::Table;
use super::views::{ListView, OffsetView, OffsetsView, ReadSideView, SteerView};

fn yes_no(flag: bool) -> String {
    if flag { "yes" } else { "no" }.to_string()
}

fn to_json<T: Serialize>(value: &T) -> Result<String, CliError> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text)
}

/// The output of `cos readside list`.
pub fn render_list(read_sides: &[ReadSideStatus], json: bool) -> Result<String, CliError> {
    let views: Vec<ReadSideView> = read_sides.iter().map(ReadSideView::from_status).collect();
    if json {
        return to_json(&ListView { read_sides: views });
    }
    if views.is_empty() {
        return Ok("no read sides are configured\n".to_string());
    }
    let mut table = Table::new(&[
        "READ SIDE",
        "ENABLED",
        "PROTOCOL",
        "ADDRESS",
        "POLICY",
        "ENTITY TYPES",
        "RUNNING",
        "PAUSED",
        "STOPPED",
        "BACKLOG",
    ]);
    for view in &views {
        let entity_types = if view.entity_types.is_empty() {
            "all".to_string()
        } else {
            view.entity_types.join(",")
        };
        table.push_row(vec![
            view.read_side_id.clone(),
            yes_no(view.enabled),
            view.protocol.clone(),
            view.address.clone(),
            view.failure_policy.clone(),
            entity_types,
            view.shards_running.to_string(),
            view.shards_paused.to_string(),
            view.shards_stopped.to_string(),
            view.backlog.to_string(),
        ]);
    }
    Ok(table.render())
}

/// The output of `cos readside offsets`; `status` (from ListReadSides, when available) adds the latest
/// offset, backlog and state of each shard.
pub fn render_offsets(
    read_side_id: &str,
    offsets: &[ReadSideOffset],
    status: Option<&ReadSideStatus>,
    json: bool,
) -> Result<String, CliError> {
    let views: Vec<OffsetView> = offsets
        .iter()
        .map(|offset| OffsetView::new(offset, status))
        .collect();
    if json {
        return to_json(&OffsetsView {
            read_side_id: read_side_id.to_string(),
            offsets: views,
        });
    }
    if views.is_empty() {
        return Ok(format!(
            "read side {read_side_id:?} has no stored offsets\n"
        ));
    }
    let dash = || "-".to_string();
    let mut table = Table::new(&["SHARD", "OFFSET", "LATEST", "BACKLOG", "STATE"]);
    for view in &views {
        let state = match (view.state, &view.stopped_reason) {
            (Some(state), Some(reason)) => format!("{}: {reason}", state.label()),
            (Some(state), None) => state.label().to_string(),
            (None, _) => dash(),
        };
        table.push_row(vec![
            view.shard.to_string(),
            view.offset.to_string(),
            view.latest_offset
                .map_or_else(dash, |latest| latest.to_string()),
            view.backlog
                .map_or_else(dash, |backlog| backlog.to_string()),
            state,
        ]);
    }
    Ok(table.render())
}

/// "all shards" or "shard 3", as the scope of a message.
pub fn scope(shard: Option<u64>) -> String {
    match shard {
        Some(shard) => format!("shard {shard}"),
        None => "all shards".to_string(),
    }
}

/// The output of a successful pause, resume, restart or skip.
pub fn render_steer(
    action: SteerAction,
    read_side_id: &str,
    shard: Option<u64>,
    outcome: &SteerOutcome,
    json: bool,
) -> Result<String, CliError> {
    if json {
        let skipped = (action == SteerAction::Skip).then(|| outcome.skipped.clone());
        return to_json(&SteerView {
            read_side_id: read_side_id.to_string(),
            action: action.verb(),
            shard,
            successful: outcome.successful,
            skipped,
        });
    }
    if action != SteerAction::Skip {
        return Ok(format!(
            "{} read side {read_side_id:?} on {}\n",
            action.past_tense(),
            scope(shard)
        ));
    }
    if outcome.skipped.is_empty() {
        return Ok(format!(
            "nothing skipped for read side {read_side_id:?} on {}\n",
            scope(shard)
        ));
    }
    let mut output = String::new();
    for record in &outcome.skipped {
        output.push_str(&record.describe());
        output.push('\n');
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readside_cli::skipped::SkippedRecord;
    use crate::readside_cli::views::tests::{accounts, shard};
    use serde_json::json;

    fn text(result: Result<String, CliError>) -> String {
        match result {
            Ok(text) => text,
            Err(error) => panic!("rendering failed: {error}"),
        }
    }

    fn parsed_json(result: Result<String, CliError>) -> serde_json::Value {
        let output = text(result);
        match serde_json::from_str(&output) {
            Ok(value) => value,
            Err(error) => panic!("not one JSON document ({error}): {output}"),
        }
    }

    #[test]
    fn list_table_has_one_row_per_read_side_with_counts_and_backlog() {
        let audit = ReadSideStatus {
            read_side_id: "audit".to_string(),
            enabled: false,
            protocol: "http".to_string(),
            address: "audit:8080".to_string(),
            failure_policy: "REPLAY_SKIP".to_string(),
            auto_start: false,
            entity_types: vec!["account".to_string(), "order".to_string()],
            shards: vec![shard(0, 0, 3, false, "")],
        };
        assert_eq!(
            text(render_list(&[accounts(), audit], false)),
            "READ SIDE  ENABLED  PROTOCOL  ADDRESS          POLICY       ENTITY TYPES   RUNNING  PAUSED  STOPPED  BACKLOG\n\
             accounts   yes      grpc      projector:50052  STOP         all            1        1       1        7\n\
             audit      no       http      audit:8080       REPLAY_SKIP  account,order  0        0       0        3\n"
        );
    }

    #[test]
    fn list_without_read_sides_says_so() {
        assert_eq!(
            text(render_list(&[], false)),
            "no read sides are configured\n"
        );
        assert_eq!(
            parsed_json(render_list(&[], true)),
            json!({"read_sides": []})
        );
    }

    #[test]
    fn offsets_table_joins_the_shard_status_when_known() {
        let offsets = [
            ReadSideOffset {
                cluster_shard_number: 0,
                offset: 41,
            },
            ReadSideOffset {
                cluster_shard_number: 2,
                offset: 7,
            },
            ReadSideOffset {
                cluster_shard_number: 5,
                offset: 1,
            },
        ];
        assert_eq!(
            text(render_offsets(
                "accounts",
                &offsets,
                Some(&accounts()),
                false
            )),
            "SHARD  OFFSET  LATEST  BACKLOG  STATE\n\
             0      41      45      4        running\n\
             2      7       9       2        stopped: handler returned INTERNAL at offset 8\n\
             5      1       -       -        -\n"
        );
    }

    #[test]
    fn offsets_without_any_stored_offset_say_so() {
        assert_eq!(
            text(render_offsets("accounts", &[], None, false)),
            "read side \"accounts\" has no stored offsets\n"
        );
    }

    fn outcome(skipped: &[&str]) -> SteerOutcome {
        SteerOutcome {
            successful: true,
            skipped: skipped
                .iter()
                .map(|value| SkippedRecord::parse(value))
                .collect(),
        }
    }

    #[test]
    fn steering_confirms_the_action_and_its_scope() {
        let done = outcome(&[]);
        assert_eq!(
            text(render_steer(
                SteerAction::Pause,
                "accounts",
                None,
                &done,
                false
            )),
            "paused read side \"accounts\" on all shards\n"
        );
        assert_eq!(
            text(render_steer(
                SteerAction::Restart,
                "accounts",
                Some(3),
                &done,
                false
            )),
            "restarted read side \"accounts\" on shard 3\n"
        );
        assert_eq!(
            parsed_json(render_steer(
                SteerAction::Resume,
                "accounts",
                Some(3),
                &done,
                true
            )),
            json!({"read_side_id": "accounts", "action": "resume", "shard": 3, "successful": true})
        );
    }

    #[test]
    fn skip_prints_one_line_per_skipped_event() {
        let skipped = outcome(&[
            "shard=3 offset=42 entity_type=account entity_id=a-1 revision=7",
            "not the documented shape",
        ]);
        assert_eq!(
            text(render_steer(
                SteerAction::Skip,
                "accounts",
                None,
                &skipped,
                false
            )),
            "skipped shard 3 offset 42: account/a-1 revision 7\n\
             skipped (unrecognised report): not the documented shape\n"
        );
        assert_eq!(
            parsed_json(render_steer(
                SteerAction::Skip,
                "accounts",
                None,
                &skipped,
                true
            )),
            json!({
                "read_side_id": "accounts", "action": "skip", "shard": null, "successful": true,
                "skipped": [
                    {"shard": 3, "offset": 42, "entity_type": "account", "entity_id": "a-1", "revision": 7},
                    {"raw": "not the documented shape"}
                ]
            })
        );
    }

    #[test]
    fn skip_with_nothing_skipped_says_so_and_json_has_an_empty_list() {
        let nothing = outcome(&[]);
        assert_eq!(
            text(render_steer(
                SteerAction::Skip,
                "accounts",
                Some(1),
                &nothing,
                false
            )),
            "nothing skipped for read side \"accounts\" on shard 1\n"
        );
        let value = parsed_json(render_steer(
            SteerAction::Skip,
            "accounts",
            Some(1),
            &nothing,
            true,
        ));
        assert_eq!(value["skipped"], json!([]));
    }
}
