//! [`ReadSideStore`] on the embedded SQLite store (same statements as PostgreSQL, numbered `?N` parameters).

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::SqliteJournal;
use crate::store::StoreError;
use crate::store::now_epoch_millis;
use crate::store::read_sides::{
    ReadSidePosition, ReadSideStore, offset_from_row, offset_to_row, shard_from_row,
};
use crate::store::sql_errors::store_error;

/// Reads `shard_offset, paused, stopped_reason, epoch`, starting at column `skip`.
fn position_from_row(row: &SqliteRow, skip: usize) -> Result<ReadSidePosition, StoreError> {
    Ok(ReadSidePosition {
        offset: offset_from_row(row.try_get(skip).map_err(store_error)?)?,
        paused: row.try_get(skip + 1).map_err(store_error)?,
        stopped: row.try_get(skip + 2).map_err(store_error)?,
        epoch: offset_from_row(row.try_get(skip + 3).map_err(store_error)?)?,
    })
}

#[async_trait]
impl ReadSideStore for SqliteJournal {
    async fn position(
        &self,
        read_side_id: &str,
        shard: u32,
    ) -> Result<ReadSidePosition, StoreError> {
        let row = sqlx::query(
            "SELECT shard_offset, paused, stopped_reason, epoch FROM cos_read_side_positions \
             WHERE read_side_id = ?1 AND shard = ?2",
        )
        .bind(read_side_id)
        .bind(i64::from(shard))
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        match row {
            Some(row) => position_from_row(&row, 0),
            None => Ok(ReadSidePosition::default()),
        }
    }

    async fn positions(
        &self,
        read_side_id: &str,
    ) -> Result<Vec<(u32, ReadSidePosition)>, StoreError> {
        let rows = sqlx::query(
            "SELECT shard, shard_offset, paused, stopped_reason, epoch FROM cos_read_side_positions \
             WHERE read_side_id = ?1 ORDER BY shard",
        )
        .bind(read_side_id)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        let mut positions = Vec::with_capacity(rows.len());
        for row in rows {
            let shard: i64 = row.try_get(0).map_err(store_error)?;
            positions.push((shard_from_row(shard)?, position_from_row(&row, 1)?));
        }
        Ok(positions)
    }

