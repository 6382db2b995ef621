//! The one typed settings struct, loaded once at start-up from an optional config file and the environment
//! (`COS_*` variables with the original names and defaults), and validated before anything starts.

mod load;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::EntityType;
use crate::validation::ProtoValidation;

pub use load::{LoadOptions, SettingsError};
pub(crate) use load::{parse_boolean, parse_duration};

/// Everything a node needs to run; nothing else reads the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `COS_SERVICE_NAME`: 1..64 characters; used in logs and (later) DNS discovery.
    pub service_name: String,
    /// `COS_DEPLOYMENT_MODE`: how nodes find each other.
    pub deployment_mode: DeploymentMode,
    /// `COS_ADDRESS` + `COS_PORT`: where the gRPC API listens (port 0 picks a free port).
    pub grpc_listen_address: SocketAddr,
    /// `COS_NUM_SHARDS`: a power of two in 1..=10000; must never change for an existing journal.
    pub num_shards: u32,
    /// `COS_COMMAND_HANDLER_TIMEOUT` (whole seconds, 1..=300): how long a command may take end to end.
    pub command_handler_timeout: Duration,
    /// Where events and snapshots live.
    pub store: StoreSettings,
    /// The entity types this node serves, each with its own write handler.
    pub entity_types: EntityTypes,
    /// When idle entities leave memory.
    pub passivation: PassivationSettings,
    /// Outbound gRPC channel options shared by every handler client.
    pub grpc_client: GrpcClientSettings,
    /// `LOG_LEVEL` and `LOG_STYLE`.
    pub logging: LoggingSettings,
    /// Multi-node operation; `None` for a single node.
    pub cluster: Option<ClusterSettings>,
    /// `COS_READ_SIDE_*`: the read handlers fed from the journal (none unless `COS_READ_SIDE_ENABLED`).
    pub read_sides: crate::readside::ReadSideSettings,
}

/// How this node joins a cluster (`COS_CLUSTER_*`). A cluster is formed when `COS_CLUSTER_ENABLED` is true,
/// `COS_CLUSTER_SEEDS` is set, or `COS_REPLICA_COUNT` is above 1; it requires PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    /// `COS_CLUSTER_NODE_NAME` (default `cos-<cluster port>`): unique per host; the full name is `name@host`.
    pub node_name: String,
    /// `COS_CLUSTER_HOST`: the address peers use to reach this node (default `COS_ADDRESS` unless it is a
    /// wildcard, else `POD_IP`, else 127.0.0.1).
    pub advertised_host: String,
    /// `COS_CLUSTER_PORT` (default 9010): the port of the node-to-node protocol.
    pub port: u16,
    /// `COS_CLUSTER_SECRET` (required): the shared cookie; a node without it never joins.
    pub secret: String,
    /// How peers are found.
    pub discovery: ClusterDiscovery,
    /// `COS_REPLICA_COUNT` (default 1): nodes to discover before forming the cluster.
    pub required_contact_points: usize,
    /// `COS_CLUSTER_HEARTBEAT_INTERVAL` (default 1s).
    pub heartbeat_interval: Duration,
    /// `COS_CLUSTER_UNREACHABLE_AFTER` (default 5s): silence after which a member is unreachable.
    pub unreachable_after: Duration,
    /// `COS_CLUSTER_DOWN_AFTER` (default 10s): how long a member may stay unreachable before the leader downs
    /// it and its shards move.
    pub down_after: Duration,
}

impl ClusterSettings {
    /// The node's full cluster name, `name@host`.
    pub fn full_name(&self) -> String {
        format!("{}@{}", self.node_name, self.advertised_host)
    }
}

/// Where the other nodes are found.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterDiscovery {
    /// `COS_CLUSTER_SEEDS`: `host:port` of some nodes' cluster ports.
    StaticSeeds(Vec<String>),
    /// `COS_DEPLOYMENT_MODE=docker`: resolve `COS_SERVICE_NAME` in DNS (original semantics).
    Dns { service_name: String },
    /// `COS_DEPLOYMENT_MODE=kubernetes`: pods labelled `app=COS_KUBERNETES_APP_LABEL`.
    Kubernetes { app_label: String },
}

/// `COS_DEPLOYMENT_MODE` (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentMode {
    Docker,
    Kubernetes,
}

/// Which store backs the journal: chosen by `COS_STORE` (`auto`, `sqlite`, `postgres`). `auto` picks
/// PostgreSQL when `COS_DB_HOST` is set (every existing deployment sets it) and embedded SQLite otherwise.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreSettings {
    Sqlite(SqliteSettings),
    Postgres(PostgresSettings),
}

/// The embedded single-node store.
#[derive(Debug, Clone, PartialEq)]
pub struct SqliteSettings {
    /// `COS_DATA_DIR` (default `./cos-data`); the database file is `cos.db` inside it.
    pub data_dir: PathBuf,
}

impl SqliteSettings {
    /// The database file inside the data directory.
    pub fn database_file(&self) -> PathBuf {
        self.data_dir.join("cos.db")
    }
}

