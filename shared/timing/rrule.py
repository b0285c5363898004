"""RFC 5545 recurrence rules: validation and next-occurrence evaluation for RRULE triggers.

Accepted text, property names and values case-insensitive, lines separated by ``\\n`` or ``\\r\\n``:

* a bare rule ``FREQ=WEEKLY;BYDAY=MO;BYHOUR=9`` or ``RRULE:FREQ=...``;
* an RFC 5545 block: one ``RRULE`` line plus optional ``DTSTART`` (``...Z`` is UTC, ``;TZID=Zone/Name:...`` is
  that zone's wall time, no suffix is floating: the schedule's own zone), ``EXDATE`` and ``RDATE`` lines
  (same forms, comma lists). ``EXDATE;VALUE=DATE:20260105`` removes every occurrence on that local day.

Without a DTSTART line the caller's anchor is DTSTART. DTSTART supplies every part the rule leaves open
(RFC 5545), except that a BYHOUR without BYMINUTE means minute 0 and a BYHOUR or BYMINUTE without BYSECOND
means second 0: ``BYHOUR=9`` is 09:00:00, not 09:17:33 copied from the moment the schedule was created.

Time zones (RFC 5545 §3.3.5): the rule runs on naive local wall time in the schedule's zone. A wall time
inside a spring-forward gap moves forward by the gap length (02:30 in a 02:00→03:00 gap fires at 03:30) and
an ambiguous one in a fall-back overlap means its first occurrence. Everything returned is UTC.

Evaluation uses dateutil, but never lets it iterate from DTSTART (it has no way to skip ahead): every
default dateutil would derive from DTSTART is made explicit, so iteration can start at the period containing
``after`` (``_Plan``). dateutil also has no bound on how long it searches: a rule whose parts never match
loops until year 9999 (seconds of CPU), so each search is cut off after a fixed number of scanned months
(``_SCAN_BUDGET``) and a rule with no occurrence in that horizon counts as exhausted. A few shapes that make
dateutil step second by second or rebuild large time sets every hour are rejected or rewritten as DAILY
rules, so every accepted rule evaluates in a few milliseconds at worst.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from math import gcd
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from dateutil.rrule import (
    DAILY,
    HOURLY,
    MINUTELY,
    MONTHLY,
    SECONDLY,
    WEEKLY,
    YEARLY,
    rrule,
    weekday,
    weekdays,
)

from shared.timing.budget import Budget

_Freq = Literal[0, 1, 2, 3, 4, 5, 6]  # dateutil's YEARLY .. SECONDLY
_Ints = tuple[int, ...]

# COUNT rules cannot skip ahead (the count runs from DTSTART), so each call iterates up to COUNT times;
# 1000 keeps a dense rule near its end at a few milliseconds.
MAX_COUNT = 1000
MAX_INTERVAL = 1000

# Dates in the text must fall in these years, far enough from datetime's limits that offset arithmetic and
# dateutil's stepping never overflow.
_MIN_YEAR = 1900
_MAX_YEAR = 2999

# dateutil builds a rule's time-of-day set once per rule for DAILY and longer periods, but once per step for
# HOURLY and MINUTELY (even on days that do not match). Within a YEARLY or MONTHLY period it pairs every
# matching day with every time of day, including the days before the point it starts from.
_MAX_TIMES_PER_DAY = 1440
_MAX_TIMES_PER_STEP = 12
_MAX_TIMES_PER_PERIOD = 10_000

# How many months one search may scan before it gives up and calls the rule exhausted. dateutil moves into
# a new month at least once per period, so for YEARLY, MONTHLY and long INTERVALs this counts periods. Each
# is sized so that the costliest accepted shape of that frequency, a rule that never matches, takes about
# 6 ms. COUNT rules count from DTSTART, so they too must reach their end within this horizon.
_SCAN_BUDGET = {
    YEARLY: 120,  # at least 120 years
    MONTHLY: 720,  # 60 years
    WEEKLY: 300,  # 25 years
    DAILY: 72,  # 6 years: covers leap days
    HOURLY: 24,  # 2 years
    MINUTELY: 18,  # 18 months
    SECONDLY: 18,
}
# A gap-only scan starts inside the gap and ends at its edge, at most a day later, so in the next month.
_GAP_SCAN_BUDGET = 1

# The largest spring-forward jump on record (Samoa skipped 2011-12-30 entirely).
_MAX_GAP = timedelta(hours=24)

_FREQS: dict[str, _Freq] = {
    "YEARLY": YEARLY,
    "MONTHLY": MONTHLY,
    "WEEKLY": WEEKLY,
    "DAILY": DAILY,
    "HOURLY": HOURLY,
    "MINUTELY": MINUTELY,
    "SECONDLY": SECONDLY,
}
_FREQ_NAMES = {number: name for name, number in _FREQS.items()}
_WEEKDAYS = {"MO": 0, "TU": 1, "WE": 2, "TH": 3, "FR": 4, "SA": 5, "SU": 6}

# Integer list parts: (lowest, highest, whether -highest..-lowest counts from the end).
_INT_PARTS = {
    "BYSECOND": (0, 59, False),
    "BYMINUTE": (0, 59, False),
    "BYHOUR": (0, 23, False),
    "BYMONTHDAY": (1, 31, True),
    "BYYEARDAY": (1, 366, True),
    "BYWEEKNO": (1, 53, True),
    "BYMONTH": (1, 12, False),
    "BYSETPOS": (1, 366, True),
}
_PARTS = ("FREQ", "INTERVAL", "COUNT", "UNTIL", "WKST", "BYDAY", *_INT_PARTS)

_INTEGER = re.compile(r"[+-]?[0-9]{1,9}")
_BYDAY_ITEM = re.compile(r"([+-]?[0-9]{1,2})?(MO|TU|WE|TH|FR|SA|SU)")
_DATE_VALUE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})(?:T([0-9]{2})([0-9]{2})([0-9]{2})(Z)?)?", re.I)

# The longest each month can be, for spotting BYMONTH/BYMONTHDAY pairs that never occur.
_MONTH_MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


# --- public interface -------------------------------------------------------------------------------------


def validate_rrule(text: str) -> None:
    """Raise ValueError with a message naming the problem when ``text`` is not an accepted recurrence."""
    _parse(text)


def rrule_next(
    text: str, tz: ZoneInfo, anchor: datetime, after: datetime, *, budget: Budget | None = None
) -> datetime | None:
    """The first occurrence strictly after ``after`` as a UTC datetime; None once the rule is exhausted.

    ``anchor`` (aware) is DTSTART when ``text`` has no DTSTART line; it is read as wall time in ``tz``. A rule
    with no occurrence within the search horizon (see ``_SCAN_BUDGET``) counts as exhausted.
    """
    if anchor.tzinfo is None or after.tzinfo is None:
        raise ValueError("anchor and after must be timezone-aware datetimes")
    if tz.key is None:
        raise ValueError("tz must be a ZoneInfo built from an IANA key")
    compiled = _compile(text, tz.key, anchor)
    candidates = (_next_rdate(compiled, after), _next_from_rule(compiled, after, budget))
    return min((found for found in candidates if found is not None), default=None)


# --- parsing ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _DateValue:
    """A DTSTART, EXDATE, RDATE or UNTIL value as written, before it is placed in the schedule's zone."""

    wall: datetime  # naive
    zone: ZoneInfo | None  # from TZID
    utc: bool  # written with a Z suffix
    date_only: bool  # YYYYMMDD without a time

    @property
    def floating(self) -> bool:
        return self.zone is None and not self.utc


