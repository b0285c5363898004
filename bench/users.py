"""`make bench` (the main mode): what users see.

For each configuration, N schedules are created THROUGH THE API (POST /schedules:batch, realistic bodies with
labels and a payload, the four trigger types mixed, all first due at one instant T0), K workers fire them, and
every delivery is observed where a user would observe it:

* EVENT (JetStream): the tenant's event stream captures the subject, so each publish is acked before its run is
  SUCCEEDED (the default, `delivery: DURABLE`); observed by a NATS subscriber on the tenant's namespace;
* EVENT (core): `delivery: AT_MOST_ONCE`, a fire-and-forget core publish; observed by a NATS subscriber;
* HTTP: a local aiohttp receiver answering 200;
* QUEUE: the topic's work queue stream (made by the API with the schedules), drained by a JetStream pull
  consumer.

A configuration KIND:N@RATE is a steady load instead: N ONE_SHOTs due evenly at RATE per second (its lag is
the one to read; fires/s is then the offered rate when the fleet keeps up).

Reported per configuration: fires/s (deliveries / drain time), drain time (T0 to the last delivery), lag
(delivery received - scheduled time) p50/p95/p99, duplicates (a key received twice) and lost (never received).
The bare-SQL limit at batch 100 and 500 (bench/direct.py's single statement, 2 connections) is measured in the
same run. A table is printed and one JSON line per configuration appended to .bench/results.jsonl.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import nats
import psycopg
from aiohttp import web
from nats.js.api import AckPolicy, ConsumerConfig

from bench import direct
from bench.infra import Lab, cpu_seconds, percentile, record
from devstack.processes import free_port
from shared.messaging.subjects import Namespace

# Topics, relative to each tenant's namespace (the API and workers run with the default NATS_SUBJECT_PREFIX).
EVENT_JS_SUBJECT = "bench.js.fire"
EVENT_CORE_SUBJECT = "bench.core.fire"
QUEUE_TOPIC = "bench.queue"
NAMESPACE = Namespace()
BATCH_ITEMS = 1000
CREATE_RATE = [700.0]  # schedules/s through POST /schedules:batch, updated by each burst
QUIET_SEC = 15.0  # no new delivery for this long: what is missing is lost


@dataclass
class Observed:
    """Deliveries by idempotency key: the first arrival's wall time, and how often each key arrived."""

    first: dict[str, float] = field(default_factory=dict)
    times: Counter[str] = field(default_factory=Counter)
    last_at: float = 0.0
    expected: set[str] = field(default_factory=set)  # schedule ids of the burst being measured
    arrived: int = 0  # of them, at least once

    def saw(self, key: str | None) -> None:
        if not key:
            return
        now = time.time()
        self.times[key] += 1
        if key not in self.first:
            self.first[key] = now
            if key.partition(":")[0] in self.expected:
                self.arrived += 1
        self.last_at = now

    def expect(self, ids: set[str]) -> None:
        self.expected = ids
        self.arrived = sum(1 for key in self.first if key.partition(":")[0] in ids)


