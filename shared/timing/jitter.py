"""jitterSec: when an occurrence is due, from a hash of its idempotency key.

The key is the nominal occurrence (``<schedule id>:<UTC instant>``): the same on every attempt, redelivery and
worker. ``jitterSec`` moves when the occurrence is *due* (fired) by a deterministic offset in [0, jitterSec)
taken from a hash of the key, so every worker and every retry agrees on it; the key, the run's
``scheduledFor`` and everything a receiver deduplicates on stay the nominal time.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from shared.occurrences import idempotency_key


def jitter_offset(key: str, jitter_sec: int | None) -> timedelta:
    """The occurrence's offset in [0, jitter_sec), in whole milliseconds, from the first 8 bytes of SHA-256
    of its key (uniform enough for any jitter: 2^64 is no multiple of the range, but the bias is < 2^-40)."""
    if not jitter_sec:
        return timedelta(0)
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return timedelta(milliseconds=h % (jitter_sec * 1000))


def due_at(schedule_id: str, nominal: datetime | None, jitter_sec: int | None) -> datetime | None:
    """When the occurrence ``nominal`` of a schedule is fired: ``nominal`` plus its jitter offset."""
    if nominal is None or not jitter_sec:
        return nominal
    return nominal + jitter_offset(idempotency_key(schedule_id, nominal), jitter_sec)
