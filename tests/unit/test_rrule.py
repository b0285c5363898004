"""RFC 5545 recurrence rules: parsing, DST semantics, skipping ahead, and the cost bounds."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import DAILY, HOURLY, MINUTELY, MONTHLY, SECONDLY, WEEKLY, YEARLY, rrule, weekdays
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shared.errors import EvaluationBudgetExceeded
from shared.timing.budget import Budget
from shared.timing.rrule import rrule_next, validate_rrule

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SYDNEY = ZoneInfo("Australia/Sydney")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
APIA = ZoneInfo("Pacific/Apia")
SANTIAGO = ZoneInfo("America/Santiago")
HAVANA = ZoneInfo("America/Havana")
CHATHAM = ZoneInfo("Pacific/Chatham")
CASABLANCA = ZoneInfo("Africa/Casablanca")
TOKYO = ZoneInfo("Asia/Tokyo")
UTC_ZONE = ZoneInfo("UTC")
TICK = timedelta(microseconds=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local(tz: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0, fold: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, fold=fold, tzinfo=tz).astimezone(UTC)


def chain(text: str, tz: ZoneInfo, anchor: datetime, after: datetime, count: int) -> list[datetime]:
    """Up to ``count`` occurrences after ``after``, each computed from the previous one."""
    found: list[datetime] = []
    current: datetime | None = after
    while current is not None and len(found) < count:
        current = rrule_next(text, tz, anchor, current)
        if current is not None:
            found.append(current)
    return found


def walls(instants: list[datetime], tz: ZoneInfo) -> list[str]:
    return [instant.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z") for instant in instants]


# --- syntax --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty recurrence rule"),
        ("   \n  ", "empty recurrence rule"),
        ("FREQ=FORTNIGHTLY", "unknown FREQ 'FORTNIGHTLY'"),
        ("BYHOUR=9", "needs a FREQ"),
        ("FREQ=DAILY;BYHOUR=25", "BYHOUR value 25 is out of range 0..23"),
        ("FREQ=DAILY;BYSECOND=61", "BYSECOND value 61 is out of range 0..60"),
        ("FREQ=MONTHLY;BYMONTHDAY=0", "BYMONTHDAY value 0 is out of range 1..31 or -31..-1"),
        ("FREQ=MONTHLY;BYMONTHDAY=32", "BYMONTHDAY value 32 is out of range"),
        ("FREQ=YEARLY;BYMONTH=13", "BYMONTH value 13 is out of range 1..12"),
        ("FREQ=DAILY;BYHOUR=nine", "BYHOUR value 'NINE' is not an integer"),
        ("FREQ=DAILY;BYHOUR", "rule part 'BYHOUR' must be NAME=VALUE"),
        ("FREQ=DAILY;BYHOUR=", "must be NAME=VALUE"),
        ("FREQ=DAILY;COLOR=RED", "unknown rule part 'COLOR'"),
        ("FREQ=DAILY;BYEASTER=0", "unknown rule part 'BYEASTER'"),
        ("FREQ=DAILY;FREQ=WEEKLY", "FREQ is given more than once"),
        ("FREQ=DAILY;COUNT=3;UNTIL=20260101T000000Z", "COUNT and UNTIL cannot be used together"),
        ("FREQ=DAILY;COUNT=0", "COUNT must be a positive integer of at most 18 digits, got '0'"),
        ("FREQ=DAILY;COUNT=1000000000000000000", "COUNT must be a positive integer of at most 18 digits"),
        ("FREQ=DAILY;COUNT=ten", "COUNT must be a positive integer of at most 18 digits, got 'TEN'"),
        ("FREQ=DAILY;INTERVAL=0", "INTERVAL must be a positive integer of at most 18 digits, got '0'"),
        ("FREQ=DAILY;INTERVAL=-1", "INTERVAL must be a positive integer of at most 18 digits, got '-1'"),
        ("FREQ=WEEKLY;WKST=XX", "WKST value 'XX' is not a weekday"),
        ("FREQ=WEEKLY;BYDAY=MON", "BYDAY value 'MON' must be a weekday"),
        ("FREQ=WEEKLY;BYDAY=MO,", "BYDAY value '' must be a weekday"),
        ("FREQ=MONTHLY;BYDAY=0MO", "BYDAY ordinal in '0MO' must be between 1 and 53"),
        ("FREQ=WEEKLY;BYDAY=2MO", "BYDAY ordinals like \\+2MO need FREQ=MONTHLY or YEARLY, not FREQ=WEEKLY"),
        ("FREQ=MONTHLY;BYDAY=6MO", "BYDAY \\+6MO never occurs"),
        ("FREQ=YEARLY;BYMONTH=3;BYDAY=-6FR,6MO", "BYDAY \\+6MO never occurs"),
        ("FREQ=YEARLY;BYWEEKNO=1;BYDAY=1MO", "BYDAY ordinals cannot be combined with BYWEEKNO"),
        ("FREQ=WEEKLY;BYMONTHDAY=1", "BYMONTHDAY is not allowed with FREQ=WEEKLY"),
        ("FREQ=MONTHLY;BYWEEKNO=1", "BYWEEKNO is only allowed with FREQ=YEARLY"),
        ("FREQ=DAILY;BYYEARDAY=1", "BYYEARDAY is not allowed with FREQ=DAILY"),
        ("FREQ=MONTHLY;BYSETPOS=1", "BYSETPOS needs another BYxxx part"),
        ("FREQ=YEARLY;BYMONTH=2,4;BYMONTHDAY=31", "BYMONTHDAY=31 never falls in BYMONTH=2,4"),
        ("FREQ=MONTHLY;BYMONTH=2;BYMONTHDAY=-31,-30", "BYMONTHDAY=-31,-30 never falls in BYMONTH=2"),
        ("FREQ=YEARLY;BYMONTH=1;BYYEARDAY=100", "BYYEARDAY=100 never falls in BYMONTH=1"),
        ("FREQ=HOURLY;BYMONTH=2;BYYEARDAY=-300,61", "BYYEARDAY=-300,61 never falls in BYMONTH=2"),
        ("FREQ=DAILY;UNTIL=2026-01-01", "UNTIL value '2026-01-01' must be YYYYMMDDTHHMMSS"),
        ("FREQ=DAILY;UNTIL=20261301T000000Z", "UNTIL value '20261301T000000Z' is not a valid date"),
        ("FREQ=DAILY;UNTIL=18991231T000000Z", "must be between the years 1900 and 2999"),
        ("RRULE:FREQ=DAILY\nEXRULE:FREQ=WEEKLY", "unsupported property line 'EXRULE:FREQ=WEEKLY'"),
        ("X-WR-TIMEZONE:Europe/Berlin\nRRULE:FREQ=DAILY", "unsupported property line 'X-WR-TIMEZONE"),
        ("DTSTART:20260101T090000Z", "expected exactly one RRULE line, got 0"),
        ("RRULE:FREQ=DAILY\nRRULE:FREQ=WEEKLY", "expected exactly one RRULE line, got 2"),
        ("RRULE:FREQ=DAILY\nFREQ=WEEKLY", "expected NAME:VALUE, got 'FREQ=WEEKLY'"),
        ("RRULE;X-NAME=1:FREQ=DAILY", "RRULE takes no parameters"),
        ("DTSTART:20260101T090000Z,20260102T090000Z\nRRULE:FREQ=DAILY", "DTSTART must be a single value"),
        ("DTSTART;TZID=Mars/Olympus_Mons:20260101T090000\nRRULE:FREQ=DAILY", "unknown time zone 'Mars/Olympus_Mons'"),
        ("DTSTART;TZID=Europe/Berlin:20260101T090000Z\nRRULE:FREQ=DAILY", "cannot be both UTC"),
        ("DTSTART;LANGUAGE=de:20260101T090000\nRRULE:FREQ=DAILY", "unsupported DTSTART parameter 'LANGUAGE=de'"),
        ("DTSTART;VALUE=DATE:20260101T090000\nRRULE:FREQ=DAILY", "does not match VALUE=DATE"),
        ("EXDATE;VALUE=PERIOD:20260101T090000Z/PT1H\nRRULE:FREQ=DAILY", "unsupported EXDATE parameter"),
        ("RDATE;VALUE=DATE:20260101\nRRULE:FREQ=DAILY", "RDATE values must be date-times"),
        ("RRULE:FREQ=DAILY\nEXDATE:20260101T0900", "EXDATE value '20260101T0900' must be"),
    ],
)
def test_syntax_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_rrule(text)
    with pytest.raises(ValueError, match=message):
        rrule_next(text, BERLIN, utc(2026, 1, 1), utc(2026, 1, 1))


@pytest.mark.parametrize(
    "text",
    [
        "FREQ=DAILY;BYHOUR=9",
        "RRULE:FREQ=DAILY;BYHOUR=9",
        "rrule:freq=daily;byhour=9",
        "FREQ=DAILY;BYHOUR=9;",
        "  RRULE:FREQ=DAILY;BYHOUR=9  ",
        "DTSTART;TZID=Europe/Berlin:20260101T090000\nRRULE:FREQ=DAILY",
        "DTSTART;TZID=Europe/Berlin:20260101T090000\r\nRRULE:FREQ=DAILY\r\n",
        "\n    DTSTART;TZID=Europe/Berlin:20260101T090000\n\n    RRULE:FREQ=DAILY\n",
        "dtstart;tzid=europe/berlin:20260101t090000\nrrule:freq=daily",
        'DTSTART;TZID="Europe/Berlin":20260101T090000\nRRULE:FREQ=DAILY',
        "DTSTART:20260101T080000Z\nRRULE:FREQ=DAILY",
        "DTSTART:20260101T090000\nRRULE:FREQ=DAILY",
    ],
)
def test_every_form_of_the_same_rule_gives_the_same_times(text: str) -> None:
    validate_rrule(text)
    assert chain(text, BERLIN, utc(2026, 1, 1), utc(2026, 1, 10), 3) == [
        utc(2026, 1, 10, 8),
        utc(2026, 1, 11, 8),
        utc(2026, 1, 12, 8),
    ]


def test_naive_instants_and_keyless_zones_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        rrule_next("FREQ=DAILY", BERLIN, datetime(2026, 1, 1), utc(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        rrule_next("FREQ=DAILY", BERLIN, utc(2026, 1, 1), datetime(2026, 1, 1))
    # The compiled-rule cache is keyed on the zone's name.
    with (resources.files("tzdata.zoneinfo") / "Europe" / "Berlin").open("rb") as data:
        keyless = ZoneInfo.from_file(data)
    with pytest.raises(ValueError, match="IANA key"):
        rrule_next("FREQ=DAILY", keyless, utc(2026, 1, 1), utc(2026, 1, 1))


# --- DTSTART, defaults, EXDATE, RDATE, COUNT, UNTIL ----------------------------------------------------


def test_the_anchor_is_dtstart_in_the_schedules_zone() -> None:
    anchor = utc(2026, 1, 5, 7, 17, 33)  # 08:17:33 in Berlin
    assert rrule_next("FREQ=DAILY", BERLIN, anchor, anchor) == utc(2026, 1, 6, 7, 17, 33)
    assert rrule_next("FREQ=DAILY", NEW_YORK, anchor, anchor) == utc(2026, 1, 6, 7, 17, 33)
    # Before the anchor the first occurrence is the anchor itself.
    assert rrule_next("FREQ=DAILY", BERLIN, anchor, utc(2025, 1, 1)) == anchor


@pytest.mark.parametrize(
    ("text", "first"),
    [
        # BYHOUR means minute 0 and second 0, not the anchor's 08:17:33.
        ("FREQ=DAILY;BYHOUR=9", utc(2026, 1, 5, 8)),
        ("FREQ=WEEKLY;BYDAY=FR;BYHOUR=9", utc(2026, 1, 9, 8)),
        ("FREQ=DAILY;BYHOUR=9;BYMINUTE=45", utc(2026, 1, 5, 8, 45)),
        # BYMINUTE means second 0; the hour is still the anchor's.
        ("FREQ=DAILY;BYMINUTE=45", utc(2026, 1, 5, 7, 45)),
        ("FREQ=HOURLY;BYMINUTE=5", utc(2026, 1, 5, 8, 5)),
        # Parts left open copy DTSTART, as RFC 5545 says.
        ("FREQ=DAILY", utc(2026, 1, 6, 7, 17, 33)),
        ("FREQ=HOURLY", utc(2026, 1, 5, 8, 17, 33)),
        ("FREQ=DAILY;BYHOUR=9;BYSECOND=15", utc(2026, 1, 5, 8, 0, 15)),
        # MINUTELY with BYHOUR fires every minute of that hour (only the second defaults to 0).
        ("FREQ=MINUTELY;INTERVAL=20;BYHOUR=9", utc(2026, 1, 5, 8, 17)),
    ],
)
def test_byhour_and_byminute_default_the_finer_parts_to_zero(text: str, first: datetime) -> None:
    anchor = utc(2026, 1, 5, 7, 17, 33)  # a Monday, 08:17:33 in Berlin
    assert rrule_next(text, BERLIN, anchor, anchor) == first


def test_minutely_with_byhour_covers_the_whole_hour() -> None:
    found = chain("FREQ=MINUTELY;INTERVAL=20;BYHOUR=9", BERLIN, utc(2026, 1, 5, 7, 17, 33), utc(2026, 1, 5), 4)
    assert walls(found, BERLIN) == [
        "2026-01-05 09:17:00 CET",
        "2026-01-05 09:37:00 CET",
        "2026-01-05 09:57:00 CET",
        "2026-01-06 09:17:00 CET",
    ]


@pytest.mark.parametrize(
    ("dtstart", "expected"),
    [
        ("DTSTART:20260105T080000Z", "2026-01-05 09:00:00 CET"),
        ("DTSTART:20260105T090000", "2026-01-05 09:00:00 CET"),
        ("DTSTART;TZID=Europe/Berlin:20260105T090000", "2026-01-05 09:00:00 CET"),
        ("DTSTART;VALUE=DATE:20260105", "2026-01-05 00:00:00 CET"),
        # Another zone's wall time is converted to the schedule's zone once, then the rule runs there.
        ("DTSTART;TZID=America/New_York:20260105T090000", "2026-01-05 15:00:00 CET"),
    ],
)
def test_dtstart_forms(dtstart: str, expected: str) -> None:
    first = rrule_next(f"{dtstart}\nRRULE:FREQ=DAILY;COUNT=400", BERLIN, utc(2000, 1, 1), utc(2025, 1, 1))
    assert first is not None and walls([first], BERLIN) == [expected]


def test_a_dtstart_in_another_zone_runs_on_that_zones_clock() -> None:
    text = "DTSTART;TZID=America/New_York:20260305T090000\nRRULE:FREQ=DAILY"
    # 09:00 in New York every day (RFC 5545: the recurrence follows DTSTART's zone), whatever the schedule's tz:
    # New York springs forward on March 8, Berlin only on March 29.
    found = chain(text, BERLIN, utc(2000, 1, 1), utc(2026, 3, 6), 4)
    assert walls(found, NEW_YORK) == [
        "2026-03-06 09:00:00 EST",
        "2026-03-07 09:00:00 EST",
        "2026-03-08 09:00:00 EDT",
        "2026-03-09 09:00:00 EDT",
    ]


def test_a_utc_dtstart_runs_on_utc() -> None:
    text = "DTSTART:20260325T080000Z\nRRULE:FREQ=DAILY;BYHOUR=8,20"
    found = chain(text, BERLIN, utc(2000, 1, 1), utc(2026, 3, 28, 12), 4)
    assert found == [utc(2026, 3, 28, 20), utc(2026, 3, 29, 8), utc(2026, 3, 29, 20), utc(2026, 3, 30, 8)]
    # A floating DTSTART (no Z, no TZID) is the schedule's own wall clock.
    floating = "DTSTART:20260325T080000\nRRULE:FREQ=DAILY"
    assert chain(floating, BERLIN, utc(2000, 1, 1), utc(2026, 3, 28, 12), 2) == [
        local(BERLIN, 2026, 3, 29, 8),
        local(BERLIN, 2026, 3, 30, 8),
    ]


def test_exdate_removes_occurrences_in_every_form() -> None:
    text = "\n".join(
        [
            "DTSTART;TZID=Europe/Berlin:20260105T090000",
            "RRULE:FREQ=DAILY",
            "EXDATE:20260106T080000Z",
            "EXDATE;TZID=Europe/Berlin:20260107T090000,20260108T090000",
            "EXDATE:20260110T090000",
            "EXDATE;VALUE=DATE:20260112",
        ]
    )
    found = chain(text, BERLIN, utc(2000, 1, 1), utc(2026, 1, 1), 5)
    assert [instant.astimezone(BERLIN).day for instant in found] == [5, 9, 11, 13, 14]


def test_exdate_and_rdate_after_skipping_ahead() -> None:
    text = "\n".join(
        [
            "DTSTART;TZID=Europe/Berlin:20100105T090000",
            "RRULE:FREQ=DAILY",
            "EXDATE;TZID=Europe/Berlin:20260106T090000",
            "RDATE;TZID=Europe/Berlin:20260106T120000",
        ]
    )
    found = chain(text, BERLIN, utc(2000, 1, 1), utc(2026, 1, 5, 12), 3)
    assert walls(found, BERLIN) == ["2026-01-06 12:00:00 CET", "2026-01-07 09:00:00 CET", "2026-01-08 09:00:00 CET"]


def test_rdate_adds_occurrences_even_past_the_rule_and_exdate_removes_them() -> None:
    text = "\n".join(
        [
            "DTSTART:20260105T090000Z",
            "RRULE:FREQ=DAILY;COUNT=2",
            "RDATE:20260105T120000Z,20260301T000000Z,20260401T000000Z",
            "EXDATE:20260301T000000Z",
        ]
    )
    found = chain(text, UTC_ZONE, utc(2000, 1, 1), utc(2026, 1, 1), 10)
    assert found == [utc(2026, 1, 5, 9), utc(2026, 1, 5, 12), utc(2026, 1, 6, 9), utc(2026, 4, 1)]


def test_count_exhausts() -> None:
    text = "FREQ=WEEKLY;BYDAY=MO,TH;COUNT=3"
    anchor = utc(2026, 1, 5, 9)
    assert chain(text, UTC_ZONE, anchor, utc(2026, 1, 1), 10) == [
        utc(2026, 1, 5, 9),
        utc(2026, 1, 8, 9),
        utc(2026, 1, 12, 9),
    ]
    assert rrule_next(text, UTC_ZONE, anchor, utc(2026, 1, 12, 9)) is None
    assert rrule_next(text, UTC_ZONE, anchor, utc(2030, 1, 1)) is None


@pytest.mark.parametrize(
    ("until", "last"),
    [
        ("20260108T090000Z", utc(2026, 1, 8, 9)),  # inclusive when it is an occurrence
        ("20260108T085959Z", utc(2026, 1, 7, 9)),
        ("20260108T100000", utc(2026, 1, 8, 9)),  # floating: 10:00 in the schedule's zone (09:00 UTC)
        ("20260108T095959", utc(2026, 1, 7, 9)),
        ("20260108", utc(2026, 1, 8, 9)),  # a date: through the end of that local day
    ],
)
def test_until_exhausts_inclusively(until: str, last: datetime) -> None:
    text = f"FREQ=DAILY;UNTIL={until}"
    found = chain(text, BERLIN, utc(2026, 1, 5, 9), utc(2026, 1, 1), 10)
    assert found[0] == utc(2026, 1, 5, 9)
    assert found[-1] == last
    assert rrule_next(text, BERLIN, utc(2026, 1, 5, 9), last) is None


def test_until_exhausts_after_skipping_ahead() -> None:
    text = "DTSTART:20100101T000000Z\nRRULE:FREQ=MINUTELY;INTERVAL=10;UNTIL=20260101T000000Z"
    assert rrule_next(text, UTC_ZONE, utc(2000, 1, 1), utc(2025, 12, 31, 23, 45)) == utc(2025, 12, 31, 23, 50)
    assert rrule_next(text, UTC_ZONE, utc(2000, 1, 1), utc(2025, 12, 31, 23, 59)) == utc(2026, 1, 1)
    assert rrule_next(text, UTC_ZONE, utc(2000, 1, 1), utc(2026, 1, 1)) is None


def test_wkst_is_rfc_5545s_and_does_not_follow_the_process_calendar() -> None:
    # The RFC 5545 §3.3.10 example: WKST changes which Sunday pairs with which Tuesday.
    base = "DTSTART:19970805T090000Z\nRRULE:FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU"
    monday = chain(base + ";WKST=MO", UTC_ZONE, utc(2000, 1, 1), utc(1997, 1, 1), 5)
    sunday = chain(base + ";WKST=SU", UTC_ZONE, utc(2000, 1, 1), utc(1997, 1, 1), 5)
    assert [instant.day for instant in monday] == [5, 10, 19, 24]
    assert [instant.day for instant in sunday] == [5, 17, 19, 31]
    assert chain(base, UTC_ZONE, utc(2000, 1, 1), utc(1997, 1, 1), 5) == monday


# --- calendar edge cases -------------------------------------------------------------------------------


def test_monthly_on_the_31st_skips_short_months() -> None:
    found = chain("FREQ=MONTHLY;BYMONTHDAY=31;BYHOUR=12", UTC_ZONE, utc(2026, 1, 1), utc(2026, 1, 1), 7)
    assert [(instant.month, instant.day) for instant in found] == [
        (1, 31),
        (3, 31),
        (5, 31),
        (7, 31),
        (8, 31),
        (10, 31),
        (12, 31),
    ]


def test_monthly_dtstart_on_the_31st_defaults_to_the_31st() -> None:
    text = "DTSTART:20260131T120000Z\nRRULE:FREQ=MONTHLY"
    found = chain(text, UTC_ZONE, utc(2000, 1, 1), utc(2030, 1, 1), 3)
    assert found == [utc(2030, 1, 31, 12), utc(2030, 3, 31, 12), utc(2030, 5, 31, 12)]


def test_last_weekday_of_the_month() -> None:
    text = "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;BYHOUR=18"
    found = chain(text, UTC_ZONE, utc(2026, 1, 1), utc(2026, 1, 1), 3)
    assert found == [utc(2026, 1, 30, 18), utc(2026, 2, 27, 18), utc(2026, 3, 31, 18)]


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (utc(2026, 1, 14, 8), ["Fri 16", "Mon 19", "Fri 23"]),  # Wednesday: Monday's first position is gone
        (utc(2026, 1, 18, 23), ["Mon 19", "Fri 23", "Mon 26"]),
    ],
)
def test_bysetpos_counts_the_whole_week_when_starting_mid_week(after: datetime, expected: list[str]) -> None:
    text = "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=1,-1;BYHOUR=9"
    found = chain(text, UTC_ZONE, utc(2026, 1, 5), after, 3)
    assert [instant.strftime("%a %d") for instant in found] == expected


def test_yearly_on_february_29_waits_for_leap_years() -> None:
    found = chain("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;BYHOUR=12", UTC_ZONE, utc(2026, 1, 1), utc(2026, 1, 1), 3)
    assert found == [utc(2028, 2, 29, 12), utc(2032, 2, 29, 12), utc(2036, 2, 29, 12)]
    # 2100 is not a leap year.
    assert chain("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29", UTC_ZONE, utc(2026, 1, 1), utc(2096, 3, 1), 1) == [
        utc(2104, 2, 29)
    ]
    # A DTSTART on February 29 repeats only on February 29.
    text = "DTSTART:20240229T120000Z\nRRULE:FREQ=YEARLY"
    assert rrule_next(text, UTC_ZONE, utc(2000, 1, 1), utc(2024, 2, 29, 12)) == utc(2028, 2, 29, 12)


def test_a_rule_that_never_fires_is_exhausted_at_once() -> None:
    # Tuesdays every 7 days from a Monday: dateutil alone would loop to the year 9999.
    assert rrule_next("FREQ=DAILY;INTERVAL=7;BYDAY=TU", UTC_ZONE, utc(2026, 1, 5), utc(2026, 1, 5)) is None
    # An HOURLY BYHOUR that INTERVAL never reaches from DTSTART (dateutil itself raises for this).
    assert rrule_next("FREQ=HOURLY;INTERVAL=2;BYHOUR=3", UTC_ZONE, utc(2026, 1, 5, 0), utc(2026, 1, 5)) is None
    assert rrule_next("FREQ=HOURLY;INTERVAL=2;BYHOUR=3", UTC_ZONE, utc(2026, 1, 5, 1), utc(2026, 1, 5)) == utc(
        2026, 1, 5, 3
    )


# --- daylight saving time ------------------------------------------------------------------------------

# (zone, spring-forward day, a wall time in its gap, where that lands, fall-back day, a wall time it repeats)
DST_CASES = [
    (BERLIN, date(2026, 3, 29), time(2, 30), time(3, 30), date(2026, 10, 25), time(2, 30)),
    (NEW_YORK, date(2026, 3, 8), time(2, 30), time(3, 30), date(2026, 11, 1), time(1, 30)),
    (SYDNEY, date(2026, 10, 4), time(2, 30), time(3, 30), date(2026, 4, 5), time(2, 30)),
    (LORD_HOWE, date(2026, 10, 4), time(2, 15), time(2, 45), date(2026, 4, 5), time(1, 45)),  # 30-minute shifts
    # Midnight transitions: 00:00 -> 01:00 in spring; Santiago repeats 23:00-24:00 the evening before.
    (SANTIAGO, date(2026, 9, 6), time(0, 30), time(1, 30), date(2026, 4, 4), time(23, 30)),
    (HAVANA, date(2026, 3, 8), time(0, 30), time(1, 30), date(2026, 11, 1), time(0, 30)),
    (CHATHAM, date(2026, 9, 27), time(3, 0), time(4, 0), date(2026, 4, 5), time(3, 0)),  # at 02:45, +12:45
    # Morocco's clock goes back for Ramadan and forward again after it.
    (CASABLANCA, date(2026, 3, 22), time(2, 30), time(3, 30), date(2026, 2, 15), time(2, 30)),
]
DST_IDS = ["Berlin", "New_York", "Sydney", "Lord_Howe", "Santiago", "Havana", "Chatham", "Casablanca"]


def offset(instant: datetime, tz: ZoneInfo) -> timedelta:
    result = instant.astimezone(tz).utcoffset()
    assert result is not None
    return result


def daily_at(moment: time) -> str:
    return f"FREQ=DAILY;BYHOUR={moment.hour};BYMINUTE={moment.minute}"


def around(tz: ZoneInfo, day: date, text: str) -> list[datetime]:
    """The occurrences on the day before ``day``, on ``day`` and on the day after."""
    before = datetime.combine(day - timedelta(days=1), time(0), tz).astimezone(UTC)
    return chain(text, tz, before, before, 3)


@pytest.mark.parametrize(("tz", "day", "gap_time", "landing", "_fall", "_repeated"), DST_CASES, ids=DST_IDS)
def test_a_time_in_the_spring_forward_gap_moves_forward_by_the_gap(
    tz: ZoneInfo, day: date, gap_time: time, landing: time, _fall: date, _repeated: time
) -> None:
    found = [instant.astimezone(tz) for instant in around(tz, day, daily_at(gap_time))]
    assert [(moment.date(), moment.time()) for moment in found] == [
        (day - timedelta(days=1), gap_time),
        (day, landing),
        (day + timedelta(days=1), gap_time),
    ]


@pytest.mark.parametrize(("tz", "_spring", "_gap", "_landing", "day", "repeated"), DST_CASES, ids=DST_IDS)
def test_a_time_repeated_by_the_fall_back_fires_once_on_its_first_occurrence(
    tz: ZoneInfo, _spring: date, _gap: time, _landing: time, day: date, repeated: time
) -> None:
    first, second = (datetime.combine(day, repeated, tz).replace(fold=fold).astimezone(UTC) for fold in (0, 1))
    assert first < second  # the wall time really happens twice
    found = around(tz, day, daily_at(repeated))
    assert found[1] == first
    assert found[2].astimezone(tz).date() == day + timedelta(days=1)


@pytest.mark.parametrize(("tz", "spring", "_gap", "_landing", "fall", "_repeated"), DST_CASES, ids=DST_IDS)
def test_nine_oclock_stays_nine_oclock_local_across_both_changes(
    tz: ZoneInfo, spring: date, _gap: time, _landing: time, fall: date, _repeated: time
) -> None:
    for day in (spring, fall):
        found = around(tz, day, "FREQ=DAILY;BYHOUR=9")
        assert [instant.astimezone(tz).time() for instant in found] == [time(9)] * 3
        # The UTC instants move by exactly the change of offset.
        moved = (found[2] - found[0]) - timedelta(days=2)
        assert moved == offset(found[0], tz) - offset(found[2], tz) != timedelta(0)


def test_a_dense_rule_through_the_gap_never_repeats_or_goes_back() -> None:
    # 02:00 and 02:30 do not exist: they become 03:00 and 03:30, which the rule also produces itself.
    found = chain("FREQ=MINUTELY;INTERVAL=30", BERLIN, utc(2026, 3, 28), utc(2026, 3, 28, 23, 45), 6)
    assert walls(found, BERLIN) == [
        "2026-03-29 01:00:00 CET",
        "2026-03-29 01:30:00 CET",
        "2026-03-29 03:00:00 CEST",
        "2026-03-29 03:30:00 CEST",
        "2026-03-29 04:00:00 CEST",
        "2026-03-29 04:30:00 CEST",
    ]


def test_a_time_pushed_out_of_the_gap_is_found_from_just_after_the_jump() -> None:
    # 02:45 fires at 03:45 CEST; asking at 03:10 CEST must not skip to the next day.
    text = "FREQ=DAILY;BYHOUR=2;BYMINUTE=45"
    assert rrule_next(text, BERLIN, utc(2026, 1, 1), local(BERLIN, 2026, 3, 29, 3, 10)) == local(
        BERLIN, 2026, 3, 29, 3, 45
    )
    assert rrule_next(text, BERLIN, utc(2026, 1, 1), local(BERLIN, 2026, 3, 29, 3, 45)) == local(
        BERLIN, 2026, 3, 30, 2, 45
    )


def test_a_skipped_day_fires_once_at_the_same_instant_as_the_next() -> None:
    # Samoa skipped 2011-12-30 entirely (UTC-10 to UTC+14).
    found = chain("FREQ=DAILY;BYHOUR=9", APIA, utc(2011, 12, 1), utc(2011, 12, 28), 4)
    assert walls(found, APIA) == [
        "2011-12-28 09:00:00 -10",
        "2011-12-29 09:00:00 -10",
        "2011-12-31 09:00:00 +14",
        "2012-01-01 09:00:00 +14",
    ]
    assert rrule_next("FREQ=DAILY;BYHOUR=9", APIA, utc(2011, 12, 1), utc(2011, 12, 30, 12)) == found[2]


# --- skipping ahead must not change the answer ---------------------------------------------------------


def brute_force_next(rule: rrule, tz: ZoneInfo, after: datetime) -> datetime | None:
    """The smallest instant after ``after`` among a plain dateutil rule's wall times, iterated from DTSTART.

    A later wall time maps to an earlier instant only when the earlier one sat in a gap and was pushed
    forward by its length, so the search goes on that far past the best wall time found.
    """
    local_after = after.astimezone(tz).replace(tzinfo=None)
    best: datetime | None = None
    best_wall = reach = None
    try:
        for wall in rule.xafter(local_after - timedelta(days=2)):
            instant = wall.replace(tzinfo=tz).astimezone(UTC)
            if instant > after and (best is None or instant < best):
                best, best_wall, reach = instant, wall, offset_swing(tz, instant)
            if best_wall is not None and reach is not None and wall > best_wall + reach:
                break
    except ValueError:  # dateutil gives up on BYxxx values INTERVAL never reaches
        pass
    return best


def offset_swing(tz: ZoneInfo, instant: datetime) -> timedelta:
    """How far the zone's UTC offset moves within a day either side of ``instant``."""
    offsets = [offset(instant + timedelta(hours=hours), tz) for hours in range(-26, 27)]
    return max(offsets) - min(offsets)


