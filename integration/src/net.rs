//! Listening sockets for the handlers and servers this crate runs.

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// Accepted connections with Nagle's algorithm off, as production gRPC servers (Go, Java, CoS itself) do:
/// a unary reply is several small writes, and Nagle holds the later ones back until the first is
/// acknowledged, which adds delayed-ACK stalls of tens of milliseconds at low request rates.
pub fn accept_without_delay(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}
