"""jitterSec: a deterministic offset in [0, jitterSec) from the occurrence's idempotency key."""

from __future__ import annotations

import statistics
import uuid
from datetime import UTC, datetime, timedelta, timezone

from shared.model import CronTrigger, FixedDelayTrigger
from shared.timing.jitter import due_at, idempotency_key, jitter_offset
from shared.validation import check_jitter
from worker.fire import idempotency_key as worker_key

T0 = datetime(2026, 12, 3, 0, 0, tzinfo=UTC)


def test_the_offset_is_a_function_of_the_key_alone() -> None:
    key = idempotency_key("s1", T0)
    assert jitter_offset(key, 300) == jitter_offset(key, 300)
    assert worker_key("s1", T0) == key  # the worker keys occurrences with the same function
    # The same instant in another zone is the same occurrence, the same key, the same offset.
    other_zone = T0.astimezone(timezone(timedelta(hours=5)))
    assert due_at("s1", other_zone, 300) == due_at("s1", T0, 300)


def test_no_jitter_is_the_nominal_time() -> None:
    assert due_at("s1", T0, None) == T0 and due_at("s1", T0, 0) == T0 and due_at("s1", None, 60) is None
    assert jitter_offset("k", 0) == timedelta(0)


def test_offsets_stay_in_range_and_spread_evenly() -> None:
    jitter = 600
    offsets = [jitter_offset(idempotency_key(str(uuid.UUID(int=i)), T0), jitter).total_seconds() for i in range(20000)]
    assert min(offsets) >= 0 and max(offsets) < jitter
    # Uniform on [0, 600): mean 300, each tenth of the range holds ~10%.
    assert abs(statistics.fmean(offsets) - jitter / 2) < 10
    buckets = [0] * 10
    for o in offsets:
        buckets[int(o // 60)] += 1
    assert all(1700 < b < 2300 for b in buckets), buckets


def test_different_occurrences_of_one_schedule_get_different_offsets() -> None:
    offsets = {jitter_offset(idempotency_key("s1", T0 + timedelta(days=d)), 3600) for d in range(50)}
    assert len(offsets) > 45


def test_validation_names_the_field() -> None:
    cron = CronTrigger(cron="0 0 * * *")
    assert check_jitter(None, cron) == [] and check_jitter(3600, cron) == []
    assert [p.field for p in check_jitter(-1, cron)] == ["jitterSec"]
    assert [p.field for p in check_jitter(86401, cron)] == ["jitterSec"]
    assert [p.field for p in check_jitter(5, FixedDelayTrigger(delay_sec=5))] == ["jitterSec"]