@dataclass(frozen=True, slots=True)
class _Rule:
    """The RRULE parts as written (sorted, deduplicated); an empty tuple is a part that was not given."""

    freq: _Freq
    interval: int = 1
    count: int | None = None
    until: _DateValue | None = None
    wkst: int = 0
    byday: tuple[weekday, ...] = ()
    bysetpos: tuple[int, ...] = ()
    bymonth: tuple[int, ...] = ()
    bymonthday: tuple[int, ...] = ()
    byyearday: tuple[int, ...] = ()
    byweekno: tuple[int, ...] = ()
    byhour: tuple[int, ...] = ()
    byminute: tuple[int, ...] = ()
    bysecond: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class _Spec:
    rule: _Rule
    dtstart: _DateValue | None
    exdates: tuple[_DateValue, ...]
    rdates: tuple[_DateValue, ...]


def _parse(text: str) -> _Spec:
    lines = _nonblank_lines(text)
    if not lines:
        raise ValueError("empty recurrence rule")
    if len(lines) == 1 and ":" not in lines[0]:
        return _Spec(_parse_rule(lines[0]), None, (), ())
    rules: list[_Rule] = []
    dtstarts: list[_DateValue] = []
    exdates: list[_DateValue] = []
    rdates: list[_DateValue] = []
    for line in lines:
        name, params, value = _split_property(line)
        if name == "RRULE":
            if params:
                raise ValueError(f"RRULE takes no parameters, got {';'.join(params)!r}")
            rules.append(_parse_rule(value))
        elif name == "DTSTART":
            dtstarts.extend(_parse_dates(value, params, name))
        elif name == "EXDATE":
            exdates.extend(_parse_dates(value, params, name))
        elif name == "RDATE":
            rdates.extend(_parse_dates(value, params, name))
        else:
            expected = "DTSTART, RRULE, EXDATE or RDATE"
            raise ValueError(f"unsupported property line {line[:60]!r}; expected {expected}")
    if len(rules) != 1:
        raise ValueError(f"expected exactly one RRULE line, got {len(rules)}")
    if len(dtstarts) > 1:
        raise ValueError("DTSTART must be a single value given once")
    if any(value.date_only for value in rdates):
        raise ValueError("RDATE values must be date-times (YYYYMMDDTHHMMSS), not dates")
    return _Spec(rules[0], dtstarts[0] if dtstarts else None, tuple(exdates), tuple(rdates))


