//! Where the tests find PostgreSQL: `COS_TEST_PG_HOST`, `COS_TEST_PG_PORT`, `COS_TEST_PG_USER`,
//! `COS_TEST_PG_DB` (defaults 127.0.0.1, 5432, postgres, postgres), as set up by `scripts/test.sh`.
//! Every test gets its own schema, so tests never see each other's rows.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cos_core::settings::PostgresSettings;

/// Connection facts of the test PostgreSQL server.
#[derive(Debug, Clone)]
pub struct TestPostgres {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
}

impl TestPostgres {
    /// Reads the test server's address from the environment.
    pub fn from_env() -> Self {
        let variable =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
        Self {
            host: variable("COS_TEST_PG_HOST", "127.0.0.1"),
            port: variable("COS_TEST_PG_PORT", "5432").parse().unwrap_or(5432),
            user: variable("COS_TEST_PG_USER", "postgres"),
            database: variable("COS_TEST_PG_DB", "postgres"),
        }
    }

    /// Settings for a fresh, uniquely named schema.
    pub fn settings_for_new_schema(&self) -> PostgresSettings {
        PostgresSettings {
            host: self.host.clone(),
            port: self.port,
            database: self.database.clone(),
            schema: unique_schema_name(),
            user: self.user.clone(),
            password: "unused-with-trust-auth".to_string(),
            pool_max_size: 5,
            pool_min_idle: 1,
            pool_idle_timeout: Duration::from_secs(60),
            pool_max_lifetime: Duration::from_secs(120),
        }
    }

    /// The `COS_DB_*` variables pointing a node at `schema`.
    pub fn environment(&self, schema: &str) -> Vec<(String, String)> {
        vec![
            ("COS_STORE".into(), "postgres".into()),
            ("COS_DB_HOST".into(), self.host.clone()),
            ("COS_DB_PORT".into(), self.port.to_string()),
            ("COS_DB_USER".into(), self.user.clone()),
            ("COS_DB_NAME".into(), self.database.clone()),
            ("COS_DB_SCHEMA".into(), schema.to_string()),
        ]
    }
}

/// A schema name unique across the test processes running at the same time.
pub fn unique_schema_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    format!(
        "cos_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}
