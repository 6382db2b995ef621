//! The life cycle of one node: open the store, start the write-handler clients and shard regions, serve
//! gRPC, and on shutdown stop in order — no new requests, finish in-flight commands, stop entities, flush
//! the journal writer, close the store — logging each phase.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cos_actors::census::EntityCensus;
use cos_actors::passivation::PassivationBudget;
use cos_actors::{EntityRouter, EntityTypeRuntime, RouterError};
use cos_core::handler::{BreakerWriteHandler, GrpcWriteHandler, HandlerSetupError, WriteHandler};
use cos_core::proto::chief_of_state::v1::chief_of_state_service_server::ChiefOfStateServiceServer;
use cos_core::proto::chief_of_state::v1::read_side_manager_service_server::ReadSideManagerServiceServer;
use cos_core::proto::internal::read_side_admin_server::ReadSideAdminServer;
use cos_core::settings::{Settings, StoreSettings};
use cos_core::store::postgres::PostgresJournal;
use cos_core::store::read_sides::ReadSideStore;
use cos_core::store::sqlite::SqliteJournal;
use cos_core::store::{Journal, JournalWriter, ShardCommits, StoreError, WriterOptions};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::admin::ClusterAdminService;
use crate::cluster::{ClusterError, ClusterNode};
use crate::gateway::Gateway;
use crate::oversized::oversized_requests_are_resource_exhausted;
use crate::read_sides::{ReadSideStart, ReadSideStartError, start_read_sides};
use crate::readside_manager::{ReadSideAdminService, ReadSideControl, ReadSideManager};
use cos_core::proto::internal::cluster_admin_server::ClusterAdminServer;

/// Largest request or response message the gateway accepts (bytes); a bigger request is refused with
/// RESOURCE_EXHAUSTED naming its size and this limit, as grpc-java and grpc-go refuse it. Entities refuse a
/// command whose reply would exceed it before anything is persisted.
pub use cos_core::limits::MAX_MESSAGE_BYTES;

/// How long a leaving node waits for the coordinator to move its shards away.
const HAND_OFF_LIMIT: Duration = Duration::from_secs(30);

/// How long shutdown waits for the journal writer to flush.
const WRITER_FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("write handler of entity type {entity_type}: {source}")]
    Handler {
        entity_type: String,
        source: HandlerSetupError,
    },
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("grpc server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    ReadSides(#[from] ReadSideStartError),
}

/// How long shutdown waits for read-side workers to finish their current handler call.
const READ_SIDE_STOP_TIMEOUT: Duration = Duration::from_secs(35);

/// A started node; dropping it does not stop it, call [`RunningNode::shutdown`].
pub struct RunningNode {
    local_address: SocketAddr,
    stop_serving: Arc<Notify>,
    server: JoinHandle<Result<(), NodeError>>,
    /// Set once `server` has completed, so it is never polled again.
    finished: bool,
    census: Arc<EntityCensus>,
}

impl RunningNode {
    /// Starts a node and returns once its gRPC port accepts connections.
    pub async fn start(settings: Settings) -> Result<Self, NodeError> {
        let (journal, positions) = open_store(&settings.store).await?;
        let read_side_stores = if settings.read_sides.enabled {
            Some(open_read_side_stores(&settings.store, positions).await?)
        } else {
            None
        };
        Self::start_with_stores(settings, journal, read_side_stores).await
    }

    /// Starts a node on an already opened store (read-side positions are opened from the settings when read
    /// sides are enabled): the seam where tests inject faults between "committed" and "replied".
    pub async fn start_with_journal(
        settings: Settings,
        journal: Arc<dyn Journal>,
    ) -> Result<Self, NodeError> {
        let read_side_stores = if settings.read_sides.enabled {
            let (own_journal, positions) = open_store(&settings.store).await?;
            Some(ReadSideStores {
                journal: own_journal,
                positions: positions.clone(),
                operations: positions,
            })
        } else {
            None
        };
        Self::start_with_stores(settings, journal, read_side_stores).await
    }

