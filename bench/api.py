"""`python -m bench --mode api`: create and list throughput of ONE tenant as it grows.

16 concurrent clients POST /schedules into one tenant for a few seconds (creates/s, latency p50/p99), then the
tenant is grown by direct COPY (the "tenant already holds N" part) and the same is measured again at each size,
with GET /schedules at random keyset positions, the first page and the deepest `page` still allowed, and
POST /schedules:batch of 1,000.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import psycopg

from bench.infra import Lab, cpu_seconds, percentile, postmaster_pid, record, tree_cpu_seconds
from shared.pagination import MAX_OFFSET, encode_cursor

CPU_PIDS: list[int] = []  # the API process
PG_PIDS: list[int] = []  # the postmaster


def realistic_body(name: str, i: int) -> dict[str, Any]:
    kind = i % 3
    trigger: dict[str, Any] = [
        {"type": "CRON", "cron": "0 9 * * 1-5"},
        {"type": "RRULE", "rrule": "FREQ=WEEKLY;BYDAY=MO,WE,FR;BYHOUR=7;BYMINUTE=30"},
        {"type": "FIXED_DELAY", "delaySec": 3600},
    ][kind]
    target: dict[str, Any] = [
        {"kind": "EVENT", "eventTopic": "orders.reminders"},
        {"kind": "QUEUE", "queue": {"topic": "jobs.reports"}},
        {"kind": "EVENT", "eventTopic": "billing.sync"},
    ][kind]
    return {
        "name": name,
        "description": "nightly report for the customer's account managers",
        "tz": "Europe/Berlin",
        "trigger": trigger,
        "target": target,
        "payload": {"customerId": f"c-{i}", "report": "weekly-usage", "recipients": ["a@example.com"], "n": i},
        "labels": {"team": "billing", "env": "prod", "tier": str(i % 4)},
        "retry": {"maxAttempts": 5, "backoffSec": 2, "maxBackoffSec": 120},
    }


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    errors: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0
    cpu: list[float] = field(default_factory=list)  # seconds of the API process and of Postgres

    def summary(self) -> dict[str, Any]:
        ok = len(self.latencies)
        return {
            "requests_per_sec": round(ok / self.elapsed, 1) if self.elapsed else 0.0,
            "ok": ok,
            "errors": self.errors,
            "p50_ms": round(percentile(self.latencies, 0.5) * 1000, 2),
            "p99_ms": round(percentile(self.latencies, 0.99) * 1000, 2),
            # Server CPU per request: what bounds throughput once the machine is not shared.
            "api_cpu_ms": round(self.cpu[0] / ok * 1000, 2) if ok and self.cpu else None,
            "pg_cpu_ms": round(self.cpu[1] / ok * 1000, 2) if ok and len(self.cpu) > 1 else None,
        }


async def _drive(clients: int, seconds: float, request: Any) -> Load:
    load = Load()
    cpu = [cpu_seconds(pid) for pid in CPU_PIDS] + [tree_cpu_seconds(pid) for pid in PG_PIDS]
    stop_at = time.perf_counter() + seconds

    async def client(c: int) -> None:
        n = 0
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            status = await request(c, n)
            n += 1
            if status in (200, 201):
                load.latencies.append(time.perf_counter() - start)
            else:
                load.errors[status] = load.errors.get(status, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    load.elapsed = time.perf_counter() - start
    after = [cpu_seconds(pid) for pid in CPU_PIDS] + [tree_cpu_seconds(pid) for pid in PG_PIDS]
    load.cpu = [b - a for a, b in zip(cpu, after, strict=True)]
    return load


def grow_tenant(url: str, tenant: str, target_size: int) -> int:
    """COPY schedules into ``tenant`` until it holds ``target_size`` (the counter trigger follows COPY too)."""
    with psycopg.connect(url) as conn:
        have = conn.execute("SELECT count(*) FROM schedules WHERE tenant_id = %s", (tenant,)).fetchone()
        missing = target_size - (have[0] if have else 0)
        if missing <= 0:
            return 0
        now = datetime.now(UTC)
        trigger = '{"type":"CRON","cron":"0 9 * * 1-5"}'
        target = '{"kind":"EVENT","eventTopic":"orders.reminders"}'
        labels = '{"team":"billing","env":"prod"}'
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY schedules (id, tenant_id, name, tz, trigger, target, payload, labels, misfire_policy,"
                " next_run_at, created_at, updated_at) FROM STDIN"
            ) as copy,
        ):
            prefix = uuid.uuid4().hex[:6]
            for i in range(missing):
                # Older than anything the API creates, spread over a year, due far ahead.
                created = now - timedelta(days=365) + timedelta(seconds=i * 31_536_000 / missing)
                copy.write_row(
                    (uuid.uuid4(), tenant, f"seed-{prefix}-{i}", "Europe/Berlin", trigger, target, '{"n":1}', labels,
                     "FIRE_ONCE", now + timedelta(days=30 + i % 300), created, created)
                )  # fmt: skip
        conn.commit()
    # Now rather than by autovacuum during the measurement (its CPU would be counted as the requests').
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) schedules")
    return missing


def random_positions(url: str, tenant: str, count: int) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT created_at, id::text FROM schedules TABLESAMPLE SYSTEM (5) WHERE tenant_id = %s LIMIT %s",
            (tenant, count * 4),
        ).fetchall()
    random.shuffle(rows)
    return [encode_cursor(created, sid) for created, sid in rows[:count]] or [""]


async def measure_size(
    base: str, url: str, token: str, tenant: str, size: int, seconds: float, clients: int
) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-Id": tenant}
    results: list[dict[str, Any]] = []
    tag = uuid.uuid4().hex[:6]
    connector = aiohttp.TCPConnector(limit=clients * 2)
    async with aiohttp.ClientSession(base, headers=headers, connector=connector) as http:

        async def create(c: int, n: int) -> int:
            body = realistic_body(f"api-{tag}-{c}-{n}", n)
            async with http.post("/schedules", json=body) as answer:
                await answer.read()
                return answer.status

        load = await _drive(clients, seconds, create)
        results.append({"what": "create", "tenant_size": size, "clients": clients, **load.summary()})

        cursors = random_positions(url, tenant, 500)

        async def list_at_cursor(c: int, n: int) -> int:
            cursor = cursors[(c * 7919 + n) % len(cursors)]
            async with http.get("/schedules", params={"pageSize": "20", **({"cursor": cursor} if cursor else {})}) as a:
                await a.read()
                return a.status

        load = await _drive(clients, seconds / 2, list_at_cursor)
        results.append({"what": "list cursor", "tenant_size": size, "clients": clients, **load.summary()})

        deepest = MAX_OFFSET // 20 + 1

        async def list_pages(c: int, n: int) -> int:
            page = 1 if n % 2 else deepest
            async with http.get("/schedules", params={"pageSize": "20", "page": str(page)}) as a:
                await a.read()
                return a.status

        load = await _drive(clients, seconds / 2, list_pages)
        results.append({"what": f"list page 1|{deepest}", "tenant_size": size, "clients": clients, **load.summary()})

        async def create_batch(c: int, n: int) -> int:
            items = [realistic_body(f"bulk-{tag}-{c}-{n}-{i}", i) for i in range(1000)]
            async with http.post("/schedules:batch", json={"items": items}) as answer:
                await answer.read()
                return answer.status

        load = await _drive(2, seconds / 2, create_batch)
        summary = load.summary()
        summary["schedules_per_sec"] = round(summary["requests_per_sec"] * 1000)
        results.append({"what": "batch 1000", "tenant_size": size, "clients": 2, **summary})
    return results


def run(sizes: list[int], seconds: float, clients: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with Lab() as lab:
        url = lab.database()
        base = lab.start_api(url)
        CPU_PIDS[:] = [lab.children[-1].pid]
        PG_PIDS[:] = [postmaster_pid(lab)]
        tenant = "bench-api"
        token = lab.token(tenant)
        print(
            f"{'what':<18} {'tenant':>9} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'api cpu':>8} {'pg cpu':>7}  errors",
            flush=True,
        )
        for size in sizes:
            grow_tenant(url, tenant, size)
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT count(*) FROM schedules WHERE tenant_id = %s", (tenant,)).fetchone()
            actual = row[0] if row else 0
            for result in asyncio.run(measure_size(base, url, token, tenant, actual, seconds, clients)):
                out.append(result)
                record({"mode": "api", **result})
                extra = f" ({result['schedules_per_sec']} schedules/s)" if "schedules_per_sec" in result else ""
                print(
                    f"{result['what']:<18} {result['tenant_size']:>9} {result['clients']:>7} "
                    f"{result['requests_per_sec']:>8.0f} {result['p50_ms']:>8.2f} {result['p99_ms']:>8.2f} "
                    f"{result['api_cpu_ms']:>6.2f}ms {result['pg_cpu_ms']:>5.2f}ms  "
                    f"{result['errors'] or ''}{extra}",
                    flush=True,
                )
    return out
