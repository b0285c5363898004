-- Domain events of the schedule lifecycle, through an outbox (issue 12).
--
-- schedule_events is the outbox: a row is written by a trigger in the same transaction as the change it
-- announces (so no event for a change that rolled back, and no change without its event, whoever made it: the
-- API, a worker, an operator's psql). Workers relay the rows to the tenant's NATS event stream
-- (`<prefix>scheduler.<type>`, Nats-Msg-Id = id) and delete them once acknowledged.
--
-- The triggers cost the worker's hot path almost nothing: their WHEN clauses are plain column comparisons
-- evaluated by the executor (no function call) and false for an ordinary advance or a run succeeding, unless
-- the schedule opted in to run.succeeded events (runs.notify_succeeded, copied from the schedule when the run
-- is recorded, so the runs trigger needs no lookup to decide).

-- Pausing with a reason: the same columns as sql/0060 (i12-api) adds, so either order of merging works.
ALTER TABLE schedules ADD COLUMN IF NOT EXISTS paused_reason text;
ALTER TABLE schedules ADD COLUMN IF NOT EXISTS paused_at timestamptz;
ALTER TABLE schedules ADD COLUMN IF NOT EXISTS paused_by text;
-- Pause after this many consecutive failed runs (Temporal's pauseOnFailure); NULL: never.
ALTER TABLE schedules ADD COLUMN pause_on_failure integer CHECK (pause_on_failure IS NULL OR pause_on_failure > 0);
-- notify.runSucceeded: also announce every successful run (off by default: a row per run doubles the writes).
ALTER TABLE schedules ADD COLUMN notify_run_succeeded boolean NOT NULL DEFAULT false;
ALTER TABLE runs ADD COLUMN notify_succeeded boolean NOT NULL DEFAULT false;
-- jitterSec (shared/timing/jitter.py): next_run_at is when the occurrence is fired, next_nominal_at the
-- occurrence itself (its runs' scheduled_for and idempotency key) when the two differ; NULL: they do not.
ALTER TABLE schedules ADD COLUMN jitter_sec integer CHECK (jitter_sec IS NULL OR jitter_sec >= 0);
ALTER TABLE schedules ADD COLUMN next_nominal_at timestamptz;

CREATE TABLE schedule_events (
    seq          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id    text        NOT NULL,
    schedule_id  uuid        NOT NULL,
    type         text        NOT NULL,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor        text,
    reason       text,
    -- The schedule's row as it is after the change (before it, for a deletion), webhook secret removed; the
    -- relay renders it as the API shows a schedule (secret header values masked).
    state        jsonb,
    run          jsonb
);

GRANT INSERT ON schedule_events TO scheduler_api;
-- UPDATE only for the relay's FOR UPDATE lock: nobody updates an event.
GRANT SELECT, INSERT, UPDATE, DELETE ON schedule_events TO scheduler_worker;
ALTER TABLE schedule_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY schedule_events_tenant ON schedule_events TO scheduler_api
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
CREATE POLICY schedule_events_worker ON schedule_events TO scheduler_worker USING (true) WITH CHECK (true);

CREATE FUNCTION scheduler_event_insert(kind text, s schedules, reason text, run jsonb) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO schedule_events (tenant_id, schedule_id, type, actor, reason, state, run)
    VALUES (s.tenant_id, s.id, kind, NULLIF(current_setting('app.actor', true), ''), reason,
            to_jsonb(s) - 'webhook_secret', run);
$$;

-- The fields whose change is an `updated` (not the worker's bookkeeping, not pausing itself).
CREATE FUNCTION scheduler_editable(s schedules) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_jsonb(s) - ARRAY['enabled', 'paused_reason', 'paused_at', 'paused_by', 'version', 'updated_at',
                               'next_run_at', 'next_nominal_at', 'last_run_at', 'parked_run_id'];
$$;

CREATE FUNCTION scheduler_schedule_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM scheduler_event_insert('schedule.created', NEW, NULL, NULL);
        RETURN NULL;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM scheduler_event_insert('schedule.deleted', OLD, NULL, NULL);
        RETURN NULL;
    END IF;
    IF OLD.enabled AND NOT NEW.enabled THEN
        PERFORM scheduler_event_insert('schedule.paused', NEW, NEW.paused_reason, NULL);
    ELSIF NEW.enabled AND NOT OLD.enabled THEN
        PERFORM scheduler_event_insert('schedule.resumed', NEW, NULL, NULL);
    END IF;
    IF NEW.version IS DISTINCT FROM OLD.version
       AND (NEW.enabled IS NOT DISTINCT FROM OLD.enabled OR scheduler_editable(NEW) <> scheduler_editable(OLD)) THEN
        PERFORM scheduler_event_insert('schedule.updated', NEW, NULL, NULL);
    END IF;
    IF NEW.version IS NOT DISTINCT FROM OLD.version AND NEW.enabled AND OLD.enabled
       AND (OLD.next_run_at IS NOT NULL OR OLD.parked_run_id IS NOT NULL)
       AND NEW.next_run_at IS NULL AND NEW.parked_run_id IS NULL THEN
        -- A worker's advance (or a FIXED_DELAY's re-arm past its endAt) found no occurrence left: it will
        -- never fire again.
        PERFORM scheduler_event_insert('schedule.exhausted', NEW, NULL, NULL);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER schedules_events_write AFTER INSERT OR DELETE ON schedules
    FOR EACH ROW EXECUTE FUNCTION scheduler_schedule_events();
-- An advance (next_run_at, last_run_at, parking) of an ordinary schedule matches none of these: no call.
CREATE TRIGGER schedules_events_update AFTER UPDATE ON schedules
    FOR EACH ROW
    WHEN (NEW.version IS DISTINCT FROM OLD.version OR NEW.enabled IS DISTINCT FROM OLD.enabled
          OR ((OLD.next_run_at IS NOT NULL OR OLD.parked_run_id IS NOT NULL)
              AND NEW.next_run_at IS NULL AND NEW.parked_run_id IS NULL))
    EXECUTE FUNCTION scheduler_schedule_events();

CREATE FUNCTION scheduler_run_events() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    s schedules;
    streak integer;
BEGIN
    SELECT * INTO s FROM schedules WHERE id = NEW.schedule_id;
    IF NOT FOUND THEN
        RETURN NULL;  -- its schedule was deleted (and announced): nobody is left to tell about its runs
    END IF;
    PERFORM scheduler_event_insert(
        CASE NEW.status WHEN 'FAILED' THEN 'run.failed' ELSE 'run.succeeded' END, s, NULL,
        jsonb_build_object('id', NEW.id, 'status', NEW.status, 'scheduledFor', NEW.scheduled_for,
                           'manual', NEW.manual, 'idempotencyKey', NEW.idempotency_key, 'attempt', NEW.attempt,
                           'startedAt', NEW.started_at, 'finishedAt', NEW.finished_at,
                           'httpStatus', NEW.http_status, 'error', NEW.error));
    IF NEW.status = 'FAILED' AND s.pause_on_failure IS NOT NULL AND s.enabled THEN
        -- pauseOnFailure: the schedule's last N finished runs all failed (an AFTER trigger sees every row of
        -- the statement, so a batch of failures counts in full).
        SELECT count(*) FILTER (WHERE status = 'FAILED') INTO streak
          FROM (SELECT status FROM runs
                 WHERE schedule_id = s.id AND status IN ('SUCCEEDED', 'FAILED')
                 ORDER BY created_at DESC, id DESC
                 LIMIT s.pause_on_failure) AS recent;
        IF streak >= s.pause_on_failure THEN
            UPDATE schedules
               SET enabled = false, next_run_at = NULL, next_nominal_at = NULL, version = version + 1, updated_at = now(),
                   paused_reason = format('pauseOnFailure: %s consecutive failed run(s), the last %s',
                                          s.pause_on_failure, NEW.id),
                   paused_at = now(), paused_by = 'scheduler'
             WHERE id = s.id;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_events AFTER UPDATE OF status ON runs
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status
          AND (NEW.status = 'FAILED' OR (NEW.status = 'SUCCEEDED' AND NEW.notify_succeeded)))
    EXECUTE FUNCTION scheduler_run_events();

-- actionAfterCompletion (EventBridge's ActionAfterCompletion): DELETE removes a schedule once it is completed
-- (no occurrence left) and its last runs are finished, so a worker that dies mid-delivery still has the
-- schedule to deliver the rescued run with. Its runs stay readable (GET /runs/{id}); the deletion is announced
-- (schedule.deleted) by the trigger above. Workers have no DELETE on schedules: they call this function, which
-- can delete nothing else.
ALTER TABLE schedules ADD COLUMN action_after_completion text NOT NULL DEFAULT 'KEEP'
    CHECK (action_after_completion IN ('KEEP', 'DELETE'));
CREATE INDEX schedules_completed_delete_idx ON schedules (id)
    WHERE action_after_completion = 'DELETE' AND next_run_at IS NULL AND parked_run_id IS NULL AND enabled;

CREATE FUNCTION scheduler_delete_completed(max_rows integer) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH gone AS (
        DELETE FROM schedules AS s
         WHERE s.id IN (SELECT c.id FROM schedules AS c
                         WHERE c.action_after_completion = 'DELETE' AND c.next_run_at IS NULL
                           AND c.parked_run_id IS NULL AND c.enabled
                           AND NOT EXISTS (SELECT FROM runs AS r
                                            WHERE r.schedule_id = c.id AND r.status IN ('PENDING', 'RETRYING'))
                         LIMIT max_rows
                           FOR UPDATE SKIP LOCKED)
        RETURNING 1)
    SELECT count(*)::integer FROM gone;
$$;
REVOKE ALL ON FUNCTION scheduler_delete_completed(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION scheduler_delete_completed(integer) TO scheduler_worker;
