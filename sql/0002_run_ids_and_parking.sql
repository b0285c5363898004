-- A scheduled occurrence's run id is now derived from its idempotency key (uuid5), so the primary key alone
-- stops one occurrence from being recorded twice: the second unique index only cost every insert and update.
ALTER TABLE runs DROP CONSTRAINT runs_idempotency_key_key;

-- Re-arming a FIXED_DELAY schedule finds it by the run it waits for; few rows are parked at any time.
CREATE INDEX schedules_parked_idx ON schedules (parked_run_id) WHERE parked_run_id IS NOT NULL;
