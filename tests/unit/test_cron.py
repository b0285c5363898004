"""Cron parsing and next-fire-time evaluation, including Debian cron's DST semantics."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.timing.budget import Budget
from shared.timing.cron import _HORIZON_YEARS, CronExpr, _next_by_scan, _next_nearby, cron_next, parse_cron


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def chain(expr: str, zone: str, after: datetime, count: int) -> list[datetime | None]:
    """The next ``count`` fire times after ``after``, each computed from the previous one."""
    parsed, tz = parse_cron(expr), ZoneInfo(zone)
    fires: list[datetime | None] = []
    current: datetime | None = after
    for _ in range(count):
        assert current is not None
        current = cron_next(parsed, tz, current)
        fires.append(current)
    return fires


# --- parsing ---


def test_parses_the_five_standard_fields() -> None:
    expr = parse_cron("*/15 9-17 * * MON-FRI")
    assert expr.seconds == {0}
    assert expr.minutes == {0, 15, 30, 45}
    assert expr.hours == set(range(9, 18))
    assert expr.days_of_month == set(range(1, 32))
    assert expr.months == set(range(1, 13))
    assert expr.days_of_week == {1, 2, 3, 4, 5}


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("*", set(range(60))),
        ("7", {7}),
        ("10-13", {10, 11, 12, 13}),
        ("*/20", {0, 20, 40}),
        ("10-30/10", {10, 20, 30}),
        ("50/3", {50, 53, 56, 59}),  # a/n runs from a to the field's maximum
        ("1,5-9/2,58", {1, 5, 7, 9, 58}),
        ("22-22/1", {22}),
        ("*/90", {0}),
        ("05", {5}),
        ("3,3,3", {3}),
    ],
)
def test_minute_field_syntax(field: str, expected: set[int]) -> None:
    assert parse_cron(f"{field} * * * *").minutes == expected


def test_hour_range_with_single_step_matches_only_that_hour() -> None:
    assert parse_cron("0 22-22/1 * * *").hours == {22}


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("JAN", {1}),
        ("dec", {12}),
        ("Jan-Mar", {1, 2, 3}),
        ("JAN-DEC/3", {1, 4, 7, 10}),
        ("FEB,aug,11", {2, 8, 11}),
    ],
)
def test_month_names_are_case_insensitive_and_work_in_ranges(field: str, expected: set[int]) -> None:
    assert parse_cron(f"0 0 1 {field} *").months == expected


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("0", {0}),
        ("7", {0}),
        ("SUN", {0}),
        ("sun,7", {0}),
        ("5-7", {5, 6, 0}),
        ("MON-FRI", {1, 2, 3, 4, 5}),
        ("sat-7", {6, 0}),
        ("*", {0, 1, 2, 3, 4, 5, 6}),
        ("*/2", {0, 2, 4, 6}),
        ("1/2", {1, 3, 5, 0}),  # 1,3,5,7 with 7 meaning Sunday
    ],
)
def test_day_of_week_treats_0_and_7_as_sunday(field: str, expected: set[int]) -> None:
    assert parse_cron(f"0 0 * * {field}").days_of_week == expected


def test_leading_seconds_field() -> None:
    expr = parse_cron("*/20 30 2 * * *")
    assert expr.seconds == {0, 20, 40}
    assert expr.minutes == {30}
    assert expr.hours == {2}


def test_surrounding_and_repeated_whitespace_is_accepted() -> None:
    assert parse_cron("  0   2\t* *  *\n") == parse_cron("0 2 * * *")


@pytest.mark.parametrize(
    ("macro", "equivalent"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
        ("  @Hourly ", "0 * * * *"),
    ],
)
def test_macros_expand_to_their_five_field_form(macro: str, equivalent: str) -> None:
    assert parse_cron(macro) == parse_cron(equivalent)


@pytest.mark.parametrize(
    ("expr", "wall_clock"),
    [
        ("30 2 * * *", True),
        ("0 0 1 1 *", True),
        ("0-59 0-23 * * *", True),  # a full range that does not start with `*` still pins the wall clock
        ("*/30 * * * *", False),
        ("30 * * * *", False),
        ("* 2 * * *", False),
        ("*/5 2 * * *", False),
        ("0 */2 * * *", False),
        ("* 30 2 * * *", True),  # the seconds field plays no part
        ("0 * * * * *", False),
        ("@daily", True),
        ("@hourly", False),
    ],
)
def test_mode_depends_only_on_minute_and_hour_fields(expr: str, wall_clock: bool) -> None:
    assert parse_cron(expr).wall_clock is wall_clock


def test_day_restriction_flags_follow_the_leading_star() -> None:
    assert (parse_cron("0 0 13 * 5").dom_restricted, parse_cron("0 0 13 * 5").dow_restricted) == (True, True)
    assert parse_cron("0 0 */2 * 1").dom_restricted is False
    assert parse_cron("0 0 1 * */2").dow_restricted is False
    assert parse_cron("0 0 1-31 * 0-7").dow_restricted is True


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("0 25 * * *", "hour field: 25 is out of range 0-23"),
        ("60 * * * *", "minute field: 60 is out of range 0-59"),
        ("60 0 0 * * *", "second field: 60 is out of range 0-59"),
        ("0 0 0 * *", "day-of-month field: 0 is out of range 1-31"),
        ("0 0 32 * *", "day-of-month field: 32 is out of range 1-31"),
        ("0 0 * 13 *", "month field: 13 is out of range 1-12"),
        ("0 0 * 0 *", "month field: 0 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week field: 8 is out of range 0-7"),
        ("0 0-24 * * *", "hour field: 24 is out of range 0-23"),
        ("99999999999999999999999 * * * *", "minute field: 99999999999999999999999 is out of range 0-59"),
        ("0 0 5-1 * *", "day-of-month field: range 5-1 is backwards (5 > 1)"),
        ("0 0 * * FRI-SUN", "day-of-week field: range FRI-SUN is backwards (5 > 0); Sunday can also be"),
        ("0 0 * DEC-JAN *", "month field: range DEC-JAN is backwards (12 > 1)"),
        ("*/0 * * * *", "minute field: step 0 in '*/0' must be at least 1"),
        ("0 1-5/0 * * *", "hour field: step 0"),
        ("*/x * * * *", "minute field: invalid step 'x' in '*/x'"),
        ("*/ * * * *", "minute field: invalid step ''"),
        ("1/2/3 * * * *", "minute field: invalid step '2/3'"),
        ("*/-1 * * * *", "minute field: invalid step '-1'"),
        ("*/99999999999999999999 * * * *", "minute field: step 99999999999999999999 is too large"),
        ("1,,2 * * * *", "minute field: empty list item"),
        ("0 1, * * *", "hour field: empty list item"),
        ("x * * * *", "minute field: invalid value 'x' in 'x'"),
        ("-5 * * * *", "minute field: invalid value '' in '-5'"),
        ("1-2-3 * * * *", "minute field: invalid value '2-3' in '1-2-3'"),
        ("1.5 * * * *", "minute field: invalid value '1.5'"),
        ("\u00b2 * * * *", "minute field: invalid value"),  # a superscript digit is not a number here
        ("0 0 ? * *", "day-of-month field: invalid value '?'"),
        ("0 0 L * *", "day-of-month field: invalid value 'L'"),
        ("0 0 * FOO *", "month field: invalid value 'FOO'"),
        ("0 0 * JAN-MON *", "month field: invalid value 'MON'"),
        ("0 0 * * MONDAY", "day-of-week field: invalid value 'MONDAY'"),
        ("0 JAN * * *", "hour field: invalid value 'JAN'"),
        ("0 0 * * MON-", "day-of-week field: invalid value '' in 'MON-'"),
    ],
)
def test_syntax_errors_name_the_field(expr: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_cron(expr)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("expr", "count"),
    [("", 0), ("   ", 0), ("0", 1), ("* * * *", 4), ("0 0 1 1 * 2026 x", 7)],
)
def test_wrong_field_count(expr: str, count: int) -> None:
    with pytest.raises(ValueError, match=rf"^expected 5 fields \(or 6 with leading seconds\), got {count}$"):
        parse_cron(expr)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("@reboot", "@reboot is not supported"),
        ("@REBOOT", "@reboot is not supported"),
        ("@fortnightly", "unknown macro '@fortnightly'; expected one of @yearly, @annually"),
        ("@", "unknown macro '@'"),
        ("@daily 5", "macro @daily takes no other fields"),
    ],
)
def test_bad_macros_are_rejected(expr: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_cron(expr)
    assert str(caught.value).startswith(message)


# --- day matching: Vixie's OR rule ---


def test_both_day_fields_restricted_means_either_matches() -> None:
    # April 2026: the 13th is a Monday, Fridays are the 3rd, 10th, 17th, 24th.
    fires = chain("0 0 13 * 5", "UTC", utc(2026, 4, 1), 5)
    assert fires == [utc(2026, 4, 3), utc(2026, 4, 10), utc(2026, 4, 13), utc(2026, 4, 17), utc(2026, 4, 24)]


def test_unrestricted_day_of_week_means_only_day_of_month_counts() -> None:
    assert chain("0 0 13 * *", "UTC", utc(2026, 4, 1), 2) == [utc(2026, 4, 13), utc(2026, 5, 13)]


def test_unrestricted_day_of_month_means_only_day_of_week_counts() -> None:
    assert chain("0 0 * * FRI", "UTC", utc(2026, 4, 1), 2) == [utc(2026, 4, 3), utc(2026, 4, 10)]


def test_star_step_day_of_month_is_unrestricted_so_both_must_match() -> None:
    # `*/2` starts with `*`, so the AND rule applies: odd days that are also Mondays (Apr 13, Apr 27).
    assert chain("0 0 */2 * 1", "UTC", utc(2026, 4, 1), 2) == [utc(2026, 4, 13), utc(2026, 4, 27)]


def test_full_ranges_that_do_not_start_with_star_are_restricted() -> None:
    # 1-31 OR Monday is every day.
    assert chain("0 0 1-31 * 1", "UTC", utc(2026, 4, 1), 3) == [
        utc(2026, 4, 2),
        utc(2026, 4, 3),
        utc(2026, 4, 4),
    ]


# --- evaluation basics ---


def test_result_is_strictly_after_and_utc() -> None:
    expr = parse_cron("0 12 * * *")
    result = cron_next(expr, ZoneInfo("UTC"), utc(2026, 5, 1, 12))
    assert result == utc(2026, 5, 2, 12)
    assert result is not None and result.tzinfo is UTC


def test_after_in_another_zone_is_accepted() -> None:
    after = datetime(2026, 5, 1, 14, tzinfo=ZoneInfo("Europe/Berlin"))  # 12:00Z
    result = cron_next(parse_cron("0 12 * * *"), ZoneInfo("UTC"), after)
    assert result == utc(2026, 5, 2, 12)
    assert result is not None and result.tzinfo is UTC


def test_naive_after_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cron_next(parse_cron("* * * * *"), ZoneInfo("UTC"), datetime(2026, 1, 1))


def test_microseconds_in_after_are_respected() -> None:
    expr = parse_cron("* * * * * *")
    assert cron_next(expr, ZoneInfo("UTC"), utc(2026, 1, 1, 0, 0, 0, 1)) == utc(2026, 1, 1, 0, 0, 1)
    assert cron_next(expr, ZoneInfo("UTC"), utc(2026, 1, 1, 0, 0, 0, 999_999)) == utc(2026, 1, 1, 0, 0, 1)


def test_local_time_of_a_plain_zone() -> None:
    # 09:00 in New York in summer is 13:00Z.
    assert chain("0 9 * * *", "America/New_York", utc(2026, 7, 1), 2) == [
        utc(2026, 7, 1, 13),
        utc(2026, 7, 2, 13),
    ]


def test_six_field_expressions_fire_on_seconds() -> None:
    assert chain("*/15 * * * * *", "UTC", utc(2026, 1, 1, 12, 0, 7), 3) == [
        utc(2026, 1, 1, 12, 0, 15),
        utc(2026, 1, 1, 12, 0, 30),
        utc(2026, 1, 1, 12, 0, 45),
    ]
    assert chain("30 0 0 1 1 *", "UTC", utc(2026, 6, 1), 2) == [
        utc(2027, 1, 1, 0, 0, 30),
        utc(2028, 1, 1, 0, 0, 30),
    ]


def test_year_rollover() -> None:
    assert chain("59 23 31 12 *", "UTC", utc(2026, 12, 31, 23, 59), 1) == [utc(2027, 12, 31, 23, 59)]


def test_29_february() -> None:
    assert chain("0 0 29 2 *", "UTC", utc(2026, 1, 1), 2) == [utc(2028, 2, 29), utc(2032, 2, 29)]
    # 2100 is not a leap year: eight years between leap days.
    assert chain("0 0 29 2 *", "UTC", utc(2096, 3, 1), 1) == [utc(2104, 2, 29)]
    # 2000 is one.
    assert chain("0 0 29 2 *", "UTC", utc(1999, 1, 1), 1) == [utc(2000, 2, 29)]
    # Midnight in Tokyo is 15:00Z the day before.
    assert chain("0 0 29 2 *", "Asia/Tokyo", utc(2026, 1, 1), 1) == [utc(2028, 2, 28, 15)]


def test_29_february_or_mondays_in_february() -> None:
    # Both day fields restricted: every Monday in February, plus February 29.
    assert chain("0 0 29 2 1", "UTC", utc(2027, 2, 23), 3) == [
        utc(2028, 2, 7),
        utc(2028, 2, 14),
        utc(2028, 2, 21),
    ]
    assert chain("0 0 29 2 1", "UTC", utc(2028, 2, 27), 2) == [utc(2028, 2, 28), utc(2028, 2, 29)]


def test_31st_skips_short_months() -> None:
    assert chain("0 0 31 * *", "UTC", utc(2026, 4, 1), 2) == [utc(2026, 5, 31), utc(2026, 7, 31)]


@pytest.mark.parametrize("expr", ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *", "0 0 30,31 FEB *"])
def test_impossible_dates_never_fire(expr: str) -> None:
    assert cron_next(parse_cron(expr), ZoneInfo("Europe/Berlin"), utc(2026, 1, 1)) is None


def test_far_future_gives_none_instead_of_overflowing() -> None:
    assert cron_next(parse_cron("0 0 1 1 *"), ZoneInfo("America/New_York"), utc(9999, 6, 1)) is None


# --- DST ---
# 2026 transitions used below (local wall times; read off zoneinfo):
#   Europe/Berlin        gap     Mar 29 02:00 -> 03:00 (01:00Z)   overlap Oct 25 03:00 -> 02:00 (01:00Z)
#   America/New_York     gap     Mar 8  02:00 -> 03:00 (07:00Z)   overlap Nov 1  02:00 -> 01:00 (06:00Z)
#   Australia/Lord_Howe  gap     Oct 4  02:00 -> 02:30 (Oct 3 15:30Z)
#                        overlap Apr 5  02:00 -> 01:30 (Apr 4 15:00Z)
#   Australia/Sydney     gap     Oct 4  02:00 -> 03:00 (Oct 3 16:00Z)
#                        overlap Apr 5  03:00 -> 02:00 (Apr 4 16:00Z)
#   America/Santiago     gap     Sep 6  00:00 -> 01:00 (04:00Z)   overlap Apr 5 00:00 -> Apr 4 23:00 (03:00Z)
#   America/Havana       gap     Mar 8  00:00 -> 01:00 (05:00Z)
#   Asia/Tokyo           none

WALL_CLOCK_GAP = [
    # Each gap wall time fires once, at the end of the gap; the following day is back to normal.
    ("Europe/Berlin", "30 2 * * *", utc(2026, 3, 28, 12), [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]),
    ("America/New_York", "30 2 * * *", utc(2026, 3, 7, 12), [utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)]),
    (
        "Australia/Lord_Howe",
        "15 2 * * *",
        utc(2026, 10, 3),
        [utc(2026, 10, 3, 15, 30), utc(2026, 10, 4, 15, 15)],
    ),
    ("Australia/Sydney", "30 2 * * *", utc(2026, 10, 3), [utc(2026, 10, 3, 16), utc(2026, 10, 4, 15, 30)]),
    ("America/Santiago", "0 0 * * *", utc(2026, 9, 5, 12), [utc(2026, 9, 6, 4), utc(2026, 9, 7, 3)]),
    ("America/Havana", "0 0 * * *", utc(2026, 3, 7, 12), [utc(2026, 3, 8, 5), utc(2026, 3, 9, 4)]),
    ("Asia/Tokyo", "30 2 * * *", utc(2026, 3, 28, 12), [utc(2026, 3, 28, 17, 30), utc(2026, 3, 29, 17, 30)]),
]

WALL_CLOCK_OVERLAP = [
    # A repeated wall time fires once, on its first occurrence.
    (
        "Europe/Berlin",
        "30 2 * * *",
        utc(2026, 10, 24, 12),
        [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
    ),
    (
        "America/New_York",
        "30 1 * * *",
        utc(2026, 10, 31, 12),
        [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)],
    ),
    (
        "Australia/Lord_Howe",
        "45 1 * * *",
        utc(2026, 4, 4),
        [utc(2026, 4, 4, 14, 45), utc(2026, 4, 5, 15, 15)],
    ),
    ("Australia/Sydney", "30 2 * * *", utc(2026, 4, 4), [utc(2026, 4, 4, 15, 30), utc(2026, 4, 5, 16, 30)]),
    (
        "America/Santiago",
        "30 23 * * *",
        utc(2026, 4, 4, 12),
        [utc(2026, 4, 5, 2, 30), utc(2026, 4, 6, 3, 30)],
    ),
    (
        "Asia/Tokyo",
        "30 2 * * *",
        utc(2026, 10, 24, 12),
        [utc(2026, 10, 24, 17, 30), utc(2026, 10, 25, 17, 30)],
    ),
]

REAL_TIME_GAP = [
    # Wall times inside the gap never happen, so they never fire.
    ("Europe/Berlin", "30 * * * *", utc(2026, 3, 29), [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30)]),
    ("America/New_York", "30 * * * *", utc(2026, 3, 8, 6), [utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 30)]),
    (
        "Australia/Lord_Howe",
        "*/15 2 * * *",
        utc(2026, 10, 3, 15),
        [utc(2026, 10, 3, 15, 30), utc(2026, 10, 3, 15, 45), utc(2026, 10, 4, 15)],
    ),
    (
        "Australia/Sydney",
        "30 * * * *",
        utc(2026, 10, 3, 15),
        [utc(2026, 10, 3, 15, 30), utc(2026, 10, 3, 16, 30)],
    ),
    ("America/Santiago", "0 * * * *", utc(2026, 9, 6, 2, 30), [utc(2026, 9, 6, 3), utc(2026, 9, 6, 4)]),
    ("Asia/Tokyo", "30 * * * *", utc(2026, 3, 29), [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30)]),
]

REAL_TIME_OVERLAP = [
    # A repeated wall time fires in both copies.
    (
        "Europe/Berlin",
        "30 * * * *",
        utc(2026, 10, 25),
        [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 2, 30)],
    ),
    (
        "America/New_York",
        "30 * * * *",
        utc(2026, 11, 1, 5),
        [utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 7, 30)],
    ),
    (
        "Australia/Lord_Howe",
        "*/15 1 * * *",
        utc(2026, 4, 4, 14, 20),
        [
            utc(2026, 4, 4, 14, 30),  # 01:30 +11:00
            utc(2026, 4, 4, 14, 45),  # 01:45 +11:00
            utc(2026, 4, 4, 15, 0),  # 01:30 +10:30
            utc(2026, 4, 4, 15, 15),  # 01:45 +10:30
            utc(2026, 4, 5, 14, 30),  # next day 01:00 +10:30
        ],
    ),
    (
        "Australia/Sydney",
        "30 * * * *",
        utc(2026, 4, 4, 15),
        [utc(2026, 4, 4, 15, 30), utc(2026, 4, 4, 16, 30), utc(2026, 4, 4, 17, 30)],
    ),
    (
        "America/Santiago",
        "30 * * * *",
        utc(2026, 4, 5, 2),
        [utc(2026, 4, 5, 2, 30), utc(2026, 4, 5, 3, 30), utc(2026, 4, 5, 4, 30)],
    ),
    ("Asia/Tokyo", "30 * * * *", utc(2026, 10, 25), [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)]),
]


@pytest.mark.parametrize(("zone", "expr", "after", "expected"), WALL_CLOCK_GAP)
def test_wall_clock_gap_fires_once_at_the_end_of_the_gap(
    zone: str, expr: str, after: datetime, expected: list[datetime]
) -> None:
    assert parse_cron(expr).wall_clock
    assert chain(expr, zone, after, len(expected)) == expected


@pytest.mark.parametrize(("zone", "expr", "after", "expected"), WALL_CLOCK_OVERLAP)
def test_wall_clock_overlap_fires_once_on_the_first_occurrence(
    zone: str, expr: str, after: datetime, expected: list[datetime]
) -> None:
    assert parse_cron(expr).wall_clock
    assert chain(expr, zone, after, len(expected)) == expected


@pytest.mark.parametrize(("zone", "expr", "after", "expected"), REAL_TIME_GAP)
def test_real_time_gap_does_not_fire(zone: str, expr: str, after: datetime, expected: list[datetime]) -> None:
    assert not parse_cron(expr).wall_clock
    assert chain(expr, zone, after, len(expected)) == expected


@pytest.mark.parametrize(("zone", "expr", "after", "expected"), REAL_TIME_OVERLAP)
def test_real_time_overlap_fires_twice(zone: str, expr: str, after: datetime, expected: list[datetime]) -> None:
    assert not parse_cron(expr).wall_clock
    assert chain(expr, zone, after, len(expected)) == expected


def test_wall_clock_gap_times_collapse_with_the_real_time_at_the_gap_end() -> None:
    # 02:00 and 02:30 do not exist and map to 03:00 CEST, which itself matches: one fire, then 03:30.
    assert chain("0,30 2,3 * * *", "Europe/Berlin", utc(2026, 3, 28, 23, 30), 3) == [
        utc(2026, 3, 29, 1),
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 30, 0),
    ]


def test_seconds_do_not_switch_a_pinned_job_to_real_time() -> None:
    # 02:30:00, 02:30:20 and 02:30:40 all fall in the gap and collapse onto its end.
    assert chain("*/20 30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12), 2) == [
        utc(2026, 3, 29, 1),
        utc(2026, 3, 30, 0, 30),
    ]


def test_real_time_job_confined_to_the_gap_hour_skips_the_day() -> None:
    assert chain("* 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12), 1) == [utc(2026, 3, 30, 0)]


def test_hourly_macro_runs_on_real_time_and_daily_on_the_wall_clock() -> None:
    assert chain("@hourly", "Europe/Berlin", utc(2026, 10, 25, 0, 30), 2) == [
        utc(2026, 10, 25, 1),
        utc(2026, 10, 25, 2),
    ]
    assert chain("@daily", "America/Santiago", utc(2026, 9, 5, 12), 1) == [utc(2026, 9, 6, 4)]


def test_a_whole_skipped_day_collapses_onto_the_transition() -> None:
    # Samoa skipped 30 December 2011 entirely (-10:00 -> +14:00 at 10:00Z).
    assert chain("0 0 * * *", "Pacific/Apia", utc(2011, 12, 28, 12), 3) == [
        utc(2011, 12, 29, 10),  # 29 Dec 00:00 -10:00
        utc(2011, 12, 30, 10),  # the missing 30 Dec 00:00, at the transition = 31 Dec 00:00 +14:00
        utc(2011, 12, 31, 10),  # 1 Jan 00:00 +14:00
    ]
    assert chain("0 12 30 12 *", "Pacific/Apia", utc(2011, 12, 1), 1) == [utc(2011, 12, 30, 10)]


# --- performance ---

RARE_EXPRESSIONS = [
    "0 0 29 2 *",
    "0 0 31 * *",
    "0 0 29 2 1",
    "0 0 30 2 *",
    "0 0 31 4 *",
    "0 0 */30 2 1",
    "* * * * * *",
    "* 0-59 0-23 * * *",
    "30 2 * * *",
]


@pytest.mark.parametrize("expr", RARE_EXPRESSIONS)
def test_worst_case_work_is_bounded(expr: str) -> None:
    """Even the general scan (what the shortcut falls back to near transitions) walks at most its horizon, a
    budget tick per month: a machine-independent bound, unlike a wall-clock one."""
    parsed = parse_cron(expr)
    for zone in ("Europe/Berlin", "Australia/Lord_Howe", "America/Santiago"):
        tz = ZoneInfo(zone)
        for after in (
            utc(2096, 3, 1),
            utc(2026, 3, 29, 0, 59, 59),
            utc(2026, 10, 25, 1, 30),
            utc(2026, 4, 4, 15),
        ):
            budget = Budget(lambda: 0.0, math.inf)
            assert _next_by_scan(parsed, tz, after, budget) == cron_next(parsed, tz, after)
            assert budget.ticks <= 2 * (_HORIZON_YEARS + 1) * 12


# --- properties ---

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Australia/Sydney",
    "America/Santiago",
    "America/Havana",
    "Asia/Tokyo",
    "UTC",
]

# (zone, transition instant) pairs, so that `after` often lands near a DST change.
TRANSITIONS = [
    ("Europe/Berlin", utc(2026, 3, 29, 1)),
    ("Europe/Berlin", utc(2026, 10, 25, 1)),
    ("America/New_York", utc(2026, 3, 8, 7)),
    ("America/New_York", utc(2026, 11, 1, 6)),
    ("Australia/Lord_Howe", utc(2026, 4, 4, 15)),
    ("Australia/Lord_Howe", utc(2026, 10, 3, 15, 30)),
    ("Australia/Sydney", utc(2026, 4, 4, 16)),
    ("Australia/Sydney", utc(2026, 10, 3, 16)),
    ("America/Santiago", utc(2026, 4, 5, 3)),
    ("America/Santiago", utc(2026, 9, 6, 4)),
    ("America/Havana", utc(2026, 3, 8, 5)),
    ("America/Havana", utc(2026, 11, 1, 5)),
]

MONTH_NAMES = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


def value_text(low: int, high: int, names: list[str] | None = None) -> st.SearchStrategy[str]:
    numbers = st.integers(low, high).map(str)
    if names is None:
        return numbers
    cased_names = st.tuples(st.sampled_from(names), st.booleans()).map(
        lambda pair: pair[0].lower() if pair[1] else pair[0]
    )
    return numbers | cased_names


def field_text(low: int, high: int, names: list[str] | None = None) -> st.SearchStrategy[str]:
    def ordered_range(pair: tuple[int, int]) -> str:
        return f"{min(pair)}-{max(pair)}"

    steps = st.integers(1, high - low + 3).map(str)
    numbers = st.integers(low, high)
    item = st.one_of(
        st.just("*"),
        steps.map(lambda step: f"*/{step}"),
        value_text(low, high, names),
        st.tuples(numbers, numbers).map(ordered_range),
        st.tuples(st.tuples(numbers, numbers).map(ordered_range), steps).map("/".join),
        st.tuples(value_text(low, high, names), steps).map("/".join),
    )
    return st.lists(item, min_size=1, max_size=3).map(",".join)


def five_fields() -> st.SearchStrategy[str]:
    return st.tuples(
        field_text(0, 59),
        field_text(0, 23),
        field_text(1, 31),
        field_text(1, 12, MONTH_NAMES),
        field_text(0, 7, DAY_NAMES),
    ).map(" ".join)


expressions = st.one_of(
    five_fields(),
    st.tuples(field_text(0, 59), five_fields()).map(" ".join),
    st.sampled_from(["@yearly", "@monthly", "@weekly", "@daily", "@hourly"]),
)

instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 12, 31), timezones=st.just(UTC))


@st.composite
def zone_and_after(draw: st.DrawFn) -> tuple[ZoneInfo, datetime]:
    if draw(st.booleans()):
        zone, transition = draw(st.sampled_from(TRANSITIONS))
        offset = draw(st.timedeltas(min_value=timedelta(days=-2), max_value=timedelta(days=2)))
        return ZoneInfo(zone), transition + offset
    return ZoneInfo(draw(st.sampled_from(ZONES))), draw(instants)


def wall_matches(expr: CronExpr, wall: datetime) -> bool:
    """Whether a local wall time matches, written independently of the module's evaluator."""
    dom_ok = wall.day in expr.days_of_month
    dow_ok = wall.isoweekday() % 7 in expr.days_of_week
    day_ok = (dom_ok or dow_ok) if (expr.dom_restricted and expr.dow_restricted) else (dom_ok and dow_ok)
    return (
        day_ok
        and wall.month in expr.months
        and wall.hour in expr.hours
        and wall.minute in expr.minutes
        and wall.second in expr.seconds
    )


