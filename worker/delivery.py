"""Delivering one run: attempts, backoff with jitter, the outcome, and the dead letter.

Where an HTTP 429 becomes a retry: ``targets/http.py`` marks the failure retryable (with Retry-After) and
``deliver`` below waits ``backoff_delay`` and tries again until the schedule's retry policy is used up.
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
from shared.model import EventTarget, HttpTarget, QueueTarget, RetryPolicy
from shared.tracing import stored_context, tracer
from worker.fire import Delivered, DeliveryFailed, Fire, RunUpdate, clean_text, utc_iso
from worker.targets import Sender
from worker.targets.cloudevents import envelope
from worker.targets.nats import NatsPublisher

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


class Deliverer:
    def __init__(
        self,
        publisher: NatsPublisher,
        http: Sender,
        record: Callable[[RunUpdate], None],
        record_published: Callable[[list[Fire], list[str], datetime, datetime, int], None],
        clock: Callable[[], datetime],
        lease_sec: float,
        deadletter_subject: str,
        begin_retry: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.publisher = publisher
        self.http = http
        self.record = record
        self.record_published = record_published
        self.clock = clock
        self.lease_sec = lease_sec
        self.deadletter_subject = deadletter_subject
        # Asked before each retry whether the run is still open: a run cancelled meanwhile is not sent again.
        self.begin_retry = begin_retry

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

    async def _deliver(self, fire: Fire) -> None:
        sender = self._sender(fire)
        while True:
            started = self.clock()
            t0 = time.perf_counter()
            try:
                result = await sender.send(fire)
            except DeliveryFailed as failure:
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
            self._succeed(fire, result, started, t0)
            return

    async def deliver_events(self, fires: list[Fire]) -> None:
        """EVENTs: those whose subject no JetStream stream captures go out together (``deliver_core_batch``), the
        others one by one. The subjects are looked up first, once each: a batch that finds the lookup cache cold
        or expired would otherwise make one lookup and one flush per event."""
        try:
            subjects = await self.publisher.core_subjects(fires)
        except DeliveryFailed:
            await asyncio.gather(*(self.deliver(fire) for fire in fires))  # each waits out the outage on its own
            return
        core = [(fire, subject) for fire, subject in zip(fires, subjects, strict=True) if subject is not None]
        jobs = [self.deliver(fire) for fire, subject in zip(fires, subjects, strict=True) if subject is None]
        if core:
            jobs.append(self.deliver_core_batch([fire for fire, _ in core], [subject for _, subject in core]))
        await asyncio.gather(*jobs)

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
        self._observe_published(fires, started, elapsed)
        # One record for the batch (same start, finish and duration), not a RunUpdate per fire.
        self.record_published(fires, subjects, started, started + timedelta(seconds=elapsed), int(elapsed * 1000))

    def _observe_published(self, fires: list[Fire], started: datetime, elapsed: float) -> None:
        """What ``_finished`` observes per run, for a published batch: the same figures, labels looked up once."""
        kind = target_kind(fires[0])  # a core batch holds EVENTs only
        latency = metrics.delivery_latency.labels(kind)
        lag = metrics.scheduling_lag.labels(kind)
        for fire in fires:
            latency.observe(elapsed)
            if fire.attempt == 1 and not fire.manual:
                lag.observe(max(0.0, (started - fire.scheduled_for).total_seconds()))
        metrics.runs.labels(kind, "succeeded").inc(len(fires))

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

    def _succeed(self, fire: Fire, result: Delivered, started: datetime, t0: float) -> None:
        self.record(
            self._finished(
                fire,
                "SUCCEEDED",
                started,
                t0,
                http_status=result.http_status,
                delivery=msgspec.json.encode(result.detail).decode(),
            )
        )

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
            await self.publisher.publish(self.deadletter_subject, body, f"{fire.key}:deadletter")
        except DeliveryFailed as exc:
            # The run is FAILED in the database either way; the dead letter is a notification.
            logger.error("dead letter for run {} not published: {}", fire.run_id, exc)
