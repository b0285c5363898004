"""Opaque list cursors and the offset cap."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from shared.errors import InvalidInput
from shared.pagination import MAX_OFFSET, check_offset, decode_cursor, encode_cursor


def test_a_cursor_round_trips_to_the_microsecond():
    at = datetime(2026, 12, 3, 9, 0, 0, 123457, tzinfo=UTC)
    sid = str(uuid.uuid4())
    cursor = encode_cursor(at, sid)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor  # safe in a query string
    assert decode_cursor(cursor) == (at, sid)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not-a-cursor",
        "AAAA",
        "%%%",
        base64.urlsafe_b64encode(msgspec.msgpack.encode([2, "2026-01-01T00:00:00Z", str(uuid.uuid4())])).decode(),
        base64.urlsafe_b64encode(msgspec.msgpack.encode([1, "2026-01-01T00:00:00", str(uuid.uuid4())])).decode(),
        base64.urlsafe_b64encode(msgspec.msgpack.encode([1, "2026-01-01T00:00:00Z", "nope"])).decode(),
        base64.urlsafe_b64encode(msgspec.msgpack.encode({"a": 1})).decode(),
    ],
)
def test_anything_else_is_a_400_naming_the_cursor(cursor):
    with pytest.raises(InvalidInput) as caught:
        decode_cursor(cursor)
    assert caught.value.problems[0].field == "cursor"


def test_offsets_are_capped():
    assert check_offset(1, 200) == 0
    assert check_offset(MAX_OFFSET // 20 + 1, 20) == MAX_OFFSET
    with pytest.raises(InvalidInput) as caught:
        check_offset(MAX_OFFSET // 20 + 2, 20)
    assert caught.value.problems[0].field == "page"
