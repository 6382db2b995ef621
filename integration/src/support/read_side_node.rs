//! A node with read sides, for the read-side tests: settings pointing read sides at real handler servers, a
//! manager client, and small helpers to write events and to read what the read sides were given.

use std::time::Duration;

use cos_core::proto::chief_of_state::v1::read_side_manager_service_client::ReadSideManagerServiceClient;
use cos_core::proto::internal::read_side_admin_client::ReadSideAdminClient;
use cos_core::proto::internal::{ListReadSidesRequest, ReadSideStatus};
use tonic::transport::Channel;

use super::node::TestNode;
pub use super::node::{emit, id_outside_shard, ids_in_one_shard};
use super::read_handler::{Delivery, ReadHandlerServer};
use crate::bench::process::{ChildProcess, free_port, sibling_binary};

/// How long a test waits for deliveries that should come promptly.
pub const DELIVERY_WAIT: Duration = Duration::from_secs(15);

/// The settings of a node whose read sides are `read_sides` (id, server), plus `extra`.
pub fn read_side_settings(
    read_sides: &[(&str, &ReadHandlerServer)],
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut settings = vec![("COS_READ_SIDE_ENABLED".to_string(), "true".to_string())];
    for (id, server) in read_sides {
        settings.extend(server.environment(id));
    }
    settings.extend(
        extra
            .iter()
            .map(|(key, value)| ((*key).to_string(), (*value).to_string())),
    );
    settings
}

/// Borrowed pairs, as [`TestNode::start`] takes them.
pub fn as_pairs(settings: &[(String, String)]) -> Vec<(&str, &str)> {
    settings
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect()
}

/// A client of the node's ReadSideManagerService.
pub async fn manager(node: &TestNode) -> anyhow::Result<ReadSideManagerServiceClient<Channel>> {
    let address = format!("http://{}", node.node.local_address());
    Ok(ReadSideManagerServiceClient::connect(address).await?)
}

/// The node's view of one read side (offsets, pauses, stops), from ReadSideAdmin.
pub async fn read_side_status(node: &TestNode, id: &str) -> anyhow::Result<ReadSideStatus> {
    let address = format!("http://{}", node.node.local_address());
    let mut admin = ReadSideAdminClient::connect(address).await?;
    let listed = admin
        .list_read_sides(ListReadSidesRequest {})
        .await?
        .into_inner();
    listed
        .read_sides
        .into_iter()
        .find(|status| status.read_side_id == id)
        .ok_or_else(|| anyhow::anyhow!("read side {id} is not listed"))
}

/// `(entity id, revision)` of each delivery, in arrival order.
pub fn delivered(deliveries: &[Delivery]) -> Vec<(String, u32)> {
    deliveries
        .iter()
        .map(|delivery| (delivery.entity_id.clone(), delivery.revision))
        .collect()
}

/// The revisions delivered for one entity, in arrival order.
pub fn revisions_of(deliveries: &[Delivery], entity_id: &str) -> Vec<u32> {
    deliveries
        .iter()
        .filter(|delivery| delivery.entity_id == entity_id)
        .map(|delivery| delivery.revision)
        .collect()
}

/// Waits until the read side's stored offset on `shard` reaches `offset` (a handler's answer comes before
/// the worker's commit of it).
pub async fn wait_for_offset(
    node: &TestNode,
    read_side_id: &str,
    shard: u32,
    offset: u64,
) -> anyhow::Result<()> {
    let give_up = tokio::time::Instant::now() + DELIVERY_WAIT;
    loop {
        let status = read_side_status(node, read_side_id).await?;
        let stored = status
            .shards
            .iter()
            .find(|status| status.shard == shard)
            .map_or(0, |status| status.offset);
        if stored >= offset {
            return Ok(());
        }
        if tokio::time::Instant::now() > give_up {
            anyhow::bail!("{read_side_id} reached offset {stored} of {offset} on shard {shard}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a failure policy stopped the read side on `shard` and returns the stop reason.
pub async fn wait_for_stop(
    node: &TestNode,
    read_side_id: &str,
    shard: u32,
) -> anyhow::Result<String> {
    let give_up = tokio::time::Instant::now() + DELIVERY_WAIT;
    loop {
        let status = read_side_status(node, read_side_id).await?;
        let reason = status
            .shards
            .iter()
            .find(|status| status.shard == shard)
            .map(|status| status.stopped_reason.clone())
            .unwrap_or_default();
        if !reason.is_empty() {
            return Ok(reason);
        }
        if tokio::time::Instant::now() > give_up {
            anyhow::bail!("{read_side_id} did not stop on shard {shard}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a `cos` process on SQLite in `data` with read sides on, the write handler at `write_handler` and
/// `extra` variables (the read sides' settings), and waits until its gRPC port answers.
pub async fn start_read_side_process(
    data: &tempfile::TempDir,
    write_handler: std::net::SocketAddr,
    extra: Vec<(String, String)>,
) -> anyhow::Result<ChildProcess> {
    let port = free_port()?;
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut environment: Vec<(String, String)> = [
        ("COS_ADDRESS", "127.0.0.1".to_string()),
        ("COS_PORT", port.to_string()),
        ("COS_DATA_DIR", data.path().to_string_lossy().into_owned()),
        ("COS_WRITE_SIDE_HOST", write_handler.ip().to_string()),
        ("COS_WRITE_SIDE_PORT", write_handler.port().to_string()),
        ("COS_READ_SIDE_ENABLED", "true".to_string()),
        ("LOG_LEVEL", "warn".to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect();
    environment.extend(extra);
    ChildProcess::start("cos", sibling_binary("cos")?, &[], &environment, address).await
}
