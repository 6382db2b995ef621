//! Starting read sides on a node: prepare every enabled read side's positions (offset 0 for new shards,
//! paused when `autoStart: false`), guard journal compaction, build each handler client once (shared by its
//! workers and their breaker), and start the node's read-side host.

use std::sync::Arc;
use std::time::Duration;

use cos_actors::cluster::routing::RegionCluster;
use cos_actors::readside::host::{HostArguments, HostMessage, Placement, ReadSideHost};
use cos_actors::readside::{ReadSideContext, ReadSideRuntime};
use cos_core::readside::ReadSideSettings;
use cos_core::readside::handler::{ReadHandlerSetupError, read_handler_for};
use cos_core::store::read_sides::ReadSideStore;
use cos_core::store::{Journal, ShardCommits, StoreError};
use ractor::{Actor, ActorRef};

/// How often an idle worker looks at the journal and its position without a commit notice.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Journal events read per query by a worker.
const BATCH_SIZE: u32 = 256;

/// Why read sides could not start; the node does not start either.
#[derive(Debug, thiserror::Error)]
pub enum ReadSideStartError {
    #[error("read side {read_side}: {source}")]
    Handler {
        read_side: String,
        source: ReadHandlerSetupError,
    },
    #[error("read side {read_side}: cannot prepare its positions: {source}")]
    Positions {
        read_side: String,
        source: StoreError,
    },
    #[error("cannot start the read side host: {0}")]
    Spawn(String),
    /// A caller of `RunningNode::start_with_stores` enabled read sides without giving their store.
    #[error("read sides are enabled but no read-side position store was given")]
    NoPositionStore,
}

/// Everything read sides need from the node.
pub(crate) struct ReadSideStart<'a> {
    pub settings: &'a ReadSideSettings,
    pub num_shards: u32,
    /// The writer's journal: its compactions must keep what read sides have not delivered.
    pub journal: Arc<dyn Journal>,
    /// Where workers read shard events from (on PostgreSQL a pool of their own).
    pub reader: Arc<dyn Journal>,
    pub positions: Arc<dyn ReadSideStore>,
    pub commits: ShardCommits,
    /// `COS_GRPC_KEEPALIVE_*`, for gRPC read handlers as for write handlers.
    pub keepalive: Option<cos_core::settings::KeepaliveSettings>,
    /// `None` on a single node.
    pub cluster: Option<RegionCluster>,
}

/// Starts the host of the enabled read sides; `None` when read sides are off or none is enabled.
pub(crate) async fn start_read_sides(
    start: ReadSideStart<'_>,
) -> Result<Option<ActorRef<HostMessage>>, ReadSideStartError> {
    if !start.settings.enabled {
        return Ok(None);
    }
    let enabled: Vec<_> = start
        .settings
        .read_sides
        .iter()
        .filter(|config| config.enabled)
        .collect();
    if enabled.is_empty() {
        tracing::warn!("COS_READ_SIDE_ENABLED is true but no read side is configured and enabled");
    }
    let mut runtimes = Vec::with_capacity(enabled.len());
    for config in &enabled {
        start
            .positions
            .ensure_positions(&config.id, start.num_shards, !config.auto_start)
            .await
            .map_err(|source| ReadSideStartError::Positions {
                read_side: config.id.clone(),
                source,
            })?;
        let handler = read_handler_for(config, start.settings.breaker, start.keepalive).map_err(
            |source| ReadSideStartError::Handler {
                read_side: config.id.clone(),
                source,
            },
        )?;
        tracing::info!(read_side = %config.id, protocol = ?config.protocol, host = %config.host,
            port = config.port, failure_policy = config.failure_policy.name(),
            auto_start = config.auto_start, "read side configured");
        runtimes.push(Arc::new(ReadSideRuntime {
            config: (*config).clone(),
            handler,
        }));
    }
    start
        .journal
        .guard_compaction(enabled.iter().map(|config| config.id.clone()).collect());
    let placement = match start.cluster {
        Some(cluster) => Placement::Cluster(cluster),
        None => Placement::AllShards,
    };
    let arguments = HostArguments {
        read_sides: runtimes,
        context: Arc::new(ReadSideContext {
            journal: start.reader,
            positions: start.positions,
            commits: start.commits,
            poll_interval: POLL_INTERVAL,
            batch_size: BATCH_SIZE,
        }),
        num_shards: start.num_shards,
        placement,
    };
    let (host, _join) = Actor::spawn(None, ReadSideHost, arguments)
        .await
        .map_err(|error| ReadSideStartError::Spawn(error.to_string()))?;
    Ok(Some(host))
}
