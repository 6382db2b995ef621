//! Protobuf messages as ractor_cluster payloads. `BytesConvertable` cannot fail, so undecodable bytes become
//! the message's default value (which every receiver treats as invalid) instead of a panic.

use prost::Message;

/// A protobuf message carried in a remotable actor message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wire<T>(pub T);

impl<T: Message + Default> ractor::BytesConvertable for Wire<T> {
    fn into_bytes(self) -> Vec<u8> {
        self.0.encode_to_vec()
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        match T::decode(bytes.as_slice()) {
            Ok(message) => Wire(message),
            Err(error) => {
                tracing::error!(%error, "undecodable cluster message; using an empty one");
                Wire(T::default())
            }
        }
    }
}
