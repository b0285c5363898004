-- Tenant isolation in depth: even a query that forgets `WHERE tenant_id = …` sees only the tenant of the
-- current transaction when it runs as the API's role.
--
-- scheduler_api    the API: rows of the tenant in `app.tenant_id` only (set per transaction with SET LOCAL /
--                  set_config(..., true)); no tenant set, no rows.
-- scheduler_worker the workers: every tenant (they fire all schedules), no DELETE, no DDL.
-- Both are NOLOGIN: grant them to the login roles your services use; the services SET ROLE on connect.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'scheduler_api') THEN
        CREATE ROLE scheduler_api NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'scheduler_worker') THEN
        CREATE ROLE scheduler_worker NOLOGIN;
    END IF;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON schedules, runs TO scheduler_api;
GRANT SELECT, INSERT, UPDATE ON schedules, runs TO scheduler_worker;

ALTER TABLE schedules ENABLE ROW LEVEL SECURITY;
ALTER TABLE runs ENABLE ROW LEVEL SECURITY;

CREATE POLICY schedules_tenant ON schedules TO scheduler_api
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
CREATE POLICY runs_tenant ON runs TO scheduler_api
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

CREATE POLICY schedules_worker ON schedules TO scheduler_worker USING (true) WITH CHECK (true);
CREATE POLICY runs_worker ON runs TO scheduler_worker USING (true) WITH CHECK (true);
