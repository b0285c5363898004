-- Every runtime SQL statement, each under a `-- name: <table>_<verb>` header and a one-line description.
-- Parameters are psycopg named placeholders; arrays use %(x)b, binary, which skips psycopg's per-element
-- text escaping (a regex per element) on the worker's hot path. Only shared/db/repository.py (the API) and
-- worker/store.py (the workers) run these.

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
       paused_reason = %(paused_reason)s, paused_at = %(paused_at)s, paused_by = %(paused_by)s,
       pause_on_failure = %(pause_on_failure)s, notify_run_succeeded = %(notify_run_succeeded)s,
       jitter_sec = %(jitter_sec)s, next_nominal_at = %(next_nominal_at)s,
       action_after_completion = %(action_after_completion)s, overlap = %(overlap)s,
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
DELETE FROM schedules WHERE tenant_id = %(tenant_id)s AND id = %(id)s RETURNING *;

-- name: schedule_list
-- One page of a tenant's schedules at an offset, oldest first, with optional filters. The offset is skipped on
-- the (tenant_id, created_at, id) index, then the page is read from its first position: OFFSET over whole rows
-- reads every skipped row from the table.
WITH start AS (
    SELECT created_at, id FROM schedules
     WHERE tenant_id = %(tenant_id)s
       AND (%(enabled)s::boolean IS NULL OR enabled = %(enabled)s::boolean)
       AND (%(name_prefix)s::text IS NULL OR starts_with(name, %(name_prefix)s::text))
       AND (%(labels)s::jsonb IS NULL OR labels @> %(labels)s::jsonb)
       -- The same status rule as the API's (shared/db/repository.py schedule_from_row).
       AND (%(statuses)s::text[] IS NULL
            OR (CASE WHEN NOT enabled THEN 'PAUSED'
                     WHEN next_run_at IS NULL AND parked_run_id IS NULL THEN 'COMPLETED'
                     ELSE 'ACTIVE' END) = ANY(%(statuses)s::text[]))
       AND (%(target_kinds)s::text[] IS NULL OR target ->> 'kind' = ANY(%(target_kinds)s::text[]))
       AND (%(next_run_before)s::timestamptz IS NULL OR (enabled AND next_run_at < %(next_run_before)s::timestamptz))
       AND (%(next_run_after)s::timestamptz IS NULL OR (enabled AND next_run_at > %(next_run_after)s::timestamptz))
     ORDER BY created_at, id
    OFFSET %(offset)s LIMIT 1),
default_order AS (
    SELECT s.* FROM start JOIN schedules AS s ON (s.created_at, s.id) >= (start.created_at, start.id)
     WHERE s.tenant_id = %(tenant_id)s
       AND (%(enabled)s::boolean IS NULL OR s.enabled = %(enabled)s::boolean)
       AND (%(name_prefix)s::text IS NULL OR starts_with(s.name, %(name_prefix)s::text))
       AND (%(labels)s::jsonb IS NULL OR s.labels @> %(labels)s::jsonb)
       -- The same status rule as the API's (shared/db/repository.py schedule_from_row).
       AND (%(statuses)s::text[] IS NULL
            OR (CASE WHEN NOT s.enabled THEN 'PAUSED'
                     WHEN s.next_run_at IS NULL AND s.parked_run_id IS NULL THEN 'COMPLETED'
                     ELSE 'ACTIVE' END) = ANY(%(statuses)s::text[]))
       AND (%(target_kinds)s::text[] IS NULL OR s.target ->> 'kind' = ANY(%(target_kinds)s::text[]))
       AND (%(next_run_before)s::timestamptz IS NULL OR (s.enabled AND s.next_run_at < %(next_run_before)s::timestamptz))
       AND (%(next_run_after)s::timestamptz IS NULL OR (s.enabled AND s.next_run_at > %(next_run_after)s::timestamptz))
     ORDER BY s.created_at, s.id
     LIMIT %(limit)s)
SELECT * FROM default_order;

-- name: schedule_list_sorted
-- One page of a tenant's schedules in another order than the default (GET /schedules?sort=), at an offset
-- (the API caps it), with the filters of schedule_list.
SELECT * FROM schedules
 WHERE tenant_id = %(tenant_id)s
   AND (%(enabled)s::boolean IS NULL OR enabled = %(enabled)s::boolean)
   AND (%(name_prefix)s::text IS NULL OR starts_with(name, %(name_prefix)s::text))
   AND (%(labels)s::jsonb IS NULL OR labels @> %(labels)s::jsonb)
   -- The same status rule as the API's (shared/db/repository.py schedule_from_row).
   AND (%(statuses)s::text[] IS NULL
        OR (CASE WHEN NOT enabled THEN 'PAUSED'
                 WHEN next_run_at IS NULL AND parked_run_id IS NULL THEN 'COMPLETED'
                 ELSE 'ACTIVE' END) = ANY(%(statuses)s::text[]))
   AND (%(target_kinds)s::text[] IS NULL OR target ->> 'kind' = ANY(%(target_kinds)s::text[]))
   AND (%(next_run_before)s::timestamptz IS NULL OR (enabled AND next_run_at < %(next_run_before)s::timestamptz))
   AND (%(next_run_after)s::timestamptz IS NULL OR (enabled AND next_run_at > %(next_run_after)s::timestamptz))
 -- One CASE per order (ScheduleSort), so the statement stays one static text.
 ORDER BY CASE WHEN %(sort)s::text = 'nextRunAt' THEN next_run_at END ASC NULLS LAST,
          CASE WHEN %(sort)s::text = '-nextRunAt' THEN next_run_at END DESC NULLS LAST,
          CASE WHEN %(sort)s::text = 'name' THEN name END ASC,
          CASE WHEN %(sort)s::text = '-name' THEN name END DESC,
          CASE WHEN %(sort)s::text = 'updatedAt' THEN updated_at END ASC,
          CASE WHEN %(sort)s::text = '-updatedAt' THEN updated_at END DESC,
          CASE WHEN %(sort)s::text = '-createdAt' THEN created_at END DESC,
          created_at, id
 LIMIT %(limit)s OFFSET %(offset)s;

