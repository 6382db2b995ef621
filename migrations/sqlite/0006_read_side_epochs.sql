-- Counts operators' moves of a read side's offset (see the PostgreSQL migration).

ALTER TABLE cos_read_side_positions ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