def is_transition(instant: datetime, tz: ZoneInfo) -> bool:
    before = (instant - timedelta(seconds=1)).astimezone(tz).utcoffset()
    return before != instant.astimezone(tz).utcoffset()


PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(expressions, zone_and_after())
def test_fire_times_increase_strictly_and_are_genuine(text: str, zone_after: tuple[ZoneInfo, datetime]) -> None:
    expr = parse_cron(text)
    tz, after = zone_after
    current = after
    for _ in range(20):
        result = cron_next(expr, tz, current)
        assert result == cron_next(expr, tz, current)  # same input, same output
        if result is None:
            return
        assert result.tzinfo is UTC
        assert result > current
        # Nothing is skipped just before a fire time (fire times are whole seconds).
        assert cron_next(expr, tz, result - timedelta(microseconds=1)) == result
        # Every fire is a matching local time, or (wall-clock mode) the end of a gap that swallowed one.
        local = result.astimezone(tz).replace(tzinfo=None)
        assert wall_matches(expr, local) or (expr.wall_clock and is_transition(result, tz))
        current = result


def brute_force_next(expr: CronExpr, tz: ZoneInfo, after: datetime, horizon: timedelta) -> datetime | None:
    """Reference answer for five-field expressions, stepping through real time minute by minute.

    Real-time mode fires whenever the local clock shows a matching time. Wall-clock mode is Debian cron's
    "high-water mark": it fires when the local clock first reaches or jumps past a matching time it has not
    reached before, so a jump forward fires the skipped times once and a jump back fires nothing again.
    """
    step = timedelta(minutes=1)
    current = after.replace(second=0, microsecond=0) - timedelta(days=2)
    high_water = current.astimezone(tz).replace(tzinfo=None)
    while current <= after + horizon:
        current += step
        wall = current.astimezone(tz).replace(tzinfo=None)
        if expr.wall_clock:
            fires = False
            while high_water < wall:
                high_water += step
                fires = fires or wall_matches(expr, high_water)
        else:
            fires = wall_matches(expr, wall)
        if fires and current > after:
            return current
    return None


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(five_fields(), zone_and_after())
def test_agrees_with_brute_force(text: str, zone_after: tuple[ZoneInfo, datetime]) -> None:
    expr = parse_cron(text)
    tz, after = zone_after
    horizon = timedelta(days=2)
    expected = brute_force_next(expr, tz, after, horizon)
    result = cron_next(expr, tz, after)
    if expected is None:
        assert result is None or result > after + horizon
    else:
        assert result == expected