-- name: tenant_scope
-- Scope the current transaction to one tenant: the row-level security policies (sql/0004) read this setting.
-- It also names who acts (the token's sub, or ''), which the lifecycle events' outbox trigger (sql/0070) records.
SELECT set_config('app.tenant_id', %(tenant_id)s, true), set_config('app.actor', %(actor)s, true);

-- name: database_ping
-- Readiness: the database answers.
SELECT 1;

-- name: schedule_claim_due
-- Lock up to `limit` due schedules, oldest first, skipping rows other workers (or an API PATCH) hold and tenants
-- over their fire rate (`throttled`). While the fleet keeps up this is fair to every tenant; under a backlog
-- workers use schedule_claim_due_fair now and then. The id comes as text: the worker uses it as text, and a
-- UUID object per row costs more than the cast.
SELECT id::text, tenant_id, tz, trigger, target, payload, retry, misfire_policy, catch_up_limit,
       COALESCE(next_nominal_at, next_run_at), webhook_secret, notify_run_succeeded, jitter_sec,
       -- The overlap policy (sql/0080, worker/overlap.py; NULL: ALLOW, nothing to decode) and the state of the
       -- run the schedule waits for, if any (WAITING: a buffered run nobody released yet; an ALLOW schedule that
       -- had another policy winds it down).
       NULLIF(overlap, 'ALLOW'), CASE WHEN overlap_run_id IS NOT NULL THEN
                     (SELECT ARRAY[CASE WHEN r.lease_until IS NULL AND r.status = 'PENDING' THEN 'WAITING' ELSE r.status END,
                             r.delivery ->> 'stream', r.delivery ->> 'seq', r.delivery ->> 'queue'] FROM runs AS r
                       WHERE r.id = schedules.overlap_run_id AND r.scheduled_for = schedules.overlap_run_at) END,
       overlap_run_id::text, overlap_run_at, overlap_buffered_run_id::text, overlap_buffered_at
  FROM schedules
 WHERE enabled AND next_run_at <= %(now)s AND tenant_id <> ALL(%(throttled)s::text[])
 ORDER BY next_run_at
 LIMIT %(limit)s
   FOR UPDATE SKIP LOCKED;

-- name: schedule_claim_due_fair
-- schedule_claim_due under a backlog, fair across tenants: up to `fresh` slots of the batch go to recently due
-- rows, picked among the 4 x `fresh` most recently due with every tenant's first turn before anyone's second,
-- so a quiet tenant's schedule that comes due behind another tenant's burst is in the next such batch, not
-- after the burst; the rest of the batch is the oldest due rows, as they come off the due index.
WITH recent AS (
    SELECT id, tenant_id, next_run_at
      FROM schedules
     WHERE enabled AND next_run_at <= %(now)s AND tenant_id <> ALL(%(throttled)s::text[]) AND %(fresh)s > 0
     ORDER BY next_run_at DESC
     LIMIT 4 * %(fresh)s),
picked AS (
    SELECT id
      FROM (SELECT id, next_run_at, row_number() OVER (PARTITION BY tenant_id ORDER BY next_run_at DESC) AS turn
              FROM recent) AS ranked
     ORDER BY turn, next_run_at
     LIMIT %(fresh)s),
fresh AS (
    SELECT id::text, tenant_id, tz, trigger, target, payload, retry, misfire_policy, catch_up_limit,
           COALESCE(next_nominal_at, next_run_at), webhook_secret, notify_run_succeeded, jitter_sec,
           NULLIF(overlap, 'ALLOW'), CASE WHEN overlap_run_id IS NOT NULL THEN
                         (SELECT ARRAY[CASE WHEN r.lease_until IS NULL AND r.status = 'PENDING' THEN 'WAITING' ELSE r.status END,
                             r.delivery ->> 'stream', r.delivery ->> 'seq', r.delivery ->> 'queue'] FROM runs AS r
                           WHERE r.id = schedules.overlap_run_id AND r.scheduled_for = schedules.overlap_run_at) END,
           overlap_run_id::text, overlap_run_at, overlap_buffered_run_id::text, overlap_buffered_at
      FROM schedules
     WHERE id IN (SELECT id FROM picked) AND enabled AND next_run_at <= %(now)s
       FOR UPDATE SKIP LOCKED),
oldest AS (
    SELECT id::text, tenant_id, tz, trigger, target, payload, retry, misfire_policy, catch_up_limit,
           COALESCE(next_nominal_at, next_run_at), webhook_secret, notify_run_succeeded, jitter_sec,
           NULLIF(overlap, 'ALLOW'), CASE WHEN overlap_run_id IS NOT NULL THEN
                         (SELECT ARRAY[CASE WHEN r.lease_until IS NULL AND r.status = 'PENDING' THEN 'WAITING' ELSE r.status END,
                             r.delivery ->> 'stream', r.delivery ->> 'seq', r.delivery ->> 'queue'] FROM runs AS r
                           WHERE r.id = schedules.overlap_run_id AND r.scheduled_for = schedules.overlap_run_at) END,
           overlap_run_id::text, overlap_run_at, overlap_buffered_run_id::text, overlap_buffered_at
      FROM schedules
     WHERE enabled AND next_run_at <= %(now)s AND tenant_id <> ALL(%(throttled)s::text[])
       AND id NOT IN (SELECT id FROM picked)
     ORDER BY next_run_at
     LIMIT %(limit)s - (SELECT count(*) FROM fresh)
       FOR UPDATE SKIP LOCKED)
SELECT * FROM fresh
UNION ALL
SELECT * FROM oldest;

-- name: schedule_next_due
-- The earliest next_run_at of any enabled schedule: how long an idle worker may sleep.
SELECT min(next_run_at) AS next_due FROM schedules WHERE enabled AND next_run_at IS NOT NULL;

-- name: schedule_get_parked_many
-- Lock the FIXED_DELAY schedules parked behind these runs, to re-arm them, if the run really ended (a late
-- outcome of a run another worker took over was not written: that run is still open, and re-arms when it ends).
-- `from`/`until`: the span of scheduled_for the ids carry (shared/db/run_ids.py), pruning partitions at plan time.
SELECT s.id, s.tz, s.trigger, s.parked_run_id FROM schedules AS s
 WHERE s.parked_run_id = ANY(%(run_ids)b::uuid[])
   AND NOT EXISTS (SELECT 1 FROM runs AS r
                    WHERE r.id = s.parked_run_id AND r.status IN ('PENDING', 'RETRYING')
                      AND r.scheduled_for >= %(from)s AND r.scheduled_for < %(until)s)
   FOR UPDATE OF s;

-- name: schedule_rearm_many
-- Re-arm parked FIXED_DELAY schedules: next_run_at computed by the worker from when their run finished.
UPDATE schedules AS s
   SET next_run_at = v.next_run_at, parked_run_id = NULL
  FROM unnest(%(ids)b::uuid[], %(next_run_at)b::timestamptz[]) AS v(id, next_run_at)
 WHERE s.id = v.id;

-- name: schedule_advance_and_record
-- A claim's writes, in one statement so that they commit together or not at all: set the next occurrence
-- (and the last fired one, the FIXED_DELAY parking and the overlap policy's state where the policy decided
-- something: overlap_skipped NULL keeps it) of the claimed schedules, and record the runs they owe (the outbox);
-- an occurrence already recorded is not recorded twice. A run BUFFER_ONE keeps waiting (`waiting`) gets no
-- lease, so no worker delivers it until it is released. Arrays shorter than `ids` (or `run_ids`), empty in the
-- common case, are padded with NULLs by unnest. Claimed runs are never manual and carry no trace context: those
-- columns keep their defaults.
WITH advanced AS (
    UPDATE schedules AS s
       SET next_run_at = v.next_run_at,
           next_nominal_at = v.next_nominal_at,
           last_run_at = COALESCE(v.last_run_at, s.last_run_at),
           parked_run_id = v.parked_run_id,
           overlap_run_id = CASE WHEN v.overlap_skipped IS NULL THEN s.overlap_run_id ELSE v.overlap_run_id END,
           overlap_run_at = CASE WHEN v.overlap_skipped IS NULL THEN s.overlap_run_at ELSE v.overlap_run_at END,
           overlap_buffered_run_id = CASE WHEN v.overlap_skipped IS NULL THEN s.overlap_buffered_run_id
                                          ELSE v.overlap_buffered_run_id END,
           overlap_buffered_at = CASE WHEN v.overlap_skipped IS NULL THEN s.overlap_buffered_at
                                      ELSE v.overlap_buffered_at END,
           overlap_skipped = s.overlap_skipped + COALESCE(v.overlap_skipped, 0)
      FROM unnest(%(ids)b::uuid[], %(next_run_at)b::timestamptz[], %(next_nominal_at)b::timestamptz[],
                  %(last_run_at)b::timestamptz[], %(parked_run_id)b::uuid[], %(overlap_run_id)b::uuid[],
                  %(overlap_run_at)b::timestamptz[], %(overlap_buffered_run_id)b::uuid[],
                  %(overlap_buffered_at)b::timestamptz[], %(overlap_skipped)b::int[])
           AS v(id, next_run_at, next_nominal_at, last_run_at, parked_run_id, overlap_run_id, overlap_run_at,
                overlap_buffered_run_id, overlap_buffered_at, overlap_skipped)
     WHERE s.id = v.id)
INSERT INTO runs (id, schedule_id, tenant_id, scheduled_for, idempotency_key, status, lease_until, leased_by,
                  created_at, notify_succeeded)
SELECT r.id, r.schedule_id, r.tenant_id, r.scheduled_for, r.idempotency_key, 'PENDING',
       CASE WHEN r.waiting THEN NULL ELSE %(lease_until)s::timestamptz END,
       CASE WHEN r.waiting THEN NULL ELSE %(worker)s END, %(now)s, r.notify_succeeded
  FROM unnest(%(run_ids)b::uuid[], %(schedule_ids)b::uuid[], %(tenant_ids)b::text[],
              %(scheduled_for)b::timestamptz[], %(keys)b::text[], %(notify_succeeded)b::boolean[],
              %(waiting)b::boolean[])
       AS r(id, schedule_id, tenant_id, scheduled_for, idempotency_key, notify_succeeded, waiting)
    ON CONFLICT (id, scheduled_for) DO NOTHING
RETURNING id::text;

-- name: run_cancel_superseded
-- Overlap CANCEL_OTHER, after the claim that fired the new occurrence committed: cancel the runs it supersedes
-- if they are still open (the worker delivering one sees its lease gone at its next heartbeat and aborts).
UPDATE runs AS r
   SET status = 'CANCELLED', finished_at = %(now)s, next_attempt_at = NULL, lease_until = NULL, error = c.error
  FROM unnest(%(ids)b::uuid[], %(at)b::timestamptz[], %(errors)b::text[]) AS c(id, at, error)
 WHERE r.id = c.id AND r.scheduled_for = c.at AND r.status IN ('PENDING', 'RETRYING')
RETURNING r.id::text;

-- name: run_withdrawn
-- Overlap CANCEL_OTHER of a QUEUE run: its message was deleted from the stream before any consumer acked it.
-- `delivery`: the publish's outcome, when the run was cancelled before recording it (NULL: keep the recorded one).
UPDATE runs
   SET status = 'CANCELLED', error = %(error)s, finished_at = COALESCE(finished_at, now()),
       delivery = COALESCE(%(delivery)s::jsonb, delivery, '{}'::jsonb) || '{"withdrawn": true}'::jsonb
 WHERE id = %(id)s AND scheduled_for = %(at)s AND status IN ('SUCCEEDED', 'CANCELLED');

-- name: run_status
-- One run's status, looked for in the partitions its id names (`from`/`until`, shared/db/run_ids.py).
SELECT status FROM runs WHERE id = %(id)s AND scheduled_for >= %(from)s AND scheduled_for < %(until)s;

-- name: run_queue_published_many
-- Of these runs, those that SUCCEEDED by publishing into a work queue: where their message is.
SELECT r.id::text, r.scheduled_for, r.delivery ->> 'stream', (r.delivery ->> 'seq')::bigint, r.idempotency_key
  FROM runs AS r
  JOIN unnest(%(ids)b::uuid[], %(at)b::timestamptz[]) AS c(id, at) ON r.id = c.id AND r.scheduled_for = c.at
 WHERE r.status = 'SUCCEEDED' AND r.delivery ? 'queue';

-- name: run_release_waiting
-- Hand BUFFER_ONE's waiting runs to the workers now (the runs they waited for ended): the next rescue delivers.
UPDATE runs AS r SET lease_until = %(now)s
  FROM unnest(%(ids)b::uuid[], %(at)b::timestamptz[]) AS c(id, at)
 WHERE r.id = c.id AND r.scheduled_for = c.at AND r.status = 'PENDING' AND r.lease_until IS NULL
RETURNING r.id::text;

-- name: schedule_overlap_release_many
-- Runs that ended: the schedules waiting for them are released, their buffered run (if any) becoming the one in
-- flight; returns it, for run_release_waiting to hand over (a statement of its own: this one's snapshot may
-- not see a buffered run committed while it waited for the schedule's lock). Only a run that really ended
-- releases (a late outcome of a run another worker took over was not written: its run is still open), and one
-- published into a work queue (delivery.queue) not until a consumer acked it (`acked`: the stream poll found
-- it gone).
UPDATE schedules AS s
   SET overlap_run_id = s.overlap_buffered_run_id, overlap_run_at = s.overlap_buffered_at,
       overlap_buffered_run_id = NULL, overlap_buffered_at = NULL
 WHERE s.overlap_run_id = ANY(%(run_ids)b::uuid[])
   AND NOT EXISTS (SELECT 1 FROM runs AS r WHERE r.id = s.overlap_run_id AND r.scheduled_for = s.overlap_run_at
                      AND (r.status IN ('PENDING', 'RETRYING')
                           OR (r.status = 'SUCCEEDED' AND r.delivery ? 'queue' AND NOT %(acked)s)))
RETURNING s.overlap_run_id::text, s.overlap_run_at;

-- name: schedule_overlap_forget_buffered
-- A cancelled run was a schedule's buffered one: the buffer is free again.
UPDATE schedules SET overlap_buffered_run_id = NULL, overlap_buffered_at = NULL
 WHERE tenant_id = %(tenant_id)s AND overlap_buffered_run_id = %(run_id)s;

-- name: schedule_overlap_queue_held
-- Runs published into a work queue (SUCCEEDED) that still hold their schedule: is their message still there?
-- Whatever the schedule's policy or target is now (a buffered run may wait behind one); a page at a time in
-- schedule id order, after `after`, so every held schedule is looked at in turn.
SELECT s.id::text, r.id::text, r.delivery ->> 'stream', (r.delivery ->> 'seq')::bigint, r.idempotency_key
  FROM schedules AS s
  JOIN runs AS r ON r.id = s.overlap_run_id AND r.scheduled_for = s.overlap_run_at
 WHERE s.overlap_run_id IS NOT NULL AND (%(after)s::uuid IS NULL OR s.id > %(after)s::uuid)
   AND r.status = 'SUCCEEDED' AND r.delivery ? 'queue'
 ORDER BY s.id
 LIMIT %(limit)s;

-- name: run_insert_manual
-- Queue a run of a tenant's schedule now, outside its sequence: its lease is already over, so the next
-- worker to look for runs to rescue (woken by NOTIFY) delivers it.
INSERT INTO runs (id, schedule_id, tenant_id, scheduled_for, manual, idempotency_key, status, lease_until,
                  created_at, trace_context, notify_succeeded)
SELECT %(id)s, s.id, s.tenant_id, %(now)s, true, %(key)s, 'PENDING', %(now)s, %(now)s, %(trace_context)s,
       s.notify_run_succeeded
  FROM schedules AS s
 WHERE s.tenant_id = %(tenant_id)s AND s.id = %(schedule_id)s
RETURNING *;

-- name: run_lease_expired
-- Take over open runs whose lease ran out (their worker died or froze, or nobody picked up a manual run yet);
-- the new holder renews the lease by heartbeat while its attempt is in flight.
UPDATE runs AS r
   SET lease_until = %(lease_until)s, leased_by = %(worker)s
  FROM (SELECT id, scheduled_for FROM runs
         WHERE status IN ('PENDING', 'RETRYING') AND lease_until <= %(now)s
         ORDER BY lease_until
         LIMIT %(limit)s
           FOR UPDATE SKIP LOCKED) AS due
 WHERE r.id = due.id AND r.scheduled_for = due.scheduled_for
RETURNING r.id, r.schedule_id, r.tenant_id, r.scheduled_for, r.manual, r.idempotency_key, r.attempt,
          r.trace_context;

-- name: run_update_many
-- Record delivery progress of many runs at once. `from`/`until`: the span of scheduled_for the ids carry
-- (shared/db/run_ids.py), so the plan touches only the partitions of that span (a condition per row, from
-- each id, would prune nothing at plan time and cost a function call per row).
UPDATE runs AS r
   SET status = v.status, attempt = v.attempt, started_at = COALESCE(r.started_at, v.started_at),
       finished_at = v.finished_at, next_attempt_at = v.next_attempt_at, lease_until = v.lease_until,
       duration_ms = v.duration_ms, http_status = v.http_status, error = v.error, delivery = v.delivery
  FROM unnest(%(ids)b::uuid[], %(status)b::text[], %(attempt)b::int[], %(started_at)b::timestamptz[],
              %(finished_at)b::timestamptz[], %(next_attempt_at)b::timestamptz[], %(lease_until)b::timestamptz[],
              %(duration_ms)b::int[], %(http_status)b::int[], %(error)b::text[], %(delivery)b::jsonb[])
       AS v(id, status, attempt, started_at, finished_at, next_attempt_at, lease_until, duration_ms,
            http_status, error, delivery)
 WHERE r.id = v.id AND r.status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
   AND r.leased_by IS NOT DISTINCT FROM %(worker)s
   AND r.scheduled_for >= %(from)s AND r.scheduled_for < %(until)s;

-- name: run_published_many
-- Record runs published as core NATS events (SUCCEEDED, at most once: AT_MOST_ONCE EVENTs): half the arrays of
-- run_update_many, as such a run has no error, HTTP status, retry time or lease left to write. `from`/`until` as
-- in run_update_many.
UPDATE runs AS r
   SET status = 'SUCCEEDED', attempt = v.attempt, started_at = COALESCE(r.started_at, v.started_at),
       finished_at = v.finished_at, next_attempt_at = NULL, lease_until = NULL, duration_ms = v.duration_ms,
       http_status = NULL, error = NULL, delivery = jsonb_build_object('via', 'core', 'subject', v.subject,
                                                        'delivery', 'AT_MOST_ONCE')
  FROM unnest(%(ids)b::uuid[], %(attempt)b::int[], %(subject)b::text[], %(started_at)b::timestamptz[],
              %(finished_at)b::timestamptz[], %(duration_ms)b::int[])
       AS v(id, attempt, subject, started_at, finished_at, duration_ms)
 WHERE r.id = v.id AND r.status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
   AND r.leased_by IS NOT DISTINCT FROM %(worker)s
   AND r.scheduled_for >= %(from)s AND r.scheduled_for < %(until)s;

-- name: run_release_many
-- On shutdown: hand unfinished runs to other workers at once (a retry at its planned time), not after the lease.
-- `from`/`until` as in run_update_many.
UPDATE runs SET lease_until = GREATEST(%(now)s, next_attempt_at), leased_by = NULL
 WHERE id = ANY(%(ids)b::uuid[]) AND status IN ('PENDING', 'RETRYING') AND leased_by = %(worker)s
   AND scheduled_for >= %(from)s AND scheduled_for < %(until)s;

-- name: run_get
-- One run of a tenant, looked for in the partition its id names (every partition for an id made before 0040).
SELECT * FROM runs
 WHERE tenant_id = %(tenant_id)s AND id = %(id)s
   AND scheduled_for >= run_id_scheduled_from(%(id)s) AND scheduled_for < run_id_scheduled_until(%(id)s);

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
SELECT id, tenant_id, tz, trigger, target, payload, retry, enabled, webhook_secret, overlap
  FROM schedules WHERE id = ANY(%(ids)b::uuid[]);

-- name: schedule_notify
-- Wake idle workers: a schedule became due soon, or a manual run was queued.
SELECT pg_notify('scheduler_wakeup', %(reason)s);

-- Worker fleet: fencing, heartbeats, LISTEN (worker/store.py).

-- name: run_lease_extend_many
-- Fencing and heartbeat: extend this worker's leases of open runs it still holds (never shortening one); the
-- ids returned are those it holds, any other was taken over by another worker while this one was away.
UPDATE runs SET lease_until = GREATEST(lease_until, %(until)s)
 WHERE id = ANY(%(ids)b::uuid[]) AND leased_by = %(worker)s AND status IN ('PENDING', 'RETRYING')
RETURNING id::text;

-- name: fleet_heartbeat_beat
-- This worker is alive: record it, forget processes long gone, and read every process's uptime interval (the
-- statement's snapshot: this worker's own beat is not in it, the caller knows its own interval).
WITH beat AS (
    INSERT INTO fleet_heartbeats (worker_id, started_at, beat_at)
    VALUES (%(worker)s, %(started_at)s, %(now)s)
        ON CONFLICT (worker_id) DO UPDATE SET beat_at = EXCLUDED.beat_at),
forgotten AS (
    DELETE FROM fleet_heartbeats WHERE beat_at < %(forget_before)s)
SELECT started_at, beat_at FROM fleet_heartbeats;

-- name: worker_listen
-- Receive the wake-ups of schedule_notify on this (dedicated, autocommit) connection.
LISTEN scheduler_wakeup;

-- Run history partitions (sql/0040, shared/db/partitions.py): one worker at a time creates and drops them.

-- name: run_partition_list
-- The partitions of runs with their bounds (NULL: unbounded), oldest first.
SELECT name, starts, ends, is_default FROM runs_partitions();

-- name: run_maintenance_try_lock
-- Become the fleet's partition maintainer for this round, unless another worker is.
SELECT pg_try_advisory_lock(1548668992);

-- name: run_maintenance_unlock
-- End this worker's maintenance round.
SELECT pg_advisory_unlock(1548668992);

-- name: run_maintenance_lock_timeout
-- Give up a partition change rather than queue every claim behind its lock (until the transaction ends).
SELECT set_config('lock_timeout', %(timeout)s, true);

-- name: run_partition_create
-- Create a partition for [starts, ends), moving in the rows of that range the default partition holds.
SELECT runs_partition_create(%(name)s, %(starts)s, %(ends)s);

-- name: run_partition_drop
-- Drop an expired partition, keeping its open runs (moved to the default partition); NULL if not expired.
SELECT runs_partition_drop(%(name)s);

-- name: run_default_expire
-- Delete up to max_rows finished runs scheduled before `before` from the default partition.
SELECT runs_default_expire(%(before)s, %(max_rows)s);

-- --- audit trail, pause, by-name apply, bulk changes, run cancel, backfill (issue 12) ------------------------

-- name: schedule_audit_insert_many
-- Append audit entries (in the transaction of the changes they describe).
INSERT INTO schedule_audit (tenant_id, schedule_id, action, actor, at, version_before, version_after, changed,
                            before, after, detail)
SELECT %(tenant_id)s, a.schedule_id, a.action, %(actor)s, %(at)s, a.version_before, a.version_after, a.changed,
       a.before, a.after, %(detail)s::jsonb
  FROM unnest(%(schedule_ids)s::uuid[], %(actions)s::text[], %(version_before)s::int[],
              %(version_after)s::int[], %(changed)s::jsonb[], %(before)s::jsonb[], %(after)s::jsonb[])
       AS a(schedule_id, action, version_before, version_after, changed, before, after);

-- name: schedule_audit_list
-- A page of a schedule's audit entries, newest first.
SELECT * FROM schedule_audit
 WHERE tenant_id = %(tenant_id)s AND schedule_id = %(schedule_id)s
 ORDER BY id DESC
 LIMIT %(limit)s OFFSET %(offset)s;

-- name: schedule_audit_count
-- How many audit entries a schedule has.
SELECT count(*) FROM schedule_audit WHERE tenant_id = %(tenant_id)s AND schedule_id = %(schedule_id)s;

-- name: schedule_lock_tenant
-- Serialise by-name applies within one tenant (until the transaction ends): two applies of a new name create it
-- once, the second then updates it.
SELECT pg_advisory_xact_lock(hashtextextended(%(tenant_id)s, 5309));

-- name: schedule_get_by_name_for_update
-- A tenant's schedule by its name, locked until the transaction ends.
SELECT * FROM schedules WHERE tenant_id = %(tenant_id)s AND name = %(name)s FOR UPDATE;

-- name: schedule_select_by_labels_for_update
-- The tenant's schedules carrying all these labels (up to `limit`), locked until the transaction ends.
SELECT * FROM schedules
 WHERE tenant_id = %(tenant_id)s AND labels @> %(labels)s::jsonb
 ORDER BY created_at, id
 LIMIT %(limit)s
   FOR UPDATE;

-- name: schedule_pause_many
-- Pause these schedules of a tenant: no next run while paused; why, when and by whom.
UPDATE schedules
   SET enabled = false, next_run_at = NULL, paused_reason = %(reason)s, paused_at = %(now)s, paused_by = %(actor)s,
       updated_at = %(now)s, version = version + 1
 WHERE tenant_id = %(tenant_id)s AND id = ANY(%(ids)s::uuid[])
RETURNING *;

-- name: schedule_resume_many
-- Resume these schedules of a tenant with their next runs (computed from now by the API).
UPDATE schedules AS s
   SET enabled = true, paused_reason = NULL, paused_at = NULL, paused_by = NULL, updated_at = %(now)s,
       version = s.version + 1,
       next_run_at = CASE WHEN s.parked_run_id IS NOT NULL THEN NULL ELSE v.next_run_at END
  FROM unnest(%(ids)s::uuid[], %(next_run_at)s::timestamptz[]) AS v(id, next_run_at)
 WHERE s.tenant_id = %(tenant_id)s AND s.id = v.id
RETURNING s.*;

-- name: schedule_delete_many
-- Delete these schedules of a tenant; their run history stays.
DELETE FROM schedules WHERE tenant_id = %(tenant_id)s AND id = ANY(%(ids)s::uuid[]) RETURNING *;

-- name: run_cancel
-- Cancel a tenant's run that no worker is delivering: PENDING and not leased (a manual or backfilled run not
-- picked up yet, or one whose worker died), or RETRYING and waiting for its next attempt. A worker starting a
-- retry clears next_attempt_at first (run_attempt_begin), and the row lock orders the two: either the cancel
-- wins and the worker sends nothing, or the attempt is under way and this changes nothing.
UPDATE runs
   SET status = 'CANCELLED', finished_at = %(now)s, next_attempt_at = NULL, lease_until = NULL,
       error = %(error)s
 WHERE tenant_id = %(tenant_id)s AND id = %(id)s
   AND scheduled_for >= run_id_scheduled_from(%(id)s) AND scheduled_for < run_id_scheduled_until(%(id)s)
   AND ((status = 'PENDING' AND (lease_until IS NULL OR lease_until <= %(now)s))
        OR (status = 'RETRYING' AND next_attempt_at IS NOT NULL
            AND (next_attempt_at > %(now)s OR lease_until IS NULL OR lease_until <= %(now)s)))