def _nonblank_lines(text: str) -> list[str]:
    # RFC 5545 line folding is not supported: API users indent multi-line strings, which would read as folds.
    return [line.strip() for line in text.splitlines() if line.strip()]


def _split_property(line: str) -> tuple[str, list[str], str]:
    """``NAME;PARAM=X;PARAM=Y:VALUE`` → (upper-case NAME, params as written, value)."""
    head, colon, value = line.partition(":")
    if not colon:
        raise ValueError(f"expected NAME:VALUE, got {line[:60]!r}")
    name, *params = head.split(";")
    return name.strip().upper(), [param.strip() for param in params], value.strip()


def _parse_rule(value: str) -> _Rule:
    raw: dict[str, str] = {}
    for pair in value.split(";"):
        if not pair.strip():
            continue  # tolerate "FREQ=DAILY;" and doubled separators
        name, equals, part_value = pair.partition("=")
        name, part_value = name.strip().upper(), part_value.strip().upper()
        if not equals or not part_value:
            raise ValueError(f"rule part {pair!r} must be NAME=VALUE")
        if name not in _PARTS:
            raise ValueError(f"unknown rule part {name!r}; expected one of {', '.join(_PARTS)}")
        if name in raw:
            raise ValueError(f"rule part {name} is given more than once")
        raw[name] = part_value
    if "FREQ" not in raw:
        raise ValueError("the rule needs a FREQ part, e.g. FREQ=DAILY")
    ints = {name: _parse_int_list(name, raw[name]) for name in _INT_PARTS if name in raw}
    rule = _Rule(
        freq=_parse_freq(raw["FREQ"]),
        interval=_parse_bounded("INTERVAL", raw.get("INTERVAL", "1"), 1, MAX_INTERVAL),
        count=_parse_bounded("COUNT", raw["COUNT"], 1, MAX_COUNT) if "COUNT" in raw else None,
        until=_parse_date(raw["UNTIL"], "UNTIL") if "UNTIL" in raw else None,
        wkst=_parse_weekday_code(raw["WKST"], "WKST") if "WKST" in raw else 0,
        byday=_parse_byday(raw["BYDAY"]) if "BYDAY" in raw else (),
        bysetpos=ints.get("BYSETPOS", ()),
        bymonth=ints.get("BYMONTH", ()),
        bymonthday=ints.get("BYMONTHDAY", ()),
        byyearday=ints.get("BYYEARDAY", ()),
        byweekno=ints.get("BYWEEKNO", ()),
        byhour=ints.get("BYHOUR", ()),
        byminute=ints.get("BYMINUTE", ()),
        bysecond=ints.get("BYSECOND", ()),
    )
    _check_rule(rule, raw)
    return rule


def _parse_freq(value: str) -> _Freq:
    if value not in _FREQS:
        raise ValueError(f"unknown FREQ {value!r}; expected one of {', '.join(_FREQS)}")
    return _FREQS[value]


def _parse_int(name: str, text: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"{name} value {text!r} is not an integer")
    return int(text)


def _parse_bounded(name: str, text: str, lowest: int, highest: int) -> int:
    number = _parse_int(name, text)
    if not lowest <= number <= highest:
        raise ValueError(f"{name} must be between {lowest} and {highest}, got {number}")
    return number


def _parse_int_list(name: str, value: str) -> tuple[int, ...]:
    lowest, highest, signed = _INT_PARTS[name]
    numbers = set()
    for item in value.split(","):
        number = _parse_int(name, item.strip())
        if not (lowest <= number <= highest or (signed and -highest <= number <= -lowest)):
            allowed = f"{lowest}..{highest}" + (f" or -{highest}..-{lowest}" if signed else "")
            raise ValueError(f"{name} value {number} is out of range {allowed}")
        numbers.add(number)
    return tuple(sorted(numbers))


def _parse_weekday_code(code: str, name: str) -> int:
    if code not in _WEEKDAYS:
        raise ValueError(f"{name} value {code!r} is not a weekday; expected one of {', '.join(_WEEKDAYS)}")
    return _WEEKDAYS[code]


def _parse_byday(value: str) -> tuple[weekday, ...]:
    days = set()
    for item in value.split(","):
        match = _BYDAY_ITEM.fullmatch(item.strip())
        if not match:
            raise ValueError(f"BYDAY value {item!r} must be a weekday like MO or an ordinal like 1MO, -1FR")
        ordinal = int(match[1]) if match[1] else None
        if ordinal is not None and not 1 <= abs(ordinal) <= 53:
            raise ValueError(f"BYDAY ordinal in {item!r} must be between 1 and 53 (or -53 and -1)")
        day = weekdays[_WEEKDAYS[match[2]]]
        days.add(day if ordinal is None else day(ordinal))
    return tuple(sorted(days, key=lambda day: (day.weekday, day.n or 0)))