    /// Starts a node on already opened stores: tests wrap either to inject faults (a journal that fails
    /// appends, a position store that loses offset commits). `read_side_stores` is required when read sides
    /// are enabled.
    pub async fn start_with_stores(
        settings: Settings,
        journal: Arc<dyn Journal>,
        read_side_stores: Option<ReadSideStores>,
    ) -> Result<Self, NodeError> {
        let writer_options = writer_options(&settings.store);
        let commits = ShardCommits::new(settings.num_shards);
        let (writer, writer_task) =
            JournalWriter::spawn(journal.clone(), writer_options, commits.clone());

        let mut runtimes = Vec::new();
        for entity_type in settings.entity_types.types.values() {
            let handler =
                GrpcWriteHandler::connect_lazy(&entity_type.write_handler, &settings.grpc_client)
                    .map_err(|source| NodeError::Handler {
                    entity_type: entity_type.name.to_string(),
                    source,
                })?;
            let handler: Arc<dyn WriteHandler> = match settings.grpc_client.breaker {
                Some(breaker) => Arc::new(BreakerWriteHandler::new(handler, breaker)),
                None => Arc::new(handler),
            };
            runtimes.push(Arc::new(EntityTypeRuntime {
                settings: entity_type.clone(),
                handler,
                journal: journal.clone(),
                writer: writer.clone(),
                num_shards: settings.num_shards,
            }));
        }
        // Only the runtimes (owned by the actors) keep the writer alive from here on.
        drop(writer);
        let budget = Arc::new(PassivationBudget::new(&settings.passivation));
        let census = budget.census().clone();
        let cluster = match &settings.cluster {
            Some(cluster_settings) => {
                Some(ClusterNode::start(cluster_settings, settings.grpc_listen_address.ip()).await?)
            }
            None => None,
        };
        let router = Arc::new(
            EntityRouter::start(
                runtimes,
                settings.entity_types.default_type.clone(),
                budget,
                cluster.as_ref().map(ClusterNode::region_cluster),
            )
            .await?,
        );
        let read_side_stores = match (settings.read_sides.enabled, read_side_stores) {
            (true, None) => return Err(ReadSideStartError::NoPositionStore.into()),
            (true, Some(stores)) => Some(stores),
            (false, _) => None,
        };
        let read_side_host = match &read_side_stores {
            Some(stores) => {
                start_read_sides(ReadSideStart {
                    settings: &settings.read_sides,
                    num_shards: settings.num_shards,
                    journal: journal.clone(),
                    reader: stores.journal.clone(),
                    positions: stores.positions.clone(),
                    commits,
                    keepalive: settings.grpc_client.keepalive,
                    cluster: cluster.as_ref().map(ClusterNode::region_cluster),
                })
                .await?
            }
            None => None,
        };
        if let Some(cluster) = &cluster {
            cluster
                .start_sharding(&router, read_side_host.clone())
                .await?;
        }
        let (read_side_manager, read_side_admin) = if let Some(stores) = read_side_stores {
            let control = ReadSideControl::new(
                settings.read_sides.read_sides.clone(),
                stores.operations,
                stores.journal,
                settings.num_shards,
                read_side_host.clone(),
            );
            (
                Some(ReadSideManagerServiceServer::new(ReadSideManager {
                    control: control.clone(),
                })),
                Some(ReadSideAdminServer::new(ReadSideAdminService { control })),
            )
        } else {
            (None, None)
        };

        let listener = TcpListener::bind(settings.grpc_listen_address)
            .await
            .map_err(|source| NodeError::Bind {
                address: settings.grpc_listen_address,
                source,
            })?;
        let local_address = listener.local_addr().map_err(|source| NodeError::Bind {
            address: settings.grpc_listen_address,
            source,
        })?;
        let service = ChiefOfStateServiceServer::new(Gateway::new(router.clone(), &settings))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let admin = ClusterAdminServer::new(ClusterAdminService {
            view: cluster.as_ref().map(|cluster| cluster.view.clone()),
            router: router.clone(),
        });
        let stop_serving = Arc::new(Notify::new());
        let downed_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Some(cluster) = &cluster {
            let mut downed = cluster.downed.clone();
            let stop = stop_serving.clone();
            let flag = downed_flag.clone();
            tokio::spawn(async move {
                while downed.changed().await.is_ok() {
                    if *downed.borrow() {
                        tracing::error!("downed by the cluster: shutting down without hand-off");
                        flag.store(true, std::sync::atomic::Ordering::SeqCst);
                        stop.notify_one();
                        break;
                    }
                }
            });
        }
        tracing::info!(service = %settings.service_name, address = %local_address,
            store = store_name(&settings.store), entity_types = settings.entity_types.types.len(),
            clustered = cluster.is_some(), "chief of state is serving grpc");
        let stop_signal = stop_serving.clone();
        let router_for_leave = router.clone();
        let server = tokio::spawn(async move {
            let serving = tonic::transport::Server::builder()
                .layer(oversized_requests_are_resource_exhausted::<tonic::body::Body>())
                .add_service(service)
                .add_service(admin)
                .add_optional_service(read_side_manager)
                .add_optional_service(read_side_admin)
                .serve_with_incoming_shutdown(accept_without_delay(listener), async {
                    stop_signal.notified().await;
                    if let Some(cluster) = &cluster {
                        tracing::info!("shutdown: leaving the cluster, handing off shards");
                        cluster.leave();
                        cluster
                            .wait_for_hand_off(&router_for_leave, HAND_OFF_LIMIT)
                            .await;
                    }
                    tracing::info!("shutdown: refusing new requests, finishing in-flight ones");
                })
                .await;
            tracing::info!("shutdown: grpc server stopped; stopping entities");
            if let Some(host) = &read_side_host {
                tracing::info!("shutdown: stopping read-side workers");
                if host
                    .stop_and_wait(None, Some(READ_SIDE_STOP_TIMEOUT))
                    .await
                    .is_err()
                {
                    tracing::error!("shutdown: read-side workers did not stop in time");
                }
            }
            if let Some(cluster) = &cluster {
                cluster.stop_endpoint().await;
            }
            router.stop().await;
            if let Some(cluster) = &cluster {
                cluster.exit();
            }
            drop(router);
            tracing::info!("shutdown: entities stopped; flushing the journal writer");
            if tokio::time::timeout(WRITER_FLUSH_TIMEOUT, writer_task)
                .await
                .is_err()
            {
                tracing::error!("shutdown: journal writer did not flush in time");
            }
            journal.close().await;
            if let Some(cluster) = &cluster {
                cluster.stop().await;
            }
            tracing::info!("shutdown: store closed; node stopped");
            serving.map_err(NodeError::from)
        });
        Ok(Self {
            local_address,
            stop_serving,
            server,
            finished: false,
            census,
        })
    }