RETURNING *;

-- name: run_attempt_begin
-- A worker about to retry a run: it goes ahead only while the run is still open, and from now on the run
-- cannot be cancelled (its next_attempt_at is cleared) until the attempt is recorded. `from`/`until`: the
-- partition span the id names (shared/db/run_ids.py).
UPDATE runs SET next_attempt_at = NULL
 WHERE id = %(id)s AND status IN ('PENDING', 'RETRYING')
   AND scheduled_for >= %(from)s AND scheduled_for < %(until)s
RETURNING id;

-- name: schedule_get_parked_by_run
-- The tenant's FIXED_DELAY schedule parked behind this run, locked to re-arm it.
SELECT * FROM schedules WHERE tenant_id = %(tenant_id)s AND parked_run_id = %(run_id)s FOR UPDATE;

-- name: schedule_rearm
-- Re-arm a tenant's parked FIXED_DELAY schedule whose run was cancelled.
UPDATE schedules SET next_run_at = %(next_run_at)s, parked_run_id = NULL
 WHERE tenant_id = %(tenant_id)s AND id = %(id)s;

-- name: run_insert_backfill
-- Record occurrences of a tenant's schedule with their normal ids and keys (one already recorded is skipped);
-- their lease is already over, so the next worker looking for runs to rescue delivers them.
INSERT INTO runs (id, schedule_id, tenant_id, scheduled_for, idempotency_key, status, lease_until, created_at)
SELECT r.id, %(schedule_id)s, %(tenant_id)s, r.scheduled_for, r.idempotency_key, 'PENDING', %(now)s, %(now)s
  FROM unnest(%(run_ids)s::uuid[], %(scheduled_for)s::timestamptz[], %(keys)s::text[])
       AS r(id, scheduled_for, idempotency_key)
    ON CONFLICT (id, scheduled_for) DO NOTHING