def _parse_dates(value: str, params: list[str], prop: str) -> list[_DateValue]:
    zone: ZoneInfo | None = None
    kind: str | None = None
    for param in params:
        key, _, param_value = param.partition("=")
        key = key.upper()
        if key == "TZID":
            zone = _zone(param_value)
        elif key == "VALUE" and param_value.upper() in ("DATE", "DATE-TIME"):
            kind = param_value.upper()
        else:
            raise ValueError(f"unsupported {prop} parameter {param!r}; expected TZID or VALUE=DATE[-TIME]")
    values = [_parse_date(item.strip(), prop, zone) for item in value.split(",")]
    for parsed in values:
        if kind is not None and parsed.date_only != (kind == "DATE"):
            raise ValueError(f"{prop} value {parsed.wall:%Y%m%d} does not match VALUE={kind}")
        if zone is not None and parsed.date_only:
            raise ValueError(f"{prop} with TZID needs date-times, got a date")
    return values


def _parse_date(text: str, prop: str, zone: ZoneInfo | None = None) -> _DateValue:
    match = _DATE_VALUE.fullmatch(text)
    if not match:
        raise ValueError(f"{prop} value {text!r} must be YYYYMMDDTHHMMSS, YYYYMMDDTHHMMSSZ or YYYYMMDD")
    year, month, day, hour, minute, second = (int(group or 0) for group in match.groups()[:6])
    try:
        wall = datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise ValueError(f"{prop} value {text!r} is not a valid date: {exc}") from None
    if not _MIN_YEAR <= year <= _MAX_YEAR:
        raise ValueError(f"{prop} value {text!r} must be between the years {_MIN_YEAR} and {_MAX_YEAR}")
    utc = match[7] is not None
    if utc and zone is not None:
        raise ValueError(f"{prop} value {text!r} cannot be both UTC (Z) and in TZID {zone.key}")
    return _DateValue(wall, zone, utc, date_only=match[4] is None)


def _zone(name: str) -> ZoneInfo:
    key = name.strip().strip('"')
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError):
        pass
    # Property names are case-insensitive, so accept TZID=europe/berlin too.
    for known in _zone_keys():
        if known.lower() == key.lower():
            return ZoneInfo(known)
    raise ValueError(f"unknown time zone {key!r} in TZID; expected an IANA name like Europe/Berlin")


@lru_cache(maxsize=1)
def _zone_keys() -> frozenset[str]:
    return frozenset(available_timezones())


# --- semantic checks --------------------------------------------------------------------------------------


def _check_rule(rule: _Rule, raw: dict[str, str]) -> None:
    """RFC 5545's restrictions on combining parts, plus the shapes this module refuses for cost."""
    freq, name = rule.freq, _FREQ_NAMES[rule.freq]
    if rule.count is not None and rule.until is not None:
        raise ValueError("COUNT and UNTIL cannot be used together")
    if rule.byweekno and freq != YEARLY:
        raise ValueError(f"BYWEEKNO is only allowed with FREQ=YEARLY, not FREQ={name}")
    if rule.byyearday and freq in (MONTHLY, WEEKLY, DAILY):
        raise ValueError(f"BYYEARDAY is not allowed with FREQ={name}")
    if rule.bymonthday and freq == WEEKLY:
        raise ValueError("BYMONTHDAY is not allowed with FREQ=WEEKLY")
    _check_byday_ordinals(rule, name)
    if rule.bysetpos:
        if len([part for part in raw if part.startswith("BY")]) < 2:
            raise ValueError("BYSETPOS needs another BYxxx part to select from")
        if freq > DAILY:
            raise ValueError(f"BYSETPOS needs FREQ=YEARLY, MONTHLY, WEEKLY or DAILY, not FREQ={name}")
    _check_dense(rule, name)
    _check_month_days(rule)


def _check_byday_ordinals(rule: _Rule, name: str) -> None:
    ordinals = [day for day in rule.byday if day.n is not None]
    if not ordinals:
        return
    if rule.freq not in (MONTHLY, YEARLY):
        example = _byday_text(ordinals[0])
        raise ValueError(f"BYDAY ordinals like {example} need FREQ=MONTHLY or YEARLY, not FREQ={name}")
    if rule.freq == YEARLY and rule.byweekno:
        raise ValueError("BYDAY ordinals cannot be combined with BYWEEKNO")
    in_month = rule.freq == MONTHLY or bool(rule.bymonth)
    for day in ordinals:
        if in_month and abs(day.n) > 5:
            raise ValueError(f"BYDAY {_byday_text(day)} never occurs: a month has at most 5 of each weekday")