# (text without DTSTART, the equivalent plain dateutil arguments, zone, DTSTART wall time)
SKIP_AHEAD_CASES: list[tuple[str, dict[str, Any], ZoneInfo, datetime]] = [
    ("FREQ=WEEKLY;INTERVAL=3", {"freq": WEEKLY, "interval": 3}, BERLIN, datetime(2012, 3, 17, 8, 17, 33)),
    (
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,SU;WKST=SU",
        {"freq": WEEKLY, "interval": 2, "byweekday": (1, 6), "wkst": 6},
        NEW_YORK,
        datetime(2013, 6, 5, 23, 59, 59),
    ),
    (
        "FREQ=DAILY;INTERVAL=5;BYHOUR=2;BYMINUTE=30",
        {"freq": DAILY, "interval": 5, "byhour": 2, "byminute": 30, "bysecond": 0},
        BERLIN,
        datetime(2011, 1, 1, 7, 0, 1),
    ),
    (
        "FREQ=DAILY;BYDAY=MO,WE;BYMONTHDAY=1,2,3,4,5,6,7",
        {"freq": DAILY, "byweekday": (0, 2), "bymonthday": (1, 2, 3, 4, 5, 6, 7)},
        SYDNEY,
        datetime(2014, 5, 5, 2, 30),
    ),
    (
        "FREQ=HOURLY;INTERVAL=7;BYMINUTE=15",
        {"freq": HOURLY, "interval": 7, "byminute": 15, "bysecond": 0},
        BERLIN,
        datetime(2021, 2, 3, 4, 5, 6),
    ),
    (
        "FREQ=HOURLY;INTERVAL=6;BYHOUR=2,8,14,20;BYDAY=SA,SU",
        {"freq": HOURLY, "interval": 6, "byhour": (2, 8, 14, 20), "byweekday": (5, 6), "byminute": 0, "bysecond": 0},
        NEW_YORK,
        datetime(2020, 11, 20, 8, 41, 0),
    ),
    ("FREQ=MINUTELY;INTERVAL=45", {"freq": MINUTELY, "interval": 45}, LORD_HOWE, datetime(2025, 3, 1, 0, 7, 9)),
    (
        "FREQ=MINUTELY;INTERVAL=20;BYHOUR=1,2,3",
        {"freq": MINUTELY, "interval": 20, "byhour": (1, 2, 3), "bysecond": 0},
        BERLIN,
        datetime(2026, 2, 20, 5, 41, 0),
    ),
    (
        "FREQ=SECONDLY;INTERVAL=7;BYSECOND=0,30",
        {"freq": SECONDLY, "interval": 7, "bysecond": (0, 30)},
        BERLIN,
        datetime(2026, 3, 28, 22, 0, 4),
    ),
    (
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE,FR;BYSETPOS=2;BYHOUR=2;BYMINUTE=30",
        {
            "freq": WEEKLY,
            "interval": 2,
            "byweekday": (0, 2, 4),
            "bysetpos": 2,
            "byhour": 2,
            "byminute": 30,
            "bysecond": 0,
        },
        BERLIN,
        datetime(2016, 2, 1, 1, 0),
    ),
    ("FREQ=MONTHLY", {"freq": MONTHLY}, BERLIN, datetime(2004, 1, 31, 2, 30)),
    (
        "FREQ=MONTHLY;INTERVAL=5;BYDAY=-1FR",
        {"freq": MONTHLY, "interval": 5, "byweekday": weekdays[4](-1)},
        NEW_YORK,
        datetime(2009, 7, 1, 1, 30),
    ),
    ("FREQ=YEARLY;INTERVAL=2", {"freq": YEARLY, "interval": 2}, BERLIN, datetime(1996, 2, 29, 2, 30)),
    (
        "FREQ=YEARLY;BYWEEKNO=13;BYDAY=SU",
        {"freq": YEARLY, "byweekno": 13, "byweekday": 6},
        BERLIN,
        datetime(2001, 1, 1, 2, 30),
    ),
    (
        "FREQ=YEARLY;INTERVAL=3;BYMONTH=3,10;BYDAY=-1SU;BYHOUR=2;BYMINUTE=30",
        {
            "freq": YEARLY,
            "interval": 3,
            "bymonth": (3, 10),
            "byweekday": weekdays[6](-1),
            "byhour": 2,
            "byminute": 30,
            "bysecond": 0,
        },
        BERLIN,
        datetime(2000, 6, 6, 6, 6, 6),
    ),
]

