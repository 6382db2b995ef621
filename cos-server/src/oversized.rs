//! The status a client gets for a request over the gateway's message limit. tonic refuses it with
//! OUT_OF_RANGE; the gRPC status-code guide, grpc-java and grpc-go use RESOURCE_EXHAUSTED for a message over
//! the limit, which is what clients written for other gRPC servers handle. This rewrites only that refusal.

use tonic::Status;
use tonic::codegen::http::{HeaderValue, Response};
use tower::util::MapResponseLayer;

/// tonic's wording for a request message over `max_decoding_message_size`; nothing else starts with it.
const DECODED_TOO_LARGE: &str = "Error, decoded message length too large";

const OUT_OF_RANGE: &[u8] = b"11";

const RESOURCE_EXHAUSTED: HeaderValue = HeaderValue::from_static("8");

/// A server layer answering RESOURCE_EXHAUSTED (keeping tonic's message, which names the size and the
/// limit) where tonic refused an oversized request with OUT_OF_RANGE.
pub fn oversized_requests_are_resource_exhausted<B>()
-> MapResponseLayer<fn(Response<B>) -> Response<B>> {
    MapResponseLayer::new(remap_oversized_request::<B>)
}

/// The refusal is trailers-only, so its status travels in the response headers.
fn remap_oversized_request<B>(mut response: Response<B>) -> Response<B> {
    let headers = response.headers();
    // Cheap test first: only error answers carry a status in their headers, and few are OUT_OF_RANGE.
    let is_refusal = headers
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() == OUT_OF_RANGE)
        && Status::from_header_map(headers)
            .is_some_and(|status| status.message().starts_with(DECODED_TOO_LARGE));
    if is_refusal {
        response
            .headers_mut()
            .insert("grpc-status", RESOURCE_EXHAUSTED);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn status_of(response: &Response<()>) -> Status {
        Status::from_header_map(response.headers()).expect("a status in the headers")
    }

    #[test]
    fn an_oversized_request_refusal_becomes_resource_exhausted_with_its_message() {
        let refusal = Status::out_of_range(
            "Error, decoded message length too large: found 4194400 bytes, the limit is: 4194304 bytes",
        );
        let remapped = remap_oversized_request(refusal.into_http::<()>());
        let status = status_of(&remapped);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("4194304"), "{}", status.message());
    }

    #[test]
    fn other_out_of_range_statuses_are_left_alone() {
        let other = Status::out_of_range("revision 7 is past the journal's end");
        let passed = remap_oversized_request(other.into_http::<()>());
        assert_eq!(status_of(&passed).code(), Code::OutOfRange);
        let ok = Response::new(());
        assert!(
            remap_oversized_request(ok)
                .headers()
                .get("grpc-status")
                .is_none()
        );
    }
}
