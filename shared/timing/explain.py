"""Why a trigger fires at a given instant: which cron fields / RRULE parts produced it, and what DST did.

Pure and synchronous like the evaluators, and only for previews: the worker never calls it. Every function
takes fire times the evaluators produced and reconstructs the wall time behind each one:

* the fire time's own local wall time, when the trigger generates it: a plain fire, or one copy of a wall
  time a fall-back overlap repeats (``OVERLAP_FIRST`` / ``OVERLAP_SECOND``);
* otherwise a wall time that a spring-forward gap skipped and the policy's gap SHIFT moved here
  (``SHIFTED``): for CRON the end of the gap, for RRULE the wall time read with the offset from before the
  gap (RFC 5545 §3.3.5).

A fire time none of those explain (a schedule's stored nextRunAt from before an edit, say) is reported as such
rather than guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from shared.model import (
    CronTrigger,
    DstEffect,
    DstGap,
    DstOverlap,
    DstPolicy,
    FixedDelayTrigger,
    OneShotTrigger,
    RRuleTrigger,
    Trigger,
)
from shared.timing import cron as cron_module
from shared.timing.cron import CronExpr
from shared.timing.next_fire import compiled_cron, dst_flags, zone
from shared.timing.rrule import compile_rrule
from shared.timing.rrule.evaluate import Compiled
from shared.timing.rrule.expand import key_of
from shared.timing.rrule.parse import (
    DAILY,
    FREQ_NAMES,
    HOURLY,
    MINUTELY,
    MONTHLY,
    SECONDLY,
    WEEKDAY_CODES,
    WEEKLY,
    YEARLY,
)

if TYPE_CHECKING:
    from shared.timing.budget import Budget

_SECOND = timedelta(seconds=1)
_BASE = datetime(1, 1, 1)
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# How many skipped wall times a SHIFTED reason names before it says "and N more", and how many it counts
# before it says "and more" (`* * 2 * * *` has 3600 in a one-hour gap).
_NAMED = 3
_COUNTED = 100
_SUBDAILY_SPEC = {HOURLY: "minutes", MINUTELY: "minutes", SECONDLY: "seconds"}


@dataclass(frozen=True, slots=True)
class Explanation:
    at: datetime  # UTC
    local: datetime  # aware, in the zone the trigger runs on
    matched: tuple[str, ...]
    dst: DstEffect | None = None
    reason: str | None = None


def effective_dst_policy(trigger: Trigger) -> DstPolicy | None:
    """The DST policy a CRON or RRULE trigger runs with, the defaults filled in; None for the other kinds."""
    if isinstance(trigger, CronTrigger):
        skip, both = _cron_flags(trigger)
    elif isinstance(trigger, RRuleTrigger):
        skip, both = _rrule_flags(trigger)
    else:
        return None
    return DstPolicy(gap=DstGap.SKIP if skip else DstGap.SHIFT, overlap=DstOverlap.BOTH if both else DstOverlap.FIRST)


def explain_fire_times(
    trigger: Trigger, tz: str, times: list[datetime], *, budget: Budget | None = None
) -> list[Explanation]:
    """One explanation per fire time, in order. ``trigger`` is anchored (an RRULE has its startAt)."""
    explanations = []
    for at in times:
        if budget is not None:
            budget.tick()
        explanations.append(explain_fire(trigger, tz, at, budget=budget))
    return explanations


def explain_fire(trigger: Trigger, tz: str, at: datetime, *, budget: Budget | None = None) -> Explanation:
    at = at.astimezone(UTC)
    if isinstance(trigger, CronTrigger):
        return _explain_cron(trigger, zone(tz), at, budget)
    if isinstance(trigger, RRuleTrigger):
        return _explain_rrule(trigger, tz, at, budget)
    local = at.astimezone(zone(tz))
    if isinstance(trigger, OneShotTrigger):
        return Explanation(at, local, (f"ONE_SHOT at startAt {trigger.start_at.isoformat()}",))
    assert isinstance(trigger, FixedDelayTrigger)
    return Explanation(
        at, local, (f"FIXED_DELAY: delaySec={trigger.delay_sec} after the previous run finished (or startAt)",)
    )


# --- the policy ------------------------------------------------------------------------------------------


def _cron_flags(trigger: CronTrigger) -> tuple[bool, bool]:
    skip, both = dst_flags(trigger.dst_policy) if trigger.dst_policy is not None else (None, None)
    return cron_module.effective_policy(compiled_cron(trigger.cron), skip, both)


def _rrule_flags(trigger: RRuleTrigger) -> tuple[bool, bool]:
    skip, both = dst_flags(trigger.dst_policy) if trigger.dst_policy is not None else (None, None)
    return bool(skip), bool(both)


def _default_note(trigger: CronTrigger | RRuleTrigger, part: str) -> str:
    """`` (the default for ...)`` when the policy leaves ``part`` ("gap" / "overlap") to the default."""
    policy = trigger.dst_policy
    if policy is not None and getattr(policy, part) is not None:
        return ""
    if isinstance(trigger, RRuleTrigger):
        return ", the RFC 5545 default"
    if compiled_cron(trigger.cron).wall_clock:
        return ", the default for a cron with a fixed minute and hour"
    return ", the default for a cron whose minute or hour field starts with *"


# --- wall-clock facts ------------------------------------------------------------------------------------


def _offsets(wall: datetime, tz: ZoneInfo) -> tuple[timedelta, timedelta]:
    first = wall.replace(tzinfo=tz, fold=0).utcoffset()
    second = wall.replace(tzinfo=tz, fold=1).utcoffset()
    assert first is not None and second is not None
    return first, second


def _is_repeated(wall: datetime, tz: ZoneInfo) -> bool:
    first, second = _offsets(wall, tz)
    return second < first


def _is_skipped(wall: datetime, tz: ZoneInfo) -> bool:
    first, second = _offsets(wall, tz)
    return second > first


def _hm(wall: datetime) -> str:
    return wall.strftime("%H:%M:%S" if wall.second else "%H:%M")


def _naive(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def _overlap_reason(wall: datetime, tz: ZoneInfo, copy: int, both: bool, note: str) -> tuple[DstEffect, str]:
    first, second = _offsets(wall, tz)
    instants = ((wall - first).replace(tzinfo=UTC), (wall - second).replace(tzinfo=UTC))
    transition = cron_module._transition_between(instants[0], instants[1], tz)
    back_from, back_to = _naive(transition - _SECOND, tz) + _SECOND, _naive(transition, tz)
    head = (
        f"{_hm(wall)} occurs twice on {wall.date().isoformat()} in {tz.key} (clocks go back "
        f"{_hm(back_from)}→{_hm(back_to)})"
    )
    other = instants[1 - copy].astimezone(tz).isoformat()
    if copy == 0:
        tail = (
            f"the second occurrence ({other}) fires too (dstPolicy.overlap=BOTH{note})"
            if both
            else f"the second occurrence ({other}) does not fire (dstPolicy.overlap=FIRST{note})"
        )
        return DstEffect.OVERLAP_FIRST, f"{head}; this is the first occurrence, {tail}"
    return (
        DstEffect.OVERLAP_SECOND,
        f"{head}; this is the second occurrence, after the first at {other} (dstPolicy.overlap=BOTH{note})",
    )


def _gap_head(skipped: list[datetime], gap_start: datetime, gap_end: datetime, tz: ZoneInfo) -> str:
    names = [_hm(wall) for wall in skipped[:_NAMED]]
    if len(skipped) > _COUNTED:
        names.append("more")
    elif len(skipped) > _NAMED:
        names.append(f"{len(skipped) - _NAMED} more")
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    verb = "does" if len(skipped) == 1 else "do"
    return (
        f"{listed} {verb} not exist on {skipped[0].date().isoformat()} in {tz.key} (clocks jump "
        f"{_hm(gap_start)}→{_hm(gap_end)})"
    )


# --- cron ------------------------------------------------------------------------------------------------


def _explain_cron(trigger: CronTrigger, tz: ZoneInfo, at: datetime, budget: Budget | None) -> Explanation:
    expr = compiled_cron(trigger.cron)
    fields = cron_module.field_texts(trigger.cron)
    _, both = _cron_flags(trigger)
    local = at.astimezone(tz)
    wall = local.replace(tzinfo=None, fold=0)
    if _cron_matches(expr, wall):
        matched = _cron_fields(expr, fields, wall)
        if _is_repeated(wall, tz):
            effect, reason = _overlap_reason(wall, tz, local.fold, both, _default_note(trigger, "overlap"))
            return Explanation(at, local, matched, effect, reason)
        return Explanation(at, local, matched)
    # Not its own wall time: the end of a gap standing for the matching wall times the gap skipped.
    gap_start, gap_end = _naive(at - _SECOND, tz) + _SECOND, wall
    skipped = _cron_walls_between(expr, gap_start, gap_end, budget) if gap_end > gap_start else []
    if not skipped:
        return Explanation(at, local, ("not a fire time of this trigger (a stored nextRunAt from before an edit?)",))
    reason = (
        f"{_gap_head(skipped, gap_start, gap_end, tz)}; fired at the end of the gap "
        f"(dstPolicy.gap=SHIFT{_default_note(trigger, 'gap')})"
    )
    return Explanation(at, local, _cron_fields(expr, fields, skipped[0]), DstEffect.SHIFTED, reason)


def _cron_matches(expr: CronExpr, wall: datetime) -> bool:
    return (
        wall.second in expr.seconds
        and wall.minute in expr.minutes
        and wall.hour in expr.hours
        and cron_module._date_matches(expr, wall.date())
    )


def _cron_walls_between(expr: CronExpr, start: datetime, end: datetime, budget: Budget | None) -> list[datetime]:
    """Matching wall times in ``[start, end)`` (a gap: at most a day), the first ``_COUNTED + 1`` of them."""
    walls: list[datetime] = []
    cursor = start - _SECOND
    while len(walls) <= _COUNTED:
        if budget is not None:
            budget.tick()
        found = cron_module._next_matching_wall(expr, cursor)
        if found is None:
            return walls
        wall = datetime(*found)
        if wall >= end:
            return walls
        walls.append(wall)
        cursor = wall
    return walls


def _cron_fields(expr: CronExpr, fields: dict[str, str], wall: datetime) -> tuple[str, ...]:
    weekday = wall.isoweekday() % 7
    parts = []
    if "second" in fields:
        parts.append(f'second={wall.second} (field "{fields["second"]}")')
    parts += [
        f'minute={wall.minute} (field "{fields["minute"]}")',
        f'hour={wall.hour} (field "{fields["hour"]}")',
    ]
    dom = f'day-of-month={wall.day} (field "{fields["day-of-month"]}")'
    month = f'month={_MONTHS[wall.month - 1]} (field "{fields["month"]}")'
    dow = f'day-of-week={_DAYS[weekday]} (field "{fields["day-of-week"]}")'
    if expr.dom_restricted and expr.dow_restricted:
        # Vixie cron: with both day fields restricted, either one matching is enough.
        dom_ok, dow_ok = wall.day in expr.days_of_month, weekday in expr.days_of_week
        chosen = " and ".join(text for text, ok in ((dom, dom_ok), (dow, dow_ok)) if ok)
        parts += [f"{chosen} (either day field may match)", month]
    else:
        parts += [dom, month, dow]
    return tuple(parts)


# --- RRULE -----------------------------------------------------------------------------------------------


def _explain_rrule(trigger: RRuleTrigger, tz_key: str, at: datetime, budget: Budget | None) -> Explanation:
    if trigger.start_at is None:
        raise ValueError("an RRULE trigger needs startAt as its anchor; see anchor_trigger()")
    skip, both = _rrule_flags(trigger)
    anchor = trigger.start_at.astimezone(UTC).replace(microsecond=0)
    compiled = compile_rrule(trigger.rrule, tz_key, anchor, skip, both)
    tz = compiled.tz
    local = at.astimezone(tz)
    wall = local.replace(tzinfo=None, fold=0)
    sources = _rrule_sources(compiled, wall, at, budget)
    if sources is not None:
        if _is_repeated(wall, tz):
            effect, reason = _overlap_reason(wall, tz, local.fold, both, _default_note(trigger, "overlap"))
            return Explanation(at, local, sources, effect, reason)
        return Explanation(at, local, sources)
    # A gap time read with the offset from before the gap: its wall time is this one less the jump.
    for lookback in (timedelta(minutes=30), timedelta(hours=1), timedelta(hours=3), timedelta(hours=26)):
        before = (at - lookback).astimezone(tz).utcoffset()
        assert before is not None
        original = (at + before).replace(tzinfo=None)
        if not _is_skipped(original, tz) or compiled.map_key(key_of(original))[0] != at:
            continue
        sources = _rrule_sources(compiled, original, at, budget)
        if sources is None:
            continue
        gap_start = _gap_start(original, tz)
        gap_end = _naive(cron_module._resolve(original, tz, 0)[0], tz)
        reason = (
            f"{_gap_head([original], gap_start, gap_end, tz)}; read with the offset from before the gap "
            f"(RFC 5545 §3.3.5), i.e. {_hm(wall)} (dstPolicy.gap=SHIFT{_default_note(trigger, 'gap')})"
        )
        return Explanation(at, local, sources, DstEffect.SHIFTED, reason)
    return Explanation(at, local, ("not a fire time of this trigger (a stored nextRunAt from before an edit?)",))


def _gap_start(inside: datetime, tz: ZoneInfo) -> datetime:
    transition = cron_module._resolve(inside, tz, 0)[0]
    return _naive(transition - _SECOND, tz) + _SECOND


def _rrule_sources(compiled: Compiled, wall: datetime, at: datetime, budget: Budget | None) -> tuple[str, ...] | None:
    """What in the recurrence set produces ``wall`` (which maps to ``at``), or None if nothing does."""
    if at in compiled.rdates:
        return (f"RDATE {wall.isoformat()}",)
    if at in compiled.dtstart_instants:
        return (f"DTSTART {wall.isoformat()} (always the first occurrence, RFC 5545 §3.8.5.3)",)
    key = key_of(wall)
    located = compiled.locate(key)
    if located is None:
        return None
    unit, grid, index = located
    expander = compiled.expander
    rule = compiled.spec_rule
    parts = [_period(compiled, unit, wall)]
    day = wall.date()
    month_length = (date(day.year + day.month // 12, day.month % 12 + 1, 1) - timedelta(days=1)).day
    year_length = date(day.year, 12, 31).timetuple().tm_yday
    yearday = day.timetuple().tm_yday
    if rule.bymonth:
        parts.append(f"month={_MONTHS[day.month - 1]} (BYMONTH={_ints(rule.bymonth)})")
    if rule.byweekno:
        number = (day.toordinal() - expander._week_one(unit)) // 7 + 1
        weeks = (expander._week_one(unit + 1) - expander._week_one(unit)) // 7
        parts.append(f"week={number} ({_signed(rule.byweekno, number, weeks, 'BYWEEKNO')})")
    if rule.byyearday:
        parts.append(f"day-of-year={yearday} ({_signed(rule.byyearday, yearday, year_length, 'BYYEARDAY')})")
    if rule.bymonthday:
        parts.append(f"day-of-month={day.day} ({_signed(rule.bymonthday, day.day, month_length, 'BYMONTHDAY')})")
    if rule.byday:
        parts.append(_byday(rule.byday, rule.freq, bool(rule.bymonth), day))
    for name, values, value, finer_than in (
        ("BYHOUR", rule.byhour, wall.hour, HOURLY),
        ("BYMINUTE", rule.byminute, wall.minute, MINUTELY),
        ("BYSECOND", rule.bysecond, wall.second, SECONDLY),
    ):
        label = name[2:].lower()
        if values:
            parts.append(f"{label}={value} ({name}={_ints(values)})")
        elif rule.freq < finer_than:
            parts.append(f"{label}={value} ({_default_source(compiled, name)})")
    no_day_parts = not (rule.bymonthday or rule.byyearday or rule.byweekno or rule.byday)
    if no_day_parts and rule.freq in (MONTHLY, YEARLY):
        parts.append(f"day-of-month={day.day} ({_default_source(compiled, 'BYMONTHDAY')})")
    if rule.bysetpos and grid.picks is not None:
        size = len(grid.cells) * len(grid.offsets)
        flat = grid.picks[index]
        parts.append(f"set position {flat + 1} of {size} ({_signed(rule.bysetpos, flat + 1, size, 'BYSETPOS')})")
    if rule.count is not None:
        number = compiled.occurrence_number(unit, grid, index, budget)
        parts.append(f"occurrence {number} of COUNT={rule.count}")
    return tuple(parts)


def _default_source(compiled: Compiled, part: str) -> str:
    """Where the value of a BY part the rule leaves out comes from (RFC 5545 §3.3.10; see rrule/__init__.py)."""
    if compiled.explicit_dtstart:
        return "from DTSTART"
    rule = compiled.spec_rule
    coarser = {"BYMINUTE": rule.byhour, "BYSECOND": rule.byhour or rule.byminute}.get(part, ())
    if coarser:
        return f"0: {part} left out next to a coarser BY part"
    return "from startAt, the rule's DTSTART"


def _ints(values: tuple[int, ...]) -> str:
    return ",".join(str(v) for v in values)


def _signed(values: tuple[int, ...], position: int, length: int, name: str) -> str:
    """Which of a part's signed values (-1 = the last) picked ``position`` of ``length``."""
    value = next((v for v in values if v in (position, position - length - 1)), position)
    listed = f"{name}={_ints(values)}"
    return listed if values == (position,) else f"matched {value} of {listed}"