# Afters around DST changes and year ends.
AFTERS = [
    utc(2026, 3, 8, 6, 59, 59), utc(2026, 3, 29, 0, 15), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 10),
    utc(2026, 4, 4, 15, 0), utc(2026, 10, 3, 15, 45), utc(2026, 10, 25, 0, 45), utc(2026, 11, 1, 5, 30),
    utc(2026, 12, 31, 23, 59, 59),
]  # fmt: skip


# How far after DTSTART the brute force can still be asked, per frequency, and stay fast.
BRUTE_FORCE_REACH = {
    YEARLY: timedelta(days=100 * 366), MONTHLY: timedelta(days=100 * 366), WEEKLY: timedelta(days=50 * 366),
    DAILY: timedelta(days=20 * 366), HOURLY: timedelta(days=6 * 366), MINUTELY: timedelta(days=400),
    SECONDLY: timedelta(days=1),
}  # fmt: skip


@pytest.mark.parametrize(("text", "plain", "tz", "dtstart"), SKIP_AHEAD_CASES)
def test_skipping_ahead_matches_iterating_from_dtstart(
    text: str, plain: dict[str, Any], tz: ZoneInfo, dtstart: datetime
) -> None:
    anchor = dtstart.replace(tzinfo=tz).astimezone(UTC)
    oracle = rrule(dtstart=dtstart, **plain)
    afters = [after for after in AFTERS if after - anchor <= BRUTE_FORCE_REACH[plain["freq"]]]
    assert afters
    for after in afters:
        assert rrule_next(text, tz, anchor, after) == brute_force_next(oracle, tz, after), after


