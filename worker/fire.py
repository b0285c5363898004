"""What a worker delivers and what it records about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from shared.model import RetryPolicy, Target

# Re-exported: the worker's callers import them from here; backfill computes the same keys from shared/.
from shared.occurrences import idempotency_key as idempotency_key
from shared.occurrences import utc_iso as utc_iso


def clean_text(value: str) -> str:
    """Text from a target (an error, a response) as Postgres can store it: no NUL characters."""
    return value.replace("\x00", "\ufffd")


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
    # Its schedule waits for this run (FIXED_DELAY parking, or an overlap policy): told when it finishes.
    rearm: bool = False
    # BUFFER_ONE: recorded with no lease, delivered once the run in flight releases it (worker/overlap.py).
    waiting: bool = False
    # CANCEL_OTHER may supersede this QUEUE run at any moment: its success is written at once, and its message
    # withdrawn if it was cancelled meanwhile (worker/delivery.py).
    confirm_success: bool = False
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
