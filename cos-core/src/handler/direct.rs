//! A plaintext HTTP/2 transport for the write-handler client that the calling task drives itself.
//!
//! tonic's `Channel` puts a buffer task between each caller and the connection: one more task hand-off on
//! every handler call, two per command, and about 5 % of the node's CPU in the write-path profile
//! (docs/performance.md). This transport hands requests straight to hyper's HTTP/2 connection; it
//! connects on first use and again after the connection closed (a handler restart), like tonic's lazy
//! channel. TLS handlers keep tonic's channel.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::uri::{Authority, Scheme};
use tonic::codegen::http::{Request, Response, Uri};

use crate::settings::KeepaliveSettings;

/// A lazily connected HTTP/2 connection to one handler; clones share the connection.
#[derive(Clone)]
pub struct DirectChannel {
    shared: Arc<Shared>,
}

struct Shared {
    /// `host:port`, for connecting and as every request's `:authority`.
    authority: Authority,
    connect_timeout: Duration,
    keepalive: Option<KeepaliveSettings>,
    /// The open connection's request handle; `None` before the first call.
    sender: Mutex<Option<SendRequest<Body>>>,
    /// Held while connecting, so that callers arriving meanwhile share one new connection.
    connecting: tokio::sync::Mutex<()>,
}

/// A transport failure, as tonic's channel reports it: UNAVAILABLE without details.
fn unavailable(error: impl std::fmt::Display) -> Status {
    Status::unavailable(error.to_string())
}

impl DirectChannel {
    /// A channel to `authority` (`host:port`); nothing connects until the first call.
    pub fn new(
        authority: Authority,
        connect_timeout: Duration,
        keepalive: Option<KeepaliveSettings>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                authority,
                connect_timeout,
                keepalive,
                sender: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn open_sender(&self) -> Option<SendRequest<Body>> {
        self.shared
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|sender| !sender.is_closed())
            .cloned()
    }

    async fn sender(&self) -> Result<SendRequest<Body>, Status> {
        if let Some(sender) = self.open_sender() {
            return Ok(sender);
        }
        let _connecting = self.shared.connecting.lock().await;
        if let Some(sender) = self.open_sender() {
            return Ok(sender);
        }
        let sender = self.connect().await?;
        *self
            .shared
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
        Ok(sender)
    }

    async fn connect(&self) -> Result<SendRequest<Body>, Status> {
        let address = self.shared.authority.as_str();
        let stream = tokio::time::timeout(
            self.shared.connect_timeout,
            tokio::net::TcpStream::connect(address),
        )
        .await
        .map_err(|_elapsed| unavailable(format!("connecting to {address} timed out")))?
        .map_err(|error| unavailable(format!("cannot connect to {address}: {error}")))?;
        // Small frames must not wait for acknowledgements (see the gateway's listener).
        stream.set_nodelay(true).map_err(unavailable)?;
        let mut builder = Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        if let Some(keepalive) = self.shared.keepalive {
            builder
                .keep_alive_interval(keepalive.interval)
                .keep_alive_timeout(keepalive.timeout)
                .keep_alive_while_idle(keepalive.while_idle);
        }
        let (sender, connection) = builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|error| unavailable(format!("HTTP/2 handshake with {address}: {error}")))?;
        let peer = address.to_string();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(handler = %peer, %error, "write handler connection closed");
            }
        });
        Ok(sender)
    }

    /// tonic's generated client sets only the path; HTTP/2 also needs the scheme and authority.
    fn with_origin(&self, mut request: Request<Body>) -> Result<Request<Body>, Status> {
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.shared.authority.clone());
        *request.uri_mut() = Uri::from_parts(parts)
            .map_err(|error| Status::internal(format!("request URI: {error}")))?;
        Ok(request)
    }
}

impl tower_service::Service<Request<Body>> for DirectChannel {
    type Response = Response<hyper::body::Incoming>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Status>> {
        // Readiness is the connection's, awaited per call below.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let channel = self.clone();
        Box::pin(async move {
            let request = channel.with_origin(request)?;
            let mut sender = channel.sender().await?;
            sender.ready().await.map_err(unavailable)?;
            sender.send_request(request).await.map_err(unavailable)
        })
    }
}
