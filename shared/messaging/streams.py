"""The JetStream streams of each tenant: their configuration, and creating them idempotently.

Used by workers (a tenant's event stream on its first EVENT, queue streams they have not seen) and by the API
(a QUEUE schedule's stream before the schedule is stored, so a consumer started right after the 201 finds it).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import nats
import nats.errors
import nats.js.errors
from loguru import logger
from nats.aio.client import Client
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.manager import JetStreamManager

from shared.errors import Unavailable
from shared.messaging.subjects import Namespace
from shared.settings import Settings

DEDUPE_WINDOW_SEC = 120.0  # Nats-Msg-Id deduplication: re-publishes of one run within this window are dropped
API_TIMEOUT_SEC = 5.0
CONNECT_TIMEOUT_SEC = 4.0
NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, TimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class StreamLimits:
    max_age_sec: float  # 0: none
    max_msgs: int  # -1: none
    max_bytes: int  # -1: none
    replicas: int = 1


def _dedupe_window(limits: StreamLimits) -> float:
    return DEDUPE_WINDOW_SEC if limits.max_age_sec <= 0 else min(DEDUPE_WINDOW_SEC, limits.max_age_sec)


def event_stream_config(ns: Namespace, tenant_id: str, limits: StreamLimits) -> StreamConfig:
    """Everything in the tenant's event namespace, kept within the limits; the oldest events go first."""
    return StreamConfig(
        name=ns.event_stream(tenant_id),
        description=f"scheduler: events of tenant {tenant_id}",
        subjects=[ns.event_filter(tenant_id)],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=limits.max_age_sec,
        max_msgs=limits.max_msgs,
        max_bytes=limits.max_bytes,
        storage=StorageType.FILE,
        num_replicas=limits.replicas,
        duplicate_window=_dedupe_window(limits),
    )


def queue_stream_config(ns: Namespace, tenant_id: str, topic: str, limits: StreamLimits) -> StreamConfig:
    """A work queue (each message to one consumer). A full queue refuses new messages rather than dropping
    unconsumed work: the publish fails, is retried and, when the retries run out, dead-lettered."""
    return StreamConfig(
        name=ns.queue_stream(tenant_id, topic),
        description=f"scheduler: queue {topic!r} of tenant {tenant_id}",
        subjects=[ns.queue_subject(tenant_id, topic)],
        retention=RetentionPolicy.WORK_QUEUE,
        discard=DiscardPolicy.NEW,
        max_age=limits.max_age_sec,
        max_msgs=limits.max_msgs,
        max_bytes=limits.max_bytes,
        storage=StorageType.FILE,
        num_replicas=limits.replicas,
        duplicate_window=_dedupe_window(limits),
    )


class StreamUnavailable(Exception):
    """No stream captures the subject and none could be made (JetStream off, a foreign stream in the way...)."""


async def ensure_stream(jsm: JetStreamManager, config: StreamConfig) -> str:
    """Create ``config`` (or bring an existing one to its limits) and return the stream capturing its subject.

    Adding a stream identical to an existing one succeeds, so concurrent workers and API processes race safely.
    When a stream of another name already captures the subject (made by an operator), that one is used.
    """
    assert config.name is not None and config.subjects
    try:
        await jsm.add_stream(config)
        return config.name
    except nats.errors.NoRespondersError as exc:
        raise StreamUnavailable("JetStream is not enabled on the NATS server") from exc
    except nats.js.errors.BadRequestError as exc:
        refusal = exc
    try:
        await jsm.stream_info(config.name)
    except nats.js.errors.NotFoundError:
        pass
    else:
        # Ours, with other limits (the settings changed): apply them.
        with contextlib.suppress(nats.js.errors.BadRequestError):
            await jsm.update_stream(config)
        return config.name
    try:
        return await jsm.find_stream_name_by_subject(config.subjects[0])
    except nats.js.errors.NotFoundError:
        raise StreamUnavailable(f"cannot create stream {config.name}: {refusal.description}") from refusal


def namespace_of(settings: Settings) -> Namespace:
    """The configured subject layout; a bad one stops the process at start-up with the reason."""
    try:
        return Namespace(settings.nats_subject_prefix, settings.nats_queue_subject_prefix, settings.deadletter_subject)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc


def stream_limits(settings: Settings) -> tuple[StreamLimits, StreamLimits]:
    """The configured limits of (event streams, queue streams)."""
    replicas = settings.nats_stream_replicas
    return (
        StreamLimits(
            settings.nats_event_max_age_sec, settings.nats_event_max_msgs, settings.nats_event_max_bytes, replicas
        ),
        StreamLimits(
            settings.nats_queue_max_age_sec, settings.nats_queue_max_msgs, settings.nats_queue_max_bytes, replicas
        ),
    )


class QueueProvisioner:
    """The API's lazy NATS connection, used only to create QUEUE streams when a schedule is stored.

    Without ``NATS_URL`` the API creates nothing and workers create each stream on the queue's first fire.
    """

    def __init__(self, url: str, ns: Namespace, limits: StreamLimits) -> None:
        self.url = url
        self.ns = ns
        self.limits = limits
        self._nc: Client | None = None
        self._lock = asyncio.Lock()

    async def _jsm(self) -> JetStreamManager:
        async with self._lock:
            if self._nc is None or self._nc.is_closed:
                # A request waits for one quick attempt, not nats-py's default minutes of them: a failed connect
                # is answered 503 and tried again by the next request.
                self._nc = await asyncio.wait_for(
                    nats.connect(
                        self.url,
                        name="scheduler-api",
                        connect_timeout=2,
                        allow_reconnect=False,
                        max_reconnect_attempts=1,
                        reconnect_time_wait=0.2,
                    ),
                    CONNECT_TIMEOUT_SEC,
                )
            return self._nc.jsm(timeout=API_TIMEOUT_SEC)

    async def ensure_queue(self, tenant_id: str, topic: str) -> str | None:
        """The stream of the tenant's queue ``topic``, created if missing; 503 when NATS cannot be reached."""
        if not self.url:
            return None
        config = queue_stream_config(self.ns, tenant_id, topic, self.limits)
        try:
            return await ensure_stream(await self._jsm(), config)
        except (StreamUnavailable, *NATS_ERRORS) as exc:
            logger.warning("queue stream {} not created: {!r}", config.name, exc)
            if self._nc is not None and not self._nc.is_connected:
                await self._drop()
            raise Unavailable(f"the queue's stream could not be created on NATS ({exc}); try again") from exc

    async def _drop(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()

    async def close(self) -> None:
        await self._drop()
