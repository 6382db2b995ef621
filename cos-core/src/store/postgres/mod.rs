//! The PostgreSQL journal: the store for clusters. Tables live in `COS_DB_SCHEMA`, created and migrated on
//! boot from `migrations/postgres`.

use async_trait::async_trait;
use futures::future::BoxFuture;
use sqlx::Row;
use sqlx::pool::PoolConnectionMetadata;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use crate::domain::{EntityKey, Revision};
use crate::settings::PostgresSettings;
use crate::store::{
    AppendRequest, Journal, NewestRows, ShardEvent, StoreError, StoredRow, shard_event_from_row,
};

/// Longest a single statement may run (PostgreSQL `statement_timeout`): a stalled database fails writes
/// instead of holding entities forever.
const STATEMENT_TIMEOUT: &str = "30s";

/// How long a pooled connection may sit unused before it is checked (a round trip) on its next use. sqlx
/// would check every connection on every acquire, which costs each commit and recovery read one more round
/// trip to the database; a connection in steady use has just proven itself, while one idle for a while may
/// have been cut (database restart, idle timeouts in between) and is checked as before.
const PING_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// The pool's `before_acquire` hook: pings only connections idle for at least [`PING_AFTER_IDLE`]; a failed
/// ping makes the pool discard the connection and take or open another.
fn ping_if_idle(
    connection: &mut PgConnection,
    metadata: PoolConnectionMetadata,
) -> BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if metadata.idle_for >= PING_AFTER_IDLE {
            sqlx::Connection::ping(connection).await?;
        }
        Ok(true)
    })
}

mod write;

use write::{append_in_one_statement, write_batch};

mod read_sides;

use crate::store::read_sides::CompactionGuard;
use crate::store::sql_errors::{WriteFailure, is_unique_violation, revision_from_row, store_error};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// A journal and snapshot store in one PostgreSQL schema.
pub struct PostgresJournal {
    pool: PgPool,
    compaction_guard: CompactionGuard,
}

impl PostgresJournal {
    /// Connects, creates the schema if missing and applies pending migrations.
    pub async fn connect(settings: &PostgresSettings) -> Result<Self, StoreError> {
        let options = PgConnectOptions::new()
            .host(&settings.host)
            .port(settings.port)
            .username(&settings.user)
            .password(&settings.password)
            .database(&settings.database)
            // Quoted, like the CREATE SCHEMA below, so a mixed-case schema name means the same schema.
            .options([
                ("search_path", format!("\"{}\"", settings.schema)),
                ("statement_timeout", STATEMENT_TIMEOUT.to_string()),
            ])
            .application_name("chief-of-state");
        let pool = PgPoolOptions::new()
            .max_connections(settings.pool_max_size)
            .min_connections(settings.pool_min_idle)
            .idle_timeout(settings.pool_idle_timeout)
            .max_lifetime(settings.pool_max_lifetime)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .test_before_acquire(false)
            .before_acquire(ping_if_idle)
            .connect_with(options)
            .await
            .map_err(|error| {
                StoreError::Unavailable(format!(
                    "cannot connect to postgresql at {}:{}/{} as {}: {error}",
                    settings.host, settings.port, settings.database, settings.user
                ))
            })?;
        create_schema(&pool, &settings.schema).await?;
        MIGRATOR.run(&pool).await.map_err(|error| {
            StoreError::Migration(format!("schema {}: {error}", settings.schema))
        })?;
        Ok(Self {
            pool,
            compaction_guard: CompactionGuard::default(),
        })
    }
}

async fn create_schema(pool: &PgPool, schema: &str) -> Result<(), StoreError> {
    // Audited: the schema name is validated as a plain identifier by the settings (letters, digits, '_'),
    // and identifiers cannot be bound as parameters. Quoting keeps its case.
    let statement = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
    match sqlx::query(sqlx::AssertSqlSafe(statement))
        .execute(pool)
        .await
    {
        Ok(_) => Ok(()),
        // Two nodes creating the schema at once: the loser sees a unique violation, and the schema exists.
        Err(error) if is_unique_violation(&error) => Ok(()),
        Err(error) => Err(StoreError::Migration(format!(
            "cannot create schema {schema}: {error}"
        ))),
    }
}

fn rows_to_stored(rows: Vec<sqlx::postgres::PgRow>) -> Result<Vec<StoredRow>, StoreError> {
    let mut stored = Vec::with_capacity(rows.len());
    for row in rows {
        let revision: i64 = row.try_get(0).map_err(store_error)?;
        let payload: Vec<u8> = row.try_get(1).map_err(store_error)?;
        stored.push(StoredRow {
            revision: revision_from_row(revision)?,
            payload,
        });
    }
    Ok(stored)
}

impl PostgresJournal {
    /// One transaction, a savepoint per request: each request is written or refused on its own.
    async fn append_with_savepoints(
        &self,
        requests: &[&AppendRequest],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut transaction = self.pool.begin().await.map_err(store_error)?;
        let mut outcomes = Vec::with_capacity(requests.len());
        for request in requests {
            let mut savepoint = sqlx::Connection::begin(&mut *transaction)
                .await
                .map_err(store_error)?;
            let guard = self.compaction_guard.get();
            match write_batch(
                &mut savepoint,
                std::slice::from_ref(*request),
                guard.as_deref(),
            )
            .await
            {
                Ok(()) => {
                    savepoint.commit().await.map_err(store_error)?;
                    outcomes.push(Ok(()));
                }
                Err(failure) if failure.is_request_specific() => {
                    savepoint.rollback().await.map_err(store_error)?;
                    outcomes.push(Err(match failure.into_store_error() {
                        StoreError::Unavailable(reason) => StoreError::Rejected(reason),
                        other => other,
                    }));
                }
                Err(failure) => return Err(failure.into_store_error()),
            }
        }
        transaction.commit().await.map_err(store_error)?;
        Ok(outcomes)
    }
}

