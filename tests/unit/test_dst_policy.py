"""dstPolicy (gap SHIFT|SKIP, overlap FIRST|BOTH) for CRON and RRULE in the tricky zones.

The table tests pin hand-checked answers at each zone's 2026 transitions; the property test compares
``next_fire`` with a brute-force reference that walks the local wall clock minute by minute and maps every
matching wall time to instants with the policy.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.model import CronTrigger, DstGap, DstOverlap, DstPolicy, RRuleTrigger
from shared.timing.cron import CronExpr, parse_cron
from shared.timing.next_fire import fire_times, next_fire
from shared.timing.rrule.evaluate import Compiled
from shared.timing.rrule.parse import parse_spec

SHIFT, SKIP, FIRST, BOTH = DstGap.SHIFT, DstGap.SKIP, DstOverlap.FIRST, DstOverlap.BOTH
POLICIES = [None, *(DstPolicy(gap=g, overlap=o) for g in (SHIFT, SKIP) for o in (FIRST, BOTH))]
PARTIAL = [DstPolicy(gap=SKIP), DstPolicy(gap=SHIFT), DstPolicy(overlap=BOTH), DstPolicy(overlap=FIRST), DstPolicy()]
ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/Havana",
    "Africa/Casablanca",
]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def cron(expr: str, policy: DstPolicy | None) -> CronTrigger:
    return CronTrigger(cron=expr, dst_policy=policy)


def pol(gap: DstGap, overlap: DstOverlap) -> DstPolicy:
    return DstPolicy(gap=gap, overlap=overlap)


# --- cron, wall-clock mode, by hand ----------------------------------------------------------------------

# (zone, expression, after, {(gap, overlap): expected UTC fire times})
WALL_CASES = [
    # Berlin spring: 02:30 does not exist on 2026-03-29 (02:00 -> 03:00 CEST at 01:00Z).
    (
        "Europe/Berlin",
        "30 2 * * *",
        utc(2026, 3, 28, 12),
        {
            (SHIFT, FIRST): [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)],
            (SHIFT, BOTH): [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)],
            (SKIP, FIRST): [utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)],
            (SKIP, BOTH): [utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)],
        },
    ),
    # Berlin autumn: 02:30 occurs at 00:30Z (CEST) and 01:30Z (CET) on 2026-10-25.
    (
        "Europe/Berlin",
        "30 2 * * *",
        utc(2026, 10, 24, 12),
        {
            (SHIFT, FIRST): [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
            (SHIFT, BOTH): [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30), utc(2026, 10, 26, 1, 30)],
            (SKIP, FIRST): [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
            (SKIP, BOTH): [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30), utc(2026, 10, 26, 1, 30)],
        },
    ),
    # New York: two skipped wall times collapse into one shifted fire at 03:00 EDT (07:00Z).
    (
        "America/New_York",
        "0,30 2 * * *",
        utc(2026, 3, 8),
        {
            (SHIFT, FIRST): [utc(2026, 3, 8, 7), utc(2026, 3, 9, 6)],
            (SKIP, FIRST): [utc(2026, 3, 9, 6), utc(2026, 3, 9, 6, 30)],
        },
    ),
    (
        "America/New_York",
        "30 1 * * *",
        utc(2026, 10, 31, 12),
        {
            (SHIFT, FIRST): [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)],
            (SHIFT, BOTH): [utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30), utc(2026, 11, 2, 6, 30)],
        },
    ),
    # Lord Howe moves by 30 minutes: 02:15 is skipped on 2026-10-04 (02:00 -> 02:30 at 15:30Z) and 01:45
    # repeated on 2026-04-05 (+11 -> +10:30 at 15:00Z).
    (
        "Australia/Lord_Howe",
        "15 2 * * *",
        utc(2026, 10, 3, 12),
        {
            (SHIFT, FIRST): [utc(2026, 10, 3, 15, 30), utc(2026, 10, 4, 15, 15)],
            (SKIP, BOTH): [utc(2026, 10, 4, 15, 15), utc(2026, 10, 5, 15, 15)],
        },
    ),
    (
        "Australia/Lord_Howe",
        "45 1 * * *",
        utc(2026, 4, 4, 12),
        {
            (SHIFT, FIRST): [utc(2026, 4, 4, 14, 45), utc(2026, 4, 5, 15, 15)],
            (SHIFT, BOTH): [utc(2026, 4, 4, 14, 45), utc(2026, 4, 4, 15, 15), utc(2026, 4, 5, 15, 15)],
        },
    ),
    # Santiago: midnight does not exist on 2026-09-06 (00:00 -> 01:00 at 04:00Z); 23:30 on 2026-04-04 is
    # repeated (-03 -> -04 at 03:00Z).
    (
        "America/Santiago",
        "0 0 * * *",
        utc(2026, 9, 5, 12),
        {
            (SHIFT, FIRST): [utc(2026, 9, 6, 4), utc(2026, 9, 7, 3)],
            (SKIP, FIRST): [utc(2026, 9, 7, 3), utc(2026, 9, 8, 3)],
        },
    ),
    (
        "America/Santiago",
        "30 23 * * *",
        utc(2026, 4, 4, 12),
        {
            (SHIFT, FIRST): [utc(2026, 4, 5, 2, 30), utc(2026, 4, 6, 3, 30)],
            (SKIP, BOTH): [utc(2026, 4, 5, 2, 30), utc(2026, 4, 5, 3, 30), utc(2026, 4, 6, 3, 30)],
        },
    ),
    # Havana: midnight skipped on 2026-03-08 (00:00 -> 01:00 at 05:00Z) and repeated on 2026-11-01.
    (
        "America/Havana",
        "0 0 * * *",
        utc(2026, 3, 7, 12),
        {
            (SHIFT, BOTH): [utc(2026, 3, 8, 5), utc(2026, 3, 9, 4)],
            (SKIP, BOTH): [utc(2026, 3, 9, 4), utc(2026, 3, 10, 4)],
        },
    ),
    (
        "America/Havana",
        "0 0 * * *",
        utc(2026, 10, 31, 12),
        {
            (SHIFT, FIRST): [utc(2026, 11, 1, 4), utc(2026, 11, 2, 5)],
            (SHIFT, BOTH): [utc(2026, 11, 1, 4), utc(2026, 11, 1, 5), utc(2026, 11, 2, 5)],
        },
    ),
    # Casablanca: the Ramadan change goes back (+01 -> +00 at 02:00Z on 2026-02-15: 02:30 repeated) and
    # forward again (02:00 -> 03:00 at 02:00Z on 2026-03-22: 02:30 skipped).
    (
        "Africa/Casablanca",
        "30 2 * * *",
        utc(2026, 2, 14, 12),
        {
            (SHIFT, FIRST): [utc(2026, 2, 15, 1, 30), utc(2026, 2, 16, 2, 30)],
            (SHIFT, BOTH): [utc(2026, 2, 15, 1, 30), utc(2026, 2, 15, 2, 30), utc(2026, 2, 16, 2, 30)],
        },
    ),
    (
        "Africa/Casablanca",
        "30 2 * * *",
        utc(2026, 3, 21, 12),
        {
            (SHIFT, FIRST): [utc(2026, 3, 22, 2), utc(2026, 3, 23, 1, 30)],
            (SKIP, FIRST): [utc(2026, 3, 23, 1, 30), utc(2026, 3, 24, 1, 30)],
        },
    ),
]


@pytest.mark.parametrize(("zone", "expr", "after", "expected"), WALL_CASES)
def test_cron_wall_clock_mode_under_each_policy(
    zone: str, expr: str, after: datetime, expected: dict[tuple[DstGap, DstOverlap], list[datetime]]
) -> None:
    for (gap, overlap), times in expected.items():
        got = fire_times(cron(expr, pol(gap, overlap)), zone, after, len(times))
        assert got == times, (gap, overlap)
    # No policy is the documented wall-clock default, SHIFT / FIRST.
    default = expected.get((SHIFT, FIRST))
    if default is not None:
        assert fire_times(cron(expr, None), zone, after, len(default)) == default


# --- cron, real-time mode --------------------------------------------------------------------------------


def test_cron_real_time_mode_defaults_to_skip_both_and_obeys_an_explicit_policy() -> None:
    berlin = "Europe/Berlin"
    spring, autumn = utc(2026, 3, 29, 0, 30), utc(2026, 10, 25, 0, 15)
    # `*/30 * * * *`: every half hour of elapsed time by default.
    assert fire_times(cron("*/30 * * * *", None), berlin, spring, 3) == [
        utc(2026, 3, 29, 1),  # 03:00 CEST; 02:00 and 02:30 do not exist
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 29, 2),
    ]
    # SHIFT: the skipped 02:00 and 02:30 fire at the end of the gap, which 03:00 shares: one fire.
    assert fire_times(cron("*/30 * * * *", DstPolicy(gap=SHIFT)), berlin, spring, 2) == [
        utc(2026, 3, 29, 1),
        utc(2026, 3, 29, 1, 30),
    ]
    # `*/30 2 * * *` (real time): SKIP fires nothing that day, SHIFT fires once at 03:00 CEST.
    assert fire_times(cron("*/30 2 * * *", None), berlin, utc(2026, 3, 28, 12), 1) == [utc(2026, 3, 30, 0)]
    assert fire_times(cron("*/30 2 * * *", DstPolicy(gap=SHIFT)), berlin, utc(2026, 3, 28, 12), 2) == [
        utc(2026, 3, 29, 1),
        utc(2026, 3, 30, 0),
    ]
    # Overlap: by default every real half hour fires, both copies of 02:00 and 02:30; FIRST drops the repeats.
    both = [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1), utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 2)]
    assert fire_times(cron("*/30 * * * *", None), berlin, autumn, 4) == both
    assert fire_times(cron("*/30 * * * *", DstPolicy(overlap=BOTH)), berlin, autumn, 4) == both
    assert fire_times(cron("*/30 * * * *", DstPolicy(overlap=FIRST)), berlin, autumn, 3) == [
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 2),  # 03:00 CET: the second 02:00 and 02:30 are not fired
        utc(2026, 10, 25, 2, 30),
    ]


def test_an_empty_or_partial_policy_keeps_the_defaults_of_the_fields_it_leaves_out() -> None:
    after = utc(2026, 10, 24, 12)
    assert fire_times(cron("30 2 * * *", DstPolicy()), "Europe/Berlin", after, 3) == fire_times(
        cron("30 2 * * *", None), "Europe/Berlin", after, 3
    )
    # gap given, overlap left to the wall-clock default FIRST.
    assert fire_times(cron("30 2 * * *", DstPolicy(gap=SKIP)), "Europe/Berlin", after, 2) == [
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]


# --- RRULE -----------------------------------------------------------------------------------------------

DAILY_0230 = "DTSTART:20260101T023000\nRRULE:FREQ=DAILY"


def rrule(text: str, policy: DstPolicy | None) -> RRuleTrigger:
    return RRuleTrigger(rrule=text, start_at=utc(2026, 1, 1), dst_policy=policy)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (None, [utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)]),  # §3.3.5: 02:30 read as +01:00 = 03:30
        (pol(SHIFT, BOTH), [utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)]),
        (pol(SKIP, FIRST), [utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]),
        (DstPolicy(gap=SKIP), [utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]),
    ],
)
def test_rrule_gap(policy: DstPolicy | None, expected: list[datetime]) -> None:
    assert fire_times(rrule(DAILY_0230, policy), "Europe/Berlin", utc(2026, 3, 28, 12), 2) == expected


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (None, [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]),
        (pol(SKIP, FIRST), [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]),
        (pol(SHIFT, BOTH), [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30), utc(2026, 10, 26, 1, 30)]),
    ],
)
def test_rrule_overlap(policy: DstPolicy | None, expected: list[datetime]) -> None:
    assert fire_times(rrule(DAILY_0230, policy), "Europe/Berlin", utc(2026, 10, 24, 12), len(expected)) == expected


def test_rrule_overlap_both_from_inside_the_overlap_and_count_counts_wall_times() -> None:
    trigger = rrule("DTSTART:20261020T023000\nRRULE:FREQ=DAILY;COUNT=6", DstPolicy(overlap=BOTH))
    # From between the two copies, the second is still to come.
    assert next_fire(trigger, "Europe/Berlin", utc(2026, 10, 25, 0, 45)) == utc(2026, 10, 25, 1, 30)
    # COUNT=6: Oct 20..25, the 25th's two copies being one occurrence.
    times = fire_times(trigger, "Europe/Berlin", utc(2026, 10, 1), 10)
    assert len(times) == 7 and times[-2:] == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)]


def test_rrule_skip_counts_the_dropped_occurrence_like_an_exdate() -> None:
    trigger = rrule("DTSTART:20260327T023000\nRRULE:FREQ=DAILY;COUNT=4", DstPolicy(gap=SKIP))
    assert fire_times(trigger, "Europe/Berlin", utc(2026, 3, 1), 10) == [
        utc(2026, 3, 27, 1, 30),
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 30, 0, 30),
    ]


def test_rrule_exdate_removes_both_copies_under_both() -> None:
    text = "DTSTART:20261020T023000\nRRULE:FREQ=DAILY\nEXDATE:20261025T023000"
    assert fire_times(rrule(text, DstPolicy(overlap=BOTH)), "Europe/Berlin", utc(2026, 10, 24, 12), 1) == [
        utc(2026, 10, 26, 1, 30)
    ]


def test_rrule_rdate_follows_the_policy() -> None:
    text = "DTSTART:20260101T090000\nRRULE:FREQ=YEARLY\nRDATE:20260329T023000,20261025T023000"
    after = utc(2026, 3, 1)
    assert fire_times(rrule(text, None), "Europe/Berlin", after, 2) == [
        utc(2026, 3, 29, 1, 30),
        utc(2026, 10, 25, 0, 30),
    ]
    assert fire_times(rrule(text, pol(SKIP, BOTH)), "Europe/Berlin", after, 2) == [
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 25, 1, 30),
    ]


def test_rrule_lord_howe_and_santiago() -> None:
    # Lord Howe: 02:15 skipped on 2026-10-04; §3.3.5 reads it at +10:30, i.e. 02:45 local.
    text = "DTSTART:20261001T021500\nRRULE:FREQ=DAILY"
    after = utc(2026, 10, 3, 12)
    assert next_fire(rrule(text, None), "Australia/Lord_Howe", after) == utc(2026, 10, 3, 15, 45)
    assert next_fire(rrule(text, DstPolicy(gap=SKIP)), "Australia/Lord_Howe", after) == utc(2026, 10, 4, 15, 15)
    # Santiago: midnight skipped on 2026-09-06.
    text = "DTSTART:20260901T000000\nRRULE:FREQ=DAILY"
    after = utc(2026, 9, 5, 12)
    assert next_fire(rrule(text, None), "America/Santiago", after) == utc(2026, 9, 6, 4)
    assert next_fire(rrule(text, DstPolicy(gap=SKIP)), "America/Santiago", after) == utc(2026, 9, 7, 3)


# --- the brute-force reference -----------------------------------------------------------------------------


def _offsets(wall: datetime, tz: ZoneInfo) -> tuple[timedelta, timedelta]:
    first = wall.replace(tzinfo=tz).utcoffset()
    second = wall.replace(tzinfo=tz, fold=1).utcoffset()
    assert first is not None and second is not None
    return first, second


def _gap_end(wall: datetime, tz: ZoneInfo) -> datetime:
    """The first real minute whose local time is past ``wall`` (a wall time inside a gap)."""
    instant = (wall - max(_offsets(wall, tz))).replace(tzinfo=UTC)
    while instant.astimezone(tz).replace(tzinfo=None) < wall:
        instant += timedelta(minutes=1)
    return instant


def reference_instants(wall: datetime, tz: ZoneInfo, skip: bool, both: bool, kind: str) -> list[datetime]:
    first, second = _offsets(wall, tz)
    if first == second:
        return [(wall - first).replace(tzinfo=UTC)]
    if second > first:  # gap
        if skip:
            return []
        # RFC 5545 reads a gap time with the offset before the gap; cron fires at the end of the gap.
        return [(wall - first).replace(tzinfo=UTC)] if kind == "rrule" else [_gap_end(wall, tz)]
    copies = [(wall - first).replace(tzinfo=UTC), (wall - second).replace(tzinfo=UTC)]
    return copies if both else copies[:1]


def cron_matches(expr: CronExpr, wall: datetime) -> bool:
    if wall.month not in expr.months or wall.hour not in expr.hours or wall.minute not in expr.minutes:
        return False
    dom, dow = wall.day in expr.days_of_month, wall.isoweekday() % 7 in expr.days_of_week
    return (dom or dow) if expr.dom_restricted and expr.dow_restricted else (dom and dow)


def brute_force(walls: list[datetime], tz: ZoneInfo, after: datetime, skip: bool, both: bool, kind: str) -> datetime:
    found = [i for wall in walls for i in reference_instants(wall, tz, skip, both, kind) if i > after]
    return min(found)


def _transitions() -> list[tuple[str, datetime]]:
    out = []
    for key in ZONES:
        tz = ZoneInfo(key)
        t = utc(2026, 1, 1)
        previous = t.astimezone(tz).utcoffset()
        while t.year < 2027:
            t += timedelta(minutes=30)
            offset = t.astimezone(tz).utcoffset()
            if offset != previous:
                out.append((key, t))
            previous = offset
    return out


TRANSITIONS = _transitions()
CRONS = [
    "30 2 * * *",
    "0 0 * * *",
    "45 23 * * *",
    "15 1 * * *",
    "0,30 0-3 * * *",
    "*/20 * * * *",
    "*/15 1-2 * * *",
    "5 * * * *",
    "50 0,2,23 * * *",
    "0 */2 * * *",
]
RRULES = [
    "FREQ=DAILY;BYHOUR=2;BYMINUTE=30",
    "FREQ=DAILY;BYHOUR=0,1,2,3;BYMINUTE=0,45",
    "FREQ=HOURLY;BYMINUTE=10,40",
    "FREQ=MINUTELY;INTERVAL=25",
    "FREQ=DAILY;BYHOUR=23;BYMINUTE=30",
    "FREQ=DAILY",
]
CHOICES = [(skip, both) for skip in (False, True) for both in (False, True)]


def _window(after: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    local = after.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0)
    return local - timedelta(hours=6), local + timedelta(days=2)


@settings(max_examples=200, deadline=None)
@given(
    transition=st.sampled_from(TRANSITIONS),
    shift=st.integers(-240, 240),
    expr=st.sampled_from(CRONS),
    choice=st.sampled_from([*CHOICES, None]),
    partial=st.sampled_from(PARTIAL),
)
def test_cron_matches_the_brute_force_reference(
    transition: tuple[str, datetime], shift: int, expr: str, choice: tuple[bool, bool] | None, partial: DstPolicy
) -> None:
    key, at = transition
    tz = ZoneInfo(key)
    after = at + timedelta(minutes=shift, seconds=17)
    parsed = parse_cron(expr)
    real_time = not parsed.wall_clock
    if choice is None:  # no policy or a partial one: the mode's defaults fill in
        policy = partial
        skip = real_time if partial.gap is None else partial.gap is SKIP
        both = real_time if partial.overlap is None else partial.overlap is BOTH
    else:
        skip, both = choice
        policy = pol(SKIP if skip else SHIFT, BOTH if both else FIRST)
    start, end = _window(after, tz)
    walls = [start + timedelta(minutes=m) for m in range(int((end - start).total_seconds() // 60))]
    expected = brute_force([w for w in walls if cron_matches(parsed, w)], tz, after, skip, both, "cron")
    assert next_fire(cron(expr, policy), key, after) == expected
    if choice is None and partial == DstPolicy():
        assert next_fire(cron(expr, None), key, after) == expected


@settings(max_examples=200, deadline=None)
@given(
    transition=st.sampled_from(TRANSITIONS),
    shift=st.integers(-240, 240),
    rule=st.sampled_from(RRULES),
    choice=st.sampled_from(CHOICES),
)
def test_rrule_matches_the_brute_force_reference(
    transition: tuple[str, datetime], shift: int, rule: str, choice: tuple[bool, bool]
) -> None:
    key, at = transition
    tz = ZoneInfo(key)
    skip, both = choice
    after = at + timedelta(minutes=shift, seconds=17)
    text = f"DTSTART:20251201T001500\nRRULE:{rule}"
    # The rule's wall times do not depend on the zone: list them by evaluating it in UTC.
    start, end = _window(after, tz)
    in_utc = Compiled(parse_spec(text), ZoneInfo("UTC"), utc(2025, 12, 1))
    walls, cursor = [], start.replace(tzinfo=UTC) - timedelta(seconds=1)
    while (nxt := in_utc.next_after(cursor)) is not None and nxt.replace(tzinfo=None) <= end:
        walls.append(nxt.replace(tzinfo=None))
        cursor = nxt
    expected = brute_force(walls, tz, after, skip, both, "rrule")
    policy = pol(SKIP if skip else SHIFT, BOTH if both else FIRST)
    assert next_fire(rrule(text, policy), key, after) == expected
    if not skip and not both:
        assert next_fire(rrule(text, None), key, after) == expected
