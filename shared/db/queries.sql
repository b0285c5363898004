-- Every runtime SQL statement, each under a `-- name: <table>_<verb>` header and a one-line description.
-- Parameters are psycopg named placeholders; arrays use %(x)b, binary, which skips psycopg's per-element
-- text escaping (a regex per element) on the worker's hot path. Only shared/db/repository.py uses these.

-- name: schedule_get
-- One schedule of a tenant.
SELECT * FROM schedules WHERE tenant_id = %(tenant_id)s AND id = %(id)s;

-- name: schedule_get_for_update
-- One schedule of a tenant, locked until the transaction ends (a worker's claim skips it meanwhile).
SELECT * FROM schedules WHERE tenant_id = %(tenant_id)s AND id = %(id)s FOR UPDATE;

-- name: schedule_update
-- Replace a schedule's editable fields and bump its version.
UPDATE schedules
   SET name = %(name)s, description = %(description)s, tz = %(tz)s, trigger = %(trigger)s::jsonb,
       target = %(target)s::jsonb, payload = %(payload)s::jsonb, enabled = %(enabled)s,
       misfire_policy = %(misfire_policy)s, catch_up_limit = %(catch_up_limit)s, retry = %(retry)s::jsonb,
       labels = %(labels)s::jsonb, updated_at = %(now)s, version = version + 1,
       -- A FIXED_DELAY schedule waiting for its run stays parked (no overlap); its run re-arms it.
       next_run_at = CASE WHEN parked_run_id IS NOT NULL AND %(trigger)s::jsonb ->> 'type' = 'FIXED_DELAY'
                          THEN NULL ELSE %(next_run_at)s::timestamptz END,
       parked_run_id = CASE WHEN %(trigger)s::jsonb ->> 'type' = 'FIXED_DELAY' THEN parked_run_id END
 WHERE tenant_id = %(tenant_id)s AND id = %(id)s
RETURNING *;

-- name: schedule_set_webhook_secret
-- Replace a tenant's schedule's sealed webhook signing secret.
UPDATE schedules SET webhook_secret = %(webhook_secret)s, updated_at = %(now)s, version = version + 1
 WHERE tenant_id = %(tenant_id)s AND id = %(id)s
RETURNING *;

-- name: schedule_delete
-- Delete one schedule of a tenant; its run history stays.
DELETE FROM schedules WHERE tenant_id = %(tenant_id)s AND id = %(id)s RETURNING id;

-- name: schedule_list
-- One page of a tenant's schedules at an offset, oldest first, with optional filters. The offset is skipped on
-- the (tenant_id, created_at, id) index (index-only when unfiltered and the API plans with the values), then
-- the page is read from its first position: OFFSET over whole rows reads every skipped row from the table.
WITH start AS (
    SELECT created_at, id FROM schedules
     WHERE tenant_id = %(tenant_id)s
       AND (%(enabled)s::boolean IS NULL OR enabled = %(enabled)s::boolean)
       AND (%(name_prefix)s::text IS NULL OR starts_with(name, %(name_prefix)s::text))
       AND (%(labels)s::jsonb IS NULL OR labels @> %(labels)s::jsonb)
     ORDER BY created_at, id
    OFFSET %(offset)s LIMIT 1)
SELECT s.* FROM start JOIN schedules AS s ON (s.created_at, s.id) >= (start.created_at, start.id)
 WHERE s.tenant_id = %(tenant_id)s
   AND (%(enabled)s::boolean IS NULL OR s.enabled = %(enabled)s::boolean)
   AND (%(name_prefix)s::text IS NULL OR starts_with(s.name, %(name_prefix)s::text))
   AND (%(labels)s::jsonb IS NULL OR s.labels @> %(labels)s::jsonb)
 ORDER BY s.created_at, s.id
 LIMIT %(limit)s;

-- name: tenant_scope
-- Scope the current transaction to one tenant: the row-level security policies (sql/0004) read this setting.
SELECT set_config('app.tenant_id', %(tenant_id)s, true);

-- name: database_ping
-- Readiness: the database answers.
SELECT 1;

-- name: schedule_claim_due
-- Lock up to `limit` due schedules, oldest first, skipping rows other workers (or an API PATCH) hold.
-- The id comes as text: the worker uses it as text, and a UUID object per row costs more than the cast.
SELECT id::text, tenant_id, tz, trigger, target, payload, retry, misfire_policy, catch_up_limit, next_run_at,
       webhook_secret
  FROM schedules
 WHERE enabled AND next_run_at <= %(now)s
 ORDER BY next_run_at
 LIMIT %(limit)s
   FOR UPDATE SKIP LOCKED;

-- name: schedule_next_due
-- The earliest next_run_at of any enabled schedule: how long an idle worker may sleep.
SELECT min(next_run_at) AS next_due FROM schedules WHERE enabled AND next_run_at IS NOT NULL;

-- name: schedule_get_parked_many
-- Lock the FIXED_DELAY schedules parked behind these runs, to re-arm them.
SELECT id, tz, trigger, parked_run_id FROM schedules WHERE parked_run_id = ANY(%(run_ids)b::uuid[]) FOR UPDATE;

-- name: schedule_rearm_many
-- Re-arm parked FIXED_DELAY schedules: next_run_at computed by the worker from when their run finished.
UPDATE schedules AS s
   SET next_run_at = v.next_run_at, parked_run_id = NULL
  FROM unnest(%(ids)b::uuid[], %(next_run_at)b::timestamptz[]) AS v(id, next_run_at)
 WHERE s.id = v.id;

-- name: schedule_advance_and_record
-- A claim's writes, in one statement so that they commit together or not at all: set the next occurrence
-- (and the last fired one, and the FIXED_DELAY parking) of the claimed schedules, and record the runs they owe
-- (the outbox); an occurrence already recorded is not recorded twice. Claimed runs are never manual and carry
-- no trace context: those columns keep their defaults.
WITH advanced AS (
    UPDATE schedules AS s
       SET next_run_at = v.next_run_at,
           last_run_at = COALESCE(v.last_run_at, s.last_run_at),
           parked_run_id = v.parked_run_id
      FROM unnest(%(ids)b::uuid[], %(next_run_at)b::timestamptz[], %(last_run_at)b::timestamptz[],
                  %(parked_run_id)b::uuid[]) AS v(id, next_run_at, last_run_at, parked_run_id)
     WHERE s.id = v.id)
INSERT INTO runs (id, schedule_id, tenant_id, scheduled_for, idempotency_key, status, lease_until, leased_by,
                  created_at)
SELECT r.id, r.schedule_id, r.tenant_id, r.scheduled_for, r.idempotency_key, 'PENDING', r.lease_until,
       %(worker)s, %(now)s
  FROM unnest(%(run_ids)b::uuid[], %(schedule_ids)b::uuid[], %(tenant_ids)b::text[],
              %(scheduled_for)b::timestamptz[], %(keys)b::text[], %(lease_until)b::timestamptz[])
       AS r(id, schedule_id, tenant_id, scheduled_for, idempotency_key, lease_until)
    ON CONFLICT (id) DO NOTHING
RETURNING id::text;

-- name: run_insert_manual
-- Queue a run of a tenant's schedule now, outside its sequence: its lease is already over, so the next
-- worker to look for runs to rescue (woken by NOTIFY) delivers it.
INSERT INTO runs (id, schedule_id, tenant_id, scheduled_for, manual, idempotency_key, status, lease_until,
                  created_at, trace_context)
SELECT %(id)s, s.id, s.tenant_id, %(now)s, true, %(key)s, 'PENDING', %(now)s, %(now)s, %(trace_context)s
  FROM schedules AS s
 WHERE s.tenant_id = %(tenant_id)s AND s.id = %(schedule_id)s
RETURNING *;

-- name: run_lease_expired
-- Take over open runs whose lease ran out (their worker died, or nobody picked up a manual run yet); the new
-- lease covers the target's own timeout, so a slow live attempt is not taken over again.
UPDATE runs AS r
   SET lease_until = %(now)s::timestamptz + make_interval(
           secs => %(lease_sec)s::float8 + COALESCE((s.target -> 'http' ->> 'timeoutSec')::float8, 5)),
       leased_by = %(worker)s
  FROM (SELECT id, schedule_id FROM runs
         WHERE status IN ('PENDING', 'RETRYING') AND lease_until <= %(now)s
         ORDER BY lease_until
         LIMIT %(limit)s
           FOR UPDATE SKIP LOCKED) AS due
  LEFT JOIN schedules AS s ON s.id = due.schedule_id
 WHERE r.id = due.id
RETURNING r.id, r.schedule_id, r.tenant_id, r.scheduled_for, r.manual, r.idempotency_key, r.attempt,
          r.trace_context;

-- name: run_update_many
-- Record delivery progress of many runs at once.
UPDATE runs AS r
   SET status = v.status, attempt = v.attempt, started_at = COALESCE(r.started_at, v.started_at),
       finished_at = v.finished_at, next_attempt_at = v.next_attempt_at, lease_until = v.lease_until,
       duration_ms = v.duration_ms, http_status = v.http_status, error = v.error, delivery = v.delivery
  FROM unnest(%(ids)b::uuid[], %(status)b::text[], %(attempt)b::int[], %(started_at)b::timestamptz[],
              %(finished_at)b::timestamptz[], %(next_attempt_at)b::timestamptz[], %(lease_until)b::timestamptz[],
              %(duration_ms)b::int[], %(http_status)b::int[], %(error)b::text[], %(delivery)b::jsonb[])
       AS v(id, status, attempt, started_at, finished_at, next_attempt_at, lease_until, duration_ms,
            http_status, error, delivery)
 WHERE r.id = v.id AND r.status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED');

-- name: run_published_many
-- Record runs published as core NATS events (SUCCEEDED): half the arrays of run_update_many, as such a run
-- has no error, HTTP status, retry time or lease left to write.
UPDATE runs AS r
   SET status = 'SUCCEEDED', attempt = v.attempt, started_at = COALESCE(r.started_at, v.started_at),
       finished_at = v.finished_at, next_attempt_at = NULL, lease_until = NULL, duration_ms = v.duration_ms,
       http_status = NULL, error = NULL, delivery = jsonb_build_object('via', 'core', 'subject', v.subject)
  FROM unnest(%(ids)b::uuid[], %(attempt)b::int[], %(subject)b::text[], %(started_at)b::timestamptz[],
              %(finished_at)b::timestamptz[], %(duration_ms)b::int[])
       AS v(id, attempt, subject, started_at, finished_at, duration_ms)
 WHERE r.id = v.id AND r.status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED');

-- name: run_release_many
-- On shutdown: hand unfinished runs to other workers at once (a retry at its planned time), not after the lease.
UPDATE runs SET lease_until = GREATEST(%(now)s, next_attempt_at), leased_by = NULL
 WHERE id = ANY(%(ids)b::uuid[]) AND status IN ('PENDING', 'RETRYING');

-- name: run_get
-- One run of a tenant.
SELECT * FROM runs WHERE tenant_id = %(tenant_id)s AND id = %(id)s;

-- name: run_list
-- A page of a schedule's runs, newest first, optionally of one status.
SELECT * FROM runs
 WHERE tenant_id = %(tenant_id)s AND schedule_id = %(schedule_id)s
   AND (%(status)s::text IS NULL OR status = %(status)s::text)
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s OFFSET %(offset)s;

-- name: run_count
-- How many of a schedule's runs match the list filter.
SELECT count(*) FROM runs
 WHERE tenant_id = %(tenant_id)s AND schedule_id = %(schedule_id)s
   AND (%(status)s::text IS NULL OR status = %(status)s::text);

-- name: schedule_targets_many
-- What rescued runs need to be delivered: their schedules' target, payload and retry policy.
SELECT id, tenant_id, tz, trigger, target, payload, retry, enabled, webhook_secret
  FROM schedules WHERE id = ANY(%(ids)b::uuid[]);

-- name: schedule_notify
-- Wake idle workers: a schedule became due soon, or a manual run was queued.
SELECT pg_notify('scheduler_wakeup', %(reason)s);

-- Quota counters, bulk create and keyset pagination (sql/0050) ------------------------------------------------

-- name: tenant_schedule_count
-- How many schedules a tenant has, from its counter row (no row: none yet).
SELECT COALESCE((SELECT schedules FROM tenant_schedule_counts WHERE tenant_id = %(tenant_id)s), 0) AS count;

-- name: schedule_insert_many
-- Store many schedules of one tenant in one statement (all or nothing), run on its own (autocommit): one
-- command per create instead of BEGIN, scope, INSERT and COMMIT. The tenant scope and quota are set by the
-- statement itself, transaction-locally: every inserted row comes from the join with `scope`, so the settings
-- are in place before row-level security checks the first row, and the quota trigger at its end reads them.
-- The rows come back in any order; created_at steps by a microsecond per item, so that a list shows a batch in
-- the order it was sent.
WITH scope AS MATERIALIZED (
    SELECT set_config('app.tenant_id', %(tenant_id)s, true) AS tenant_id,
           set_config('app.max_schedules', %(quota)s, true) AS quota)
INSERT INTO schedules (id, tenant_id, name, description, tz, trigger, target, payload, enabled, misfire_policy,
                       catch_up_limit, retry, labels, next_run_at, created_at, updated_at, webhook_secret)
SELECT v.id, scope.tenant_id, v.name, v.description, v.tz, v.trigger::jsonb, v.target::jsonb, v.payload::jsonb,
       v.enabled, v.misfire_policy, v.catch_up_limit, v.retry::jsonb, v.labels::jsonb, v.next_run_at,
       v.created_at, v.created_at, v.webhook_secret
  FROM unnest(%(ids)s::uuid[], %(names)s::text[], %(descriptions)s::text[], %(tzs)s::text[], %(triggers)s::text[],
              %(targets)s::text[], %(payloads)s::text[], %(enabled)s::boolean[], %(misfire_policies)s::text[],
              %(catch_up_limits)s::integer[], %(retries)s::text[], %(labels)s::text[],
              %(next_run_ats)s::timestamptz[], %(webhook_secrets)s::text[], %(created_ats)s::timestamptz[])
       AS v(id, name, description, tz, trigger, target, payload, enabled, misfire_policy, catch_up_limit, retry,
            labels, next_run_at, webhook_secret, created_at)
 CROSS JOIN scope
RETURNING *;

-- name: schedule_names_taken
-- Which of these names a tenant's schedules already have.
SELECT name FROM schedules WHERE tenant_id = %(tenant_id)s AND name = ANY(%(names)s::text[]);

-- name: schedule_list_after
-- The page of a tenant's schedules after a keyset position (created_at, id), oldest first: an index range scan
-- whatever the position, unlike OFFSET.
SELECT * FROM schedules
 WHERE tenant_id = %(tenant_id)s
   AND (created_at, id) > (%(after_created_at)s::timestamptz, %(after_id)s::uuid)
   AND (%(enabled)s::boolean IS NULL OR enabled = %(enabled)s::boolean)
   AND (%(name_prefix)s::text IS NULL OR starts_with(name, %(name_prefix)s::text))
   AND (%(labels)s::jsonb IS NULL OR labels @> %(labels)s::jsonb)
 ORDER BY created_at, id
 LIMIT %(limit)s;

-- name: schedule_count_capped
-- How many of a tenant's schedules match the list filters, counting no further than `cap`.
SELECT count(*) FROM (
    SELECT 1 FROM schedules
     WHERE tenant_id = %(tenant_id)s
       AND (%(enabled)s::boolean IS NULL OR enabled = %(enabled)s::boolean)
       AND (%(name_prefix)s::text IS NULL OR starts_with(name, %(name_prefix)s::text))
       AND (%(labels)s::jsonb IS NULL OR labels @> %(labels)s::jsonb)
     LIMIT %(cap)s) AS matching;
