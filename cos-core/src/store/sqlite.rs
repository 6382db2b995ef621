//! The embedded SQLite journal: the zero-setup default for a single node. WAL mode with full fsync, so a
//! committed command survives a crash; group commit keeps that affordable.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use crate::domain::{EntityKey, Revision};
use crate::settings::SqliteSettings;
use crate::store::read_sides::CompactionGuard;
use crate::store::sql_errors::{WriteFailure, revision_from_row, store_error};
use crate::store::{
    AppendRequest, Journal, NewestRows, ShardEvent, StoreError, StoredRow, now_epoch_millis,
    shard_event_from_row,
};

mod read_sides;
mod write_gate;

use write_gate::WriteGate;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// A journal and snapshot store in one SQLite file.
pub struct SqliteJournal {
    pool: SqlitePool,
    compaction_guard: CompactionGuard,
    /// Shared with every other handle on the same file: writes take turns instead of racing for the lock.
    write_gate: WriteGate,
}

impl SqliteJournal {
    /// Opens (creating if needed) `cos.db` in the data directory and applies pending migrations.
    pub async fn open(settings: &SqliteSettings) -> Result<Self, StoreError> {
        Self::open_with(settings, SqliteSynchronous::Full, 4).await
    }

    /// A second handle on the same file for read-side workers: their offset writes do not wait for an
    /// fsync (`synchronous = NORMAL` in WAL mode survives a process crash; a power loss can only cost the
    /// last offsets, which means redelivery), so a busy read side does not hold the single write lock for an
    /// fsync per turn. Journal writes and operators' changes keep the fully synchronous handle. Writes of
    /// both handles take turns in one queue (see `write_gate`).
    pub async fn open_for_read_sides(settings: &SqliteSettings) -> Result<Self, StoreError> {
        Self::open_with(settings, SqliteSynchronous::Normal, 8).await
    }

    async fn open_with(
        settings: &SqliteSettings,
        synchronous: SqliteSynchronous,
        connections: u32,
    ) -> Result<Self, StoreError> {
        tokio::fs::create_dir_all(&settings.data_dir)
            .await
            .map_err(|error| {
                StoreError::Unavailable(format!(
                    "cannot create data directory {}: {error}",
                    settings.data_dir.display()
                ))
            })?;
        let file = settings.database_file();
        let options = SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(connections)
            .connect_with(options)
            .await
            .map_err(|error| {
                StoreError::Unavailable(format!("cannot open {}: {error}", file.display()))
            })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|error| StoreError::Migration(format!("{}: {error}", file.display())))?;
        Ok(Self {
            pool,
            compaction_guard: CompactionGuard::default(),
            write_gate: WriteGate::for_file(&file),
        })
    }
}

