"""``next_fire``: the one function that says when a trigger fires next.

Pure and synchronous: every instant is UTC-aware and passed in. ``None`` means the trigger is exhausted.
The DST rules live in ``cron.py`` (Debian cron's) and ``rrule.py`` (RFC 5545 §3.3.5).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from shared.model import CronTrigger, FixedDelayTrigger, OneShotTrigger, RRuleTrigger, Trigger
from shared.timing.budget import Budget
from shared.timing.cron import CronExpr, cron_next, parse_cron
from shared.timing.rrule import rrule_next

_TICK = timedelta(microseconds=1)


@lru_cache(maxsize=4096)
def compiled_cron(expr: str) -> CronExpr:
    return parse_cron(expr)


@lru_cache(maxsize=1024)
def zone(key: str) -> ZoneInfo:
    return ZoneInfo(key)


def next_fire(trigger: Trigger, tz: str, after: datetime, budget: Budget | None = None) -> datetime | None:
    """The first fire time strictly after ``after`` within the trigger's startAt/endAt bounds.

    FIXED_DELAY counts from ``after``: callers pass the instant the previous run finished. With a ``budget``
    (the API's requests) the search raises EvaluationBudgetExceeded once the budget is spent.
    """
    _require_utc(after)
    if isinstance(trigger, CronTrigger | RRuleTrigger):
        if budget is not None:
            # Not through the cache: a budget is per request, and a result cut short must not be remembered.
            return _calendar_next_uncached(trigger, tz, after, budget)
        return _calendar_next(trigger, tz, after)
    result: datetime | None
    match trigger:
        case FixedDelayTrigger():
            result = max(after + timedelta(seconds=trigger.delay_sec), trigger.start_at or after)
        case OneShotTrigger():
            result = trigger.start_at.astimezone(UTC) if trigger.start_at > after else None
    if result is None or (trigger.end_at is not None and result > trigger.end_at):
        return None
    return result.astimezone(UTC)


@lru_cache(maxsize=16384)
def _calendar_next(trigger: CronTrigger | RRuleTrigger, tz: str, after: datetime) -> datetime | None:
    """Cached: bursts share expressions and due times (every schedule at the top of the minute), and the
    function is pure, so one computation serves them all."""
    return _calendar_next_uncached(trigger, tz, after, None)


def _calendar_next_uncached(
    trigger: CronTrigger | RRuleTrigger, tz: str, after: datetime, budget: Budget | None
) -> datetime | None:
    floor = after if trigger.start_at is None else max(after, trigger.start_at - _TICK)
    if isinstance(trigger, CronTrigger):
        result = cron_next(compiled_cron(trigger.cron), zone(tz), floor, budget)
    else:
        if trigger.start_at is None:
            raise ValueError("an RRULE trigger needs startAt as its anchor; see anchor_trigger()")
        result = rrule_next(trigger.rrule, zone(tz), trigger.start_at.astimezone(UTC), floor, budget=budget)
    if result is None or (trigger.end_at is not None and result > trigger.end_at):
        return None
    return result.astimezone(UTC)


def first_fire(
    trigger: Trigger, tz: str, now: datetime, fired_before: bool = False, budget: Budget | None = None
) -> datetime | None:
    """When a new, edited or re-enabled schedule fires first.

    A ONE_SHOT or FIXED_DELAY whose startAt has passed is due at once (the misfire policy then decides); a
    ONE_SHOT that already fired stays completed.
    """
    _require_utc(now)
    match trigger:
        case OneShotTrigger():
            result = None if fired_before else trigger.start_at.astimezone(UTC)
        case FixedDelayTrigger():
            if trigger.start_at is not None and (not fired_before or trigger.start_at > now):
                result = trigger.start_at.astimezone(UTC)
            else:
                result = now + timedelta(seconds=trigger.delay_sec)
        case _:
            return next_fire(trigger, tz, now, budget)
    if trigger.end_at is not None and result is not None and result > trigger.end_at:
        return None
    return result


def anchor_trigger(trigger: Trigger, now: datetime) -> Trigger:
    """Pin an RRULE without startAt to ``now`` (whole seconds), so its occurrences do not drift."""
    if isinstance(trigger, RRuleTrigger) and trigger.start_at is None:
        return RRuleTrigger(rrule=trigger.rrule, start_at=now.replace(microsecond=0), end_at=trigger.end_at)
    return trigger


def fire_times(trigger: Trigger, tz: str, after: datetime, count: int, budget: Budget | None = None) -> list[datetime]:
    """The next ``count`` fire times strictly after ``after`` (fewer when the trigger runs out)."""
    times: list[datetime] = []
    current = after
    while len(times) < count:
        if budget is not None:
            budget.tick()
        nxt = next_fire(trigger, tz, current, budget)
        if nxt is None:
            break
        times.append(nxt)
        current = nxt
    return times


def _require_utc(value: datetime) -> None:
    if value.tzinfo is None:
        raise ValueError("instants must be timezone-aware")
