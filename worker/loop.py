"""The worker: claim due schedules, record their runs, advance them (one transaction per batch), deliver.

Any number of these run side by side with no leader: ``FOR UPDATE SKIP LOCKED`` hands each due schedule to
exactly one of them (fairly across tenants), and the runs table is the outbox, so a run is recorded in the same
transaction that advances its schedule and is delivered after the commit. Leases are short and renewed by
heartbeat while a delivery is in flight (``leases.py``); runs whose worker died or froze are rescued after their
lease. All SQL goes through ``store.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from loguru import logger

from shared import metrics
from shared.db.run_ids import occurrence_run_id
from shared.errors import SchedulerError, Unavailable
from shared.model import (
    EventTarget,
    MisfirePolicy,
    OverlapPolicy,
    QueueTarget,
    decode_retry,
    decode_target,
    decode_trigger,
)
from shared.timing.jitter import due_at
from shared.timing.misfire import DuePlan, plan_due
from shared.timing.uptime import FleetUptime
from shared.tracing import tracer
from worker.delivery import Deliverer
from worker.events import EventRelay
from worker.fairness import FAIR_EVERY_SEC, FireRates, fresh_candidates
from worker.fire import Fire, RunUpdate, idempotency_key
from worker.leases import Leases
from worker.overlap import WAITING, decide, in_flight
from worker.progress import ProgressWriter
from worker.store import WorkerStore

RESCUE_INTERVAL_SEC = 1.0
# How often a worker looks for QUEUE runs whose message was consumed (overlap policy), and how many at once.
HOLD_POLL_SEC = 1.0
HOLD_CHECKS_AT_ONCE = 16
MIN_IDLE_SLEEP_SEC = 0.02

# MisfirePolicy(text) goes through Enum's metaclass call: a dict lookup per claimed row is ten times cheaper.
_POLICIES = {policy.value: policy for policy in MisfirePolicy}
_OVERLAPS: dict[str | None, OverlapPolicy] = {policy.value: policy for policy in OverlapPolicy} | {
    None: OverlapPolicy.ALLOW  # the claim sends ALLOW as NULL
}

# A schedule whose row cannot be planned (a bug, a zone missing after a tzdata change) is set aside this long
# instead of blocking every worker behind it.
POISON_BACKOFF = timedelta(minutes=5)

# How far back the fleet remembers its uptime: an occurrence older than this is treated as missed when it is
# finally claimed (a fleet busy for a whole day is down in all but name).
UPTIME_HISTORY = timedelta(days=1)
_FOREVER = datetime.max.replace(tzinfo=UTC)


@dataclass(slots=True)
class OverlapActions:
    """What a claim's overlap decisions leave to do once it committed (worker/overlap.py)."""

    cancel: list[tuple[str, datetime, str]]  # runs superseded by CANCEL_OTHER: (id, scheduled_for, why)
    release: list[tuple[str, datetime]]  # buffered runs whose predecessor ended without releasing them

    def __bool__(self) -> bool:
        return bool(self.cancel or self.release)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    batch_size: int
    concurrency: int
    poll_max_sec: float
    lease_sec: float
    misfire_grace: timedelta
    shutdown_grace_sec: float = 20.0
    tenant_fire_rate: float = 0.0


_OVERLAP_COLUMNS = (
    "overlap_run_id",
    "overlap_run_at",
    "overlap_buffered_run_id",
    "overlap_buffered_at",
    "overlap_skipped",
)


def _overlap_columns(decided: dict[int, tuple[Any, ...]], rows: int) -> dict[str, list[Any]]:
    """The advance's overlap arrays: a row's new state where its policy decided, NULLs (kept) elsewhere."""
    if not decided:
        return {name: [] for name in _OVERLAP_COLUMNS}
    blank = (None,) * len(_OVERLAP_COLUMNS)
    states = [decided.get(i, blank) for i in range(rows)]
    return {name: [state[c] for state in states] for c, name in enumerate(_OVERLAP_COLUMNS)}


