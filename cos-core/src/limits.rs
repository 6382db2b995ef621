//! The gRPC message limit every reply must fit in, and the size of the replies that carry a state.
//!
//! A reply over the limit cannot reach the client: the gateway refuses to encode it and every generated client
//! refuses to decode it. A state that makes such a reply must therefore never be persisted, or the entity could
//! no longer be read (`GetState`) and its next command would be refused by the handler.

use prost::Message;
use prost::encoding::{encoded_len_varint, key_len};
use prost_types::Any;

use crate::proto::chief_of_state::v1::MetaData;

/// Largest request or reply message (bytes): gRPC's default, which generated clients and handlers also keep.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The encoded length of a `ProcessCommandResponse` or `GetStateResponse` (both are `state = 1, meta = 2`)
/// carrying `state` and `meta`, computed without copying the state.
pub fn state_reply_len(state: Option<&Any>, meta: Option<&MetaData>) -> usize {
    state.map_or(0, |state| message_field_len(1, state.encoded_len()))
        + meta.map_or(0, |meta| message_field_len(2, meta.encoded_len()))
}

fn message_field_len(tag: u32, body_len: usize) -> usize {
    key_len(tag) + encoded_len_varint(body_len as u64) + body_len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::chief_of_state::v1::{GetStateResponse, ProcessCommandResponse};
    use prost_types::Timestamp;

    fn sample(value_len: usize) -> (Any, MetaData) {
        let state = Any {
            type_url: "type.googleapis.com/bank.Account".to_string(),
            value: vec![7; value_len],
        };
        let meta = MetaData {
            entity_id: "account-1".to_string(),
            revision_number: 42,
            revision_date: Some(Timestamp {
                seconds: 1_800_000_000,
                nanos: 5,
            }),
            ..Default::default()
        };
        (state, meta)
    }

    #[test]
    fn matches_the_encoded_replies_at_every_length_class() {
        for value_len in [
            0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 4_194_304,
        ] {
            let (state, meta) = sample(value_len);
            let computed = state_reply_len(Some(&state), Some(&meta));
            let command_reply = ProcessCommandResponse {
                state: Some(state.clone()),
                meta: Some(meta.clone()),
            };
            let get_reply = GetStateResponse {
                state: Some(state),
                meta: Some(meta),
            };
            assert_eq!(
                computed,
                command_reply.encoded_len(),
                "value of {value_len} bytes"
            );
            assert_eq!(
                computed,
                get_reply.encoded_len(),
                "value of {value_len} bytes"
            );
        }
    }

    #[test]
    fn absent_parts_cost_nothing() {
        assert_eq!(state_reply_len(None, None), 0);
        let (state, _) = sample(10);
        assert_eq!(
            state_reply_len(Some(&state), None),
            ProcessCommandResponse {
                state: Some(state.clone()),
                meta: None
            }
            .encoded_len()
        );
    }
}
