"""The fleet's uptime decides misfires; the per-tenant fire rate and the fair-claim share. Pure, no database."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from shared.model import CronTrigger, FixedDelayTrigger, MisfirePolicy
from shared.timing.misfire import MAX_MISSED_SCAN, plan_due
from shared.timing.uptime import NEVER_UP, FleetUptime
from worker.fairness import FireRates, fresh_candidates

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
GRACE = timedelta(seconds=60)
HOURLY = CronTrigger(cron="0 * * * *")
MINUTELY = CronTrigger(cron="* * * * *")


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def test_intervals_merge_and_answer_up_at():
    uptime = FleetUptime.of([(NOW - hours(5), NOW - hours(3)), (NOW - hours(4), NOW - hours(2)), (NOW - hours(1), NOW)])
    assert uptime.starts == [NOW - hours(5), NOW - hours(1)] and uptime.ends == [NOW - hours(2), NOW]
    assert uptime.up_at(NOW - hours(3)) and uptime.up_at(NOW - hours(2)) and uptime.up_at(NOW)
    assert not uptime.up_at(NOW - hours(1.5)) and not uptime.up_at(NOW - hours(6))
    assert uptime.up_again_after(NOW - hours(1.5)) == NOW - hours(1)
    assert uptime.up_again_after(NOW + hours(1)) is None
    assert not NEVER_UP.up_at(NOW)


def test_a_busy_fleet_misses_nothing():
    """Workers were alive the whole time, merely behind: every late occurrence fires, whatever the policy."""
    alive = FleetUptime.of([(NOW - hours(10), NOW)])
    for policy in MisfirePolicy:
        plan = plan_due(HOURLY, "UTC", NOW - hours(3), NOW, policy, 100, GRACE, alive)
        assert plan.fire_at == [NOW - hours(3), NOW - hours(2), NOW - hours(1), NOW]
        assert plan.missed == 0 and plan.skipped == 0


def test_only_occurrences_due_while_the_fleet_was_down_are_missed():
    # Down from 5 h ago until 2.5 h ago; alive since.
    uptime = FleetUptime.of([(NOW - hours(8), NOW - hours(5)), (NOW - hours(2.5), NOW)])
    skip = plan_due(HOURLY, "UTC", NOW - hours(6), NOW, MisfirePolicy.SKIP, 100, GRACE, uptime)
    assert skip.fire_at == [NOW - hours(6), NOW - hours(5), NOW - hours(2), NOW - hours(1), NOW]
    assert skip.missed == 2 and skip.skipped == 2  # 4 h and 3 h ago
    once = plan_due(HOURLY, "UTC", NOW - hours(6), NOW, MisfirePolicy.FIRE_ONCE, 100, GRACE, uptime)
    assert once.fire_at == [NOW - hours(6), NOW - hours(5), NOW - hours(4), NOW - hours(2), NOW - hours(1), NOW]
    catch_up = plan_due(HOURLY, "UTC", NOW - hours(6), NOW, MisfirePolicy.CATCH_UP, 100, GRACE, uptime)
    assert len(catch_up.fire_at) == 7 and catch_up.fire_at == sorted(catch_up.fire_at)


def test_without_heartbeats_the_grace_period_rule_applies():
    plan = plan_due(HOURLY, "UTC", NOW - hours(3), NOW, MisfirePolicy.SKIP, 100, GRACE)
    assert plan.fire_at == [NOW] and plan.skipped == 3


def test_a_long_backlog_of_late_occurrences_is_fired_in_bounded_chunks():
    alive = FleetUptime.of([(NOW - timedelta(days=2), NOW)])
    due = NOW - timedelta(days=1)
    plan = plan_due(MINUTELY, "UTC", due, NOW, MisfirePolicy.SKIP, 100, GRACE, alive)
    assert len(plan.fire_at) == MAX_MISSED_SCAN and plan.skipped == 0
    assert plan.next_run_at == due + timedelta(minutes=MAX_MISSED_SCAN)  # still due: the next claim goes on


def test_a_long_outage_is_jumped_over():
    uptime = FleetUptime.of([(NOW - timedelta(days=3), NOW - timedelta(days=2)), (NOW - hours(1), NOW)])
    start = NOW - timedelta(days=2) + timedelta(minutes=1)  # just after the fleet went down
    plan = plan_due(MINUTELY, "UTC", start, NOW, MisfirePolicy.SKIP, 100, GRACE, uptime)
    assert plan.fire_at[0] == NOW - hours(1) and plan.fire_at[-1] == NOW  # the hour since the fleet came back
    assert plan.skipped >= MAX_MISSED_SCAN


def test_fixed_delay_is_missed_only_when_the_fleet_was_down():
    trigger = FixedDelayTrigger(delay_sec=60)
    alive = FleetUptime.of([(NOW - hours(2), NOW)])
    late = plan_due(trigger, "UTC", NOW - hours(1), NOW, MisfirePolicy.SKIP, 100, GRACE, alive)
    assert late.fire_at == [NOW - hours(1)] and late.parked
    down = plan_due(trigger, "UTC", NOW - hours(3), NOW, MisfirePolicy.SKIP, 100, GRACE, alive)
    assert down.fire_at == [] and down.skipped == 1


def test_fire_rates_overdraw_then_wait_and_forget_refilled_buckets():
    rates = FireRates(10.0)
    rates.spend(Counter({"a": 25, "b": 5}), now=0.0)
    assert rates.throttled(0.0) == ["a"]  # 10 - 25 < 0; b has 5 left
    assert rates.throttled(1.4) == ["a"]  # -15 + 14
    assert rates.throttled(1.6) == []
    rates.throttled(10.0)
    assert not rates._buckets  # refilled buckets are forgotten: memory follows the tenants firing now
    off = FireRates(0.0)
    off.spend(Counter({"a": 1000}), now=0.0)
    assert off.throttled(0.0) == []


def test_fresh_candidates_are_a_small_share_of_the_batch():
    assert fresh_candidates(100) == 10 and fresh_candidates(5) == 1 and fresh_candidates(1) == 0
