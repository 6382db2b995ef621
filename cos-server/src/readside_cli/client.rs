//! The gRPC side of `cos readside`: where the node is, one connection to it, and one method per RPC that
//! turns tonic results into plain data or a [`CliError`].

use std::fmt;
use std::time::Duration;

use cos_core::proto::chief_of_state::v1::read_side_manager_service_client::ReadSideManagerServiceClient;
use cos_core::proto::chief_of_state::v1::{
    GetLatestOffsetByShardRequest, GetLatestOffsetRequest, PauseReadSideByShardRequest,
    PauseReadSideRequest, ReadSideOffset, RestartReadSideByShardRequest, RestartReadSideRequest,
    ResumeReadSideByShardRequest, ResumeReadSideRequest, SkipOffsetByShardRequest,
    SkipOffsetRequest,
};
use cos_core::proto::internal::read_side_admin_client::ReadSideAdminClient;
use cos_core::proto::internal::{ListReadSidesRequest, ReadSideStatus};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Uri};

use super::error::{CliError, describe_error_chain};
use super::skipped::{SkippedRecord, skipped_from_metadata};

/// Where `--address` points when neither it nor `COS_CLI_ADDRESS` is given: a node on this machine.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:9000";
/// The port assumed for a bare host name, the node's default `COS_PORT`.
pub const DEFAULT_PORT: u16 = 9000;
/// How long to wait for the TCP (and TLS) connection before calling the node unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take; a restart or skip touches every shard, so this is generous.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A node's gRPC endpoint as a URL with a scheme, normalised from what the operator typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    url: String,
}

impl NodeAddress {
    /// Accepts `http://host:port`, `https://host:port`, `host:port` (http assumed) and a bare `host`
    /// (http and port 9000 assumed); anything else is a usage error.
    pub fn parse(raw: &str) -> Result<NodeAddress, CliError> {
        let invalid = |reason: &str| CliError::InvalidAddress {
            address: raw.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }
        let url = match trimmed.split_once("://") {
            Some((scheme, rest)) => {
                if scheme != "http" && scheme != "https" {
                    return Err(invalid("the scheme must be http or https"));
                }
                if rest.is_empty() {
                    return Err(invalid("it has no host"));
                }
                trimmed.to_string()
            }
            None if has_port(trimmed) => format!("http://{trimmed}"),
            None => format!("http://{trimmed}:{DEFAULT_PORT}"),
        };
        let uri: Uri = match url.parse() {
            Ok(uri) => uri,
            Err(error) => {
                return Err(CliError::InvalidAddress {
                    address: raw.to_string(),
                    reason: describe_error_chain(&error),
                });
            }
        };
        let Some(authority) = uri.authority() else {
            return Err(invalid("it has no host"));
        };
        if authority.host().is_empty() {
            return Err(invalid("it has no host"));
        }
        // `Uri` accepts any text after the colon and only a connect attempt would reject it.
        if let Some(port) = port_text(authority.as_str())
            && port.parse::<u16>().is_err()
        {
            return Err(invalid("the port is not a number between 0 and 65535"));
        }
        Ok(NodeAddress { url })
    }

    /// The normalised URL, e.g. `http://127.0.0.1:9000`.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    fn uses_tls(&self) -> bool {
        self.url.starts_with("https://")
    }
}

impl fmt::Display for NodeAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.url)
    }
}

/// Whether an address without scheme already names a port: `host:9000`, `[::1]:9000`. Only the authority
/// (before any `/`) counts.
fn has_port(address_without_scheme: &str) -> bool {
    let authority = address_without_scheme
        .split('/')
        .next()
        .unwrap_or(address_without_scheme);
    if authority.starts_with('[') {
        return authority.contains("]:");
    }
    authority.contains(':')
}

/// The text after the port colon of an authority (`user@host:port`, `[::1]:port`), if there is a colon.
fn port_text(authority: &str) -> Option<&str> {
    let host_and_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_user, rest)| rest);
    let after_ipv6_literal = match host_and_port.rsplit_once(']') {
        Some((_literal, rest)) => rest,
        None => host_and_port,
    };
    after_ipv6_literal
        .rsplit_once(':')
        .map(|(_host, port)| port)
}