# --- the shortcut never drifts from the general scan ---

SHORTCUT_ZONES = [
    *ZONES,
    "Pacific/Apia",  # skipped a whole day in 2011
    "Europe/Dublin",  # negative DST in tzdata
    "Antarctica/Troll",  # two-hour DST jumps
    "Africa/Casablanca",  # DST suspended for Ramadan
    "Pacific/Chatham",  # +12:45 / +13:45
    "Asia/Kolkata",
]

COMMON_EXPRESSIONS = [
    "* * * * *",
    "*/5 * * * *",
    "0 * * * *",
    "30 * * * *",
    "0 */2 * * *",
    "0 9 * * *",
    "30 2 * * *",
    "0 0 * * *",
    "0 9 * * 1-5",
    "*/15 9-17 * * MON-FRI",
    "0 0 1 * *",
    "0 0 29 2 *",
    "0 0 13 * 5",
    "*/10 * * * * *",
    "* * * * * *",
    "0,30 2,3 * * *",
    "* 2 * * *",
    "*/20 30 2 * * *",
]


def random_field(rng: random.Random, low: int, high: int) -> str:
    items = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        first, last = sorted((rng.randint(low, high), rng.randint(low, high)))
        step = rng.randint(1, high - low + 2)
        items.append(rng.choice(["*", f"*/{step}", str(first), f"{first}-{last}", f"{first}-{last}/{step}"]))
    return ",".join(items)