def _overlap_state(
    row: tuple[Any, ...],
) -> tuple[str | None, bool, tuple[str, datetime] | None, tuple[str, datetime] | None]:
    """A claimed row's overlap state: the status of the run it waits for (None: none; WAITING: a buffered run
    not handed over), whether that run was published into a work queue, that run and the buffered one."""
    state = row[14]  # [status, stream, seq, queue topic] of the run it waits for
    holder = (row[15], row[16]) if row[15] else None
    buffered = (row[17], row[18]) if row[17] else None
    return (state[0] if state else None), bool(state and state[3]), holder, buffered


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """One worker process's loops. Each decision is one awaitable step (``claim_once``, ``rescue_once``,
    ``heartbeat_once``) taking the time from ``clock``, so tests drive them with a manual clock."""

    def __init__(
        self,
        config: WorkerConfig,
        store: WorkerStore,
        deliverer: Deliverer,
        progress: ProgressWriter,
        leases: Leases,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
        relay: EventRelay | None = None,
    ) -> None:
        self.config = config
        self.relay = relay  # the lifecycle events' outbox relay (worker/events.py)
        self.store = store
        self.deliverer = deliverer
        self.progress = progress
        self.leases = leases
        self.clock = clock
        self.monotonic = monotonic
        self.id = store.worker_id
        self.started_at = clock()
        # Until the first heartbeat: only this process is known to have been alive.
        self.uptime = FleetUptime.of([(self.started_at, _FOREVER)])
        self.rates = FireRates(config.tenant_fire_rate)
        self._backlog = False  # the last claim was full: more is due than this worker took
        self._last_fair = 0.0
        self.stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._rescue_requested = False  # a NOTIFY: maybe a manual run to deliver now
        self._deliveries: dict[str, tuple[Fire, asyncio.Task[None]]] = {}
        self._task_fires: dict[asyncio.Task[None], list[Fire]] = {}
        self._overlap = OverlapActions([], [])  # of the claim being planned
        self._chores: set[asyncio.Task[None]] = set()  # overlap actions under way after a claim
        self._holds_after: str | None = None  # poll_queue_holds' place in the held schedules
        self.last_tick = time.monotonic()  # /ready: the claim loop went round recently

    # --- one batch ----------------------------------------------------------------------------------

    def capacity(self) -> int:
        return max(0, self.config.concurrency - len(self._deliveries))

    def in_flight(self) -> list[Fire]:
        return [fire for fire, _ in self._deliveries.values()]

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
        budget = self.capacity()
        tick = self.monotonic()
        fresh = 0
        if self._backlog and tick - self._last_fair >= FAIR_EVERY_SEC:
            fresh, self._last_fair = fresh_candidates(limit), tick
        self._overlap = OverlapActions([], [])
        fires, taken, advanced = await self.store.claim(
            now, limit, fresh, self.rates.throttled(tick), lambda rows: self._plan(rows, now, budget)
        )
        self._backlog = advanced >= limit
        if not advanced:
            return 0
        metrics.claim_batch.observe(advanced)
        # Committed: from here on the runs are recorded and may be delivered.
        for fire in taken:
            # Already recorded (ON CONFLICT): that run is not ours to deliver. The schedule parked or waiting
            # behind it is released now if that run has ended, else by its own end (whoever delivers it).
            if fire.rearm and not fire.waiting:
                self.progress.rearm(fire.run_id, now)
        if self._overlap:
            chore = asyncio.create_task(self._settle_overlap(self._overlap, now), name="overlap")
            self._chores.add(chore)
            chore.add_done_callback(self._chores.discard)
        if self.rates.rate > 0:
            self.rates.spend(Counter(f.tenant_id for f in fires), self.monotonic())
        self._start(f for f in fires if not f.waiting)
        return advanced

    def _plan(self, rows: list[tuple[Any, ...]], now: datetime, budget: int) -> tuple[list[Fire], dict[str, Any]]:
        """The runs the claimed rows owe and each row's new next_run_at, as the parameters of
        ``schedule_advance_and_record``.

        Rows beyond ``budget`` runs (CATCH_UP can make hundreds from one row) are left untouched: their lock ends
        with the transaction and they stay due for the next claim.
        """
        fires: list[Fire] = []
        advance: dict[str, list[Any]] = {
            "ids": [],
            "next_run_at": [],
            "next_nominal_at": [],
            "last_run_at": [],
            "parked_run_id": [],
        }
        # Position in the batch -> the new overlap state of a row whose policy decided something.
        overlap: dict[int, tuple[Any, ...]] = {}
        for row in rows:
            if fires and len(fires) >= budget:
                break
            schedule_id = row[0]
            try:
                row_fires, plan = self._plan_row(row, now)
                # ALLOW with no state left (the claim sends NULLs): nothing to decide, the common case.
                decided = None if row[13] is None and row[15] is None else self._overlap_of(row, plan, row_fires)
            except Exception:
                logger.exception("schedule {} cannot be planned; retrying it in {}", schedule_id, POISON_BACKOFF)
                advance["ids"].append(schedule_id)
                advance["next_run_at"].append(now + POISON_BACKOFF)
                advance["next_nominal_at"].append(None)
                advance["last_run_at"].append(None)
                advance["parked_run_id"].append(None)
                continue
            last_run_at = plan.fire_at[-1] if plan.fire_at else None
            if decided is not None:
                row_fires, state = decided
                fired = [f.scheduled_for for f in row_fires if not f.waiting]
                last_run_at = fired[-1] if fired else None
                if state is not None:
                    overlap[len(advance["ids"])] = state
            fires += row_fires
            advance["ids"].append(schedule_id)
            jitter = row[12]
            # jitterSec: fired at the occurrence plus its offset; the occurrence itself is kept beside it.
            advance["next_run_at"].append(due_at(schedule_id, plan.next_run_at, jitter) if jitter else plan.next_run_at)
            advance["next_nominal_at"].append(plan.next_run_at if jitter else None)
            advance["last_run_at"].append(last_run_at)
            advance["parked_run_id"].append(row_fires[-1].run_id if plan.parked and row_fires else None)
        lease_until = self.leases.until(now)
        for fire in fires:
            fire.lease_until = lease_until
        return fires, advance | {
            "now": now,
            "lease_until": lease_until,
            "run_ids": [f.run_id for f in fires],
            "schedule_ids": [f.schedule_id for f in fires],
            "tenant_ids": [f.tenant_id for f in fires],
            "scheduled_for": [f.scheduled_for for f in fires],
            "keys": [f.key for f in fires],
            "notify_succeeded": [f.notify_succeeded for f in fires],
            # Empty arrays when nothing waits or no overlap policy decided (unnest pads them with NULLs: keep).
            "waiting": [f.waiting for f in fires] if any(f.waiting for f in fires) else [],
            **_overlap_columns(overlap, len(advance["ids"])),
        }

    def _overlap_of(
        self, row: tuple[Any, ...], plan: DuePlan, fires: list[Fire]
    ) -> tuple[list[Fire], tuple[Any, ...] | None] | None:
        """The row's runs and new overlap state (None: kept) under its overlap policy; None when it has none
        to apply or wind down."""
        policy = _OVERLAPS[row[13]]
        if policy is not OverlapPolicy.ALLOW and fires and not plan.parked:
            chosen, holder, buffered, skipped = self._decide_overlap(row, policy, fires)
            return chosen, (*(holder or (None, None)), *(buffered or (None, None)), skipped)
        if row[15] is not None:
            # State no decision above maintains (an edit to ALLOW, a claim that fires nothing): wound down.
            return fires, self._wind_down(row)
        return None

    def _decide_overlap(
        self, row: tuple[Any, ...], policy: OverlapPolicy, fires: list[Fire]
    ) -> tuple[list[Fire], tuple[str, datetime] | None, tuple[str, datetime] | None, int]:
        """Which of a row's due occurrences fire, wait or are skipped under its overlap policy; returns those
        runs and the schedule's new (run in flight, buffered run, skipped occurrences)."""
        status, queued, holder, buffered = _overlap_state(row)
        if buffered is not None and not (holder is not None and in_flight(status, queued)):
            # The run in flight ended without releasing its buffered successor (its worker died in between).
            holder, buffered, status = buffered, None, WAITING
        if status == WAITING and holder is not None:
            self._overlap.release.append(holder)
        busy = holder is not None and in_flight(status, queued)
        by_time = {f.scheduled_for: f for f in fires}
        decision = decide(policy, list(by_time), busy, buffered is not None)
        chosen = [by_time[at] for at in decision.fire]
        if decision.cancel and holder is not None and chosen:
            # Cancelled if still open, else (published into a work queue) withdrawn: after the commit.
            why = f"superseded by the occurrence of {chosen[-1].scheduled_for.isoformat()} (overlap CANCEL_OTHER)"
            self._overlap.cancel.append((holder[0], holder[1], why))
            if buffered is not None:  # left by an earlier BUFFER_ONE: it would run after the newer one
                self._overlap.cancel.append((buffered[0], buffered[1], why))
                buffered = None
        if chosen:
            holder = (chosen[-1].run_id, chosen[-1].scheduled_for)
        if decision.buffer is not None:
            waiting = by_time[decision.buffer]
            waiting.waiting = True
            buffered = (waiting.run_id, waiting.scheduled_for)
            chosen.append(waiting)
        supersedable = policy is OverlapPolicy.CANCEL_OTHER and isinstance(fires[0].target, QueueTarget)
        for fire in chosen:
            fire.rearm = True  # its end releases the schedule
            fire.confirm_success = supersedable
        if decision.skipped:
            metrics.overlap_skipped.labels(policy.value).inc(decision.skipped)
            logger.info(
                "schedule {} skipped {} occurrence(s): its previous run is still in flight (overlap {})",
                row[0],
                decision.skipped,
                policy.value,
            )
        return chosen, holder, buffered, decision.skipped

    def _wind_down(self, row: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """The overlap state of a schedule whose claim made no overlap decision (ALLOW now, or nothing to
        fire): None (kept) while its run is in flight (its end hands over a buffered run); otherwise a
        buffered or waiting run is handed over now, and the state cleared once nothing is left."""
        status, queued, holder, buffered = _overlap_state(row)
        assert holder is not None  # called for rows that have overlap state
        if status == WAITING:
            self._overlap.release.append(holder)
        elif in_flight(status, queued):
            return None
        elif buffered is not None:
            self._overlap.release.append(buffered)
            return (*buffered, None, None, 0)
        else:
            return (None, None, None, None, 0)
        return (*holder, *(buffered or (None, None)), 0)

    async def _settle_overlap(self, actions: OverlapActions, now: datetime) -> None:
        """After a claim committed: cancel the runs CANCEL_OTHER superseded (one already published into a work
        queue is withdrawn from it instead, if no consumer acked it yet), hand over buffered runs left waiting."""
        try:
            published = await self.store.settle_overlap(actions.cancel, actions.release, now)
            for run_id, at, why, stream, seq, key in published:
                if await self.deliverer.publisher.withdraw(stream, seq, key):
                    why = f"withdrawn from the queue before any consumer acked it: {why}"
                    await self.store.withdrawn(run_id, at, why)
        except Exception:
            # Not fatal: a superseded run not cancelled runs to its end, a buffered run is handed over by a
            # later claim (the claim reads it as WAITING).
            logger.exception("overlap actions after a claim failed")

    async def poll_queue_holds(self) -> int:
        """Release the schedules whose run in flight was published into a work queue and consumed since (a
        consumer acked it: the stream dropped it), a page of them in turn. Returns how many were released."""
        held = await self.store.queue_holds(self.config.batch_size, self._holds_after)
        # The next round goes on from here; a short page means the end was reached: start over.
        self._holds_after = held[-1][0] if len(held) >= self.config.batch_size else None
        if not held:
            return 0
        publisher = self.deliverer.publisher
        gate = asyncio.Semaphore(HOLD_CHECKS_AT_ONCE)

        async def consumed(run_id: str, stream: str | None, seq: int | None, key: str) -> str | None:
            if not stream or seq is None:
                return run_id  # no message to look for: nothing can hold the schedule
            async with gate:
                return None if await publisher.still_queued(stream, seq, key) else run_id

        found = await asyncio.gather(*(consumed(*h[1:]) for h in held))
        gone = [run_id for run_id in found if run_id is not None]
        if gone:
            await self.store.release_overlap(gone, self.clock(), acked=True)
        return len(gone)

    async def queue_hold_loop(self, stop: asyncio.Event) -> None:
        """``poll_queue_holds`` every HOLD_POLL_SEC until ``stop``: on its own task, so a slow NATS never holds
        up claiming."""
        while not stop.is_set():
            try:
                await self.poll_queue_holds()
            except Unavailable as exc:
                logger.debug("queue holds not polled: {}", exc)
            except Exception:
                logger.exception("queue hold poll error")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), HOLD_POLL_SEC)

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
            notify_succeeded,
            _jitter_sec,  # used by _plan (row[12])
            *_overlap,  # used by _plan and _decide_overlap (row[13:19])
        ) = row
        plan = plan_due(
            decode_trigger(trigger),
            tz,
            due_at,
            now,
            _POLICIES[misfire_policy],
            catch_up_limit,
            self.config.misfire_grace,
            self.uptime,
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
                    notify_succeeded=notify_succeeded,
                )
            )
        return fires, plan

    async def rescue_once(self) -> int:
        """Deliver open runs whose lease expired: a dead or frozen worker's, or manual runs queued by the API."""
        limit = min(self.config.batch_size, self.capacity())
        if limit == 0:
            return 0
        now = self.clock()
        lease_until = self.leases.until(now)
        runs, schedules = await self.store.rescue(now, limit, lease_until)
        runs = [r for r in runs if str(r["id"]) not in self._deliveries]
        if not runs:
            return 0
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
                        rearm=not run["manual"],
                    )
                )
                continue
            # Any run of the sequence tells its schedule when it ends: FIXED_DELAY parking, or the overlap policy
            # waiting for it (whatever the policy is now: it may have been edited while the run was in flight).
            target = decode_target(schedule["target"])
            supersedable = schedule["overlap"] == OverlapPolicy.CANCEL_OTHER.value and isinstance(target, QueueTarget)
            fires.append(
                Fire(
                    run_id=str(run["id"]),
                    schedule_id=str(run["schedule_id"]),
                    tenant_id=run["tenant_id"],
                    scheduled_for=run["scheduled_for"],
                    key=run["idempotency_key"],
                    target=target,
                    payload=msgspec.Raw(schedule["payload"]),
                    retry=decode_retry(schedule["retry"]),
                    manual=run["manual"],
                    attempt=run["attempt"],
                    trace_context=run["trace_context"],
                    webhook_secret=schedule["webhook_secret"],
                    rearm=not run["manual"],
                    lease_until=lease_until,
                    confirm_success=supersedable and not run["manual"],
                )
            )
        rescued = sum(not f.manual for f in fires)
        if rescued:
            logger.info("took over {} run(s) whose worker's lease expired", rescued)
        self._start(fires)
        return len(runs)

    async def heartbeat_once(self) -> int:
        """Tell the fleet this worker is alive (and learn the fleet's uptime), renew the leases of runs still
        in flight, and stop deliveries of runs another worker took over. Returns how many were lost."""
        now = self.clock()
        slack = timedelta(seconds=3 * self.leases.heartbeat_sec)
        beats = await self.store.beat(self.started_at, now, now - UPTIME_HISTORY)
        self.uptime = FleetUptime.of([(start, beat + slack) for start, beat in beats] + [(self.started_at, _FOREVER)])
        lost = await self.leases.renew(self.in_flight())
        for fire in lost:
            entry = self._deliveries.get(fire.run_id)
            # Its own task: another worker delivers this run now, or it was cancelled. Not a QUEUE run that
            # CANCEL_OTHER may supersede: stopped mid-publish, it would leave its message behind; its delivery
            # ends by itself (the publish is bounded) and withdraws the message if the run was cancelled.
            if entry is not None and len(self._task_fires.get(entry[1], ())) == 1 and not fire.confirm_success:
                entry[1].cancel()
        return len(lost)

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
        for fire in fires:
            self._deliveries[fire.run_id] = (fire, task)
        self._task_fires[task] = fires
        task.add_done_callback(self._delivered)

    def _delivered(self, task: asyncio.Task[None]) -> None:
        starved = self.capacity() < self.config.batch_size  # the last claim may have been cut short
        fires = self._task_fires.pop(task, [])
        for fire in fires:
            self._deliveries.pop(fire.run_id, None)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            # A bug, not the target: record it, or the run would be rescued and crash again after every lease.
            logger.opt(exception=error).error("delivery of run(s) {} crashed", [f.run_id for f in fires[:5]])
            for fire in fires:
                if not fire.lost:
                    self.progress.record(
                        RunUpdate(
                            fire.run_id,
                            "FAILED",
                            max(1, fire.attempt),
                            finished_at=self.clock(),
                            error=f"internal error: {type(error).__name__}",
                            rearm=fire.rearm,
                        )
                    )
        if starved:
            # Capacity came back. Only then: a wake-up after every delivery would end the claim loop's sleep
            # until the next due time each time, and under a steady load claim a few rows at a time.
            self._wake.set()

    # --- the loops ----------------------------------------------------------------------------------

    async def next_due_in(self) -> float:
        next_due = await self.store.next_due()
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
            except Unavailable as exc:
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
                async for _ in self.store.notifications():
                    self._rescue_requested = True
                    self._wake.set()
            except Unavailable as exc:
                logger.debug("LISTEN connection lost: {}", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), 1.0)

    async def heartbeat_loop(self, stop: asyncio.Event) -> None:
        """``heartbeat_once`` four times a lease, whatever the claim loop is doing, until ``stop`` (set once the
        in-flight runs are drained: they are renewed while they finish)."""
        while not stop.is_set():
            try:
                await self.heartbeat_once()
            except Unavailable as exc:
                logger.debug("heartbeat not written: {}", exc)
            except Exception:
                logger.exception("heartbeat error")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.leases.heartbeat_sec)

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
        with contextlib.suppress(SchedulerError):
            await self.heartbeat_once()  # learn the fleet's uptime before the first claim judges misfires
        heartbeat_stop = asyncio.Event()
        heartbeat = asyncio.create_task(self.heartbeat_loop(heartbeat_stop), name="heartbeat")
        relay_stop = asyncio.Event()
        relay = asyncio.create_task(self.relay.run(relay_stop), name="events") if self.relay else None
        holds_stop = asyncio.Event()
        holds = asyncio.create_task(self.queue_hold_loop(holds_stop), name="queue-holds")
        try:
            await self.claim_loop()
        finally:
            listener.cancel()
            holds_stop.set()
            holds.cancel()  # a page of checks may take seconds; the next worker polls them again
            ends = time.monotonic() + self.config.shutdown_grace_sec
            await self._drain()
            heartbeat_stop.set()
            self.progress.deadline = max(ends, time.monotonic() + 5.0)
            writer_stop.set()
            await writer
            relay_stop.set()  # after the writer: the events of the last outcomes may still go out
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await heartbeat
            if relay is not None:
                await relay
            with contextlib.suppress(asyncio.CancelledError):
                await holds
            if self._chores:  # overlap actions of the last claims (a later claim redoes what is left undone)
                await asyncio.wait(self._chores, timeout=5.0)

    def _writer_died(self, writer: asyncio.Task[None]) -> None:
        error = None if writer.cancelled() else writer.exception()
        logger.opt(exception=error).critical("the run progress writer stopped; stopping this worker")
        self.request_stop()

    async def _drain(self) -> None:
        if self._deliveries:
            logger.info("finishing {} in-flight run(s)", len(self._deliveries))
            tasks = {task for _, task in self._deliveries.values()}
            _, pending = await asyncio.wait(tasks, timeout=self.config.shutdown_grace_sec)
            unfinished = [run_id for run_id, (_, task) in self._deliveries.items() if task in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if unfinished:
                await self._release(unfinished)

    async def _release(self, run_ids: list[str]) -> None:
        """Hand unfinished runs to other workers now rather than after their lease."""
        try:
            await self.progress.flush()
            await self.store.release(run_ids, self.clock())
            logger.info("released {} unfinished run(s) to other workers", len(run_ids))
        except SchedulerError as exc:
            logger.warning("could not release {} run(s); they are rescued after their lease: {}", len(run_ids), exc)