/// `COS_DB_*`: the PostgreSQL journal.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresSettings {
    pub host: String,
    pub port: u16,
    pub database: String,
    /// `COS_DB_SCHEMA`: created and migrated on boot; a plain identifier (letters, digits, `_`).
    pub schema: String,
    pub user: String,
    pub password: String,
    /// `COS_DB_POOL_MAX_SIZE` (>= 1).
    pub pool_max_size: u32,
    /// `COS_DB_POOL_MIN_IDLE_CONNECTIONS` (<= max size).
    pub pool_min_idle: u32,
    /// `COS_DB_POOL_IDLE_TIMEOUT_MS`.
    pub pool_idle_timeout: Duration,
    /// `COS_DB_POOL_MAX_LIFETIME_MS`.
    pub pool_max_lifetime: Duration,
}

/// All configured entity types and the one used when a request names none.
#[derive(Debug, Clone)]
pub struct EntityTypes {
    /// The type of requests without `x-cos-entity-type`.
    pub default_type: EntityType,
    pub types: BTreeMap<EntityType, EntityTypeSettings>,
}

/// One entity type: its write handler and its persistence rules.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityTypeSettings {
    pub name: EntityType,
    pub write_handler: WriteHandlerSettings,
    pub snapshots: SnapshotSettings,
    /// `COS_WRITE_SIDE_PROTO_VALIDATION`, `COS_WRITE_SIDE_EVENT_PROTOS`, `COS_WRITE_SIDE_STATE_PROTOS`.
    pub validation: ProtoValidation,
    /// `COS_WRITE_SIDE_PROPAGATED_HEADERS`: request headers forwarded to HandleCommand.
    pub propagated_headers: Vec<String>,
    /// `COS_WRITE_PERSISTED_HEADERS`: request headers stored in each event's meta.
    pub persisted_headers: Vec<String>,
}

/// Where and how to call an entity type's write handler.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteHandlerSettings {
    /// `COS_WRITE_SIDE_HOST` (required, non-empty).
    pub host: String,
    /// `COS_WRITE_SIDE_PORT` (required, 1..=65535).
    pub port: u16,
    /// `COS_WRITE_SIDE_USE_TLS`.
    pub use_tls: bool,
    /// `COS_GRPC_CALLS_TIMEOUT` (milliseconds): deadline of each HandleCommand / HandleEvent call.
    pub call_timeout: Duration,
}

/// Snapshot and compaction rules (`COS_DISABLE_SNAPSHOT`, `COS_SNAPSHOT_FREQUENCY`,
/// `COS_NUM_SNAPSHOTS_TO_RETAIN`, `COS_JOURNAL_LOGICAL_DELETION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSettings {
    pub enabled: bool,
    /// Snapshot whenever the revision is a multiple of this (> 0).
    pub frequency: u32,
    /// How many snapshots to keep (1..=100).
    pub retain: u32,
    /// Delete events covered by the oldest retained snapshot.
    pub delete_events: bool,
}

/// When entities are stopped to free memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassivationSettings {
    /// `COS_PASSIVATION_IDLE_TIMEOUT` (duration, default `10m`; `off` disables).
    pub idle_timeout: Option<Duration>,
    /// `COS_MAX_ACTIVE_ENTITIES` (default 100000): per node; least recently used go first.
    pub max_active_entities: usize,
    /// `COS_PASSIVATION_REST_AFTER` (duration, default `2s`; `off` disables): an entity that ran no command
    /// this long gives up its actor (≈ 11 KB) but keeps its state in its shard, so it still answers without
    /// a store read (reads need no actor at all).
    pub rest_after: Option<Duration>,
}

/// Outbound gRPC options (`COS_GRPC_KEEPALIVE_*`, `COS_GRPC_CLIENT_POOL_SIZE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcClientSettings {
    pub keepalive: Option<KeepaliveSettings>,
    /// Channels per handler, used round-robin (>= 1).
    pub pool_size: usize,
    /// `COS_WRITE_SIDE_BREAKER_*`: fail fast while a write handler keeps failing; `None` when disabled.
    pub breaker: Option<BreakerSettings>,
}

/// A circuit breaker: after `max_failures` failures in a row calls fail fast for `reset_timeout`, then one
/// trial call decides whether to close again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// `COS_WRITE_SIDE_BREAKER_MAX_FAILURES` (default 5, 1..=100).
    pub max_failures: u32,
    /// `COS_WRITE_SIDE_BREAKER_CALL_TIMEOUT` (default 60s, at most 5m): slower calls count as failures.
    pub call_timeout: Duration,
    /// `COS_WRITE_SIDE_BREAKER_RESET_TIMEOUT` (default 1m, 1s..=1h).
    pub reset_timeout: Duration,
}

/// HTTP/2 keepalive pings on handler channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveSettings {
    pub interval: Duration,
    pub timeout: Duration,
    pub while_idle: bool,
}

/// `LOG_LEVEL` (an `EnvFilter` directive, default `info`) and `LOG_STYLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingSettings {
    pub level: String,
    pub style: LogStyle,
}

/// `LOG_STYLE`: `JSON` (default, as in the original), `SIMPLE` or `STANDARD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStyle {
    Json,
    Simple,
    Standard,
}
