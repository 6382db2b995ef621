//! Kubernetes discovery (`kubernetes` mode): the running pods labelled `app=<label>` in this pod's namespace,
//! listed through the API server with the pod's service account, as with Pekko's `kubernetes-api` discovery.
//! The service account needs RBAC `list` on `pods`.
//!
//! The HTTP client is a single hand-rolled HTTP/1.1 GET on hyper and tokio-rustls, which are already in the
//! dependency graph (through tonic); a full Kubernetes client would double the build for one request. TLS uses
//! the aws-lc-rs provider explicitly, so no process-wide default provider has to be installed.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, CONNECTION, HOST};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::{DiscoveryError, SeedAddress};

/// Where Kubernetes mounts the pod's service-account token, CA certificate and namespace.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How long one pod-list request may take; a hung API server must not stall a single [`super::discover`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound on the pod-list body, so a huge namespace cannot exhaust memory (about 10 000 pods).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Longest API error text kept when the error body is not a Kubernetes `Status`.
const MAX_ERROR_MESSAGE_CHARS: usize = 300;

/// Everything needed to list the peer pods; plain data so tests can point it at a local server.
#[derive(Clone)]
pub struct KubernetesConfig {
    /// `https://host:port` of the API server (plain `http://` is accepted, for tests and proxies).
    pub api_base_url: String,
    /// Bearer token; `None` sends no `Authorization` header.
    pub token: Option<String>,
    /// PEM CA certificates that sign the API server's certificate; required for `https`.
    pub ca_pem: Option<Vec<u8>>,
    /// The namespace whose pods are listed (this pod's own).
    pub namespace: String,
    /// Value of the `app` label shared by the peers (`COS_KUBERNETES_APP_LABEL`).
    pub label: String,
    /// The cluster port every peer listens on; paired with each pod IP.
    pub cluster_port: u16,
}

impl fmt::Debug for KubernetesConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("KubernetesConfig")
            .field("api_base_url", &self.api_base_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field(
                "ca_pem",
                &self
                    .ca_pem
                    .as_ref()
                    .map(|pem| format!("<{} bytes>", pem.len())),
            )
            .field("namespace", &self.namespace)
            .field("label", &self.label)
            .field("cluster_port", &self.cluster_port)
            .finish()
    }
}

impl KubernetesConfig {
    /// Builds the in-cluster configuration: the API server from `KUBERNETES_SERVICE_HOST` and
    /// `KUBERNETES_SERVICE_PORT`, the token, CA and namespace from [`SERVICE_ACCOUNT_DIR`]. Reads small files
    /// synchronously, so call it at start-up (or in `spawn_blocking`). Projected tokens rotate (about hourly), so
    /// build a fresh config for each later discovery round rather than keeping one for the life of the process.
    pub fn from_service_account(label: &str, cluster_port: u16) -> Result<Self, DiscoveryError> {
        Self::from_sources(
            label,
            cluster_port,
            |name| std::env::var(name).ok(),
            Path::new(SERVICE_ACCOUNT_DIR),
        )
    }

    /// [`Self::from_service_account`] with the environment and the directory injected, for tests.
    fn from_sources(
        label: &str,
        cluster_port: u16,
        read_environment: impl Fn(&str) -> Option<String>,
        service_account_dir: &Path,
    ) -> Result<Self, DiscoveryError> {
        let required_variable = |name: &'static str| match read_environment(name) {
            Some(value) if !value.trim().is_empty() => Ok(value.trim().to_string()),
            _ => Err(DiscoveryError::MissingEnvironmentVariable { name }),
        };
        let service_host = required_variable("KUBERNETES_SERVICE_HOST")?;
        let service_port = required_variable("KUBERNETES_SERVICE_PORT")?;
        let api_base_url = if service_host.contains(':') {
            format!("https://[{service_host}]:{service_port}")
        } else {
            format!("https://{service_host}:{service_port}")
        };

