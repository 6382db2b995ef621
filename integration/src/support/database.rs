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

/// The local TCP ports of this process's open connections to `server_port`, read from `/proc`: lets a test
/// find (and cut, with `pg_terminate_backend`) exactly its own connections among those of parallel tests.
pub fn own_connections_to(server_port: u16) -> std::io::Result<Vec<i32>> {
    let mut socket_inodes = std::collections::HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let target = std::fs::read_link(entry?.path()).unwrap_or_default();
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
        {
            socket_inodes.insert(inode.to_string());
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let columns: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(inode)) =
                (columns.get(1), columns.get(2), columns.get(9))
            else {
                continue;
            };
            let port_of = |address: &str| {
                address
                    .rsplit(':')
                    .next()
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok())
            };
            if port_of(remote) == Some(server_port)
                && socket_inodes.contains(*inode)
                && let Some(local_port) = port_of(local)
            {
                ports.push(i32::from(local_port));
            }
        }
    }
    Ok(ports)
}