def _period(compiled: Compiled, unit: int, wall: datetime) -> str:
    rule = compiled.spec_rule
    name = FREQ_NAMES[rule.freq]
    every = f";INTERVAL={rule.interval}" if rule.interval > 1 else ""
    if rule.freq == YEARLY:
        period = str(unit)
    elif rule.freq == MONTHLY:
        year, month = divmod(unit, 12)
        period = f"{year:04d}-{month + 1:02d}"
    elif rule.freq == WEEKLY:
        start = date.fromordinal(7 * unit + 1 + rule.wkst)
        period = f"from {start.isoformat()} (WKST={WEEKDAY_CODES[rule.wkst]})"
    elif rule.freq == DAILY:
        period = wall.date().isoformat()
    else:
        seconds = {HOURLY: 3600, MINUTELY: 60, SECONDLY: 1}[rule.freq]
        start = _BASE + timedelta(seconds=key_of(wall) // seconds * seconds)
        period = start.isoformat(timespec=_SUBDAILY_SPEC[rule.freq])
    return f"FREQ={name}{every} period {period}"


def _byday(byday: tuple[tuple[int, int], ...], freq: int, in_months: bool, day: date) -> str:
    weekday = day.weekday()
    code = WEEKDAY_CODES[weekday]
    listed = ",".join(f"{o}{WEEKDAY_CODES[w]}" if o else WEEKDAY_CODES[w] for w, o in byday)
    if (weekday, 0) in byday:
        return f"day-of-week={code} (BYDAY={listed})"
    if freq == MONTHLY or (freq == YEARLY and in_months):
        length = (date(day.year + day.month // 12, day.month % 12 + 1, 1) - timedelta(days=1)).day
        position, scope = day.day, "month"
    else:
        length = 366 if date(day.year, 12, 31).timetuple().tm_yday == 366 else 365
        position, scope = day.timetuple().tm_yday, "year"
    forward, backward = (position - 1) // 7 + 1, -((length - position) // 7 + 1)
    ordinal = forward if (weekday, forward) in byday else backward
    return (
        f"day-of-week={code}, the {_ordinal_words(ordinal)} of the {scope} (matched {ordinal}{code} of BYDAY={listed})"
    )


def _ordinal_words(n: int) -> str:
    if n < 0:
        return "last" if n == -1 else f"{_ordinal_words(-n)} from last"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
