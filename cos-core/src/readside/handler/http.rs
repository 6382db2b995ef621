//! The HTTP read handler client (§5.7): `POST /v1/readside/handle` with the JSON of [`super::json`], success only
//! on status 200 with `"successful": true`.
//!
//! Like Kubernetes discovery, this is a hand-rolled HTTP/1.1 exchange on hyper and tokio-rustls (aws-lc-rs
//! provider passed explicitly), which tonic already pulls in; a general HTTP client would double the build for
//! one request shape. Connections are kept alive and reused (a few idle ones per read side, as many as its
//! shards deliver at once), so a busy read side does not pay a TCP (and TLS) handshake per event; a
//! connection that fails or times out mid-call is dropped, never reused.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::grpc::host_and_port;
use super::json::read_side_request_body;
use super::{
    ENTITY_ID_HEADER, ENTITY_TYPE_HEADER, EVENT_TAG_HEADER, ReadHandler, ReadHandlerError,
    ReadHandlerSetupError, ReadSideDelivery, millis,
};
use crate::readside::ReadSideConfig;

/// The handler endpoint, fixed by the contract.
const HANDLE_PATH: &str = "/v1/readside/handle";

/// Upper bound on a response body: the answer is `{"successful":…}`, so anything large is an error page.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// How much of an error body is kept in [`ReadHandlerError::HttpStatus`].
const MAX_ERROR_BODY_CHARS: usize = 200;

/// Most idle connections kept per read side (more are closed after their call).
const MAX_IDLE_CONNECTIONS: usize = 32;

