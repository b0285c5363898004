-- Overlap policy (issue 12): what an occurrence does when the previous run of its schedule is still in flight
-- (an HTTP call under way or retrying, a queue message no consumer acknowledged yet). ALLOW: it fires anyway;
-- SKIP: it is skipped (counted); BUFFER_ONE: one such occurrence waits and fires when the run finishes, others
-- are skipped; CANCEL_OTHER: the run in flight is cancelled (its HTTP call aborted, its message withdrawn) and
-- the new occurrence fires. worker/overlap.py decides; README "Overlap policy" documents it.
ALTER TABLE schedules
    ADD COLUMN overlap text NOT NULL DEFAULT 'ALLOW'
        CHECK (overlap IN ('ALLOW', 'SKIP', 'BUFFER_ONE', 'CANCEL_OTHER')),
    -- The run later occurrences wait for (its scheduled_for names its partition): the last one fired.
    ADD COLUMN overlap_run_id uuid,
    ADD COLUMN overlap_run_at timestamptz,
    -- BUFFER_ONE's waiting occurrence: a PENDING run with no lease, which no worker delivers until the run in
    -- flight finishes and releases it (lease_until set to then).
    ADD COLUMN overlap_buffered_run_id uuid,
    ADD COLUMN overlap_buffered_at timestamptz,
    -- Occurrences the policy did not fire (SKIP, a full buffer, or superseded within one claim).
    ADD COLUMN overlap_skipped bigint NOT NULL DEFAULT 0;

-- A finishing run finds the schedule waiting for it (or for its buffered successor) by these.
CREATE INDEX schedules_overlap_run_idx ON schedules (overlap_run_id) WHERE overlap_run_id IS NOT NULL;
CREATE INDEX schedules_overlap_buffered_idx ON schedules (overlap_buffered_run_id)
    WHERE overlap_buffered_run_id IS NOT NULL;

-- The overlap bookkeeping is the workers', like next_run_at: not an edit (no schedule.updated for it).
CREATE OR REPLACE FUNCTION scheduler_editable(s schedules) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_jsonb(s) - ARRAY['enabled', 'paused_reason', 'paused_at', 'paused_by', 'version', 'updated_at',
                               'next_run_at', 'next_nominal_at', 'last_run_at', 'parked_run_id',
                               'overlap_run_id', 'overlap_run_at', 'overlap_buffered_run_id',
                               'overlap_buffered_at', 'overlap_skipped'];
$$;

-- A buffered run has no lease, so nothing would ever deliver or cancel it once its schedule is gone: it is
-- cancelled with the schedule, whoever deletes it (the API, actionAfterCompletion, an operator's psql). So is
-- the run in flight when it is such a run not handed over yet.
CREATE FUNCTION scheduler_cancel_buffered() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE runs
       SET status = 'CANCELLED', finished_at = now(), next_attempt_at = NULL, lease_until = NULL,
           error = 'its schedule was deleted while this occurrence waited for the previous run (overlap BUFFER_ONE)'
     WHERE status = 'PENDING' AND lease_until IS NULL
       AND ((id = OLD.overlap_buffered_run_id AND scheduled_for = OLD.overlap_buffered_at)
            OR (id = OLD.overlap_run_id AND scheduled_for = OLD.overlap_run_at));
    RETURN NULL;
END
$$;

CREATE TRIGGER schedules_cancel_buffered AFTER DELETE ON schedules
    FOR EACH ROW WHEN (OLD.overlap_buffered_run_id IS NOT NULL OR OLD.overlap_run_id IS NOT NULL)
    EXECUTE FUNCTION scheduler_cancel_buffered();
