//! The SQL that writes batches: compare-and-set of entity heads, events, snapshots and compaction.

use sqlx::postgres::PgPool;
use sqlx::{Postgres, Row, Transaction};

use crate::store::sql_errors::WriteFailure;
use crate::store::{AppendRequest, now_epoch_millis};

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
        "WITH events AS ( \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int4[], $5::bytea[]) \
             WITH ORDINALITY AS e(t, i, r, s, p, o) \
         ), counts AS ( \
             SELECT s, COUNT(*) AS n FROM events GROUP BY s \
         ), counters AS ( \
             INSERT INTO cos_shard_offsets (shard, last_offset) SELECT s, n FROM counts ORDER BY s \
             ON CONFLICT (shard) DO UPDATE SET last_offset = cos_shard_offsets.last_offset + EXCLUDED.last_offset \
             RETURNING shard, last_offset \
         ) \
         INSERT INTO cos_journal (entity_type, entity_id, revision, shard, event_payload, written_at, shard_offset) \
         SELECT e.t, e.i, e.r, e.s, e.p, $6, \
                counters.last_offset - counts.n + ROW_NUMBER() OVER (PARTITION BY e.s ORDER BY e.o) \
         FROM events AS e JOIN counts ON counts.s = e.s JOIN counters ON counters.shard = e.s",
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
    compaction_guard: Option<&str>,
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
            // Events a guarding read side has not delivered yet stay; a later compaction takes them.
            sqlx::query(
                "DELETE FROM cos_journal WHERE entity_type = $1 AND entity_id = $2 AND revision <= $3 \
                 AND ($4::text IS NULL OR NOT EXISTS ( \
                     SELECT 1 FROM jsonb_array_elements_text($4::jsonb) AS guard(read_side_id) \
                     LEFT JOIN cos_read_side_positions AS positions \
                     ON positions.read_side_id = guard.read_side_id AND positions.shard = cos_journal.shard \
                     WHERE COALESCE(positions.shard_offset, 0) < cos_journal.shard_offset))",
            )
            .bind(entity_type)
            .bind(entity_id)
            .bind(i64::from(through))
            .bind(compaction_guard)
            .execute(&mut **transaction)
            .await?;
        }
    }
    Ok(())
}

/// Everything one batch writes, in one transaction (or savepoint).
pub(super) async fn write_batch(
    transaction: &mut Transaction<'_, Postgres>,
    requests: &[AppendRequest],
    compaction_guard: Option<&str>,
) -> Result<(), WriteFailure> {
    advance_heads(transaction, requests).await?;
    insert_events(transaction, requests).await?;
    write_snapshots(transaction, requests, compaction_guard).await?;
    Ok(())
}

/// Writes a batch of snapshot-free requests in a single autocommitted statement: heads are created or moved
/// compare-and-set, and only the events of entities whose head moved are inserted. Returns, per request,
/// whether it was written (`false`: its entity was not at the expected revision).
pub(super) async fn append_in_one_statement(
    pool: &PgPool,
    requests: &[&AppendRequest],
) -> Result<Vec<bool>, sqlx::Error> {
    let total_events: usize = requests.iter().map(|request| request.events.len()).sum();
    let mut event_types = Vec::with_capacity(total_events);
    let mut event_ids = Vec::with_capacity(total_events);
    let mut revisions = Vec::with_capacity(total_events);
    let mut shards = Vec::with_capacity(total_events);
    let mut payloads = Vec::with_capacity(total_events);
    for request in requests {
        for event in &request.events {
            event_types.push(request.key.entity_type.as_str());
            event_ids.push(request.key.entity_id.as_str());
            revisions.push(i64::from(event.revision));
            shards.push(i32::try_from(request.shard).unwrap_or(i32::MAX));
            payloads.push(event.payload.as_slice());
        }
    }
    let rows = sqlx::query(
        "WITH moves AS ( \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[]) \
             AS m(entity_type, entity_id, expected_revision, new_revision) \
         ), created AS ( \
             INSERT INTO cos_entity_heads (entity_type, entity_id, revision) \
             SELECT entity_type, entity_id, new_revision FROM moves WHERE expected_revision = 0 \
             ON CONFLICT DO NOTHING \
             RETURNING entity_type, entity_id \
         ), advanced AS ( \
             UPDATE cos_entity_heads AS head SET revision = moves.new_revision FROM moves \
             WHERE moves.expected_revision > 0 AND head.entity_type = moves.entity_type \
             AND head.entity_id = moves.entity_id AND head.revision = moves.expected_revision \
             RETURNING head.entity_type, head.entity_id \
         ), written AS ( \
             SELECT entity_type, entity_id FROM created UNION ALL SELECT entity_type, entity_id FROM advanced \
         ), events AS ( \
             SELECT e.* FROM UNNEST($5::text[], $6::text[], $7::int8[], $8::int4[], $9::bytea[]) \
             WITH ORDINALITY AS e(t, i, r, s, p, o) \
             JOIN written ON written.entity_type = e.t AND written.entity_id = e.i \
         ), counts AS ( \
             SELECT s, COUNT(*) AS n FROM events GROUP BY s \
         ), counters AS ( \
             INSERT INTO cos_shard_offsets (shard, last_offset) SELECT s, n FROM counts ORDER BY s \
             ON CONFLICT (shard) DO UPDATE SET last_offset = cos_shard_offsets.last_offset + EXCLUDED.last_offset \
             RETURNING shard, last_offset \
         ), inserted AS ( \
             INSERT INTO cos_journal (entity_type, entity_id, revision, shard, event_payload, written_at, shard_offset) \
             SELECT e.t, e.i, e.r, e.s, e.p, $10, \
                    counters.last_offset - counts.n + ROW_NUMBER() OVER (PARTITION BY e.s ORDER BY e.o) \
             FROM events AS e JOIN counts ON counts.s = e.s JOIN counters ON counters.shard = e.s \
             RETURNING 1 \
         ) \
         SELECT entity_type, entity_id FROM written",
    )
    .bind(requests.iter().map(|r| r.key.entity_type.as_str()).collect::<Vec<_>>())
    .bind(requests.iter().map(|r| r.key.entity_id.as_str()).collect::<Vec<_>>())
    .bind(requests.iter().map(|r| i64::from(r.expected_revision)).collect::<Vec<_>>())
    .bind(requests.iter().map(|r| i64::from(r.new_revision())).collect::<Vec<_>>())
    .bind(event_types)
    .bind(event_ids)
    .bind(revisions)
    .bind(shards)
    .bind(payloads)
    .bind(now_epoch_millis())
    .fetch_all(pool)
    .await?;
    let mut written = std::collections::HashSet::with_capacity(rows.len());
    for row in rows {
        let entity_type: String = row.try_get(0)?;
        let entity_id: String = row.try_get(1)?;
        written.insert((entity_type, entity_id));
    }
    Ok(requests
        .iter()
        .map(|request| {
            written.contains(&(
                request.key.entity_type.as_str().to_string(),
                request.key.entity_id.as_str().to_string(),
            ))
        })
        .collect())
}