        let read_file = |file_name: &str| {
            let path = service_account_dir.join(file_name);
            std::fs::read(&path)
                .map_err(|source| DiscoveryError::ReadServiceAccountFile { path, source })
        };
        let token = String::from_utf8_lossy(&read_file("token")?)
            .trim()
            .to_string();
        let ca_pem = read_file("ca.crt")?;
        let namespace = String::from_utf8_lossy(&read_file("namespace")?)
            .trim()
            .to_string();

        Ok(KubernetesConfig {
            api_base_url,
            token: Some(token),
            ca_pem: Some(ca_pem),
            namespace,
            label: label.to_string(),
            cluster_port,
        })
    }

    /// The pod-list URL: `{base}/api/v1/namespaces/{ns}/pods?labelSelector=app%3D{label}`.
    fn pods_url(&self) -> String {
        format!(
            "{}/api/v1/namespaces/{}/pods?labelSelector=app%3D{}",
            self.api_base_url.trim_end_matches('/'),
            percent_encode(&self.namespace),
            percent_encode(&self.label)
        )
    }
}

/// Lists the pods once and returns `podIP:cluster_port` of each running pod that has an IP and is not being
/// deleted (a terminating pod is a poor contact point).
pub(super) async fn running_pod_addresses(
    config: &KubernetesConfig,
) -> Result<Vec<SeedAddress>, DiscoveryError> {
    let url = config.pods_url();
    let exchange = get(&url, config.token.as_deref(), config.ca_pem.as_deref());
    let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_elapsed| DiscoveryError::RequestTimedOut {
            url: url.clone(),
            timeout: REQUEST_TIMEOUT,
        })??;
    if !status.is_success() {
        return Err(DiscoveryError::ApiStatus {
            url,
            status: status.as_u16(),
            message: error_message(&body),
        });
    }
    let pod_list: PodList = serde_json::from_slice(&body)
        .map_err(|source| DiscoveryError::InvalidPodList { url, source })?;

    let mut addresses = Vec::new();
    for pod in pod_list.items {
        let pod_name = pod.metadata.name.as_deref().unwrap_or("<unnamed>");
        if pod.metadata.deletion_timestamp.is_some()
            || pod.status.phase.as_deref() != Some("Running")
        {
            continue;
        }
        let Some(pod_ip) = pod.status.pod_ip.as_deref() else {
            continue;
        };
        match pod_ip.parse::<IpAddr>() {
            Ok(ip) => addresses.push(SeedAddress::new(ip.to_string(), config.cluster_port)),
            Err(_) => tracing::warn!(pod = pod_name, pod_ip, "ignoring pod with an unparsable ip"),
        }
    }
    Ok(addresses)
}