def test_skipping_ahead_keeps_exdates() -> None:
    text = "\n".join(
        [
            "DTSTART;TZID=Europe/Berlin:20150101T023000",
            "RRULE:FREQ=DAILY",
            "EXDATE;TZID=Europe/Berlin:20260329T023000,20260330T023000",
        ]
    )
    assert rrule_next(text, BERLIN, utc(2000, 1, 1), utc(2026, 3, 28, 12)) == local(BERLIN, 2026, 3, 31, 2, 30)


def test_count_rules_iterate_from_dtstart() -> None:
    text = "DTSTART;TZID=Europe/Berlin:20260101T000000\nRRULE:FREQ=HOURLY;INTERVAL=5;COUNT=1000"
    oracle = rrule(HOURLY, dtstart=datetime(2026, 1, 1), interval=5, count=1000)
    for after in [*AFTERS[:6], utc(2026, 7, 27, 12)]:
        assert rrule_next(text, BERLIN, utc(2000, 1, 1), after) == brute_force_next(oracle, BERLIN, after), after


# --- cost -----------------------------------------------------------------------------------------------


def counted(text: str, tz: ZoneInfo, anchor: datetime, after: datetime) -> tuple[datetime | None, int]:
    """The answer and the work it took, in budget ticks (one per period or candidate the evaluator looks at): a
    cost that does not depend on how busy the machine is."""
    budget = Budget(lambda: 0.0, math.inf)
    result = rrule_next(text, tz, anchor, after, budget=budget)
    return result, budget.ticks


