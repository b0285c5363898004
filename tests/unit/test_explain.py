"""shared.timing.explain: what produced each fire time, and what DST did to it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import EvaluationBudgetExceeded
from shared.model import (
    CronTrigger,
    DstEffect,
    DstGap,
    DstOverlap,
    DstPolicy,
    FixedDelayTrigger,
    OneShotTrigger,
    RRuleTrigger,
    Trigger,
)
from shared.timing.budget import Budget
from shared.timing.explain import Explanation, effective_dst_policy, explain_fire, explain_fire_times
from shared.timing.next_fire import anchor_trigger, fire_times

SHIFT, SKIP, FIRST, BOTH = DstGap.SHIFT, DstGap.SKIP, DstOverlap.FIRST, DstOverlap.BOTH
FALLBACK = "not a fire time of this trigger"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def explained(trigger: Trigger, tz: str, after: datetime, count: int) -> list[Explanation]:
    trigger = anchor_trigger(trigger, after)
    return explain_fire_times(trigger, tz, fire_times(trigger, tz, after, count))


# --- cron ------------------------------------------------------------------------------------------------


def test_cron_fields_that_produced_a_fire_time() -> None:
    [first] = explained(CronTrigger(cron="0 9 * * 1-5"), "Europe/Berlin", utc(2026, 6, 1), 1)
    assert first.at == utc(2026, 6, 1, 7) and first.local.isoformat() == "2026-06-01T09:00:00+02:00"
    assert first.matched == (
        'minute=0 (field "0")',
        'hour=9 (field "9")',
        'day-of-month=1 (field "*")',
        'month=JUN (field "*")',
        'day-of-week=MON (field "1-5")',
    )
    assert first.dst is None and first.reason is None


def test_cron_seconds_field_macros_and_the_vixie_or_rule() -> None:
    [fire] = explained(CronTrigger(cron="30 0 9 * * *"), "UTC", utc(2026, 6, 1), 1)
    assert fire.matched[0] == 'second=30 (field "30")'
    [fire] = explained(CronTrigger(cron="@daily"), "UTC", utc(2026, 6, 1, 1), 1)
    assert fire.matched[:2] == ('minute=0 (field "0")', 'hour=0 (field "0")')
    fires = explained(CronTrigger(cron="0 9 15 * MON"), "UTC", utc(2026, 6, 9), 2)
    assert fires[0].at == utc(2026, 6, 15, 9)  # both a 15th and a Monday
    assert fires[0].matched[2] == (
        'day-of-month=15 (field "15") and day-of-week=MON (field "MON") (either day field may match)'
    )
    assert fires[1].matched[2] == 'day-of-week=MON (field "MON") (either day field may match)'


def test_cron_gap_shift_names_the_skipped_time_and_the_policy() -> None:
    trigger = CronTrigger(cron="30 2 * * *", dst_policy=DstPolicy(gap=SHIFT))
    [fire] = explained(trigger, "Europe/Berlin", utc(2026, 3, 28, 12), 1)
    assert fire.at == utc(2026, 3, 29, 1)
    assert fire.local.isoformat() == "2026-03-29T03:00:00+02:00"
    assert fire.dst is DstEffect.SHIFTED
    assert fire.reason == (
        "02:30 does not exist on 2026-03-29 in Europe/Berlin (clocks jump 02:00→03:00); "
        "fired at the end of the gap (dstPolicy.gap=SHIFT)"
    )
    # The fields that matched are those of the skipped wall time.
    assert fire.matched[:2] == ('minute=30 (field "30")', 'hour=2 (field "2")')
    # Without a policy the same, marked as the default.
    [fire] = explained(CronTrigger(cron="30 2 * * *"), "Europe/Berlin", utc(2026, 3, 28, 12), 1)
    assert fire.reason is not None and fire.reason.endswith(
        "(dstPolicy.gap=SHIFT, the default for a cron with a fixed minute and hour)"
    )


def test_cron_several_skipped_times_collapse_into_one_shifted_fire() -> None:
    trigger = CronTrigger(cron="*/15 2 * * *", dst_policy=DstPolicy(gap=SHIFT))
    fires = explained(trigger, "America/New_York", utc(2026, 3, 8), 2)
    assert fires[0].at == utc(2026, 3, 8, 7) and fires[0].dst is DstEffect.SHIFTED
    assert fires[0].reason is not None
    assert fires[0].reason.startswith(
        "02:00, 02:15, 02:30 and 1 more do not exist on 2026-03-08 in America/New_York (clocks jump 02:00→03:00)"
    )
    assert fires[1].at == utc(2026, 3, 9, 6) and fires[1].dst is None


def test_a_dense_gap_is_summarised_and_budgeted() -> None:
    trigger = CronTrigger(cron="* * 2 * * *", dst_policy=DstPolicy(gap=SHIFT))
    [fire] = explained(trigger, "Europe/Berlin", utc(2026, 3, 29, 0, 59, 59), 1)
    assert fire.at == utc(2026, 3, 29, 1) and fire.reason is not None
    assert fire.reason.startswith("02:00, 02:00:01, 02:00:02 and more do not exist on 2026-03-29")
    ticks = iter(range(10**9))
    with pytest.raises(EvaluationBudgetExceeded):
        explain_fire(trigger, "Europe/Berlin", fire.at, budget=Budget(lambda: float(next(ticks)), 0.5))


def test_cron_overlap_first_and_both() -> None:
    after = utc(2026, 10, 24, 12)
    [first, nxt] = explained(CronTrigger(cron="30 2 * * *"), "Europe/Berlin", after, 2)
    assert first.dst is DstEffect.OVERLAP_FIRST and nxt.dst is None
    assert first.reason == (
        "02:30 occurs twice on 2026-10-25 in Europe/Berlin (clocks go back 03:00→02:00); this is the first "
        "occurrence, the second occurrence (2026-10-25T02:30:00+01:00) does not fire (dstPolicy.overlap=FIRST, "
        "the default for a cron with a fixed minute and hour)"
    )
    both = CronTrigger(cron="30 2 * * *", dst_policy=DstPolicy(overlap=BOTH))
    [one, two, _] = explained(both, "Europe/Berlin", after, 3)
    assert (one.dst, two.dst) == (DstEffect.OVERLAP_FIRST, DstEffect.OVERLAP_SECOND)
    assert two.local.isoformat() == "2026-10-25T02:30:00+01:00"
    assert two.reason is not None and two.reason.endswith(
        "this is the second occurrence, after the first at 2026-10-25T02:30:00+02:00 (dstPolicy.overlap=BOTH)"
    )


def test_cron_real_time_defaults_are_named_as_such() -> None:
    fires = explained(CronTrigger(cron="*/30 * * * *"), "Europe/Berlin", utc(2026, 10, 25, 0, 15), 4)
    assert [f.dst for f in fires] == [
        DstEffect.OVERLAP_FIRST,
        DstEffect.OVERLAP_SECOND,
        DstEffect.OVERLAP_SECOND,
        None,
    ]
    assert fires[0].reason is not None
    assert fires[0].reason.endswith("the default for a cron whose minute or hour field starts with *)")


@pytest.mark.parametrize(
    ("zone", "expr", "after", "effect", "head"),
    [
        (
            "Australia/Lord_Howe",
            "15 2 * * *",
            utc(2026, 10, 3, 12),
            DstEffect.SHIFTED,
            "02:15 does not exist on 2026-10-04 in Australia/Lord_Howe (clocks jump 02:00→02:30)",
        ),
        (
            "Australia/Lord_Howe",
            "45 1 * * *",
            utc(2026, 4, 4, 12),
            DstEffect.OVERLAP_FIRST,
            "01:45 occurs twice on 2026-04-05 in Australia/Lord_Howe (clocks go back 02:00→01:30)",
        ),
        (
            "America/Santiago",
            "0 0 * * *",
            utc(2026, 9, 5, 12),
            DstEffect.SHIFTED,
            "00:00 does not exist on 2026-09-06 in America/Santiago (clocks jump 00:00→01:00)",
        ),
        (
            "America/Santiago",
            "30 23 * * *",
            utc(2026, 4, 4, 12),
            DstEffect.OVERLAP_FIRST,
            "23:30 occurs twice on 2026-04-04 in America/Santiago (clocks go back 00:00→23:00)",
        ),
        (
            "America/Havana",
            "0 0 * * *",
            utc(2026, 10, 31, 12),
            DstEffect.OVERLAP_FIRST,
            "00:00 occurs twice on 2026-11-01 in America/Havana (clocks go back 01:00→00:00)",
        ),
        (
            "Africa/Casablanca",
            "30 2 * * *",
            utc(2026, 3, 21, 12),
            DstEffect.SHIFTED,
            "02:30 does not exist on 2026-03-22 in Africa/Casablanca (clocks jump 02:00→03:00)",
        ),
    ],
)
def test_cron_transitions_in_the_tricky_zones(
    zone: str, expr: str, after: datetime, effect: DstEffect, head: str
) -> None:
    [fire] = explained(CronTrigger(cron=expr), zone, after, 1)
    assert fire.dst is effect
    assert fire.reason is not None and fire.reason.startswith(head), fire.reason


# --- RRULE -----------------------------------------------------------------------------------------------


def test_rrule_gap_is_shifted_by_rfc_5545() -> None:
    trigger = RRuleTrigger(rrule="DTSTART:20260101T023000\nRRULE:FREQ=DAILY;COUNT=100")
    [before, fire] = explained(trigger, "Europe/Berlin", utc(2026, 3, 28), 2)
    assert before.dst is None and before.matched[-1] == "occurrence 87 of COUNT=100"
    assert fire.local.isoformat() == "2026-03-29T03:30:00+02:00"
    assert fire.dst is DstEffect.SHIFTED
    assert fire.reason == (
        "02:30 does not exist on 2026-03-29 in Europe/Berlin (clocks jump 02:00→03:00); read with the offset "
        "from before the gap (RFC 5545 §3.3.5), i.e. 03:30 (dstPolicy.gap=SHIFT, the RFC 5545 default)"
    )
    assert fire.matched == (
        "FREQ=DAILY period 2026-03-29",
        "hour=2 (from DTSTART)",
        "minute=30 (from DTSTART)",
        "second=0 (from DTSTART)",
        "occurrence 88 of COUNT=100",
    )


def test_rrule_parts_bysetpos_and_ordinal_byday() -> None:
    trigger = RRuleTrigger(rrule="FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;BYHOUR=17", start_at=utc(2026, 1, 1))
    [fire] = explained(trigger, "UTC", utc(2026, 9, 1), 1)
    assert fire.at == utc(2026, 9, 30, 17)
    assert fire.matched == (
        "FREQ=MONTHLY period 2026-09",
        "day-of-week=WE (BYDAY=MO,TU,WE,TH,FR)",
        "hour=17 (BYHOUR=17)",
        "minute=0 (0: BYMINUTE left out next to a coarser BY part)",
        "second=0 (0: BYSECOND left out next to a coarser BY part)",
        "set position 22 of 22 (matched -1 of BYSETPOS=-1)",
    )
    trigger = RRuleTrigger(rrule="FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU;BYHOUR=2;BYMINUTE=30", start_at=utc(2026, 1, 1))
    [fire] = explained(trigger, "Europe/Berlin", utc(2026, 1, 1), 1)
    assert fire.dst is DstEffect.SHIFTED
    assert "day-of-week=SU, the last of the month (matched -1SU of BYDAY=-1SU)" in fire.matched
    trigger = RRuleTrigger(rrule="FREQ=MONTHLY;BYMONTHDAY=1,-1;INTERVAL=2", start_at=utc(2026, 1, 1, 8))
    fires = explained(trigger, "UTC", utc(2026, 1, 2), 2)
    assert fires[0].matched[:2] == (
        "FREQ=MONTHLY;INTERVAL=2 period 2026-01",
        "day-of-month=31 (matched -1 of BYMONTHDAY=-1,1)",
    )
    assert fires[0].matched[2] == "hour=8 (from startAt, the rule's DTSTART)"
    assert fires[1].matched[1] == "day-of-month=1 (matched 1 of BYMONTHDAY=-1,1)"


def test_rrule_weekly_hourly_yearday_weekno() -> None:
    weekly = RRuleTrigger(rrule="FREQ=WEEKLY;BYDAY=TU;WKST=SU;BYHOUR=9", start_at=utc(2026, 1, 1))
    [fire] = explained(weekly, "UTC", utc(2026, 6, 1), 1)
    assert fire.matched[0] == "FREQ=WEEKLY period from 2026-05-31 (WKST=SU)"
    hourly = RRuleTrigger(rrule="FREQ=HOURLY;INTERVAL=3;BYMINUTE=5", start_at=utc(2026, 1, 1))
    [fire] = explained(hourly, "UTC", utc(2026, 1, 1, 1), 1)
    assert fire.matched[:2] == ("FREQ=HOURLY;INTERVAL=3 period 2026-01-01T03:00", "minute=5 (BYMINUTE=5)")
    yearly = RRuleTrigger(rrule="FREQ=YEARLY;BYWEEKNO=1;BYDAY=MO;BYHOUR=6", start_at=utc(2026, 1, 1))
    [fire] = explained(yearly, "UTC", utc(2026, 1, 1), 1)
    assert "week=1 (BYWEEKNO=1)" in fire.matched
    yd = RRuleTrigger(rrule="FREQ=YEARLY;BYYEARDAY=-1;BYHOUR=6", start_at=utc(2026, 1, 1))
    [fire] = explained(yd, "UTC", utc(2026, 1, 1), 1)
    assert "day-of-year=365 (matched -1 of BYYEARDAY=-1)" in fire.matched


def test_rrule_overlap_both_and_explicit_sources() -> None:
    text = "DTSTART;TZID=America/New_York:20261025T013000\nRRULE:FREQ=DAILY\nRDATE:20261101T120000Z"
    trigger = RRuleTrigger(rrule=text, dst_policy=DstPolicy(overlap=BOTH), start_at=utc(2026, 1, 1))
    fires = explained(trigger, "UTC", utc(2026, 10, 31, 12), 3)
    assert [f.dst for f in fires] == [DstEffect.OVERLAP_FIRST, DstEffect.OVERLAP_SECOND, None]
    assert fires[0].local.isoformat() == "2026-11-01T01:30:00-04:00"  # the rule runs on its TZID's clock
    assert fires[2].matched == ("RDATE 2026-11-01T07:00:00",)
    dtstart = RRuleTrigger(rrule="DTSTART:20260105T100000Z\nRRULE:FREQ=MONTHLY;BYDAY=1FR", start_at=utc(2026, 1, 1))
    [fire, _] = explained(dtstart, "UTC", utc(2026, 1, 1), 2)
    assert fire.matched == ("DTSTART 2026-01-05T10:00:00 (always the first occurrence, RFC 5545 §3.8.5.3)",)


def test_other_trigger_kinds_and_the_effective_policy() -> None:
    one = OneShotTrigger(start_at=utc(2027, 1, 1))
    assert explain_fire(one, "UTC", utc(2027, 1, 1)).matched == ("ONE_SHOT at startAt 2027-01-01T00:00:00+00:00",)
    delay = FixedDelayTrigger(delay_sec=30)
    assert explain_fire(delay, "UTC", utc(2027, 1, 1)).matched[0].startswith("FIXED_DELAY: delaySec=30")
    assert effective_dst_policy(one) is None
    assert effective_dst_policy(CronTrigger(cron="0 9 * * *")) == DstPolicy(gap=SHIFT, overlap=FIRST)
    assert effective_dst_policy(CronTrigger(cron="*/5 * * * *")) == DstPolicy(gap=SKIP, overlap=BOTH)
    assert effective_dst_policy(CronTrigger(cron="*/5 * * * *", dst_policy=DstPolicy(gap=SHIFT))) == DstPolicy(
        gap=SHIFT, overlap=BOTH
    )
    assert effective_dst_policy(RRuleTrigger(rrule="FREQ=DAILY", dst_policy=DstPolicy(overlap=BOTH))) == DstPolicy(
        gap=SHIFT, overlap=BOTH
    )


def test_an_instant_the_trigger_does_not_produce_is_reported_not_guessed() -> None:
    assert explain_fire(CronTrigger(cron="0 9 * * *"), "UTC", utc(2026, 1, 1, 9, 1)).matched[0].startswith(FALLBACK)
    rule = RRuleTrigger(rrule="FREQ=DAILY;BYHOUR=9", start_at=utc(2026, 1, 1))
    assert explain_fire(rule, "UTC", utc(2026, 1, 1, 9, 1)).matched[0].startswith(FALLBACK)


def test_explaining_count_positions_is_budgeted() -> None:
    rule = RRuleTrigger(
        rrule="DTSTART:19000101T000000\nRRULE:FREQ=SECONDLY;COUNT=900000000000", start_at=utc(2026, 1, 1)
    )
    ticks = iter(range(10**9))
    with pytest.raises(EvaluationBudgetExceeded):
        explain_fire(rule, "UTC", utc(2900, 1, 1), budget=Budget(lambda: next(ticks) / 1000, 0.01))


# --- every fire time the evaluators produce is explained, consistently with the policy ------------------

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/Havana",
    "Africa/Casablanca",
]
TRANSITIONS = {
    "Europe/Berlin": [utc(2026, 3, 29, 1), utc(2026, 10, 25, 1)],
    "America/New_York": [utc(2026, 3, 8, 7), utc(2026, 11, 1, 6)],
    "Australia/Lord_Howe": [utc(2026, 4, 4, 15), utc(2026, 10, 3, 15, 30)],
    "America/Santiago": [utc(2026, 4, 5, 3), utc(2026, 9, 6, 4)],
    "America/Havana": [utc(2026, 3, 8, 5), utc(2026, 11, 1, 5)],
    "Africa/Casablanca": [utc(2026, 2, 15, 2), utc(2026, 3, 22, 2)],
}
CRONS = ["30 2 * * *", "0 0 * * *", "*/20 * * * *", "15,45 0-3 * * *", "30 23 * * *", "45 1 * * *"]
RRULES = ["FREQ=DAILY;BYHOUR=2;BYMINUTE=30", "FREQ=HOURLY;BYMINUTE=0,40", "FREQ=DAILY;BYHOUR=0,1,23;BYMINUTE=15"]


@settings(max_examples=120, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    which=st.integers(0, 1),
    shift=st.integers(-180, 60),
    kind=st.sampled_from(["cron", "rrule"]),
    index=st.integers(0, 5),
    gap=st.sampled_from([None, SHIFT, SKIP]),
    overlap=st.sampled_from([None, FIRST, BOTH]),
)
def test_every_fire_time_is_explained_consistently(
    zone: str, which: int, shift: int, kind: str, index: int, gap: DstGap | None, overlap: DstOverlap | None
) -> None:
    policy = DstPolicy(gap=gap, overlap=overlap)
    after = TRANSITIONS[zone][which] + timedelta(minutes=shift)
    trigger: Trigger
    if kind == "cron":
        trigger = CronTrigger(cron=CRONS[index], dst_policy=policy)
    else:
        trigger = RRuleTrigger(rrule=RRULES[index % len(RRULES)], start_at=utc(2026, 1, 1), dst_policy=policy)
    effective = effective_dst_policy(trigger)
    assert effective is not None
    for fire in explained(trigger, zone, after, 8):
        assert not fire.matched[0].startswith(FALLBACK), fire
        if effective.gap is SKIP:
            assert fire.dst is not DstEffect.SHIFTED
        if effective.overlap is FIRST:
            assert fire.dst is not DstEffect.OVERLAP_SECOND
        assert (fire.dst is None) == (fire.reason is None)
        if fire.dst is DstEffect.SHIFTED:
            assert "not exist on" in (fire.reason or "")
