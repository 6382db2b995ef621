//! Cluster nodes as separate `cos` processes (ractor's registries are per process) on loopback ports, sharing
//! one PostgreSQL schema, for the multi-node tests.

use std::net::SocketAddr;
use std::time::Duration;

use cos_core::proto::chief_of_state::v1::ProcessCommandRequest;
use cos_core::proto::chief_of_state::v1::chief_of_state_service_client::ChiefOfStateServiceClient;
use cos_core::proto::internal::ClusterStatusRequest;
use cos_core::proto::internal::cluster_admin_client::ClusterAdminClient;

use super::database::{TestPostgres, unique_schema_name};
use super::script_handler::text_any;
use crate::bench::process::{ChildProcess, free_port, sibling_binary};

/// The cluster secret of the test nodes.
pub const SECRET: &str = "cluster-test-secret";

/// One node process and the ports it listens on.
pub struct Node {
    pub process: ChildProcess,
    pub grpc: SocketAddr,
    pub cluster_port: u16,
}

/// The environment of a node: the shared schema, its ports, its seeds and fast failure detection.
pub fn node_environment(
    schema: &str,
    handler: SocketAddr,
    grpc_port: u16,
    cluster_port: u16,
    seeds: &str,
    secret: &str,
) -> Vec<(String, String)> {
    let mut environment = TestPostgres::from_env().environment(schema);
    let values = [
        ("COS_ADDRESS", "127.0.0.1".to_string()),
        ("COS_PORT", grpc_port.to_string()),
        ("COS_WRITE_SIDE_HOST", handler.ip().to_string()),
        ("COS_WRITE_SIDE_PORT", handler.port().to_string()),
        ("COS_CLUSTER_PORT", cluster_port.to_string()),
        ("COS_CLUSTER_NODE_NAME", format!("node-{cluster_port}")),
        ("COS_CLUSTER_SEEDS", seeds.to_string()),
        ("COS_CLUSTER_SECRET", secret.to_string()),
        ("COS_CLUSTER_HEARTBEAT_INTERVAL", "200ms".to_string()),
        ("COS_CLUSTER_UNREACHABLE_AFTER", "1s".to_string()),
        ("COS_CLUSTER_DOWN_AFTER", "2s".to_string()),
        (
            "LOG_LEVEL",
            std::env::var("COS_TEST_NODE_LOG").unwrap_or_else(|_| "warn".to_string()),
        ),
        ("LOG_STYLE", "STANDARD".to_string()),
    ];
    environment.extend(
        values
            .into_iter()
            .map(|(key, value)| (key.to_string(), value)),
    );
    environment
}

/// Starts a node process and waits until its gRPC port answers; empty `seeds` make it the first seed.
pub async fn start_node(
    schema: &str,
    handler: SocketAddr,
    seeds: &str,
    secret: &str,
) -> anyhow::Result<Node> {
    start_node_with(schema, handler, seeds, secret, &[]).await
}

/// [`start_node`] with `extra` environment variables (which win).
pub async fn start_node_with(
    schema: &str,
    handler: SocketAddr,
    seeds: &str,
    secret: &str,
    extra: &[(String, String)],
) -> anyhow::Result<Node> {
    // Ports are picked free, then released for the child to bind. They come from below the ephemeral range,
    // so only another explicit bind (rare) can take one in between; such a start fails at once: try again
    // with fresh ports (and say why in the test output).
    let mut attempt = 1;
    loop {
        match start_node_once(schema, handler, seeds, secret, extra).await {
            Ok(node) => return Ok(node),
            Err(error) if attempt < START_ATTEMPTS => {
                eprintln!(
                    "node start attempt {attempt} failed, retrying with fresh ports: {error:#}"
                );
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// How often [`start_node_with`] tries to start a node.
const START_ATTEMPTS: u32 = 3;

async fn start_node_once(
    schema: &str,
    handler: SocketAddr,
    seeds: &str,
    secret: &str,
    extra: &[(String, String)],
) -> anyhow::Result<Node> {
    let grpc_port = free_port()?;
    let cluster_port = free_port()?;
    let seeds = if seeds.is_empty() {
        format!("127.0.0.1:{cluster_port}")
    } else {
        seeds.to_string()
    };
    let grpc: SocketAddr = format!("127.0.0.1:{grpc_port}").parse()?;
    let mut environment =
        node_environment(schema, handler, grpc_port, cluster_port, &seeds, secret);
    environment.retain(|(key, _)| !extra.iter().any(|(extra_key, _)| extra_key == key));
    environment.extend(extra.iter().cloned());
    let process =
        ChildProcess::start("cos", sibling_binary("cos")?, &[], &environment, grpc).await?;
    Ok(Node {
        process,
        grpc,
        cluster_port,
    })
}

/// The node's view of the cluster.
pub async fn status(
    node: &Node,
) -> anyhow::Result<cos_core::proto::internal::ClusterStatusResponse> {
    let mut admin = ClusterAdminClient::connect(format!("http://{}", node.grpc)).await?;
    Ok(admin
        .get_cluster_status(ClusterStatusRequest {})
        .await?
        .into_inner())
}

/// Waits until every node sees `expected` reachable members.
pub async fn wait_for_members(
    nodes: &[&Node],
    expected: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    let give_up = tokio::time::Instant::now() + limit;
    loop {
        let mut all_agree = true;
        for node in nodes {
            let view = status(node).await?;
            let reachable = view
                .members
                .iter()
                .filter(|member| member.reachable)
                .count();
            if reachable != expected {
                all_agree = false;
            }
        }
        if all_agree {
            return Ok(());
        }
        if tokio::time::Instant::now() > give_up {
            anyhow::bail!("members did not converge to {expected} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Three nodes on a fresh schema, joined and agreeing.
pub async fn three_node_cluster(handler: SocketAddr) -> anyhow::Result<(String, Vec<Node>)> {
    three_node_cluster_with(handler, &[]).await
}

/// [`three_node_cluster`] with `extra` environment variables on every node.
pub async fn three_node_cluster_with(
    handler: SocketAddr,
    extra: &[(String, String)],
) -> anyhow::Result<(String, Vec<Node>)> {
    let schema = unique_schema_name();
    let first = start_node_with(&schema, handler, "", SECRET, extra).await?;
    let seed = format!("127.0.0.1:{}", first.cluster_port);
    let second = start_node_with(&schema, handler, &seed, SECRET, extra).await?;
    let third = start_node_with(&schema, handler, &seed, SECRET, extra).await?;
    wait_for_members(&[&first, &second, &third], 3, Duration::from_secs(20)).await?;
    Ok((schema, vec![first, second, third]))
}

/// Sends a script command through `node`; returns the new revision.
pub async fn send(node: &Node, entity_id: &str, script: &str) -> Result<u32, tonic::Status> {
    let mut client = ChiefOfStateServiceClient::connect(format!("http://{}", node.grpc))
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let reply = client
        .process_command(ProcessCommandRequest {
            entity_id: entity_id.into(),
            command: Some(text_any(script)),
        })
        .await?
        .into_inner();
    Ok(reply.meta.map_or(0, |meta| meta.revision_number))
}