class Receivers:
    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.seen = Observed()
        self.http_url = ""
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.nc = await nats.connect(self.nats_url, pending_size=256 * 1024 * 1024)
        self.js = self.nc.jetstream()

        async def on_event(msg: Any) -> None:
            self.seen.saw((msg.headers or {}).get("Nats-Msg-Id"))

        # Every tenant's events: each configuration runs in a tenant of its own.
        events = NAMESPACE.event_subject("*", "bench.*.fire")
        await self.nc.subscribe(events, cb=on_event, pending_msgs_limit=1_000_000)

        async def on_http(request: web.Request) -> web.Response:
            self.seen.saw(request.headers.get("Idempotency-Key"))
            return web.Response(status=200)

        app = web.Application()
        app.router.add_post("/hook", on_http)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port, backlog=1024).start()
        self.http_url = f"http://127.0.0.1:{port}/hook"

    async def consume_queue(self, tenant: str) -> None:
        """Drain ``tenant``'s QUEUE topic: its work queue stream, which the API made with the schedules."""
        pull = await self.js.pull_subscribe(
            NAMESPACE.queue_subject(tenant, QUEUE_TOPIC),
            durable="bench",
            stream=NAMESPACE.queue_stream(tenant, QUEUE_TOPIC),
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
        )
        self._tasks.append(asyncio.create_task(self._drain_queue(pull)))

    async def _drain_queue(self, pull: Any) -> None:
        while True:
            try:
                messages = await pull.fetch(512, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            for msg in messages:
                self.seen.saw((msg.headers or {}).get("Nats-Msg-Id"))
                await msg.ack()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.nc.close()
        if self._runner:
            await self._runner.cleanup()


def target_for(kind: str, http_url: str) -> dict[str, Any]:
    if kind == "event-js":
        return {"kind": "EVENT", "eventTopic": EVENT_JS_SUBJECT}
    if kind == "event-core":
        return {"kind": "EVENT", "eventTopic": EVENT_CORE_SUBJECT, "delivery": "AT_MOST_ONCE"}
    if kind == "queue":
        return {"kind": "QUEUE", "queue": {"topic": QUEUE_TOPIC}}
    return {"kind": "HTTP", "http": {"url": http_url, "method": "POST", "timeoutSec": 10}}


def due_time(i: int, n: int, t0: datetime, spread_sec: float) -> datetime:
    """When the i-th of ``n`` schedules is first due: all at ``t0``, or evenly over ``spread_sec`` from it."""
    return t0 + timedelta(seconds=spread_sec * i / n) if spread_sec else t0


def trigger_due_at(i: int, at: datetime, triggers: str) -> dict[str, Any]:
    """The i-th trigger of the mix, first due exactly at ``at`` (UTC; CRON and RRULE need a whole second)."""
    text = at.isoformat().replace("+00:00", "Z")
    kind = triggers if triggers != "mixed" else ("ONE_SHOT", "CRON", "RRULE", "FIXED_DELAY")[i % 4]
    if kind == "ONE_SHOT":
        return {"type": "ONE_SHOT", "startAt": text}
    if kind == "CRON":  # daily at that time of day, seconds first
        return {"type": "CRON", "cron": f"{at.second} {at.minute} {at.hour} * * *", "startAt": text}
    if kind == "RRULE":
        return {"type": "RRULE", "rrule": "FREQ=DAILY", "startAt": text}
    return {"type": "FIXED_DELAY", "delaySec": 86400, "startAt": text}


def body(i: int, tag: str, target: dict[str, Any], trigger: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": f"{tag}-{i}",
        "description": "reminder for the account team",
        "trigger": trigger,
        "target": target,
        "payload": {"orderId": f"o-{i}", "customer": {"id": f"c-{i % 997}", "tier": "gold"}, "items": [1, 2, 3]},
        "labels": {"team": "orders", "env": "bench", "shard": str(i % 16)},
        "retry": {"maxAttempts": 5, "backoffSec": 1, "maxBackoffSec": 30},
    }


async def create_through_api(
    base: str,
    token: str,
    tenant: str,
    n: int,
    t0: datetime,
    kind: str,
    triggers: str,
    http_url: str,
    spread_sec: float = 0.0,
) -> set[str]:
    """Create ``n`` schedules in batches of 1,000 (two requests in flight), checking each is first due when
    meant; their ids."""
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-Id": tenant}
    target = target_for(kind, http_url)
    tag = uuid.uuid4().hex[:6]
    ids: set[str] = set()
    async with aiohttp.ClientSession(base, headers=headers) as http:
        semaphore = asyncio.Semaphore(2)

        async def one(start: int) -> None:
            indexes = range(start, min(n, start + BATCH_ITEMS))
            items = [body(i, tag, target, trigger_due_at(i, due_time(i, n, t0, spread_sec), triggers)) for i in indexes]
            async with semaphore, http.post("/schedules:batch", json={"items": items}) as answer:
                if answer.status != 201:
                    raise RuntimeError(f"batch create failed: {answer.status} {await answer.text()}")
                for i, s in zip(indexes, (await answer.json())["items"], strict=True):
                    expected = due_time(i, n, t0, spread_sec)
                    if datetime.fromisoformat(s["nextRunAt"]) != expected:
                        raise RuntimeError(f"{s['trigger']} is first due at {s['nextRunAt']}, not {expected}")
                    ids.add(s["id"])

        await asyncio.gather(*(one(start) for start in range(0, n, BATCH_ITEMS)))
    return ids


def scheduled_for(key: str) -> float:
    return datetime.fromisoformat(key.partition(":")[2]).timestamp()


@dataclass
class Outcome:
    config: str
    n: int
    workers: int
    fires_per_sec: float
    drain_sec: float
    p50: float
    p95: float
    p99: float
    duplicates: int
    lost: int
    cpu_per_fire_us: float
    create_sec: float

    def row(self) -> str:
        return (
            f"{self.config:<26} {self.n:>7} {self.workers:>2} {self.fires_per_sec:>9.0f} {self.drain_sec:>7.2f} "
            f"{self.p50:>7.3f} {self.p95:>7.3f} {self.p99:>7.3f} {self.duplicates:>5} {self.lost:>5} "
            f"{self.cpu_per_fire_us:>7.0f}"
        )


HEADER = (
    f"{'config':<26} {'N':>7} {'K':>2} {'fires/s':>9} {'drain s':>7} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7} "
    f"{'dups':>5} {'lost':>5} {'µs/fire':>7}"
)


async def burst(
    lab: Lab,
    base: str,
    receivers: Receivers,
    workers: list[subprocess.Popen[bytes]],
    kind: str,
    n: int,
    triggers: str,
    profile_dir: Path | None,
    rate: float = 0.0,
) -> Outcome:
    """``rate``: a steady load (ONE_SHOTs due evenly at ``rate``/s) instead of a burst at one instant."""
    spread = n / rate if rate else 0.0
    if rate:
        triggers = "ONE_SHOT"  # CRON and RRULE have whole seconds: a spread of them would be bursts per second
    tenant = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
    token = lab.token(tenant)
    # Every schedule must exist before T0: the lead follows the create rate seen so far (slow on a busy machine).
    lead = 5.0 + n / (0.6 * CREATE_RATE[0])
    t0 = (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)
    started = time.perf_counter()
    ids = await create_through_api(base, token, tenant, n, t0, kind, triggers, receivers.http_url, spread)
    create_sec = time.perf_counter() - started
    CREATE_RATE[0] = n / create_sec
    if kind == "queue":
        await receivers.consume_queue(tenant)
    if datetime.now(UTC) >= t0:
        raise RuntimeError(f"creating {n} schedules took {create_sec:.1f} s, past T0: raise the lead time")
    await asyncio.sleep(max(0.0, t0.timestamp() - time.time() - 0.3))
    spy_sec = 4 + (spread or n / 3000)
    spies = [_py_spy(w.pid, profile_dir / f"{kind}-{w.pid}.txt", spy_sec) for w in workers] if profile_dir else []
    cpu_before = [cpu_seconds(w.pid) for w in workers]
    seen = receivers.seen
    seen.expect(ids)
    deadline = time.time() + 600
    while True:
        await asyncio.sleep(0.1)
        if seen.arrived >= n:
            break
        quiet = time.time() - max(seen.last_at, t0.timestamp() + spread)
        if quiet > QUIET_SEC or time.time() > deadline:
            break
        if any(w.poll() is not None for w in workers):
            raise RuntimeError("a worker exited during the burst")
    await asyncio.sleep(0.5)  # late duplicates
    cpu = sum(cpu_seconds(w.pid) - before for w, before in zip(workers, cpu_before, strict=True))
    for spy in spies:
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(60)
    ours = {k: t for k, t in seen.first.items() if k.partition(":")[0] in ids}
    lags = [t - scheduled_for(k) for k, t in ours.items()]
    drain = max(ours.values()) - t0.timestamp() if ours else float("nan")
    dups = sum(c - 1 for k, c in seen.times.items() if c > 1 and k.partition(":")[0] in ids)
    return Outcome(
        config=f"{kind}/{triggers}" + (f"@{rate:.0f}/s" if rate else ""),
        n=n,
        workers=len(workers),
        fires_per_sec=len(ours) / drain if drain > 0 else float("nan"),
        drain_sec=drain,
        p50=percentile(lags, 0.5),
        p95=percentile(lags, 0.95),
        p99=percentile(lags, 0.99),
        duplicates=dups,
        lost=n - len(ours),
        cpu_per_fire_us=cpu / max(1, len(ours)) * 1e6,
        create_sec=create_sec,
    )


def _py_spy(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    out.parent.mkdir(parents=True, exist_ok=True)
    command = ["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds) + 1), "--rate", "200",
               "--format", "raw", "--output", str(out), "--nonblocking"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def seed_background(url: str, count: int) -> None:
    """``count`` schedules of 100 other tenants, due a year ahead: the table users' bursts run in."""
    if count <= 0:
        return
    now = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY schedules (id, tenant_id, name, tz, trigger, target, payload, labels, misfire_policy,"
                " next_run_at) FROM STDIN"
            ) as copy,
        ):
            for i in range(count):
                copy.write_row(
                    (uuid.uuid4(), f"other-{i % 100}", f"bg-{i}", "UTC", '{"type":"CRON","cron":"0 0 1 1 *"}',
                     '{"kind":"EVENT","eventTopic":"other.fire"}', '{"n":1}', '{"team":"x"}', "FIRE_ONCE",
                     now + timedelta(days=365, seconds=i))
                )  # fmt: skip
        conn.commit()
        conn.execute("ANALYZE schedules")
        conn.commit()


def run(
    configs: list[tuple[str, int, float]],
    worker_counts: list[int],
    triggers: str,
    background: int,
    bare_size: int,
    peers: bool,
    profile_dir: Path | None,
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    with Lab() as lab:
        for k in worker_counts:
            url = lab.database()
            seed_background(url, background)
            base = lab.start_api(url)
            workers = lab.start_workers(url, k)
            try:
                outcomes += asyncio.run(_bursts(lab, base, workers, configs, triggers, profile_dir, background))
            finally:
                lab.stop([*workers, *lab.children])
        print(f"\nbare SQL (claim + advance + history in one statement, 2 connections, {bare_size} due rows):")
        bare = {}
        for batch in (100, 500):
            r = direct.run_bare(lab.database(), bare_size, 2, batch)
            bare[batch] = r.fires_per_sec
            print(f"  batch {batch:>3}: {r.fires_per_sec:>8.0f} rows/s  (lag p99 {r.p99:.3f} s)", flush=True)
            record({"mode": "users", "config": f"bare-sql/batch{batch}", "n": bare_size, "workers": 2,
                    "fires_per_sec": round(r.fires_per_sec), "p50": r.p50, "p95": r.p95, "p99": r.p99})  # fmt: skip
        for o in outcomes:
            if "@" not in o.config:  # a steady load's fires/s is its offered rate
                print(f"  {o.config:<16} K={o.workers}: {o.fires_per_sec / bare[500]:.2f} of bare-SQL at batch 500")
        if peers:
            from bench import peers as peer_bench

            n = max((n for _, n, rate in configs if not rate), default=10_000)
            peer = peer_bench.run_apscheduler(lab, n)
            print(
                f"\nAPScheduler 3 (SQLAlchemyJobStore on the same Postgres, {n} due at once): "
                f"{peer['fires_per_sec']:.0f} fires/s, lag p99 {peer['p99']:.2f} s, {peer['missed']} never fired"
            )
            for o in (o for o in outcomes if "@" not in o.config):
                print(
                    f"  {o.config:<16} K={o.workers} N={o.n}: "
                    f"{o.fires_per_sec / peer['fires_per_sec']:.1f}x APScheduler 3"
                )
            record({"mode": "peers", "config": "apscheduler3-sqlalchemy", "n": n, **peer})
    return outcomes


async def _bursts(
    lab: Lab,
    base: str,
    workers: list[subprocess.Popen[bytes]],
    configs: list[tuple[str, int, float]],
    triggers: str,
    profile_dir: Path | None,
    background: int,
) -> list[Outcome]:
    receivers = Receivers(lab.nats_url)
    await receivers.start()
    out = []
    print(HEADER, flush=True)
    try:
        for kind, n, rate in configs:
            try:
                o = await burst(lab, base, receivers, workers, kind, n, triggers, profile_dir, rate)
            except RuntimeError as exc:  # one configuration that could not be set up does not end the run
                print(f"{kind:<16} {n:>7} {len(workers):>2}  not measured: {exc}", flush=True)
                continue
            out.append(o)
            print(o.row(), flush=True)
            record({"mode": "users", **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(o).items()},
                    "background": background})  # fmt: skip
    finally:
        await receivers.stop()
    return out