def test_a_dense_count_rule_reaches_its_last_occurrence() -> None:
    text = "DTSTART:20260101T000000Z\nRRULE:FREQ=SECONDLY;COUNT=200000"
    last = utc(2026, 1, 1) + timedelta(seconds=199_999)
    assert rrule_next(text, UTC_ZONE, utc(2000, 1, 1), last - timedelta(seconds=1)) == last
    assert rrule_next(text, UTC_ZONE, utc(2000, 1, 1), last) is None


def test_a_minutely_rule_from_years_back_answers_quickly() -> None:
    text = "DTSTART:20000101T000000Z\nRRULE:FREQ=MINUTELY;INTERVAL=7"
    result, work = counted(text, UTC_ZONE, utc(2000, 1, 1), utc(2058, 7, 8, 9, 10, 11))
    assert result is not None and timedelta(0) < result - utc(2058, 7, 8, 9, 10, 11) <= timedelta(minutes=7)
    assert work <= 100  # jumps to the period of `after`: no walk through 58 years of minutes


# --- class 5: far away is not never; a long COUNT fires to its last occurrence -----------------------------


def test_a_long_daily_count_is_found_years_later_and_ends_on_its_last_occurrence() -> None:
    text = "DTSTART;TZID=Europe/Berlin:20260101T090000\nRRULE:FREQ=DAILY;INTERVAL=3;COUNT=1000"
    last = local(BERLIN, 2026, 1, 1, 9) + timedelta(days=3 * 999)  # 2034-03-17, a CET date
    assert rrule_next(text, BERLIN, utc(2000, 1, 1), utc(2032, 6, 1)) == local(BERLIN, 2032, 6, 1, 9)
    assert rrule_next(text, BERLIN, utc(2000, 1, 1), last - TICK) == last
    assert rrule_next(text, BERLIN, utc(2000, 1, 1), last) is None


