"""Seeding schedules straight into the database, worker processes, and counting what was delivered."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from shared.db.repository import schedule_params
from shared.model import (
    MisfirePolicy,
    OneShotTrigger,
    OverlapPolicy,
    RetryPolicy,
    Schedule,
    ScheduleStatus,
    Target,
    Trigger,
)

ROOT = Path(__file__).resolve().parents[2]


def seed_due(
    db_url: str,
    tenant: str,
    dues: Iterable[datetime],
    target: Target,
    *,
    trigger: Trigger | None = None,
    policy: MisfirePolicy = MisfirePolicy.FIRE_ONCE,
    retry: RetryPolicy | None = None,
    overlap: OverlapPolicy = OverlapPolicy.ALLOW,
) -> list[str]:
    """One schedule per due time (ONE_SHOT at that time unless ``trigger``); returns their ids."""
    now = datetime.now(UTC)
    rows = []
    for i, due in enumerate(dues):
        rows.append(
            Schedule(
                id=str(uuid.uuid4()),
                tenant_id=tenant,
                name=f"s-{i}-{uuid.uuid4().hex[:6]}",
                description=None,
                tz="UTC",
                trigger=trigger or OneShotTrigger(start_at=due),
                target=target,
                payload={"i": i},
                enabled=True,
                misfire_policy=policy,
                catch_up_limit=100,
                retry=retry or RetryPolicy(),
                labels={},
                status=ScheduleStatus.ACTIVE,
                next_run_at=due,
                last_run_at=None,
                created_at=now,
                updated_at=now,
                version=1,
                overlap=overlap,
            )
        )
    columns = list(schedule_params(rows[0]))
    with psycopg.connect(db_url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY schedules ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(list(schedule_params(row).values()))
        conn.commit()
    return [r.id for r in rows]


def spawn_worker(db_url: str, nats_url: str, **env: str) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "POSTGRES_URL": db_url,
        "NATS_URL": nats_url,
        "LOG_LEVEL": "warning",
        "WORKER_POLL_MAX_SEC": "0.2",
        "HTTP_TARGET_ALLOW_CIDRS": "127.0.0.0/8",  # the tests' receivers
        "WORKER_METRICS_PORT": "0",  # several workers on one machine
        **env,
    }
    return subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=environment)


def run_rows(db_url: str, tenant: str) -> list[tuple[str, str, int]]:
    """(idempotency key, status, attempt) of every run of ``tenant``."""
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT idempotency_key, status, attempt FROM runs WHERE tenant_id = %s", (tenant,)
        ).fetchall()


def statuses(db_url: str, tenant: str) -> Counter[str]:
    return Counter(status for _, status, _ in run_rows(db_url, tenant))


def open_runs(db_url: str, tenant: str) -> int:
    return sum(status in ("PENDING", "RETRYING") for _, status, _ in run_rows(db_url, tenant))


def duplicates(received: Counter[str]) -> int:
    return sum(n - 1 for n in received.values())
