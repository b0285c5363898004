"""Which runs a due schedule produces: the misfire policy, as a pure function.

An occurrence is *on time* when it is at most ``grace`` older than now (normal claim latency); older ones were
*missed* (no worker ran) and the schedule's misfire policy decides what becomes of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.model import FixedDelayTrigger, MisfirePolicy, Trigger
from shared.timing.next_fire import next_fire

# Enumerating missed occurrences one by one is bounded: a per-second cron down for a day has 86,400.
MAX_MISSED_SCAN = 1000
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class DuePlan:
    fire_at: list[datetime]  # scheduled_for of each run to create, ascending
    next_run_at: datetime | None  # None: exhausted, or (FIXED_DELAY) parked until the run finishes
    missed: int = 0  # occurrences older than the grace period (at least this many when the scan was cut)
    skipped: int = 0  # missed occurrences that get no run of their own
    parked: bool = False  # FIXED_DELAY: re-armed delaySec after its run finishes


def plan_due(
    trigger: Trigger,
    tz: str,
    due_at: datetime,
    now: datetime,
    policy: MisfirePolicy,
    catch_up_limit: int,
    grace: timedelta,
) -> DuePlan:
    """The runs to create for a schedule whose ``next_run_at`` (``due_at``) is <= ``now``, and its new next_run_at."""
    cutoff = now - grace
    if isinstance(trigger, FixedDelayTrigger):
        if due_at < cutoff and policy is MisfirePolicy.SKIP:
            return DuePlan([], next_fire(trigger, tz, now), missed=1, skipped=1)
        return DuePlan([due_at], None, missed=int(due_at < cutoff), parked=True)

    missed: list[datetime] = []
    current: datetime | None = due_at
    while current is not None and current < cutoff and len(missed) < MAX_MISSED_SCAN:
        missed.append(current)
        current = next_fire(trigger, tz, current)
    if current is not None and current < cutoff:
        # Too many to list: jump to the first occurrence inside the grace window.
        current = next_fire(trigger, tz, cutoff - _TICK)
    on_time: list[datetime] = []
    while current is not None and current <= now:
        on_time.append(current)
        current = next_fire(trigger, tz, current)

    match policy:
        case MisfirePolicy.FIRE_ONCE:
            # The first missed occurrence stands for all of them: known without enumerating, so its
            # idempotency key is the same whichever worker computes it.
            replay = missed[:1]
        case MisfirePolicy.SKIP:
            replay = []
        case MisfirePolicy.CATCH_UP:
            replay = missed[:catch_up_limit]
    return DuePlan(replay + on_time, current, missed=len(missed), skipped=len(missed) - len(replay))
