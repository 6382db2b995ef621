//! The PostgreSQL journal: the store for clusters. Tables live in `COS_DB_SCHEMA`, created and migrated on
//! boot from `migrations/postgres`.

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use crate::domain::{EntityKey, Revision};
use crate::settings::PostgresSettings;
use crate::store::{AppendRequest, Journal, StoreError, StoredRow, now_epoch_millis};

/// Longest a single statement may run (PostgreSQL `statement_timeout`): a stalled database fails writes
/// instead of holding entities forever.
const STATEMENT_TIMEOUT: &str = "30s";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// A journal and snapshot store in one PostgreSQL schema.
pub struct PostgresJournal {
    pool: PgPool,
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
        Ok(Self { pool })
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

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|database_error| database_error.is_unique_violation())
}

fn store_error(error: sqlx::Error) -> StoreError {
    if is_unique_violation(&error) {
        StoreError::Conflict(error.to_string())
    } else {
        StoreError::Unavailable(error.to_string())
    }
}

/// Why writing one batch failed.
enum WriteFailure {
    /// An entity's head was not at the expected revision.
    Stale(String),
    Database(sqlx::Error),
}

impl From<sqlx::Error> for WriteFailure {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error)
    }
}

impl WriteFailure {
    fn into_store_error(self) -> StoreError {
        match self {
            Self::Stale(reason) => StoreError::Conflict(reason),
            Self::Database(error) => store_error(error),
        }
    }

    /// A failure caused by the request's own data (conflict, bad value), not by the database being down.
    fn is_request_specific(&self) -> bool {
        match self {
            Self::Stale(_) => true,
            Self::Database(error) => error.as_database_error().is_some(),
        }
    }
}

fn revision_from_row(value: i64) -> Result<Revision, StoreError> {
    Revision::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("revision {value} out of range")))
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

