//! Request headers that are forwarded to the write handler or stored in event metadata (§2.5 of the original).

use tonic::metadata::{AsciiMetadataKey, BinaryMetadataKey, MetadataMap, MetadataValue};

use crate::proto::chief_of_state::v1::{Header, header};

/// Parses a CSV header list the way the original does: trim, split on commas, trim items, drop empties,
/// keep the first of duplicates.
pub fn parse_header_list(csv: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for item in csv.trim().split(',') {
        let key = item.trim();
        if !key.is_empty() && !keys.iter().any(|existing| existing == key) {
            keys.push(key.to_string());
        }
    }
    keys
}

/// True when a configured header name can be looked up in gRPC metadata.
pub fn is_valid_header_name(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    if lower.ends_with("-bin") {
        BinaryMetadataKey::from_bytes(lower.as_bytes()).is_ok()
    } else {
        AsciiMetadataKey::from_bytes(lower.as_bytes()).is_ok()
    }
}

/// Takes every value of each configured key from the request, in configuration order. Keys ending in `-bin`
/// give bytes headers, others string headers; the stored key keeps the configured spelling.
pub fn extract_headers(metadata: &MetadataMap, keys: &[String]) -> Vec<Header> {
    let mut headers = Vec::new();
    for key in keys {
        let lookup = key.to_ascii_lowercase();
        if lookup.ends_with("-bin") {
            for value in metadata.get_all_bin(lookup.as_str()) {
                if let Ok(bytes) = value.to_bytes() {
                    headers.push(Header {
                        key: key.clone(),
                        value: Some(header::Value::BytesValue(bytes.to_vec())),
                    });
                }
            }
        } else {
            for value in metadata.get_all(lookup.as_str()) {
                if let Ok(text) = value.to_str() {
                    headers.push(Header {
                        key: key.clone(),
                        value: Some(header::Value::StringValue(text.to_string())),
                    });
                }
            }
        }
    }
    headers
}

/// Adds headers to outgoing call metadata; headers whose key or value cannot be sent are skipped.
pub fn append_headers(metadata: &mut MetadataMap, headers: &[Header]) {
    for header in headers {
        let lower = header.key.to_ascii_lowercase();
        match &header.value {
            Some(header::Value::StringValue(text)) => {
                let key = AsciiMetadataKey::from_bytes(lower.as_bytes());
                let value = MetadataValue::try_from(text.as_str());
                if let (Ok(key), Ok(value)) = (key, value) {
                    metadata.append(key, value);
                }
            }
            Some(header::Value::BytesValue(bytes)) => {
                if let Ok(key) = BinaryMetadataKey::from_bytes(lower.as_bytes()) {
                    metadata.append_bin(key, MetadataValue::from_bytes(bytes));
                }
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lists_are_trimmed_and_deduplicated() {
        assert_eq!(
            parse_header_list(" x-a , ,x-b,x-a,"),
            vec!["x-a".to_string(), "x-b".to_string()]
        );
        assert!(parse_header_list("").is_empty());
    }

    #[test]
    fn every_value_of_each_key_is_taken_in_order() {
        let mut metadata = MetadataMap::new();
        metadata.append("foo", "one".parse().expect("ascii"));
        metadata.append("foo", "two".parse().expect("ascii"));
        metadata.append_bin("bar-bin", MetadataValue::from_bytes(b"\x00\x01"));
        let headers = extract_headers(
            &metadata,
            &[
                "Foo".to_string(),
                "bar-bin".to_string(),
                "missing".to_string(),
            ],
        );
        assert_eq!(headers.len(), 3);
        assert_eq!(headers[0].key, "Foo");
        assert_eq!(
            headers[0].value,
            Some(header::Value::StringValue("one".into()))
        );
        assert_eq!(
            headers[1].value,
            Some(header::Value::StringValue("two".into()))
        );
        assert_eq!(
            headers[2].value,
            Some(header::Value::BytesValue(vec![0, 1]))
        );
    }
}