    /// How many entities this node holds as actors and resting (see `docs/architecture.md`).
    pub fn entity_census(&self) -> Arc<EntityCensus> {
        self.census.clone()
    }

    /// The address the gRPC server listens on (useful with port 0).
    pub fn local_address(&self) -> SocketAddr {
        self.local_address
    }

    /// Stops gracefully and waits until everything is closed.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        self.stop_serving.notify_one();
        self.wait().await
    }

    /// Waits until the node stops (after [`RunningNode::shutdown`] or a server failure).
    pub async fn wait(&mut self) -> Result<(), NodeError> {
        if self.finished {
            return Ok(());
        }
        let outcome = (&mut self.server).await;
        self.finished = true;
        match outcome {
            Ok(result) => result,
            Err(join_error) => {
                tracing::error!(error = %join_error, "server task ended abnormally");
                Ok(())
            }
        }
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        self.stop_serving.notify_one();
    }
}

/// The journal and the read-side positions: one database, one pool, two faces.
type Stores = (Arc<dyn Journal>, Arc<dyn ReadSideStore>);

/// What read sides use: the journal their workers read shard events from, the positions their workers
/// write, and the positions operators' changes go to. On PostgreSQL workers get a connection pool of their
/// own (as the original's `cos-readside-pool`), so a backlog being delivered never takes connections from
/// the write path; on SQLite a handle whose offset writes skip the fsync. The compaction guard stays on the
/// writer's journal.
pub struct ReadSideStores {
    pub journal: Arc<dyn Journal>,
    pub positions: Arc<dyn ReadSideStore>,
    /// Where the manager service writes pauses, restarts and skips (always fully durable).
    pub operations: Arc<dyn ReadSideStore>,
}

