//! The PostgreSQL journal: the store for clusters. Tables live in `COS_DB_SCHEMA`, created and migrated on
//! boot from `migrations/postgres`.

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use crate::domain::{EntityKey, Revision};
use crate::settings::PostgresSettings;
use crate::store::{AppendRequest, Journal, StoreError, StoredRow, now_epoch_millis};

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
            .options([("search_path", settings.schema.as_str())])
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

#[async_trait]
impl Journal for PostgresJournal {
    async fn append_atomically(&self, requests: &[AppendRequest]) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await.map_err(store_error)?;
        insert_events(&mut transaction, requests)
            .await
            .map_err(store_error)?;
        write_snapshots(&mut transaction, requests)
            .await
            .map_err(store_error)?;
        transaction.commit().await.map_err(store_error)
    }

    async fn append_isolating(
        &self,
        requests: &[AppendRequest],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut transaction = self.pool.begin().await.map_err(store_error)?;
        let mut outcomes = Vec::with_capacity(requests.len());
        for request in requests {
            let single = std::slice::from_ref(request);
            let mut savepoint = sqlx::Connection::begin(&mut *transaction)
                .await
                .map_err(store_error)?;
            let written = match insert_events(&mut savepoint, single).await {
                Ok(()) => write_snapshots(&mut savepoint, single).await,
                Err(error) => Err(error),
            };
            match written {
                Ok(()) => {
                    savepoint.commit().await.map_err(store_error)?;
                    outcomes.push(Ok(()));
                }
                Err(error) if is_unique_violation(&error) => {
                    savepoint.rollback().await.map_err(store_error)?;
                    outcomes.push(Err(store_error(error)));
                }
                Err(error) => return Err(store_error(error)),
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
