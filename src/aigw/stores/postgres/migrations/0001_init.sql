-- Tenants own projects, projects own keys; the spend ledger and its daily rollups.
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    limits TEXT NOT NULL DEFAULT '{}',
    enabled INTEGER NOT NULL DEFAULT 1,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    limits TEXT NOT NULL DEFAULT '{}',
    enabled INTEGER NOT NULL DEFAULT 1,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at DOUBLE PRECISION NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    project_id TEXT NOT NULL REFERENCES projects (id),
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    allowed_models TEXT,
    limits TEXT NOT NULL DEFAULT '{}',
    expires_at DOUBLE PRECISION,
    enabled INTEGER NOT NULL DEFAULT 1,
    role TEXT NOT NULL DEFAULT 'user',
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
);
CREATE INDEX api_keys_project ON api_keys (project_id);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE aigw_meta (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO aigw_meta (name, value) VALUES ('key_version', 0);

CREATE TABLE spend_ledger (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    ts_start DOUBLE PRECISION NOT NULL,
    ts_end DOUBLE PRECISION NOT NULL,
    day TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_prefix TEXT NOT NULL,
    model TEXT NOT NULL,
    served_model TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cost_nano BIGINT NOT NULL,
    cost_saved_nano BIGINT NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    upstream_ms DOUBLE PRECISION NOT NULL,
    overhead_ms DOUBLE PRECISION NOT NULL,
    status INTEGER NOT NULL,
    error_kind TEXT NOT NULL,
    cache_hit INTEGER NOT NULL,
    handled_by TEXT NOT NULL,
    retries INTEGER NOT NULL,
    fallbacks INTEGER NOT NULL,
    stream INTEGER NOT NULL,
    usage_source TEXT NOT NULL
);
CREATE INDEX spend_ledger_tenant_ts ON spend_ledger (tenant_id, ts_end);
CREATE INDEX spend_ledger_ts ON spend_ledger (ts_end);
CREATE INDEX spend_ledger_request ON spend_ledger (request_id);

CREATE TABLE spend_rollup (
    day TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    cache_hits BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cost_nano BIGINT NOT NULL,
    cost_saved_nano BIGINT NOT NULL,
    PRIMARY KEY (day, tenant_id, project_id, key_id, model)
);
CREATE INDEX spend_rollup_tenant_day ON spend_rollup (tenant_id, day);
CREATE INDEX spend_rollup_key_day ON spend_rollup (key_id, day);
