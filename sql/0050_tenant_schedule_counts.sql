-- The schedule quota without counting rows: one counter row per tenant, kept by statement triggers on
-- schedules in the same transaction as the rows it counts, so it is exact on every path (API create, bulk
-- create, delete, a manual SQL load, TRUNCATE) and rolls back with them.
--
-- The quota itself is the API's setting (TENANT_MAX_SCHEDULES): a transaction that sets `app.max_schedules`
-- is refused (SQLSTATE 23514, constraint tenant_schedule_quota) when its inserts take the tenant past it.
-- Concurrent creates of one tenant queue only on the counter row, and only from the end of their INSERT to
-- their commit: no advisory lock held across the whole request, no count(*) growing with the tenant.

CREATE TABLE tenant_schedule_counts (
    tenant_id  text   PRIMARY KEY,
    schedules  bigint NOT NULL DEFAULT 0 CHECK (schedules >= 0)
);

INSERT INTO tenant_schedule_counts (tenant_id, schedules)
SELECT tenant_id, count(*) FROM schedules GROUP BY tenant_id;

-- SECURITY DEFINER: the API's role reads its own tenant's counter (for list totals) but cannot write it.
CREATE FUNCTION tenant_schedule_counts_on_insert() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    quota bigint := NULLIF(current_setting('app.max_schedules', true), '')::bigint;
    over record;
BEGIN
    -- Tenants in a fixed order, so that two multi-tenant statements lock counter rows in the same order.
    WITH added AS (
        INSERT INTO tenant_schedule_counts AS c (tenant_id, schedules)
        SELECT tenant_id, count(*) FROM new_rows GROUP BY tenant_id ORDER BY tenant_id
        ON CONFLICT (tenant_id) DO UPDATE SET schedules = c.schedules + EXCLUDED.schedules
        RETURNING c.tenant_id, c.schedules)
    SELECT tenant_id, schedules INTO over FROM added WHERE quota IS NOT NULL AND schedules > quota LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'tenant % would have % schedules, more than its limit of %', over.tenant_id,
              over.schedules, quota
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenant_schedule_quota', TABLE = 'schedules';
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION tenant_schedule_counts_on_delete() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    UPDATE tenant_schedule_counts AS c SET schedules = c.schedules - d.n
      FROM (SELECT tenant_id, count(*) AS n FROM old_rows GROUP BY tenant_id ORDER BY tenant_id) AS d
     WHERE c.tenant_id = d.tenant_id;
    RETURN NULL;
END
$$;

CREATE FUNCTION tenant_schedule_counts_on_truncate() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    DELETE FROM tenant_schedule_counts;
    RETURN NULL;
END
$$;

CREATE TRIGGER schedules_count_insert AFTER INSERT ON schedules
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION tenant_schedule_counts_on_insert();
CREATE TRIGGER schedules_count_delete AFTER DELETE ON schedules
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION tenant_schedule_counts_on_delete();
CREATE TRIGGER schedules_count_truncate AFTER TRUNCATE ON schedules
    FOR EACH STATEMENT EXECUTE FUNCTION tenant_schedule_counts_on_truncate();

-- A schedule never changes tenant (the API cannot express it); refuse it, as the counters would drift.
CREATE FUNCTION schedules_keep_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a schedule cannot move to another tenant' USING ERRCODE = 'check_violation';
END
$$;
CREATE TRIGGER schedules_keep_tenant AFTER UPDATE OF tenant_id ON schedules
    FOR EACH ROW WHEN (OLD.tenant_id IS DISTINCT FROM NEW.tenant_id) EXECUTE FUNCTION schedules_keep_tenant();

ALTER TABLE tenant_schedule_counts ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON tenant_schedule_counts TO scheduler_api;
CREATE POLICY tenant_schedule_counts_tenant ON tenant_schedule_counts TO scheduler_api
    USING (tenant_id = current_setting('app.tenant_id', true));

-- Keyset pagination of one tenant's list (sql/0001's schedules_tenant_list_idx) already has the order it
-- needs: (tenant_id, created_at, id).
