-- The newest revision of every entity, advanced compare-and-set with its events (see the PostgreSQL migration).

CREATE TABLE IF NOT EXISTS cos_entity_heads (
    entity_type TEXT    NOT NULL,
    entity_id   TEXT    NOT NULL,
    revision    INTEGER NOT NULL,
    PRIMARY KEY (entity_type, entity_id)
) WITHOUT ROWID;

INSERT INTO cos_entity_heads (entity_type, entity_id, revision)
SELECT entity_type, entity_id, MAX(revision)
FROM (
    SELECT entity_type, entity_id, revision FROM cos_journal
    UNION ALL
    SELECT entity_type, entity_id, revision FROM cos_snapshots
) AS stored
WHERE true
GROUP BY entity_type, entity_id
ON CONFLICT DO NOTHING;
