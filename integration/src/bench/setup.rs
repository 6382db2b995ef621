//! Starting what a scenario needs: Chief of State processes over a fresh store, and gRPC channels to them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cos_core::settings::{PostgresSettings, SqliteSettings};
use cos_core::store::Journal;
use cos_core::store::postgres::PostgresJournal;
use cos_core::store::sqlite::SqliteJournal;
use tonic::transport::Channel;

use super::config::PostgresTarget;
use super::process::{ChildProcess, free_port, sibling_binary};

/// Channels spread over several connections, used round-robin by the workers.
pub(crate) async fn channels(address: SocketAddr, count: usize) -> anyhow::Result<Vec<Channel>> {
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

pub(crate) fn cos_environment(
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
        // Quiet by default; a `LOG_LEVEL` given to the benchmark reaches the nodes, for diagnosis.
        (
            "LOG_LEVEL".into(),
            std::env::var("LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
        ),
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

pub(crate) async fn start_cos(
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
pub(crate) struct BenchStore {
    pub(crate) name: &'static str,
    pub(crate) environment: Vec<(String, String)>,
    postgres: Option<PostgresSettings>,
    sqlite: Option<SqliteSettings>,
    _directory: Option<tempfile::TempDir>,
}

impl BenchStore {
    pub(crate) fn postgres(target: &PostgresTarget, label: &str) -> Self {
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

    pub(crate) fn sqlite() -> anyhow::Result<Self> {
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

    /// The PostgreSQL settings of this store, if it is PostgreSQL.
    pub(crate) fn postgres_settings(&self) -> Option<&PostgresSettings> {
        self.postgres.as_ref()
    }

    pub(crate) async fn open(&self) -> anyhow::Result<Arc<dyn Journal>> {
        if let Some(settings) = &self.postgres {
            return Ok(Arc::new(PostgresJournal::connect(settings).await?));
        }
        let settings = self.sqlite.as_ref().context("store without settings")?;
        Ok(Arc::new(SqliteJournal::open(settings).await?))
    }

    /// Drops a PostgreSQL benchmark schema.
    pub(crate) async fn drop_schema(&self) {
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
