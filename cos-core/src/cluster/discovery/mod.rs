//! How a node finds the cluster addresses (the host and *cluster* port) of its peers, so the membership layer
//! knows whom to contact. Three methods, matching the deployment modes of the original service:
//!
//! * static seeds, a configured `host:port` list;
//! * DNS (`docker` mode): every A/AAAA record of a service name, as Pekko's `pekko-dns` discovery did;
//! * Kubernetes (`kubernetes` mode): the running pods labelled `app=<label>` in the pod's namespace, as Pekko's
//!   `kubernetes-api` discovery did.
//!
//! [`discover`] makes one attempt; [`discover_until`] repeats attempts until enough peers are visible, the
//! equivalent of Pekko Cluster Bootstrap's `required-contact-point-nr` (`COS_REPLICA_COUNT`). Every attempt is
//! O(peers) in time and memory, and nothing is cached between attempts.

mod dns;
mod kubernetes;

pub use kubernetes::{KubernetesConfig, SERVICE_ACCOUNT_DIR};

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio::time::Instant;

/// The cluster address of one peer; what the membership layer dials. The host is kept as text because a
/// static seed may be a DNS name; an IPv6 host is stored without brackets and displayed with them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeedAddress {
    /// DNS name, IPv4 address or IPv6 address (without brackets).
    pub host: String,
    /// The peer's cluster port (never 0).
    pub port: u16,
}

impl SeedAddress {
    /// Builds an address from parts already known to be valid, such as a resolved socket address.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        SeedAddress {
            host: host.into(),
            port,
        }
    }
}

impl fmt::Display for SeedAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(formatter, "[{}]:{}", self.host, self.port)
        } else {
            write!(formatter, "{}:{}", self.host, self.port)
        }
    }
}

impl From<SocketAddr> for SeedAddress {
    fn from(socket_address: SocketAddr) -> Self {
        SeedAddress::new(socket_address.ip().to_string(), socket_address.port())
    }
}

impl FromStr for SeedAddress {
    type Err = DiscoveryError;

    /// Accepts `host:port`, `ipv4:port` and `[ipv6]:port`; rejects port 0, a missing port, an unbracketed IPv6
    /// address and hosts with characters that cannot appear in a DNS name.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &'static str| DiscoveryError::InvalidSeedAddress {
            input: input.to_string(),
            reason,
        };
        let (host, port_text) = if let Some(after_open_bracket) = input.strip_prefix('[') {
            let Some((host, after_close_bracket)) = after_open_bracket.split_once(']') else {
                return Err(invalid("missing closing bracket after the ipv6 address"));
            };
            if host.parse::<Ipv6Addr>().is_err() {
                return Err(invalid("the bracketed host is not an ipv6 address"));
            }
            let Some(port_text) = after_close_bracket.strip_prefix(':') else {
                return Err(invalid("missing `:port` after the bracketed ipv6 address"));
            };
            (host, port_text)
        } else {
            let Some((host, port_text)) = input.rsplit_once(':') else {
                return Err(invalid("missing `:port`"));
            };
            if host.contains(':') {
                return Err(invalid(
                    "an ipv6 address must be written in brackets, e.g. `[::1]:9010`",
                ));
            }
            if host.is_empty() {
                return Err(invalid("the host is empty"));
            }
            let host_is_valid = host.chars().all(|character| {
                character.is_ascii_alphanumeric() || matches!(character, '-' | '.' | '_')
            });
            if !host_is_valid {
                return Err(invalid(
                    "the host may only contain letters, digits, `-`, `.` and `_`",
                ));
            }
            (host, port_text)
        };
        let port = match port_text.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(invalid("the port is not a number between 1 and 65535")),
        };
        Ok(SeedAddress::new(host, port))
    }
}

/// Parses a comma-separated seed list such as `cos-0:9010, cos-1:9010,[::1]:9010`. Items are trimmed and empty
/// items skipped, so a trailing comma or an empty string (no seeds: a single-node start) is accepted; any other
/// malformed item fails the whole list so a typo is caught at start-up.
pub fn parse_seed_list(csv: &str) -> Result<Vec<SeedAddress>, DiscoveryError> {
    let mut seeds = Vec::new();
    for item in csv.split(',') {
        let trimmed_item = item.trim();
        if trimmed_item.is_empty() {
            continue;
        }
        seeds.push(trimmed_item.parse::<SeedAddress>()?);
    }
    Ok(seeds)
}

