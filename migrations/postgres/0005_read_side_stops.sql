-- Why a failure policy stopped a read side on a shard (NULL while it runs). Stored so a stopped read side
-- stays stopped across restarts until an operator resumes, restarts or skips it.

ALTER TABLE cos_read_side_positions ADD COLUMN IF NOT EXISTS stopped_reason TEXT;
