//! Sizes and targets of a benchmark run.

use std::time::Duration;

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
    /// `COS_PASSIVATION_REST_AFTER` in the memory scenarios (the default, 2 s, in the full run).
    pub rest_after: Duration,
    /// Longest wait for a read side to deliver what was written (it also stops after 5 s without progress).
    pub read_side_wait: Duration,
    /// Scenario groups to run (`write`, `recovery`, `memory`, `readside`, `cluster`); empty means all.
    /// Baselines always run.
    pub only: Vec<String>,
}

impl BenchConfig {
    /// Whether a scenario group is selected.
    pub fn runs(&self, group: &str) -> bool {
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
            rest_after: Duration::from_millis(200),
            read_side_wait: Duration::from_secs(20),
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
            rest_after: Duration::from_secs(2),
            read_side_wait: Duration::from_secs(300),
            only: Vec::new(),
        }
    }
}