RETURNING id::text;

-- name: run_existing_many
-- Which of these run ids a tenant already has.
SELECT id::text FROM runs WHERE tenant_id = %(tenant_id)s AND id = ANY(%(ids)s::uuid[]);

-- name: run_count_open
-- How many runs of a tenant's schedule are not finished yet.
SELECT count(*) FROM runs
 WHERE tenant_id = %(tenant_id)s AND schedule_id = %(schedule_id)s AND status IN ('PENDING', 'RETRYING');

-- Quota counters, bulk create and keyset pagination (sql/0050) ------------------------------------------------

-- name: tenant_schedule_count
-- How many schedules a tenant has, from its counter row (no row: none yet).
SELECT COALESCE((SELECT schedules FROM tenant_schedule_counts WHERE tenant_id = %(tenant_id)s), 0) AS count;

-- name: schedule_insert_many
-- Store many schedules of one tenant in one statement (all or nothing; its audit entries follow in the same
-- transaction). The tenant scope and quota are set by the statement itself, transaction-locally: every inserted row comes from the join with `scope`, so the settings
-- are in place before row-level security checks the first row, and the quota trigger at its end reads them.
-- The rows come back in any order; created_at steps by a microsecond per item, so that a list shows a batch in
-- the order it was sent.
WITH scope AS MATERIALIZED (
    SELECT set_config('app.tenant_id', %(tenant_id)s, true) AS tenant_id,
           set_config('app.max_schedules', %(quota)s, true) AS quota)
