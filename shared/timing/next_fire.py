"""``next_fire``: the one function that says when a trigger fires next.

Pure and synchronous: every instant is aware and passed in, and is normalised to UTC here, at the edge (an
instant is the same instant whatever offset it was written with; the evaluators and the cache only ever see
UTC). ``None`` means the trigger is exhausted. The DST rules live in ``cron.py`` (Debian cron's) and
``rrule/`` (RFC 5545 §3.3.5).

Every entry point takes an optional ``budget`` (``shared.timing.budget.Budget``), ticked by the evaluators'
loops so that a request evaluating a hostile expression is cut off; the worker calls without one.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import msgspec

from shared.model import (
    CronTrigger,
    DstGap,
    DstOverlap,
    DstPolicy,
    FixedDelayTrigger,
    OneShotTrigger,
    RRuleTrigger,
    Trigger,
)
from shared.timing.cron import CronExpr, cron_next, parse_cron
from shared.timing.rrule import rrule_next

if TYPE_CHECKING:
    from shared.timing.budget import Budget

_TICK = timedelta(microseconds=1)
_CACHE_SIZE = 16384
# (trigger with UTC bounds, tz, UTC after) -> next fire. Bursts share expressions and due times (every schedule
# at the top of the minute), and the function is pure, so one computation serves them all.
_calendar_cache: dict[tuple[CronTrigger | RRuleTrigger, str, datetime], datetime | None] = {}


@lru_cache(maxsize=4096)
def compiled_cron(expr: str) -> CronExpr:
    return parse_cron(expr)


@lru_cache(maxsize=1024)
def zone(key: str) -> ZoneInfo:
    return ZoneInfo(key)


def next_fire(trigger: Trigger, tz: str, after: datetime, *, budget: Budget | None = None) -> datetime | None:
    """The first fire time strictly after ``after`` within the trigger's startAt/endAt bounds.

    FIXED_DELAY counts from ``after``: callers pass the instant the previous run finished.
    """
    after = _utc(after)
    trigger = _utc_bounds(trigger)
    if isinstance(trigger, CronTrigger | RRuleTrigger):
        return _calendar_next(trigger, tz, after, budget)
    result: datetime | None
    match trigger:
        case FixedDelayTrigger():
            result = max(after + timedelta(seconds=trigger.delay_sec), trigger.start_at or after)
        case OneShotTrigger():
            result = trigger.start_at.astimezone(UTC) if trigger.start_at > after else None
    if result is None or (trigger.end_at is not None and result > trigger.end_at):
        return None
    return result.astimezone(UTC)


def _calendar_next(
    trigger: CronTrigger | RRuleTrigger, tz: str, after: datetime, budget: Budget | None
) -> datetime | None:
    """Cached by the UTC instant; a computation cut off by the budget leaves nothing behind."""
    key = (trigger, tz, after)
    try:
        return _calendar_cache[key]
    except KeyError:
        pass
    floor = after if trigger.start_at is None else max(after, trigger.start_at - _TICK)
    result: datetime | None
    policy = trigger.dst_policy
    if isinstance(trigger, CronTrigger):
        if policy is None:
            result = cron_next(compiled_cron(trigger.cron), zone(tz), floor, budget=budget)
        else:
            skip, both = dst_flags(policy)
            result = cron_next(
                compiled_cron(trigger.cron), zone(tz), floor, budget=budget, skip_gaps=skip, both_folds=both
            )
    else:
        if trigger.start_at is None:
            raise ValueError("an RRULE trigger needs startAt as its anchor; see anchor_trigger()")
        if policy is None:
            result = rrule_next(trigger.rrule, zone(tz), trigger.start_at, floor, budget=budget)
        else:
            skip, both = dst_flags(policy)
            result = rrule_next(
                trigger.rrule,
                zone(tz),
                trigger.start_at,
                floor,
                budget=budget,
                skip_gaps=bool(skip),
                both_folds=bool(both),
            )
    if result is not None and trigger.end_at is not None and result > trigger.end_at:
        result = None
    if len(_calendar_cache) >= _CACHE_SIZE:
        with suppress(KeyError, StopIteration, RuntimeError):  # another thread evicted first
            del _calendar_cache[next(iter(_calendar_cache))]
    _calendar_cache[key] = result
    return result


def dst_flags(policy: DstPolicy) -> tuple[bool | None, bool | None]:
    """``(skip_gaps, both_folds)`` for the evaluators; None where the policy leaves the default."""
    gap = None if policy.gap is None else policy.gap is DstGap.SKIP
    overlap = None if policy.overlap is None else policy.overlap is DstOverlap.BOTH
    return gap, overlap


def first_fire(
    trigger: Trigger, tz: str, now: datetime, fired_before: bool = False, *, budget: Budget | None = None
) -> datetime | None:
    """When a new, edited or re-enabled schedule fires first.

    A ONE_SHOT or FIXED_DELAY whose startAt has passed is due at once (the misfire policy then decides); a
    ONE_SHOT that already fired stays completed.
    """
    now = _utc(now)
    trigger = _utc_bounds(trigger)
    match trigger:
        case OneShotTrigger():
            result = None if fired_before else trigger.start_at.astimezone(UTC)
        case FixedDelayTrigger():
            if trigger.start_at is not None and (not fired_before or trigger.start_at > now):
                result = trigger.start_at.astimezone(UTC)
            else:
                result = now + timedelta(seconds=trigger.delay_sec)
        case _:
            return next_fire(trigger, tz, now, budget=budget)
    if trigger.end_at is not None and result is not None and result > trigger.end_at:
        return None
    return result


def anchor_trigger(trigger: Trigger, now: datetime) -> Trigger:
    """Pin an RRULE without startAt to ``now`` (whole seconds), so its occurrences do not drift."""
    if isinstance(trigger, RRuleTrigger) and trigger.start_at is None:
        return msgspec.structs.replace(trigger, start_at=_utc(now).replace(microsecond=0))
    return trigger


def fire_times(
    trigger: Trigger,
    tz: str,
    after: datetime,
    count: int,
    *,
    budget: Budget | None = None,
    until: datetime | None = None,
) -> list[datetime]:
    """The next ``count`` fire times strictly after ``after`` and not after ``until`` (fewer when the trigger
    runs out first)."""
    times: list[datetime] = []
    current = _utc(after)
    trigger = _utc_bounds(trigger)
    while len(times) < count:
        nxt = next_fire(trigger, tz, current, budget=budget)
        if nxt is None or (until is not None and nxt > until):
            break
        times.append(nxt)
        current = nxt
    return times


def _utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("instants must be timezone-aware")
    return value.astimezone(UTC)


def _utc_bounds(trigger: Trigger) -> Trigger:
    """The trigger with startAt and endAt in UTC (a new object only when one of them was not)."""
    start, end = trigger.start_at, trigger.end_at
    if (start is None or start.tzinfo is UTC) and (end is None or end.tzinfo is UTC):
        return trigger
    changes = {"start_at": None if start is None else _utc(start), "end_at": None if end is None else _utc(end)}
    return msgspec.structs.replace(trigger, **changes)
