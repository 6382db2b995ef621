//! Starts this node's part of a cluster: the ractor_cluster node server, discovery of the peers, the
//! membership actor, and (once the regions exist) the region endpoint and shard coordinator.

use std::time::{Duration, SystemTime};

use cos_actors::EntityRouter;
use cos_actors::cluster::coordinator::{CoordinatorActor, CoordinatorArguments};
use cos_actors::cluster::endpoint::{EndpointActor, EndpointArguments, EndpointMessage};
use cos_actors::cluster::membership::{
    MembershipActor, MembershipArguments, MembershipMessage, SessionEvents,
};
use cos_actors::cluster::remote::endpoint_group;
use cos_actors::cluster::routing::RegionCluster;
use cos_actors::cluster::view::{ClusterView, DetectorTiming};
use cos_actors::readside::host::HostMessage;
use cos_actors::region::RegionMessage;
use cos_core::cluster::discovery::{
    DiscoveryError, DiscoveryMethod, KubernetesConfig, SeedAddress, discover_until, parse_seed_list,
};
use cos_core::settings::{ClusterDiscovery, ClusterSettings};
use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, NodeServerMessage};
use tokio::sync::watch;

/// How long a stopping node waits, after leaving its endpoint's group, for peers to notice.
const ENDPOINT_RETIRE_PAUSE: Duration = Duration::from_millis(300);

/// How long the first seed waits for another seed to answer before forming a cluster alone.
const FIRST_SEED_WAIT: Duration = Duration::from_secs(5);

/// How long a node that is not the first seed waits to hear from an up member before forming a cluster
/// alone.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

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
    endpoint: std::sync::OnceLock<ActorRef<EndpointMessage>>,
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
            form_alone_after: form_alone_after(&seeds, &settings.advertised_host, settings.port),
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
            endpoint: std::sync::OnceLock::new(),
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
    pub async fn start_sharding(
        &self,
        router: &EntityRouter,
        read_sides: Option<ActorRef<HostMessage>>,
    ) -> Result<(), ClusterError> {
        let endpoint = EndpointArguments {
            self_name: self.self_name.clone(),
            regions: router.regions(),
            read_sides,
        };
        let (endpoint, _join) =
            Actor::spawn(None, EndpointActor, endpoint)
                .await
                .map_err(|error| ClusterError::Spawn {
                    what: "region endpoint",
                    reason: error.to_string(),
                })?;
        let _ = self.endpoint.set(endpoint);
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
        let _ = self.membership.cast(MembershipMessage::Ready(()));
        Ok(())
    }

    /// Announces that this node leaves, so the coordinator stops giving it shards.
    pub fn leave(&self) {
        let _ = self.membership.cast(MembershipMessage::Leave(()));
    }

    /// Waits (at most `limit`) until this node hosts no shard any more, or no other member could take them.
    pub async fn wait_for_hand_off(&self, router: &EntityRouter, limit: Duration) {
        let give_up = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < give_up {
            let others_up = self
                .view
                .borrow()
                .shard_hosts()
                .any(|member| member.name != self.self_name);
            if !others_up {
                return;
            }
            let mut hosted = 0;
            for region in router.regions().into_values() {
                let shards = region
                    .call(RegionMessage::LocalShards, Some(Duration::from_secs(2)))
                    .await;
                if let Ok(ractor::rpc::CallResult::Success(shards)) = shards {
                    hosted += shards.len();
                }
            }
            if hosted == 0 {
                tracing::info!("all shards handed off");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!("shards were not all handed off in time; stopping anyway");
    }

    /// Stops taking requests from other nodes (they route elsewhere); called before the regions stop.
    pub async fn stop_endpoint(&self) {
        let Some(endpoint) = self.endpoint.get() else {
            return;
        };
        // Leave the group first so peers stop sending here, give the change a moment to reach them, then
        // answer whatever is already queued (with "not hosted here", so the senders route elsewhere).
        ractor::pg::leave(endpoint_group(&self.self_name), vec![endpoint.get_cell()]);
        tokio::time::sleep(ENDPOINT_RETIRE_PAUSE).await;
        let _ = endpoint.drain_and_wait(Some(Duration::from_secs(5))).await;
    }

    /// Tells the other members this node is gone (after its shards were handed off), so they need not wait
    /// to down it.
    pub fn exit(&self) {
        let _ = self.membership.cast(MembershipMessage::Exit(()));
    }

    /// Lets the membership actor send what it has queued (the farewell), then closes the node server (and
    /// with it every session to the peers).
    pub async fn stop(&self) {
        let _ = self
            .membership
            .drain_and_wait(Some(Duration::from_secs(1)))
            .await;
        // The sessions write asynchronously: give the farewell a moment to leave.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.node_server.stop(Some("node stopping".to_string()));
    }
}

/// How long to wait for an up member before forming a cluster alone: the first seed (smallest address) waits
/// briefly if other seeds exist (a restarted first seed must rejoin its cluster, not start a new one), not
/// at all if it is the only seed; every other node waits longer.
fn form_alone_after(seeds: &[SeedAddress], host: &str, port: u16) -> Duration {
    let own = SeedAddress::new(host, port);
    let is_first_seed = seeds.iter().min().is_none_or(|first| *first == own);
    let has_other_seeds = seeds.iter().any(|seed| *seed != own);
    match (is_first_seed, has_other_seeds) {
        (true, false) => Duration::ZERO,
        (true, true) => FIRST_SEED_WAIT,
        (false, _) => JOIN_TIMEOUT,
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
