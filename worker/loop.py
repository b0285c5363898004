"""The worker: claim due schedules, record their runs, advance them (one transaction per batch), deliver.

Any number of these run side by side with no leader: ``FOR UPDATE SKIP LOCKED`` hands each due schedule to
exactly one of them, and the runs table is the outbox, so a run is recorded in the same transaction that
advances its schedule and is delivered after the commit. Runs whose worker died are rescued after their lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
import psycopg
import psycopg_pool
from loguru import logger
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from shared import metrics
from shared.db.pool import CONNECTION_ERRORS
from shared.db.queries import sql
from shared.db.run_ids import id_span, occurrence_run_id
from shared.model import (
    EventTarget,
    FixedDelayTrigger,
    MisfirePolicy,
    decode_retry,
    decode_target,
    decode_trigger,
)
from shared.timing.misfire import DuePlan, plan_due
from shared.tracing import tracer
from worker.delivery import Deliverer, run_timeout_sec
from worker.fire import Fire, RunUpdate, idempotency_key
from worker.progress import ProgressWriter

RESCUE_INTERVAL_SEC = 1.0
MIN_IDLE_SLEEP_SEC = 0.02
WAKEUP_CHANNEL = "scheduler_wakeup"

# MisfirePolicy(text) goes through Enum's metaclass call: a dict lookup per claimed row is ten times cheaper.
_POLICIES = {policy.value: policy for policy in MisfirePolicy}

# A schedule whose row cannot be planned (a bug, a zone missing after a tzdata change) is set aside this long
# instead of blocking every worker behind it.
POISON_BACKOFF = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    batch_size: int
    concurrency: int
    poll_max_sec: float
    lease_sec: float
    misfire_grace: timedelta
    shutdown_grace_sec: float = 20.0


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        config: WorkerConfig,
        pool: psycopg_pool.AsyncConnectionPool,
        deliverer: Deliverer,
        progress: ProgressWriter,
        clock: Callable[[], datetime],
        postgres_url: str,
    ) -> None:
        self.config = config
        self.pool = pool
        self.deliverer = deliverer
        self.progress = progress
        self.clock = clock
        self.postgres_url = postgres_url
        self.id = worker_id()
        self.stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._rescue_requested = False  # a NOTIFY: maybe a manual run to deliver now
        self._deliveries: dict[str, asyncio.Task[None]] = {}
        self.last_tick = time.monotonic()  # /ready: the claim loop went round recently

    # --- one batch ----------------------------------------------------------------------------------

    def capacity(self) -> int:
        return max(0, self.config.concurrency - len(self._deliveries))

    async def claim_once(self) -> int:
        """Claim up to a batch of due schedules, record and advance them, start their deliveries."""
        with tracer.start_as_current_span("schedule.claim") as span:
            claimed = await self._claim_once()
            span.set_attribute("scheduler.batch_size", claimed)
            return claimed

    async def _claim_once(self) -> int:
        limit = min(self.config.batch_size, self.capacity())
        if limit == 0:
            return 0
        now = self.clock()
        async with self.pool.connection() as conn:
            # One transaction in two round trips: the claim, then advance + record + commit. In pipeline mode the
            # statements up to the next Sync form one implicit transaction: fetching the claimed rows only asks
            # for a flush (the row locks stay held), and leaving the pipeline sends the Sync, which commits it, or
            # rolls it back if a statement failed. All writes are ONE statement, so whatever happens in between
            # (an exception, a cancellation) nothing can commit half of them. (psycopg's transaction() in
            # pipeline mode syncs after BEGIN, before and after COMMIT and on leaving: five round trips.)
            await conn.set_autocommit(True)
            try:
                async with conn.pipeline():
                    cur = await conn.execute(sql("schedule_claim_due"), {"now": now, "limit": limit})
                    rows = await cur.fetchall()
                    if not rows:
                        return 0
                    metrics.claim_batch.observe(len(rows))
                    fires, advance = self._plan(rows, now, budget=self.capacity())
                    params = advance | self._run_rows(fires, now)
                    await cur.execute(sql("schedule_advance_and_record"), params)
            finally:
                if conn.info.transaction_status == TransactionStatus.IDLE:
                    await conn.set_autocommit(False)  # as the pool's other users expect it
                else:  # broken, or interrupted before the Sync came back: the pool replaces a closed connection
                    await conn.close()
            # Committed: from here on the runs are recorded and may be delivered.
            if cur.rowcount != len(fires):
                # Some occurrence was already recorded (ON CONFLICT): that run is not ours to deliver; a schedule
                # parked behind it would wait for ever, so it is re-armed as if that run had just finished.
                recorded = {r[0] for r in await cur.fetchall()}
                for fire in fires:
                    if fire.run_id not in recorded and fire.rearm:
                        self.progress.rearm(fire.run_id, now)
                fires = [f for f in fires if f.run_id in recorded]
        self._start(fires)
        return len(advance["ids"])

    def _plan(self, rows: list[tuple[Any, ...]], now: datetime, budget: int) -> tuple[list[Fire], dict[str, list[Any]]]:
        """The runs the claimed rows owe and each row's new next_run_at.

        Rows beyond ``budget`` runs (CATCH_UP can make hundreds from one row) are left untouched: their lock ends
        with the transaction and they stay due for the next claim.
        """
        fires: list[Fire] = []
        advance: dict[str, list[Any]] = {"ids": [], "next_run_at": [], "last_run_at": [], "parked_run_id": []}
        for row in rows:
            if fires and len(fires) >= budget:
                break
            schedule_id = row[0]
            try:
                row_fires, plan = self._plan_row(row, now)
            except Exception:
                logger.exception("schedule {} cannot be planned; retrying it in {}", schedule_id, POISON_BACKOFF)
                advance["ids"].append(schedule_id)
                advance["next_run_at"].append(now + POISON_BACKOFF)
                advance["last_run_at"].append(None)
                advance["parked_run_id"].append(None)
                continue
            fires += row_fires
            advance["ids"].append(schedule_id)
            advance["next_run_at"].append(plan.next_run_at)
            advance["last_run_at"].append(plan.fire_at[-1] if plan.fire_at else None)
            advance["parked_run_id"].append(row_fires[-1].run_id if plan.parked and row_fires else None)
        return fires, advance

    def _plan_row(self, row: tuple[Any, ...], now: datetime) -> tuple[list[Fire], DuePlan]:
        # The columns of schedule_claim_due, in order (tuple rows: a dict per row costs more than its use).
        (
            schedule_id,
            tenant_id,
            tz,
            trigger,
            target,
            payload,
            retry,
            misfire_policy,
            catch_up_limit,
            due_at,
            webhook_secret,
        ) = row
        plan = plan_due(
            decode_trigger(trigger),
            tz,
            due_at,
            now,
            _POLICIES[misfire_policy],
            catch_up_limit,
            self.config.misfire_grace,
        )
        if plan.missed:
            metrics.missed.labels(misfire_policy, "skipped").inc(plan.skipped)
            metrics.missed.labels(misfire_policy, "fired").inc(plan.missed - plan.skipped)
        if plan.skipped:
            logger.info(
                "schedule {} skipped {} missed occurrence(s) (misfire policy {})",
                schedule_id,
                plan.skipped,
                misfire_policy,
            )
        decoded_target = decode_target(target)
        raw_payload = msgspec.Raw(payload)
        retry_policy = decode_retry(retry)
        fires = []
        for scheduled_for in plan.fire_at:
            key = idempotency_key(schedule_id, scheduled_for)
            fires.append(
                Fire(
                    run_id=occurrence_run_id(key, scheduled_for),
                    schedule_id=schedule_id,
                    tenant_id=tenant_id,
                    scheduled_for=scheduled_for,
                    key=key,
                    target=decoded_target,
                    payload=raw_payload,
                    retry=retry_policy,
                    webhook_secret=webhook_secret,
                    rearm=plan.parked,
                )
            )
        return fires, plan

    def _run_rows(self, fires: list[Fire], now: datetime) -> dict[str, Any]:
        leases: dict[float, datetime] = {}  # one lease end per target timeout, not one timedelta per fire
        lease_until = []
        for f in fires:
            timeout = run_timeout_sec(f)
            if (until := leases.get(timeout)) is None:
                until = leases[timeout] = now + timedelta(seconds=self.config.lease_sec + timeout)
            lease_until.append(until)
        return {
            "worker": self.id,
            "now": now,
            "run_ids": [f.run_id for f in fires],
            "schedule_ids": [f.schedule_id for f in fires],
            "tenant_ids": [f.tenant_id for f in fires],
            "scheduled_for": [f.scheduled_for for f in fires],
            "keys": [f.key for f in fires],
            "lease_until": lease_until,
        }

    async def rescue_once(self) -> int:
        """Deliver open runs whose lease expired: a dead worker's, or manual runs queued by the API."""
        limit = min(self.config.batch_size, self.capacity())
        if limit == 0:
            return 0
        now = self.clock()
        async with self.pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                sql("run_lease_expired"),
                {"now": now, "limit": limit, "lease_sec": self.config.lease_sec, "worker": self.id},
            )
            runs = [r for r in await cur.fetchall() if str(r["id"]) not in self._deliveries]
            if not runs:
                return 0
            await cur.execute(sql("schedule_targets_many"), {"ids": list({r["schedule_id"] for r in runs})})
            schedules = {str(s["id"]): s for s in await cur.fetchall()}
        fires = []
        for run in runs:
            schedule = schedules.get(str(run["schedule_id"]))
            if schedule is None or not (schedule["enabled"] or run["manual"]):
                why = "deleted" if schedule is None else "disabled"
                self.progress.record(
                    RunUpdate(
                        str(run["id"]),
                        "CANCELLED",
                        run["attempt"],
                        finished_at=now,
                        error=f"the schedule was {why} before this run was delivered",
                    )
                )
                continue
            trigger = decode_trigger(schedule["trigger"])
            parked = isinstance(trigger, FixedDelayTrigger) and not run["manual"]
            fires.append(
                Fire(
                    run_id=str(run["id"]),
                    schedule_id=str(run["schedule_id"]),
                    tenant_id=run["tenant_id"],
                    scheduled_for=run["scheduled_for"],
                    key=run["idempotency_key"],
                    target=decode_target(schedule["target"]),
                    payload=msgspec.Raw(schedule["payload"]),
                    retry=decode_retry(schedule["retry"]),
                    manual=run["manual"],
                    attempt=run["attempt"],
                    trace_context=run["trace_context"],
                    webhook_secret=schedule["webhook_secret"],
                    rearm=parked,
                )
            )
        rescued = sum(not f.manual for f in fires)
        if rescued:
            logger.info("took over {} run(s) whose worker's lease expired", rescued)
        self._start(fires)
        return len(runs)

    def _start(self, fires: Iterable[Fire]) -> None:
        """One task for the EVENTs (those bound for core NATS share a flush and a record), one per other run."""
        events: list[Fire] = []
        for fire in fires:
            # A run carrying a trace (a manual run) is delivered on its own, so its span continues that trace.
            if isinstance(fire.target, EventTarget) and not fire.trace_context:
                events.append(fire)
            else:
                self._track([fire], asyncio.create_task(self.deliverer.deliver(fire), name=f"run-{fire.run_id}"))
        if events:
            self._track(events, asyncio.create_task(self.deliverer.deliver_events(events)))

    def _track(self, fires: list[Fire], task: asyncio.Task[None]) -> None:
        run_ids = [f.run_id for f in fires]
        for run_id in run_ids:
            self._deliveries[run_id] = task
        task.add_done_callback(functools.partial(self._delivered, run_ids))

    def _delivered(self, run_ids: list[str], task: asyncio.Task[None]) -> None:
        starved = self.capacity() < self.config.batch_size  # the last claim may have been cut short
        for run_id in run_ids:
            self._deliveries.pop(run_id, None)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            # A bug, not the target: record it, or the run would be rescued and crash again after every lease.
            logger.opt(exception=error).error("delivery of run(s) {} crashed", run_ids[:5])
            for run_id in run_ids:
                self.progress.record(
                    RunUpdate(
                        run_id, "FAILED", 1, finished_at=self.clock(), error=f"internal error: {type(error).__name__}"
                    )
                )
        if starved:
            # Capacity came back. Only then: a wake-up after every delivery would end the claim loop's sleep
            # until the next due time each time, and under a steady load claim a few rows at a time.
            self._wake.set()

    # --- the loops ----------------------------------------------------------------------------------

    async def next_due_in(self) -> float:
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql("schedule_next_due"))
            row = await cur.fetchone()
        next_due = row[0] if row else None
        if next_due is None:
            metrics.backlog_age.set(0)
            return self.config.poll_max_sec
        seconds = (next_due - self.clock()).total_seconds()
        metrics.backlog_age.set(max(0.0, -seconds))
        return min(self.config.poll_max_sec, max(MIN_IDLE_SLEEP_SEC, seconds))

    async def claim_loop(self) -> None:
        failures = 0
        last_rescue = 0.0
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            self.last_tick = time.monotonic()
            # Rescue at once when a NOTIFY came (a manual run may be waiting), else once a second: not on every
            # wake-up, or a busy worker would run a rescue transaction after every batch it claims.
            rescue_now, self._rescue_requested = self._rescue_requested, False
            self._wake.clear()  # before the work: a NOTIFY arriving during it wakes the next wait
            try:
                claimed = await self.claim_once()
                if rescue_now or loop.time() - last_rescue >= RESCUE_INTERVAL_SEC:
                    last_rescue = loop.time()
                    claimed += await self.rescue_once()
                    if claimed >= self.config.batch_size:
                        await self.next_due_in()  # busy: still measure the backlog, about once a second
                failures = 0
                if claimed >= self.config.batch_size:
                    continue  # more is due: claim again at once
                sleep = await self.next_due_in() if self.capacity() else self.config.poll_max_sec
            except CONNECTION_ERRORS as exc:
                failures += 1
                sleep = min(10.0, 0.2 * 2**failures)
                logger.warning("database unavailable ({}); retrying in {:.1f}s", exc, sleep)
            except Exception:
                # A bug (or one poisonous row) must not silently stop this worker from claiming: log it loudly
                # and keep going; the transaction rolled back, so nothing was claimed.
                failures += 1
                sleep = min(10.0, 0.2 * 2**failures)
                logger.exception("claim loop error; retrying in {:.1f}s", sleep)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), sleep)

    async def listen_loop(self) -> None:
        """Wake the claim loop when the API announces a schedule due soon or a manual run."""
        while not self.stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(self.postgres_url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {WAKEUP_CHANNEL}")
                    async for _ in conn.notifies():
                        self._rescue_requested = True
                        self._wake.set()
            except CONNECTION_ERRORS as exc:
                logger.debug("LISTEN connection lost: {}", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), 1.0)

    def request_stop(self) -> None:
        self.stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Run until ``request_stop``; then finish or release in-flight runs within the shutdown grace."""
        # The writer outlives the claim loop: it must record what the draining deliveries report.
        writer_stop = asyncio.Event()
        writer = asyncio.create_task(self.progress.run(writer_stop), name="progress")
        # Without its writer a worker would deliver and record nothing: stop rather than go on silently.
        writer.add_done_callback(lambda _: None if writer_stop.is_set() else self._writer_died(writer))
        listener = asyncio.create_task(self.listen_loop(), name="listen")
        try:
            await self.claim_loop()
        finally:
            listener.cancel()
            ends = time.monotonic() + self.config.shutdown_grace_sec
            await self._drain()
            self.progress.deadline = max(ends, time.monotonic() + 5.0)
            writer_stop.set()
            await writer
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    def _writer_died(self, writer: asyncio.Task[None]) -> None:
        error = None if writer.cancelled() else writer.exception()
        logger.opt(exception=error).critical("the run progress writer stopped; stopping this worker")
        self.request_stop()

    async def _drain(self) -> None:
        if self._deliveries:
            logger.info("finishing {} in-flight run(s)", len(self._deliveries))
            tasks = set(self._deliveries.values())
            _, pending = await asyncio.wait(tasks, timeout=self.config.shutdown_grace_sec)
            unfinished = [run_id for run_id, task in self._deliveries.items() if task in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if unfinished:
                await self._release(unfinished)

    async def _release(self, run_ids: list[str]) -> None:
        """Hand unfinished runs to other workers now rather than after their lease."""
        try:
            await self.progress.flush()
            async with self.pool.connection() as conn:
                params = {"ids": run_ids, "now": self.clock(), **id_span(run_ids)}
                await conn.execute(sql("run_release_many"), params)
            logger.info("released {} unfinished run(s) to other workers", len(run_ids))
        except psycopg.Error as exc:
            logger.warning("could not release {} run(s); they are rescued after their lease: {}", len(run_ids), exc)
