-- Journal and snapshots of Chief of State (Rust). Payloads are protobuf bytes of chief_of_state.v1.EventWrapper
-- and chief_of_state.v1.StateWrapper, as in the original. The primary keys make a second writer for a revision
-- fail instead of overwriting (one writer per entity, enforced by the database).

CREATE TABLE IF NOT EXISTS cos_journal (
    entity_type    TEXT    NOT NULL,
    entity_id      TEXT    NOT NULL,
    revision       BIGINT  NOT NULL,
    shard          INTEGER NOT NULL,
    event_manifest TEXT    NOT NULL DEFAULT 'chief_of_state.v1.EventWrapper',
    event_payload  BYTEA   NOT NULL,
    written_at     BIGINT  NOT NULL,
    PRIMARY KEY (entity_type, entity_id, revision)
);

CREATE TABLE IF NOT EXISTS cos_snapshots (
    entity_type       TEXT   NOT NULL,
    entity_id         TEXT   NOT NULL,
    revision          BIGINT NOT NULL,
    snapshot_manifest TEXT   NOT NULL DEFAULT 'chief_of_state.v1.StateWrapper',
    snapshot_payload  BYTEA  NOT NULL,
    created_at        BIGINT NOT NULL,
    PRIMARY KEY (entity_type, entity_id, revision)
);