/// Read-side stores next to the writer's: a second pool on PostgreSQL, a second handle without per-commit
/// fsync on SQLite; operators' changes keep the writer's fully durable store on SQLite.
async fn open_read_side_stores(
    store: &StoreSettings,
    positions: Arc<dyn ReadSideStore>,
) -> Result<ReadSideStores, StoreError> {
    match store {
        StoreSettings::Sqlite(sqlite) => {
            let own = Arc::new(SqliteJournal::open_for_read_sides(sqlite).await?);
            Ok(ReadSideStores {
                journal: own.clone(),
                positions: own,
                operations: positions,
            })
        }
        StoreSettings::Postgres(postgres) => {
            let own = Arc::new(PostgresJournal::connect(postgres).await?);
            Ok(ReadSideStores {
                journal: own.clone(),
                positions: own.clone(),
                operations: own,
            })
        }
    }
}

async fn open_store(store: &StoreSettings) -> Result<Stores, StoreError> {
    match store {
        StoreSettings::Sqlite(sqlite) => {
            let journal = Arc::new(SqliteJournal::open(sqlite).await?);
            tracing::info!(file = %sqlite.database_file().display(), "embedded sqlite store ready");
            Ok((journal.clone(), journal))
        }
        StoreSettings::Postgres(postgres) => {
            let journal = Arc::new(PostgresJournal::connect(postgres).await?);
            tracing::info!(host = %postgres.host, database = %postgres.database,
                schema = %postgres.schema, "postgresql store ready");
            Ok((journal.clone(), journal))
        }
    }
}

fn writer_options(store: &StoreSettings) -> WriterOptions {
    let max_concurrent_batches = match store {
        // SQLite has a single writer: more concurrent transactions would only queue on its lock.
        StoreSettings::Sqlite(_) => 1,
        // Two transactions in flight keep the database busy while a batch commits; more only makes batches
        // smaller (measured: 4 slots cost 25% more database CPU per command than 2, at equal throughput).
        // One connection always stays free for recoveries and reads.
        StoreSettings::Postgres(postgres) => {
            usize::try_from(postgres.pool_max_size.saturating_sub(1).clamp(1, 2)).unwrap_or(1)
        }
    };
    WriterOptions {
        max_concurrent_batches,
        ..WriterOptions::default()
    }
}

fn store_name(store: &StoreSettings) -> &'static str {
    match store {
        StoreSettings::Sqlite(_) => "sqlite",
        StoreSettings::Postgres(_) => "postgres",
    }
}

/// Accepted client connections with Nagle's algorithm off: a unary gRPC reply goes out as several small
/// writes (headers, message, trailers), and Nagle would hold the later ones back until the client
/// acknowledges the first, which delayed ACKs can stretch to tens of milliseconds.
fn accept_without_delay(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() -> Result<(), Box<dyn std::error::Error>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let mut incoming = accept_without_delay(listener);
        let _client = tokio::net::TcpStream::connect(address).await?;
        let accepted = incoming.next().await.ok_or("listener ended")??;
        assert!(
            accepted.nodelay()?,
            "accepted socket still uses Nagle's algorithm"
        );
        Ok(())
    }
}
