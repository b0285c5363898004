-- Run history partitioned by time, so that retention drops whole partitions instead of deleting rows.
--
-- `runs` becomes a table partitioned by RANGE (scheduled_for):
--   runs_pYYYYMMDD_HHMMSS  one per time slot, created ahead by the workers (worker/maintenance.py) and dropped
--                          when expired (RUNS_RETENTION_DAYS);
--   runs_default           what no slot covers: runs older than the oldest slot (a catch-up after a long outage)
--                          or beyond the newest, and the open runs of dropped slots, which are moved here;
--   runs_legacy            the rows of the table before this migration, [MINVALUE, the next hour), dropped like
--                          any slot once expired (only when the table had rows).
--
-- scheduled_for is the key because it is part of the occurrence: the same occurrence recorded twice has the
-- same (id, scheduled_for), so the primary key still refuses the second record. Run ids now carry the key
-- (shared/db/run_ids.py): their first 48 bits are the scheduled_for millisecond, and run_id_scheduled_from /
-- _until below turn an id into the range to look in, so a lookup by id touches one partition. Ids made
-- before (uuid5, uuid4) give the whole time range: still found, by probing every partition. (Not STRICT, so
-- that the planner inlines them and folds them for a constant id.)

CREATE FUNCTION run_id_scheduled_from(id uuid) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN substr(id::text, 15, 1) = '8'
                THEN to_timestamp(('x' || substr(id::text, 1, 8) || substr(id::text, 10, 4))::bit(48)::bigint
                                  / 1000.0::float8)
                ELSE '-infinity'::timestamptz END
$$;

CREATE FUNCTION run_id_scheduled_until(id uuid) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN substr(id::text, 15, 1) = '8'
                THEN to_timestamp((('x' || substr(id::text, 1, 8) || substr(id::text, 10, 4))::bit(48)::bigint + 1)
                                  / 1000.0::float8)
                ELSE 'infinity'::timestamptz END
$$;

DO $$
DECLARE
    idx record;
    pol record;
    grant_row record;
    cutover timestamptz;
    had_rows boolean;
    force_rls boolean;
