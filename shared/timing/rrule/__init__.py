"""RFC 5545 recurrence rules for RRULE triggers: ``validate_rrule`` and ``rrule_next``.

``parse`` reads and checks the text, ``expand`` generates the rule's local wall times period by period
(§3.3.10), ``evaluate`` maps them to instants in the rule's zone (§3.3.5) and applies COUNT, UNTIL, EXDATE
and RDATE. Everything returned is UTC.

DTSTART: a ``DTSTART`` line is the rule's start and always its first occurrence (§3.8.5.3). Without one the
caller's anchor (the trigger's ``startAt``, which a schedule without one gets pinned to its creation time)
supplies what the rule leaves open and the phase of INTERVAL, but is an occurrence only if the rule generates
it; and there, a BYHOUR without BYMINUTE means minute 0 and a BYHOUR or BYMINUTE without BYSECOND means second
0 (``BYHOUR=9`` is 09:00:00, not 09:17:33 copied from the moment the schedule was created).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from shared.timing.rrule.evaluate import Compiled
from shared.timing.rrule.parse import parse_spec

if TYPE_CHECKING:
    from shared.timing.budget import Budget

__all__ = ["rrule_next", "validate_rrule"]


def validate_rrule(text: str) -> None:
    """Raise ValueError with a message naming the problem when ``text`` is not an accepted recurrence."""
    parse_spec(text)


def rrule_next(
    text: str,
    tz: ZoneInfo,
    anchor: datetime,
    after: datetime,
    *,
    budget: Budget | None = None,
    skip_gaps: bool = False,
    both_folds: bool = False,
) -> datetime | None:
    """The first occurrence strictly after ``after`` as a UTC datetime; None once the rule has none left.

    ``anchor`` (aware) stands in for DTSTART when ``text`` has no DTSTART line; it is read as wall time in
    ``tz``. None is only ever a proof (COUNT or UNTIL reached, or no occurrence in a whole calendar cycle),
    never a search horizon; ``budget`` is ticked as the search goes and may cut it off instead.
    ``skip_gaps`` (gap SKIP) and ``both_folds`` (overlap BOTH) are the trigger's DST policy; the defaults are
    RFC 5545 §3.3.5.
    """
    if anchor.tzinfo is None or after.tzinfo is None:
        raise ValueError("anchor and after must be timezone-aware datetimes")
    if tz.key is None:
        raise ValueError("tz must be a ZoneInfo built from an IANA key")
    if anchor.tzinfo is not UTC or anchor.microsecond:
        anchor = anchor.astimezone(UTC).replace(microsecond=0)
    if skip_gaps or both_folds:
        return compile_rrule(text, tz.key, anchor, skip_gaps, both_folds).next_after(after, budget)
    # The worker's hot path: a shorter cache key for the common case of no policy.
    return compile_rrule(text, tz.key, anchor).next_after(after, budget)


@lru_cache(maxsize=1024)
def compile_rrule(
    text: str, tz_key: str, anchor: datetime, skip_gaps: bool = False, both_folds: bool = False
) -> Compiled:
    """The evaluator for one text, zone, (UTC, whole-second) anchor and DST policy; cached, with its COUNT
    checkpoints."""
    return Compiled(parse_spec(text), ZoneInfo(tz_key), anchor, skip_gaps=skip_gaps, both_folds=both_folds)