INSERT INTO schedules (id, tenant_id, name, description, tz, trigger, target, payload, enabled, misfire_policy,
                       catch_up_limit, retry, labels, next_run_at, created_at, updated_at, webhook_secret,
                       paused_reason, paused_at, paused_by, pause_on_failure, notify_run_succeeded, jitter_sec,
                       next_nominal_at, action_after_completion, overlap)
SELECT v.id, scope.tenant_id, v.name, v.description, v.tz, v.trigger::jsonb, v.target::jsonb, v.payload::jsonb,
       v.enabled, v.misfire_policy, v.catch_up_limit, v.retry::jsonb, v.labels::jsonb, v.next_run_at,
       v.created_at, v.created_at, v.webhook_secret, v.paused_reason, v.paused_at, v.paused_by, v.pause_on_failure,
       v.notify_run_succeeded, v.jitter_sec, v.next_nominal_at, v.action_after_completion, v.overlap
  FROM unnest(%(ids)s::uuid[], %(names)s::text[], %(descriptions)s::text[], %(tzs)s::text[], %(triggers)s::text[],
              %(targets)s::text[], %(payloads)s::text[], %(enabled)s::boolean[], %(misfire_policies)s::text[],
              %(catch_up_limits)s::integer[], %(retries)s::text[], %(labels)s::text[],
              %(next_run_ats)s::timestamptz[], %(webhook_secrets)s::text[], %(created_ats)s::timestamptz[],
              %(paused_reasons)s::text[], %(paused_ats)s::timestamptz[], %(paused_bys)s::text[],
              %(pause_on_failures)s::integer[], %(notify_run_succeededs)s::boolean[], %(jitter_secs)s::integer[],
              %(next_nominal_ats)s::timestamptz[], %(actions_after_completion)s::text[], %(overlaps)s::text[])
       AS v(id, name, description, tz, trigger, target, payload, enabled, misfire_policy, catch_up_limit, retry,
            labels, next_run_at, webhook_secret, created_at, paused_reason, paused_at, paused_by, pause_on_failure,
            notify_run_succeeded, jitter_sec, next_nominal_at, action_after_completion, overlap)
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
   -- The same status rule as the API's (shared/db/repository.py schedule_from_row).
   AND (%(statuses)s::text[] IS NULL
        OR (CASE WHEN NOT enabled THEN 'PAUSED'
                 WHEN next_run_at IS NULL AND parked_run_id IS NULL THEN 'COMPLETED'
                 ELSE 'ACTIVE' END) = ANY(%(statuses)s::text[]))
   AND (%(target_kinds)s::text[] IS NULL OR target ->> 'kind' = ANY(%(target_kinds)s::text[]))
   AND (%(next_run_before)s::timestamptz IS NULL OR (enabled AND next_run_at < %(next_run_before)s::timestamptz))
   AND (%(next_run_after)s::timestamptz IS NULL OR (enabled AND next_run_at > %(next_run_after)s::timestamptz))
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
       -- The same status rule as the API's (shared/db/repository.py schedule_from_row).
       AND (%(statuses)s::text[] IS NULL
            OR (CASE WHEN NOT enabled THEN 'PAUSED'
                     WHEN next_run_at IS NULL AND parked_run_id IS NULL THEN 'COMPLETED'
                     ELSE 'ACTIVE' END) = ANY(%(statuses)s::text[]))
       AND (%(target_kinds)s::text[] IS NULL OR target ->> 'kind' = ANY(%(target_kinds)s::text[]))
       AND (%(next_run_before)s::timestamptz IS NULL OR (enabled AND next_run_at < %(next_run_before)s::timestamptz))
       AND (%(next_run_after)s::timestamptz IS NULL OR (enabled AND next_run_at > %(next_run_after)s::timestamptz))
     LIMIT %(cap)s) AS matching;

