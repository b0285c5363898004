"""The worker's hand-rolled fast paths give exactly what the standard library would."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.fire import _RUN_NAMESPACE, occurrence_run_id, utc_iso

offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@given(st.text())
def test_run_ids_are_uuid5_of_the_key(key: str):
    try:
        expected = str(uuid.uuid5(_RUN_NAMESPACE, key))
    except UnicodeEncodeError:  # lone surrogates: neither can encode them
        with pytest.raises(UnicodeEncodeError):
            occurrence_run_id(key)
        return
    assert occurrence_run_id(key) == expected


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets))
def test_utc_iso_is_the_strftime_format(value: datetime):
    assert utc_iso(value) == value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
