"""A brute-force RFC 5545 reference, written apart from ``shared.timing.rrule`` to check it.

Where the evaluator *constructs* each period's set (expand this part, limit by that one), this module *tests*
every wall time one by one: a wall time is an instance when its FREQ period is one INTERVAL visits, every BY
part holds for it (a list is a union, an ordinal counts within the month or the year), and BYSETPOS picks its
position among its period's instances. Week numbers come from "week 1 is the WKST week holding January 4th".
Wall times map to instants by searching UTC offsets (§3.3.5: the first of two, or the offset from before a gap),
not through zoneinfo's ``fold``.

Slow by design: callers keep the window small.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache
from itertools import product
from zoneinfo import ZoneInfo

FREQS = ["YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY", "SECONDLY"]
DAY_CODES = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]


@dataclass
class RefRule:
    freq: str
    dtstart: datetime  # naive wall time in the zone
    interval: int = 1
    count: int | None = None
    until: datetime | None = None  # UTC instant
    wkst: int = 0
    byday: list[tuple[int, int]] = field(default_factory=list)  # (weekday, ordinal or 0)
    bymonth: list[int] = field(default_factory=list)
    bymonthday: list[int] = field(default_factory=list)
    byyearday: list[int] = field(default_factory=list)
    byweekno: list[int] = field(default_factory=list)
    byhour: list[int] = field(default_factory=list)
    byminute: list[int] = field(default_factory=list)
    bysecond: list[int] = field(default_factory=list)
    bysetpos: list[int] = field(default_factory=list)
    explicit_dtstart: bool = True  # False: the anchor form (BYHOUR alone means minute 0, second 0)

    def text(self) -> str:
        parts = [f"FREQ={self.freq}", f"INTERVAL={self.interval}", f"WKST={DAY_CODES[self.wkst]}"]
        if self.count is not None:
            parts.append(f"COUNT={self.count}")
        if self.until is not None:
            parts.append(f"UNTIL={self.until:%Y%m%dT%H%M%SZ}")
        if self.byday:
            parts.append("BYDAY=" + ",".join(f"{n if n else ''}{DAY_CODES[w]}" for w, n in self.byday))
        for name in ("bymonth", "bymonthday", "byyearday", "byweekno", "byhour", "byminute", "bysecond", "bysetpos"):
            values = getattr(self, name)
            if values:
                parts.append(f"{name.upper()}={','.join(map(str, values))}")
        return ";".join(parts)


def _freq(rule: RefRule) -> int:
    return FREQS.index(rule.freq)


def _leap(year: int) -> bool:
    return date(year, 12, 31).timetuple().tm_yday == 366


def _month_len(year: int, month: int) -> int:
    return ((date(year + (month == 12), month % 12 + 1, 1)) - date(year, month, 1)).days


def week_one(year: int, wkst: int) -> date:
    january_4 = date(year, 1, 4)
    return january_4 - timedelta(days=(january_4.weekday() - wkst) % 7)


def week_year_and_number(day: date, wkst: int) -> tuple[int, int, int]:
    """(week-numbering year, week number, weeks in that year)."""
    year = day.year
    if day < week_one(year, wkst):
        year -= 1
    elif day >= week_one(year + 1, wkst):
        year += 1
    start, end = week_one(year, wkst), week_one(year + 1, wkst)
    return year, (day - start).days // 7 + 1, (end - start).days // 7


def period_index(rule: RefRule, wall: datetime) -> int:
    freq = _freq(rule)
    day = wall.date()
    if freq == 0:
        return week_year_and_number(day, rule.wkst)[0] if rule.byweekno else day.year
    if freq == 1:
        return day.year * 12 + day.month
    if freq == 2:
        return (day.toordinal() - 1 - rule.wkst) // 7
    index = day.toordinal()
    for unit, size in ((4, 24), (5, 60), (6, 60)):
        if freq >= unit:
            index = index * size + (wall.hour, wall.minute, wall.second)[unit - 4]
    return index


def _signed_in(value: int, length: int, allowed: list[int]) -> bool:
    return value in allowed or value - length - 1 in allowed


def _byday_holds(rule: RefRule, day: date) -> bool:
    freq = _freq(rule)
    for weekday, ordinal in rule.byday:
        if day.weekday() != weekday:
            continue
        if not ordinal:
            return True
        if freq == 1 or rule.bymonth:
            position, length = day.day, _month_len(day.year, day.month)
        else:
            position, length = day.timetuple().tm_yday, 366 if _leap(day.year) else 365
        if ordinal in ((position - 1) // 7 + 1, -((length - position) // 7 + 1)):
            return True
    return False


def day_holds(rule: RefRule, day: date) -> bool:
    """Every date-level condition, including what DTSTART supplies."""
    freq, start = _freq(rule), rule.dtstart
    if rule.bymonth and day.month not in rule.bymonth:
        return False
    if rule.byweekno:
        _, number, weeks = week_year_and_number(day, rule.wkst)
        if not _signed_in(number, weeks, rule.byweekno):
            return False
    if rule.byyearday and not _signed_in(day.timetuple().tm_yday, 366 if _leap(day.year) else 365, rule.byyearday):
        return False
    if rule.bymonthday and not _signed_in(day.day, _month_len(day.year, day.month), rule.bymonthday):
        return False
    if rule.byday and not _byday_holds(rule, day):
        return False
    no_day_part = not (rule.byweekno or rule.byyearday or rule.bymonthday or rule.byday)
    if freq == 0 and no_day_part and (day.day != start.day or (not rule.bymonth and day.month != start.month)):
        return False
    if freq == 1 and not (rule.bymonthday or rule.byday) and day.day != start.day:
        return False
    return not (freq == 2 and not rule.byday and day.weekday() != start.weekday())


def _time_lists(rule: RefRule) -> tuple[list[int], list[int], list[int]]:
    freq, start = _freq(rule), rule.dtstart
    hours = rule.byhour or ([start.hour] if freq <= 3 else list(range(24)))
    minute_default = [start.minute]
    second_default = [start.second]
    if not rule.explicit_dtstart:
        if rule.byhour:
            minute_default = [0]
        if rule.byhour or rule.byminute:
            second_default = [0]
    minutes = rule.byminute or (minute_default if freq <= 4 else list(range(60)))
    seconds = rule.bysecond or (second_default if freq <= 5 else list(range(60)))
    return hours, minutes, seconds


def instances(rule: RefRule, last_day: date) -> list[datetime]:
    """The rule's wall times (no DTSTART extra, no COUNT) from DTSTART to the end of ``last_day``'s period."""
    hours, minutes, seconds = _time_lists(rule)
    first = rule.dtstart.date() - timedelta(days=8 if _freq(rule) != 0 else 0)
    if _freq(rule) == 0:
        first = min(date(rule.dtstart.year, 1, 1), week_one(rule.dtstart.year, rule.wkst))
    elif _freq(rule) == 1:
        first = rule.dtstart.date().replace(day=1)
    end = last_day + timedelta(days=7)
    if _freq(rule) <= 1:
        end = date(last_day.year + 1, 1, 7)  # whole periods, so BYSETPOS sees all of the last one
    start_phase = period_index(rule, rule.dtstart)
    by_period: dict[int, list[datetime]] = {}
    day = first
    while day <= end:
        if day_holds(rule, day):
            for hour, minute, second in product(hours, minutes, seconds):
                wall = datetime(day.year, day.month, day.day, hour, minute, second)
                index = period_index(rule, wall)
                if (index - start_phase) % rule.interval == 0:
                    by_period.setdefault(index, []).append(wall)
        day += timedelta(days=1)
    result = []
    for index in sorted(by_period):
        members = sorted(by_period[index])
        if rule.bysetpos:
            members = [
                wall
                for position, wall in enumerate(members, start=1)
                if position in rule.bysetpos or position - len(members) - 1 in rule.bysetpos
            ]
        result += [wall for wall in members if wall >= rule.dtstart]
    return result


def to_instant(wall: datetime, tz: ZoneInfo) -> tuple[datetime, bool]:
    """§3.3.5 by search: the earliest UTC instant showing ``wall``; in a gap, ``wall`` read with the offset in
    force before the gap. Also whether it was a gap."""
    guess = wall.replace(tzinfo=UTC)
    offsets = _offsets_near(tz, wall.date())
    showing = sorted(
        instant
        for offset in offsets
        if offset is not None
        and (instant := (wall - offset).replace(tzinfo=UTC)).astimezone(tz).replace(tzinfo=None) == wall
    )
    if showing:
        return showing[0], False
    # A gap: find the transition that skipped it, and use the offset from just before.
    low, high = guess - timedelta(hours=30), guess + timedelta(hours=30)
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(tz).replace(tzinfo=None) < wall:
            low = middle
        else:
            high = middle
    before = low.astimezone(tz).utcoffset()
    assert before is not None
    return (wall - before).replace(tzinfo=UTC), True


@cache
def _offsets_near(tz: ZoneInfo, day: date) -> frozenset[timedelta | None]:
    """Every UTC offset the zone uses within two days of ``day`` (sampled every 15 minutes)."""
    middle = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return frozenset((middle + timedelta(minutes=15 * step)).astimezone(tz).utcoffset() for step in range(-192, 193))


def reference_next(rule: RefRule, tz: ZoneInfo, after: datetime, last_day: date) -> tuple[datetime | None, datetime]:
    """The first occurrence after ``after`` among those the window proves, and the instant up to which the
    window proves everything (an answer later than that is unknown to the reference)."""
    walls = instances(rule, last_day)
    ordered: list[datetime] = []
    if rule.explicit_dtstart and (not walls or walls[0] != rule.dtstart):
        ordered.append(rule.dtstart)  # §3.8.5.3: DTSTART is the first occurrence even when not generated
        extra = True
    else:
        extra = False
    ordered += walls
    if rule.count is not None:
        ordered = ordered[: rule.count]
    mapped = []
    for position, wall in enumerate(ordered):
        instant, _ = to_instant(wall, tz)
        is_dtstart = position == 0 and (extra or wall == rule.dtstart) and rule.explicit_dtstart
        if rule.until is not None and instant > rule.until and not is_dtstart:
            continue
        mapped.append(instant)
    proven_until = to_instant(datetime.combine(last_day, datetime.min.time()), tz)[0]
    if rule.count is not None and len(ordered) == rule.count and ordered[-1].date() < last_day - timedelta(days=2):
        proven_until = datetime.max.replace(tzinfo=UTC)  # COUNT ran out inside the window: nothing follows
    later = sorted({instant for instant in mapped if instant > after and instant <= proven_until})
    return (later[0] if later else None), proven_until
