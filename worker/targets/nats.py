"""EVENT and QUEUE targets (and the dead-letter subject) over one NATS connection.

EVENT publishes through JetStream when a stream captures the subject (durable, acked, deduplicated by
Nats-Msg-Id), else as a core publish followed by a flush. QUEUE publishes to a WorkQueue stream per topic,
created on first use, so exactly one consumer of the queue receives each message.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from shared.model import EventTarget, QueueTarget
from shared.tracing import inject, tracer
from worker.fire import Delivered, DeliveryFailed, Fire
from worker.targets.cloudevents import envelope

STREAM_LOOKUP_TTL_SEC = 30.0
QUEUE_DEDUPE_WINDOW_SEC = 120.0
PUBLISH_TIMEOUT_SEC = 5
_STREAM_CHARS = re.compile(r"[^A-Za-z0-9_-]")
NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, TimeoutError, OSError)


def _headers(key: str) -> dict[str, str]:
    headers = {"Nats-Msg-Id": key, "Content-Type": "application/cloudevents+json"}
    inject(headers)  # subscribers' spans join the delivering trace
    return headers


def queue_stream_name(topic: str) -> str:
    """A legal, collision-free stream name for a queue topic ("jobs.reports" -> "QUEUE_jobs_reports_1a2b3c4d")."""
    digest = hashlib.sha256(topic.encode()).hexdigest()[:8]
    return f"QUEUE_{_STREAM_CHARS.sub('_', topic)[:180]}_{digest}"


def _event_topic(fire: Fire) -> str:
    assert isinstance(fire.target, EventTarget)
    return fire.target.event_topic


class NatsPublisher:
    def __init__(self, nc: Client, clock: Callable[[], datetime]) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=PUBLISH_TIMEOUT_SEC)
        self.jsm = nc.jsm(timeout=PUBLISH_TIMEOUT_SEC)
        self.clock = clock
        self._capturing: dict[str, tuple[float, str | None]] = {}
        self._queues: set[str] = set()
        self._flush_round: asyncio.Future[None] | None = None
        self._rounds: set[asyncio.Future[None]] = set()

    async def send(self, fire: Fire) -> Delivered:
        target = fire.target
        if isinstance(target, EventTarget):
            body = self._envelope(fire, target.event_topic)
            return Delivered(await self.publish(target.event_topic, body, fire.key))
        assert isinstance(target, QueueTarget)
        topic = target.queue.topic
        body = self._envelope(fire, topic)
        return Delivered(await self._publish_queue(topic, body, fire.key))

    async def core_subjects(self, fires: list[Fire]) -> list[str | None]:
        """For each EVENT, its subject if it goes out as a core publish (no stream captures it), else None.
        Subjects the lookup cache does not hold fresh are looked up once each, together."""
        topics = [_event_topic(fire) for fire in fires]
        now = time.monotonic()
        stale = {topic for topic in topics if not self._fresh(topic, now)}
        if stale:
            try:
                await asyncio.gather(*(self._stream_for(topic) for topic in stale))
            except NATS_ERRORS as exc:
                raise self._failure(f"NATS stream lookup failed: {exc!r}") from exc
        return [topic if self._capturing[topic][1] is None else None for topic in topics]

    async def publish_core_many(self, fires: list[Fire], subjects: list[str]) -> None:
        """Core-publish a batch and wait for one flush covering all of it."""
        now = self.clock()  # one event time for the batch: formatted once, not once per event
        try:
            for fire, subject in zip(fires, subjects, strict=True):
                await self.nc.publish(subject, self._envelope(fire, subject, now), headers=_headers(fire.key))
            await self._flushed()
        except NATS_ERRORS as exc:
            raise self._failure(f"NATS publish of {len(fires)} event(s) failed: {exc!r}") from exc

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

    async def publish(self, subject: str, body: bytes, key: str) -> dict[str, Any]:
        """Publish durably when a stream captures ``subject``; report how it went."""
        with tracer.start_as_current_span("nats.publish", attributes={"messaging.destination.name": subject}):
            return await self._publish(subject, body, key)

    async def _publish(self, subject: str, body: bytes, key: str) -> dict[str, Any]:
        headers = _headers(key)
        try:
            stream = await self._stream_for(subject)
            if stream is not None:
                ack = await self.js.publish(subject, body, headers=headers)
                return {"via": "jetstream", "stream": ack.stream, "seq": ack.seq, "duplicate": bool(ack.duplicate)}
            await self.nc.publish(subject, body, headers=headers)
            await self._flushed()
            return {"via": "core", "subject": subject}
        except NATS_ERRORS as exc:
            raise self._failure(f"NATS publish to {subject} failed: {exc!r}") from exc

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

    async def _publish_queue(self, topic: str, body: bytes, key: str) -> dict[str, Any]:
        stream = queue_stream_name(topic)
        headers = _headers(key)
        try:
            if stream not in self._queues:
                await self._ensure_queue(stream, topic)
            ack = await self.js.publish(topic, body, headers=headers)
        except NATS_ERRORS as exc:
            raise self._failure(f"queue publish to {topic} failed: {exc!r}") from exc
        return {"via": "jetstream", "stream": ack.stream, "seq": ack.seq, "duplicate": bool(ack.duplicate)}

    async def _ensure_queue(self, stream: str, topic: str) -> None:
        config = StreamConfig(
            name=stream,
            subjects=[topic],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=QUEUE_DEDUPE_WINDOW_SEC,
        )
        try:
            await self.jsm.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            # Already there (another worker won the race), or the subject belongs to a stream someone else
            # made: either way a stream captures the topic, which is all publishing needs.
            if await self._stream_for(topic, fresh=True) is None:
                raise DeliveryFailed(f"cannot create queue stream for {topic}: {exc}", retryable=True) from exc
        self._queues.add(stream)

    def _fresh(self, subject: str, now: float) -> bool:
        cached = self._capturing.get(subject)
        return cached is not None and now - cached[0] < STREAM_LOOKUP_TTL_SEC

    async def _stream_for(self, subject: str, fresh: bool = False) -> str | None:
        now = time.monotonic()
        if not fresh and self._fresh(subject, now):
            return self._capturing[subject][1]
        try:
            name: str | None = await self.jsm.find_stream_name_by_subject(subject)
        except nats.js.errors.NotFoundError:
            name = None
        except nats.errors.NoRespondersError:
            name = None  # JetStream is not enabled on this server
        self._capturing[subject] = (now, name)
        return name