BEGIN
    -- The old table keeps its rows, its indexes and its policies; only the names move out of the way.
    ALTER TABLE runs RENAME TO runs_legacy;
    ALTER TABLE runs_legacy RENAME CONSTRAINT runs_pkey TO runs_legacy_pkey;

    EXECUTE 'CREATE TABLE runs (LIKE runs_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE '
            'INCLUDING COMMENTS) PARTITION BY RANGE (scheduled_for)';
    ALTER TABLE runs ADD CONSTRAINT runs_pkey PRIMARY KEY (id, scheduled_for);

    -- Every other index, as earlier migrations left it, moves to the parent under its own name (a unique one
    -- without scheduled_for cannot: it would fail here, loudly).
    FOR idx IN
        SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS def
          FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
         WHERE i.indrelid = 'runs_legacy'::regclass AND NOT i.indisprimary
    LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', idx.name, 'runs_legacy_' || substr(idx.name, 6));
        EXECUTE regexp_replace(idx.def, ' ON (ONLY )?\S*runs_legacy ', ' ON runs ');
    END LOOP;
    -- Within a slot, rows arrive in scheduled_for order: a BRIN index is tiny and finds the default partition's
    -- expired rows.
    CREATE INDEX runs_scheduled_brin ON runs USING brin (scheduled_for);

    -- Row-level security and grants: the same on the parent, where every query goes.
    SELECT relforcerowsecurity INTO force_rls FROM pg_class WHERE oid = 'runs_legacy'::regclass;
    ALTER TABLE runs ENABLE ROW LEVEL SECURITY;
    IF force_rls THEN
        ALTER TABLE runs FORCE ROW LEVEL SECURITY;
    END IF;
    FOR pol IN SELECT * FROM pg_policies WHERE schemaname = current_schema() AND tablename = 'runs_legacy' LOOP
        EXECUTE format(
            'CREATE POLICY %I ON runs AS %s FOR %s TO %s%s%s',
            pol.policyname, pol.permissive, pol.cmd,
            (SELECT string_agg(CASE WHEN r = 'public' THEN 'PUBLIC' ELSE quote_ident(r) END, ', ')
               FROM unnest(pol.roles) AS r),
            CASE WHEN pol.qual IS NOT NULL THEN format(' USING (%s)', pol.qual) ELSE '' END,
            CASE WHEN pol.with_check IS NOT NULL THEN format(' WITH CHECK (%s)', pol.with_check) ELSE '' END);
    END LOOP;
    FOR grant_row IN
        SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS grantee,
               a.privilege_type
          FROM pg_class AS c, aclexplode(c.relacl) AS a
         WHERE c.oid = 'runs_legacy'::regclass AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT %s ON runs TO %s', grant_row.privilege_type, grant_row.grantee);
        -- Partitions are reached through the parent (its grants and policies); nobody reads them directly.
        EXECUTE format('REVOKE %s ON runs_legacy FROM %s', grant_row.privilege_type, grant_row.grantee);
    END LOOP;

    CREATE TABLE runs_default PARTITION OF runs DEFAULT;
    ALTER TABLE runs_default ENABLE ROW LEVEL SECURITY;

    SELECT EXISTS (SELECT FROM runs_legacy) INTO had_rows;
    IF had_rows THEN
        -- Existing rows stay where they are: the old table becomes the partition of everything before the next
        -- full hour (attaching checks that no row is later, and builds the (id, scheduled_for) key).
        SELECT date_trunc('hour', greatest(now(), max(scheduled_for)) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
               + interval '1 hour'
          INTO cutover FROM runs_legacy;
        -- Its (id) key gives way to the parent's (id, scheduled_for), which serves the same lookups.
        ALTER TABLE runs_legacy DROP CONSTRAINT runs_legacy_pkey;
        EXECUTE format('ALTER TABLE runs ATTACH PARTITION runs_legacy FOR VALUES FROM (MINVALUE) TO (%L)', cutover);
    ELSE
        DROP TABLE runs_legacy;
    END IF;
END
$$;

-- Partition maintenance, for the workers' role, which has no DDL and no DELETE of its own: these functions
-- run as their owner and do only this.

-- The partitions of runs and their bounds (NULL: unbounded, MINVALUE/MAXVALUE, or the default partition).
CREATE FUNCTION runs_partitions() RETURNS TABLE (name text, starts timestamptz, ends timestamptz, is_default boolean)
    LANGUAGE sql STABLE
AS $$
    SELECT c.relname::text,
           CASE WHEN b[1] <> 'MINVALUE' THEN trim(both '''' from b[1])::timestamptz END,
           CASE WHEN b[2] <> 'MAXVALUE' THEN trim(both '''' from b[2])::timestamptz END,
           b IS NULL
      FROM pg_inherits AS i
      JOIN pg_class AS c ON c.oid = i.inhrelid
      CROSS JOIN LATERAL (SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                              '^FOR VALUES FROM \((.+)\) TO \((.+)\)$') AS b) AS bound
     WHERE i.inhparent = 'runs'::regclass
     ORDER BY 2 NULLS LAST
$$;

-- Create the partition `name` for [starts, ends); rows of that range that went to the default partition
-- meanwhile move into it. False if a table of that name exists already.
CREATE FUNCTION runs_partition_create(name text, starts timestamptz, ends timestamptz) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
AS $$
BEGIN
    IF name !~ '^runs_p[0-9_]+$' THEN
        RAISE EXCEPTION 'not a runs partition name: %', name;
    END IF;
    IF to_regclass(quote_ident(name)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE runs INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)', name);
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', name);
    -- No run may enter the default partition between the move and the attach (which checks that none of the
    -- range is left there): writes to it wait until this commits; reads go on.
    LOCK TABLE runs_default IN EXCLUSIVE MODE;
    EXECUTE format('WITH moved AS (DELETE FROM runs_default WHERE scheduled_for >= $1 AND scheduled_for < $2 '
                   'RETURNING *) INSERT INTO %I SELECT * FROM moved', name) USING starts, ends;
    -- ATTACH, not CREATE … PARTITION OF: it takes only a SHARE UPDATE EXCLUSIVE lock on runs, so claims and
    -- reads go on meanwhile.
    EXECUTE format('ALTER TABLE runs ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', name, starts, ends);
    RETURN true;
END
$$;

-- Drop an expired partition (only one that ended in the past); its open runs (any status not final) move to
-- the default partition first, so retention never drops a run that is still to be delivered. Returns how
-- many runs were kept that way, or NULL when `name` is not such a partition.
CREATE FUNCTION runs_partition_drop(name text) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
AS $$
DECLARE
    kept bigint;
BEGIN
    IF NOT EXISTS (SELECT FROM runs_partitions() AS p
                    WHERE p.name = runs_partition_drop.name AND NOT p.is_default AND p.ends <= now()) THEN
        RETURN NULL;
    END IF;
    EXECUTE format('ALTER TABLE runs DETACH PARTITION %I', name);
    EXECUTE format('INSERT INTO runs SELECT * FROM %I WHERE status NOT IN (''SUCCEEDED'', ''FAILED'', ''CANCELLED'')',
                   name);
    GET DIAGNOSTICS kept = ROW_COUNT;
    EXECUTE format('DROP TABLE %I', name);
    RETURN kept;
END
$$;

-- Delete finished runs scheduled before `before` from the default partition (at most `max_rows`): the only
-- DELETE of retention, on a partition that holds only stragglers. Returns how many were deleted.
CREATE FUNCTION runs_default_expire(before timestamptz, max_rows integer) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
AS $$
DECLARE
    deleted bigint;
BEGIN
    DELETE FROM runs_default
     WHERE ctid IN (SELECT ctid FROM runs_default
                     WHERE scheduled_for < before AND status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
                     LIMIT max_rows);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$$;

DO $$
DECLARE
    fn text;
BEGIN
    FOREACH fn IN ARRAY ARRAY['runs_partition_create(text, timestamptz, timestamptz)', 'runs_partition_drop(text)',
                              'runs_default_expire(timestamptz, integer)']
    LOOP
        -- A SECURITY DEFINER function resolves names only in this schema (never a caller's temporary table).
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', fn, current_schema());
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO scheduler_worker', fn);
    END LOOP;
END
$$;
