-- A rotated key's previous secret may keep working for a grace period (POST /admin/keys/{id}/rotate
-- with grace_s): its hash and the end of its grace. NULL: no previous secret in use.
ALTER TABLE api_keys ADD COLUMN previous_hash TEXT;
ALTER TABLE api_keys ADD COLUMN previous_until DOUBLE PRECISION;
CREATE UNIQUE INDEX api_keys_previous_hash ON api_keys (previous_hash);
