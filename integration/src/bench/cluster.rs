//! Three nodes against one on the same machine: the same write load, spread over every node of a cluster
//! sharing one PostgreSQL schema, against a single node. On one machine the nodes share its cores, so this
//! measures the cost of clustering (cross-node hops, membership), not the capacity a cluster adds.

use std::net::SocketAddr;

use cos_core::proto::internal::ClusterStatusRequest;
use cos_core::proto::internal::cluster_admin_client::ClusterAdminClient;

use super::config::{BenchConfig, PostgresTarget};
use super::process::{ChildProcess, free_port};
use super::report::{Row, Verdict, describe};
use super::scenarios::{spread_entity, write_load};
use super::setup::{BenchStore, channels, start_cos};

/// Runs the write load on one node, then on three, and reports the ratio.
pub(crate) async fn three_nodes_vs_one(
    target: &PostgresTarget,
    handler: SocketAddr,
    config: &BenchConfig,
) -> anyhow::Result<Row> {
    let single_store = BenchStore::postgres(target, "single");
    let single = start_cos(&single_store.environment, handler, &[]).await?;
    let single_channels = channels(single.address, config.connections).await?;
    let one_node = write_load(&single_channels, config, spread_entity).await;
    single.stop().await?;
    single_store.drop_schema().await;

    let cluster_store = BenchStore::postgres(target, "cluster");
    let seed_port = free_port()?;
    let seed = format!("127.0.0.1:{seed_port}");
    let mut nodes: Vec<ChildProcess> = Vec::new();
    for index in 0..3 {
        let cluster_port = if index == 0 { seed_port } else { free_port()? };
        let cluster_port_text = cluster_port.to_string();
        let node_name = format!("bench-{cluster_port}");
        let extra = [
            ("COS_CLUSTER_SEEDS", seed.as_str()),
            ("COS_CLUSTER_SECRET", "bench-secret"),
            ("COS_CLUSTER_PORT", cluster_port_text.as_str()),
            ("COS_CLUSTER_NODE_NAME", node_name.as_str()),
        ];
        nodes.push(start_cos(&cluster_store.environment, handler, &extra).await?);
    }
    wait_for_three_members(&nodes).await?;
    let mut cluster_channels = Vec::new();
    for node in &nodes {
        cluster_channels
            .extend(channels(node.address, config.connections.div_ceil(3).max(1)).await?);
    }
    let three_nodes = write_load(&cluster_channels, config, spread_entity).await;
    for node in nodes {
        node.stop().await?;
    }
    cluster_store.drop_schema().await;
    Ok(Row {
        scenario: format!(
            "3 nodes vs 1 node, write path on postgres ({} clients)",
            config.concurrency
        ),
        figure: format!(
            "3 nodes: {}; 1 node: {:.0} ops/s",
            describe(&three_nodes),
            one_node.throughput()
        ),
        ratio: format!(
            "{:.2} × one node",
            three_nodes.throughput() / one_node.throughput().max(1.0)
        ),
        target: String::new(),
        verdict: Verdict::Informational,
    })
}

async fn wait_for_three_members(nodes: &[ChildProcess]) -> anyhow::Result<()> {
    for _ in 0..300 {
        let mut converged = true;
        for node in nodes {
            let mut admin = ClusterAdminClient::connect(format!("http://{}", node.address)).await?;
            let status = admin
                .get_cluster_status(ClusterStatusRequest {})
                .await?
                .into_inner();
            let up = status
                .members
                .iter()
                .filter(|member| member.status == "up" && member.reachable)
                .count();
            converged &= up == 3;
        }
        if converged {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    anyhow::bail!("the three benchmark nodes did not form a cluster within 30 s")
}