    async fn ensure_positions(
        &self,
        read_side_id: &str,
        num_shards: u32,
        paused: bool,
    ) -> Result<(), StoreError> {
        let _turn = self.write_gate.turn().await;
        sqlx::query(
            "WITH RECURSIVE shards(shard) AS (SELECT 0 UNION ALL SELECT shard + 1 FROM shards WHERE shard + 1 < ?2) \
             INSERT INTO cos_read_side_positions (read_side_id, shard, paused, updated_at) \
             SELECT ?1, shard, ?3, ?4 FROM shards WHERE ?2 > 0 \
             ON CONFLICT (read_side_id, shard) DO NOTHING",
        )
        .bind(read_side_id)
        .bind(i64::from(num_shards))
        .bind(paused)
        .bind(now_epoch_millis())
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn advance_offset(
        &self,
        read_side_id: &str,
        shard: u32,
        expected: u64,
        expected_epoch: u64,
        offset: u64,
    ) -> Result<bool, StoreError> {
        let _turn = self.write_gate.turn().await;
        let moved = sqlx::query(
            "INSERT INTO cos_read_side_positions (read_side_id, shard, shard_offset, updated_at) \
             VALUES (?1, ?2, ?4, ?5) ON CONFLICT (read_side_id, shard) \
             DO UPDATE SET shard_offset = excluded.shard_offset, updated_at = excluded.updated_at \
             WHERE cos_read_side_positions.shard_offset = ?3 AND cos_read_side_positions.epoch = ?6 \
             AND NOT cos_read_side_positions.paused AND cos_read_side_positions.stopped_reason IS NULL",
        )
        .bind(read_side_id)
        .bind(i64::from(shard))
        .bind(offset_to_row(expected))
        .bind(offset_to_row(offset))
        .bind(now_epoch_millis())
        .bind(offset_to_row(expected_epoch))
        .execute(&self.pool)
        .await
        .map_err(store_error)?
        .rows_affected();
        Ok(moved == 1)
    }

    async fn reset_offset(
        &self,
        read_side_id: &str,
        shard: u32,
        expected: Option<u64>,
        offset: u64,
    ) -> Result<bool, StoreError> {
        let _turn = self.write_gate.turn().await;
        let moved = sqlx::query(
            "INSERT INTO cos_read_side_positions (read_side_id, shard, shard_offset, updated_at, epoch) \
             VALUES (?1, ?2, ?4, ?5, 1) ON CONFLICT (read_side_id, shard) \
             DO UPDATE SET shard_offset = excluded.shard_offset, stopped_reason = NULL, \
             updated_at = excluded.updated_at, epoch = cos_read_side_positions.epoch + 1 \
             WHERE ?3 IS NULL OR cos_read_side_positions.shard_offset = ?3",
        )
        .bind(read_side_id)
        .bind(i64::from(shard))
        .bind(expected.map(offset_to_row))
        .bind(offset_to_row(offset))
        .bind(now_epoch_millis())
        .execute(&self.pool)
        .await
        .map_err(store_error)?
        .rows_affected();
        Ok(moved == 1)
    }

    async fn set_paused(
        &self,
        read_side_id: &str,
        shard: u32,
        paused: bool,
    ) -> Result<(), StoreError> {
        let _turn = self.write_gate.turn().await;
        sqlx::query(
            "INSERT INTO cos_read_side_positions (read_side_id, shard, paused, updated_at) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (read_side_id, shard) \
             DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at, \
             stopped_reason = CASE WHEN excluded.paused THEN cos_read_side_positions.stopped_reason END",
        )
        .bind(read_side_id)
        .bind(i64::from(shard))
        .bind(paused)
        .bind(now_epoch_millis())
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn set_stopped(
        &self,
        read_side_id: &str,
        shard: u32,
        expected: u64,
        expected_epoch: u64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let _turn = self.write_gate.turn().await;
        let stopped = sqlx::query(
            "UPDATE cos_read_side_positions SET stopped_reason = ?4, updated_at = ?5 \
             WHERE read_side_id = ?1 AND shard = ?2 AND shard_offset = ?3 AND epoch = ?6 \
             AND NOT paused AND stopped_reason IS NULL",
        )
        .bind(read_side_id)
        .bind(i64::from(shard))
        .bind(offset_to_row(expected))
        .bind(reason)
        .bind(now_epoch_millis())
        .bind(offset_to_row(expected_epoch))
        .execute(&self.pool)
        .await
        .map_err(store_error)?
        .rows_affected();
        Ok(stopped == 1)
    }

    async fn latest_offsets(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        let rows = sqlx::query("SELECT shard, last_offset FROM cos_shard_offsets ORDER BY shard")
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        let mut latest = Vec::with_capacity(rows.len());
        for row in rows {
            let shard: i64 = row.try_get(0).map_err(store_error)?;
            let offset: i64 = row.try_get(1).map_err(store_error)?;
            latest.push((shard_from_row(shard)?, offset_from_row(offset)?));
        }
        Ok(latest)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::settings::SqliteSettings;

    /// The journal's handle and the read sides' handle queue their writes in one line: an offset write
    /// waits while another writer of the file has its turn, and lands once that turn ends.
    #[tokio::test]
    async fn offset_writes_of_the_read_side_handle_wait_for_the_journal_handles_turn() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let settings = SqliteSettings {
            data_dir: directory.path().to_path_buf(),
        };
        let journal = SqliteJournal::open(&settings)
            .await
            .expect("journal handle");
        let read_sides = SqliteJournal::open_for_read_sides(&settings)
            .await
            .expect("read-side handle");
        read_sides
            .ensure_positions("orders", 1, false)
            .await
            .expect("positions");

        let journal_turn = journal.write_gate.turn().await;
        let mut offset_write = Box::pin(read_sides.advance_offset("orders", 0, 0, 0, 7));
        let waited = tokio::time::timeout(Duration::from_millis(200), &mut offset_write).await;
        assert!(
            waited.is_err(),
            "the offset write went ahead of the held turn"
        );
        drop(journal_turn);
        let moved = offset_write.await.expect("offset write");
        assert!(moved);
        let position = journal.position("orders", 0).await.expect("position");
        assert_eq!(position.offset, 7);
    }
}
