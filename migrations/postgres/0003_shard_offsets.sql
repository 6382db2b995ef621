-- Per-shard, gap-free, commit-ordered event numbering for read sides. Each append takes its shard's counter
-- row (a row lock held to commit), so a transaction that numbers later cannot commit earlier: a read side
-- that reads a shard by offset can never skip an event that commits late.

CREATE TABLE IF NOT EXISTS cos_shard_offsets (
    shard       INTEGER NOT NULL PRIMARY KEY,
    last_offset BIGINT  NOT NULL
);

ALTER TABLE cos_journal ADD COLUMN IF NOT EXISTS shard_offset BIGINT;

-- Number what is already stored, oldest first.
UPDATE cos_journal AS journal SET shard_offset = numbered.offset_in_shard
FROM (
    SELECT entity_type, entity_id, revision,
           ROW_NUMBER() OVER (PARTITION BY shard ORDER BY written_at, entity_type, entity_id, revision) AS offset_in_shard
    FROM cos_journal
) AS numbered
WHERE journal.entity_type = numbered.entity_type AND journal.entity_id = numbered.entity_id
  AND journal.revision = numbered.revision AND journal.shard_offset IS NULL;

INSERT INTO cos_shard_offsets (shard, last_offset)
SELECT shard, MAX(shard_offset) FROM cos_journal GROUP BY shard
ON CONFLICT (shard) DO NOTHING;

CREATE UNIQUE INDEX IF NOT EXISTS cos_journal_shard_offset ON cos_journal (shard, shard_offset);