def test_a_minutely_count_runs_for_years() -> None:
    text = "DTSTART:20260101T000000Z\nRRULE:FREQ=MINUTELY;INTERVAL=997;COUNT=1000"
    last = utc(2026, 1, 1) + timedelta(minutes=997 * 999)
    assert rrule_next(text, UTC_ZONE, utc(2000, 1, 1), utc(2027, 6, 1)) is not None
    assert rrule_next(text, UTC_ZONE, utc(2000, 1, 1), last - TICK) == last
    assert rrule_next(text, UTC_ZONE, utc(2000, 1, 1), last) is None


@pytest.mark.parametrize(
    "text",
    [
        "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO;BYHOUR=9",
        "FREQ=MONTHLY;BYMONTHDAY=29;BYMONTH=2;BYDAY=MO;BYHOUR=9",
        "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO;BYHOUR=9",
        "FREQ=HOURLY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO;BYHOUR=9",
        "FREQ=MINUTELY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO;BYHOUR=9;BYMINUTE=0",
        "FREQ=YEARLY;BYYEARDAY=60;BYMONTHDAY=29;BYDAY=MO;BYHOUR=9",
    ],
)
def test_a_leap_day_monday_is_found_in_2044(text: str) -> None:
    assert rrule_next(text, UTC_ZONE, utc(2026, 1, 1), utc(2026, 1, 1)) == utc(2044, 2, 29, 9)
    assert rrule_next(text, UTC_ZONE, utc(2026, 1, 1), utc(2044, 2, 29, 9)) == utc(2072, 2, 29, 9)


def test_walking_a_long_count_to_its_end_costs_the_same_per_step() -> None:
    """COUNT is counted from DTSTART without re-expanding from there on every call."""
    text = "DTSTART:20200101T090000Z\nRRULE:FREQ=DAILY;BYDAY=MO,WE,FR;COUNT=6000"
    found: list[datetime] = []
    works: list[int] = []
    current: datetime | None = utc(2019, 1, 1)
    while current is not None:
        current, work = counted(text, UTC_ZONE, utc(2000, 1, 1), current)
        works.append(work)
        if current is not None:
            found.append(current)
    assert len(found) == 6000 and found[0] == utc(2020, 1, 1, 9)
    early, late = sorted(works[100:600])[250], sorted(works[-600:-100])[250]
    assert late <= 2 * early + 4  # medians; counting from DTSTART each time would make the late ones far costlier


def test_a_cold_question_near_the_end_of_a_long_count_is_bounded() -> None:
    text = "DTSTART:20000101T000000Z\nRRULE:FREQ=HOURLY;COUNT=500000"
    last = utc(2000, 1, 1) + timedelta(hours=499_999)
    result, work = counted(text, UTC_ZONE, utc(2000, 1, 1), last - TICK)
    assert result == last
    assert work <= 50_000  # ~21,000 days counted a day at a time, not 500,000 hours


# --- class 6: no limit refuses a valid rule --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "first_three"),
    [
        ("FREQ=HOURLY;BYMINUTE=0,30;BYSETPOS=1", ["01-05 10:00:00", "01-05 11:00:00", "01-05 12:00:00"]),
        ("FREQ=HOURLY;BYMINUTE=0,30;BYSETPOS=-1", ["01-05 09:30:00", "01-05 10:30:00", "01-05 11:30:00"]),
        ("FREQ=MINUTELY;BYSECOND=0,20,40;BYSETPOS=2", ["01-05 09:18:20", "01-05 09:19:20", "01-05 09:20:20"]),
        ("FREQ=DAILY;COUNT=1500;BYHOUR=9", ["01-06 09:00:00", "01-07 09:00:00", "01-08 09:00:00"]),
        ("FREQ=DAILY;INTERVAL=1500;BYHOUR=9", ["02-13 09:00:00", "03-24 09:00:00", "05-02 09:00:00"]),
        ("FREQ=DAILY;BYHOUR=10;BYMINUTE=0;BYSECOND=59,60", ["01-05 10:00:59", "01-06 10:00:59", "01-07 10:00:59"]),
        ("FREQ=SECONDLY;BYHOUR=10;BYMINUTE=0;BYSECOND=0,1", ["01-05 10:00:00", "01-05 10:00:01", "01-06 10:00:00"]),
        ("FREQ=MINUTELY;INTERVAL=7;BYHOUR=10", ["01-05 10:06:00", "01-05 10:13:00", "01-05 10:20:00"]),
        (
            "FREQ=DAILY;BYHOUR=10;BYMINUTE="
            + ",".join(map(str, range(60)))
            + ";BYSECOND="
            + ",".join(map(str, range(60))),
            ["01-05 10:00:00", "01-05 10:00:01", "01-05 10:00:02"],
        ),
    ],
)
def test_rules_that_used_to_be_refused_for_cost_now_evaluate(text: str, first_three: list[str]) -> None:
    validate_rrule(text)
    anchor = utc(2026, 1, 5, 9, 17, 33)  # a Monday
    found = chain(text, UTC_ZONE, anchor, anchor, 3)
    assert [instant.strftime("%m-%d %H:%M:%S") for instant in found] == first_three


@pytest.mark.parametrize(
    ("text", "anchor"),
    [
        ("FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR,SA,SU;BYSETPOS=40", utc(2026, 1, 5)),
        ("FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA,SU;BYSETPOS=8", utc(2026, 1, 5)),
        ("FREQ=DAILY;BYHOUR=1,2;BYSETPOS=3", utc(2026, 1, 5)),
        ("FREQ=SECONDLY;BYSECOND=5;BYSETPOS=2", utc(2026, 1, 5)),
        ("FREQ=DAILY;INTERVAL=7;BYDAY=TU", utc(2026, 1, 5)),  # every 7 days from a Monday
        ("FREQ=WEEKLY;INTERVAL=2;BYMONTH=2;BYDAY=MO;BYHOUR=9", utc(2026, 1, 5)),  # matches, from 2026-02-02
        ("FREQ=HOURLY;INTERVAL=2;BYHOUR=3", utc(2026, 1, 5, 0)),  # even hours only
        ("FREQ=MINUTELY;INTERVAL=120;BYHOUR=3", utc(2026, 1, 5, 0)),
        ("FREQ=YEARLY;BYWEEKNO=1;BYMONTH=6", utc(2026, 1, 5)),
        ("FREQ=YEARLY;BYMONTHDAY=31;BYYEARDAY=32", utc(2026, 1, 5)),  # January 31 is day 31, never 32
        ("FREQ=HOURLY;INTERVAL=168;BYDAY=TU", utc(2026, 1, 5)),  # every 168 hours from a Monday
        ("FREQ=DAILY;BYSECOND=60", utc(2026, 1, 5)),  # a leap second: valid, but no clock shows one
        ("FREQ=MINUTELY;BYSECOND=60", utc(2026, 1, 5)),
        ("FREQ=SECONDLY;BYSECOND=60", utc(2026, 1, 5)),
    ],
)
def test_only_provably_empty_rules_never_fire(text: str, anchor: datetime) -> None:
    validate_rrule(text)
    result, work = counted(text, UTC_ZONE, anchor, anchor)
    if "BYMONTH=2;BYDAY=MO" in text:
        assert result == utc(2026, 2, 2, 9)
        return
    assert result is None
    assert work <= 100_000  # a proof over one 400-year cycle at most