fn rows_to_stored(rows: Vec<SqliteRow>) -> Result<Vec<StoredRow>, StoreError> {
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

/// Moves the entity's head from its expected revision to its new one (compare-and-set).
async fn advance_head(
    transaction: &mut Transaction<'_, Sqlite>,
    request: &AppendRequest,
) -> Result<(), WriteFailure> {
    let entity_type = request.key.entity_type.as_str();
    let entity_id = request.key.entity_id.as_str();
    let new_revision = i64::from(request.new_revision());
    if request.expected_revision == 0 {
        sqlx::query(
            "INSERT INTO cos_entity_heads (entity_type, entity_id, revision) VALUES (?, ?, ?)",
        )
        .bind(entity_type)
        .bind(entity_id)
        .bind(new_revision)
        .execute(&mut **transaction)
        .await?;
        return Ok(());
    }
    let updated = sqlx::query(
        "UPDATE cos_entity_heads SET revision = ? WHERE entity_type = ? AND entity_id = ? AND revision = ?",
    )
    .bind(new_revision)
    .bind(entity_type)
    .bind(entity_id)
    .bind(i64::from(request.expected_revision))
    .execute(&mut **transaction)
    .await?;
    if updated.rows_affected() != 1 {
        return Err(WriteFailure::Stale(format!(
            "{} is not at revision {}",
            request.key, request.expected_revision
        )));
    }
    Ok(())
}

async fn write_request(
    transaction: &mut Transaction<'_, Sqlite>,
    request: &AppendRequest,
    written_at: i64,
    compaction_guard: Option<&str>,
) -> Result<(), WriteFailure> {
    advance_head(transaction, request).await?;
    let entity_type = request.key.entity_type.as_str();
    let entity_id = request.key.entity_id.as_str();
    let count = i64::try_from(request.events.len()).unwrap_or(i64::MAX);
    let last_offset: i64 = sqlx::query(
        "INSERT INTO cos_shard_offsets (shard, last_offset) VALUES (?, ?) \
         ON CONFLICT (shard) DO UPDATE SET last_offset = last_offset + excluded.last_offset \
         RETURNING last_offset",
    )
    .bind(i64::from(request.shard))
    .bind(count)
    .fetch_one(&mut **transaction)
    .await?
    .try_get(0)?;
    let mut shard_offset = last_offset - count;
    for event in &request.events {
        shard_offset += 1;
        sqlx::query(
            "INSERT INTO cos_journal (entity_type, entity_id, revision, shard, event_payload, written_at, \
             shard_offset) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(entity_type)
        .bind(entity_id)
        .bind(i64::from(event.revision))
        .bind(i64::from(request.shard))
        .bind(event.payload.as_slice())
        .bind(written_at)
        .bind(shard_offset)
        .execute(&mut **transaction)
        .await?;
    }
    let Some(snapshot) = &request.snapshot else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO cos_snapshots (entity_type, entity_id, revision, snapshot_payload, created_at) \
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(entity_type)
    .bind(entity_id)
    .bind(i64::from(snapshot.revision))
    .bind(snapshot.payload.as_slice())
    .bind(written_at)
    .execute(&mut **transaction)
    .await?;
    sqlx::query(
        "DELETE FROM cos_snapshots WHERE entity_type = ? AND entity_id = ? AND revision < ?",
    )
    .bind(entity_type)
    .bind(entity_id)
    .bind(i64::from(snapshot.delete_snapshots_before))
    .execute(&mut **transaction)
    .await?;
    if let Some(through) = snapshot.delete_events_through {
        // Events a guarding read side has not delivered yet stay; a later compaction takes them.
        sqlx::query(
            "DELETE FROM cos_journal WHERE entity_type = ?1 AND entity_id = ?2 AND revision <= ?3 \
             AND (?4 IS NULL OR NOT EXISTS ( \
                 SELECT 1 FROM json_each(?4) AS guard \
                 LEFT JOIN cos_read_side_positions AS positions \
                 ON positions.read_side_id = guard.value AND positions.shard = cos_journal.shard \
                 WHERE COALESCE(positions.shard_offset, 0) < cos_journal.shard_offset))",
        )
        .bind(entity_type)
        .bind(entity_id)
        .bind(i64::from(through))
        .bind(compaction_guard)
        .execute(&mut **transaction)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl Journal for SqliteJournal {
    async fn append_atomically(&self, requests: &[AppendRequest]) -> Result<(), StoreError> {
        let written_at = now_epoch_millis();
        let guard = self.compaction_guard.get();
        let _turn = self.write_gate.turn().await;
        let mut transaction = self.pool.begin().await.map_err(store_error)?;
        for request in requests {
            write_request(&mut transaction, request, written_at, guard.as_deref())
                .await
                .map_err(WriteFailure::into_store_error)?;
        }
        transaction.commit().await.map_err(store_error)
    }

    async fn append_batch(
        &self,
        requests: &[AppendRequest],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let written_at = now_epoch_millis();
        let guard = self.compaction_guard.get();
        let _turn = self.write_gate.turn().await;
        let mut transaction = self.pool.begin().await.map_err(store_error)?;
        let mut outcomes = Vec::with_capacity(requests.len());
        for request in requests {
            let mut savepoint = sqlx::Connection::begin(&mut *transaction)
                .await
                .map_err(store_error)?;
            match write_request(&mut savepoint, request, written_at, guard.as_deref()).await {
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

    async fn newest_rows(&self, key: &EntityKey) -> Result<NewestRows, StoreError> {
        let rows = sqlx::query(
            "SELECT 0 AS kind, revision, payload FROM (SELECT revision, event_payload AS payload \
             FROM cos_journal WHERE entity_type = ?1 AND entity_id = ?2 ORDER BY revision DESC LIMIT 1) \
             UNION ALL \
             SELECT 1, revision, payload FROM (SELECT revision, snapshot_payload AS payload \
             FROM cos_snapshots WHERE entity_type = ?1 AND entity_id = ?2 ORDER BY revision DESC LIMIT 1)",
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
            "SELECT revision, event_payload FROM cos_journal WHERE entity_type = ? AND entity_id = ? \
             AND revision > ? ORDER BY revision",
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
             WHERE shard = ? AND shard_offset > ? ORDER BY shard_offset LIMIT ?",
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
            "SELECT revision FROM cos_entity_heads WHERE entity_type = ? AND entity_id = ?",
        )
        .bind(key.entity_type.as_str())
        .bind(key.entity_id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        let Some(row) = row else {
            return Ok(0);
        };
        let revision: i64 = row.try_get(0).map_err(store_error)?;
        Revision::try_from(revision)
            .map_err(|_| StoreError::Corrupt(format!("revision {revision} out of range")))
    }

    async fn snapshot_revisions(&self, key: &EntityKey) -> Result<Vec<Revision>, StoreError> {
        let rows = sqlx::query(
            "SELECT revision, snapshot_payload FROM cos_snapshots WHERE entity_type = ? AND entity_id = ? \
             ORDER BY revision",
        )
        .bind(key.entity_type.as_str())
        .bind(key.entity_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(rows_to_stored(rows)?
            .into_iter()
            .map(|row| row.revision)
            .collect())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn guard_compaction(&self, read_side_ids: Vec<String>) {
        self.compaction_guard.set(&read_side_ids);
    }
}
