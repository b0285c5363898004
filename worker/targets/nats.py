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

import msgspec
import nats.errors
import nats.js.errors
from loguru import logger
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import PubAck, RetentionPolicy

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
# Checking whether a QUEUE run still holds its schedule (or withdrawing it) gives up after this: still held.
HOLD_CHECK_TIMEOUT_SEC = 1.0
WITHDRAW_ATTEMPTS = 3


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


class _Ack(msgspec.Struct):
    """A JetStream PubAck (or its error), decoded without nats-py's per-ack JSON parse and dataclass."""

    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: dict[str, Any] | None = None


_decode_ack = msgspec.json.Decoder(_Ack).decode
_NO_RESPONDERS = _Ack()  # the server's 503 status: no stream captures the subject


class AckBatch:
    """The acks of one pipelined batch of publishes, gathered by one wildcard subscription."""

    __slots__ = ("_done", "_inbox", "_remaining", "acks", "id", "prefix")

    def __init__(self, inbox: AckInbox, batch_id: int, size: int) -> None:
        self._inbox = inbox
        self.id = batch_id
        self.prefix = f"{inbox.prefix}{batch_id}."
        self.acks: list[_Ack | None] = [None] * size
        self._remaining = size
        self._done = asyncio.get_running_loop().create_future()
        if size == 0:
            self._done.set_result(None)

    def reply(self, index: int) -> str:
        return f"{self.prefix}{index}"

    def settle(self, index: int, ack: _Ack | None = None) -> None:
        """Record the answer to publish ``index`` (None: it was never sent)."""
        self.acks[index] = ack
        self._remaining -= 1
        if self._remaining == 0 and not self._done.done():
            self._done.set_result(None)

    async def wait(self, timeout: float) -> list[_Ack | None]:
        """The acks that came within ``timeout`` (None for the others); the batch is closed afterwards."""
        try:
            await asyncio.wait_for(asyncio.shield(self._done), timeout)
        except TimeoutError:
            pass
        finally:
            self._inbox.batches.pop(self.id, None)
        return self.acks


class AckInbox:
    """Pipelined JetStream publishing: each publish carries a reply subject under one inbox, so a batch is sent
    without waiting and its acks are awaited together. (nats-py's ``publish_async`` does the same with a future,
    two random tokens and a JSON parse per message: about twice the client CPU per event.)"""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.prefix = ""
        self.batches: dict[int, AckBatch] = {}
        self._next = 0
        self._lock = asyncio.Lock()

    async def open(self, size: int) -> AckBatch:
        if not self.prefix:
            async with self._lock:
                if not self.prefix:
                    inbox = self.nc.new_inbox()
                    await self.nc.subscribe(f"{inbox}.>", cb=self._on_ack)
                    self.prefix = f"{inbox}."
        self._next += 1
        batch = self.batches[self._next] = AckBatch(self, self._next, size)
        return batch

    async def _on_ack(self, msg: Msg) -> None:
        batch_id, _, index = msg.subject[len(self.prefix) :].partition(".")
        batch = self.batches.get(int(batch_id))
        if batch is None:
            return  # late: its batch timed out and was handed to one-by-one delivery
        if msg.headers and msg.headers.get("Status") == "503":
            ack = _NO_RESPONDERS
        else:
            try:
                ack = _decode_ack(msg.data)
            except msgspec.DecodeError:
                ack = _Ack(error={"description": f"unreadable ack: {msg.data[:200]!r}"})
        i = int(index)
        if batch.acks[i] is None:
            batch.settle(i, ack)


