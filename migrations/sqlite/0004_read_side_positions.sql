-- Where each read side stands on each shard (see the PostgreSQL migration).

CREATE TABLE IF NOT EXISTS cos_read_side_positions (
    read_side_id TEXT    NOT NULL,
    shard        INTEGER NOT NULL,
    shard_offset INTEGER NOT NULL DEFAULT 0,
    paused       INTEGER NOT NULL DEFAULT 0,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (read_side_id, shard)
) WITHOUT ROWID;