-- Lifecycle events (sql/0070): the outbox's relay (worker/events.py, through worker/store.py).

-- name: schedule_event_lock_relay
-- One relay at a time (until the transaction ends): events leave in the order they were written; a worker
-- that does not get the lock leaves the draining to the one that has it.
SELECT pg_try_advisory_xact_lock(hashtextextended('scheduler_event_relay', 5309)) AS locked;

-- name: schedule_event_claim
-- The oldest events of the outbox, locked until the relay deleted them (or its transaction ended); `held`: ones
-- whose publish failed a moment ago (their tenant's stream is unavailable), left out so they do not block
-- every other tenant's events behind them.
SELECT seq, id::text, tenant_id, schedule_id::text, type, at, actor, reason, state, run
  FROM schedule_events
 WHERE seq <> ALL(%(held)b::bigint[])
 ORDER BY seq
 LIMIT %(limit)s
   FOR UPDATE SKIP LOCKED;

-- name: schedule_event_delete_many
-- Events the tenants' streams acknowledged: relayed, off the outbox.
DELETE FROM schedule_events WHERE seq = ANY(%(seqs)b::bigint[]);

-- name: schedule_delete_completed
-- actionAfterCompletion DELETE: remove up to `limit` completed schedules whose runs are all finished (sql/0070).
SELECT scheduler_delete_completed(%(limit)s) AS deleted;