/// The pause/resume/restart/skip operations, one enum so the command line, the calls and the output agree
/// on their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteerAction {
    Pause,
    Resume,
    Restart,
    Skip,
}

impl SteerAction {
    /// The verb in messages and in the JSON `action` field.
    pub fn verb(self) -> &'static str {
        match self {
            SteerAction::Pause => "pause",
            SteerAction::Resume => "resume",
            SteerAction::Restart => "restart",
            SteerAction::Skip => "skip",
        }
    }

    /// The past tense for the human confirmation line.
    pub fn past_tense(self) -> &'static str {
        match self {
            SteerAction::Pause => "paused",
            SteerAction::Resume => "resumed",
            SteerAction::Restart => "restarted",
            SteerAction::Skip => "skipped",
        }
    }
}

/// What a steering call answered: the `successful` flag and, for a skip, the events skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteerOutcome {
    pub successful: bool,
    pub skipped: Vec<SkippedRecord>,
}

/// One connection to a node, with clients for the public manager and the internal admin service.
pub struct NodeClient {
    address: NodeAddress,
    manager: ReadSideManagerServiceClient<Channel>,
    admin: ReadSideAdminClient<Channel>,
}

impl NodeClient {
    /// Connects eagerly so an unreachable node is reported before any request is built.
    pub async fn connect(address: &NodeAddress) -> Result<NodeClient, CliError> {
        let unreachable = |reason: String| CliError::Unreachable {
            address: address.to_string(),
            reason,
        };
        let invalid = |reason: String| CliError::InvalidAddress {
            address: address.to_string(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(address.as_str().to_string())
            .map_err(|error| invalid(describe_error_chain(&error)))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        if address.uses_tls() {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(|error| invalid(describe_error_chain(&error)))?;
        }
        // The connect timeout only bounds the TCP connect; this bounds DNS and the TLS handshake too.
        let channel = match tokio::time::timeout(CONNECT_TIMEOUT * 2, endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(error)) => return Err(unreachable(describe_error_chain(&error))),
            Err(_elapsed) => {
                return Err(unreachable(format!(
                    "no connection within {} s",
                    (CONNECT_TIMEOUT * 2).as_secs()
                )));
            }
        };
        Ok(NodeClient {
            address: address.clone(),
            manager: ReadSideManagerServiceClient::new(channel.clone()),
            admin: ReadSideAdminClient::new(channel),
        })
    }

    fn status_error(&self, status: tonic::Status) -> CliError {
        CliError::from_status(status, self.address.as_str(), REQUEST_TIMEOUT)
    }

    /// Every configured read side with its per-shard position (`cos.internal.v1.ReadSideAdmin`).
    pub async fn list_read_sides(&mut self) -> Result<Vec<ReadSideStatus>, CliError> {
        match self.admin.list_read_sides(ListReadSidesRequest {}).await {
            Ok(response) => Ok(response.into_inner().read_sides),
            Err(status) => Err(self.status_error(status)),
        }
    }

    /// The stored offsets of a read side on every shard, or on one shard.
    pub async fn latest_offsets(
        &mut self,
        read_side_id: &str,
        shard: Option<u64>,
    ) -> Result<Vec<ReadSideOffset>, CliError> {
        let read_side_id = read_side_id.to_string();
        let Some(cluster_shard_number) = shard else {
            let request = GetLatestOffsetRequest { read_side_id };
            return match self.manager.get_latest_offset(request).await {
                Ok(response) => Ok(response.into_inner().offsets),
                Err(status) => Err(self.status_error(status)),
            };
        };
        let request = GetLatestOffsetByShardRequest {
            read_side_id,
            cluster_shard_number,
        };
        let response = match self.manager.get_latest_offset_by_shard(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return Err(self.status_error(status)),
        };
        match response.offsets {
            Some(offset) => Ok(vec![offset]),
            None => Err(CliError::MalformedReply {
                reason: format!("no offset in the answer for shard {cluster_shard_number}"),
            }),
        }
    }

    /// Pauses, resumes, restarts or skips a read side on every shard (`shard` is `None`) or on one shard.
    pub async fn steer(
        &mut self,
        action: SteerAction,
        read_side_id: &str,
        shard: Option<u64>,
    ) -> Result<SteerOutcome, CliError> {
        let read_side_id = read_side_id.to_string();
        let result = match (action, shard) {
            (SteerAction::Pause, None) => self
                .manager
                .pause_read_side(PauseReadSideRequest { read_side_id })
                .await
                .map(|response| (response.get_ref().successful, response.into_parts().0)),
            (SteerAction::Pause, Some(cluster_shard_number)) => self
                .manager
                .pause_read_side_by_shard(PauseReadSideByShardRequest {
                    read_side_id,
                    cluster_shard_number,
                })
                .await
                .map(|response| (response.get_ref().successful, response.into_parts().0)),
            (SteerAction::Resume, None) => self
                .manager
                .resume_read_side(ResumeReadSideRequest { read_side_id })
                .await
                .map(|response| (response.get_ref().successful, response.into_parts().0)),
            (SteerAction::Resume, Some(cluster_shard_number)) => self
                .manager
                .resume_read_side_by_shard(ResumeReadSideByShardRequest {
                    read_side_id,
                    cluster_shard_number,
                })
                .await
                .map(|response| (response.get_ref().successful, response.into_parts().0)),
            (SteerAction::Restart, None) => self
                .manager
                .restart_read_side(RestartReadSideRequest { read_side_id })
                .await
                .map(|response| (response.get_ref().successful, response.into_parts().0)),
            (SteerAction::Restart, Some(cluster_shard_number)) => self
                .manager
                .restart_read_side_by_shard(RestartReadSideByShardRequest {
                    read_side_id,
                    cluster_shard_number,
                })
                .await
                .map(|response| (response.get_ref().successful, response.into_parts().0)),
            (SteerAction::Skip, None) => self
                .manager
                .skip_offset(SkipOffsetRequest { read_side_id })
                .await
                .map(|response| (response.get_ref().successful, response.into_parts().0)),
            (SteerAction::Skip, Some(cluster_shard_number)) => self
                .manager
                .skip_offset_by_shard(SkipOffsetByShardRequest {
                    read_side_id,
                    cluster_shard_number,
                })
                .await
                .map(|response| (response.get_ref().successful, response.into_parts().0)),
        };
        let (successful, metadata) = result.map_err(|status| self.status_error(status))?;
        let skipped = if action == SteerAction::Skip {
            skipped_from_metadata(&metadata)
        } else {
            Vec::new()
        };
        Ok(SteerOutcome {
            successful,
            skipped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalised(raw: &str) -> String {
        match NodeAddress::parse(raw) {
            Ok(address) => address.to_string(),
            Err(error) => format!("error: {error}"),
        }
    }

    #[test]
    fn urls_with_a_scheme_are_kept() {
        assert_eq!(normalised("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
        assert_eq!(
            normalised("https://cos.example.com"),
            "https://cos.example.com"
        );
        assert_eq!(normalised("  http://node-1:50051  "), "http://node-1:50051");
    }

    #[test]
    fn host_and_port_without_scheme_get_http() {
        assert_eq!(normalised("127.0.0.1:9000"), "http://127.0.0.1:9000");
        assert_eq!(normalised("node-1:50051"), "http://node-1:50051");
        assert_eq!(normalised("[::1]:9000"), "http://[::1]:9000");
    }

    #[test]
    fn bare_host_gets_http_and_the_default_port() {
        assert_eq!(normalised("node-1"), "http://node-1:9000");
        assert_eq!(normalised("[::1]"), "http://[::1]:9000");
        assert_eq!(normalised("0.0.0.0"), "http://0.0.0.0:9000");
    }

    #[test]
    fn unusable_addresses_are_usage_errors() {
        for raw in [
            "",
            "   ",
            "grpc://node:9000",
            "http://",
            "node:port",
            "node:99999",
            "no de:9000",
            "http://:9000",
        ] {
            let result = NodeAddress::parse(raw);
            let Err(error) = result else {
                panic!("{raw:?} was accepted as {result:?}");
            };
            assert!(
                matches!(error, CliError::InvalidAddress { .. }),
                "{raw:?}: {error:?}"
            );
            assert_eq!(error.exit_code(), super::super::error::EXIT_USAGE);
        }
    }

    #[test]
    fn steer_actions_name_themselves() {
        assert_eq!(SteerAction::Skip.verb(), "skip");
        assert_eq!(SteerAction::Restart.past_tense(), "restarted");
    }
}
