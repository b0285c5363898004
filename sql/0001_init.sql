-- Schedules and their run history. The runs table is also the outbox: a worker advances a schedule and
-- inserts the runs it owes in one transaction, then delivers them.

CREATE TABLE schedules (
    id              uuid PRIMARY KEY,
    tenant_id       text        NOT NULL,
    name            text        NOT NULL,
    description     text,
    tz              text        NOT NULL,
    trigger         jsonb       NOT NULL,
    target          jsonb       NOT NULL,
    payload         jsonb       NOT NULL DEFAULT 'null',
    enabled         boolean     NOT NULL DEFAULT true,
    misfire_policy  text        NOT NULL CHECK (misfire_policy IN ('FIRE_ONCE', 'SKIP', 'CATCH_UP')),
    catch_up_limit  integer     NOT NULL DEFAULT 100,
    retry           jsonb       NOT NULL DEFAULT '{}',
    labels          jsonb       NOT NULL DEFAULT '{}',
    -- NULL: exhausted, or a FIXED_DELAY schedule parked while parked_run_id is in flight.
    next_run_at     timestamptz,
    last_run_at     timestamptz,
    parked_run_id   uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    version         integer     NOT NULL DEFAULT 1,
    CONSTRAINT schedules_tenant_name_key UNIQUE (tenant_id, name)
);

-- The claim reads only enabled rows with a next_run_at, in time order: O(batch) at millions of rows.
CREATE INDEX schedules_due_idx ON schedules (next_run_at) WHERE enabled AND next_run_at IS NOT NULL;
CREATE INDEX schedules_tenant_list_idx ON schedules (tenant_id, created_at, id);
CREATE INDEX schedules_labels_idx ON schedules USING gin (labels jsonb_path_ops);

CREATE TABLE runs (
    id               uuid PRIMARY KEY,
    schedule_id      uuid        NOT NULL,
    tenant_id        text        NOT NULL,
    scheduled_for    timestamptz NOT NULL,
    manual           boolean     NOT NULL DEFAULT false,
    -- The same on every attempt and redelivery of this occurrence; receivers deduplicate on it.
    idempotency_key  text        NOT NULL,
    status           text        NOT NULL DEFAULT 'PENDING'
                     CHECK (status IN ('PENDING', 'RETRYING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    attempt          integer     NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    next_attempt_at  timestamptz,
    -- A run that is not finished when its lease ends is rescued by any worker.
    lease_until      timestamptz,
    leased_by        text,
    duration_ms      integer,
    http_status      integer,
    error            text,
    delivery         jsonb,
    trace_context    text,
    CONSTRAINT runs_idempotency_key_key UNIQUE (idempotency_key)
);

CREATE INDEX runs_schedule_idx ON runs (schedule_id, created_at DESC, id DESC);
-- Retention deletes by age; BRIN stays tiny on an append-mostly table.
CREATE INDEX runs_created_brin ON runs USING brin (created_at);
-- Only open runs are ever rescued: this index stays as small as the backlog.
CREATE INDEX runs_open_idx ON runs (lease_until) WHERE status IN ('PENDING', 'RETRYING');
