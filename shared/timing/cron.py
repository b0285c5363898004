"""Cron expressions: parsing and computing the next fire time, with Debian cron's DST semantics.

Syntax is Vixie cron's five fields (minute hour day-of-month month day-of-week) with an optional leading
seconds field, month and day names, and the usual macros (``@daily`` ...).

Daylight saving time follows Debian cron, which decides per expression how to treat the local clock:

* Wall-clock mode (neither the minute nor the hour field starts with ``*``): the job is "at 02:30 local".
  Each matching local wall time fires exactly once: a wall time skipped by a spring-forward gap fires at the
  end of the gap, and a wall time repeated by a fall-back overlap fires only on its first occurrence.
* Real-time mode (the minute or hour field starts with ``*``): the job is "every so often". Every real
  instant whose local wall time matches fires, so nothing fires inside a gap and an overlap fires twice.

A trigger's ``dstPolicy`` overrides either half of that, whatever the mode (``skip_gaps`` / ``both_folds``;
None keeps the mode's own choice): gap SHIFT fires a skipped matching wall time once, at the end of the gap
(several skipped ones collapse into that one instant); gap SKIP does not fire it; overlap FIRST fires a
repeated matching wall time on its first occurrence only; overlap BOTH on both. The two modes are exactly the
two default policies: wall clock = SHIFT / FIRST, real time = SKIP / BOTH.

The evaluator never walks minute by minute: it walks matching days (month by month) and, within a day, the
sorted matching times of day, using binary search to find where ``after`` falls. Local wall times map onto
real instants monotonically (per fold), which is what makes both the binary search and "the first candidate
after ``after`` is the answer" valid.

``cron_next`` runs once per fire on the worker's hot path, so it first tries a shortcut (``_next_nearby``):
find the next matching wall time after the local time of ``after`` directly, and accept it when neither end
lies in a DST gap or overlap. Only schedules near a transition (or with no fire within the horizon) fall
through to the general scan (``_next_by_scan``), which handles every case.
"""

from __future__ import annotations

import bisect
import calendar
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, NoReturn
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from shared.timing.budget import Budget

# A schedule that cannot fire within this many years is treated as never firing (e.g. `0 0 30 2 *`). The
# rarest satisfiable schedules (Feb 29, or Feb 1 on a given weekday) recur well within it.
_HORIZON_YEARS = 30

# Start looking this many local days before `after`: a wall time a day or so earlier can map to an instant
# later than `after` when the zone's offset jumps (fall-back overlaps, or Samoa skipping a whole day).
_LOOKBACK_DAYS = 2

_ONE_DAY = timedelta(days=1)

# The scan's lookback cannot start before 1 January of year 1; it then overflows and reports no fire. The
# shortcut leaves local dates this early to the scan so that both always agree.
_EARLIEST_SHORTCUT_DAY = date.min + timedelta(days=_LOOKBACK_DAYS + 1)

