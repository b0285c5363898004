"""RFC 5545 recurrence text → a checked ``Spec``: the RRULE parts, DTSTART, EXDATE and RDATE as written.

Accepted text, property names and values case-insensitive, lines separated by ``\\n`` or ``\\r\\n``:

* a bare rule ``FREQ=WEEKLY;BYDAY=MO;BYHOUR=9`` or ``RRULE:FREQ=...``;
* an RFC 5545 block: one ``RRULE`` line plus optional ``DTSTART`` (``...Z`` is UTC, ``;TZID=Zone/Name:...`` is
  that zone's wall time, no suffix is floating: the schedule's own zone), ``EXDATE`` and ``RDATE`` lines
  (same forms, comma lists). ``EXDATE;VALUE=DATE:20260105`` removes every occurrence on that local day.

Only what RFC 5545 forbids (§3.3.10: BYWEEKNO outside YEARLY, ordinals in BYDAY outside MONTHLY/YEARLY or with
BYWEEKNO, BYSETPOS alone, COUNT with UNTIL ...) and what provably never occurs (BYMONTHDAY=30 with BYMONTH=2)
is refused here. How expensive a rule is to evaluate is not judged here: the evaluator never needs more than
a few steps per period, and a request's CPU budget (``shared.timing.budget``) cuts off whatever is left.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

YEARLY, MONTHLY, WEEKLY, DAILY, HOURLY, MINUTELY, SECONDLY = range(7)

# COUNT and INTERVAL: any positive integer of at most this many digits. Far beyond any real rule; it only keeps
# the arithmetic on period numbers small.
MAX_DIGITS = 18

# Dates in the text must fall in these years, far enough from datetime's limits that offset arithmetic never
# overflows.
MIN_YEAR = 1900
MAX_YEAR = 2999

FREQS = {
    "YEARLY": YEARLY,
    "MONTHLY": MONTHLY,
    "WEEKLY": WEEKLY,
    "DAILY": DAILY,
    "HOURLY": HOURLY,
    "MINUTELY": MINUTELY,
    "SECONDLY": SECONDLY,
}
FREQ_NAMES = {number: name for name, number in FREQS.items()}
WEEKDAYS = {"MO": 0, "TU": 1, "WE": 2, "TH": 3, "FR": 4, "SA": 5, "SU": 6}
WEEKDAY_CODES = {number: code for code, number in WEEKDAYS.items()}

# Integer list parts: (lowest, highest, whether -highest..-lowest counts from the end).
_INT_PARTS = {
    "BYSECOND": (0, 60, False),  # 60 is a leap second: valid, but no clock we deliver by shows one
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
_POSITIVE = re.compile(rf"\+?[0-9]{{1,{MAX_DIGITS}}}")
_BYDAY_ITEM = re.compile(r"([+-]?[0-9]{1,2})?(MO|TU|WE|TH|FR|SA|SU)")
_DATE_VALUE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})(?:T([0-9]{2})([0-9]{2})([0-9]{2})(Z)?)?", re.I)

# The longest each month can be, for spotting BYMONTH/BYMONTHDAY pairs that never occur.
_MONTH_MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

ByDay = tuple[int, int]  # (weekday 0=MO .. 6=SU, ordinal; 0 = every such weekday of the period)


@dataclass(frozen=True, slots=True)
class DateValue:
    """A DTSTART, EXDATE, RDATE or UNTIL value as written, before it is placed in a zone."""

    wall: datetime  # naive
    zone: ZoneInfo | None  # from TZID
    utc: bool  # written with a Z suffix
    date_only: bool  # YYYYMMDD without a time

    @property
    def floating(self) -> bool:
        return self.zone is None and not self.utc


@dataclass(frozen=True, slots=True)
class Rule:
    """The RRULE parts as written (sorted, deduplicated); an empty tuple is a part that was not given."""

    freq: int
    interval: int = 1
    count: int | None = None
    until: DateValue | None = None
    wkst: int = 0
    byday: tuple[ByDay, ...] = ()
    bysetpos: tuple[int, ...] = ()
    bymonth: tuple[int, ...] = ()
    bymonthday: tuple[int, ...] = ()
    byyearday: tuple[int, ...] = ()
    byweekno: tuple[int, ...] = ()
    byhour: tuple[int, ...] = ()
    byminute: tuple[int, ...] = ()
    bysecond: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Spec:
    rule: Rule
    dtstart: DateValue | None
    exdates: tuple[DateValue, ...]
    rdates: tuple[DateValue, ...]


@lru_cache(maxsize=4096)
def parse_spec(text: str) -> Spec:
    """The checked recurrence; ValueError with a message naming the problem otherwise."""
    return _parse(text)


def _parse(text: str) -> Spec:
    lines = _nonblank_lines(text)
    if not lines:
        raise ValueError("empty recurrence rule")
    if len(lines) == 1 and ":" not in lines[0]:
        return Spec(_parse_rule(lines[0]), None, (), ())
    rules: list[Rule] = []
    dtstarts: list[DateValue] = []
    exdates: list[DateValue] = []
    rdates: list[DateValue] = []
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
    return Spec(rules[0], dtstarts[0] if dtstarts else None, tuple(exdates), tuple(rdates))


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


def _parse_rule(value: str) -> Rule:
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
    rule = Rule(
        freq=_parse_freq(raw["FREQ"]),
        interval=_parse_positive("INTERVAL", raw["INTERVAL"]) if "INTERVAL" in raw else 1,
        count=_parse_positive("COUNT", raw["COUNT"]) if "COUNT" in raw else None,
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


def _parse_freq(value: str) -> int:
    if value not in FREQS:
        raise ValueError(f"unknown FREQ {value!r}; expected one of {', '.join(FREQS)}")
    return FREQS[value]


def _parse_int(name: str, text: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"{name} value {text!r} is not an integer")
    return int(text)


def _parse_positive(name: str, text: str) -> int:
    number = int(text) if _POSITIVE.fullmatch(text) else 0
    if number < 1:
        raise ValueError(f"{name} must be a positive integer of at most {MAX_DIGITS} digits, got {text!r}")
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
    if code not in WEEKDAYS:
        raise ValueError(f"{name} value {code!r} is not a weekday; expected one of {', '.join(WEEKDAYS)}")
    return WEEKDAYS[code]


def _parse_byday(value: str) -> tuple[ByDay, ...]:
    days = set()
    for item in value.split(","):
        match = _BYDAY_ITEM.fullmatch(item.strip())
        if not match:
            raise ValueError(f"BYDAY value {item!r} must be a weekday like MO or an ordinal like 1MO, -1FR")
        ordinal = int(match[1]) if match[1] else 0
        if match[1] and not 1 <= abs(ordinal) <= 53:
            raise ValueError(f"BYDAY ordinal in {item!r} must be between 1 and 53 (or -53 and -1)")
        days.add((WEEKDAYS[match[2]], ordinal))
    return tuple(sorted(days))


def _parse_dates(value: str, params: list[str], prop: str) -> list[DateValue]:
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


def _parse_date(text: str, prop: str, zone: ZoneInfo | None = None) -> DateValue:
    match = _DATE_VALUE.fullmatch(text)
    if not match:
        raise ValueError(f"{prop} value {text!r} must be YYYYMMDDTHHMMSS, YYYYMMDDTHHMMSSZ or YYYYMMDD")
    year, month, day, hour, minute, second = (int(group or 0) for group in match.groups()[:6])
    try:
        wall = datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise ValueError(f"{prop} value {text!r} is not a valid date: {exc}") from None
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise ValueError(f"{prop} value {text!r} must be between the years {MIN_YEAR} and {MAX_YEAR}")
    utc = match[7] is not None
    if utc and zone is not None:
        raise ValueError(f"{prop} value {text!r} cannot be both UTC (Z) and in TZID {zone.key}")
    return DateValue(wall, zone, utc, date_only=match[4] is None)


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


def _check_rule(rule: Rule, raw: dict[str, str]) -> None:
    """RFC 5545's restrictions on combining parts (§3.3.10), plus combinations that provably never occur."""
    freq, name = rule.freq, FREQ_NAMES[rule.freq]
    if rule.count is not None and rule.until is not None:
        raise ValueError("COUNT and UNTIL cannot be used together")
    if rule.byweekno and freq != YEARLY:
        raise ValueError(f"BYWEEKNO is only allowed with FREQ=YEARLY, not FREQ={name}")
    if rule.byyearday and freq in (MONTHLY, WEEKLY, DAILY):
        raise ValueError(f"BYYEARDAY is not allowed with FREQ={name}")
    if rule.bymonthday and freq == WEEKLY:
        raise ValueError("BYMONTHDAY is not allowed with FREQ=WEEKLY")
    _check_byday_ordinals(rule, name)
    if rule.bysetpos and len([part for part in raw if part.startswith("BY")]) < 2:
        raise ValueError("BYSETPOS needs another BYxxx part to select from")
    _check_month_days(rule)


