//! Starts a real Chief of State node (gRPC on a loopback port) over a real store, configured through the
//! same `COS_*` variables an operator would use.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use cos_core::domain::{EntityId, EntityKey, EntityType};
use cos_core::proto::chief_of_state::v1::chief_of_state_service_client::ChiefOfStateServiceClient;
use cos_core::settings::{LoadOptions, Settings, SqliteSettings};
use cos_core::store::Journal;
use cos_core::store::postgres::PostgresJournal;
use cos_core::store::sqlite::SqliteJournal;
use cos_server::RunningNode;
use tempfile::TempDir;
use tonic::transport::Channel;

use super::database::{TestPostgres, unique_schema_name};

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A store that outlives node restarts within one test: a temporary SQLite directory or a fresh schema.
pub struct TestStore {
    pub backend: Backend,
    environment: Vec<(String, String)>,
    sqlite_dir: Option<TempDir>,
    postgres: Option<(TestPostgres, String)>,
}

impl TestStore {
    /// Creates an empty store of the given kind.
    pub fn new(backend: Backend) -> anyhow::Result<Self> {
        match backend {
            Backend::Sqlite => {
                let directory = TempDir::new()?;
                let environment = vec![
                    ("COS_STORE".to_string(), "sqlite".to_string()),
                    (
                        "COS_DATA_DIR".to_string(),
                        directory.path().display().to_string(),
                    ),
                ];
                Ok(Self {
                    backend,
                    environment,
                    sqlite_dir: Some(directory),
                    postgres: None,
                })
            }
            Backend::Postgres => {
                let server = TestPostgres::from_env();
                let schema = unique_schema_name();
                Ok(Self {
                    backend,
                    environment: server.environment(&schema),
                    sqlite_dir: None,
                    postgres: Some((server, schema)),
                })
            }
        }
    }

    /// The `COS_*` variables that select this store.
    pub fn environment(&self) -> &[(String, String)] {
        &self.environment
    }

    /// A plain connection pool to this test's PostgreSQL schema, for tests that drive transactions by hand.
    pub async fn postgres_pool(&self) -> anyhow::Result<sqlx::PgPool> {
        let Some((server, schema)) = &self.postgres else {
            anyhow::bail!("not a PostgreSQL store");
        };
        let options = sqlx::postgres::PgConnectOptions::new()
            .host(&server.host)
            .port(server.port)
            .username(&server.user)
            .database(&server.database)
            .options([("search_path", format!("\"{schema}\""))]);
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?)
    }

    /// Opens the read-side positions of this store.
    pub async fn open_read_side_store(
        &self,
    ) -> anyhow::Result<Arc<dyn cos_core::store::read_sides::ReadSideStore>> {
        Ok(self.open_store_pair().await?.1)
    }

    /// Opens the store once and returns its two faces, journal and read-side positions (the compaction
    /// guard only applies to appends through the object that was told which read sides guard it).
    pub async fn open_store_pair(
        &self,
    ) -> anyhow::Result<(
        Arc<dyn Journal>,
        Arc<dyn cos_core::store::read_sides::ReadSideStore>,
    )> {
        if let Some(directory) = &self.sqlite_dir {
            let settings = SqliteSettings {
                data_dir: directory.path().to_path_buf(),
            };
            let store = Arc::new(SqliteJournal::open(&settings).await?);
            return Ok((store.clone(), store));
        }
        let Some((server, schema)) = &self.postgres else {
            anyhow::bail!("store has neither a directory nor a schema");
        };
        let mut settings = server.settings_for_new_schema();
        settings.schema = schema.clone();
        let store = Arc::new(PostgresJournal::connect(&settings).await?);
        Ok((store.clone(), store))
    }

    /// Opens the store directly, to inspect what a node wrote.
    pub async fn open_journal(&self) -> anyhow::Result<Arc<dyn Journal>> {
        if let Some(directory) = &self.sqlite_dir {
            let settings = SqliteSettings {
                data_dir: directory.path().to_path_buf(),
            };
            return Ok(Arc::new(SqliteJournal::open(&settings).await?));
        }
        let Some((server, schema)) = &self.postgres else {
            anyhow::bail!("store has neither a directory nor a schema");
        };
        let mut settings = server.settings_for_new_schema();
        settings.schema = schema.clone();
        Ok(Arc::new(PostgresJournal::connect(&settings).await?))
    }
}

/// Writes an entity's next revision straight into the store, as another writer (a node on the wrong side of
/// a partition, say) would: its resulting state is the previous one with `|foreign` appended. Returns the
/// revision written.
pub async fn write_behind_its_back(store: &TestStore, entity_id: &str) -> anyhow::Result<u32> {
    use cos_core::store::{AppendRequest, EncodedEvent, decode_event};
    use prost::Message;

    use super::script_handler::{any_text, text_any};

    let journal = store.open_journal().await?;
    let key = default_key(entity_id)?;
    let rows = journal.events_after(&key, 0).await?;
    let last = rows
        .last()
        .ok_or_else(|| anyhow::anyhow!("{entity_id} has no events"))?;
    let mut wrapper = decode_event(last)?;
    let next = last.revision + 1;
    if let Some(meta) = wrapper.meta.as_mut() {
        meta.revision_number = next;
    }
    let foreign_state = format!("{}|foreign", any_text(wrapper.resulting_state.as_ref()));
    wrapper.resulting_state = Some(text_any(&foreign_state));
    journal
        .append_atomically(&[AppendRequest {
            key,
            expected_revision: last.revision,
            shard: 0,
            events: vec![EncodedEvent {
                revision: next,
                payload: wrapper.encode_to_vec(),
            }],
            snapshot: None,
        }])
        .await?;
    journal.close().await;
    Ok(next)
}

