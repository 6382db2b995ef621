-- Counts operators' moves of a read side's offset (restart, skip). A worker's offset write is a
-- compare-and-set on (offset, epoch): a restart back to the very offset a worker started from still makes
-- that worker's pending write fail, so a restart is never undone.

ALTER TABLE cos_read_side_positions ADD COLUMN IF NOT EXISTS epoch BIGINT NOT NULL DEFAULT 0;