def _check_byday_ordinals(rule: Rule, name: str) -> None:
    ordinals = [day for day in rule.byday if day[1]]
    if not ordinals:
        return
    if rule.freq not in (MONTHLY, YEARLY):
        raise ValueError(f"BYDAY ordinals like {byday_text(ordinals[0])} need FREQ=MONTHLY or YEARLY, not FREQ={name}")
    if rule.freq == YEARLY and rule.byweekno:
        raise ValueError("BYDAY ordinals cannot be combined with BYWEEKNO")
    # A list is a union: one impossible entry next to possible ones (MO,6MO) is harmless, so only a list of
    # nothing but impossible entries is refused.
    in_month = rule.freq == MONTHLY or bool(rule.bymonth)
    if in_month and len(ordinals) == len(rule.byday) and all(abs(day[1]) > 5 for day in ordinals):
        raise ValueError(f"BYDAY {byday_text(ordinals[0])} never occurs: a month has at most 5 of each weekday")


def byday_text(day: ByDay) -> str:
    weekday, ordinal = day
    return f"{ordinal:+d}{WEEKDAY_CODES[weekday]}" if ordinal else WEEKDAY_CODES[weekday]


def _check_month_days(rule: Rule) -> None:
    if (
        rule.bymonth
        and rule.byyearday
        and not any(_yearday_month(day, leap) in rule.bymonth for day in rule.byyearday for leap in (False, True))
    ):
        days, months = ",".join(map(str, rule.byyearday)), ",".join(map(str, rule.bymonth))
        raise ValueError(f"BYYEARDAY={days} never falls in BYMONTH={months}")
    if not (rule.bymonth and rule.bymonthday):
        return
    if not any(abs(day) <= _MONTH_MAX_DAYS[month - 1] for month in rule.bymonth for day in rule.bymonthday):
        days, months = ",".join(map(str, rule.bymonthday)), ",".join(map(str, rule.bymonth))
        raise ValueError(f"BYMONTHDAY={days} never falls in BYMONTH={months}")


def _yearday_month(yearday: int, leap: bool) -> int:
    """The month a signed day of the year falls in (0 when the year is too short for it)."""
    length = 366 if leap else 365
    day = yearday if yearday > 0 else length + yearday + 1
    if not 1 <= day <= length:
        return 0
    for month, days in enumerate(_MONTH_MAX_DAYS, start=1):
        days = 28 if month == 2 and not leap else days
        if day <= days:
            return month
        day -= days
    return 0
