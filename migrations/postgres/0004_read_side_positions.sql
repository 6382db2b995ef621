-- Where each read side stands on each shard: the last shard offset its handler accepted, and whether an
-- operator paused it (a pause survives restarts and is never undone by start-up).

CREATE TABLE IF NOT EXISTS cos_read_side_positions (
    read_side_id TEXT    NOT NULL,
    shard        BIGINT  NOT NULL,
    shard_offset BIGINT  NOT NULL DEFAULT 0,
    paused       BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at   BIGINT  NOT NULL,
    PRIMARY KEY (read_side_id, shard)
);
