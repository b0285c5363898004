"""RFC 5545 §3.3.10 expansion on local wall time: which wall times a rule generates, period by period.

Wall times are integer *keys*: seconds since 0001-01-01T00:00:00 (``(date.toordinal() - 1) * 86400 +
second of day``), so comparing and bisecting never builds a datetime. Mapping keys to instants (§3.3.5) is the
evaluator's job; this module knows nothing of time zones.

The rule is walked in *units*, each a run of wall time holding a sorted ``Grid`` of keys; consecutive units
hold consecutive keys. For YEARLY, MONTHLY, WEEKLY and DAILY a unit is one FREQ period (the week-numbering
year for YEARLY with BYWEEKNO), so BYSETPOS sees the whole period, including the part before DTSTART. For
HOURLY, MINUTELY and SECONDLY a unit is one local day holding the day's visited periods, each expanded the
same way (the BY parts finer than the period expand, the coarser ones only limit), so a day that cannot match
is skipped without visiting its periods one by one.

"Never again" is a proof, not a horizon: the Gregorian calendar repeats every 400 years (146,097 days =
20,871 weeks = 4,800 months) and INTERVAL's phase repeats after INTERVAL periods, so a walk that crosses one
whole joint cycle without a single key has shown the rule is empty. Walks also end after the year
``LAST_YEAR``, which datetime can no longer represent with room for a UTC offset.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from datetime import date, datetime
from math import gcd
from typing import TYPE_CHECKING

from shared.timing.rrule.parse import DAILY, HOURLY, MINUTELY, MONTHLY, SECONDLY, WEEKLY, YEARLY, Rule

if TYPE_CHECKING:
    from shared.timing.budget import Budget

DAY = 86400
LAST_YEAR = 9998
_LAST_ORDINAL = date(LAST_YEAR, 12, 31).toordinal()
_CYCLE_DAYS = 146_097  # 400 Gregorian years
_CYCLE_UNITS = {YEARLY: 400, MONTHLY: 4800, WEEKLY: _CYCLE_DAYS // 7, DAILY: _CYCLE_DAYS}
# Sub-daily frequencies: seconds per period and periods per day.
_PERIOD_SECONDS = {HOURLY: 3600, MINUTELY: 60, SECONDLY: 1}
_GRID_CACHE_SIZE = 32  # the periods a search or a count is in; older ones are rebuilt on demand
# How many of a sub-daily rule's day phases are checked up front for a rule that can never fire.
_PHASES_CHECKED = 1024

_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def key_of(wall: datetime) -> int:
    return (wall.toordinal() - 1) * DAY + wall.hour * 3600 + wall.minute * 60 + wall.second


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _month_length(year: int, month: int) -> int:
    return 29 if month == 2 and _leap(year) else _MONTH_DAYS[month - 1]


def _lcm(a: int, b: int) -> int:
    return a // gcd(a, b) * b


class Grid:
    """The sorted keys ``base + scale * cells[i // T] + offsets[i % T]``, or only the flat positions in ``picks``.

    Each offset is smaller than ``scale`` and the cells are distinct and sorted, so the keys are sorted as
    listed. ``cells`` may be shared between grids (a sub-daily day's periods depend only on its phase), so
    building a grid costs nothing however many keys it holds.
    """

    __slots__ = ("base", "cells", "offsets", "picks", "scale")

    def __init__(
        self, cells: list[int], offsets: list[int], *, base: int = 0, scale: int = DAY, picks: list[int] | None = None
    ) -> None:
        self.cells, self.offsets, self.base, self.scale, self.picks = cells, offsets, base, scale, picks

    def __len__(self) -> int:
        return len(self.picks) if self.picks is not None else len(self.cells) * len(self.offsets)

    def key(self, index: int) -> int:
        flat = self.picks[index] if self.picks is not None else index
        row, column = divmod(flat, len(self.offsets))
        return self.base + self.scale * self.cells[row] + self.offsets[column]

    def position(self, key: int) -> int:
        """The index of the first key >= ``key``."""
        row = bisect_right(self.cells, (key - self.base) // self.scale) - 1
        if row < 0:
            flat = 0
        else:
            start = self.base + self.scale * self.cells[row]
            flat = row * len(self.offsets) + bisect_left(self.offsets, key - start)
        return flat if self.picks is None else bisect_left(self.picks, flat)


_EMPTY = Grid([], [0])


def _select(size: int, positions: tuple[int, ...]) -> list[int]:
    """BYSETPOS: the flat indices its positions pick from a set of ``size`` (1-based; negative from the end)."""
    picked = {position - 1 if position > 0 else size + position for position in positions}
    return sorted(index for index in picked if 0 <= index < size)


class Expander:
    """One rule's wall-time expansion, from a DTSTART given as a naive local wall time.

    ``zero_defaults``: a BYHOUR without BYMINUTE means minute 0, and a BYHOUR or BYMINUTE without BYSECOND
    means second 0, instead of copying DTSTART's (used when DTSTART is only the moment a schedule was made).
    """

    def __init__(self, rule: Rule, dtstart: datetime, *, zero_defaults: bool) -> None:
        self.freq, self.interval, self.wkst = rule.freq, rule.interval, rule.wkst
        self.dtstart_key = key_of(dtstart)
        self.setpos = rule.bysetpos
        self.months = frozenset(rule.bymonth)
        self.monthdays = rule.bymonthday
        self.yeardays = rule.byyearday
        self.weeknos = rule.byweekno
        self.plain_days = frozenset(weekday for weekday, ordinal in rule.byday if not ordinal)
        self.ordinal_days = frozenset(day for day in rule.byday if day[1])
        self.has_byday = bool(rule.byday)
        self._grids: dict[int, Grid] = {}
        self._set_defaults(rule, dtstart, zero_defaults)
        self.first_unit = self.unit_of(self.dtstart_key)
        if self.freq <= DAILY:
            self._cycle = _lcm(_CYCLE_UNITS[self.freq], self.interval)
            # BYSETPOS positions beyond the largest set a period can hold never pick anything.
            largest = self._max_days() * len(self.times)
            self.empty = not self.times or (bool(self.setpos) and all(abs(p) > largest for p in self.setpos))
        else:
            self._init_subdaily(rule, dtstart)

    # --- setup ------------------------------------------------------------------------------------------

    def _set_defaults(self, rule: Rule, dtstart: datetime, zero_defaults: bool) -> None:
        """RFC 5545: whatever the rule leaves open comes from DTSTART (§3.3.10, "derived from DTSTART")."""
        freq = rule.freq
        hours, minutes = rule.byhour, rule.byminute
        # Second 60 (a leap second) is valid RFC 5545 but never shown by the clocks zoneinfo describes.
        seconds = tuple(second for second in rule.bysecond if second < 60)
        leap_only = bool(rule.bysecond) and not seconds
        if zero_defaults:
            if freq <= HOURLY and hours and not minutes:
                minutes = (0,)
            if freq <= MINUTELY and (hours or minutes) and not seconds:
                seconds = (0,)
        self.hours = hours or ((dtstart.hour,) if freq <= DAILY else tuple(range(24)))
        self.minutes = minutes or ((dtstart.minute,) if freq <= HOURLY else tuple(range(60)))
        self.seconds = seconds or ((dtstart.second,) if freq <= MINUTELY else tuple(range(60)))
        day_parts = rule.bymonthday or rule.byyearday or rule.byweekno or rule.byday
        if freq == YEARLY and not day_parts:
            self.monthdays = (dtstart.day,)
            self.months = self.months or frozenset((dtstart.month,))
        elif freq == MONTHLY and not day_parts:
            self.monthdays = (dtstart.day,)
        elif freq == WEEKLY and not rule.byday:
            self.plain_days = frozenset((dtstart.weekday(),))
            self.has_byday = True
        if leap_only:
            self.seconds = ()
        self.times = sorted(h * 3600 + m * 60 + s for h in self.hours for m in self.minutes for s in self.seconds)

    def _max_days(self) -> int:
        if self.freq == DAILY:
            return 1
        if self.freq == WEEKLY:
            return len(self.plain_days)
        if self.freq == MONTHLY:
            return 31
        return min(7 * len(self.weeknos), 371) if self.weeknos else 366

    def _init_subdaily(self, rule: Rule, dtstart: datetime) -> None:
        self.period = _PERIOD_SECONDS[self.freq]
        self.per_day = DAY // self.period
        self.first_period = (dtstart.toordinal() - 1) * self.per_day + key_of(dtstart) % DAY // self.period
        # Within one period the finer parts expand; the result is the same for every period.
        if self.freq == HOURLY:
            offsets = sorted(m * 60 + s for m in self.minutes for s in self.seconds)
        elif self.freq == MINUTELY:
            offsets = sorted(self.seconds)
        else:
            offsets = [0]
        if self.setpos:
            offsets = [offsets[index] for index in _select(len(offsets), self.setpos)]
        self.offsets = offsets
        self._hour_set, self._minute_set, self._second_set = (
            frozenset(self.hours),
            frozenset(self.minutes),
            frozenset(self.seconds),
        )
        self._allowed_count = len(self.hours) * (len(self.minutes) if self.freq >= MINUTELY else 1)
        self._allowed_count *= len(self.seconds) if self.freq == SECONDLY else 1
        self._phases: dict[int, list[int]] = {}
        phase_days = self.interval // gcd(self.interval, self.per_day)
        self._cycle = _lcm(_CYCLE_DAYS, phase_days)
        self.empty = not offsets or self._no_phase_matches()

    def _no_phase_matches(self) -> bool:
        """Whether no day, whichever its INTERVAL phase, has a visited period the time parts allow."""
        step = gcd(self.per_day, self.interval)
        phases = self.interval // step
        if phases > _PHASES_CHECKED:
            return False  # unknown: the walk's cycle bound decides
        first = self.first_period % step
        return all(not self._periods_in_day(first + k * step) for k in range(phases))

    # --- units ------------------------------------------------------------------------------------------

    def unit_of(self, key: int) -> int:
        """The unit holding ``key`` (or, for a key between units, the next unit)."""
        ordinal = key // DAY + 1
        freq = self.freq
        if freq == YEARLY:
            day = date.fromordinal(ordinal)
            if not self.weeknos:
                return day.year
            if ordinal < self._week_one(day.year):
                return day.year - 1
            if day.year < LAST_YEAR and ordinal >= self._week_one(day.year + 1):
                return day.year + 1
            return day.year
        if freq == MONTHLY:
            day = date.fromordinal(ordinal)
            return day.year * 12 + day.month - 1
        if freq == WEEKLY:
            return (ordinal - 1 - self.wkst) // 7
        return ordinal

    def _visited(self, unit: int) -> int:
        """The first unit INTERVAL visits at or after ``unit`` (every day for sub-daily frequencies)."""
        if unit <= self.first_unit:
            return self.first_unit
        if self.freq > DAILY:
            return unit
        return self.first_unit + -(-(unit - self.first_unit) // self.interval) * self.interval

    def _past_the_end(self, unit: int) -> bool:
        freq = self.freq
        if freq == YEARLY:
            return unit > LAST_YEAR
        if freq == MONTHLY:
            return unit > LAST_YEAR * 12 + 11
        if freq == WEEKLY:
            return 7 * unit + 1 + self.wkst > _LAST_ORDINAL
        return unit > _LAST_ORDINAL

    def walk(self, unit: int, budget: Budget | None = None) -> Iterator[tuple[int, Grid]]:
        """The non-empty units from ``unit`` on, in order; ends once no later unit can hold a key."""
        if self.empty:
            return
        unit = self._visited(unit)
        quiet_since = unit
        step = self.interval if self.freq <= DAILY else 1
        while not self._past_the_end(unit) and unit - quiet_since <= self._cycle:
            if budget is not None:
                budget.tick()
            skip_to = self._jump(unit)
            if skip_to is not None:
                unit = self._visited(skip_to)
                continue
            grid = self.grid(unit)
            if len(grid):
                yield unit, grid
                quiet_since = unit
            unit += step

    def _jump(self, unit: int) -> int | None:
        """For day units that cannot hold a key, a later unit to go on from: the first day of the next month
        when BYMONTH excludes this one, or the day of the next visited period when INTERVAL spans days."""
        if self.freq < DAILY:
            return None
        if self.months:
            day = date.fromordinal(unit)
            if day.month not in self.months:
                year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
                return date(year, month, 1).toordinal() if year <= LAST_YEAR else _LAST_ORDINAL + 1
        if self.freq > DAILY and self.interval > self.per_day:
            first = (self.first_period - (unit - 1) * self.per_day) % self.interval
            if first >= self.per_day:
                return unit + first // self.per_day
        return None

    def grid(self, unit: int) -> Grid:
        grid = self._grids.get(unit)
        if grid is None:
            grid = self._subdaily_grid(unit) if self.freq > DAILY else self._period_grid(unit)
            if len(self._grids) >= _GRID_CACHE_SIZE:
                self._grids.clear()
            self._grids[unit] = grid
        return grid

    def count_from_dtstart(self, unit: int, grid: Grid) -> int:
        """How many of the unit's keys are at or after DTSTART."""
        if unit != self.first_unit:
            return len(grid)
        return len(grid) - grid.position(self.dtstart_key)

    # --- periods of a day and longer --------------------------------------------------------------------

    def _period_grid(self, unit: int) -> Grid:
        days = self._days(unit)
        if not days:
            return _EMPTY
        cells = [ordinal - 1 for ordinal in days]
        if not self.setpos:
            return Grid(cells, self.times)
        return Grid(cells, self.times, picks=_select(len(days) * len(self.times), self.setpos))

    def _days(self, unit: int) -> list[int]:
        freq = self.freq
        if freq == DAILY:
            return [unit] if self._day_ok(date.fromordinal(unit)) else []
        if freq == WEEKLY:
            start = 7 * unit + 1 + self.wkst
            return [
                ordinal
                for ordinal in range(start, start + 7)
                if (ordinal - 1) % 7 in self.plain_days
                and (not self.months or date.fromordinal(ordinal).month in self.months)
            ]
        if freq == MONTHLY:
            year, month = divmod(unit, 12)
            return self._month_days(year, month + 1)
        return self._year_days(unit)

    def _day_ok(self, day: date) -> bool:
        """The BY parts that only limit (DAILY and shorter): BYMONTH, BYMONTHDAY, BYYEARDAY, plain BYDAY."""
        if self.months and day.month not in self.months:
            return False
        if self.has_byday and day.weekday() not in self.plain_days:
            return False
        if self.monthdays:
            length = _month_length(day.year, day.month)
            if day.day not in self.monthdays and day.day - length - 1 not in self.monthdays:
                return False
        if self.yeardays:
            yearday = day.timetuple().tm_yday
            if yearday not in self.yeardays and yearday - (366 if _leap(day.year) else 365) - 1 not in self.yeardays:
                return False
        return True

    def _month_days(self, year: int, month: int) -> list[int]:
        """MONTHLY: BYMONTHDAY and BYDAY expand within the month (BYDAY only limits next to BYMONTHDAY)."""
        if self.months and month not in self.months:
            return []
        first = date(year, month, 1).toordinal()
        length = _month_length(year, month)
        if self.monthdays:
            days = self._resolve(self.monthdays, length)
            if self.has_byday:
                days = [day for day in days if self._byday_limits(first + day - 1, day, length)]
        else:
            days = self._byday_expand(first, length)
        return [first + day - 1 for day in days]

    def _year_days(self, year: int) -> list[int]:
        """YEARLY: the first given of BYWEEKNO, BYYEARDAY, BYMONTHDAY, BYDAY expands, the others limit."""
        if year < 1 or year > LAST_YEAR:
            return []
        if self.weeknos:
            return self._week_year_days(year)
        first = date(year, 1, 1).toordinal()
        length = 366 if _leap(year) else 365
        months = sorted(self.months) if self.months else range(1, 13)
        days: list[int]
        if self.yeardays:
            days = [first + day - 1 for day in self._resolve(self.yeardays, length)]
            if self.months:
                days = [ordinal for ordinal in days if date.fromordinal(ordinal).month in self.months]
            if self.monthdays:
                days = [ordinal for ordinal in days if self._monthday_ok(date.fromordinal(ordinal))]
        elif self.monthdays:
            days = []
            for month in months:
                month_first = date(year, month, 1).toordinal()
                days += [month_first + day - 1 for day in self._resolve(self.monthdays, _month_length(year, month))]
        elif self.months:
            days = []
            for month in months:
                days += [
                    date(year, month, 1).toordinal() + day - 1
                    for day in self._byday_expand(date(year, month, 1).toordinal(), _month_length(year, month))
                ]
            return days
        else:
            return [first + day - 1 for day in self._byday_expand(first, length)]
        if self.has_byday:
            days = [ordinal for ordinal in days if self._byday_limits_in_year(ordinal)]
        return days

    def _byday_limits_in_year(self, ordinal: int) -> bool:
        """BYDAY next to BYYEARDAY or BYMONTHDAY: a filter; ordinals count within the month if BYMONTH is given."""
        day = date.fromordinal(ordinal)
        if self.months:
            return self._byday_limits(ordinal, day.day, _month_length(day.year, day.month))
        yearday = day.timetuple().tm_yday
        return self._byday_limits(ordinal, yearday, 366 if _leap(day.year) else 365)

    def _week_year_days(self, year: int) -> list[int]:
        """BYWEEKNO: the days of those weeks of the week-numbering year (they may spill into the next or
        previous calendar year), limited by BYMONTH, BYYEARDAY, BYMONTHDAY and BYDAY."""
        week_one = self._week_one(year)
        weeks = (self._week_one(year + 1) - week_one) // 7
        numbers = sorted({number if number > 0 else weeks + number + 1 for number in self.weeknos})
        days: list[int] = []
        for number in numbers:
            if 1 <= number <= weeks:
                start = week_one + (number - 1) * 7
                days += range(start, start + 7)
        result = []
        for ordinal in days:
            day = date.fromordinal(ordinal)
            if self.months and day.month not in self.months:
                continue
            if self.has_byday and day.weekday() not in self.plain_days:
                continue
            if self.monthdays and not self._monthday_ok(day):
                continue
            if self.yeardays:
                yearday = day.timetuple().tm_yday
                length = 366 if _leap(day.year) else 365
                if yearday not in self.yeardays and yearday - length - 1 not in self.yeardays:
                    continue
            result.append(ordinal)
        return result

    def _week_one(self, year: int) -> int:
        """The ordinal of the first day of week 1: the first WKST-started week with at least 4 days in ``year``."""
        january_first = date(year, 1, 1).toordinal()
        into_week = (january_first - 1 - self.wkst) % 7  # days of that week before January 1
        start = january_first - into_week
        return start if into_week <= 3 else start + 7

    def _monthday_ok(self, day: date) -> bool:
        length = _month_length(day.year, day.month)
        return day.day in self.monthdays or day.day - length - 1 in self.monthdays

    @staticmethod
    def _resolve(values: tuple[int, ...], length: int) -> list[int]:
        """Signed day numbers (-1 = the last) → sorted 1-based days that exist in a span of ``length``."""
        return sorted({day for value in values if 1 <= (day := value if value > 0 else length + value + 1) <= length})

    def _byday_expand(self, first: int, length: int) -> list[int]:
        """BYDAY alone in a span of ``length`` days from ordinal ``first``: every plain weekday, and the n-th
        (from the end if negative) of each numbered one. The list is a union."""
        chosen: set[int] = set()
        first_weekday = (first - 1) % 7
        for weekday in self.plain_days:
            chosen.update(range(1 + (weekday - first_weekday) % 7, length + 1, 7))
        last_weekday = (first_weekday + length - 1) % 7
        for weekday, ordinal in self.ordinal_days:
            if ordinal > 0:
                day = 1 + (weekday - first_weekday) % 7 + (ordinal - 1) * 7
            else:
                day = length - (last_weekday - weekday) % 7 + (ordinal + 1) * 7
            if 1 <= day <= length:
                chosen.add(day)
        return sorted(chosen)

    def _byday_limits(self, ordinal: int, day: int, length: int) -> bool:
        """Whether day ``day`` (1-based, of a span of ``length``) matches BYDAY used as a filter."""
        weekday = (ordinal - 1) % 7
        if weekday in self.plain_days:
            return True
        if not self.ordinal_days:
            return False
        return (weekday, (day - 1) // 7 + 1) in self.ordinal_days or (
            weekday,
            -((length - day) // 7 + 1),
        ) in self.ordinal_days

    # --- HOURLY, MINUTELY, SECONDLY: one unit per day -----------------------------------------------------

    def _subdaily_grid(self, ordinal: int) -> Grid:
        if not self._day_ok(date.fromordinal(ordinal)):
            return _EMPTY
        first = (self.first_period - (ordinal - 1) * self.per_day) % self.interval
        periods = self._periods_in_day(first)
        if not periods:
            return _EMPTY
        return Grid(periods, self.offsets, base=(ordinal - 1) * DAY, scale=self.period)

    def _periods_in_day(self, first: int) -> list[int]:
        """The periods of a day (0 .. per_day-1) INTERVAL visits, starting at ``first``, that BYHOUR,
        BYMINUTE and BYSECOND (as limits) allow."""
        interval, per_day = self.interval, self.per_day
        if first >= per_day:
            return []
        if interval >= per_day:
            return [first] if self._allowed(first) else []
        periods = self._phases.get(first)
        if periods is None:
            if self._allowed_count <= per_day // interval:
                periods = [period for period in self._allowed_periods() if (period - first) % interval == 0]
            else:
                periods = [period for period in range(first, per_day, interval) if self._allowed(period)]
            self._phases[first] = periods
        return periods

    def _allowed(self, period: int) -> bool:
        if self.freq == HOURLY:
            return period in self._hour_set
        if self.freq == MINUTELY:
            return period // 60 in self._hour_set and period % 60 in self._minute_set
        return (
            period // 3600 in self._hour_set
            and period // 60 % 60 in self._minute_set
            and period % 60 in self._second_set
        )

    def _allowed_periods(self) -> list[int]:
        if self.freq == HOURLY:
            return list(self.hours)
        if self.freq == MINUTELY:
            return [h * 60 + m for h in self.hours for m in self.minutes]
        return [h * 3600 + m * 60 + s for h in self.hours for m in self.minutes for s in self.seconds]

    empty = False
