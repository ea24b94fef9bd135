-- The request log's listing of one tenant's requests (GET /admin/requests?tenant=..., a tenant admin's own list)
-- reads each day table by (tenant_id, ts, request_id): without that index it scanned the whole day. The request
-- log makes its new day tables with it (request_log_sql._create_sql); this gives it to the ones made before.
-- Each day table is locked against the request log's inserts till this commits (they wait and are retried); a
-- log of millions of rows can pass the 30 s statement timeout: build its indexes first with CREATE INDEX
-- CONCURRENTLY IF NOT EXISTS <table>_tenant ON <table> (tenant_id, ts, request_id), then this finds them made.
DO $$
DECLARE
    day_table text;
BEGIN
    FOR day_table IN SELECT tablename FROM pg_tables
                     WHERE schemaname = current_schema() AND tablename ~ '^aigw_request_log_d[0-9]+$' LOOP
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (tenant_id, ts, request_id)',
                       day_table || '_tenant', day_table);
    END LOOP;
END
$$
