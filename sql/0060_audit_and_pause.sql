-- The audit trail of schedule changes, and pausing with a reason.
--
-- schedule_audit is append-only for the API (no UPDATE or DELETE grant): each row is written in the same
-- transaction as the change it describes, so there is no change without its entry and no entry for a change
-- that rolled back. It has no foreign key to schedules: a deleted schedule's history (who deleted it) stays.
-- Snapshots are the schedule as the API shows it (secret header values masked, no webhook secret).
CREATE TABLE schedule_audit (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       text        NOT NULL,
    schedule_id     uuid        NOT NULL,
    action          text        NOT NULL,
    actor           text        NOT NULL,
    at              timestamptz NOT NULL,
    version_before  integer,
    version_after   integer,
    changed         jsonb       NOT NULL DEFAULT '[]',  -- the wire names of the fields that differ
    before          jsonb,
    after           jsonb,
    detail          jsonb
);

CREATE INDEX schedule_audit_schedule_idx ON schedule_audit (tenant_id, schedule_id, id DESC);

GRANT SELECT, INSERT ON schedule_audit TO scheduler_api;
ALTER TABLE schedule_audit ENABLE ROW LEVEL SECURITY;
CREATE POLICY schedule_audit_tenant ON schedule_audit TO scheduler_api
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

-- Why and since when (and by whom) a schedule is paused; NULL while it is enabled.
ALTER TABLE schedules ADD COLUMN paused_reason text;
ALTER TABLE schedules ADD COLUMN paused_at timestamptz;
ALTER TABLE schedules ADD COLUMN paused_by text;

-- A paused schedule has no next run (the API shows `nextRunAt: null`); resuming computes it afresh.
UPDATE schedules SET next_run_at = NULL WHERE NOT enabled AND next_run_at IS NOT NULL;