/// Moves every entity's head from its expected revision to its new one: one INSERT for new entities (the key
/// refuses a second creator) and one compare-and-set UPDATE for the others.
async fn advance_heads(
    transaction: &mut Transaction<'_, Postgres>,
    requests: &[AppendRequest],
) -> Result<(), WriteFailure> {
    let (created, advanced): (Vec<&AppendRequest>, Vec<&AppendRequest>) = requests
        .iter()
        .partition(|request| request.expected_revision == 0);
    if !created.is_empty() {
        sqlx::query(
            "INSERT INTO cos_entity_heads (entity_type, entity_id, revision) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[])",
        )
        .bind(
            created
                .iter()
                .map(|r| r.key.entity_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            created
                .iter()
                .map(|r| r.key.entity_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            created
                .iter()
                .map(|r| i64::from(r.new_revision()))
                .collect::<Vec<_>>(),
        )
        .execute(&mut **transaction)
        .await?;
    }
    if !advanced.is_empty() {
        let updated = sqlx::query(
            "UPDATE cos_entity_heads AS head SET revision = moves.new_revision \
             FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[]) \
             AS moves(entity_type, entity_id, expected_revision, new_revision) \
             WHERE head.entity_type = moves.entity_type AND head.entity_id = moves.entity_id \
             AND head.revision = moves.expected_revision",
        )
        .bind(
            advanced
                .iter()
                .map(|r| r.key.entity_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            advanced
                .iter()
                .map(|r| r.key.entity_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            advanced
                .iter()
                .map(|r| i64::from(r.expected_revision))
                .collect::<Vec<_>>(),
        )
        .bind(
            advanced
                .iter()
                .map(|r| i64::from(r.new_revision()))
                .collect::<Vec<_>>(),
        )
        .execute(&mut **transaction)
        .await?;
        if updated.rows_affected() != advanced.len() as u64 {
            return Err(WriteFailure::Stale(format!(
                "{} of {} entities were not at the expected revision",
                advanced.len() as u64 - updated.rows_affected(),
                advanced.len()
            )));
        }
    }
    Ok(())
}

async fn insert_events(
    transaction: &mut Transaction<'_, Postgres>,
    requests: &[AppendRequest],
) -> Result<(), sqlx::Error> {
    let total: usize = requests.iter().map(|request| request.events.len()).sum();
    let mut entity_types = Vec::with_capacity(total);
    let mut entity_ids = Vec::with_capacity(total);
    let mut revisions = Vec::with_capacity(total);
    let mut shards = Vec::with_capacity(total);
    let mut payloads = Vec::with_capacity(total);
    for request in requests {
        for event in &request.events {
            entity_types.push(request.key.entity_type.as_str());
            entity_ids.push(request.key.entity_id.as_str());
            revisions.push(i64::from(event.revision));
            shards.push(i32::try_from(request.shard).unwrap_or(i32::MAX));
            payloads.push(event.payload.as_slice());
        }
    }
    sqlx::query(
        "INSERT INTO cos_journal (entity_type, entity_id, revision, shard, event_payload, written_at) \
         SELECT t, i, r, s, p, $6 FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int4[], $5::bytea[]) \
         AS rows(t, i, r, s, p)",
    )
    .bind(entity_types)
    .bind(entity_ids)
    .bind(revisions)
    .bind(shards)
    .bind(payloads)
    .bind(now_epoch_millis())
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

async fn write_snapshots(
    transaction: &mut Transaction<'_, Postgres>,
    requests: &[AppendRequest],
) -> Result<(), sqlx::Error> {
    for request in requests {
        let Some(snapshot) = &request.snapshot else {
            continue;
        };
        let entity_type = request.key.entity_type.as_str();
        let entity_id = request.key.entity_id.as_str();
        sqlx::query(
            "INSERT INTO cos_snapshots (entity_type, entity_id, revision, snapshot_payload, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(entity_type)
        .bind(entity_id)
        .bind(i64::from(snapshot.revision))
        .bind(snapshot.payload.as_slice())
        .bind(now_epoch_millis())
        .execute(&mut **transaction)
        .await?;
        sqlx::query(
            "DELETE FROM cos_snapshots WHERE entity_type = $1 AND entity_id = $2 AND revision < $3",
        )
        .bind(entity_type)
        .bind(entity_id)
        .bind(i64::from(snapshot.delete_snapshots_before))
        .execute(&mut **transaction)
        .await?;
        if let Some(through) = snapshot.delete_events_through {
            sqlx::query(
                "DELETE FROM cos_journal WHERE entity_type = $1 AND entity_id = $2 AND revision <= $3",
            )
            .bind(entity_type)
            .bind(entity_id)
            .bind(i64::from(through))
            .execute(&mut **transaction)
            .await?;
        }
    }
    Ok(())
}

/// Everything one batch writes, in one transaction (or savepoint).
async fn write_batch(
    transaction: &mut Transaction<'_, Postgres>,
    requests: &[AppendRequest],
) -> Result<(), WriteFailure> {
    advance_heads(transaction, requests).await?;
    insert_events(transaction, requests).await?;
    write_snapshots(transaction, requests).await?;
    Ok(())
}

#[async_trait]
impl Journal for PostgresJournal {
    async fn append_atomically(&self, requests: &[AppendRequest]) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await.map_err(store_error)?;
        write_batch(&mut transaction, requests)
            .await
            .map_err(WriteFailure::into_store_error)?;
        transaction.commit().await.map_err(store_error)
    }

    async fn append_isolating(
        &self,
        requests: &[AppendRequest],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut transaction = self.pool.begin().await.map_err(store_error)?;
        let mut outcomes = Vec::with_capacity(requests.len());
        for request in requests {
            let mut savepoint = sqlx::Connection::begin(&mut *transaction)
                .await
                .map_err(store_error)?;
            match write_batch(&mut savepoint, std::slice::from_ref(request)).await {
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

    async fn newest_event(&self, key: &EntityKey) -> Result<Option<StoredRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT revision, event_payload FROM cos_journal WHERE entity_type = $1 AND entity_id = $2 \
             ORDER BY revision DESC LIMIT 1",
        )
        .bind(key.entity_type.as_str())
        .bind(key.entity_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(rows_to_stored(rows)?.pop())
    }

    async fn newest_snapshot(&self, key: &EntityKey) -> Result<Option<StoredRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT revision, snapshot_payload FROM cos_snapshots WHERE entity_type = $1 AND entity_id = $2 \
             ORDER BY revision DESC LIMIT 1",
        )
        .bind(key.entity_type.as_str())
        .bind(key.entity_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(rows_to_stored(rows)?.pop())
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
}
