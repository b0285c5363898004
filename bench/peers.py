"""`make bench PEERS=1`: APScheduler 3 (the Python user's usual alternative) on the same embedded Postgres.

Its SQLAlchemyJobStore keeps the jobs in Postgres; N one-shot jobs due at one instant are added, the scheduler is
started, and fires are counted in-process (the job function records the time). ``misfire_grace_time=None``: its
default of 1 s silently drops most of a large burst, which would flatter neither side.
Needs the optional `peers` dependencies: `pip install -e '.[peers]'`.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.infra import Lab, percentile

_fired: list[tuple[float, float]] = []
_lock = threading.Lock()


def fire(due: float) -> None:
    now = time.time()
    with _lock:
        _fired.append((due, now))


def run_apscheduler(lab: Lab, n: int, timeout: float = 600.0) -> dict[str, Any]:
    try:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.background import BackgroundScheduler
    except ImportError as exc:
        raise SystemExit("peer mode needs the `peers` extra: .venv/bin/pip install -e '.[peers]'") from exc

    url = lab.database().replace("postgresql://", "postgresql+psycopg://", 1)
    _fired.clear()
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=url)},
        executors={"default": ThreadPoolExecutor(10)},
        job_defaults={"misfire_grace_time": None, "coalesce": False},
        timezone=UTC,
    )
    scheduler.start(paused=True)
    # Adding jobs is one INSERT each (minutes for a large N here): they are added to the paused scheduler with
    # one due instant, and the burst is timed from the moment it resumes with all of them due.
    t0 = datetime.now(UTC) + timedelta(seconds=1)
    for i in range(n):
        scheduler.add_job(fire, "date", run_date=t0, args=[t0.timestamp()], id=f"job-{i}")
    time.sleep(max(0.0, t0.timestamp() - time.time()))
    resumed = time.time()
    scheduler.resume()
    deadline = time.monotonic() + timeout
    while len(_fired) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    scheduler.shutdown(wait=False)
    fired = list(_fired)
    drain = max(t for _, t in fired) - resumed if fired else float("nan")
    lags = [t - max(due, resumed) for due, t in fired]
    return {
        "fires_per_sec": len(fired) / drain if drain > 0 else float("nan"),
        "drain_sec": round(drain, 3),
        "p50": percentile(lags, 0.5),
        "p95": percentile(lags, 0.95),
        "p99": percentile(lags, 0.99),
        "missed": n - len(fired),
    }
