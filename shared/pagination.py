"""Opaque list cursors: a keyset position (created_at, id) that a client hands back for the next page.

The cursor names only a position in the tenant's own ordering; every query is still scoped to the tenant in the
request, so a cursor copied from another tenant reveals or selects nothing of theirs.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

import msgspec

from shared.errors import InvalidInput

# OFFSET reads and discards every row before the page: beyond this many, `page` is refused in favour of `cursor`.
MAX_OFFSET = 10_000
_VERSION = 1


class _Cursor(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    version: int
    created_at: datetime
    id: uuid.UUID


def encode_cursor(created_at: datetime, schedule_id: str) -> str:
    raw = msgspec.msgpack.encode(_Cursor(_VERSION, created_at, uuid.UUID(schedule_id)))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, field: str = "cursor") -> tuple[datetime, str]:
    """The position in ``cursor``; InvalidInput naming ``field`` if it is not one this API issued."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = msgspec.msgpack.decode(raw, type=_Cursor)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidInput.field(field, "is not a cursor returned by this API") from None
    if decoded.version != _VERSION or decoded.created_at.tzinfo is None:
        raise InvalidInput.field(field, "is not a cursor returned by this API")
    return decoded.created_at, str(decoded.id)


def check_offset(page: int, page_size: int) -> int:
    """The OFFSET of ``page``; InvalidInput beyond MAX_OFFSET rows (use the cursor there)."""
    offset = (page - 1) * page_size
    if offset > MAX_OFFSET:
        raise InvalidInput.field(
            "page", f"must start within the first {MAX_OFFSET} schedules; page on with `cursor` (nextCursor)"
        )
    return offset
