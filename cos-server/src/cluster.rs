//! Starts this node's part of a cluster: the ractor_cluster node server, discovery of the peers, the
//! membership actor, and (once the regions exist) the region endpoint and shard coordinator.

use std::time::{Duration, SystemTime};

use cos_actors::EntityRouter;
use cos_actors::cluster::coordinator::{CoordinatorActor, CoordinatorArguments};
use cos_actors::cluster::endpoint::{EndpointActor, EndpointArguments};
use cos_actors::cluster::membership::{
    MembershipActor, MembershipArguments, MembershipMessage, SessionEvents,
};
use cos_actors::cluster::routing::RegionCluster;
use cos_actors::cluster::view::{ClusterView, DetectorTiming};
use cos_core::cluster::discovery::{
    DiscoveryError, DiscoveryMethod, KubernetesConfig, discover_until, parse_seed_list,
};
use cos_core::settings::{ClusterDiscovery, ClusterSettings};
use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, NodeServerMessage};
use tokio::sync::watch;

/// How long start-up waits for `COS_REPLICA_COUNT` peers to be discovered.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the cluster part of a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("discovery: {0}")]
    Discovery(#[from] DiscoveryError),
    #[error("cannot start the cluster {what}: {reason}")]
    Spawn { what: &'static str, reason: String },
}

/// The running cluster actors of this node.
pub struct ClusterNode {
    pub self_name: String,
    pub view: watch::Receiver<ClusterView>,
    /// Becomes true when the leader downed this node: it must stop serving.
    pub downed: watch::Receiver<bool>,
    node_server: ActorRef<NodeServerMessage>,
    membership: ActorRef<MembershipMessage>,
}

impl ClusterNode {
    /// Starts the node server and membership, after discovering the peers.
    pub async fn start(
        settings: &ClusterSettings,
        bind_address: std::net::IpAddr,
    ) -> Result<Self, ClusterError> {
        let method = discovery_method(settings)?;
        tracing::info!(discovery = %method, required = settings.required_contact_points, "discovering cluster peers");
        let seeds = discover_until(
            &method,
            settings.required_contact_points,
            DISCOVERY_TIMEOUT,
            Duration::from_secs(1),
        )
        .await?;
        let self_name = settings.full_name();
        let cluster_address = format!("{}:{}", settings.advertised_host, settings.port);
        let server = NodeServer::new(
            settings.port,
            settings.secret.clone(),
            settings.node_name.clone(),
            settings.advertised_host.clone(),
            None,
            Some(NodeConnectionMode::Transitive),
        )
        .with_listen_addr(bind_address);
        let (node_server, _join) =
            Actor::spawn(None, server, ())
                .await
                .map_err(|error| ClusterError::Spawn {
                    what: "node server",
                    reason: error.to_string(),
                })?;
        let (view_sender, view) = watch::channel(ClusterView::default());
        let (downed_sender, downed) = watch::channel(false);
        let incarnation = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
            });
        let arguments = MembershipArguments {
            self_name: self_name.clone(),
            cluster_address: cluster_address.clone(),
            incarnation,
            seeds: seeds.iter().map(ToString::to_string).collect(),
            timing: DetectorTiming {
                heartbeat_interval: settings.heartbeat_interval,
                unreachable_after: settings.unreachable_after,
                down_after: settings.down_after,
            },
            node_server: node_server.clone(),
            view: view_sender,
            downed_self: downed_sender,
        };
        let (membership, _join) = Actor::spawn(None, MembershipActor, arguments)
            .await
            .map_err(|error| ClusterError::Spawn {
                what: "membership",
                reason: error.to_string(),
            })?;
        let _ = node_server.cast(NodeServerMessage::SubscribeToEvents {
            id: "cos-membership".to_string(),
            subscription: Box::new(SessionEvents {
                membership: membership.clone(),
            }),
        });
        tracing::info!(node = %self_name, address = %cluster_address, seeds = seeds.len(), "cluster node started");
        Ok(Self {
            self_name,
            view,
            downed,
            node_server,
            membership,
        })
    }

    /// What regions need to route across nodes.
    pub fn region_cluster(&self) -> RegionCluster {
        RegionCluster {
            self_name: self.self_name.clone(),
            view: self.view.clone(),
        }
    }

    /// Starts the region endpoint and the shard coordinator once the regions exist.
    pub async fn start_sharding(&self, router: &EntityRouter) -> Result<(), ClusterError> {
        let endpoint = EndpointArguments {
            self_name: self.self_name.clone(),
            regions: router.regions(),
        };
        Actor::spawn(None, EndpointActor, endpoint)
            .await
            .map_err(|error| ClusterError::Spawn {
                what: "region endpoint",
                reason: error.to_string(),
            })?;
        let coordinator = CoordinatorArguments {
            self_name: self.self_name.clone(),
            view: self.view.clone(),
        };
        Actor::spawn(None, CoordinatorActor, coordinator)
            .await
            .map_err(|error| ClusterError::Spawn {
                what: "shard coordinator",
                reason: error.to_string(),
            })?;
        Ok(())
    }

    /// Announces that this node leaves, so the coordinator stops giving it shards.
    pub fn leave(&self) {
        let _ = self.membership.cast(MembershipMessage::Leave(()));
    }

    /// Closes the node server (and with it every session to the peers).
    pub fn stop(&self) {
        self.membership.stop(Some("node stopping".to_string()));
        self.node_server.stop(Some("node stopping".to_string()));
    }
}

fn discovery_method(settings: &ClusterSettings) -> Result<DiscoveryMethod, ClusterError> {
    Ok(match &settings.discovery {
        ClusterDiscovery::StaticSeeds(seeds) => {
            DiscoveryMethod::Static(parse_seed_list(&seeds.join(","))?)
        }
        ClusterDiscovery::Dns { service_name } => DiscoveryMethod::Dns {
            service_name: service_name.clone(),
            port: settings.port,
        },
        ClusterDiscovery::Kubernetes { app_label } => DiscoveryMethod::Kubernetes(
            KubernetesConfig::from_service_account(app_label, settings.port)?,
        ),
    })
}
