"""Time-ordered schedule ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shared.ids import uuid7


def test_uuid7_is_version_7_rfc_variant_and_carries_the_millisecond():
    now = datetime(2026, 12, 3, 9, 0, 0, 123456, tzinfo=UTC)
    value = uuid.UUID(uuid7(now))
    assert value.version == 7 and value.variant == uuid.RFC_4122
    assert value.int >> 80 == int(now.timestamp() * 1000)


def test_uuid7_orders_by_time_and_is_unique_within_a_millisecond():
    now = datetime(2026, 12, 3, tzinfo=UTC)
    later = [uuid7(now + timedelta(milliseconds=i)) for i in range(50)]
    assert later == sorted(later)
    same = {uuid7(now) for _ in range(10_000)}
    assert len(same) == 10_000
