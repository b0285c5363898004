"""From wall-time keys to instants: RFC 5545 §3.3.5 in the rule's zone, COUNT, UNTIL, EXDATE and RDATE.

The rule's zone is DTSTART's: its TZID, UTC for a ``...Z`` value, or the schedule's zone for a floating DTSTART
or none.

A wall time maps to the instant zoneinfo gives it with ``fold=0``, which is §3.3.5 exactly: a time inside a
spring-forward gap is read with the offset from before the gap (so it moves forward by the gap's length: 02:30
in a 02:00→03:00 gap is 03:30), and a time repeated by a fall-back overlap means its first occurrence. Two wall
times may then share an instant (02:30 and 03:30 on that day); the recurrence set holds it once.

That mapping is monotonic except for gap times, which land as late as a wall time up to one gap length later.
So the search for the first instant after ``after`` starts at ``after``'s wall time read with the smallest
offset of the last day (to catch gap times the clock jumped over just before ``after``), and ends at the first
regular (non-gap) wall time whose instant is no earlier than the best found.

A trigger's ``dstPolicy`` changes that mapping: gap SKIP drops gap times (they still count for COUNT, like an
EXDATE), overlap BOTH adds the second occurrence of a repeated wall time (one COUNT position, two instants).
Second occurrences land up to one overlap length later than their wall time suggests, like gap times, so they
never end the search early, and the search starts earlier to catch those of wall times before ``after``'s.
The policy applies to every wall time of the set: rule, DTSTART, RDATE and EXDATE alike.

COUNT counts generated occurrences in wall-time order from DTSTART. Counting to a far ``after`` walks every
unit in between once; the counts are remembered (a checkpoint every ``_MARK_EVERY`` units plus where the last
question ended), so a worker asking for each next occurrence in turn does constant work per call.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import UTC, datetime, timedelta
from threading import Lock
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from shared.timing.rrule.expand import Expander, Grid, key_of
from shared.timing.rrule.parse import DateValue, Spec

if TYPE_CHECKING:
    from shared.timing.budget import Budget

_BASE = datetime(1, 1, 1)
# The longest spring-forward jump on record (Samoa skipped 2011-12-30 entirely), with a margin.
_MAX_GAP = timedelta(hours=26)
_MARK_EVERY = 64


class Compiled:
    """One recurrence in one zone, ready to answer "the first occurrence after this instant"."""

    def __init__(
        self, spec: Spec, tz: ZoneInfo, anchor: datetime, *, skip_gaps: bool = False, both_folds: bool = False
    ) -> None:
        # The rule runs on the clock of DTSTART's zone (RFC 5545 §3.3.10: the recurrence is computed from
        # DTSTART): its TZID, UTC for a ...Z value, else (floating, or no DTSTART line) the schedule's zone.
        if spec.dtstart is not None and spec.dtstart.zone is not None:
            tz = spec.dtstart.zone
        elif spec.dtstart is not None and spec.dtstart.utc:
            tz = ZoneInfo("UTC")
        self.tz = tz
        self.skip_gaps = skip_gaps
        self.both_folds = both_folds
        self._utc = tz.key in ("UTC", "Etc/UTC", "Etc/Universal", "Universal", "Zulu", "Etc/Zulu")
        rule = self.spec_rule = spec.rule
        self.explicit_dtstart = spec.dtstart is not None
        if spec.dtstart is None:
            dtstart = anchor.astimezone(tz).replace(tzinfo=None, microsecond=0)
        else:
            dtstart = spec.dtstart.wall
        self.expander = Expander(rule, dtstart, zero_defaults=spec.dtstart is None)
        self.count = rule.count
        self.until = None if rule.until is None else _until_instant(rule.until, tz)
        # An EXDATE names a wall time, so under overlap BOTH it removes both of its occurrences; it removes a
        # gap time whether or not the policy would have fired it.
        self.exdates = frozenset(
            instant
            for value in spec.exdates
            if not value.date_only
            for instant in self._instants(value, tz, exclusion=True)
        )
        self.exdays = frozenset(value.wall.date() for value in spec.exdates if value.date_only)
        self.rdates = tuple(sorted({instant for value in spec.rdates for instant in self._instants(value, tz)}))
        # RFC 5545 §3.8.5.3: an explicit DTSTART is always the first occurrence, and counts as one for COUNT
        # even when the rule itself would not generate it. A DTSTART taken from the anchor is only a start.
        expander = self.expander
        self.dtstart_instants: tuple[datetime, ...] = ()
        extra = 0
        if spec.dtstart is not None:
            self.dtstart_instants = self._instants(spec.dtstart, tz)
            grid = expander.grid(expander.first_unit)
            index = grid.position(expander.dtstart_key)
            generated = index < len(grid) and grid.key(index) == expander.dtstart_key
            extra = 0 if generated else 1
            if generated:
                # The rule yields it, with the policy applied there, unless UNTIL lies before all of it (both
                # folds under overlap BOTH): DTSTART is the first occurrence all the same, so it is kept here.
                until = self.until
                if until is None or any(instant <= until for instant in self.dtstart_instants):
                    self.dtstart_instants = ()
        self._marks: list[tuple[int, int]] = [(expander.first_unit, extra)]  # (unit, occurrences before it)
        self._cursor = self._marks[0]
        self._lock = Lock()

    # --- the search -----------------------------------------------------------------------------------------

    def next_after(self, after: datetime, budget: Budget | None = None) -> datetime | None:
        """The first occurrence strictly after ``after`` (UTC), or None when there is none."""
        after = after.astimezone(UTC)
        found = [self._next_from_rule(after, budget), self._next_rdate(after)]
        found.extend(instant for instant in self.dtstart_instants if instant > after and not self.excludes(instant))
        return min((instant for instant in found if instant is not None), default=None)

    def _next_from_rule(self, after: datetime, budget: Budget | None) -> datetime | None:
        if self.until is not None and after >= self.until:
            return None
        expander, count = self.expander, self.count
        skip_gaps, both_folds = self.skip_gaps, self.both_folds
        low = max(self._lower_key(after), expander.dtstart_key)
        start = expander.unit_of(low)
        ordinal = 0
        if count is not None:
            ordinal = self._count_before(start, budget)
            if ordinal >= count:
                return None
        best: datetime | None = None
        for unit, grid in expander.walk(start, budget):
            index = grid.position(low)
            if count is not None:
                # The unit's occurrences before `low` (and from DTSTART on) count too.
                ordinal += index - (grid.position(expander.dtstart_key) if unit == expander.first_unit else 0)
            for position in range(index, len(grid)):
                if budget is not None:
                    budget.tick()
                if count is not None:
                    ordinal += 1
                    if ordinal > count:
                        return best
                key = grid.key(position)
                try:
                    instant, in_gap = self._map(key)
                except OverflowError:
                    return best
                if self.until is not None and instant > self.until:
                    if in_gap:
                        continue
                    return best
                if (
                    instant > after
                    and (best is None or instant < best)
                    and not (in_gap and skip_gaps)
                    and not self.excludes(instant)
                ):
                    best = instant
                if both_folds and not in_gap:
                    second = self._second_copy(key)
                    if (
                        second is not None
                        and second > after
                        and (best is None or second < best)
                        and (self.until is None or second <= self.until)
                        and not self.excludes(second)
                    ):
                        best = second
                if best is not None and not in_gap and instant >= best:
                    return best
        return best

    def _next_rdate(self, after: datetime) -> datetime | None:
        for instant in self.rdates[bisect_right(self.rdates, after) :]:
            if not self.excludes(instant):
                return instant
        return None

    def excludes(self, instant: datetime) -> bool:
        if instant in self.exdates:
            return True
        return bool(self.exdays) and instant.astimezone(self.tz).date() in self.exdays

    # --- wall time and instants -----------------------------------------------------------------------------

    def _map(self, key: int) -> tuple[datetime, bool]:
        """The instant of a wall-time key by §3.3.5, and whether the wall time lies in a gap."""
        wall = _BASE + timedelta(seconds=key)
        if self._utc:
            return wall.replace(tzinfo=UTC), False
        aware = wall.replace(tzinfo=self.tz)
        before, later = aware.utcoffset(), aware.replace(fold=1).utcoffset()
        assert before is not None and later is not None
        return (wall - before).replace(tzinfo=UTC), later > before

    def _second_copy(self, key: int) -> datetime | None:
        """The instant of a wall time's second occurrence when a fall-back overlap repeats it, else None."""
        if self._utc:
            return None
        aware = (_BASE + timedelta(seconds=key)).replace(tzinfo=self.tz)
        first, second = aware.utcoffset(), aware.replace(fold=1).utcoffset()
        assert first is not None and second is not None
        return (aware.replace(tzinfo=None) - second).replace(tzinfo=UTC) if second < first else None

    def _instants(self, value: DateValue, tz: ZoneInfo, *, exclusion: bool = False) -> tuple[datetime, ...]:
        """The instants of an explicit DTSTART / RDATE / EXDATE value under the DST policy."""
        if value.utc:
            return (value.wall.replace(tzinfo=UTC),)
        aware = value.wall.replace(tzinfo=value.zone or tz)
        first, second = aware.utcoffset(), aware.replace(fold=1).utcoffset()
        assert first is not None and second is not None
        instant = (value.wall - first).replace(tzinfo=UTC)
        if second > first:  # in a gap
            return () if self.skip_gaps and not exclusion else (instant,)
        if second < first and (self.both_folds or exclusion):  # repeated by an overlap
            return instant, (value.wall - second).replace(tzinfo=UTC)
        return (instant,)

    def _lower_key(self, after: datetime) -> int:
        """The earliest wall time whose instant can be after ``after``."""
        if self._utc:
            return key_of(after.replace(tzinfo=None))
        offset = after.astimezone(self.tz).utcoffset()
        try:
            earlier = (after - _MAX_GAP).astimezone(self.tz).utcoffset()
        except OverflowError:
            earlier = offset
        assert offset is not None and earlier is not None
        smallest = min(offset, earlier)
        if self.both_folds:
            # The second occurrence of a wall time before after's local time may still be to come.
            try:
                later = (after + _MAX_GAP).astimezone(self.tz).utcoffset()
            except OverflowError:
                later = offset
            assert later is not None
            smallest = min(smallest, later)
        try:
            return key_of((after + smallest).replace(tzinfo=None))
        except OverflowError:
            return key_of(after.replace(tzinfo=None))

    # --- explaining ------------------------------------------------------------------------------------------

    def locate(self, key: int) -> tuple[int, Grid, int] | None:
        """``(unit, grid, index)`` of a wall time the rule generates (from DTSTART on), else None."""
        expander = self.expander
        if key < expander.dtstart_key or expander.empty:
            return None
        unit = expander.unit_of(key)
        grid = expander.grid(unit)
        index = grid.position(key)
        if index < len(grid) and grid.key(index) == key:
            return unit, grid, index
        return None

    def occurrence_number(self, unit: int, grid: Grid, index: int, budget: Budget | None = None) -> int:
        """The 1-based COUNT position of the generated wall time at ``grid``'s ``index`` (needs COUNT)."""
        before = self._count_before(unit, budget)
        first = self.expander.grid(unit).position(self.expander.dtstart_key) if unit == self.expander.first_unit else 0
        return before + index - first + 1

    def map_key(self, key: int) -> tuple[datetime, bool]:
        """The §3.3.5 instant of a wall-time key and whether it lies in a gap."""
        return self._map(key)

    # --- COUNT ----------------------------------------------------------------------------------------------

    def _count_before(self, unit: int, budget: Budget | None) -> int:
        """How many occurrences (the extra DTSTART included) lie in the units before ``unit``."""
        assert self.count is not None
        start, counted = self._marks[bisect_right(self._marks, (unit, self.count + 2)) - 1]
        cursor = self._cursor
        if start < cursor[0] <= unit:
            start, counted = cursor
        for walked, (found, grid) in enumerate(self.expander.walk(start, budget), start=1):
            if found >= unit or counted >= self.count:
                break
            counted += self.expander.count_from_dtstart(found, grid)
            if walked % _MARK_EVERY == 0:
                self._mark(found + 1, counted)
        self._cursor = (unit, counted)
        return counted

    def _mark(self, unit: int, counted: int) -> None:
        with self._lock:
            if unit > self._marks[-1][0]:
                self._marks.append((unit, counted))


def _instant(value: DateValue, tz: ZoneInfo) -> datetime:
    if value.utc:
        return value.wall.replace(tzinfo=UTC)
    return value.wall.replace(tzinfo=value.zone or tz).astimezone(UTC)


def _until_instant(value: DateValue, tz: ZoneInfo) -> datetime:
    if value.date_only:
        # UNTIL=20261231 means through the end of that local day.
        end_of_day = datetime.combine(value.wall.date() + timedelta(days=1), datetime.min.time())
        return end_of_day.replace(tzinfo=tz).astimezone(UTC) - timedelta(microseconds=1)
    return _instant(value, tz)