/// The parts of a Kubernetes `PodList` that discovery reads.
#[derive(Debug, Deserialize)]
struct PodList {
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Debug, Deserialize)]
struct Pod {
    #[serde(default)]
    metadata: PodMetadata,
    #[serde(default)]
    status: PodStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodMetadata {
    name: Option<String>,
    deletion_timestamp: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodStatus {
    phase: Option<String>,
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
}

/// The `message` of a Kubernetes `Status` error body, or the start of the body when it is something else.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Status {
        message: Option<String>,
    }
    if let Ok(Status {
        message: Some(message),
    }) = serde_json::from_slice::<Status>(body)
    {
        return message;
    }
    String::from_utf8_lossy(body)
        .trim()
        .chars()
        .take(MAX_ERROR_MESSAGE_CHARS)
        .collect()
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so a label or namespace cannot alter the URL.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// One HTTP/1.1 GET over a fresh connection (`Connection: close`); returns the status and the whole body.
async fn get(
    url: &str,
    token: Option<&str>,
    ca_pem: Option<&[u8]>,
) -> Result<(StatusCode, Bytes), DiscoveryError> {
    let invalid_url = |reason: &str| DiscoveryError::InvalidApiUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|error: hyper::http::uri::InvalidUri| invalid_url(&error.to_string()))?;
    let use_tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(invalid_url("the scheme must be http or https")),
    };
    let Some(authority) = uri.authority() else {
        return Err(invalid_url("missing host"));
    };
    let bracketed_host = authority.host();
    let host = bracketed_host.trim_start_matches('[').trim_end_matches(']');
    let default_port = if use_tls { 443 } else { 80 };
    let port = uri.port_u16().unwrap_or(default_port);
    let address = format!("{bracketed_host}:{port}");
    let path_and_query = uri
        .path_and_query()
        .map_or("/", |path_and_query| path_and_query.as_str());

    let mut request_builder = Request::get(path_and_query)
        .header(HOST, authority.as_str())
        .header(ACCEPT, "application/json")
        .header(CONNECTION, "close");
    if let Some(token) = token {
        request_builder = request_builder.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request_builder
        .body(Empty::<Bytes>::new())
        .map_err(|source| DiscoveryError::InvalidRequest {
            url: url.to_string(),
            source,
        })?;

    // Build the TLS configuration before connecting, so a bad CA is reported as such.
    let tls_connector = if use_tls {
        let Some(ca_pem) = ca_pem else {
            return Err(DiscoveryError::MissingCaCertificate {
                url: url.to_string(),
            });
        };
        Some(tls_connector(ca_pem)?)
    } else {
        None
    };

    let tcp_stream =
        TcpStream::connect((host, port))
            .await
            .map_err(|source| DiscoveryError::Connect {
                address: address.clone(),
                source,
            })?;
    match tls_connector {
        None => exchange(tcp_stream, request, url).await,
        Some(tls_connector) => {
            let server_name = ServerName::try_from(host.to_string()).map_err(|error| {
                invalid_url(&format!("host is not a valid tls server name: {error}"))
            })?;
            let tls_stream = tls_connector
                .connect(server_name, tcp_stream)
                .await
                .map_err(|source| DiscoveryError::TlsHandshake { address, source })?;
            exchange(tls_stream, request, url).await
        }
    }
}

/// A TLS client trusting only the given CA certificates, with the aws-lc-rs provider passed explicitly.
fn tls_connector(ca_pem: &[u8]) -> Result<TlsConnector, DiscoveryError> {
    let mut root_store = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem) {
        let certificate = certificate.map_err(|error| DiscoveryError::InvalidCaCertificate {
            reason: error.to_string(),
        })?;
        root_store
            .add(certificate)
            .map_err(|error| DiscoveryError::InvalidCaCertificate {
                reason: error.to_string(),
            })?;
    }
    if root_store.is_empty() {
        return Err(DiscoveryError::InvalidCaCertificate {
            reason: "no certificate found in the pem data".to_string(),
        });
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let mut client_config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| DiscoveryError::TlsConfig { source })?
        .with_root_certificates(root_store)
        .with_no_client_auth();
    client_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(client_config)))
}

