"""Run ids that carry their partition key.

``runs`` is partitioned by ``scheduled_for`` (sql/0040), and most lookups know only a run's id. So a run id
is an RFC 9562 version-8 UUID whose first 48 bits are the millisecond of ``scheduled_for`` (Unix time, big
endian, as in UUIDv7): ``run_id_scheduled_from(id)`` / ``run_id_scheduled_until(id)`` in SQL turn an id back
into the millisecond to look in, and Postgres prunes the search to that one partition. The other 74 bits
are a hash of the occurrence's idempotency key (a scheduled run: recording an occurrence twice is still a key
conflict) or random (a manual run). Ids made before (uuid5, uuid4) have another version and are looked up
across all partitions.
"""

from __future__ import annotations

import functools
import hashlib
import os
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# Kept from the uuid5 ids this scheme replaces: the hash input of a key does not change.
_NAMESPACE = bytes.fromhex("5c4ed01e00004000800000000000f14e")


def _format(ms: int, tail: str) -> str:
    """The id of millisecond ``ms`` with the bits of the hex string ``tail`` (at least 19 digits) after it."""
    t = f"{ms:012x}"
    # Version 8 (a layout of our own) in the 13th digit, the RFC 9562 variant (10xx) in the 17th. Built as text
    # (the claim path makes one per fire): as cheap as the uuid5 ids were, where a bytearray cost a third more.
    return f"{t[:8]}-{t[8:]}-8{tail[:3]}-{_VARIANT[tail[3]]}{tail[4:7]}-{tail[7:19]}"


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


@functools.lru_cache(maxsize=4096)
def epoch_ms(at: datetime) -> int:
    """Milliseconds since the Unix epoch, rounded down (integer arithmetic: a float would round 09:00:00.000
    into the millisecond before it). Cached: a burst shares a few instants."""
    return (at - _EPOCH) // _MS


def occurrence_run_id(key: str, scheduled_for: datetime) -> str:
    """The run id of the occurrence with idempotency key ``key``, due at ``scheduled_for``."""
    digest = hashlib.sha1(_NAMESPACE + key.encode(), usedforsecurity=False).hexdigest()
    return _format(epoch_ms(scheduled_for), digest)


def manual_run_id(scheduled_for: datetime) -> str:
    """A fresh id for a run queued by hand for ``scheduled_for`` (the time it was asked for)."""
    return _format(epoch_ms(scheduled_for), os.urandom(10).hex())


def run_id_ms(run_id: str) -> int | None:
    """The millisecond a run id carries, or None for an id of the older layouts."""
    if len(run_id) != 36 or run_id[14] != "8":
        return None
    try:
        return int(run_id[:8] + run_id[9:13], 16)
    except ValueError:
        return None


_EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 12, 31, tzinfo=UTC)


def id_span(run_ids: list[str]) -> dict[str, datetime]:
    """The ``from``/``until`` parameters of a statement on these runs: the scheduled_for span their ids carry
    (all time if one is of an older layout), so that Postgres plans only the partitions in it."""
    if not run_ids:
        return {"from": _EARLIEST, "until": _EARLIEST}
    if not all(run_id[14:15] == "8" for run_id in run_ids):
        return {"from": _EARLIEST, "until": _LATEST}
    # Fixed-width lowercase hex led by the millisecond: the least and greatest ids carry the least and
    # greatest milliseconds (min/max over strings run in C).
    lowest, highest = run_id_ms(min(run_ids)), run_id_ms(max(run_ids))
    if lowest is None or highest is None:
        return {"from": _EARLIEST, "until": _LATEST}
    return {"from": _EPOCH + lowest * _MS, "until": _EPOCH + (highest + 1) * _MS}
