//! The benchmark scenarios and their baselines, run in one go so every ratio compares figures measured on
//! the same machine minutes apart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use cos_core::domain::{EntityId, EntityKey, EntityType};
use cos_core::proto::chief_of_state::v1::chief_of_state_service_client::ChiefOfStateServiceClient;
use cos_core::proto::chief_of_state::v1::write_side_handler_service_client::WriteSideHandlerServiceClient;
use cos_core::proto::chief_of_state::v1::{
    EventWrapper, GetStateRequest, HandleCommandRequest, HandleEventRequest, MetaData,
    ProcessCommandRequest, StateWrapper,
};
use cos_core::settings::{PostgresSettings, SqliteSettings};
use cos_core::store::postgres::PostgresJournal;
use cos_core::store::sqlite::SqliteJournal;
use cos_core::store::{AppendRequest, EncodedEvent, Journal, SnapshotWrite};
use prost::Message;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::counter_handler::counter_any;
use super::load::{LoadResult, closed_loop, open_loop};
use super::process::{ChildProcess, free_port, sibling_binary};
use super::report::{Row, Verdict, describe, millis};

/// Where the PostgreSQL scenarios run.
#[derive(Debug, Clone)]
pub struct PostgresTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
}

/// Sizes of one benchmark run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub duration: Duration,
    pub concurrency: usize,
    pub entities: usize,
    /// gRPC connections the load generator spreads its workers over.
    pub connections: usize,
    pub postgres: Option<PostgresTarget>,
    pub recovery_events: u32,
    /// Live-entity counts at which resident memory is sampled (ascending).
    pub memory_samples: Vec<usize>,
    /// Distinct entities touched with default passivation.
    pub distinct_entities: usize,
    /// Scenario groups to run (`write`, `recovery`, `memory`); empty means all. Baselines always run.
    pub only: Vec<String>,
}

impl BenchConfig {
    fn runs(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|selected| selected == group)
    }
}

impl BenchConfig {
    /// A seconds-long run that exercises every scenario (CI's smoke run).
    pub fn quick(postgres: Option<PostgresTarget>) -> Self {
        Self {
            duration: Duration::from_millis(500),
            concurrency: 8,
            entities: 50,
            connections: 2,
            postgres,
            recovery_events: 2_000,
            memory_samples: vec![500, 2_000],
            distinct_entities: 3_000,
            only: Vec::new(),
        }
    }

    /// The full run whose figures go into docs/performance.md.
    pub fn full(postgres: Option<PostgresTarget>) -> Self {
        Self {
            duration: Duration::from_secs(10),
            concurrency: 64,
            entities: 10_000,
            connections: 4,
            postgres,
            recovery_events: 100_000,
            memory_samples: vec![10_000, 100_000],
            distinct_entities: 1_000_000,
            only: Vec::new(),
        }
    }
}

