//! The protobuf codec of every generated gRPC client and server in this workspace: tonic's prost codec with
//! smaller per-call buffers.
//!
//! tonic starts every call's encode and decode buffer at 8 KiB. Our messages are mostly far smaller, and
//! glibc serves blocks above about 1 KiB from its shared, slower path: `malloc`/`free` were 14–18 % of the
//! node's CPU in the write-path profile (docs/performance.md), with these buffers among the callers. A 1 KiB
//! start comes from the per-thread cache; larger messages grow the buffer as before, so nothing changes on
//! the wire or in the size limits.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial size of a call's encode and decode buffer.
const CALL_BUFFER_BYTES: usize = 1024;
/// How much a streaming call encodes before yielding (tonic's default).
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(CALL_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

/// [`tonic_prost::ProstCodec`] with `CALL_BUFFER_BYTES` buffers; named by `codec_path` in `build.rs`.
#[derive(Debug, Clone)]
pub struct CompactCodec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for CompactCodec<T, U> {
    fn default() -> Self {
        Self {
            _messages: PhantomData,
        }
    }
}

impl<T, U> Codec for CompactCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(buffer_settings())
    }
}
