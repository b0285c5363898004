"""next_fire / first_fire over every trigger type, bounds, and the misfire policies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.model import CronTrigger, FixedDelayTrigger, MisfirePolicy, OneShotTrigger, RRuleTrigger
from shared.timing.misfire import MAX_MISSED_SCAN, plan_due
from shared.timing.next_fire import anchor_trigger, fire_times, first_fire, next_fire

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
GRACE = timedelta(seconds=60)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_cron_next_and_bounds():
    trigger = CronTrigger(cron="0 * * * *")
    assert next_fire(trigger, "UTC", T0) == utc(2026, 6, 1, 13)
    bounded = CronTrigger(cron="0 * * * *", start_at=utc(2026, 6, 2, 5), end_at=utc(2026, 6, 2, 7))
    assert fire_times(bounded, "UTC", T0, 10) == [utc(2026, 6, 2, 5), utc(2026, 6, 2, 6), utc(2026, 6, 2, 7)]
    assert next_fire(bounded, "UTC", utc(2026, 6, 2, 7)) is None


def test_cron_in_a_zone_returns_utc():
    result = next_fire(CronTrigger(cron="0 9 * * *"), "Europe/Berlin", T0)
    assert result == utc(2026, 6, 2, 7) and result.tzinfo is UTC


def test_leap_day_cron():
    times = fire_times(CronTrigger(cron="0 0 29 2 *"), "UTC", utc(2026, 1, 1), 3)
    assert times == [utc(2028, 2, 29), utc(2032, 2, 29), utc(2036, 2, 29)]


def test_impossible_cron_never_fires():
    assert next_fire(CronTrigger(cron="0 0 30 2 *"), "UTC", T0) is None


def test_fixed_delay_counts_from_the_previous_finish():
    trigger = FixedDelayTrigger(delay_sec=90)
    finished = T0 + timedelta(seconds=37)
    assert next_fire(trigger, "UTC", finished) == finished + timedelta(seconds=90)
    assert first_fire(trigger, "UTC", T0) == T0 + timedelta(seconds=90)
    start = T0 + timedelta(hours=1)
    assert first_fire(FixedDelayTrigger(delay_sec=90, start_at=start), "UTC", T0) == start
    ended = FixedDelayTrigger(delay_sec=90, end_at=T0 + timedelta(seconds=60))
    assert next_fire(ended, "UTC", T0) is None


def test_one_shot_fires_once_even_when_created_late():
    start = T0 - timedelta(hours=2)
    trigger = OneShotTrigger(start_at=start)
    assert first_fire(trigger, "UTC", T0) == start
    assert next_fire(trigger, "UTC", start) is None
    assert first_fire(trigger, "UTC", T0, fired_before=True) is None
    future = OneShotTrigger(start_at=T0 + timedelta(minutes=5))
    assert next_fire(future, "UTC", T0) == T0 + timedelta(minutes=5)


def test_rrule_is_anchored_and_uses_the_zone():
    trigger = anchor_trigger(RRuleTrigger(rrule="FREQ=WEEKLY;BYDAY=MO;BYHOUR=9"), T0 + timedelta(microseconds=7))
    assert trigger.start_at == T0
    times = fire_times(trigger, "Europe/Berlin", T0, 2)
    assert times == [utc(2026, 6, 8, 7), utc(2026, 6, 15, 7)]
    with pytest.raises(ValueError, match="anchor"):
        next_fire(RRuleTrigger(rrule="FREQ=DAILY"), "UTC", T0)


def test_naive_instants_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire(CronTrigger(cron="* * * * *"), "UTC", datetime(2026, 1, 1))


# --- misfire policies ---------------------------------------------------------------------------------

HOURLY = CronTrigger(cron="0 * * * *")
OUTAGE_START = utc(2026, 6, 1, 3)  # next_run_at when the workers went away
NOW = utc(2026, 6, 1, 8, 0, 20)  # back 5 hours later, 20 s after an occurrence


def test_on_time_occurrence_fires_whatever_the_policy():
    for policy in MisfirePolicy:
        plan = plan_due(HOURLY, "UTC", utc(2026, 6, 1, 8), NOW, policy, 100, GRACE)
        assert plan.fire_at == [utc(2026, 6, 1, 8)] and plan.next_run_at == utc(2026, 6, 1, 9)
        assert plan.missed == 0


def test_fire_once_after_an_outage():
    plan = plan_due(HOURLY, "UTC", OUTAGE_START, NOW, MisfirePolicy.FIRE_ONCE, 100, GRACE)
    # 03..07 were missed (5), 08:00 is within the grace period and fires on its own.
    assert plan.fire_at == [OUTAGE_START, utc(2026, 6, 1, 8)]
    assert (plan.missed, plan.skipped) == (5, 4)
    assert plan.next_run_at == utc(2026, 6, 1, 9)


def test_skip_after_an_outage():
    plan = plan_due(HOURLY, "UTC", OUTAGE_START, NOW + timedelta(minutes=5), MisfirePolicy.SKIP, 100, GRACE)
    assert plan.fire_at == [] and (plan.missed, plan.skipped) == (6, 6)
    assert plan.next_run_at == utc(2026, 6, 1, 9)


def test_catch_up_after_an_outage_is_limited():
    plan = plan_due(HOURLY, "UTC", OUTAGE_START, NOW, MisfirePolicy.CATCH_UP, 100, GRACE)
    assert plan.fire_at == [utc(2026, 6, 1, h) for h in range(3, 9)]
    limited = plan_due(HOURLY, "UTC", OUTAGE_START, NOW, MisfirePolicy.CATCH_UP, 2, GRACE)
    assert limited.fire_at == [utc(2026, 6, 1, 3), utc(2026, 6, 1, 4), utc(2026, 6, 1, 8)]
    assert limited.skipped == 3


def test_long_outage_of_a_dense_cron_is_bounded():
    every_minute = CronTrigger(cron="* * * * *")
    week_ago = NOW - timedelta(days=7)
    plan = plan_due(every_minute, "UTC", week_ago.replace(second=0), NOW, MisfirePolicy.FIRE_ONCE, 100, GRACE)
    assert plan.missed == MAX_MISSED_SCAN and plan.fire_at[0] == week_ago.replace(second=0)
    assert plan.fire_at[1:] == [utc(2026, 6, 1, 8, 0)]  # 07:59 is older than the grace period
    assert plan.next_run_at == utc(2026, 6, 1, 8, 1)


def test_exhausted_schedule_has_no_next_run():
    trigger = OneShotTrigger(start_at=OUTAGE_START)
    assert plan_due(trigger, "UTC", OUTAGE_START, NOW, MisfirePolicy.FIRE_ONCE, 100, GRACE).fire_at == [OUTAGE_START]
    skipped = plan_due(trigger, "UTC", OUTAGE_START, NOW, MisfirePolicy.SKIP, 100, GRACE)
    assert skipped.fire_at == [] and skipped.next_run_at is None and skipped.skipped == 1


def test_fixed_delay_parks_until_its_run_finishes():
    trigger = FixedDelayTrigger(delay_sec=600)
    due = NOW - timedelta(seconds=5)
    plan = plan_due(trigger, "UTC", due, NOW, MisfirePolicy.FIRE_ONCE, 100, GRACE)
    assert plan.fire_at == [due] and plan.next_run_at is None and plan.parked
    late = plan_due(trigger, "UTC", OUTAGE_START, NOW, MisfirePolicy.SKIP, 100, GRACE)
    assert late.fire_at == [] and late.next_run_at == NOW + timedelta(seconds=600) and not late.parked


# --- properties over every trigger type ------------------------------------------------------------------

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
CRONS = ["* * * * *", "*/7 * * * *", "0 9 * * 1-5", "30 2 * * *", "0 0 29 2 *", "15 */3 1,15 * *", "@hourly"]
RRULES = [
    "FREQ=DAILY;BYHOUR=2;BYMINUTE=30",
    "FREQ=WEEKLY;BYDAY=MO,FR;BYHOUR=9",
    "FREQ=MINUTELY;INTERVAL=45",
    "FREQ=MONTHLY;BYMONTHDAY=31",
    "FREQ=HOURLY;INTERVAL=5;COUNT=40",
]
instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(UTC))


@st.composite
def triggers(draw):  # type: ignore[no-untyped-def]
    start = draw(st.one_of(st.none(), instants))
    end = None if start is None or draw(st.booleans()) else start + timedelta(days=draw(st.integers(1, 400)))
    kind = draw(st.sampled_from(["cron", "rrule", "delay"]))
    if kind == "cron":
        return CronTrigger(cron=draw(st.sampled_from(CRONS)), start_at=start, end_at=end)
    if kind == "rrule":
        anchor = start or draw(instants)
        return RRuleTrigger(rrule=draw(st.sampled_from(RRULES)), start_at=anchor, end_at=end)
    return FixedDelayTrigger(delay_sec=draw(st.integers(1, 10**6)), start_at=start, end_at=end)


@settings(max_examples=150, deadline=None)
@given(trigger=triggers(), tz=st.sampled_from(ZONES), after=instants)
def test_next_fire_is_strictly_increasing_idempotent_and_bounded(trigger, tz, after):
    previous = after
    for _ in range(8):
        result = next_fire(trigger, tz, previous)
        assert result == next_fire(trigger, tz, previous)  # idempotent
        if result is None:
            break
        assert result > previous and result.tzinfo is UTC
        if trigger.end_at is not None:
            assert result <= trigger.end_at
        if trigger.start_at is not None and not isinstance(trigger, FixedDelayTrigger):
            assert result >= trigger.start_at
        previous = result


# --- instants with any offset, normalised at the edge ------------------------------------------------------

GAP_RULE = "DTSTART;TZID=Europe/Berlin:20260309T023000\nRRULE:FREQ=DAILY"
GAP_OCCURRENCE = utc(2026, 3, 29, 1, 30)  # 02:30 does not exist that day: 03:30 CEST


@pytest.mark.parametrize("order", [("+02:00", "Z"), ("Z", "+02:00"), ("-05:00", "+02:00")])
def test_the_same_instant_with_any_offset_gives_the_same_answer_in_any_order(order: tuple[str, str]) -> None:
    forms = {
        "Z": "2026-03-29T01:01:00+00:00",
        "+02:00": "2026-03-29T03:01:00+02:00",
        "-05:00": "2026-03-28T20:01:00-05:00",
    }
    # A fresh trigger per test, so that the cache starts empty for it.
    trigger = RRuleTrigger(
        rrule=GAP_RULE + f"\nEXDATE:2030010{len(order[0])}T000000Z", start_at=T0 - timedelta(days=120)
    )
    for form in order:
        after = datetime.fromisoformat(forms[form])
        result = next_fire(trigger, "Europe/Berlin", after)
        assert result == GAP_OCCURRENCE and result.tzinfo is UTC, form
        assert fire_times(trigger, "Europe/Berlin", after, 1) == [GAP_OCCURRENCE]


def test_start_and_end_with_offsets_are_the_same_bounds_as_in_utc() -> None:
    in_utc = RRuleTrigger(rrule="FREQ=HOURLY", start_at=utc(2026, 3, 29, 0, 30), end_at=utc(2026, 3, 29, 3, 30))
    plus_two = timezone(timedelta(hours=2))
    shifted = RRuleTrigger(
        rrule="FREQ=HOURLY",
        start_at=datetime(2026, 3, 29, 2, 30, tzinfo=plus_two),
        end_at=datetime(2026, 3, 29, 5, 30, tzinfo=plus_two),
    )
    expected = [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 2, 30), utc(2026, 3, 29, 3, 30)]
    for trigger in (in_utc, shifted):
        assert fire_times(trigger, "Europe/Berlin", utc(2026, 3, 28), 10) == expected
        assert first_fire(trigger, "Europe/Berlin", datetime(2026, 3, 28, 1, tzinfo=plus_two)) == expected[0]
    cron = CronTrigger(cron="0 * * * *", start_at=datetime(2026, 3, 29, 2, 30, tzinfo=plus_two))
    assert next_fire(cron, "UTC", utc(2026, 3, 28)) == utc(2026, 3, 29, 1)


def test_a_budget_reaches_every_entry_point() -> None:
    from shared.errors import EvaluationBudgetExceeded
    from shared.timing.budget import Budget

    class Stepping:
        now = 0.0

        def __call__(self) -> float:
            self.now += 0.001
            return self.now

    hostile = RRuleTrigger(rrule="FREQ=HOURLY;INTERVAL=168;BYDAY=TU", start_at=utc(2026, 1, 5))
    for call in (
        lambda budget: next_fire(hostile, "UTC", T0, budget=budget),
        lambda budget: first_fire(hostile, "UTC", T0, budget=budget),
        lambda budget: fire_times(hostile, "UTC", T0, 3, budget=budget),
    ):
        with pytest.raises(EvaluationBudgetExceeded):
            call(Budget(Stepping(), 0.002))
    # Cron's scan is bounded by its own horizon, and ticks once per month it walks.
    counted = Budget(Stepping(), 0.002)
    assert next_fire(CronTrigger(cron="0 0 30 2 *"), "UTC", T0 + timedelta(seconds=1), budget=counted) is None
    assert counted._ticks > 0
    # Nothing cut off by the budget was cached: an unlimited call still gets the real answer.
    assert next_fire(hostile, "UTC", T0) is None
    easy = RRuleTrigger(rrule="FREQ=DAILY;BYHOUR=9", start_at=T0)
    assert next_fire(easy, "UTC", T0, budget=Budget(Stepping(), 10)) == utc(2026, 6, 2, 9)


# --- the "never fires" check of schedule validation ------------------------------------------------------


@pytest.mark.parametrize(
    ("rrule", "now"),
    [
        ("DTSTART;TZID=Europe/Berlin:20260101T090000\nRRULE:FREQ=DAILY;INTERVAL=3;COUNT=1000", utc(2032, 6, 1)),
        ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO", utc(2026, 3, 1)),
        ("DTSTART:20260101T000000Z\nRRULE:FREQ=MINUTELY;INTERVAL=997;COUNT=1000", utc(2027, 6, 1)),
        ("FREQ=HOURLY;BYMINUTE=0,30;BYSETPOS=1", utc(2026, 3, 1)),
        ("FREQ=DAILY;COUNT=1500", utc(2026, 3, 1)),
        ("FREQ=WEEKLY;INTERVAL=1500", utc(2026, 3, 1)),
        ("FREQ=MONTHLY;BYDAY=MO,-1FR;BYHOUR=10;BYMINUTE=0", utc(2026, 3, 1)),
    ],
)
def test_rules_that_fire_are_not_refused_as_never_firing(rrule: str, now: datetime) -> None:
    from shared.validation import check_trigger

    assert check_trigger(RRuleTrigger(rrule=rrule), "Europe/Berlin", now) == []


@pytest.mark.parametrize(
    "rrule",
    [
        "DTSTART:20200101T000000Z\nRRULE:FREQ=DAILY;COUNT=10",  # all ten are over
        "FREQ=DAILY;UNTIL=20250101T000000Z",
        "FREQ=DAILY;INTERVAL=7;BYDAY=TU",  # from a Monday: never a Tuesday
    ],
)
def test_rules_that_provably_never_fire_are_refused(rrule: str) -> None:
    from shared.errors import FieldProblem
    from shared.validation import check_trigger

    monday = utc(2026, 1, 5, 12)
    problems = check_trigger(RRuleTrigger(rrule=rrule), "UTC", monday)
    assert problems == [FieldProblem("trigger.rrule", "never fires (no occurrence after now within bounds)")]


def test_a_stored_long_count_keeps_firing_to_its_last_occurrence() -> None:
    """What the worker does: each next fire from the previous one, through the result cache."""
    trigger = RRuleTrigger(
        rrule="DTSTART;TZID=Europe/Berlin:20260101T090000\nRRULE:FREQ=DAILY;INTERVAL=3;COUNT=1000",
        start_at=utc(2025, 12, 1),
    )
    times = fire_times(trigger, "Europe/Berlin", utc(2025, 12, 31), 2000)
    assert len(times) == 1000
    assert times[0] == utc(2026, 1, 1, 8) and times[-1] == utc(2034, 3, 17, 8)
    assert next_fire(trigger, "Europe/Berlin", times[-1]) is None
    plan = plan_due(trigger, "Europe/Berlin", times[-2], times[-2] + timedelta(seconds=5), MisfirePolicy.SKIP, 1, GRACE)
    assert plan.fire_at == [times[-2]] and plan.next_run_at == times[-1]