def random_expression(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(COMMON_EXPRESSIONS)
    fields = [random_field(rng, 0, 59), random_field(rng, 0, 23), random_field(rng, 1, 31)]
    fields += [random_field(rng, 1, 12), random_field(rng, 0, 7)]
    if rng.random() < 0.3:
        fields.insert(0, random_field(rng, 0, 59))
    return " ".join(fields)


def random_after(rng: random.Random, zone: str) -> datetime:
    if rng.random() < 0.6:
        # Near a DST transition: either one of the zone's listed ones or any zone's, shifted a little.
        known = [instant for name, instant in TRANSITIONS if name == zone] or [instant for _, instant in TRANSITIONS]
        if zone == "Pacific/Apia" and rng.random() < 0.5:
            known = [utc(2011, 12, 30, 10)]
        after = rng.choice(known) + timedelta(seconds=rng.randint(-2 * 86_400, 2 * 86_400))
    else:
        after = utc(rng.randint(1970, 2100), 1, 1) + timedelta(seconds=rng.randrange(366 * 86_400))
    if rng.random() < 0.5:
        after = after.replace(second=0)  # on the minute, like the worker's own chained calls
    if rng.random() < 0.3:
        after = after.replace(microsecond=rng.randrange(1_000_000))
    return after


def test_shortcut_agrees_with_the_general_scan() -> None:
    rng = random.Random(20261127)
    shortcut_answers = 0
    for _ in range(2000):
        zone = rng.choice(SHORTCUT_ZONES)
        text, tz, after = random_expression(rng), ZoneInfo(zone), random_after(rng, zone)
        expr = parse_cron(text)
        expected = _next_by_scan(expr, tz, after)
        shortcut = _next_nearby(expr, tz, after)
        if shortcut is not None:
            shortcut_answers += 1
            assert shortcut == expected, (text, zone, after)
        assert cron_next(expr, tz, after) == expected, (text, zone, after)
    # Most inputs are far enough from a transition for the shortcut to answer; if it never did, this test
    # would prove nothing.
    assert shortcut_answers > 1000


@pytest.mark.parametrize(
    ("zone", "expr", "after"),
    [
        ("Europe/Berlin", "30 2 * * *", utc(2026, 10, 25, 1, 15)),  # after is the second 02:15
        ("Europe/Berlin", "0 * * * *", utc(2026, 10, 25, 0, 30)),  # after is the first 02:30
        ("Europe/Berlin", "30 2 * * *", utc(2026, 3, 28, 12)),  # the next fire falls in the gap
        ("America/New_York", "* * * * *", utc(2026, 11, 1, 5, 59, 30)),
    ],
)
def test_shortcut_declines_near_transitions(zone: str, expr: str, after: datetime) -> None:
    assert _next_nearby(parse_cron(expr), ZoneInfo(zone), after) is None


@pytest.mark.parametrize(
    ("zone", "expr"),
    [
        ("UTC", "* * * * *"),
        ("Europe/Berlin", "*/5 * * * *"),
        ("Europe/Berlin", "0 9 * * *"),
        ("Asia/Tokyo", "0 9 * * 1-5"),
        ("UTC", "0 0 29 2 *"),
    ],
)
def test_shortcut_answers_away_from_transitions(zone: str, expr: str) -> None:
    after = utc(2026, 11, 27, 11)
    answer = _next_nearby(parse_cron(expr), ZoneInfo(zone), after)
    assert answer is not None
    assert answer == _next_by_scan(parse_cron(expr), ZoneInfo(zone), after)


def test_parse_cron_presorts_fields_without_affecting_equality() -> None:
    expr = parse_cron("50,10,30 9,3 * * *")
    assert expr._sorted_minutes == (10, 30, 50)
    assert expr._sorted_hours == (3, 9)
    assert expr._first_time_of_day == (3, 10, 0)
    assert expr == parse_cron("10,30,50 3,9 * * *")
