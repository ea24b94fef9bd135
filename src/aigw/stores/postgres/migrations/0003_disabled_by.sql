-- Who disabled a project or key: 'master' (the master key), or the id of the tenant admin key that did.
-- A tenant admin cannot enable again what the master key disabled. Rows disabled before this migration
-- have no record of who did it: they count as the master's (least privilege; the master may enable them).
ALTER TABLE projects ADD COLUMN disabled_by TEXT;
ALTER TABLE api_keys ADD COLUMN disabled_by TEXT;
UPDATE projects SET disabled_by = 'master' WHERE enabled = 0;
UPDATE api_keys SET disabled_by = 'master' WHERE enabled = 0;
