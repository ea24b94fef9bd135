-- When a key's secret was last set (made or rotated), by the database's clock: a gateway flooded with unknown
-- keys keeps the set of key hashes and reads what changed since its last read by it (docs/tenancy.md,
-- "A flood of unknown keys"). The default stamps the keys a replica of the previous version makes during a
-- rolling upgrade (and every key made before this migration, with the time it ran).
ALTER TABLE api_keys ADD COLUMN hashed_at DOUBLE PRECISION DEFAULT (extract(epoch from clock_timestamp())::double precision);
CREATE INDEX api_keys_hashed_at ON api_keys (hashed_at);