# --- the CPU budget -----------------------------------------------------------------------------------------


class SteppingClock:
    """A clock that advances one millisecond per reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


@pytest.mark.parametrize(
    "text",
    [
        "DTSTART:19000101T000000Z\nRRULE:FREQ=SECONDLY;COUNT=999999999999",
        "FREQ=DAILY;INTERVAL=7;BYDAY=TU",
        "FREQ=HOURLY;INTERVAL=168;BYDAY=TU",
    ],
)
def test_the_budget_cuts_a_hostile_search_off(text: str) -> None:
    budget = Budget(SteppingClock(), 0.05)
    with pytest.raises(EvaluationBudgetExceeded):
        rrule_next(text, UTC_ZONE, utc(2026, 1, 5), utc(2026, 6, 1), budget=budget)


def test_an_unlimited_budget_changes_nothing() -> None:
    text = "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9"
    assert rrule_next(text, BERLIN, utc(2026, 1, 5), utc(2026, 6, 1), budget=Budget.unlimited()) == rrule_next(
        text, BERLIN, utc(2026, 1, 5), utc(2026, 6, 1)
    )
    generous = Budget(SteppingClock(), 10.0)
    assert rrule_next(text, BERLIN, utc(2026, 1, 5), utc(2026, 6, 1), budget=generous) == utc(2026, 6, 1, 7)


# --- properties -----------------------------------------------------------------------------------------

ZONES = [BERLIN, NEW_YORK, SYDNEY, LORD_HOWE, APIA, ZoneInfo("Asia/Kolkata"), ZoneInfo("America/Santiago"), UTC_ZONE]
FREQ_NAMES = ["YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY", "SECONDLY"]
DAY_CODES = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]
instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2060, 12, 31), timezones=st.just(UTC))


@cache
def transitions(tz: ZoneInfo, year: int) -> list[datetime]:
    """The instants in ``year`` at which ``tz`` changes its UTC offset, to within a second."""
    found = []
    day = datetime(year, 1, 1, tzinfo=UTC)
    while day.year == year:
        low, high = day, day + timedelta(days=1)
        if offset(low, tz) != offset(high, tz):
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                low, high = (middle, high) if offset(middle, tz) == offset(low, tz) else (low, middle)
            found.append(high)
        day += timedelta(days=1)
    return found


@st.composite
def zones_and_instants(draw: st.DrawFn) -> tuple[ZoneInfo, datetime]:
    """A zone and an instant, half of the time within six hours of one of the zone's offset changes."""
    tz, instant = draw(st.sampled_from(ZONES)), draw(instants)
    changes = transitions(tz, instant.year)
    near_a_change: bool = draw(st.booleans())
    if changes and near_a_change:
        nudge = timedelta(seconds=draw(st.integers(-6 * 3600, 6 * 3600)), microseconds=draw(st.sampled_from([0, 1])))
        instant = draw(st.sampled_from(changes)) + nudge
    return tz, instant