/// Sends `request` over `stream` and reads the whole response, driving the connection in the same task.
async fn exchange<S>(
    stream: S,
    request: Request<Empty<Bytes>>,
    url: &str,
) -> Result<(StatusCode, Bytes), DiscoveryError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_error = |source| DiscoveryError::Http {
        url: url.to_string(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_error)?;
    let response_future = async move {
        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|source| DiscoveryError::ResponseBody {
                url: url.to_string(),
                source,
            })?
            .to_bytes();
        // `sender` is dropped here, which lets `connection` finish.
        Ok((status, body))
    };
    let (connection_result, response_result) = tokio::join!(connection, response_future);
    if let Err(error) = connection_result {
        tracing::debug!(url, error = %error, "kubernetes api connection ended with an error");
    }
    response_result
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;

    use http_body_util::Full;
    use hyper::Response;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::PrivateKeyDer;

    use super::super::{DiscoveryMethod, discover, discover_until};
    use super::*;

    const POD_LIST_WITH_ONE_RUNNING_POD: &str = r#"{
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "42"},
        "items": [
            {"metadata": {"name": "cos-0"}, "status": {"phase": "Pending", "podIP": "10.1.0.1"}},
            {"metadata": {"name": "cos-1"}, "status": {"phase": "Running"}},
            {"metadata": {"name": "cos-2"}, "status": {"phase": "Running", "podIP": "10.1.0.3",
                "podIPs": [{"ip": "10.1.0.3"}]}}
        ]
    }"#;

    const FORBIDDEN_STATUS: &str = r#"{
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "pods is forbidden: User \"system:serviceaccount:cos:default\" cannot list resource \"pods\" in API group \"\" in the namespace \"cos\"",
        "reason": "Forbidden",
        "details": {"kind": "pods"},
        "code": 403
    }"#;

    /// What the fake API server saw of one request.
    #[derive(Debug, Clone)]
    struct RecordedRequest {
        method: String,
        path_and_query: String,
        authorization: Option<String>,
    }

    /// Serves `body` with `status` for every request on a local port; returns the base URL and the requests.
    async fn serve_fake_api(
        status: StatusCode,
        body: &'static str,
    ) -> (String, Arc<Mutex<Vec<RecordedRequest>>>) {
        serve_fake_api_with_tls(status, body, None).await
    }

    /// [`serve_fake_api`], over TLS when an acceptor is given (then the base URL is `https`).
    async fn serve_fake_api_with_tls(
        status: StatusCode,
        body: &'static str,
        tls_acceptor: Option<TlsAcceptor>,
    ) -> (String, Arc<Mutex<Vec<RecordedRequest>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls_acceptor.is_some() {
            "https"
        } else {
            "http"
        };
        let base_url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let recorded_requests = Arc::new(Mutex::new(Vec::new()));
        let recorder = Arc::clone(&recorded_requests);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let recorder = Arc::clone(&recorder);
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let recorded = RecordedRequest {
                        method: request.method().to_string(),
                        path_and_query: request
                            .uri()
                            .path_and_query()
                            .map(|pq| pq.to_string())
                            .unwrap_or_default(),
                        authorization: request
                            .headers()
                            .get(AUTHORIZATION)
                            .map(|value| value.to_str().unwrap().to_string()),
                    };
                    recorder.lock().unwrap().push(recorded);
                    let response = Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                        .unwrap();
                    async move { Ok::<_, Infallible>(response) }
                });
                let tls_acceptor = tls_acceptor.clone();
                tokio::spawn(async move {
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls_acceptor {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(tls_acceptor) => {
                            if let Ok(tls_stream) = tls_acceptor.accept(stream).await {
                                let _ = http
                                    .serve_connection(TokioIo::new(tls_stream), service)
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        (base_url, recorded_requests)
    }

    /// A test CA (valid 2000-2100) and a server certificate it signed for `127.0.0.1` and `localhost`.
    const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBYDCCAQWgAwIBAgIBATAKBggqhkjOPQQDAjAWMRQwEgYDVQQDDAtjb3MtdGVz
dC1jYTAgFw0wMDAxMDEwMDAwMDBaGA8yMTAwMDEwMTAwMDAwMFowFjEUMBIGA1UE
AwwLY29zLXRlc3QtY2EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATZAJM3Hv/v
jC5SED4o5eLadMOPiFyaoxq7vXhpKzXC3+6meqhhcN/KuvSR5StsH6VoMblOXrHL
8gfGEdGHqxuyo0IwQDAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwIBBjAd
BgNVHQ4EFgQUXHhBg/d5fqHoDR+iBa2lK+ZWTbYwCgYIKoZIzj0EAwIDSQAwRgIh
AJ9Vn8ZtavtSX0x+cggohG7BtYf2WjomIlGQR+qowCGHAiEA0ZeJVFy7q7HwEz+Y
8/dw/y0PMIHR0wQtOXV/QMfRkDc=
-----END CERTIFICATE-----
";
    const TEST_SERVER_CERTIFICATE_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBrjCCAVSgAwIBAgIBAjAKBggqhkjOPQQDAjAWMRQwEgYDVQQDDAtjb3MtdGVz
dC1jYTAgFw0wMDAxMDEwMDAwMDBaGA8yMTAwMDEwMTAwMDAwMFowFDESMBAGA1UE
AwwJMTI3LjAuMC4xMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE4LHdHAar/Aq+
Qk4DzoKxFnXXeouIyzBSOYmKDc+zl5qTlwhBFv4IQA608kvOrTvSxnwo/texlmZ/
8Dh4ACZNXaOBkjCBjzAMBgNVHRMBAf8EAjAAMA4GA1UdDwEB/wQEAwIHgDATBgNV
HSUEDDAKBggrBgEFBQcDATAaBgNVHREEEzARhwR/AAABgglsb2NhbGhvc3QwHwYD
VR0jBBgwFoAUXHhBg/d5fqHoDR+iBa2lK+ZWTbYwHQYDVR0OBBYEFBr+IZr8Ro78
xDRpStQvdP5K7UmNMAoGCCqGSM49BAMCA0gAMEUCICO+MdXGzkhYTIjsHDY8PDxI
fJA5jZ3CzJv2qUe4KnOnAiEAjC7O7GSQJLhoqEf0mZ8hTqWID8sL6zjuXI8Qr3xL
JXI=
-----END CERTIFICATE-----
";
    const TEST_SERVER_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg7cE+R9FtEVxkHf/M
08VQFRYIMxjf1O9ALfyznaeh6sahRANCAATgsd0cBqv8Cr5CTgPOgrEWddd6i4jL
MFI5iYoNz7OXmpOXCEEW/ghADrTyS86tO9LGfCj+17GWZn/wOHgAJk1d
-----END PRIVATE KEY-----
";

    /// A TLS acceptor for the test server certificate, using the same aws-lc-rs provider as the client.
    fn test_tls_acceptor() -> TlsAcceptor {
        let certificate =
            CertificateDer::from_pem_slice(TEST_SERVER_CERTIFICATE_PEM.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(TEST_SERVER_KEY_PEM.as_bytes()).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let server_config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certificate], key)
            .unwrap();
        TlsAcceptor::from(Arc::new(server_config))
    }

    fn config_for(api_base_url: String) -> KubernetesConfig {
        KubernetesConfig {
            api_base_url,
            token: Some("test-token".to_string()),
            ca_pem: None,
            namespace: "cos".to_string(),
            label: "chiefofstate".to_string(),
            cluster_port: 9010,
        }
    }

    #[tokio::test]
    async fn kubernetes_discovery_returns_only_running_pods_with_an_ip() {
        let (base_url, recorded_requests) =
            serve_fake_api(StatusCode::OK, POD_LIST_WITH_ONE_RUNNING_POD).await;
        let method = DiscoveryMethod::Kubernetes(config_for(base_url));

        let addresses = discover(&method).await.unwrap();

        assert_eq!(addresses, vec![SeedAddress::new("10.1.0.3", 9010)]);
        let requests = recorded_requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].method, "GET");
        assert_eq!(
            requests[0].path_and_query,
            "/api/v1/namespaces/cos/pods?labelSelector=app%3Dchiefofstate"
        );
        assert_eq!(
            requests[0].authorization.as_deref(),
            Some("Bearer test-token")
        );
    }

    #[tokio::test]
    async fn kubernetes_discovery_without_token_sends_no_authorization_header() {
        let (base_url, recorded_requests) =
            serve_fake_api(StatusCode::OK, POD_LIST_WITH_ONE_RUNNING_POD).await;
        let mut config = config_for(format!("{base_url}/"));
        config.token = None;

        let addresses = discover(&DiscoveryMethod::Kubernetes(config))
            .await
            .unwrap();

        assert_eq!(addresses.len(), 1);
        let requests = recorded_requests.lock().unwrap().clone();
        assert_eq!(requests[0].authorization, None);
        assert!(
            requests[0].path_and_query.starts_with("/api/v1/"),
            "{requests:?}"
        );
    }

    #[tokio::test]
    async fn kubernetes_discover_until_times_out_naming_found_and_required_counts() {
        let (base_url, recorded_requests) =
            serve_fake_api(StatusCode::OK, POD_LIST_WITH_ONE_RUNNING_POD).await;
        let method = DiscoveryMethod::Kubernetes(config_for(base_url));

        let error = discover_until(
            &method,
            2,
            Duration::from_millis(500),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();

        assert!(
            matches!(
                error,
                DiscoveryError::Timeout {
                    found: 1,
                    required: 2,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "discovery of kubernetes pods labelled `app=chiefofstate` in namespace `cos` timed out after 500ms: \
             found 1 of 2 required addresses"
        );
        assert!(
            recorded_requests.lock().unwrap().len() >= 2,
            "the loop should retry"
        );

        let enough = discover_until(
            &method,
            1,
            Duration::from_millis(500),
            Duration::from_millis(50),
        )
        .await;
        assert_eq!(enough.unwrap(), vec![SeedAddress::new("10.1.0.3", 9010)]);
    }

    #[tokio::test]
    async fn kubernetes_api_error_status_reports_the_code_and_message() {
        let (base_url, _) = serve_fake_api(StatusCode::FORBIDDEN, FORBIDDEN_STATUS).await;
        let method = DiscoveryMethod::Kubernetes(config_for(base_url));

        let error = discover(&method).await.unwrap_err();

        assert!(
            matches!(&error, DiscoveryError::ApiStatus { status: 403, message, .. }
                if message.starts_with("pods is forbidden")),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("403"), "{message}");
        assert!(
            message.contains("cannot list resource \"pods\""),
            "{message}"
        );

        let timeout_error = discover_until(
            &method,
            1,
            Duration::from_millis(200),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            timeout_error.contains(
                "found 0 of 1 required addresses (last error: kubernetes api returned status 403"
            ),
            "{timeout_error}"
        );
    }

    #[tokio::test]
    async fn kubernetes_api_error_with_a_non_json_body_reports_the_body_text() {
        let (base_url, _) = serve_fake_api(StatusCode::BAD_GATEWAY, "upstream unavailable\n").await;

        let error = discover(&DiscoveryMethod::Kubernetes(config_for(base_url)))
            .await
            .unwrap_err();

        assert!(
            matches!(&error, DiscoveryError::ApiStatus { status: 502, message, .. } if message == "upstream unavailable"),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn kubernetes_discovery_rejects_a_body_that_is_not_a_pod_list() {
        let (base_url, _) = serve_fake_api(StatusCode::OK, "[1, 2, 3]").await;

        let error = discover(&DiscoveryMethod::Kubernetes(config_for(base_url)))
            .await
            .unwrap_err();

        assert!(
            matches!(error, DiscoveryError::InvalidPodList { .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn kubernetes_discovery_over_https_verifies_the_server_with_the_given_ca() {
        let (base_url, recorded_requests) = serve_fake_api_with_tls(
            StatusCode::OK,
            POD_LIST_WITH_ONE_RUNNING_POD,
            Some(test_tls_acceptor()),
        )
        .await;
        let mut config = config_for(base_url);
        config.ca_pem = Some(TEST_CA_PEM.as_bytes().to_vec());

        let addresses = discover(&DiscoveryMethod::Kubernetes(config.clone()))
            .await
            .unwrap();

        assert_eq!(addresses, vec![SeedAddress::new("10.1.0.3", 9010)]);
        let requests = recorded_requests.lock().unwrap().clone();
        assert_eq!(
            requests[0].authorization.as_deref(),
            Some("Bearer test-token")
        );

        config.ca_pem = Some(TEST_SERVER_CERTIFICATE_PEM.as_bytes().to_vec());
        let untrusted = discover(&DiscoveryMethod::Kubernetes(config))
            .await
            .unwrap_err();
        assert!(
            matches!(untrusted, DiscoveryError::TlsHandshake { .. }),
            "{untrusted:?}"
        );
    }

    #[tokio::test]
    async fn https_api_url_requires_a_valid_ca_certificate() {
        let mut config = config_for("https://127.0.0.1:1".to_string());
        let missing_ca = discover(&DiscoveryMethod::Kubernetes(config.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(missing_ca, DiscoveryError::MissingCaCertificate { .. }),
            "{missing_ca:?}"
        );

        config.ca_pem = Some(b"not a certificate".to_vec());
        let invalid_ca = discover(&DiscoveryMethod::Kubernetes(config))
            .await
            .unwrap_err();
        assert!(
            matches!(invalid_ca, DiscoveryError::InvalidCaCertificate { .. }),
            "{invalid_ca:?}"
        );
    }

    #[tokio::test]
    async fn unreachable_api_server_is_a_connect_error_naming_the_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_address = listener.local_addr().unwrap();
        drop(listener);

        let error = discover(&DiscoveryMethod::Kubernetes(config_for(format!(
            "http://{closed_address}"
        ))))
        .await
        .unwrap_err();

        assert!(matches!(error, DiscoveryError::Connect { .. }), "{error:?}");
        assert!(
            error.to_string().contains(&closed_address.to_string()),
            "{error}"
        );
    }

    #[test]
    fn service_account_config_reads_the_api_url_token_ca_and_namespace() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::write(directory.path().join("token"), "secret-token\n").unwrap();
        std::fs::write(
            directory.path().join("ca.crt"),
            "-----BEGIN CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(directory.path().join("namespace"), "cos\n").unwrap();
        let environment = |name: &str| match name {
            "KUBERNETES_SERVICE_HOST" => Some("10.96.0.1".to_string()),
            "KUBERNETES_SERVICE_PORT" => Some("443".to_string()),
            _ => None,
        };

        let config =
            KubernetesConfig::from_sources("chiefofstate", 9010, environment, directory.path())
                .unwrap();

        assert_eq!(config.api_base_url, "https://10.96.0.1:443");
        assert_eq!(config.token.as_deref(), Some("secret-token"));
        assert_eq!(
            config.ca_pem.as_deref(),
            Some(&b"-----BEGIN CERTIFICATE-----\n"[..])
        );
        assert_eq!(config.namespace, "cos");
        assert_eq!(config.label, "chiefofstate");
        assert_eq!(config.cluster_port, 9010);
        assert!(!format!("{config:?}").contains("secret-token"));
    }

    #[test]
    fn service_account_config_brackets_an_ipv6_api_host() {
        let directory = tempfile::tempdir().unwrap();
        for file_name in ["token", "ca.crt", "namespace"] {
            std::fs::write(directory.path().join(file_name), "x").unwrap();
        }
        let environment = |name: &str| match name {
            "KUBERNETES_SERVICE_HOST" => Some("fd00:10:96::1".to_string()),
            "KUBERNETES_SERVICE_PORT" => Some("443".to_string()),
            _ => None,
        };

        let config =
            KubernetesConfig::from_sources("cos", 9010, environment, directory.path()).unwrap();

        assert_eq!(config.api_base_url, "https://[fd00:10:96::1]:443");
    }

    #[test]
    fn service_account_config_names_the_missing_variable() {
        let directory = tempfile::tempdir().unwrap();
        let only_host =
            |name: &str| (name == "KUBERNETES_SERVICE_HOST").then(|| "10.96.0.1".to_string());

        let error =
            KubernetesConfig::from_sources("cos", 9010, only_host, directory.path()).unwrap_err();

        assert!(
            matches!(
                error,
                DiscoveryError::MissingEnvironmentVariable {
                    name: "KUBERNETES_SERVICE_PORT"
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("KUBERNETES_SERVICE_PORT"));
    }

    #[test]
    fn service_account_config_names_the_missing_file() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::write(directory.path().join("token"), "secret-token").unwrap();
        let environment = |name: &str| match name {
            "KUBERNETES_SERVICE_HOST" => Some("10.96.0.1".to_string()),
            "KUBERNETES_SERVICE_PORT" => Some("443".to_string()),
            _ => None,
        };

        let error =
            KubernetesConfig::from_sources("cos", 9010, environment, directory.path()).unwrap_err();

        let expected_path = directory.path().join("ca.crt");
        assert!(
            matches!(&error, DiscoveryError::ReadServiceAccountFile { path, .. } if *path == expected_path),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .contains(&expected_path.display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn label_and_namespace_are_percent_encoded_in_the_url() {
        let mut config = config_for("http://api/".to_string());
        config.label = "cos&x=y".to_string();
        config.namespace = "a/b".to_string();

        assert_eq!(
            config.pods_url(),
            "http://api/api/v1/namespaces/a%2Fb/pods?labelSelector=app%3Dcos%26x%3Dy"
        );
    }
}