def _byday_text(day: weekday) -> str:
    return f"{day.n:+d}{repr(day)[:2]}"


def _check_dense(rule: _Rule, name: str) -> None:
    """Refuse shapes where dateutil does heavy work on every step or every day, even days that never match."""
    freq, interval = rule.freq, rule.interval
    if freq == SECONDLY and (rule.byhour or rule.byminute):
        raise ValueError("FREQ=SECONDLY cannot have BYHOUR or BYMINUTE; use FREQ=MINUTELY with BYSECOND")
    if freq == MINUTELY and rule.byhour and 60 % interval:
        raise ValueError(f"FREQ=MINUTELY with BYHOUR needs an INTERVAL that divides 60, got {interval}")
    if _runs_as_daily(rule):
        times = _times_per_day(rule)
        if times > _MAX_TIMES_PER_DAY:
            raise ValueError(f"the rule expands to up to {times} times per day; at most {_MAX_TIMES_PER_DAY}")
        times *= _days_per_period(rule)
        if times > _MAX_TIMES_PER_PERIOD:
            unit = "year" if freq == YEARLY else "month"
            raise ValueError(f"the rule expands to up to {times} times per {unit}; at most {_MAX_TIMES_PER_PERIOD}")
    elif freq in (HOURLY, MINUTELY):
        times = (len(rule.byminute or (0,)) if freq == HOURLY else 1) * len(rule.bysecond or (0,))
        unit = "hour" if freq == HOURLY else "minute"
        if times > _MAX_TIMES_PER_STEP:
            raise ValueError(
                f"FREQ={name} expands to {times} times per {unit}; at most {_MAX_TIMES_PER_STEP} (use a finer FREQ)"
            )


def _runs_as_daily(rule: _Rule) -> bool:
    """Whether the rule's time of day repeats every day, so it can be evaluated with a DAILY time set."""
    if rule.freq <= DAILY:
        return True
    if rule.freq == HOURLY:
        return 24 % rule.interval == 0
    return rule.freq == MINUTELY and bool(rule.byhour) and 60 % rule.interval == 0


