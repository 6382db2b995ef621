//! The JSON an HTTP read handler receives (§5.7, §7.3): snake_case fields, every `google.protobuf.Any` as
//! standard padded base64 of the serialized Any (not proto3 canonical JSON, since CoS has no type registry),
//! and empty values omitted, exactly as the original writes them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prost::Message;
use prost_types::{Any, Timestamp};
use serde_json::{Map, Value};

use super::ReadSideDelivery;
use crate::proto::chief_of_state::v1::{Header, MetaData, header};

/// The body of `POST /v1/readside/handle`: `event`, `state`, `meta` and the always-present `read_side_id`.
pub(super) fn read_side_request_body(delivery: ReadSideDelivery<'_>) -> Value {
    let mut body = Map::new();
    if let Some(event) = any_to_base64(delivery.event.event.as_ref()) {
        body.insert("event".to_string(), Value::String(event));
    }
    if let Some(state) = any_to_base64(delivery.event.resulting_state.as_ref()) {
        body.insert("state".to_string(), Value::String(state));
    }
    if let Some(meta) = &delivery.event.meta {
        body.insert("meta".to_string(), meta_to_json(meta));
    }
    body.insert(
        "read_side_id".to_string(),
        Value::String(delivery.read_side_id.to_string()),
    );
    Value::Object(body)
}

/// Base64 of the serialized Any, or `None` for an absent or empty Any (which the original omits).
pub(super) fn any_to_base64(any: Option<&Any>) -> Option<String> {
    let any = any?;
    if any.type_url.is_empty() && any.value.is_empty() {
        return None;
    }
    Some(STANDARD.encode(any.encode_to_vec()))
}

/// `MetaData` as §7.3 writes it; every empty field is left out, so an empty meta is `{}`.
pub(super) fn meta_to_json(meta: &MetaData) -> Value {
    let mut object = Map::new();
    if !meta.entity_id.is_empty() {
        object.insert(
            "entity_id".to_string(),
            Value::String(meta.entity_id.clone()),
        );
    }
    if meta.revision_number != 0 {
        object.insert(
            "revision_number".to_string(),
            Value::from(meta.revision_number),
        );
    }
    if let Some(revision_date) = &meta.revision_date {
        object.insert(
            "revision_date".to_string(),
            Value::String(format_timestamp(revision_date)),
        );
    }
    // Sorted keys, so the same meta always gives the same bytes.
    let mut keys: Vec<&String> = meta.data.keys().collect();
    keys.sort();
    let mut data = Map::new();
    for key in keys {
        if let Some(encoded) = any_to_base64(meta.data.get(key)) {
            data.insert(key.clone(), Value::String(encoded));
        }
    }
    if !data.is_empty() {
        object.insert("data".to_string(), Value::Object(data));
    }
    if !meta.headers.is_empty() {
        let headers = meta.headers.iter().map(header_to_json).collect();
        object.insert("headers".to_string(), Value::Array(headers));
    }
    Value::Object(object)
}

fn header_to_json(header: &Header) -> Value {
    let mut object = Map::new();
    object.insert("key".to_string(), Value::String(header.key.clone()));
    match &header.value {
        Some(header::Value::StringValue(text)) => {
            object.insert("string_value".to_string(), Value::String(text.clone()));
        }
        Some(header::Value::BytesValue(bytes)) => {
            object.insert(
                "bytes_value".to_string(),
                Value::String(STANDARD.encode(bytes)),
            );
        }
        None => {}
    }
    Value::Object(object)
}

const NANOS_PER_SECOND: i64 = 1_000_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// ISO-8601 UTC as Java's `Instant.toString` prints it: `2023-11-14T22:13:20.250Z`, with 0, 3, 6 or 9 fraction
/// digits (the fewest that keep every non-zero digit). Out-of-range nanos are carried into the seconds.
pub(super) fn format_timestamp(timestamp: &Timestamp) -> String {
    let total_nanos =
        i128::from(timestamp.seconds) * i128::from(NANOS_PER_SECOND) + i128::from(timestamp.nanos);
    let nanos_per_second = i128::from(NANOS_PER_SECOND);
    let seconds = i64::try_from(total_nanos.div_euclid(nanos_per_second)).unwrap_or(i64::MAX);
    let nanos = i64::try_from(total_nanos.rem_euclid(nanos_per_second)).unwrap_or(0);

    let days = seconds.div_euclid(SECONDS_PER_DAY);
    let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let hour = second_of_day / 3600;
    let minute = second_of_day % 3600 / 60;
    let second = second_of_day % 60;

    let fraction = if nanos == 0 {
        String::new()
    } else if nanos % 1_000_000 == 0 {
        format!(".{:03}", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!(".{:06}", nanos / 1_000)
    } else {
        format!(".{nanos:09}")
    };
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}Z")
}

