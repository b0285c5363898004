"""Run ids carry the millisecond of their scheduled time (the partition key) and stay derived from the key."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from shared.db.run_ids import epoch_ms, id_span, manual_run_id, occurrence_run_id, run_id_ms

instants = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9000, 1, 1), timezones=st.just(UTC))


@given(st.text(), instants)
def test_an_occurrence_id_is_a_version_8_uuid_carrying_its_millisecond(key: str, scheduled_for: datetime):
    try:
        key.encode()
    except UnicodeEncodeError:
        return
    run_id = occurrence_run_id(key, scheduled_for)
    parsed = uuid.UUID(run_id)
    assert str(parsed) == run_id
    assert parsed.version == 8 and parsed.variant == uuid.RFC_4122
    assert run_id_ms(run_id) == epoch_ms(scheduled_for)
    assert occurrence_run_id(key, scheduled_for) == run_id  # recording it twice is a key conflict


def test_different_keys_at_one_instant_get_different_ids():
    at = datetime(2026, 12, 3, 9, tzinfo=UTC)
    assert len({occurrence_run_id(f"s{i}:{at}", at) for i in range(10_000)}) == 10_000


def test_the_millisecond_is_rounded_down_exactly():
    at = datetime(2026, 12, 3, 9, 0, 0, tzinfo=UTC)
    assert run_id_ms(occurrence_run_id("k", at)) == 1796288400000
    assert run_id_ms(occurrence_run_id("k", at - timedelta(microseconds=1))) == 1796288399999
    assert run_id_ms(occurrence_run_id("k", at + timedelta(microseconds=999))) == 1796288400000


def test_ids_sort_by_time():
    at = datetime(2026, 12, 3, 9, tzinfo=UTC)
    ids = [manual_run_id(at + timedelta(milliseconds=i)) for i in range(100)]
    assert sorted(ids) == ids
    assert len(set(ids)) == 100


def test_older_ids_have_no_millisecond_and_span_all_time():
    assert run_id_ms(str(uuid.uuid4())) is None
    assert run_id_ms(str(uuid.uuid5(uuid.NAMESPACE_URL, "x"))) is None
    assert run_id_ms("not-a-uuid") is None
    span = id_span([manual_run_id(datetime(2026, 12, 3, tzinfo=UTC)), str(uuid.uuid4())])
    assert span["from"].year == 1 and span["until"].year == 9999


def test_the_span_of_a_batch_covers_each_id():
    at = datetime(2026, 12, 3, 9, tzinfo=UTC)
    ids = [manual_run_id(at + timedelta(seconds=s)) for s in (30, 0, 7.0005)]
    assert id_span(ids) == {"from": at, "until": at + timedelta(seconds=30, milliseconds=1)}
