"""Delivering one run: attempts, backoff with jitter, the outcome, and the dead letter.

Where an HTTP 429 becomes a retry: ``targets/http.py`` marks the failure retryable (with Retry-After) and
``deliver`` below waits ``backoff_delay`` and tries again until the schedule's retry policy is used up.

Before each attempt, and before acting on a failed one, the worker makes sure it still holds the run
(``Leases.hold``): a worker resumed after a freeze drops what another worker took over. Every success, one run
or a batch of core NATS publishes, ends in ``_succeeded``: the same metrics and the same record.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import msgspec
from loguru import logger
from opentelemetry.trace import SpanKind

from shared import metrics
from shared.errors import Unavailable
from shared.model import EventTarget, HttpTarget, QueueTarget, RetryPolicy
from shared.tracing import stored_context, tracer
from worker.fire import Delivered, DeliveryFailed, Fire, RunUpdate, clean_text, utc_iso
from worker.leases import Leases
from worker.targets import Sender
from worker.targets.cloudevents import envelope
from worker.targets.nats import NatsPublisher, is_at_most_once

OUTAGE_RETRY_SEC = 2.0
MAX_ERROR_CHARS = 2000


def backoff_delay(policy: RetryPolicy, attempt: int, retry_after: float | None, rand: float) -> float:
    """Seconds before attempt ``attempt + 1``: exponential, with jitter in [50%, 100%], capped; a server's
    Retry-After wins when it asks for longer (still capped at maxBackoffSec)."""
    exponential = min(policy.max_backoff_sec, policy.backoff_sec * 2 ** (attempt - 1))
    delay = exponential * (0.5 + rand / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.max_backoff_sec))
    return delay


def log_fields(fire: Fire) -> dict[str, str]:
    return {"tenant_id": fire.tenant_id, "schedule_id": fire.schedule_id, "run_id": fire.run_id}


def target_kind(fire: Fire) -> str:
    return str(fire.target.__struct_config__.tag)


def run_timeout_sec(fire: Fire) -> float:
    return fire.target.http.timeout_sec if isinstance(fire.target, HttpTarget) else 5.0


# A success as the progress writer records it: a batch of core NATS publishes shares one start, finish and
# duration and is written with half the arrays (``subjects``); any other run carries its target's answer.
Success = Callable[[list[Fire], datetime, datetime, int, "Delivered | None", "list[str] | None"], None]


class Deliverer:
    def __init__(
        self,
        publisher: NatsPublisher,
        http: Sender,
        record: Callable[[RunUpdate], None],
        record_success: Success,
        clock: Callable[[], datetime],
        lease_sec: float,
        committed: Callable[[str], Awaitable[None]],
        leases: Leases,
        begin_retry: Callable[[str], Awaitable[bool]] | None = None,
        write_now: Callable[[RunUpdate], Awaitable[str | None]] | None = None,
        withdrawn: Callable[[str, datetime, str, str], Awaitable[None]] | None = None,
    ) -> None:
        self.publisher = publisher
        self.http = http
        self.record = record
        self.record_success = record_success
        self.leases = leases
        self.clock = clock
        self.lease_sec = lease_sec
        # Resolves once the run's last recorded status is committed: notices announce only what GET /runs shows.
        self.committed = committed
        # Asked before each retry whether the run is still open: a run cancelled meanwhile is not sent again.
        self.begin_retry = begin_retry
        # A QUEUE run CANCEL_OTHER may supersede (Fire.confirm_success): its success is written at once, and
        # its message withdrawn (recorded by `withdrawn`) if the run was cancelled while it was published.
        self.write_now = write_now
        self.withdrawn = withdrawn

    def _sender(self, fire: Fire) -> Sender:
        match fire.target:
            case HttpTarget():
                return self.http
            case EventTarget() | QueueTarget():
                return self.publisher

    async def deliver(self, fire: Fire) -> None:
        # A manual run continues the trace of the request that queued it; scheduled runs start their own.
        attributes = {
            "scheduler.schedule_id": fire.schedule_id,
            "scheduler.tenant_id": fire.tenant_id,
            "scheduler.run_id": fire.run_id,
            "scheduler.target": target_kind(fire),
            "scheduler.scheduled_for": utc_iso(fire.scheduled_for),
        }
        with tracer.start_as_current_span(
            "run.deliver", context=stored_context(fire.trace_context), attributes=attributes, kind=SpanKind.PRODUCER
        ):
            await self._deliver(fire)

    async def _held(self, fire: Fire) -> bool:
        """Whether this worker still holds ``fire`` (confirming, or extending, its lease when needed)."""
        while True:
            try:
                return bool(await self.leases.hold([fire]))
            except Unavailable as exc:
                # Nobody can take the run over while the database is away either: wait for it.
                logger.warning("run {} cannot confirm its lease: {}", fire.run_id, exc)
                await asyncio.sleep(OUTAGE_RETRY_SEC)

    async def _deliver(self, fire: Fire) -> None:
        sender = self._sender(fire)
        while await self._held(fire):
            started = self.clock()
            t0 = time.perf_counter()
            try:
                result = await sender.send(fire)
            except DeliveryFailed as failure:
                # A call that "timed out" while this process was frozen may have been delivered, and another
                # worker may have delivered the run since: act on the failure only if the run is still ours.
                if not await self._held(fire):
                    return
                if failure.outage:
                    await self._wait_out_outage(fire, failure)
                    continue
                fire.attempt += 1
                if failure.retryable and fire.attempt < fire.retry.max_attempts:
                    await self._retry_later(fire, failure, started, t0)
                    if self.begin_retry is not None and not await self.begin_retry(fire.run_id):
                        logger.bind(**log_fields(fire)).info("run {} was cancelled; not retrying it", fire.run_id)
                        return
                    continue
                await self._fail(fire, failure, started, t0)
                return
            fire.attempt += 1
            elapsed = time.perf_counter() - t0
            if fire.confirm_success and not await self._confirmed(fire, started, elapsed, result):
                return
            self._succeeded([fire], started, elapsed, result)
            return

    async def _confirmed(self, fire: Fire, started: datetime, elapsed: float, result: Delivered) -> bool:
        """Write a superseding-prone QUEUE run's success now; if it was cancelled while it was being published
        (CANCEL_OTHER), withdraw its message and say so (False). The row lock orders the write and the cancel."""
        if self.write_now is None or self.withdrawn is None:
            return True
        detail = msgspec.json.encode(result.detail).decode()
        update = RunUpdate(
            run_id=fire.run_id,
            status="SUCCEEDED",
            attempt=fire.attempt,
            started_at=started,
            finished_at=started + timedelta(seconds=elapsed),
            duration_ms=int(elapsed * 1000),
            delivery=detail,
        )
        while True:
            try:
                status = await self.write_now(update)
                break
            except Unavailable as exc:
                # Until it is known whether the run was cancelled meanwhile (its message must then go).
                logger.warning("run {} cannot record its publish yet: {}", fire.run_id, exc)
                await asyncio.sleep(OUTAGE_RETRY_SEC)
        if status is None:
            return True
        if status == "CANCELLED":
            stream, seq = result.detail.get("stream"), result.detail.get("seq")
            if stream and seq and await self.publisher.withdraw(stream, int(seq), fire.key):
                why = "withdrawn from the queue before any consumer acked it: superseded (overlap CANCEL_OTHER)"
                await self.withdrawn(fire.run_id, fire.scheduled_for, why, detail)
        return False  # cancelled, or another worker holds it now: nothing more of it is ours to record

    async def deliver_events(self, fires: list[Fire]) -> None:
        """EVENTs, together: the durable ones published as one pipelined batch (acks awaited together), the
        AT_MOST_ONCE ones as core publishes sharing one flush. The batch's leases are confirmed once, first."""
        try:
            fires = await self.leases.hold(fires)
        except Unavailable:
            # Each waits for the database on its own (``deliver`` confirms its lease before the attempt).
            await asyncio.gather(*(self.deliver(fire) for fire in fires))
            return
        quick = [fire for fire in fires if is_at_most_once(fire)]
        durable = [fire for fire in fires if not is_at_most_once(fire)]
        jobs = []
        if durable:
            jobs.append(self.deliver_durable_batch(durable))
        if quick:
            jobs.append(self.deliver_core_batch(quick, self.publisher.core_subjects(quick)))
        await asyncio.gather(*jobs)

    async def deliver_durable_batch(self, fires: list[Fire]) -> None:
        """Each acknowledged EVENT is recorded SUCCEEDED; the others go through ``deliver`` one by one (with
        retries; a re-publish carries the same Nats-Msg-Id, so the stream stores it once)."""
        started = self.clock()
        t0 = time.perf_counter()
        outcomes = await self.publisher.publish_durable_many(fires)
        again = []
        for fire, outcome in zip(fires, outcomes, strict=True):
            if isinstance(outcome, Delivered):
                fire.attempt += 1
                self._succeeded([fire], started, time.perf_counter() - t0, outcome)
            else:
                again.append(fire)
        if again:
            logger.warning("{} of {} JetStream publishes failed; delivering them one by one", len(again), len(fires))
            await asyncio.gather(*(self.deliver(fire) for fire in again))

    async def deliver_core_batch(self, fires: list[Fire], subjects: list[str]) -> None:
        """EVENTs bound for core NATS: publish the batch, share one flush, record them together. Any failure hands
        every fire of the batch to ``deliver`` (one by one, with retries); some may then arrive twice, with the
        same idempotency key."""
        started = self.clock()
        t0 = time.perf_counter()
        try:
            await self.publisher.publish_core_many(fires, subjects)
        except DeliveryFailed as failure:
            logger.warning("batch of {} core publishes failed ({}); delivering one by one", len(fires), failure)
            await asyncio.gather(*(self.deliver(fire) for fire in fires))
            return
        elapsed = time.perf_counter() - t0
        for fire in fires:
            fire.attempt += 1
        self._succeeded(fires, started, elapsed, None, subjects)

    def _succeeded(
        self,
        fires: list[Fire],
        started: datetime,
        elapsed: float,
        result: Delivered | None,
        subjects: list[str] | None = None,
    ) -> None:
        """The one way a delivery succeeds: ``fires`` (one run, or a core batch of one kind sharing ``started``
        and ``elapsed``) are observed and recorded SUCCEEDED."""
        kind = target_kind(fires[0])
        latency = metrics.delivery_latency.labels(kind)
        lag = metrics.scheduling_lag.labels(kind)
        for fire in fires:
            latency.observe(elapsed)
            if fire.attempt == 1 and not fire.manual:
                lag.observe(max(0.0, (started - fire.scheduled_for).total_seconds()))
        if result is not None and result.http_status is not None:
            metrics.http_status.labels(str(result.http_status)).inc(len(fires))
        metrics.runs.labels(kind, "succeeded").inc(len(fires))
        finished = started + timedelta(seconds=elapsed)
        self.record_success(fires, started, finished, int(elapsed * 1000), result, subjects)

    def _observe(self, fire: Fire, started: datetime, t0: float, http_status: int | None) -> None:
        kind = target_kind(fire)
        metrics.delivery_latency.labels(kind).observe(time.perf_counter() - t0)
        if fire.attempt == 1 and not fire.manual:
            metrics.scheduling_lag.labels(kind).observe(max(0.0, (started - fire.scheduled_for).total_seconds()))
        if http_status is not None:
            metrics.http_status.labels(str(http_status)).inc()

    def _finished(self, fire: Fire, status: str, started: datetime, t0: float, **fields: object) -> RunUpdate:
        self._observe(fire, started, t0, fields.get("http_status"))  # type: ignore[arg-type]
        metrics.runs.labels(target_kind(fire), status.lower()).inc()
        finished = started + timedelta(seconds=time.perf_counter() - t0)
        update = RunUpdate(
            run_id=fire.run_id,
            status=status,
            attempt=fire.attempt,
            started_at=started,
            finished_at=finished,
            duration_ms=int((time.perf_counter() - t0) * 1000),
            **fields,  # type: ignore[arg-type]
        )
        # FIXED_DELAY counts from when the run finished, so slow targets never overlap.
        update.rearm = fire.rearm
        return update

    async def _retry_later(self, fire: Fire, failure: DeliveryFailed, started: datetime, t0: float) -> None:
        self._observe(fire, started, t0, failure.http_status)
        metrics.retries.labels(target_kind(fire)).inc()
        delay = backoff_delay(fire.retry, fire.attempt, failure.retry_after, random.random())
        next_attempt = self.clock() + timedelta(seconds=delay)
        self.record(
            RunUpdate(
                run_id=fire.run_id,
                status="RETRYING",
                attempt=fire.attempt,
                started_at=started,
                next_attempt_at=next_attempt,
                # Nobody rescues this run while we are alive and waiting to retry it.
                lease_until=next_attempt + timedelta(seconds=self.lease_sec + run_timeout_sec(fire)),
                duration_ms=int((time.perf_counter() - t0) * 1000),
                http_status=failure.http_status,
                error=clean_text(str(failure)[:MAX_ERROR_CHARS]),
            )
        )
        logger.bind(**log_fields(fire)).info(
            "run {} attempt {} failed ({}); retrying in {:.2f}s", fire.run_id, fire.attempt, failure, delay
        )
        await asyncio.sleep(delay)

    async def _wait_out_outage(self, fire: Fire, failure: DeliveryFailed) -> None:
        logger.warning("run {} waits for NATS: {}", fire.run_id, failure)
        self.record(
            RunUpdate(
                run_id=fire.run_id,
                status="RETRYING" if fire.attempt else "PENDING",
                attempt=fire.attempt,
                lease_until=self.clock() + timedelta(seconds=self.lease_sec + OUTAGE_RETRY_SEC),
                error=clean_text(str(failure)[:MAX_ERROR_CHARS]),
            )
        )
        await asyncio.sleep(OUTAGE_RETRY_SEC)

    async def _fail(self, fire: Fire, failure: DeliveryFailed, started: datetime, t0: float) -> None:
        error = clean_text(str(failure)[:MAX_ERROR_CHARS])
        self.record(self._finished(fire, "FAILED", started, t0, http_status=failure.http_status, error=error))
        logger.bind(**log_fields(fire)).warning(
            "run {} of schedule {} failed after {} attempt(s): {}", fire.run_id, fire.schedule_id, fire.attempt, error
        )
        metrics.dead_letters.labels(target_kind(fire)).inc()
        await self.committed(fire.run_id)
        await self.dead_letter(fire, error)

    async def dead_letter(self, fire: Fire, error: str) -> None:
        data = {
            "runId": fire.run_id,
            "scheduleId": fire.schedule_id,
            "attempts": fire.attempt,
            "error": error,
            # Never the target itself: its headers may hold the tenant's secrets.
            "targetKind": target_kind(fire),
            "payload": fire.payload,
        }
        body = envelope(
            key=f"{fire.key}:deadletter",
            event_type="scheduler.run.failed",
            schedule_id=fire.schedule_id,
            tenant_id=fire.tenant_id,
            scheduled_for=fire.scheduled_for,
            now=self.clock(),
            data=data,
            run_id=fire.run_id,
        )
        try:
            await self.publisher.publish_deadletter(fire, body)
        except DeliveryFailed as exc:
            # The run is FAILED in the database either way; the dead letter is a notification.
            logger.error("dead letter for run {} not published: {}", fire.run_id, exc)