#[async_trait]
impl Journal for PostgresJournal {
    async fn append_atomically(&self, requests: &[AppendRequest]) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await.map_err(store_error)?;
        let guard = self.compaction_guard.get();
        write_batch(&mut transaction, requests, guard.as_deref())
            .await
            .map_err(WriteFailure::into_store_error)?;
        transaction.commit().await.map_err(store_error)
    }

    async fn append_batch(
        &self,
        requests: &[AppendRequest],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut outcomes: Vec<Option<Result<(), StoreError>>> = vec![None; requests.len()];
        // Requests without a snapshot (nearly all) go in one autocommitted statement: one round trip for
        // the whole batch, and it reports per entity whether its head moved.
        let plain: Vec<usize> = (0..requests.len())
            .filter(|&index| requests[index].snapshot.is_none())
            .collect();
        if !plain.is_empty() {
            let batch: Vec<&AppendRequest> = plain.iter().map(|&index| &requests[index]).collect();
            match append_in_one_statement(&self.pool, &batch).await {
                Ok(written) => {
                    for (&index, was_written) in plain.iter().zip(written) {
                        outcomes[index] = Some(if was_written {
                            Ok(())
                        } else {
                            Err(StoreError::Conflict(format!(
                                "{} is not at revision {}",
                                requests[index].key, requests[index].expected_revision
                            )))
                        });
                    }
                }
                Err(error) if error.as_database_error().is_some() => {
                    // Something in the data itself: find the culprit request by request below.
                }
                Err(error) => return Err(store_error(error)),
            }
        }
        let mut remaining: Vec<usize> = (0..requests.len())
            .filter(|&index| outcomes[index].is_none())
            .collect();
        // Shard counter rows are locked in shard order, as in the single statement: two concurrent batches
        // then wait for each other instead of deadlocking.
        remaining.sort_by_key(|&index| requests[index].shard);
        if !remaining.is_empty() {
            let batch: Vec<&AppendRequest> =
                remaining.iter().map(|&index| &requests[index]).collect();
            let isolated = self.append_with_savepoints(&batch).await?;
            for (index, outcome) in remaining.into_iter().zip(isolated) {
                outcomes[index] = Some(outcome);
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or(Err(StoreError::Unavailable("request not written".into())))
            })
            .collect())
    }

    async fn newest_rows(&self, key: &EntityKey) -> Result<NewestRows, StoreError> {
        let rows = sqlx::query(
            "SELECT 0::int8 AS kind, revision, payload FROM (SELECT revision, event_payload AS payload \
             FROM cos_journal WHERE entity_type = $1 AND entity_id = $2 ORDER BY revision DESC LIMIT 1) AS event \
             UNION ALL \
             SELECT 1::int8, revision, payload FROM (SELECT revision, snapshot_payload AS payload \
             FROM cos_snapshots WHERE entity_type = $1 AND entity_id = $2 ORDER BY revision DESC LIMIT 1) AS snapshot",
        )
        .bind(key.entity_type.as_str())
        .bind(key.entity_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        NewestRows::from_rows(rows)
    }

    async fn events_after(
        &self,
        key: &EntityKey,
        after: Revision,
    ) -> Result<Vec<StoredRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT revision, event_payload FROM cos_journal WHERE entity_type = $1 AND entity_id = $2 \
             AND revision > $3 ORDER BY revision",
        )
        .bind(key.entity_type.as_str())
        .bind(key.entity_id.as_str())
        .bind(i64::from(after))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows_to_stored(rows)
    }

    async fn shard_events_after(
        &self,
        shard: u32,
        after_offset: u64,
        limit: u32,
    ) -> Result<Vec<ShardEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT shard_offset, entity_type, entity_id, revision, event_payload FROM cos_journal \
             WHERE shard = $1 AND shard_offset > $2 ORDER BY shard_offset LIMIT $3",
        )
        .bind(i64::from(shard))
        .bind(i64::try_from(after_offset).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            events.push(shard_event_from_row(
                row.try_get(0).map_err(store_error)?,
                row.try_get(1).map_err(store_error)?,
                row.try_get(2).map_err(store_error)?,
                row.try_get(3).map_err(store_error)?,
                row.try_get(4).map_err(store_error)?,
            )?);
        }
        Ok(events)
    }

    async fn head_revision(&self, key: &EntityKey) -> Result<Revision, StoreError> {
        let row = sqlx::query(
            "SELECT revision FROM cos_entity_heads WHERE entity_type = $1 AND entity_id = $2",
        )
        .bind(key.entity_type.as_str())
        .bind(key.entity_id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        match row {
            Some(row) => revision_from_row(row.try_get(0).map_err(store_error)?),
            None => Ok(0),
        }
    }

    async fn snapshot_revisions(&self, key: &EntityKey) -> Result<Vec<Revision>, StoreError> {
        let rows = sqlx::query(
            "SELECT revision FROM cos_snapshots WHERE entity_type = $1 AND entity_id = $2 ORDER BY revision",
        )
        .bind(key.entity_type.as_str())
        .bind(key.entity_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        let mut revisions = Vec::with_capacity(rows.len());
        for row in rows {
            let revision: i64 = row.try_get(0).map_err(store_error)?;
            revisions.push(revision_from_row(revision)?);
        }
        Ok(revisions)
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn guard_compaction(&self, read_side_ids: Vec<String>) {
        self.compaction_guard.set(&read_side_ids);
    }
}