def _describe(exc: BaseException) -> str:
    """A JetStream refusal says why in its str ("... description='maximum messages exceeded'"); others in repr."""
    return str(exc) if isinstance(exc, nats.js.errors.APIError) else repr(exc)


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
        self._acks = AckInbox(nc)
        self._work_queues: dict[str, tuple[float, bool]] = {}  # stream -> (known until, is a work queue)
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
            raise self._failure(f"NATS publish to {subject} failed: {_describe(exc)}") from exc
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
            raise self._failure(f"queue publish to {subject} failed: {_describe(exc)}") from exc
        # `queue`: the run's message waits in a work queue (the overlap policy holds the schedule until consumed).
        return _acked(ack, subject, queue=topic)

    # --- the overlap policy's QUEUE runs (worker/overlap.py) ---

    async def still_queued(self, stream: str, seq: int, key: str) -> bool:
        """Whether a run's QUEUE message is still in its work queue stream: no consumer acked it yet. When NATS
        cannot tell, it counts as still there, so the schedule keeps waiting rather than overlap; a stream that
        never drops consumed messages (an operator's, not a work queue) cannot tell: it counts as consumed."""
        try:
            found = await self._queued_message(stream, seq, key)
            return found and await self._is_work_queue(stream)
        except NATS_ERRORS:
            return True

    async def withdraw(self, stream: str, seq: int, key: str) -> bool:
        """Delete a run's QUEUE message no consumer acked yet (CANCEL_OTHER); False if it is gone already.
        Tries a few times while NATS cannot answer, then gives up (logged): the message stays."""
        for attempt in range(WITHDRAW_ATTEMPTS):
            try:
                if not await self._queued_message(stream, seq, key):
                    return False
                return bool(await asyncio.wait_for(self.jsm.delete_msg(stream, seq), HOLD_CHECK_TIMEOUT_SEC))
            except nats.js.errors.NotFoundError:
                return False
            except NATS_ERRORS as exc:
                if attempt + 1 == WITHDRAW_ATTEMPTS:
                    logger.warning("message {} of stream {} not withdrawn: {}", seq, stream, _describe(exc))
                    return False
                await asyncio.sleep(HOLD_CHECK_TIMEOUT_SEC)
        return False

    async def _queued_message(self, stream: str, seq: int, key: str) -> bool:
        try:
            msg = await asyncio.wait_for(self.jsm.get_msg(stream, seq), HOLD_CHECK_TIMEOUT_SEC)
        except nats.js.errors.NotFoundError:
            return False  # acked (a work queue drops it then), or its stream is gone
        # A stream deleted and made again numbers its messages anew: this seq may hold another run's message.
        return (msg.headers or {}).get("Nats-Msg-Id") == key

    async def _is_work_queue(self, stream: str) -> bool:
        now = time.monotonic()
        known = self._work_queues.get(stream)
        if known is None or known[0] < now:
            info = await asyncio.wait_for(self.jsm.stream_info(stream), HOLD_CHECK_TIMEOUT_SEC)
            known = (now + 60.0, info.config.retention == RetentionPolicy.WORK_QUEUE)
            self._work_queues[stream] = known
        return known[1]

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
            raise self._failure(f"NATS publish of {len(fires)} event(s) failed: {_describe(exc)}") from exc

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
        batch = await self._acks.open(len(fires))
        subjects: list[str] = [""] * len(fires)
        for i, fire in enumerate(fires):
            if fire.tenant_id in refused:
                outcomes[i] = refused[fire.tenant_id]
                batch.settle(i)
                continue
            assert isinstance(fire.target, EventTarget)
            topic = fire.target.event_topic
            subject = subjects[i] = self.ns.event_subject(fire.tenant_id, topic)
            try:
                body = self._envelope(fire, topic, now)
                await self.nc.publish(subject, body, reply=batch.reply(i), headers=_headers(fire.key))
            except NATS_ERRORS as exc:
                outcomes[i] = self._publish_failed(fire.tenant_id, subject, exc)
                batch.settle(i)
        acks = await batch.wait(PUBLISH_TIMEOUT_SEC)
        for i, ack in enumerate(acks):
            if outcomes[i] is not None:
                continue
            subject = subjects[i]
            if ack is None:
                outcomes[i] = self._failure(f"no JetStream ack for {subject} within {PUBLISH_TIMEOUT_SEC}s")
            elif ack is _NO_RESPONDERS or not ack.stream:
                outcomes[i] = self._publish_failed(fires[i].tenant_id, subject, nats.js.errors.NoStreamResponseError())
            elif ack.error is not None:
                error = nats.js.errors.APIError(
                    code=ack.error.get("code"),
                    err_code=ack.error.get("err_code"),
                    description=ack.error.get("description"),
                )
                outcomes[i] = self._publish_failed(fires[i].tenant_id, subject, error)
            else:
                detail = {"via": "jetstream", "stream": ack.stream, "seq": ack.seq, "duplicate": ack.duplicate}
                outcomes[i] = Delivered({**detail, "subject": subject, "delivery": EventDelivery.DURABLE.value})
        return outcomes  # type: ignore[return-value]

    async def publish_stream_many(self, messages: list[tuple[str, str, bytes, str]]) -> list[bool]:
        """(tenant, subject, body, Nats-Msg-Id) into the tenants' event streams, in order, the acks awaited
        together; whether each was acknowledged (stored, or dropped as a duplicate of that id)."""
        ok = [False] * len(messages)
        tenants = list({tenant_id: None for tenant_id, *_ in messages})
        ensured = await asyncio.gather(*(self._event_stream(t) for t in tenants), return_exceptions=True)
        refused = {t for t, result in zip(tenants, ensured, strict=True) if isinstance(result, BaseException)}
        batch = await self._acks.open(len(messages))
        for i, (tenant_id, subject, body, msg_id) in enumerate(messages):
            if tenant_id in refused:
                batch.settle(i)
                continue
            try:
                headers = {"Nats-Msg-Id": msg_id, "Content-Type": "application/cloudevents+json"}
                await self.nc.publish(subject, body, reply=batch.reply(i), headers=headers)
            except NATS_ERRORS:
                batch.settle(i)
        for i, ack in enumerate(await batch.wait(PUBLISH_TIMEOUT_SEC)):
            if ack is None or ack is _NO_RESPONDERS or not ack.stream:
                if ack is not None and messages[i][0] not in refused:
                    self._event_streams.pop(messages[i][0], None)  # gone: ensured again next time
                continue
            ok[i] = ack.error is None
        return ok

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
            raise self._failure(f"event stream of tenant {tenant_id} not ensured: {_describe(exc)}") from exc

    def _publish_failed(self, tenant_id: str, subject: str, exc: BaseException) -> DeliveryFailed:
        if isinstance(exc, nats.js.errors.NoStreamResponseError):
            self._event_streams.pop(tenant_id, None)  # the stream went away: ensure it again on the next attempt
        return self._failure(f"JetStream publish to {subject} failed: {_describe(exc)}")

    # --- dead letters ---

    async def publish_deadletter(self, fire: Fire, body: bytes) -> None:
        """To the tenant's own dead-letter subject (durable), and the operator-wide copy when one is set."""
        key = f"{fire.key}:deadletter"
        failure: DeliveryFailed | None = None
        try:
            await self._publish_event(fire.tenant_id, self.ns.deadletter_subject(fire.tenant_id), body, key)
        except DeliveryFailed as exc:
            failure = exc  # the operator's copy is still worth sending
        if self.ns.operator_deadletter:
            await self.publish(self.ns.operator_deadletter, body, key)
        if failure is not None:
            raise failure

    async def publish(self, subject: str, body: bytes, key: str) -> dict[str, Any]:
        """Publish to an operator's subject: through JetStream when a stream captures it, else core."""
        with tracer.start_as_current_span("nats.publish", attributes={"messaging.destination.name": subject}):
            try:
                stream = await self._stream_for(subject)
                if stream is not None:
                    ack = await self.js.publish(subject, body, headers=_headers(key))
                    return _acked(ack, subject)
            except NATS_ERRORS as exc:
                raise self._failure(f"NATS publish to {subject} failed: {_describe(exc)}") from exc
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