def _times_per_day(rule: _Rule) -> int:
    """An upper bound on the times of day a DAILY-style evaluation needs (before DTSTART narrows them)."""
    hours, minutes, seconds = len(rule.byhour or (0,)), len(rule.byminute or (0,)), len(rule.bysecond or (0,))
    if rule.freq == HOURLY:
        hours = min(hours, 24 // rule.interval) if rule.byhour else 24 // rule.interval
    elif rule.freq == MINUTELY:
        minutes = min(minutes, 60 // rule.interval) if rule.byminute else 60 // rule.interval
    return hours * minutes * seconds


def _days_per_period(rule: _Rule) -> int:
    """An upper bound on the days one YEARLY or MONTHLY period can match; 1 for shorter periods.

    (A WEEKLY period starts at the day dateutil starts from, so earlier days of the week cost nothing.)
    """
    if rule.freq not in (YEARLY, MONTHLY):
        return 1
    months = len(rule.bymonth) if rule.bymonth else (12 if rule.freq == YEARLY else 1)
    bounds = [366 if rule.freq == YEARLY else 31]
    if rule.bymonthday:
        bounds.append(len(rule.bymonthday) * months)
    if rule.byyearday:
        bounds.append(len(rule.byyearday))
    if rule.byweekno:
        bounds.append(7 * len(rule.byweekno))
    if rule.byday:
        # A plain weekday falls at most 5 times a month (53 times a year); an ordinal once per month or year.
        per_weekday = 53 if rule.freq == YEARLY and not rule.bymonth else 5 * months
        per_ordinal = months if rule.freq == MONTHLY or rule.bymonth else 1
        bounds.append(sum(per_ordinal if day.n else per_weekday for day in rule.byday))
    if not (rule.bymonthday or rule.byyearday or rule.byweekno or rule.byday):
        bounds.append(len(rule.bymonth) or 1)  # DTSTART's day, in each BYMONTH month or DTSTART's month
    return min(bounds)


def _check_month_days(rule: _Rule) -> None:
    if not (rule.bymonth and rule.bymonthday):
        return
    if not any(abs(day) <= _MONTH_MAX_DAYS[month - 1] for month in rule.bymonth for day in rule.bymonthday):
        days, months = ",".join(map(str, rule.bymonthday)), ",".join(map(str, rule.bymonth))
        raise ValueError(f"BYMONTHDAY={days} never falls in BYMONTH={months}")


# --- compiling: what dateutil iterates --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """dateutil's arguments with every DTSTART-derived default made explicit.

    With nothing left for dateutil to copy from DTSTART, DTSTART only fixes the phase of INTERVAL, so
    iteration may begin in any period the rule visits (``_iteration_start``) and yield the same occurrences.
    """

    freq: _Freq
    interval: int
    wkst: int
    count: int | None
    dtstart: datetime  # naive local wall time
    byday: tuple[weekday, ...]
    bysetpos: tuple[int, ...]
    bymonth: tuple[int, ...]
    bymonthday: tuple[int, ...]
    byyearday: tuple[int, ...]
    byweekno: tuple[int, ...]
    byhour: tuple[int, ...]
    byminute: tuple[int, ...]
    bysecond: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Compiled:
    tz: ZoneInfo
    plan: _Plan | None  # None: DTSTART makes the rule's BYxxx values unreachable, so it never fires
    until: datetime | None  # UTC, inclusive
    exdates: frozenset[datetime]  # UTC
    exdays: frozenset[date]  # local dates excluded whole
    rdates: tuple[datetime, ...]  # UTC, sorted

    def excludes(self, instant: datetime) -> bool:
        if instant in self.exdates:
            return True
        return bool(self.exdays) and instant.astimezone(self.tz).date() in self.exdays


@lru_cache(maxsize=1024)
def _compile(text: str, tz_key: str, anchor: datetime) -> _Compiled:
    tz = ZoneInfo(tz_key)
    spec = _parse(text)
    if spec.dtstart is None:
        dtstart = anchor.astimezone(tz).replace(tzinfo=None, microsecond=0)
    else:
        dtstart = _local_wall(spec.dtstart, tz)
    rule = spec.rule
    return _Compiled(
        tz=tz,
        plan=_plan(rule, dtstart),
        until=None if rule.until is None else _until_instant(rule.until, tz),
        exdates=frozenset(_instant(value, tz) for value in spec.exdates if not value.date_only),
        exdays=frozenset(value.wall.date() for value in spec.exdates if value.date_only),
        rdates=tuple(sorted({_instant(value, tz) for value in spec.rdates})),
    )


def _local_wall(value: _DateValue, tz: ZoneInfo) -> datetime:
    """DTSTART as naive wall time in the schedule's zone."""
    if value.floating or value.zone == tz:
        return value.wall
    return _instant(value, tz).astimezone(tz).replace(tzinfo=None)


def _instant(value: _DateValue, tz: ZoneInfo) -> datetime:
    if value.utc:
        return value.wall.replace(tzinfo=UTC)
    return _to_utc(value.wall, value.zone or tz)


def _until_instant(value: _DateValue, tz: ZoneInfo) -> datetime:
    if value.date_only:
        # UNTIL=20261231 means through the end of that local day.
        return _to_utc(value.wall + timedelta(days=1), tz) - timedelta(microseconds=1)
    return _instant(value, tz)


def _plan(rule: _Rule, dtstart: datetime) -> _Plan | None:
    """None when DTSTART leaves a BYxxx part no value INTERVAL can reach, so the rule never fires."""
    hours, minutes, seconds = _explicit_times(rule, dtstart)
    bymonth, bymonthday, byday = _explicit_days(rule, dtstart)
    freq, interval = rule.freq, rule.interval
    if freq in (HOURLY, MINUTELY) and _runs_as_daily(rule):
        # The times of day repeat every day, and dateutil handles a DAILY time set far faster than it steps
        # hour by hour or minute by minute through days that do not match.
        if freq == HOURLY:
            hours = _visited(hours, dtstart.hour, interval, 24)
        else:
            minutes = _visited(minutes, dtstart.minute, interval, 60)
        freq, interval = DAILY, 1
    elif freq == HOURLY:
        hours = _reachable(hours, dtstart.hour, interval, 24)
    elif freq == MINUTELY:
        minutes = _reachable(minutes, dtstart.minute, interval, 60)
    elif freq == SECONDLY:
        seconds = _reachable(seconds, dtstart.second, interval, 60)
    if (rule.byhour and not hours) or (rule.byminute and not minutes) or (rule.bysecond and not seconds):
        return None
    return _Plan(
        freq, interval, rule.wkst, rule.count, dtstart, byday, rule.bysetpos, bymonth, bymonthday,
        rule.byyearday, rule.byweekno, hours, minutes, seconds,
    )  # fmt: skip


def _explicit_times(rule: _Rule, dtstart: datetime) -> tuple[_Ints, _Ints, _Ints]:
    """BYHOUR, BYMINUTE, BYSECOND with what dateutil would copy from DTSTART filled in."""
    freq, hours, minutes, seconds = rule.freq, rule.byhour, rule.byminute, rule.bysecond
    # Users writing BYHOUR=9 mean 09:00:00, not the minute and second of DTSTART, which is usually just the
    # moment the schedule was created. dateutil copies only the parts coarser than FREQ, so only those.
    if freq < MINUTELY and hours and not minutes:
        minutes = (0,)
    if freq < SECONDLY and (hours or minutes) and not seconds:
        seconds = (0,)
    if freq < HOURLY and not hours:
        hours = (dtstart.hour,)
    if freq < MINUTELY and not minutes:
        minutes = (dtstart.minute,)
    if freq < SECONDLY and not seconds:
        seconds = (dtstart.second,)
    return hours, minutes, seconds


def _explicit_days(rule: _Rule, dtstart: datetime) -> tuple[_Ints, _Ints, tuple[weekday, ...]]:
    """BYMONTH, BYMONTHDAY, BYDAY with dateutil's defaults from DTSTART filled in (as in rrule.__init__)."""
    bymonth, bymonthday, byday = rule.bymonth, rule.bymonthday, rule.byday
    if rule.bymonthday or rule.byyearday or rule.byweekno or rule.byday:
        return bymonth, bymonthday, byday
    if rule.freq == YEARLY:
        return bymonth or (dtstart.month,), (dtstart.day,), byday
    if rule.freq == MONTHLY:
        return bymonth, (dtstart.day,), byday
    if rule.freq == WEEKLY:
        return bymonth, bymonthday, (weekdays[dtstart.weekday()],)
    return bymonth, bymonthday, byday


def _reachable(values: _Ints, start: int, interval: int, base: int) -> _Ints:
    """The values INTERVAL steps from ``start`` can land on (mod ``base``); dateutil drops the others."""
    step = gcd(interval, base)
    return tuple(value for value in values if (value - start) % step == 0)


def _visited(values: _Ints, start: int, interval: int, base: int) -> _Ints:
    """The values INTERVAL steps from ``start`` visit in a ``base`` cycle, limited to ``values`` if given."""
    visited = {(start + step) % base for step in range(0, base, interval)}
    return tuple(sorted(visited & set(values) if values else visited))


# --- evaluation -------------------------------------------------------------------------------------------


class _ScanBudgetExceeded(Exception):
    """A search scanned its whole budget of months without finding an occurrence."""


class _BoundedRrule(rrule):
    """An rrule that raises _ScanBudgetExceeded once it has scanned ``months_left`` calendar months.

    dateutil searches for the next match without limit, so a rule whose parts never match together
    (FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30, or an INTERVAL that never lands on an allowed weekday) loops until
    year 9999. Its ``_iterinfo.rebuild`` reads ``rule._byeaster`` once for every month it moves into (every
    period for MONTHLY and YEARLY), which is the only hook into that loop. ``test_scan_budget_hook_is_live``
    fails if a dateutil release stops reading it.
    """

    months_left = 0

    @property
    def _byeaster(self) -> tuple[int, ...] | None:
        self.months_left -= 1
        if self.months_left < 0:
            raise _ScanBudgetExceeded
        return self._byeaster_value

    @_byeaster.setter
    def _byeaster(self, value: tuple[int, ...] | None) -> None:
        self._byeaster_value = value


def _next_rdate(compiled: _Compiled, after: datetime) -> datetime | None:
    for instant in compiled.rdates[bisect_right(compiled.rdates, after) :]:
        if not compiled.excludes(instant):
            return instant
    return None


def _next_from_rule(compiled: _Compiled, after: datetime, budget: Budget | None = None) -> datetime | None:
    """The smallest occurrence of the RRULE strictly after ``after``.

    Local wall times map onto instants in order, except that gap times are pushed forward by the gap
    length: a wall time earlier than ``after``'s own can land after ``after`` only if it lies in a gap the
    clock jumped over just before ``after``. So two scans cover every candidate: the wall times from
    ``after``'s wall time on, and the tail of that gap.
    """
    if compiled.plan is None or (compiled.until is not None and after >= compiled.until):
        return None
    tz = compiled.tz
    found = _scan(compiled, compiled.plan, after.astimezone(tz).replace(tzinfo=None), after, budget, gap_only=False)
    gap_wall = _gap_wall_for(after, tz)
    if gap_wall is not None:
        in_gap = _scan(compiled, compiled.plan, gap_wall, after, budget, gap_only=True)
        if in_gap is not None and (found is None or in_gap < found):
            found = in_gap
    return found


def _scan(
    compiled: _Compiled, plan: _Plan, start: datetime, after: datetime, budget: Budget | None, *, gap_only: bool
) -> datetime | None:
    """The smallest occurrence after ``after`` among the rule's wall times from ``start`` on.

    With ``gap_only`` the scan stops at the first wall time outside a gap. Otherwise it stops at the first
    regular (non-gap) wall time whose instant is at least the best found: every later wall time maps to a
    later instant, except gap times, which map to the instant of a later regular wall time.
    """
    tz, best = compiled.tz, None
    # COUNT rules iterate from DTSTART (the count runs from there), so they need the full budget.
    months = _GAP_SCAN_BUDGET if gap_only and plan.count is None else _SCAN_BUDGET[plan.freq]
    try:
        for wall in _dateutil_rule(plan, start, months):
            if budget is not None:
                budget.tick()
            if wall < start:
                continue  # only COUNT rules iterate from DTSTART; these instants are not after `after`
            instant = _to_utc(wall, tz)
            in_gap = _is_gap(wall, instant, tz)
            if gap_only and not in_gap:
                break
            if compiled.until is not None and instant > compiled.until:
                if in_gap:
                    continue
                break
            if instant > after and not compiled.excludes(instant) and (best is None or instant < best):
                best = instant
            if not in_gap and best is not None and instant >= best:
                break
    except _ScanBudgetExceeded:
        pass
    return best


def _dateutil_rule(plan: _Plan, start: datetime, months: int) -> _BoundedRrule:
    # COUNT counts from DTSTART, so those rules cannot start later.
    dtstart = plan.dtstart if plan.count is not None else _iteration_start(plan, start)
    rule = _BoundedRrule(
        plan.freq,
        dtstart=dtstart,
        interval=plan.interval,
        wkst=plan.wkst,  # explicit: dateutil's default follows calendar.firstweekday(), a process global
        count=plan.count,
        byweekday=plan.byday or None,
        bysetpos=plan.bysetpos or None,
        bymonth=plan.bymonth or None,
        bymonthday=plan.bymonthday or None,
        byyearday=plan.byyearday or None,
        byweekno=plan.byweekno or None,
        byhour=plan.byhour or None,
        byminute=plan.byminute or None,
        bysecond=plan.bysecond or None,
    )
    rule.months_left = months + 2  # dateutil reads the hook twice before it leaves the first month
    return rule


def _iteration_start(plan: _Plan, start: datetime) -> datetime:
    """Where dateutil can begin and still yield every occurrence at or after ``start``.

    ``start`` itself when its period (year, month, week, ..., second) is one INTERVAL visits, else the
    beginning of the next visited period.
    """
    if start <= plan.dtstart:
        return plan.dtstart
    first = _period_index(plan.freq, plan.wkst, plan.dtstart)
    skipped = _period_index(plan.freq, plan.wkst, start) - first
    if skipped % plan.interval:
        return _period_start(plan.freq, plan.wkst, first + -(-skipped // plan.interval) * plan.interval)
    if plan.freq == WEEKLY and plan.bysetpos and skipped:
        # dateutil's first WEEKLY period runs from the day it starts on, so BYSETPOS would count only the
        # rest of the week. (DTSTART's own week keeps that quirk, as dateutil has it.)
        return _period_start(plan.freq, plan.wkst, first + skipped)
    return start


# Periods per day for the frequencies shorter than a day.
_PER_DAY = {DAILY: 1, HOURLY: 24, MINUTELY: 24 * 60, SECONDLY: 24 * 60 * 60}


def _period_index(freq: int, wkst: int, moment: datetime) -> int:
    """Consecutive numbers for consecutive periods of ``freq``."""
    if freq == YEARLY:
        return moment.year
    if freq == MONTHLY:
        return moment.year * 12 + moment.month - 1
    if freq == WEEKLY:
        # Ordinal 1 (0001-01-01) is a Monday, so weeks starting on `wkst` begin at ordinals 1 + wkst + 7k.
        return (moment.toordinal() - 1 - wkst) // 7
    per_day = _PER_DAY[freq]
    seconds = moment.hour * 3600 + moment.minute * 60 + moment.second
    return moment.toordinal() * per_day + seconds * per_day // 86400


def _period_start(freq: int, wkst: int, index: int) -> datetime:
    if freq == YEARLY:
        return datetime(index, 1, 1)
    if freq == MONTHLY:
        return datetime(index // 12, index % 12 + 1, 1)
    if freq == WEEKLY:
        return datetime.fromordinal(7 * index + 1 + wkst)
    per_day = _PER_DAY[freq]
    day, part = divmod(index, per_day)
    return datetime.fromordinal(day) + timedelta(seconds=part * 86400 // per_day)


def _to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    # fold=0 is RFC 5545 §3.3.5 exactly: zoneinfo moves a gap time forward by the gap length and reads an
    # ambiguous time as its first occurrence.
    return wall.replace(tzinfo=tz).astimezone(UTC)


def _is_gap(wall: datetime, instant: datetime, tz: ZoneInfo) -> bool:
    return instant.astimezone(tz).replace(tzinfo=None) != wall


def _gap_wall_for(after: datetime, tz: ZoneInfo) -> datetime | None:
    """The wall time inside a gap that maps onto ``after``, if the clock jumped forward just before it.

    Wall times in the gap from there on map to instants after ``after`` although they precede its wall
    time. Assumes at most one transition within ``_MAX_GAP``, which holds for every zone in use.
    """
    offset_before = (after - _MAX_GAP).astimezone(tz).utcoffset()
    offset_now = after.astimezone(tz).utcoffset()
    if offset_before is None or offset_now is None or offset_before >= offset_now:
        return None
    wall = (after + offset_before).replace(tzinfo=None)
    return wall if _is_gap(wall, _to_utc(wall, tz), tz) else None