_MONTH_NAMES = {
    name: number
    for number, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1
    )
}
_DAY_NAMES = {name: number for number, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_NUMBER = re.compile(r"[0-9]+")

# Longer digit strings are certainly out of range; refusing them early also keeps int() away from
# pathological input.
_MAX_DIGITS = 9


@dataclass(frozen=True, slots=True)
class CronExpr:
    """A parsed cron expression.

    ``days_of_week`` uses 0 for Sunday (a 7 in the source is folded into 0). ``dom_restricted`` and
    ``dow_restricted`` record whether the field text did not start with ``*``: when both are restricted a day
    matches if either field matches (Vixie cron), otherwise both must match.

    The sorted tuples are derived from the sets once, here, rather than on every evaluation.
    """

    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    dom_restricted: bool
    dow_restricted: bool
    wall_clock: bool
    _sorted_seconds: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _sorted_minutes: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _sorted_hours: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _sorted_days_of_month: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _sorted_months: tuple[int, ...] = field(init=False, repr=False, compare=False)
    # Vixie's OR rule applies: a day matches through either of its two fields.
    _either_day_field: bool = field(init=False, repr=False, compare=False)
    # The earliest matching (hour, minute, second); None only if a time field is empty.
    _first_time_of_day: tuple[int, int, int] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen: derived fields can only be set through object.__setattr__.
        object.__setattr__(self, "_sorted_seconds", tuple(sorted(self.seconds)))
        object.__setattr__(self, "_sorted_minutes", tuple(sorted(self.minutes)))
        object.__setattr__(self, "_sorted_hours", tuple(sorted(self.hours)))
        object.__setattr__(self, "_sorted_days_of_month", tuple(sorted(self.days_of_month)))
        object.__setattr__(self, "_sorted_months", tuple(sorted(self.months)))
        object.__setattr__(self, "_either_day_field", self.dom_restricted and self.dow_restricted)
        first_time = (
            (self._sorted_hours[0], self._sorted_minutes[0], self._sorted_seconds[0])
            if self.hours and self.minutes and self.seconds
            else None
        )
        object.__setattr__(self, "_first_time_of_day", first_time)


@dataclass(frozen=True, slots=True)
class _FieldSpec:
    name: str
    low: int
    high: int
    names: Mapping[str, int]


_SECOND = _FieldSpec("second", 0, 59, {})
_MINUTE = _FieldSpec("minute", 0, 59, {})
_HOUR = _FieldSpec("hour", 0, 23, {})
_DAY_OF_MONTH = _FieldSpec("day-of-month", 1, 31, {})
_MONTH = _FieldSpec("month", 1, 12, _MONTH_NAMES)
_DAY_OF_WEEK = _FieldSpec("day-of-week", 0, 7, _DAY_NAMES)


# --- parsing ---


def parse_cron(expr: str) -> CronExpr:
    """Parse a cron expression; raise ValueError with a message naming the offending field."""
    text = expr.strip()
    if text.startswith("@"):
        text = _expand_macro(text)
    fields = text.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    elif len(fields) != 6:
        raise ValueError(f"expected 5 fields (or 6 with leading seconds), got {len(fields)}")
    second, minute, hour, day_of_month, month, day_of_week = fields
    return CronExpr(
        seconds=_parse_field(second, _SECOND),
        minutes=_parse_field(minute, _MINUTE),
        hours=_parse_field(hour, _HOUR),
        days_of_month=_parse_field(day_of_month, _DAY_OF_MONTH),
        months=_parse_field(month, _MONTH),
        days_of_week=frozenset(day % 7 for day in _parse_field(day_of_week, _DAY_OF_WEEK)),
        dom_restricted=not day_of_month.startswith("*"),
        dow_restricted=not day_of_week.startswith("*"),
        # Debian cron's rule: a job pinned to a specific hour and minute follows the wall clock; anything
        # with a wildcard there runs on elapsed time. The seconds field plays no part.
        wall_clock=not (minute.startswith("*") or hour.startswith("*")),
    )


def field_texts(expr: str) -> dict[str, str]:
    """The text of each field of a valid expression by field name (macros expanded; "second" only when given)."""
    text = expr.strip()
    if text.startswith("@"):
        text = _expand_macro(text)
    fields = text.split()
    specs: tuple[_FieldSpec, ...] = (_MINUTE, _HOUR, _DAY_OF_MONTH, _MONTH, _DAY_OF_WEEK)
    if len(fields) == 6:
        specs = (_SECOND, *specs)
    return {spec.name: value for spec, value in zip(specs, fields, strict=True)}


def _expand_macro(text: str) -> str:
    name, *rest = text.split()
    key = name.lower()
    if rest:
        raise ValueError(f"macro {name} takes no other fields, got {' '.join(rest)!r}")
    if key in _MACROS:
        return _MACROS[key]
    if key == "@reboot":
        raise ValueError("@reboot is not supported: schedules must be time-based")
    raise ValueError(f"unknown macro {name!r}; expected one of {', '.join(_MACROS)}")


def _parse_field(text: str, spec: _FieldSpec) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        values.update(_parse_item(item, spec))
    return frozenset(values)


def _parse_item(item: str, spec: _FieldSpec) -> range:
    """One list item: `*`, `a`, `a-b`, each optionally followed by `/step` (`a/step` runs to the maximum)."""
    if not item:
        _fail(spec, "empty list item (check for stray commas)")
    base, slash, step_text = item.partition("/")
    step = _parse_step(step_text, item, spec) if slash else 1
    if base == "*":
        low, high = spec.low, spec.high
    elif "-" in base:
        low_text, _, high_text = base.partition("-")
        low = _parse_value(low_text, item, spec)
        high = _parse_value(high_text, item, spec)
        if low > high:
            _fail(spec, f"range {base} is backwards ({low} > {high}){_backwards_hint(spec)}")
    elif slash:
        low, high = _parse_value(base, item, spec), spec.high
    else:
        low = high = _parse_value(base, item, spec)
    return range(low, high + 1, step)


def _backwards_hint(spec: _FieldSpec) -> str:
    # The one backwards range people write on purpose is a week wrapping past Saturday (FRI-SUN).
    return "; Sunday can also be written as 7, e.g. 5-7" if spec is _DAY_OF_WEEK else ""


def _parse_value(text: str, item: str, spec: _FieldSpec) -> int:
    named = spec.names.get(text.upper())
    if named is not None:
        return named
    if not _NUMBER.fullmatch(text):
        _fail(spec, f"invalid value {text!r} in {item!r}")
    if len(text.lstrip("0")) > _MAX_DIGITS or not spec.low <= int(text) <= spec.high:
        _fail(spec, f"{text} is out of range {spec.low}-{spec.high}")
    return int(text)


def _parse_step(text: str, item: str, spec: _FieldSpec) -> int:
    if not _NUMBER.fullmatch(text):
        _fail(spec, f"invalid step {text!r} in {item!r}")
    if len(text.lstrip("0")) > _MAX_DIGITS:
        _fail(spec, f"step {text} is too large")
    step = int(text)
    if step < 1:
        _fail(spec, f"step {step} in {item!r} must be at least 1")
    return step


def _fail(spec: _FieldSpec, reason: str) -> NoReturn:
    raise ValueError(f"{spec.name} field: {reason}")


# --- evaluation ---


def cron_next(
    expr: CronExpr,
    tz: ZoneInfo,
    after: datetime,
    *,
    budget: Budget | None = None,
    skip_gaps: bool | None = None,
    both_folds: bool | None = None,
) -> datetime | None:
    """The first fire time strictly after ``after``, in UTC; None if there is none within the horizon.

    ``budget`` is ticked once per month the general scan walks through. ``skip_gaps`` (gap SKIP) and
    ``both_folds`` (overlap BOTH) are the trigger's DST policy; None keeps the expression's mode default.
    """
    if after.tzinfo is not UTC and (after.tzinfo is None or after.utcoffset() is None):
        raise ValueError("after must be a timezone-aware datetime")
    after = after.astimezone(UTC)
    # Inlined rather than effective_policy(): this runs once per fire on the worker's hot path.
    real_time = not expr.wall_clock
    both = real_time if both_folds is None else both_folds
    nearby = _next_nearby(expr, tz, after, both)
    if nearby is not None:
        return nearby
    return _next_by_scan(expr, tz, after, budget, real_time if skip_gaps is None else skip_gaps, both)


def effective_policy(expr: CronExpr, skip_gaps: bool | None, both_folds: bool | None) -> tuple[bool, bool]:
    """``(skip_gaps, both_folds)`` after the mode defaults fill in what the policy leaves open."""
    real_time = not expr.wall_clock
    return (real_time if skip_gaps is None else skip_gaps, real_time if both_folds is None else both_folds)


# --- the shortcut ---
# Hot path: datetimes are built with positional arguments because datetime.replace() and keyword arguments
# cost several times more in CPython.

# A naive local wall time as (year, month, day, hour, minute, second).
_Wall = tuple[int, int, int, int, int, int]

# How many days ahead the shortcut tests one by one (enough for weekday and weekly schedules) before
# falling back to the month-by-month walk.
_DAY_BY_DAY = 7


def _next_nearby(expr: CronExpr, tz: ZoneInfo, after: datetime, both_folds: bool | None = None) -> datetime | None:
    """The answer when no DST transition gets in the way; None when it cannot vouch for one.

    Let L be the local wall time of ``after`` and W the first matching wall time after L. The general scan
    returns the first matching wall time whose instant is after ``after``, and wall times map onto instants
    monotonically, so every wall time up to L maps to an instant up to ``after``. That fails only when L is
    the first copy of a repeated wall time and the second copy counts, which it does with ``both_folds``. So
    when W occurs exactly once on the clock (neither skipped nor repeated) and its instant is after
    ``after`` (it need not be when ``after`` lies in the second copy of an overlap), that instant is the
    answer the scan would give.

    ``after`` is in UTC; ``both_folds`` None means the mode's default.
    """
    if both_folds is None:
        both_folds = not expr.wall_clock
    try:
        local = after.astimezone(tz)
        if local.date() < _EARLIEST_SHORTCUT_DAY:
            return None
        if both_folds and _is_first_of_two(local, tz):
            return None  # The second copy of L, still to come, may fire.
        wall = _next_matching_wall(expr, local)
        if wall is None:
            return None
        instant = _unique_instant(wall, tz)
    except OverflowError:
        return None  # Near the ends of datetime's range: the scan knows what to do.
    return instant if instant is not None and instant > after else None


def _is_first_of_two(local: datetime, tz: ZoneInfo) -> bool:
    """Whether an aware local time is the first occurrence of a wall time the clock shows twice."""
    if local.fold:
        return False  # astimezone() marks second occurrences with fold=1.
    # Transitions fall on whole seconds, so dropping the microseconds cannot change the answer.
    other = datetime(local.year, local.month, local.day, local.hour, local.minute, local.second, 0, tz, fold=1)
    return other.utcoffset() != local.utcoffset()


def _next_matching_wall(expr: CronExpr, local: datetime) -> _Wall | None:
    """The first matching wall time strictly after ``local``'s, within the scan's horizon.

    Fire times are whole seconds, so "after" means a later (hour, minute, second) on the same day, whatever
    ``local``'s microseconds.
    """
    first_time = expr._first_time_of_day
    if first_time is None:
        return None
    day = local.date()
    if _date_matches(expr, day):
        time_of_day = _next_time_of_day(expr, local.hour, local.minute, local.second)
        if time_of_day is not None:
            return (day.year, day.month, day.day, *time_of_day)
    # Same horizon as the scan, so that the shortcut never finds a fire the scan would not.
    last_year = min(local.year + _HORIZON_YEARS, date.max.year)
    next_day = _first_matching_day(expr, day + _ONE_DAY, last_year)
    if next_day is None:
        return None
    return (next_day.year, next_day.month, next_day.day, *first_time)


def _next_time_of_day(expr: CronExpr, hour: int, minute: int, second: int) -> tuple[int, int, int] | None:
    """The first matching (hour, minute, second) strictly after the given one on the same day, if any."""
    hours, minutes, seconds = expr._sorted_hours, expr._sorted_minutes, expr._sorted_seconds
    # Lexicographic successor: a later second in this minute, else a later minute in this hour, else a
    # later hour.
    if hour in expr.hours:
        if minute in expr.minutes:
            index = bisect.bisect_right(seconds, second)
            if index < len(seconds):
                return hour, minute, seconds[index]
        index = bisect.bisect_right(minutes, minute)
        if index < len(minutes):
            return hour, minutes[index], seconds[0]
    index = bisect.bisect_right(hours, hour)
    if index < len(hours):
        return hours[index], minutes[0], seconds[0]
    return None


def _first_matching_day(expr: CronExpr, start: date, last_year: int) -> date | None:
    """The first matching date from ``start`` on, up to the end of ``last_year``."""
    # Most schedules match within days; testing those one by one is cheaper than the month-by-month walk.
    day = start
    for _ in range(_DAY_BY_DAY):
        if day.year > last_year:
            return None
        if _date_matches(expr, day):
            return day
        day += _ONE_DAY
    return next(_matching_days(expr, day, last_year), None)


def _date_matches(expr: CronExpr, day: date) -> bool:
    if day.month not in expr.months:
        return False
    return _day_matches(expr, day.day, day.isoweekday() % 7, expr._either_day_field)


def _unique_instant(wall: _Wall, tz: ZoneInfo) -> datetime | None:
    """The UTC instant of a wall time that occurs exactly once on the clock; None if skipped or repeated.

    Both folds give the same offset exactly when the wall time is in neither a gap nor an overlap.
    """
    year, month, day, hour, minute, second = wall
    offset = datetime(year, month, day, hour, minute, second, 0, tz).utcoffset()
    if offset is None or offset != datetime(year, month, day, hour, minute, second, 0, tz, fold=1).utcoffset():
        return None
    return datetime(year, month, day, hour, minute, second, 0, UTC) - offset


# --- the general scan ---


def _next_by_scan(
    expr: CronExpr,
    tz: ZoneInfo,
    after: datetime,
    budget: Budget | None = None,
    skip_gaps: bool | None = None,
    both_folds: bool | None = None,
) -> datetime | None:
    """The general evaluator, right for every input whatever the transitions nearby. ``after`` is in UTC.

    ``skip_gaps`` / ``both_folds`` None mean the mode's defaults.
    """
    skip_gaps, both_folds = effective_policy(expr, skip_gaps, both_folds)
    try:
        if not both_folds:
            return _scan(expr, tz, after, fold=0, skip_gaps=skip_gaps, budget=budget)
        # Both copies: the earliest of the first copies and the second copies of repeated wall times. Each
        # copy alone maps wall times onto instants monotonically; interleaved they do not.
        found = [
            instant
            for fold in (0, 1)
            if (instant := _scan(expr, tz, after, fold=fold, skip_gaps=skip_gaps, budget=budget)) is not None
        ]
        return min(found, default=None)
    except OverflowError:
        # The next fire time would lie outside what datetime can represent (years 1 and 9999).
        return None


def _scan(
    expr: CronExpr, tz: ZoneInfo, after: datetime, *, fold: int, skip_gaps: bool, budget: Budget | None = None
) -> datetime | None:
    """The first matching wall time, in calendar order, whose instant (for this fold) is after ``after``.

    With ``skip_gaps`` wall times inside a spring-forward gap are passed over (gap SKIP); without it they
    fire at the end of the gap (gap SHIFT).
    """
    times = _TimesOfDay(expr)
    if not len(times):
        return None
    local = after.astimezone(tz).replace(tzinfo=None)
    start = local.date() - timedelta(days=_LOOKBACK_DAYS)
    last_year = min(local.year + _HORIZON_YEARS, date.max.year)
    for day in _matching_days(expr, start, last_year, budget):
        index = _first_index_after(times, day, tz, fold, after, local)
        while index < len(times):
            instant, gap_end = _resolve(_wall(day, times[index]), tz, fold)
            if gap_end is None or not skip_gaps:
                return instant
            if gap_end.date() != day:
                break  # The gap runs past midnight: carry on with the following days.
            # Jump over the remaining wall times swallowed by the gap in one step.
            index = bisect.bisect_left(times, _hms(gap_end), lo=index + 1)
    return None


def _first_index_after(times: _TimesOfDay, day: date, tz: ZoneInfo, fold: int, after: datetime, local: datetime) -> int:
    """Index of the first time of ``day`` whose instant is after ``after`` (``len(times)`` if none).

    ``local`` is ``after`` on the local wall clock.
    """

    def instant(hms: tuple[int, int, int]) -> datetime:
        return _resolve(_wall(day, hms), tz, fold)[0]

    # Away from a transition the wall clock alone gives the answer. Instants grow with the index, so two
    # probes either confirm the guess or send us to a binary search.
    if day < local.date():
        guess = len(times)
    elif day > local.date():
        guess = 0
    else:
        guess = bisect.bisect_right(times, _hms(local))
    if (guess == len(times) or instant(times[guess]) > after) and (guess == 0 or instant(times[guess - 1]) <= after):
        return guess
    return bisect.bisect_right(times, after, key=instant)


class _TimesOfDay:
    """The sorted (hour, minute, second) combinations of an expression, as a lazy sequence.

    Lazy because ``* * * * * *`` has 86,400 of them and bisect only ever looks at a handful.
    """

    __slots__ = ("_hours", "_length", "_minutes", "_seconds")

    def __init__(self, expr: CronExpr) -> None:
        self._hours = expr._sorted_hours
        self._minutes = expr._sorted_minutes
        self._seconds = expr._sorted_seconds
        self._length = len(self._hours) * len(self._minutes) * len(self._seconds)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> tuple[int, int, int]:
        # Only bisect and the scan index this, always within bounds; negative indices are not supported.
        if not 0 <= index < self._length:
            raise IndexError(index)
        rest, second = divmod(index, len(self._seconds))
        hour, minute = divmod(rest, len(self._minutes))
        return self._hours[hour], self._minutes[minute], self._seconds[second]


def _matching_days(expr: CronExpr, start: date, last_year: int, budget: Budget | None = None) -> Iterator[date]:
    """Matching local dates from ``start`` on, month by month, up to the end of ``last_year``."""
    months = expr._sorted_months
    days_of_month = expr._sorted_days_of_month
    either = expr._either_day_field
    for year in range(start.year, last_year + 1):
        for month in months:
            if (year, month) < (start.year, start.month):
                continue
            if budget is not None:
                budget.tick()
            first_day = start.day if (year, month) == (start.year, start.month) else 1
            monday_based_first, days_in_month = calendar.monthrange(year, month)
            # Under the OR rule any day may match through its weekday; otherwise only listed days can.
            candidates = range(first_day, days_in_month + 1) if either else days_of_month
            for day in candidates:
                if not first_day <= day <= days_in_month:
                    continue
                # Cron weekdays count from Sunday = 0; calendar's count from Monday = 0.
                weekday = (monday_based_first + day) % 7
                if _day_matches(expr, day, weekday, either):
                    yield date(year, month, day)


def _day_matches(expr: CronExpr, day: int, weekday: int, either: bool) -> bool:
    dom_ok = day in expr.days_of_month
    dow_ok = weekday in expr.days_of_week
    return (dom_ok or dow_ok) if either else (dom_ok and dow_ok)


def _resolve(wall: datetime, tz: ZoneInfo, fold: int) -> tuple[datetime, datetime | None]:
    """Map a naive local wall time to one UTC instant: ``(instant, gap_end)``.

    A wall time that exists once maps to itself. A repeated one maps to its first occurrence for fold 0 and
    its second for fold 1. One inside a spring-forward gap maps to the end of the gap, and ``gap_end`` is
    then the local wall time there (otherwise None).
    """
    aware = wall.replace(tzinfo=tz)
    offset_a = _offset(aware)
    offset_b = _offset(aware.replace(fold=1))
    if offset_a == offset_b:
        return _at_offset(wall, offset_a), None
    # The larger offset gives the earlier instant, whichever fold zoneinfo attaches it to (PEP 495 swaps
    # the meaning of fold inside gaps).
    earlier = _at_offset(wall, max(offset_a, offset_b))
    later = _at_offset(wall, min(offset_a, offset_b))
    if _local_wall(earlier, tz) == wall:
        # Both offsets reproduce the wall time: it is repeated by a fall-back overlap.
        return (earlier if fold == 0 else later), None
    # Neither reproduces it: the wall time was skipped. The transition lies between the two candidates.
    transition = _transition_between(earlier, later, tz)
    return transition, _local_wall(transition, tz)


def _transition_between(before: datetime, after: datetime, tz: ZoneInfo) -> datetime:
    """The instant the zone's offset changes, given UTC instants on either side of one transition.

    zoneinfo does not expose its transition table, so bisect on whole seconds (tz transitions are whole
    seconds); a gap is at most a day wide, so this takes at most 17 steps.
    """
    low, high = int(before.timestamp()), int(after.timestamp())
    new_offset = _offset_at(high, tz)
    while high - low > 1:
        middle = (low + high) // 2
        if _offset_at(middle, tz) == new_offset:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _offset(aware: datetime) -> timedelta:
    offset = aware.utcoffset()
    if offset is None:  # Unreachable with ZoneInfo; keeps the type checker honest.
        raise ValueError(f"no UTC offset for {aware!r}")
    return offset


def _offset_at(timestamp: int, tz: ZoneInfo) -> timedelta:
    return _offset(datetime.fromtimestamp(timestamp, tz))


def _at_offset(wall: datetime, offset: timedelta) -> datetime:
    return (wall - offset).replace(tzinfo=UTC)


def _local_wall(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def _wall(day: date, hms: tuple[int, int, int]) -> datetime:
    return datetime.combine(day, time(*hms))


def _hms(wall: datetime) -> tuple[int, int, int]:
    return wall.hour, wall.minute, wall.second
