-- The fleet's heartbeat: each worker process upserts its row about once a second. The rows are the fleet's
-- uptime, [started_at, beat_at] per process: an occurrence counts as missed (its misfire policy applies) only
-- if no worker was alive at its due time, not merely because the fleet was busy. Rows of processes gone for
-- longer than the history a worker keeps are deleted by the workers themselves.
CREATE TABLE fleet_heartbeats (
    worker_id   text        PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    beat_at     timestamptz NOT NULL
);

-- No tenant data: no row-level security. Workers write it (and prune it); the API does not need it.
GRANT SELECT, INSERT, UPDATE, DELETE ON fleet_heartbeats TO scheduler_worker;
