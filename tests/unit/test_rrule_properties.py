"""Property test: the evaluator against the brute-force reference (``rrule_reference``), in DST zones."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from shared.timing.rrule import rrule_next, validate_rrule
from tests.unit.rrule_reference import FREQS, RefRule, reference_next

ZONES = [
    ZoneInfo(key)
    for key in (
        "Europe/Berlin",
        "America/New_York",
        "America/Santiago",
        "America/Havana",
        "Australia/Lord_Howe",
        "Pacific/Chatham",
        "Africa/Casablanca",
        "Asia/Tokyo",
        "UTC",
    )
]
# How far back DTSTART may lie and how far ahead the reference looks, per frequency, in days.
WINDOW = {"YEARLY": 2200, "MONTHLY": 1100, "WEEKLY": 370, "DAILY": 200, "HOURLY": 10, "MINUTELY": 1, "SECONDLY": 1}


@cache
def transitions(tz: ZoneInfo, year: int) -> list[datetime]:
    found = []
    day = datetime(year, 1, 1, tzinfo=UTC)
    while day.year == year:
        low, high = day, day + timedelta(days=1)
        if low.astimezone(tz).utcoffset() != high.astimezone(tz).utcoffset():
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                same = middle.astimezone(tz).utcoffset() == low.astimezone(tz).utcoffset()
                low, high = (middle, high) if same else (low, middle)
            found.append(high.replace(microsecond=0))  # transitions fall on whole seconds
        day += timedelta(days=1)
    return found


def small_sets(values: list[int], most: int = 3) -> st.SearchStrategy[list[int]]:
    return st.lists(st.sampled_from(values), min_size=1, max_size=most, unique=True).map(sorted)


@st.composite
def cases(draw: st.DrawFn) -> tuple[RefRule, ZoneInfo, ZoneInfo, datetime, date]:
    tz = draw(st.sampled_from(ZONES))
    freq = draw(st.sampled_from(FREQS))
    window = WINDOW[freq]
    after = draw(st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)))
    changes = transitions(tz, after.year)
    critical = bool(changes) and draw(st.integers(0, 9)) < 7
    if critical:
        # Around a transition, with DTSTART's time of day close to the transition's wall time, so that the
        # rule's own instances fall into the gap or the overlap.
        change = draw(st.sampled_from(changes))
        after = change + timedelta(minutes=draw(st.integers(-240, 240)))
    if freq == "SECONDLY":
        back = timedelta(hours=draw(st.integers(0, 3)))
    else:
        back = timedelta(days=window) * draw(st.floats(0, 1))
    start_instant = (after - back).replace(microsecond=0)
    if freq not in ("MINUTELY", "SECONDLY") and draw(st.booleans()):
        start_instant = start_instant.replace(second=0)
    dtstart = start_instant.astimezone(tz).replace(tzinfo=None)
    if critical and freq in ("YEARLY", "MONTHLY", "WEEKLY", "DAILY"):
        # The wall time the clock leaves at the change (02:00 for a 02:00 -> 03:00 gap, 03:00 for a 03:00 ->
        # 02:00 overlap), then a little before or after: inside the gap or the overlap, or just outside.
        edge = (change - timedelta(seconds=1)).astimezone(tz).replace(tzinfo=None) + timedelta(seconds=1)
        minutes = draw(st.sampled_from([-90, -60, -45, -30, -1, 0, 1, 15, 29, 30, 45, 59, 60, 61, 90, 120]))
        dtstart = datetime.combine(dtstart.date(), (edge + timedelta(minutes=minutes)).time().replace(microsecond=0))
    explicit = draw(st.booleans())
    if not explicit:
        # The anchor is an instant: its wall time is one the clock shows.
        dtstart = dtstart.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    rule = RefRule(freq=freq, dtstart=dtstart, explicit_dtstart=explicit)
    rule.interval = draw(st.sampled_from([1, 1, 2, 3, 4] + ([7, 90] if freq in ("HOURLY", "MINUTELY") else [])))
    rule.wkst = draw(st.integers(0, 6))
    if draw(st.integers(0, 3)) == 0:
        rule.bymonth = draw(small_sets(list(range(1, 13)), 4))
    if freq != "WEEKLY" and draw(st.integers(0, 3)) == 0:
        rule.bymonthday = draw(small_sets([*range(1, 32), *range(-31, 0)]))
    if freq in ("YEARLY", "HOURLY", "MINUTELY", "SECONDLY") and draw(st.integers(0, 6)) == 0:
        rule.byyearday = draw(small_sets([*range(1, 367), *range(-366, 0)], 6))
    if freq == "YEARLY" and draw(st.integers(0, 3)) == 0:
        rule.byweekno = draw(small_sets([*range(1, 54), *range(-53, 0)], 4))
    if draw(st.booleans()):
        plain = draw(st.lists(st.integers(0, 6), max_size=3, unique=True))
        byday = [(weekday, 0) for weekday in plain]
        if freq in ("MONTHLY", "YEARLY") and not rule.byweekno:
            ordinals = [*range(1, 6), *range(-5, 0)] + ([20, -20, 53] if not rule.bymonth else [])
            byday += draw(st.lists(st.tuples(st.integers(0, 6), st.sampled_from(ordinals)), max_size=2))
        rule.byday = sorted(set(byday))
    if draw(st.integers(0, 4 if critical else 1)) == 0 or freq == "SECONDLY":
        rule.byhour = draw(small_sets(list(range(24)), 2 if freq == "SECONDLY" else 3))
    if draw(st.integers(0, 4 if critical else 1)) == 0 or freq == "SECONDLY":
        rule.byminute = draw(small_sets(list(range(60))))
    if freq != "SECONDLY" and draw(st.integers(0, 3)) == 0:
        rule.bysecond = draw(small_sets(list(range(60)), 2))
    has_by = any((rule.bymonth, rule.bymonthday, rule.byyearday, rule.byweekno, rule.byday, rule.byhour,
                  rule.byminute, rule.bysecond))  # fmt: skip
    if has_by and draw(st.integers(0, 3)) == 0:
        rule.bysetpos = draw(small_sets([1, 2, 3, -1, -2, 5, -7], 2))
    ending = draw(st.integers(0, 5))
    if ending == 0:
        rule.count = draw(st.integers(1, 40))
    elif ending == 1:
        rule.until = (after + timedelta(days=window) * draw(st.floats(-0.5, 0.5))).replace(microsecond=0)
    last_day = (after + timedelta(days=window)).date()
    # With a TZID on DTSTART the rule runs on that zone's clock, whatever the schedule's own zone is.
    schedule_tz = draw(st.sampled_from(ZONES)) if explicit else tz
    return rule, tz, schedule_tz, after, last_day


def evaluator_text(rule: RefRule, tz: ZoneInfo) -> str:
    if not rule.explicit_dtstart:
        return rule.text()
    return f"DTSTART;TZID={tz.key}:{rule.dtstart:%Y%m%dT%H%M%S}\nRRULE:{rule.text()}"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=cases())
def test_next_matches_the_brute_force_reference(case: tuple[RefRule, ZoneInfo, ZoneInfo, datetime, date]) -> None:
    rule, tz, schedule_tz, after, last_day = case
    text = evaluator_text(rule, tz)
    try:
        validate_rrule(text)
    except ValueError:
        assume(False)  # provably empty combinations (BYMONTHDAY=31 with BYMONTH=2) are refused up front
    anchor = rule.dtstart.replace(tzinfo=tz).astimezone(UTC)
    expected, proven_until = reference_next(rule, tz, after, last_day)
    actual = rrule_next(text, schedule_tz, anchor, after)
    event(f"{rule.freq} {'found' if expected is not None else 'none in window'}")
    if expected is not None:
        assert actual == expected, (text, after)
    else:
        assert actual is None or actual > proven_until, (text, after, actual)