/// The storage key of an entity of the default type.
pub fn default_key(entity_id: &str) -> anyhow::Result<EntityKey> {
    typed_key(EntityType::DEFAULT_NAME, entity_id)
}

/// The storage key of an entity of a named type.
pub fn typed_key(entity_type: &str, entity_id: &str) -> anyhow::Result<EntityKey> {
    Ok(EntityKey {
        entity_type: EntityType::parse(entity_type)?,
        entity_id: EntityId::parse(entity_id)?,
    })
}

/// Builds the settings of a test node: the store, a write handler at `handler`, port 0, plus `extra`
/// variables (which win).
pub fn test_settings(
    store: &TestStore,
    handler: SocketAddr,
    extra: &[(&str, &str)],
) -> anyhow::Result<Settings> {
    let mut environment: HashMap<String, String> = HashMap::new();
    environment.insert("COS_ADDRESS".into(), "127.0.0.1".into());
    environment.insert("COS_PORT".into(), "0".into());
    environment.insert("COS_WRITE_SIDE_HOST".into(), handler.ip().to_string());
    environment.insert("COS_WRITE_SIDE_PORT".into(), handler.port().to_string());
    for (key, value) in store.environment() {
        environment.insert(key.clone(), value.clone());
    }
    for (key, value) in extra {
        environment.insert((*key).to_string(), (*value).to_string());
    }
    let options = LoadOptions {
        config_file: None,
        environment,
    };
    Ok(Settings::load(&options)?)
}

/// A running node and a client connected to it.
pub struct TestNode {
    pub node: RunningNode,
    pub client: ChiefOfStateServiceClient<Channel>,
}

impl TestNode {
    /// Starts a node with [`test_settings`].
    pub async fn start(
        store: &TestStore,
        handler: SocketAddr,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_with(test_settings(store, handler, extra)?).await
    }

    /// Starts a node with explicit settings.
    pub async fn start_with(settings: Settings) -> anyhow::Result<Self> {
        let node = RunningNode::start(settings).await?;
        let client =
            ChiefOfStateServiceClient::connect(format!("http://{}", node.local_address())).await?;
        Ok(Self { node, client })
    }

    /// Starts a node on a given journal (for fault injection).
    pub async fn start_with_journal(
        settings: Settings,
        journal: Arc<dyn Journal>,
    ) -> anyhow::Result<Self> {
        let node = RunningNode::start_with_journal(settings, journal).await?;
        let client =
            ChiefOfStateServiceClient::connect(format!("http://{}", node.local_address())).await?;
        Ok(Self { node, client })
    }

    /// Starts a node on given stores (for fault injection in the journal or the read-side positions).
    pub async fn start_with_stores(
        settings: Settings,
        journal: Arc<dyn Journal>,
        positions: Arc<dyn cos_core::store::read_sides::ReadSideStore>,
    ) -> anyhow::Result<Self> {
        let stores = cos_server::node::ReadSideStores {
            journal: journal.clone(),
            positions: positions.clone(),
            operations: positions,
        };
        let node = RunningNode::start_with_stores(settings, journal, Some(stores)).await?;
        let client =
            ChiefOfStateServiceClient::connect(format!("http://{}", node.local_address())).await?;
        Ok(Self { node, client })
    }

    /// Stops the node gracefully.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.node.shutdown().await?;
        Ok(())
    }
}

/// Sends `emit:<events>` to an entity and returns its new revision.
pub async fn emit(
    node: &mut TestNode,
    entity_id: &str,
    events: &str,
) -> Result<u32, tonic::Status> {
    let request = cos_core::proto::chief_of_state::v1::ProcessCommandRequest {
        entity_id: entity_id.to_string(),
        command: Some(super::script_handler::text_any(&format!("emit:{events}"))),
    };
    let response = node.client.process_command(request).await?.into_inner();
    Ok(response.meta.map_or(0, |meta| meta.revision_number))
}

/// `count` entity ids (`<prefix>-<n>`) that all land in one shard of `num_shards`, with that shard.
pub fn ids_in_one_shard(prefix: &str, count: usize, num_shards: u32) -> (Vec<String>, u32) {
    let first = format!("{prefix}-0");
    let shard = cos_core::sharding::shard_of(&first, num_shards);
    let ids = (0..100_000)
        .map(|index| format!("{prefix}-{index}"))
        .filter(|id| cos_core::sharding::shard_of(id, num_shards) == shard)
        .take(count)
        .collect();
    (ids, shard)
}

/// An entity id in a different shard than `shard`.
pub fn id_outside_shard(prefix: &str, shard: u32, num_shards: u32) -> String {
    (0..100_000)
        .map(|index| format!("{prefix}-{index}"))
        .find(|id| cos_core::sharding::shard_of(id, num_shards) != shard)
        .unwrap_or_default()
}