/// Where to look for peers; chosen once from the configuration (`COS_DEPLOYMENT_MODE`).
#[derive(Debug, Clone)]
pub enum DiscoveryMethod {
    /// A fixed list of peers, for tests and hand-configured clusters.
    Static(Vec<SeedAddress>),
    /// Every A/AAAA record of `service_name` (`COS_SERVICE_NAME`), each with the cluster `port`.
    Dns {
        /// The name to resolve, e.g. a docker-compose service or a headless Kubernetes service.
        service_name: String,
        /// The cluster port every peer listens on.
        port: u16,
    },
    /// The running pods labelled `app=<label>`, listed through the Kubernetes API.
    Kubernetes(KubernetesConfig),
}

impl fmt::Display for DiscoveryMethod {
    /// A description for logs and errors; never includes the service-account token.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscoveryMethod::Static(seeds) => write!(formatter, "{} static seeds", seeds.len()),
            DiscoveryMethod::Dns { service_name, port } => {
                write!(formatter, "dns name `{service_name}` (port {port})")
            }
            DiscoveryMethod::Kubernetes(config) => write!(
                formatter,
                "kubernetes pods labelled `app={}` in namespace `{}`",
                config.label, config.namespace
            ),
        }
    }
}

/// Why discovery failed; each variant carries what an operator needs to fix it.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A configured seed is not `host:port`.
    #[error("invalid seed address `{input}`: {reason}")]
    InvalidSeedAddress {
        /// The rejected text.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// Fewer static seeds are configured than peers are required; waiting cannot change a static list.
    #[error("{configured} static seeds are configured but {required} are required")]
    TooFewStaticSeeds {
        /// How many seeds the list has.
        configured: usize,
        /// How many peers must be found.
        required: usize,
    },

    /// The resolver failed, e.g. the name does not exist (yet).
    #[error("dns lookup of `{service_name}` failed")]
    DnsLookup {
        /// The name that was resolved.
        service_name: String,
        /// The resolver error.
        #[source]
        source: std::io::Error,
    },

    /// The in-cluster environment lacks a variable Kubernetes always sets for pods.
    #[error(
        "environment variable `{name}` is not set; is this process running in a kubernetes pod?"
    )]
    MissingEnvironmentVariable {
        /// The missing variable.
        name: &'static str,
    },

    /// A service-account file could not be read (not mounted, or `automountServiceAccountToken: false`).
    #[error("cannot read kubernetes service-account file `{}`", path.display())]
    ReadServiceAccountFile {
        /// The file that could not be read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The Kubernetes API URL cannot be used.
    #[error("invalid kubernetes api url `{url}`: {reason}")]
    InvalidApiUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An `https` API URL was given without a CA certificate to verify the server with.
    #[error("kubernetes api url `{url}` uses https but no ca certificate was given")]
    MissingCaCertificate {
        /// The URL.
        url: String,
    },

    /// The CA certificate is not usable PEM.
    #[error("invalid kubernetes ca certificate: {reason}")]
    InvalidCaCertificate {
        /// What is wrong with it.
        reason: String,
    },

    /// rustls refused the TLS configuration.
    #[error("cannot build the tls configuration for the kubernetes api")]
    TlsConfig {
        /// The rustls error.
        #[source]
        source: tokio_rustls::rustls::Error,
    },

    /// The service-account token cannot be sent as an HTTP header.
    #[error("cannot build the request to `{url}`")]
    InvalidRequest {
        /// The request URL.
        url: String,
        /// Why the request is invalid (e.g. a control character in the token).
        #[source]
        source: hyper::http::Error,
    },

    /// No TCP connection to the API server.
    #[error("cannot connect to the kubernetes api at `{address}`")]
    Connect {
        /// `host:port` of the API server.
        address: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The TLS handshake with the API server failed (wrong CA, wrong host name, ...).
    #[error("tls handshake with the kubernetes api at `{address}` failed")]
    TlsHandshake {
        /// `host:port` of the API server.
        address: String,
        /// The handshake error.
        #[source]
        source: std::io::Error,
    },

    /// The HTTP exchange failed.
    #[error("http request to `{url}` failed")]
    Http {
        /// The request URL.
        url: String,
        /// The hyper error.
        #[source]
        source: hyper::Error,
    },

    /// The response body could not be read or was too large.
    #[error("cannot read the response body of `{url}`")]
    ResponseBody {
        /// The request URL.
        url: String,
        /// The body error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The API server did not answer in time.
    #[error("request to `{url}` timed out after {timeout:?}")]
    RequestTimedOut {
        /// The request URL.
        url: String,
        /// The time allowed.
        timeout: Duration,
    },

    /// The API server answered with an error status, e.g. 403 when the service account may not list pods.
    #[error("kubernetes api returned status {status} for `{url}`: {message}")]
    ApiStatus {
        /// The request URL.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The `message` of the Kubernetes `Status` body, or the start of the body.
        message: String,
    },

    /// The API server answered 2xx with something that is not a pod list.
    #[error("the response of `{url}` is not a kubernetes pod list")]
    InvalidPodList {
        /// The request URL.
        url: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },

    /// Not enough peers appeared before the deadline.
    #[error(
        "discovery of {target} timed out after {timeout:?}: found {found} of {required} required addresses{}",
        describe_last_error(.last_error.as_deref())
    )]
    Timeout {
        /// The discovery method, as text.
        target: String,
        /// The time allowed.
        timeout: Duration,
        /// How many distinct addresses the last successful attempt found.
        found: usize,
        /// How many are required (`COS_REPLICA_COUNT`).
        required: usize,
        /// Why the last attempt failed, if it did; kept so a persistent cause (e.g. a 403) is not hidden.
        last_error: Option<Box<DiscoveryError>>,
    },
}

