-- The newest revision of every entity, advanced compare-and-set in the same transaction as its events. A writer
-- whose view of the entity is stale fails here even when the revision it writes was compacted away (journal
-- compaction deletes event rows, so the journal's primary key alone cannot catch such a writer).

CREATE TABLE IF NOT EXISTS cos_entity_heads (
    entity_type TEXT   NOT NULL,
    entity_id   TEXT   NOT NULL,
    revision    BIGINT NOT NULL,
    PRIMARY KEY (entity_type, entity_id)
);

INSERT INTO cos_entity_heads (entity_type, entity_id, revision)
SELECT entity_type, entity_id, MAX(revision)
FROM (
    SELECT entity_type, entity_id, revision FROM cos_journal
    UNION ALL
    SELECT entity_type, entity_id, revision FROM cos_snapshots
) AS stored
GROUP BY entity_type, entity_id
ON CONFLICT DO NOTHING;
