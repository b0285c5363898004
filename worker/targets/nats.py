"""EVENT and QUEUE targets, and dead letters, over one NATS connection, inside each tenant's namespace.

Every subject is the tenant's (``shared/messaging/subjects.py``): a stored topic is relative, so whatever a
tenant stored, it publishes under its own prefix. EVENT is durable by default: published through JetStream into
the tenant's event stream (created on the tenant's first event, then cached), and SUCCEEDED only once the
stream acknowledged it, deduplicated by ``Nats-Msg-Id`` = the idempotency key. A batch of EVENTs is published
without waiting for each acknowledgement in turn: all go out, then the acks are awaited together. An EVENT
with ``delivery: AT_MOST_ONCE`` is a core publish followed by a flush (shared by concurrent publishers): fast,
but lost if the server dies before forwarding it. QUEUE publishes to the tenant's work-queue stream of that
topic (the API creates it with the schedule; a worker creates any it finds missing).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import PubAck

from shared.messaging.streams import (
    NATS_ERRORS,
    StreamLimits,
    StreamUnavailable,
    ensure_stream,
    event_stream_config,
    namespace_of,
    queue_stream_config,
    stream_limits,
)
from shared.messaging.subjects import Namespace
from shared.model import EventDelivery, EventTarget, QueueTarget
from shared.settings import Settings
from shared.tracing import inject, tracer
from worker.fire import Delivered, DeliveryFailed, Fire
from worker.targets.cloudevents import envelope

STREAM_LOOKUP_TTL_SEC = 30.0
PUBLISH_TIMEOUT_SEC = 5


def _headers(key: str) -> dict[str, str]:
    headers = {"Nats-Msg-Id": key, "Content-Type": "application/cloudevents+json"}
    inject(headers)  # subscribers' spans join the delivering trace
    return headers


def _acked(ack: PubAck, subject: str, **extra: str) -> dict[str, Any]:
    return {
        "via": "jetstream",
        "stream": ack.stream,
        "seq": ack.seq,
        "duplicate": bool(ack.duplicate),
        "subject": subject,
        **extra,
    }


def is_at_most_once(fire: Fire) -> bool:
    return isinstance(fire.target, EventTarget) and fire.target.delivery is EventDelivery.AT_MOST_ONCE


class NatsPublisher:
    def __init__(
        self,
        nc: Client,
        clock: Callable[[], datetime],
        namespace: Namespace | None = None,
        event_limits: StreamLimits | None = None,
        queue_limits: StreamLimits | None = None,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=PUBLISH_TIMEOUT_SEC)
        self.jsm = nc.jsm(timeout=PUBLISH_TIMEOUT_SEC)
        self.clock = clock
        self.ns = namespace or Namespace()
        self.event_limits = event_limits or StreamLimits(86400.0, -1, -1)
        self.queue_limits = queue_limits or StreamLimits(7 * 86400.0, -1, -1)
        # tenant -> its event stream being or having been ensured (concurrent first events share one creation)
        self._event_streams: dict[str, asyncio.Task[str]] = {}
        self._queue_streams: dict[tuple[str, str], str] = {}
        self._capturing: dict[str, tuple[float, str | None]] = {}  # the operator's dead-letter subject
        self._flush_round: asyncio.Future[None] | None = None
        self._rounds: set[asyncio.Future[None]] = set()

    @classmethod
    def from_settings(cls, nc: Client, clock: Callable[[], datetime], settings: Settings) -> NatsPublisher:
        return cls(nc, clock, namespace_of(settings), *stream_limits(settings))

    # --- one run ---

    async def send(self, fire: Fire) -> Delivered:
        target = fire.target
        if isinstance(target, EventTarget):
            subject = self.ns.event_subject(fire.tenant_id, target.event_topic)
            body = self._envelope(fire, target.event_topic)
            with tracer.start_as_current_span("nats.publish", attributes={"messaging.destination.name": subject}):
                if target.delivery is EventDelivery.AT_MOST_ONCE:
                    return Delivered(await self._publish_core(subject, body, fire.key))
                return Delivered(await self._publish_event(fire.tenant_id, subject, body, fire.key))
        assert isinstance(target, QueueTarget)
        body = self._envelope(fire, target.queue.topic)
        return Delivered(await self._publish_queue(fire.tenant_id, target.queue.topic, body, fire.key))

    async def _publish_core(self, subject: str, body: bytes, key: str) -> dict[str, Any]:
        try:
            await self.nc.publish(subject, body, headers=_headers(key))
            await self._flushed()
        except NATS_ERRORS as exc:
            raise self._failure(f"NATS publish to {subject} failed: {exc!r}") from exc
        return {"via": "core", "subject": subject, "delivery": EventDelivery.AT_MOST_ONCE.value}

    async def _publish_event(self, tenant_id: str, subject: str, body: bytes, key: str) -> dict[str, Any]:
        await self._event_stream(tenant_id)
        try:
            ack = await self.js.publish(subject, body, headers=_headers(key))
        except NATS_ERRORS as exc:
            raise self._publish_failed(tenant_id, subject, exc) from exc
        return _acked(ack, subject, delivery=EventDelivery.DURABLE.value)

    async def _publish_queue(self, tenant_id: str, topic: str, body: bytes, key: str) -> dict[str, Any]:
        subject = self.ns.queue_subject(tenant_id, topic)
        try:
            if (tenant_id, topic) not in self._queue_streams:
                config = queue_stream_config(self.ns, tenant_id, topic, self.queue_limits)
                self._queue_streams[(tenant_id, topic)] = await ensure_stream(self.jsm, config)
            ack = await self.js.publish(subject, body, headers=_headers(key))
        except StreamUnavailable as exc:
            raise DeliveryFailed(f"queue stream for {subject}: {exc}", retryable=True) from exc
        except NATS_ERRORS as exc:
            if isinstance(exc, nats.js.errors.NoStreamResponseError):
                self._queue_streams.pop((tenant_id, topic), None)  # deleted behind our back: made again next try
            raise self._failure(f"queue publish to {subject} failed: {exc!r}") from exc
        return _acked(ack, subject)

    # --- batches of EVENTs ---

    def core_subjects(self, fires: list[Fire]) -> list[str]:
        subjects = []
        for fire in fires:
            assert isinstance(fire.target, EventTarget)
            subjects.append(self.ns.event_subject(fire.tenant_id, fire.target.event_topic))
        return subjects

    async def publish_core_many(self, fires: list[Fire], subjects: list[str]) -> None:
        """AT_MOST_ONCE EVENTs: core-publish a batch and wait for one flush covering all of it."""
        now = self.clock()  # one event time for the batch: formatted once, not once per event
        try:
            for fire, subject in zip(fires, subjects, strict=True):
                assert isinstance(fire.target, EventTarget)
                body = self._envelope(fire, fire.target.event_topic, now)
                await self.nc.publish(subject, body, headers=_headers(fire.key))
            await self._flushed()
        except NATS_ERRORS as exc:
            raise self._failure(f"NATS publish of {len(fires)} event(s) failed: {exc!r}") from exc

    async def publish_durable_many(self, fires: list[Fire]) -> list[Delivered | DeliveryFailed]:
        """DURABLE EVENTs: publish them all into their tenants' streams, then await the acks together (one
        round trip for the batch, not one per event). Each fire gets its own outcome."""
        now = self.clock()
        outcomes: list[Delivered | DeliveryFailed | None] = [None] * len(fires)
        tenants = list({fire.tenant_id: None for fire in fires})
        ensured = await asyncio.gather(*(self._event_stream(t) for t in tenants), return_exceptions=True)
        refused: dict[str, DeliveryFailed] = {}
        for tenant_id, result in zip(tenants, ensured, strict=True):
            if isinstance(result, DeliveryFailed):
                refused[tenant_id] = result
            elif isinstance(result, BaseException):
                raise result
        pending: dict[asyncio.Future[PubAck], tuple[int, str]] = {}
        for i, fire in enumerate(fires):
            if fire.tenant_id in refused:
                outcomes[i] = refused[fire.tenant_id]
                continue
            assert isinstance(fire.target, EventTarget)
            topic = fire.target.event_topic
            subject = self.ns.event_subject(fire.tenant_id, topic)
            try:
                body = self._envelope(fire, topic, now)
                future = await self.js.publish_async(subject, body, headers=_headers(fire.key))
            except NATS_ERRORS as exc:
                outcomes[i] = self._publish_failed(fire.tenant_id, subject, exc)
                continue
            pending[future] = (i, subject)
        if pending:
            _, late = await asyncio.wait(pending, timeout=PUBLISH_TIMEOUT_SEC)
            for future in late:
                future.cancel()
            for future, (i, subject) in pending.items():
                tenant_id = fires[i].tenant_id
                if future.cancelled():
                    outcomes[i] = self._failure(f"no JetStream ack for {subject} within {PUBLISH_TIMEOUT_SEC}s")
                elif (error := future.exception()) is not None:
                    if not isinstance(error, NATS_ERRORS):
                        raise error
                    outcomes[i] = self._publish_failed(tenant_id, subject, error)
                else:
                    outcomes[i] = Delivered(_acked(future.result(), subject, delivery=EventDelivery.DURABLE.value))
        return outcomes  # type: ignore[return-value]

    async def _event_stream(self, tenant_id: str) -> str:
        task = self._event_streams.get(tenant_id)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            config = event_stream_config(self.ns, tenant_id, self.event_limits)
            task = self._event_streams[tenant_id] = asyncio.ensure_future(ensure_stream(self.jsm, config))
        try:
            return await asyncio.shield(task)
        except StreamUnavailable as exc:
            raise DeliveryFailed(f"event stream of tenant {tenant_id}: {exc}", retryable=True) from exc
        except NATS_ERRORS as exc:
            raise self._failure(f"event stream of tenant {tenant_id} not ensured: {exc!r}") from exc

    def _publish_failed(self, tenant_id: str, subject: str, exc: BaseException) -> DeliveryFailed:
        if isinstance(exc, nats.js.errors.NoStreamResponseError):
            self._event_streams.pop(tenant_id, None)  # the stream went away: ensure it again on the next attempt
        return self._failure(f"JetStream publish to {subject} failed: {exc!r}")

    # --- dead letters ---

    async def publish_deadletter(self, fire: Fire, body: bytes) -> None:
        """To the tenant's own dead-letter subject (durable), and the operator-wide copy when one is set."""
        key = f"{fire.key}:deadletter"
        await self._publish_event(fire.tenant_id, self.ns.deadletter_subject(fire.tenant_id), body, key)
        if self.ns.operator_deadletter:
            await self.publish(self.ns.operator_deadletter, body, key)

    async def publish(self, subject: str, body: bytes, key: str) -> dict[str, Any]:
        """Publish to an operator's subject: through JetStream when a stream captures it, else core."""
        with tracer.start_as_current_span("nats.publish", attributes={"messaging.destination.name": subject}):
            try:
                stream = await self._stream_for(subject)
                if stream is not None:
                    ack = await self.js.publish(subject, body, headers=_headers(key))
                    return _acked(ack, subject)
            except NATS_ERRORS as exc:
                raise self._failure(f"NATS publish to {subject} failed: {exc!r}") from exc
            return await self._publish_core(subject, body, key)

    async def _stream_for(self, subject: str) -> str | None:
        now = time.monotonic()
        cached = self._capturing.get(subject)
        if cached is not None and now - cached[0] < STREAM_LOOKUP_TTL_SEC:
            return cached[1]
        try:
            name: str | None = await self.jsm.find_stream_name_by_subject(subject)
        except nats.js.errors.NotFoundError:
            name = None
        except nats.errors.NoRespondersError:
            name = None  # JetStream is not enabled on this server
        self._capturing[subject] = (now, name)
        return name

    # --- plumbing ---

    def _envelope(self, fire: Fire, event_type: str, now: datetime | None = None) -> bytes:
        return envelope(
            key=fire.key,
            event_type=event_type,
            schedule_id=fire.schedule_id,
            tenant_id=fire.tenant_id,
            scheduled_for=fire.scheduled_for,
            now=self.clock() if now is None else now,
            data=fire.payload,
            run_id=fire.run_id,
        )

    async def _flushed(self) -> None:
        """Wait until the server has everything published so far.

        A flush is a PING/PONG round trip; concurrent core publishes share one instead of paying one each.
        Publishes made before a round starts are covered by it; later ones join the next round.
        """
        if self._flush_round is None:
            self._flush_round = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._start_flush_round, self._flush_round)
        await asyncio.shield(self._flush_round)

    def _start_flush_round(self, round_done: asyncio.Future[None]) -> None:
        self._flush_round = None

        async def flush() -> None:
            try:
                await self.nc.flush(timeout=PUBLISH_TIMEOUT_SEC)
            except BaseException as exc:  # handed to every publisher waiting on this round
                round_done.set_exception(exc)
            else:
                round_done.set_result(None)

        task = asyncio.ensure_future(flush())
        self._rounds.add(task)
        task.add_done_callback(self._rounds.discard)

    def _failure(self, message: str) -> DeliveryFailed:
        return DeliveryFailed(message, retryable=True, outage=not self.nc.is_connected)
