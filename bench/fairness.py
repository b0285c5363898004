"""`python -m bench.fairness`: a quiet tenant's lag behind another tenant's burst, and the burst's fires/s.

Tenant A has N ONE_SHOT EVENT schedules due at one instant T0; tenant B one schedule due at T0 + 0.2 s. K worker
processes fire them. Reported: B's lag (run started - scheduled time), A's drain (fires/s from T0 to A's last
start), A's lag percentiles, and the CPU time per fire of the workers and of Postgres (robust to a noisy
machine, unlike fires/s). ``--root`` runs the workers of another checkout (e.g. the code before a change)
against the same servers, for a before/after comparison in one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from devstack.nats import EmbeddedNats
from devstack.postgres import EmbeddedPostgres
from shared.db.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]


def seed(url: str, tenant: str, count: int, due: datetime) -> None:
    target = '{"kind":"EVENT","eventTopic":"fair.fire"}'
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY schedules (id, tenant_id, name, tz, trigger, target, misfire_policy, next_run_at) FROM STDIN"
        ) as copy:
            for i in range(count):
                trigger = f'{{"type":"ONE_SHOT","startAt":"{due.isoformat()}"}}'
                copy.write_row((uuid.uuid4(), tenant, f"s{i}", "UTC", trigger, target, "FIRE_ONCE", due))
        conn.commit()


def cpu_sec(pid: int) -> float:
    """utime + stime of a live process (0 if gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def measure(url: str, nats_url: str, root: Path, burst: int, workers: int, postmaster: int) -> dict[str, float]:
    env = {**os.environ, "POSTGRES_URL": url, "NATS_URL": nats_url, "LOG_LEVEL": "error", "WORKER_METRICS_PORT": "0"}
    procs = [subprocess.Popen([sys.executable, "-m", "worker"], cwd=root, env=env) for _ in range(workers)]
    try:
        # Every worker connected (and so claiming) before the burst: startup time is not lag.
        with psycopg.connect(url, autocommit=True) as conn:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'scheduler-worker'"
                ).fetchone()
                if row and row[0] >= 2 * workers:
                    break
                time.sleep(0.1)
        time.sleep(1.0)
        before = {pid: cpu_sec(pid) for pid in [p.pid for p in procs] + children(postmaster)}
        t0 = datetime.now(UTC) + timedelta(seconds=1.0)
        seed(url, "tenant-a", burst, t0)
        seed(url, "tenant-b", 1, t0 + timedelta(seconds=0.2))
        deadline = time.monotonic() + 120
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                row = conn.execute("SELECT count(*) FROM runs WHERE status = 'SUCCEEDED'").fetchone()
                if row and row[0] >= burst + 1:
                    break
                time.sleep(0.2)
            row = conn.execute(
                """SELECT extract(epoch FROM max(started_at) FILTER (WHERE tenant_id = 'tenant-b')
                                           - max(scheduled_for) FILTER (WHERE tenant_id = 'tenant-b')),
                          extract(epoch FROM max(started_at) FILTER (WHERE tenant_id = 'tenant-a') - %(t0)s),
                          percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM
                              started_at - scheduled_for)) FILTER (WHERE tenant_id = 'tenant-a')
                     FROM runs""",
                {"t0": t0},
            ).fetchone()
        worker_cpu = sum(cpu_sec(p.pid) - before.get(p.pid, 0.0) for p in procs)
        pg_cpu = sum(cpu_sec(pid) - before.get(pid, 0.0) for pid in children(postmaster))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    assert row is not None
    b_lag, a_drain, (a_p50, a_p99) = float(row[0]), float(row[1]), row[2]
    return {
        "b_lag": b_lag,
        "a_fires_per_sec": burst / a_drain,
        "a_p50": a_p50,
        "a_p99": a_p99,
        "worker_us": worker_cpu / (burst + 1) * 1e6,
        "pg_us": pg_cpu / (burst + 1) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--burst", type=int, default=6000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", action="append", default=[], help="checkout(s) whose workers to measure")
    args = parser.parse_args()
    roots = [Path(r) for r in args.root] or [ROOT]
    tmp = Path(tempfile.mkdtemp(prefix="sched-fair-", dir="/tmp"))
    tmp.chmod(0o755)
    pg = EmbeddedPostgres(tmp / "pg")
    nats_server = EmbeddedNats(tmp / "nats", throwaway=True)
    try:
        pg.start()
        nats_url = nats_server.start()
        template = "fair_template"
        migrate(pg.create_database(template))
        postmaster = pg._read_postmaster()
        assert postmaster is not None
        print(
            f"{'workers of':<28} {'B lag s':>8} {'A fires/s':>10} {'A p50 s':>8} {'A p99 s':>8} "
            f"{'worker µs/fire':>14} {'pg µs/fire':>10}",
            flush=True,
        )
        for _ in range(args.rounds):
            for root in roots:  # interleaved, so that the machine's noise hits both alike
                url = pg.create_database(f"fair_{uuid.uuid4().hex[:8]}", template=template)
                r = measure(url, nats_url, root, args.burst, args.workers, postmaster.pid)
                print(
                    f"{str(root)[-28:]:<28} {r['b_lag']:>8.3f} {r['a_fires_per_sec']:>10.0f} "
                    f"{r['a_p50']:>8.3f} {r['a_p99']:>8.3f} {r['worker_us']:>14.0f} {r['pg_us']:>10.0f}",
                    flush=True,
                )
    finally:
        nats_server.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
