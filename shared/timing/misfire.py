"""Which runs a due schedule produces: the misfire policy, as a pure function.

An occurrence is *missed* (and the schedule's misfire policy decides what becomes of it) only when no worker was
able to claim it: it is older than ``grace`` when claimed AND the fleet was down at its due time (``uptime``, from
the workers' heartbeats). One that is merely late because the fleet was busy is fired like an on-time one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.model import FixedDelayTrigger, MisfirePolicy, Trigger
from shared.timing.next_fire import next_fire
from shared.timing.uptime import NEVER_UP, FleetUptime

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
    uptime: FleetUptime = NEVER_UP,
) -> DuePlan:
    """The runs to create for a schedule whose ``next_run_at`` (``due_at``) is <= ``now``, and its new next_run_at."""
    cutoff = now - grace

    def was_missed(instant: datetime) -> bool:
        return instant < cutoff and not uptime.up_at(instant)

    if isinstance(trigger, FixedDelayTrigger):
        if was_missed(due_at) and policy is MisfirePolicy.SKIP:
            return DuePlan([], next_fire(trigger, tz, now), missed=1, skipped=1)
        return DuePlan([due_at], None, missed=int(was_missed(due_at)), parked=True)

    missed: list[datetime] = []
    late: list[datetime] = []  # older than the grace period, but a worker was alive: fired, not missed
    current: datetime | None = due_at
    scanned = 0
    while current is not None and current < cutoff:
        if scanned >= MAX_MISSED_SCAN:
            if uptime.up_at(current):
                # Late occurrences beyond one claim's share: the schedule stays due and the next claim goes on.
                return _plan(policy, catch_up_limit, missed, late, current)
            # Too many to list inside an outage: jump to the first occurrence after it (or inside the grace window).
            back = uptime.up_again_after(current)
            current = next_fire(trigger, tz, min(cutoff, back if back is not None else cutoff) - _TICK)
            scanned = 0
            continue
        (missed if was_missed(current) else late).append(current)
        scanned += 1
        current = next_fire(trigger, tz, current)
    on_time: list[datetime] = []
    while current is not None and current <= now:
        on_time.append(current)
        current = next_fire(trigger, tz, current)
    return _plan(policy, catch_up_limit, missed, late + on_time, current)


def _plan(
    policy: MisfirePolicy,
    catch_up_limit: int,
    missed: list[datetime],
    fired: list[datetime],
    next_run_at: datetime | None,
) -> DuePlan:
    match policy:
        case MisfirePolicy.FIRE_ONCE:
            # The first missed occurrence stands for all of them: known without enumerating, so its
            # idempotency key is the same whichever worker computes it.
            replay = missed[:1]
        case MisfirePolicy.SKIP:
            replay = []
        case MisfirePolicy.CATCH_UP:
            replay = missed[:catch_up_limit]
    fire_at = sorted(replay + fired) if replay and fired and replay[-1] > fired[0] else replay + fired
    return DuePlan(fire_at, next_run_at, missed=len(missed), skipped=len(missed) - len(replay))