fn describe_last_error(last_error: Option<&DiscoveryError>) -> String {
    match last_error {
        None => String::new(),
        Some(error) => {
            let mut description = format!(" (last error: {error}");
            let mut cause = std::error::Error::source(error);
            while let Some(inner) = cause {
                description.push_str(&format!(": {inner}"));
                cause = inner.source();
            }
            description.push(')');
            description
        }
    }
}

/// Makes one discovery attempt and returns the distinct peer addresses found, sorted. The result includes this
/// node itself when it is visible to the method (DNS record, running pod); the membership layer skips it.
pub async fn discover(method: &DiscoveryMethod) -> Result<Vec<SeedAddress>, DiscoveryError> {
    let mut addresses = match method {
        DiscoveryMethod::Static(seeds) => seeds.clone(),
        DiscoveryMethod::Dns { service_name, port } => dns::resolve(service_name, *port).await?,
        DiscoveryMethod::Kubernetes(config) => kubernetes::running_pod_addresses(config).await?,
    };
    addresses.sort_unstable();
    addresses.dedup();
    Ok(addresses)
}

/// Repeats [`discover`] every `retry` until at least `required` distinct addresses are found, so a node does
/// not form a cluster of its own while its peers are still starting. Failed attempts are retried; each attempt
/// is cut off at the deadline. Static seeds are checked once, since waiting cannot change them.
pub async fn discover_until(
    method: &DiscoveryMethod,
    required: usize,
    timeout: Duration,
    retry: Duration,
) -> Result<Vec<SeedAddress>, DiscoveryError> {
    if let DiscoveryMethod::Static(seeds) = method {
        let addresses = discover(method).await?;
        if addresses.len() < required {
            return Err(DiscoveryError::TooFewStaticSeeds {
                configured: seeds.len(),
                required,
            });
        }
        return Ok(addresses);
    }

    let deadline = Instant::now() + timeout;
    let mut last_found = 0;
    let mut last_error = None;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, discover(method)).await {
            Ok(Ok(addresses)) if addresses.len() >= required => {
                tracing::info!(method = %method, found = addresses.len(), required, "peers discovered");
                return Ok(addresses);
            }
            Ok(Ok(addresses)) => {
                tracing::debug!(method = %method, found = addresses.len(), required, "too few peers, retrying");
                last_found = addresses.len();
                last_error = None;
            }
            Ok(Err(error)) => {
                tracing::debug!(method = %method, error = %error, "discovery attempt failed, retrying");
                last_error = Some(Box::new(error));
            }
            Err(_elapsed) => break,
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        tokio::time::sleep(retry.min(remaining)).await;
        if Instant::now() >= deadline {
            break;
        }
    }
    Err(DiscoveryError::Timeout {
        target: method.to_string(),
        timeout,
        found: last_found,
        required,
        last_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_list_parses_host_port_pairs() {
        let seeds = parse_seed_list("cos-0.cos:9010,10.0.0.7:9011").unwrap();
        assert_eq!(
            seeds,
            vec![
                SeedAddress::new("cos-0.cos", 9010),
                SeedAddress::new("10.0.0.7", 9011)
            ]
        );
    }

    #[test]
    fn seed_list_trims_whitespace_and_skips_empty_items() {
        let seeds = parse_seed_list("  cos-0:9010 , ,cos-1:9010,  ").unwrap();
        assert_eq!(
            seeds,
            vec![
                SeedAddress::new("cos-0", 9010),
                SeedAddress::new("cos-1", 9010)
            ]
        );
        assert!(parse_seed_list("").unwrap().is_empty());
        assert!(parse_seed_list(" , ").unwrap().is_empty());
    }

    #[test]
    fn seed_list_rejects_a_bad_port_naming_the_item() {
        for bad_item in ["cos-0:99999", "cos-0:0", "cos-0:port", "cos-0:", "cos-0"] {
            let error = parse_seed_list(&format!("cos-1:9010,{bad_item}")).unwrap_err();
            assert!(
                matches!(&error, DiscoveryError::InvalidSeedAddress { input, .. } if input == bad_item),
                "{bad_item}: {error}"
            );
            assert!(error.to_string().contains(bad_item), "{error}");
        }
    }

    #[test]
    fn seed_list_accepts_bracketed_ipv6() {
        let seeds = parse_seed_list("[::1]:9010, [fd00::2]:9011").unwrap();
        assert_eq!(
            seeds,
            vec![
                SeedAddress::new("::1", 9010),
                SeedAddress::new("fd00::2", 9011)
            ]
        );
        assert_eq!(seeds[0].to_string(), "[::1]:9010");
    }

    #[test]
    fn seed_address_rejects_unbracketed_ipv6_and_bad_hosts() {
        for bad_input in [
            "::1:9010",
            "[::1]9010",
            "[::1:9010",
            "[cos-0]:9010",
            ":9010",
            "cos 0:9010",
            "a/b:1",
        ] {
            assert!(
                bad_input.parse::<SeedAddress>().is_err(),
                "{bad_input} should be rejected"
            );
        }
    }

    #[test]
    fn seed_address_display_round_trips_through_from_str() {
        for text in ["cos-0:9010", "10.0.0.1:1", "[fd00::1]:65535"] {
            assert_eq!(text.parse::<SeedAddress>().unwrap().to_string(), text);
        }
        let from_socket = SeedAddress::from(SocketAddr::from(([127, 0, 0, 1], 9010)));
        assert_eq!(from_socket.to_string(), "127.0.0.1:9010");
    }

    #[tokio::test]
    async fn static_discovery_returns_the_configured_seeds_sorted_and_distinct() {
        let method = DiscoveryMethod::Static(parse_seed_list("b:1,a:1,b:1").unwrap());
        let addresses = discover(&method).await.unwrap();
        assert_eq!(
            addresses,
            vec![SeedAddress::new("a", 1), SeedAddress::new("b", 1)]
        );
    }

    #[tokio::test]
    async fn static_discover_until_fails_at_once_when_too_few_seeds_are_configured() {
        let method = DiscoveryMethod::Static(parse_seed_list("a:1").unwrap());
        let started = std::time::Instant::now();
        let error = discover_until(
            &method,
            2,
            Duration::from_secs(30),
            Duration::from_millis(10),
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            error.to_string(),
            "1 static seeds are configured but 2 are required"
        );
        let enough = discover_until(
            &method,
            1,
            Duration::from_secs(1),
            Duration::from_millis(10),
        )
        .await;
        assert_eq!(enough.unwrap(), vec![SeedAddress::new("a", 1)]);
    }
}