/// Channels spread over several connections, used round-robin by the workers.
async fn channels(address: SocketAddr, count: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let channel = Channel::from_shared(format!("http://{address}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("cannot connect to {address}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

fn command_request(entity_id: String) -> ProcessCommandRequest {
    ProcessCommandRequest {
        entity_id,
        command: Some(counter_any(1)),
    }
}

async fn write_load(
    cos: &[Channel],
    config: &BenchConfig,
    entity_of: fn(usize, u64, &BenchConfig) -> String,
) -> LoadResult {
    let cos = cos.to_vec();
    let config = Arc::new(config.clone());
    closed_loop(
        config.concurrency,
        config.duration,
        move |worker, sequence| {
            let mut client = ChiefOfStateServiceClient::new(cos[worker % cos.len()].clone());
            let entity_id = entity_of(worker, sequence, &config);
            async move {
                client
                    .process_command(command_request(entity_id))
                    .await
                    .is_ok()
            }
        },
    )
    .await
}

fn spread_entity(worker: usize, sequence: u64, config: &BenchConfig) -> String {
    let index =
        (worker as u64 + sequence * config.concurrency as u64) % config.entities.max(1) as u64;
    format!("entity-{index}")
}

fn hot_entity(_worker: usize, _sequence: u64, _config: &BenchConfig) -> String {
    "hot-entity".to_string()
}

async fn get_state_load(target: &[Channel], config: &BenchConfig) -> LoadResult {
    let target = target.to_vec();
    let config = Arc::new(config.clone());
    closed_loop(
        config.concurrency,
        config.duration,
        move |worker, sequence| {
            let mut client = ChiefOfStateServiceClient::new(target[worker % target.len()].clone());
            let entity_id = spread_entity(worker, sequence, &config);
            async move {
                client
                    .get_state(GetStateRequest { entity_id })
                    .await
                    .is_ok()
            }
        },
    )
    .await
}

/// One HandleCommand and one HandleEvent, as Chief of State makes them for a one-event command.
async fn direct_handler_round_trip(mut client: WriteSideHandlerServiceClient<Channel>) -> bool {
    let command = client
        .handle_command(HandleCommandRequest {
            command: Some(counter_any(1)),
            prior_state: Some(counter_any(1)),
            prior_event_meta: Some(MetaData::default()),
        })
        .await;
    let Ok(command) = command else {
        return false;
    };
    let event = command.into_inner().events.into_iter().next();
    client
        .handle_event(HandleEventRequest {
            event,
            prior_state: Some(counter_any(1)),
            event_meta: Some(MetaData::default()),
        })
        .await
        .is_ok()
}

async fn handler_ceiling(handler: &[Channel], config: &BenchConfig) -> LoadResult {
    let handler = handler.to_vec();
    closed_loop(config.concurrency, config.duration, move |worker, _| {
        let client = WriteSideHandlerServiceClient::new(handler[worker % handler.len()].clone());
        direct_handler_round_trip(client)
    })
    .await
}

fn cos_environment(
    store: &[(String, String)],
    handler: SocketAddr,
    port: u16,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut environment: Vec<(String, String)> = vec![
        ("COS_ADDRESS".into(), "127.0.0.1".into()),
        ("COS_PORT".into(), port.to_string()),
        ("COS_WRITE_SIDE_HOST".into(), handler.ip().to_string()),
        ("COS_WRITE_SIDE_PORT".into(), handler.port().to_string()),
        ("LOG_LEVEL".into(), "warn".into()),
        ("LOG_STYLE".into(), "SIMPLE".into()),
    ];
    environment.extend(store.iter().cloned());
    environment.extend(
        extra
            .iter()
            .map(|(key, value)| ((*key).to_string(), (*value).to_string())),
    );
    environment
}

async fn start_cos(
    store: &[(String, String)],
    handler: SocketAddr,
    extra: &[(&str, &str)],
) -> anyhow::Result<ChildProcess> {
    let port = free_port()?;
    let address: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    ChildProcess::start(
        "cos",
        sibling_binary("cos")?,
        &[],
        &cos_environment(store, handler, port, extra),
        address,
    )
    .await
}

/// A store for one scenario: a fresh PostgreSQL schema or a fresh SQLite directory.
struct BenchStore {
    name: &'static str,
    environment: Vec<(String, String)>,
    postgres: Option<PostgresSettings>,
    sqlite: Option<SqliteSettings>,
    _directory: Option<tempfile::TempDir>,
}

impl BenchStore {
    fn postgres(target: &PostgresTarget, label: &str) -> Self {
        let schema = format!("cos_bench_{label}_{}", std::process::id());
        let settings = PostgresSettings {
            host: target.host.clone(),
            port: target.port,
            database: target.database.clone(),
            schema: schema.clone(),
            user: target.user.clone(),
            password: String::new(),
            pool_max_size: 5,
            pool_min_idle: 1,
            pool_idle_timeout: Duration::from_secs(60),
            pool_max_lifetime: Duration::from_secs(120),
        };
        Self {
            name: "postgres",
            environment: vec![
                ("COS_STORE".into(), "postgres".into()),
                ("COS_DB_HOST".into(), target.host.clone()),
                ("COS_DB_PORT".into(), target.port.to_string()),
                ("COS_DB_USER".into(), target.user.clone()),
                ("COS_DB_NAME".into(), target.database.clone()),
                ("COS_DB_SCHEMA".into(), schema),
            ],
            postgres: Some(settings),
            sqlite: None,
            _directory: None,
        }
    }

    fn sqlite() -> anyhow::Result<Self> {
        let directory = tempfile::TempDir::new()?;
        let settings = SqliteSettings {
            data_dir: directory.path().to_path_buf(),
        };
        Ok(Self {
            name: "sqlite",
            environment: vec![
                ("COS_STORE".into(), "sqlite".into()),
                (
                    "COS_DATA_DIR".into(),
                    directory.path().display().to_string(),
                ),
            ],
            postgres: None,
            sqlite: Some(settings),
            _directory: Some(directory),
        })
    }

    async fn open(&self) -> anyhow::Result<Arc<dyn Journal>> {
        if let Some(settings) = &self.postgres {
            return Ok(Arc::new(PostgresJournal::connect(settings).await?));
        }
        let settings = self.sqlite.as_ref().context("store without settings")?;
        Ok(Arc::new(SqliteJournal::open(settings).await?))
    }

    /// Drops a PostgreSQL benchmark schema.
    async fn drop_schema(&self) {
        let Some(settings) = &self.postgres else {
            return;
        };
        let options = sqlx::postgres::PgConnectOptions::new()
            .host(&settings.host)
            .port(settings.port)
            .username(&settings.user)
            .database(&settings.database);
        let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
        else {
            return;
        };
        // Audited: the schema name is generated above from a fixed prefix, a label and the process id.
        let statement = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", settings.schema);
        let _ = sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&pool)
            .await;
        pool.close().await;
    }
}

/// Every scenario, in order; returns the report rows.
pub async fn run_all(config: &BenchConfig) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let bench_binary = std::env::current_exe()?;
    let handler_port = free_port()?;
    let handler_address: SocketAddr = format!("127.0.0.1:{handler_port}").parse()?;
    let handler = ChildProcess::start(
        "handler",
        bench_binary.clone(),
        &[
            "handler".into(),
            "--listen".into(),
            handler_address.to_string(),
        ],
        &[],
        handler_address,
    )
    .await?;
    let echo_port = free_port()?;
    let echo_address: SocketAddr = format!("127.0.0.1:{echo_port}").parse()?;
    let echo = ChildProcess::start(
        "echo",
        bench_binary,
        &["echo".into(), "--listen".into(), echo_address.to_string()],
        &[],
        echo_address,
    )
    .await?;

    let handler_channels = channels(handler_address, config.connections).await?;
    let ceiling = handler_ceiling(&handler_channels, config).await;
    rows.push(Row {
        scenario: "baseline: handler ceiling (HandleCommand + HandleEvent, direct)".into(),
        figure: describe(&ceiling),
        ratio: "1.00".into(),
        target: String::new(),
        verdict: Verdict::Informational,
    });
    let echo_channels = channels(echo_address, config.connections).await?;
    let echo_result = get_state_load(&echo_channels, config).await;
    rows.push(Row {
        scenario: "baseline: bare tonic echo (GetState)".into(),
        figure: describe(&echo_result),
        ratio: "1.00".into(),
        target: String::new(),
        verdict: Verdict::Informational,
    });

    let mut stores = Vec::new();
    if let Some(target) = &config.postgres {
        stores.push(BenchStore::postgres(target, "write"));
    }
    stores.push(BenchStore::sqlite()?);
    for store in stores.iter().filter(|_| config.runs("write")) {
        write_scenarios(
            store,
            handler_address,
            &handler_channels,
            &ceiling,
            &echo_result,
            config,
            &mut rows,
        )
        .await?;
        store.drop_schema().await;
    }

    if config.runs("recovery") {
        let recovery_store = match &config.postgres {
            Some(target) => BenchStore::postgres(target, "recovery"),
            None => BenchStore::sqlite()?,
        };
        recovery_scenarios(&recovery_store, handler_address, config, &mut rows).await?;
        recovery_store.drop_schema().await;
    }
    if config.runs("memory") {
        memory_scenarios(handler_address, config, &mut rows).await?;
    }
    rows.push(Row {
        scenario: "read-side lag p50/p99, read-side throughput".into(),
        figure: "not measured: read sides are not built yet".into(),
        ratio: String::new(),
        target: "p99 ≤ 100 ms".into(),
        verdict: Verdict::Informational,
    });
    rows.push(Row {
        scenario: "3 nodes vs 1 node".into(),
        figure: "not measured: clustering is not built yet".into(),
        ratio: String::new(),
        target: String::new(),
        verdict: Verdict::Informational,
    });

    echo.stop().await?;
    handler.stop().await?;
    Ok(rows)
}

async fn write_scenarios(
    store: &BenchStore,
    handler_address: SocketAddr,
    handler_channels: &[Channel],
    ceiling: &LoadResult,
    echo: &LoadResult,
    config: &BenchConfig,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let cos = start_cos(&store.environment, handler_address, &[]).await?;
    let cos_channels = channels(cos.address, config.connections).await?;
    let write = write_load(&cos_channels, config, spread_entity).await;
    let ratio = write.throughput() / ceiling.throughput().max(1.0);
    let is_postgres = store.name == "postgres";
    rows.push(Row {
        scenario: format!(
            "write path on {} ({} clients, {} entities)",
            store.name, config.concurrency, config.entities
        ),
        figure: describe(&write),
        ratio: format!("{ratio:.2} × handler ceiling"),
        target: if is_postgres {
            "≥ 0.5 ×".into()
        } else {
            String::new()
        },
        verdict: if is_postgres {
            Verdict::from_check(ratio >= 0.5)
        } else {
            Verdict::Informational
        },
    });

    if is_postgres {
        let rate = (write.throughput() / 2.0).max(1.0);
        let max_in_flight = config.concurrency * 4;
        let cos_for_rate = cos_channels.clone();
        let paced = open_loop(rate, config.duration, max_in_flight, move |sequence| {
            let mut client = ChiefOfStateServiceClient::new(
                cos_for_rate[sequence as usize % cos_for_rate.len()].clone(),
            );
            async move {
                client
                    .process_command(command_request(format!("paced-{}", sequence % 1000)))
                    .await
                    .is_ok()
            }
        })
        .await;
        let handler_for_rate = handler_channels.to_vec();
        let direct = open_loop(rate, config.duration, max_in_flight, move |sequence| {
            let client = WriteSideHandlerServiceClient::new(
                handler_for_rate[sequence as usize % handler_for_rate.len()].clone(),
            );
            direct_handler_round_trip(client)
        })
        .await;
        let p50_ratio =
            paced.percentile(0.5).as_secs_f64() / direct.percentile(0.5).as_secs_f64().max(1e-6);
        let p99_ratio =
            paced.percentile(0.99).as_secs_f64() / direct.percentile(0.99).as_secs_f64().max(1e-6);
        rows.push(Row {
            scenario: format!("write latency at half the peak rate ({rate:.0}/s), postgres"),
            figure: format!(
                "{}; direct handler at the same rate: p50 {} p99 {}",
                describe(&paced),
                millis(direct.percentile(0.5)),
                millis(direct.percentile(0.99))
            ),
            ratio: format!("p50 {p50_ratio:.2} ×, p99 {p99_ratio:.2} ×"),
            target: "p50 ≤ 2 ×, p99 ≤ 3 ×".into(),
            verdict: Verdict::from_check(p50_ratio <= 2.0 && p99_ratio <= 3.0),
        });
    }

    let get_state = get_state_load(&cos_channels, config).await;
    let ratio = get_state.throughput() / echo.throughput().max(1.0);
    rows.push(Row {
        scenario: format!("GetState of cached entities, {}", store.name),
        figure: describe(&get_state),
        ratio: format!("{ratio:.2} × echo"),
        target: "≥ 0.8 ×".into(),
        verdict: Verdict::from_check(ratio >= 0.8),
    });

    let hot = write_load(&cos_channels, config, hot_entity).await;
    rows.push(Row {
        scenario: format!(
            "one hot entity, {} ({} clients)",
            store.name, config.concurrency
        ),
        figure: describe(&hot),
        ratio: format!(
            "{:.2} × handler ceiling",
            hot.throughput() / ceiling.throughput().max(1.0)
        ),
        target: String::new(),
        verdict: Verdict::Informational,
    });
    cos.stop().await
}

/// Writes `events` events (and, when `snapshot_every` is set, the snapshots retention would keep) straight
/// into the store, in batches.
async fn seed_history(
    journal: &dyn Journal,
    key: &EntityKey,
    events: u32,
    snapshot_every: Option<u32>,
) -> anyhow::Result<()> {
    let mut revision = 0;
    while revision < events {
        let batch_end = (revision + 1_000).min(events);
        let mut encoded = Vec::new();
        let mut snapshot = None;
        for next in revision + 1..=batch_end {
            let meta = MetaData {
                entity_id: key.entity_id.as_str().to_string(),
                revision_number: next,
                ..MetaData::default()
            };
            let wrapper = EventWrapper {
                event: Some(counter_any(1)),
                resulting_state: Some(counter_any(u64::from(next))),
                meta: Some(meta.clone()),
            };
            encoded.push(EncodedEvent {
                revision: next,
                payload: wrapper.encode_to_vec(),
            });
            if snapshot_every.is_some_and(|every| next % every == 0) {
                let state = StateWrapper {
                    state: Some(counter_any(u64::from(next))),
                    meta: Some(meta),
                };
                snapshot = Some(SnapshotWrite {
                    revision: next,
                    payload: state.encode_to_vec(),
                    delete_snapshots_before: next.saturating_sub(100),
                    delete_events_through: None,
                });
            }
        }
        journal
            .append_atomically(&[AppendRequest {
                key: key.clone(),
                expected_revision: revision,
                shard: 0,
                events: encoded,
                snapshot,
            }])
            .await?;
        revision = batch_end;
    }
    Ok(())
}

async fn recovery_scenarios(
    store: &BenchStore,
    handler_address: SocketAddr,
    config: &BenchConfig,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let journal = store.open().await?;
    let default_type = EntityType::parse(EntityType::DEFAULT_NAME)?;
    let cases = [
        ("long-history-plain", None),
        ("long-history-snapshots", Some(100)),
    ];
    for (entity_id, snapshot_every) in cases {
        let key = EntityKey {
            entity_type: default_type.clone(),
            entity_id: EntityId::parse(entity_id)?,
        };
        seed_history(
            journal.as_ref(),
            &key,
            config.recovery_events,
            snapshot_every,
        )
        .await?;
    }
    journal.close().await;

    let cos = start_cos(&store.environment, handler_address, &[]).await?;
    let mut client = ChiefOfStateServiceClient::connect(format!("http://{}", cos.address)).await?;
    // Warm the connection and the store's pool so the timing below is recovery, not connection set-up.
    let _ = client
        .get_state(GetStateRequest {
            entity_id: "warm-up".into(),
        })
        .await;
    for (entity_id, snapshot_every) in cases {
        let started = Instant::now();
        let state = client
            .get_state(GetStateRequest {
                entity_id: entity_id.into(),
            })
            .await?
            .into_inner();
        let recovery = started.elapsed();
        let started = Instant::now();
        client
            .get_state(GetStateRequest {
                entity_id: entity_id.into(),
            })
            .await?;
        let cached = started.elapsed();
        let revision = state.meta.map_or(0, |meta| meta.revision_number);
        anyhow::ensure!(
            revision == config.recovery_events,
            "recovered revision {revision}, expected {}",
            config.recovery_events
        );
        rows.push(Row {
            scenario: format!(
                "recovery of an entity with {} events, snapshots {}, {}",
                config.recovery_events,
                if snapshot_every.is_some() {
                    "on"
                } else {
                    "off"
                },
                store.name
            ),
            figure: format!(
                "first GetState {} (then {} cached)",
                millis(recovery),
                millis(cached)
            ),
            ratio: format!(
                "{:.1} × a cached GetState",
                recovery.as_secs_f64() / cached.as_secs_f64().max(1e-6)
            ),
            target: "at most one snapshot + later events read".into(),
            verdict: Verdict::Met,
        });
    }
    cos.stop().await
}

/// Touches entities `from..to` with GetState (each starts and stays live until passivated).
async fn touch_entities(
    address: SocketAddr,
    config: &BenchConfig,
    from: usize,
    to: usize,
) -> anyhow::Result<()> {
    let cos = channels(address, config.connections).await?;
    let next = Arc::new(AtomicUsize::new(from));
    let mut workers = Vec::new();
    for worker in 0..config.concurrency {
        let mut client = ChiefOfStateServiceClient::new(cos[worker % cos.len()].clone());
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= to {
                    break;
                }
                let _not_found = client
                    .get_state(GetStateRequest {
                        entity_id: format!("touched-{index}"),
                    })
                    .await;
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    Ok(())
}

async fn memory_scenarios(
    handler_address: SocketAddr,
    config: &BenchConfig,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let store = BenchStore::sqlite()?;
    let unbounded = [
        ("COS_MAX_ACTIVE_ENTITIES", "100000000"),
        ("COS_PASSIVATION_IDLE_TIMEOUT", "off"),
    ];
    let cos = start_cos(&store.environment, handler_address, &unbounded).await?;
    touch_entities(cos.address, config, 0, 100).await?;
    let baseline = cos.rss_bytes()?;
    let mut touched = 100;
    for &sample in &config.memory_samples {
        touch_entities(cos.address, config, touched, touched + sample).await?;
        touched += sample;
        let rss = cos.rss_bytes()?;
        let per_entity = rss.saturating_sub(baseline) as f64 / touched as f64;
        let under_limit = sample < 100_000 || rss < 1 << 30;
        rows.push(Row {
            scenario: format!("memory with {touched} live entities"),
            figure: format!(
                "RSS {:.0} MiB ({:.0} MiB before); {per_entity:.0} bytes per entity",
                mib(rss),
                mib(baseline)
            ),
            ratio: String::new(),
            target: "100 000 live entities < 1 GiB".into(),
            verdict: if sample >= 100_000 {
                Verdict::from_check(under_limit)
            } else {
                Verdict::Informational
            },
        });
    }
    cos.stop().await?;

    let store = BenchStore::sqlite()?;
    let cos = start_cos(&store.environment, handler_address, &[]).await?;
    let started = Instant::now();
    touch_entities(cos.address, config, 0, config.distinct_entities).await?;
    let rss = cos.rss_bytes()?;
    rows.push(Row {
        scenario: format!(
            "{} distinct entities touched, default passivation",
            config.distinct_entities
        ),
        figure: format!(
            "RSS {:.0} MiB after {:.1} s",
            mib(rss),
            started.elapsed().as_secs_f64()
        ),
        ratio: String::new(),
        target: "< 1.5 GiB".into(),
        verdict: Verdict::from_check(rss < 3 << 29),
    });
    cos.stop().await
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
