-- When a key's secret was last set (made or rotated), by the database's clock: a gateway flooded with unknown
-- keys keeps the set of key hashes and reads what changed since its last read by it (docs/tenancy.md,
-- "A flood of unknown keys"). Keys made before this migration have none: the set's first load reads every key.
ALTER TABLE api_keys ADD COLUMN hashed_at REAL;
CREATE INDEX api_keys_hashed_at ON api_keys (hashed_at);