/// A read handler reached over HTTP/1.1 with JSON.
pub struct HttpReadHandler {
    host: String,
    port: u16,
    /// `host:port` as sent in `Host`.
    authority: String,
    /// The base URL, for error messages.
    address: String,
    /// Built once, since it reads the system trust store; `None` for plain http.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    timeout: Duration,
    /// Kept-alive connections ready for the next call.
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl HttpReadHandler {
    /// Checks the address and builds the TLS client (from the system trust store) when `use_tls` is set.
    pub fn new(config: &ReadSideConfig) -> Result<Self, ReadHandlerSetupError> {
        let authority = host_and_port(&config.host, config.port);
        let scheme = if config.use_tls { "https" } else { "http" };
        let address = format!("{scheme}://{authority}");
        // Parsing the whole URL rejects what `Host` or the connection could not carry (spaces, paths, …).
        if let Err(error) = format!("{address}{HANDLE_PATH}").parse::<Uri>() {
            return Err(ReadHandlerSetupError::InvalidAddress {
                address,
                reason: error.to_string(),
            });
        }
        let host = config
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls = if config.use_tls {
            let server_name = ServerName::try_from(host.clone()).map_err(|error| {
                ReadHandlerSetupError::InvalidAddress {
                    address: address.clone(),
                    reason: format!("host is not a valid tls server name: {error}"),
                }
            })?;
            let connector =
                native_roots_connector().map_err(|reason| ReadHandlerSetupError::Tls {
                    address: address.clone(),
                    reason,
                })?;
            Some((connector, server_name))
        } else {
            None
        };
        Ok(Self {
            host,
            port: config.port,
            authority,
            address,
            tls,
            timeout: config.timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn request(
        &self,
        delivery: ReadSideDelivery<'_>,
    ) -> Result<Request<Full<Bytes>>, ReadHandlerError> {
        let body = read_side_request_body(delivery).to_string();
        let mut builder = Request::post(HANDLE_PATH)
            .header(HOST, self.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(EVENT_TAG_HEADER, delivery.shard.to_string())
            .header(ENTITY_TYPE_HEADER, delivery.entity_type);
        // HTTP header values may carry any byte but controls; the body has `meta.entity_id` anyway.
        match HeaderValue::from_bytes(delivery.entity_id().as_bytes()) {
            Ok(entity_id) => builder = builder.header(ENTITY_ID_HEADER, entity_id),
            Err(_) => tracing::warn!(
                read_side_id = delivery.read_side_id,
                entity_id = delivery.entity_id(),
                "entity id is not a valid http header value; sending the event without x-cos-entity-id"
            ),
        }
        builder.body(Full::new(Bytes::from(body))).map_err(|error| {
            ReadHandlerError::InvalidResponse(format!("cannot build the request: {error}"))
        })
    }

    /// Runs one exchange on an idle connection, or a new one; the caller applies the deadline.
    async fn call(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), ReadHandlerError> {
        let (mut sender, reused) = match self.take_idle().await {
            Some(sender) => (sender, true),
            None => (self.connect().await?, false),
        };
        // A kept-alive connection the server closed meanwhile fails before any answer: send again once on
        // a fresh connection (the handler did not get it, or gets it twice: at-least-once either way).
        let retry = reused.then(|| request.clone());
        let response = match (sender.send_request(request).await, retry) {
            (Ok(response), _) => response,
            (Err(error), Some(request)) => {
                tracing::debug!(address = %self.address, %error, "kept-alive connection failed; reconnecting");
                sender = self.connect().await?;
                sender
                    .send_request(request)
                    .await
                    .map_err(|error| self.unavailable(error))?
            }
            (Err(error), None) => return Err(self.unavailable(error)),
        };
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|error| self.unavailable(format!("cannot read the response body: {error}")))?
            .to_bytes();
        self.put_idle(sender);
        Ok((status, body))
    }

    /// An idle connection that is still open and ready for a request, if any.
    async fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let candidate = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()?;
            let mut sender = candidate;
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn put_idle(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_CONNECTIONS {
            idle.push(sender);
        }
    }

    /// Opens a connection (with TLS when configured); its driver runs in its own task until the connection
    /// closes (both ends idle, the server closes it, or the sender is dropped).
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ReadHandlerError> {
        let tcp_stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|error| self.unavailable(error))?;
        let _ = tcp_stream.set_nodelay(true);
        match &self.tls {
            None => self.handshake(tcp_stream).await,
            Some((connector, server_name)) => {
                let tls_stream = connector
                    .connect(server_name.clone(), tcp_stream)
                    .await
                    .map_err(|error| self.unavailable(format!("tls handshake failed: {error}")))?;
                self.handshake(tls_stream).await
            }
        }
    }

    async fn handshake<S>(&self, stream: S) -> Result<SendRequest<Full<Bytes>>, ReadHandlerError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| self.unavailable(error))?;
        let address = self.address.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%address, %error, "read handler connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn unavailable(&self, reason: impl ToString) -> ReadHandlerError {
        ReadHandlerError::Unavailable(self.address.clone(), reason.to_string())
    }
}

/// The answer's meaning: 200 with `"successful": true` only; missing or null `successful` is a "no".
fn interpret_response(status: StatusCode, body: &[u8]) -> Result<(), ReadHandlerError> {
    if status != StatusCode::OK {
        let body_start = String::from_utf8_lossy(body)
            .chars()
            .take(MAX_ERROR_BODY_CHARS)
            .collect();
        return Err(ReadHandlerError::HttpStatus {
            status: status.as_u16(),
            body_start,
        });
    }
    let answer: Value = serde_json::from_slice(body)
        .map_err(|error| ReadHandlerError::InvalidResponse(format!("body is not json: {error}")))?;
    let Value::Object(fields) = answer else {
        return Err(ReadHandlerError::InvalidResponse(
            "body is not a json object".to_string(),
        ));
    };
    match fields.get("successful") {
        Some(Value::Bool(true)) => Ok(()),
        Some(Value::Bool(false) | Value::Null) | None => Err(ReadHandlerError::Unsuccessful),
        Some(other) => Err(ReadHandlerError::InvalidResponse(format!(
            "successful is {other}, not a boolean"
        ))),
    }
}

/// A TLS client trusting the system store (as the original's JVM trust store), aws-lc-rs provider, HTTP/1.1.
/// Unreadable certificates are skipped (logged), as long as at least one is usable.
fn native_roots_connector() -> Result<TlsConnector, String> {
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::warn!(error = %error, "skipping unreadable system certificates");
    }
    let mut root_store = RootCertStore::empty();
    let (added, ignored) = root_store.add_parsable_certificates(loaded.certs);
    if ignored > 0 {
        tracing::debug!(added, ignored, "ignored unparsable system certificates");
    }
    if root_store.is_empty() {
        return Err("no usable certificate in the system trust store".to_string());
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let mut client_config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(root_store)
        .with_no_client_auth();
    client_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(client_config)))
}

#[async_trait]
impl ReadHandler for HttpReadHandler {
    async fn handle(&self, delivery: ReadSideDelivery<'_>) -> Result<(), ReadHandlerError> {
        let request = self.request(delivery)?;
        let (status, body) = tokio::time::timeout(self.timeout, self.call(request))
            .await
            .map_err(|_elapsed| ReadHandlerError::Timeout(millis(self.timeout)))??;
        let outcome = interpret_response(status, &body);
        if let Err(error) = &outcome
            && !matches!(error, ReadHandlerError::Unsuccessful)
        {
            tracing::debug!(
                read_side_id = delivery.read_side_id,
                address = %self.address,
                error = %error,
                "read handler call failed"
            );
        }
        outcome
    }
}
