"""A quiet tenant's schedule behind another tenant's burst fires within the fleet's normal lag (real workers)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from shared.model import EventTarget
from tests.integration.fleet_tools import seed_due, spawn_worker, statuses
from tests.integration.receivers import eventually

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait(10)


def beating(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM fleet_heartbeats WHERE beat_at > now() - interval '5 seconds'"
        ).fetchone()
    return int(row[0]) if row else 0


async def test_a_quiet_tenant_fires_on_time_while_a_burst_drains(db_url, nats_url, workers):
    loud, quiet = f"loud-{uuid.uuid4().hex[:6]}", f"quiet-{uuid.uuid4().hex[:6]}"
    burst = 4000
    workers.extend(spawn_worker(db_url, nats_url) for _ in range(2))
    await eventually(lambda: beating(db_url) >= 2, timeout=30, step=0.1)  # both claiming before the burst
    t0 = datetime.now(UTC) + timedelta(seconds=1.5)
    seed_due(db_url, loud, [t0] * burst, EventTarget(event_topic=f"fair.{loud}"))
    seed_due(db_url, quiet, [t0 + timedelta(seconds=0.2)], EventTarget(event_topic=f"fair.{quiet}"))
    await eventually(lambda: statuses(db_url, loud)["SUCCEEDED"] == burst, timeout=60, step=0.2)
    await eventually(lambda: statuses(db_url, quiet)["SUCCEEDED"] == 1, timeout=10, step=0.1)
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            """SELECT extract(epoch FROM max(created_at - scheduled_for) FILTER (WHERE tenant_id = %(quiet)s)),
                      extract(epoch FROM max(started_at) FILTER (WHERE tenant_id = %(loud)s) - %(t0)s)
                 FROM runs WHERE tenant_id IN (%(quiet)s, %(loud)s)""",
            {"quiet": quiet, "loud": loud, "t0": t0},
        ).fetchone()
    assert row is not None
    quiet_lag, drain = float(row[0]), float(row[1])
    print(f"\nfairness: quiet tenant lag {quiet_lag:.3f}s while a {burst}-fire burst drained in {drain:.2f}s")
    # Claim lag (claimed - due). Oldest-first claiming makes it wait for most of the burst (~ the drain - 0.2 s).
    assert quiet_lag < 0.25 * drain
