-- Why a failure policy stopped a read side on a shard (see the PostgreSQL migration).

ALTER TABLE cos_read_side_positions ADD COLUMN stopped_reason TEXT;
