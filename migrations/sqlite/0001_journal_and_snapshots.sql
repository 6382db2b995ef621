-- Journal and snapshots of Chief of State (Rust), embedded single-node store. Same shape as the PostgreSQL
-- schema; payloads are protobuf bytes of EventWrapper / StateWrapper.

CREATE TABLE IF NOT EXISTS cos_journal (
    entity_type    TEXT    NOT NULL,
    entity_id      TEXT    NOT NULL,
    revision       INTEGER NOT NULL,
    shard          INTEGER NOT NULL,
    event_manifest TEXT    NOT NULL DEFAULT 'chief_of_state.v1.EventWrapper',
    event_payload  BLOB    NOT NULL,
    written_at     INTEGER NOT NULL,
    PRIMARY KEY (entity_type, entity_id, revision)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS cos_snapshots (
    entity_type       TEXT    NOT NULL,
    entity_id         TEXT    NOT NULL,
    revision          INTEGER NOT NULL,
    snapshot_manifest TEXT    NOT NULL DEFAULT 'chief_of_state.v1.StateWrapper',
    snapshot_payload  BLOB    NOT NULL,
    created_at        INTEGER NOT NULL,
    PRIMARY KEY (entity_type, entity_id, revision)
) WITHOUT ROWID;
