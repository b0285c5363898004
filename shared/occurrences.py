"""The identity of a scheduled occurrence: its idempotency key and its run id (``shared/db/run_ids.py``: derived
from the key, and carrying the scheduled time, the partition key of the run history).

Workers (recording what they claimed), backfill and the catch-up preview compute them here, so every path that
records an occurrence gives it the same id and key: recording it twice is a primary-key conflict, and a
receiver that deduplicates on the key sees it once.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from shared.db.run_ids import occurrence_run_id

__all__ = ["idempotency_key", "occurrence_run_id", "utc_iso"]


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
