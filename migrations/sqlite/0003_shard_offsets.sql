-- Per-shard, gap-free event numbering for read sides (see the PostgreSQL migration). SQLite has a single
-- writer, so numbering order is commit order.

CREATE TABLE IF NOT EXISTS cos_shard_offsets (
    shard       INTEGER NOT NULL PRIMARY KEY,
    last_offset INTEGER NOT NULL
);

ALTER TABLE cos_journal ADD COLUMN shard_offset INTEGER;

UPDATE cos_journal SET shard_offset = (
    SELECT numbered.offset_in_shard FROM (
        SELECT entity_type, entity_id, revision,
               ROW_NUMBER() OVER (PARTITION BY shard ORDER BY written_at, entity_type, entity_id, revision) AS offset_in_shard
        FROM cos_journal
    ) AS numbered
    WHERE numbered.entity_type = cos_journal.entity_type AND numbered.entity_id = cos_journal.entity_id
      AND numbered.revision = cos_journal.revision
)
WHERE shard_offset IS NULL;

INSERT INTO cos_shard_offsets (shard, last_offset)
SELECT shard, MAX(shard_offset) FROM cos_journal WHERE true GROUP BY shard
ON CONFLICT (shard) DO NOTHING;

CREATE UNIQUE INDEX IF NOT EXISTS cos_journal_shard_offset ON cos_journal (shard, shard_offset);
