"""What a worker delivers and what it records about it."""

from __future__ import annotations

import functools
import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from shared.model import RetryPolicy, Target

_RUN_NAMESPACE = uuid.UUID("5c4ed01e-0000-4000-8000-00000000f14e")
_RUN_NAMESPACE_BYTES = _RUN_NAMESPACE.bytes


# Cached: a batch formats the same few instants many times (every key and envelope of a burst due at one
# instant, the envelope's scheduledfor after the key, one publish time per batch). The result depends only on
# the instant, and equal aware datetimes are equal keys whatever their zone, so sharing entries is correct.
@functools.lru_cache(maxsize=4096)
def utc_iso(value: datetime) -> str:
    """``2026-03-29T01:00:00.000000Z``: one fixed format, so keys built from instants are stable."""
    utc = value.astimezone(UTC)
    if utc.year < 1000:  # isoformat pads the year to 4 digits where strftime does not: keep the old keys
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # The same text as the strftime above, in a third of its time.
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def idempotency_key(schedule_id: str, scheduled_for: datetime) -> str:
    """Stable across retries and redeliveries of one occurrence: receivers deduplicate on it."""
    return f"{schedule_id}:{utc_iso(scheduled_for)}"


def clean_text(value: str) -> str:
    """Text from a target (an error, a response) as Postgres can store it: no NUL characters."""
    return value.replace("\x00", "\ufffd")


def occurrence_run_id(key: str) -> str:
    """The run id of a scheduled occurrence, derived from its key: recording it twice is a key conflict.

    ``str(uuid.uuid5(_RUN_NAMESPACE, key))`` computed without the two UUID objects, which cost twice the hash
    itself on the claim path (the unit tests check the two agree).
    """
    digest = bytearray(hashlib.sha1(_RUN_NAMESPACE_BYTES + key.encode(), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(slots=True)
class Fire:
    """One run to deliver, with everything delivery needs (no further reads)."""

    run_id: str
    schedule_id: str
    tenant_id: str
    scheduled_for: datetime
    key: str
    target: Target
    payload: msgspec.Raw  # the stored JSON, passed through undecoded
    retry: RetryPolicy
    manual: bool = False
    attempt: int = 0  # attempts already made
    trace_context: str | None = None
    webhook_secret: str | None = None  # sealed; the HTTP target opens it to sign the request
    # FIXED_DELAY: the schedule is parked behind this run and is re-armed when it finishes.
    rearm: bool = False
    # This worker's lease on the run ends then (its own clock); renewed by heartbeat (worker/leases.py).
    lease_until: datetime | None = None
    lost: bool = False  # another worker took the run over: deliver and record nothing more of it
    # Its success is announced (notify.runSucceeded): recorded with the run, read by the outbox trigger (sql/0070).
    notify_succeeded: bool = False


@dataclass(slots=True)
class Delivered:
    """What a target reports about a successful attempt."""

    detail: dict[str, Any] = field(default_factory=dict)
    http_status: int | None = None


class DeliveryFailed(Exception):
    """An attempt failed; ``retryable`` says whether another attempt may succeed."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        http_status: int | None = None,
        retry_after: float | None = None,
        outage: bool = False,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        # Our own infrastructure (NATS) is down: waiting for it must not use up the schedule's attempts.
        self.outage = outage
        self.http_status = http_status
        self.retry_after = retry_after


@dataclass(slots=True)
class RunUpdate:
    """A change of a run's delivery state, written in batches."""

    run_id: str
    status: str
    attempt: int
    started_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = None
    lease_until: datetime | None = None
    duration_ms: int | None = None
    http_status: int | None = None
    error: str | None = None
    delivery: str | None = None  # JSON text
    rearm: bool = False
