//! The `x-cos-skipped` response header of SkipOffset / SkipOffsetByShard: the node names every event it
//! skipped so the operator knows exactly what a read side will never see.
//!
//! Format of one value: `shard=<n> offset=<o> entity_type=<t> entity_id=<id> revision=<r>`.

use serde::Serialize;

/// The response metadata key carrying one value per skipped event.
pub const SKIPPED_HEADER: &str = "x-cos-skipped";

/// One event a skip stepped over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedEvent {
    pub shard: u64,
    pub offset: u64,
    pub entity_type: String,
    pub entity_id: String,
    pub revision: u64,
}

/// A header value: parsed when it has the documented shape, otherwise kept verbatim so nothing the node
/// reported is lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SkippedRecord {
    Event(SkippedEvent),
    Unparsed { raw: String },
}

impl SkippedRecord {
    /// Parses one header value; never fails, an unexpected value becomes [`SkippedRecord::Unparsed`].
    pub fn parse(value: &str) -> SkippedRecord {
        match parse_event(value) {
            Some(event) => SkippedRecord::Event(event),
            None => SkippedRecord::Unparsed {
                raw: value.to_string(),
            },
        }
    }

    /// The human line: `skipped shard 3 offset 42: account/a-1 revision 7`.
    pub fn describe(&self) -> String {
        match self {
            SkippedRecord::Event(event) => format!(
                "skipped shard {} offset {}: {}/{} revision {}",
                event.shard, event.offset, event.entity_type, event.entity_id, event.revision
            ),
            SkippedRecord::Unparsed { raw } => format!("skipped (unrecognised report): {raw}"),
        }
    }
}

/// Reads the fields in their documented order. The entity id is everything up to the last ` revision=`, so
/// an id containing spaces or `=` still parses; the entity type ends at the first ` entity_id=`.
fn parse_event(value: &str) -> Option<SkippedEvent> {
    let after_shard = value.trim().strip_prefix("shard=")?;
    let (shard, after_offset) = after_shard.split_once(" offset=")?;
    let (offset, after_entity_type) = after_offset.split_once(" entity_type=")?;
    let (entity_type, after_entity_id) = after_entity_type.split_once(" entity_id=")?;
    let (entity_id, revision) = after_entity_id.rsplit_once(" revision=")?;
    if entity_type.is_empty() || entity_id.is_empty() {
        return None;
    }
    Some(SkippedEvent {
        shard: shard.parse().ok()?,
        offset: offset.parse().ok()?,
        entity_type: entity_type.to_string(),
        entity_id: entity_id.to_string(),
        revision: revision.parse().ok()?,
    })
}

/// Collects every `x-cos-skipped` value of a response, in the order the node sent them. A value that is
/// not visible ASCII is kept lossily decoded rather than dropped.
pub fn skipped_from_metadata(metadata: &tonic::metadata::MetadataMap) -> Vec<SkippedRecord> {
    let mut records = Vec::new();
    for value in metadata.get_all(SKIPPED_HEADER) {
        let record = match value.to_str() {
            Ok(text) => SkippedRecord::parse(text),
            Err(_) => SkippedRecord::Unparsed {
                raw: String::from_utf8_lossy(value.as_encoded_bytes()).into_owned(),
            },
        };
        records.push(record);
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::{MetadataMap, MetadataValue};

    #[test]
    fn well_formed_value_parses_every_field() {
        let record =
            SkippedRecord::parse("shard=3 offset=42 entity_type=account entity_id=a-1 revision=7");
        assert_eq!(
            record,
            SkippedRecord::Event(SkippedEvent {
                shard: 3,
                offset: 42,
                entity_type: "account".to_string(),
                entity_id: "a-1".to_string(),
                revision: 7,
            })
        );
        assert_eq!(
            record.describe(),
            "skipped shard 3 offset 42: account/a-1 revision 7"
        );
    }

    #[test]
    fn entity_id_with_spaces_and_equals_signs_still_parses() {
        let record =
            SkippedRecord::parse("shard=0 offset=1 entity_type=order entity_id=a b=c revision=2");
        let SkippedRecord::Event(event) = record else {
            panic!("expected a parsed event, got {record:?}");
        };
        assert_eq!(event.entity_id, "a b=c");
        assert_eq!(event.revision, 2);
    }

    #[test]
    fn malformed_values_are_kept_raw() {
        for raw in [
            "",
            "garbage",
            "shard=x offset=1 entity_type=a entity_id=b revision=1",
            "shard=1 offset=1 entity_type=a entity_id=b",
            "shard=1 offset=1 entity_type= entity_id=b revision=1",
            "shard=1 offset=-4 entity_type=a entity_id=b revision=1",
        ] {
            assert_eq!(
                SkippedRecord::parse(raw),
                SkippedRecord::Unparsed {
                    raw: raw.to_string()
                },
                "value {raw:?}"
            );
        }
    }

    #[test]
    fn unparsed_record_serialises_as_raw_field_and_event_as_flat_object() {
        let unparsed = SkippedRecord::parse("what");
        assert_eq!(
            serde_json::to_value(&unparsed).ok(),
            Some(serde_json::json!({"raw": "what"}))
        );
        let event = SkippedRecord::parse("shard=1 offset=2 entity_type=t entity_id=e revision=3");
        assert_eq!(
            serde_json::to_value(&event).ok(),
            Some(serde_json::json!({
                "shard": 1, "offset": 2, "entity_type": "t", "entity_id": "e", "revision": 3
            }))
        );
    }

    #[test]
    fn every_header_value_is_collected_in_order() {
        let mut metadata = MetadataMap::new();
        metadata.append(
            SKIPPED_HEADER,
            MetadataValue::from_static("shard=0 offset=5 entity_type=a entity_id=x revision=1"),
        );
        metadata.append(SKIPPED_HEADER, MetadataValue::from_static("odd value"));
        metadata.append("x-other", MetadataValue::from_static("ignored"));
        let records = skipped_from_metadata(&metadata);
        assert_eq!(records.len(), 2);
        assert!(matches!(&records[0], SkippedRecord::Event(event) if event.offset == 5));
        assert_eq!(
            records[1],
            SkippedRecord::Unparsed {
                raw: "odd value".to_string()
            }
        );
    }

    #[test]
    fn no_header_means_nothing_skipped() {
        assert!(skipped_from_metadata(&MetadataMap::new()).is_empty());
    }
}