/// Year, month (1..=12) and day (1..=31) of the proleptic Gregorian date `days` after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`), so no date library is needed for one format.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::readside::handler::test_support;

    fn timestamp(seconds: i64, nanos: i32) -> String {
        format_timestamp(&Timestamp { seconds, nanos })
    }

    #[test]
    fn timestamps_print_like_java_instant_to_string() {
        assert_eq!(timestamp(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            timestamp(1_700_000_000, 250_000_000),
            "2023-11-14T22:13:20.250Z"
        );
        assert_eq!(
            timestamp(1_700_000_000, 250_000),
            "2023-11-14T22:13:20.000250Z"
        );
        assert_eq!(
            timestamp(1_700_000_000, 1),
            "2023-11-14T22:13:20.000000001Z"
        );
        assert_eq!(timestamp(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(timestamp(-1, 0), "1969-12-31T23:59:59Z");
        assert_eq!(timestamp(253_402_300_799, 0), "9999-12-31T23:59:59Z");
        assert_eq!(
            timestamp(1_700_000_000, -500_000_000),
            "2023-11-14T22:13:19.500Z"
        );
    }

    #[test]
    fn base64_is_standard_and_padded() {
        // RFC 4648 §10 vectors, through the same engine the body uses.
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(STANDARD.encode(input), expected);
        }
        assert_eq!(STANDARD.encode([0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn empty_meta_is_an_empty_object_and_empty_anys_are_omitted() {
        assert_eq!(meta_to_json(&MetaData::default()), json!({}));
        assert_eq!(any_to_base64(None), None);
        assert_eq!(any_to_base64(Some(&Any::default())), None);
    }

    #[test]
    fn meta_json_has_the_reference_shape() {
        let mut meta = test_support::event().meta.unwrap();
        meta.headers.push(Header {
            key: "trace-bin".to_string(),
            value: Some(header::Value::BytesValue(vec![0, 1, 2])),
        });
        meta.headers.push(Header {
            key: "bare".to_string(),
            value: None,
        });
        let data_any = Any {
            type_url: "type.googleapis.com/x.Y".to_string(),
            value: vec![1],
        };
        meta.data.insert("extra".to_string(), data_any.clone());

        assert_eq!(
            meta_to_json(&meta),
            json!({
                "entity_id": "account-7",
                "revision_number": 3,
                "revision_date": "2023-11-14T22:13:20.250Z",
                "data": {"extra": STANDARD.encode(data_any.encode_to_vec())},
                "headers": [
                    {"key": "x-user", "string_value": "alice"},
                    {"key": "trace-bin", "bytes_value": "AAEC"},
                    {"key": "bare"}
                ]
            })
        );
    }

    #[test]
    fn request_body_carries_anys_as_base64_and_always_the_read_side_id() {
        let event = test_support::event();
        let delivery = ReadSideDelivery {
            entity_type: "accounts",
            read_side_id: "accounts-view",
            shard: 1,
            event: &event,
        };

        let body = read_side_request_body(delivery);

        let decoded_event = STANDARD.decode(body["event"].as_str().unwrap()).unwrap();
        assert_eq!(
            Any::decode(decoded_event.as_slice()).unwrap(),
            event.event.clone().unwrap()
        );
        let decoded_state = STANDARD.decode(body["state"].as_str().unwrap()).unwrap();
        assert_eq!(
            decoded_state,
            event.resulting_state.clone().unwrap().encode_to_vec()
        );
        assert_eq!(body["read_side_id"], "accounts-view");
        assert_eq!(body["meta"]["entity_id"], "account-7");

        let bare = crate::proto::chief_of_state::v1::EventWrapper::default();
        let bare_body = read_side_request_body(ReadSideDelivery {
            entity_type: "accounts",
            read_side_id: "accounts-view",
            shard: 1,
            event: &bare,
        });
        assert_eq!(bare_body, json!({"read_side_id": "accounts-view"}));
    }
}
