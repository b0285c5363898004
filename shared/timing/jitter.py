"""jitterSec: when an occurrence is due, from a hash of its idempotency key.

The key is the nominal occurrence (``<schedule id>:<UTC instant>``): the same on every attempt, redelivery and
worker. ``jitterSec`` moves when the occurrence is *due* (fired) by a deterministic offset in [0, jitterSec)
taken from a hash of the key, so every worker and every retry agrees on it; the key, the run's
``scheduledFor`` and everything a receiver deduplicates on stay the nominal time.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime, timedelta


# The occurrence's key, as worker/fire.py makes it (main moved both to shared/occurrences.py: on merging, import
# them from there instead; tests/unit/test_jitter.py checks the two agree).
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