@st.composite
def rules(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A valid rule and the equivalent plain dateutil arguments (with this module's BYHOUR defaults)."""
    freq_name = draw(st.sampled_from(FREQ_NAMES))
    freq = FREQ_NAMES.index(freq_name)
    interval = draw(st.integers(1, 5))
    parts = [f"FREQ={freq_name}", f"INTERVAL={interval}"]
    plain: dict[str, Any] = {"freq": freq, "interval": interval}
    hours = draw(st.none() | st.sets(st.integers(0, 23), min_size=1, max_size=3))
    minutes = draw(st.none() | st.sets(st.integers(0, 59), min_size=1, max_size=3))
    if freq == SECONDLY:
        hours = minutes = None
    days = draw(st.none() | st.sets(st.sampled_from(DAY_CODES), min_size=1, max_size=3))
    month_days = None if freq == WEEKLY else draw(st.none() | st.sets(st.integers(1, 31), min_size=1, max_size=3))
    for name, values, key in (("BYHOUR", hours, "byhour"), ("BYMINUTE", minutes, "byminute")):
        if values:
            parts.append(f"{name}={','.join(map(str, sorted(values)))}")
            plain[key] = tuple(sorted(values))
    if days:
        parts.append(f"BYDAY={','.join(sorted(days))}")
        plain["byweekday"] = tuple(DAY_CODES.index(day) for day in days)
    if month_days:
        parts.append(f"BYMONTHDAY={','.join(map(str, sorted(month_days)))}")
        plain["bymonthday"] = tuple(sorted(month_days))
    if freq < MINUTELY and hours and not minutes:
        plain["byminute"] = 0
    if freq < SECONDLY and (hours or minutes):
        plain["bysecond"] = 0
    return ";".join(parts), plain


PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(rule=rules(), where=zones_and_instants(), anchor=instants)
def test_chains_increase_strictly_and_each_step_is_reproducible(
    rule: tuple[str, dict[str, Any]], where: tuple[ZoneInfo, datetime], anchor: datetime
) -> None:
    (text, _), (tz, after) = rule, where
    validate_rrule(text)
    found = chain(text, tz, anchor, after, 20)
    assert all(instant.tzinfo is UTC for instant in found)
    assert all(earlier < later for earlier, later in zip([after, *found], found, strict=False))
    for instant in found:
        assert rrule_next(text, tz, anchor, instant - TICK) == instant
    assert rrule_next(text, tz, anchor, after) == (found[0] if found else None)


# How far back DTSTART may be for the brute force to stay fast in a property test, per frequency.
PROPERTY_REACH = {
    YEARLY: timedelta(days=20 * 366), MONTHLY: timedelta(days=10 * 366), WEEKLY: timedelta(days=4 * 366),
    DAILY: timedelta(days=2 * 366), HOURLY: timedelta(days=60), MINUTELY: timedelta(days=2),
    SECONDLY: timedelta(hours=1),
}  # fmt: skip


@PROPERTY_SETTINGS
@given(rule=rules(), where=zones_and_instants(), back=st.floats(-0.1, 1.0))
def test_next_matches_brute_force(
    rule: tuple[str, dict[str, Any]], where: tuple[ZoneInfo, datetime], back: float
) -> None:
    (text, plain), (tz, after) = rule, where
    anchor = (after - back * PROPERTY_REACH[plain["freq"]]).replace(microsecond=0)
    try:
        oracle = rrule(dtstart=anchor.astimezone(tz).replace(tzinfo=None), **plain)
    except ValueError:
        oracle = None  # dateutil refuses BYxxx values INTERVAL never reaches from DTSTART
    expected = None if oracle is None else brute_force_next(oracle, tz, after)
    assume(expected is None or expected - after < timedelta(days=366))  # within every frequency's horizon
    assert rrule_next(text, tz, anchor, after) == expected


# --- the classes, one test each (the conformance and property suites cover them more widely) ------


@pytest.mark.parametrize("written", ["2026-03-29T03:01:00+02:00", "2026-03-29T01:01:00Z", "2026-03-29T06:01:00+05:00"])
def test_class_1_an_instant_is_an_instant_whatever_its_offset(written: str) -> None:
    text = "DTSTART;TZID=Europe/Berlin:20260309T023000\nRRULE:FREQ=DAILY"
    after = datetime.fromisoformat(written)
    # 02:30 does not exist on 2026-03-29: it is read with CET's offset, i.e. 03:30 CEST = 01:30Z (§3.3.5).
    assert rrule_next(text, BERLIN, utc(2000, 1, 1), after) == utc(2026, 3, 29, 1, 30)


def test_class_2_weekly_bysetpos_counts_dtstarts_whole_week() -> None:
    text = "DTSTART;TZID=Asia/Tokyo:20260311T203000\nRRULE:FREQ=WEEKLY;BYDAY=MO,WE,FR;BYSETPOS=2"
    found = chain(text, TOKYO, utc(2000, 1, 1), utc(2026, 3, 11, 9, 30), 3)
    # The week of Monday 03-09 holds MO 9, WE 11, FR 13: the second is Wednesday, which is DTSTART.
    assert found == [utc(2026, 3, 11, 11, 30), utc(2026, 3, 18, 11, 30), utc(2026, 3, 25, 11, 30)]


@pytest.mark.parametrize(
    ("byday", "expected"),
    [
        ("MO,1MO", ["01-05", "01-12", "01-19", "01-26", "02-02", "02-09"]),  # every Monday: a union
        ("MO,-1FR", ["01-05", "01-12", "01-19", "01-26", "01-30", "02-02"]),
        ("1MO,-1MO", ["01-05", "01-26", "02-02", "02-23", "03-02", "03-30"]),
        ("TU,2TU,-1SU", ["01-06", "01-13", "01-20", "01-25", "01-27", "02-03"]),
    ],
)
def test_class_3_plain_and_numbered_weekdays_mix(byday: str, expected: list[str]) -> None:
    text = f"FREQ=MONTHLY;BYDAY={byday};BYHOUR=10;BYMINUTE=0"
    validate_rrule(text)
    found = chain(text, UTC_ZONE, utc(2026, 1, 1), utc(2026, 1, 1), 6)
    assert [instant.strftime("%m-%d") for instant in found] == expected
    assert all(instant.strftime("%H:%M:%S") == "10:00:00" for instant in found)


@pytest.mark.parametrize(
    ("wkst", "expected"),
    [
        # WKST=SU: week 1 of 2026 starts Sunday 01-04 (01-01 falls in a week with only 3 days of 2026); week
        # 52 is 2026-12-27 .. 2027-01-02, so its Saturday lies in the next calendar year.
        ("SU", ["2026-01-10", "2027-01-02", "2027-01-09", "2028-01-01"]),
        ("MO", ["2026-01-03", "2026-12-26", "2027-01-09", "2028-01-01"]),
        ("SA", ["2026-01-03", "2026-12-26", "2027-01-02", "2027-12-25"]),
    ],
)
def test_class_4_byweekno_follows_wkst_across_the_year_boundary(wkst: str, expected: list[str]) -> None:
    text = f"FREQ=YEARLY;BYWEEKNO=1,52;BYDAY=SA;WKST={wkst};BYHOUR=9"
    found = chain(text, CHATHAM, utc(2025, 6, 1), utc(2026, 1, 1), 4)
    assert [instant.astimezone(CHATHAM).strftime("%Y-%m-%d") for instant in found] == expected


def test_a_gap_time_found_first_does_not_hide_an_earlier_regular_one() -> None:
    # 02:30 (in the gap) maps to 01:30Z, but 03:00 CEST, a later wall time, is 01:00Z: earlier.
    text = "FREQ=DAILY;BYHOUR=2,3;BYMINUTE=0,30"
    assert rrule_next(text, BERLIN, utc(2026, 1, 1), utc(2026, 3, 29, 0, 59)) == utc(2026, 3, 29, 1)
    found = chain(text, BERLIN, utc(2026, 1, 1), utc(2026, 3, 29, 0, 59), 3)
    assert found == [utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0)]


@pytest.mark.parametrize(
    ("tz", "text", "after", "expected"),
    [
        # Santiago springs forward at midnight: an HOURLY rule loses 00:00 (it becomes 01:00, which it has).
        (SANTIAGO, "FREQ=HOURLY", local(SANTIAGO, 2026, 9, 5, 22),
         ["22:00 -04", "23:00 -04", "01:00 -03", "02:00 -03"]),
        # Havana falls back at 01:00 to 00:00: the repeated hour happens once, on its first pass.
        (HAVANA, "FREQ=MINUTELY;INTERVAL=30", local(HAVANA, 2026, 10, 31, 23, 15),
         ["23:30 CDT", "00:00 CDT", "00:30 CDT", "01:00 CST"]),
        # Lord Howe moves 30 minutes: 02:00 -> 02:30 in October, so 02:15 becomes 02:45.
        (LORD_HOWE, "FREQ=MINUTELY;INTERVAL=15", local(LORD_HOWE, 2026, 10, 4, 1, 40),
         ["01:45 +1030", "02:30 +11", "02:45 +11", "03:00 +11"]),
        # Chatham's 02:45 -> 03:45: the quarter hours inside the gap land on times the rule has anyway.
        (CHATHAM, "FREQ=MINUTELY;INTERVAL=15", local(CHATHAM, 2026, 9, 27, 2, 20),
         ["02:30 +1245", "03:45 +1345", "04:00 +1345", "04:15 +1345"]),
        # Casablanca goes back from 03:00 to 02:00 for Ramadan.
        (CASABLANCA, "FREQ=MINUTELY;INTERVAL=30", local(CASABLANCA, 2026, 2, 15, 1, 15),
         ["01:30 +01", "02:00 +01", "02:30 +01", "03:00 +00"]),
    ],
)  # fmt: skip
def test_dense_rules_across_transitions(tz: ZoneInfo, text: str, after: datetime, expected: list[str]) -> None:
    anchor = after.replace(minute=0) - timedelta(days=3)
    found = chain(text, tz, anchor, after - timedelta(seconds=1), 4)
    assert [instant.astimezone(tz).strftime("%H:%M %Z") for instant in found] == expected


@pytest.mark.parametrize(
    ("text", "after", "expected"),
    [
        # A DTSTART the rule generates, with UNTIL before it: §3.8.5.3 still makes it the first occurrence,
        # as it does for a DTSTART the rule does not generate (found by the property test in the gap form).
        (
            "DTSTART;TZID=Europe/Berlin:20240601T090000\nRRULE:FREQ=DAILY;UNTIL=20240601T060000Z",
            utc(2024, 6, 1),
            utc(2024, 6, 1, 7),
        ),
        (
            "DTSTART;TZID=Europe/Berlin:20240601T090000\nRRULE:FREQ=DAILY;BYHOUR=10;UNTIL=20240601T060000Z",
            utc(2024, 6, 1),
            utc(2024, 6, 1, 7),
        ),
        # The same in a gap: 02:01 does not exist on 2024-03-31 in Berlin and means 03:01 CEST (01:01Z).
        (
            "DTSTART;TZID=Europe/Berlin:20240331T020100\nRRULE:FREQ=WEEKLY;UNTIL=20240331T010000Z",
            utc(2024, 3, 31, 1),
            utc(2024, 3, 31, 1, 1),
        ),
        # Nothing after it.
        (
            "DTSTART;TZID=Europe/Berlin:20240601T090000\nRRULE:FREQ=DAILY;UNTIL=20240601T060000Z",
            utc(2024, 6, 1, 7),
            None,
        ),
    ],
)
def test_dtstart_is_the_first_occurrence_even_after_until(
    text: str, after: datetime, expected: datetime | None
) -> None:
    assert rrule_next(text, BERLIN, utc(2020, 1, 1), after) == expected


def test_a_dtstart_in_an_overlap_with_until_between_its_folds_stops_at_until() -> None:
    # 02:30 happens twice on 2024-10-27 in Berlin (00:30Z and 01:30Z); under overlap BOTH both are occurrences,
    # but UNTIL 00:35Z ends the rule between them: the second fold is not one.
    text = "DTSTART;TZID=Europe/Berlin:20241027T023000\nRRULE:FREQ=DAILY;UNTIL=20241027T003500Z"
    first = rrule_next(text, BERLIN, utc(2020, 1, 1), utc(2024, 10, 27), both_folds=True)
    assert first == utc(2024, 10, 27, 0, 30)
    assert rrule_next(text, BERLIN, utc(2020, 1, 1), first, both_folds=True) is None
    # UNTIL before both folds: DTSTART stays the first occurrence, with both of its folds.
    early = "DTSTART;TZID=Europe/Berlin:20241027T023000\nRRULE:FREQ=DAILY;UNTIL=20241027T000000Z"
    assert rrule_next(early, BERLIN, utc(2020, 1, 1), utc(2024, 10, 27), both_folds=True) == utc(2024, 10, 27, 0, 30)
    assert rrule_next(early, BERLIN, utc(2020, 1, 1), utc(2024, 10, 27, 0, 30), both_folds=True) == utc(
        2024, 10, 27, 1, 30
    )
