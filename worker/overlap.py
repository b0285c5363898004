"""The overlap policy, in one place: what due occurrences do while the schedule's previous run is in flight.

A schedule whose policy is not ALLOW remembers the run it fired last (``overlap_run_id``, sql/0080). When its
next occurrences come due, the claim reads that run's state, and :func:`decide` says which occurrences fire,
which one waits (BUFFER_ONE), which are skipped, and whether the run in flight is cancelled (CANCEL_OTHER).
A run is in flight until it reaches a final state; a QUEUE run until a consumer acknowledged its message too
(the work queue stream then drops it), which :class:`worker.loop.Worker` checks by polling the stream. Whether
a run went into a work queue is told by the run itself (``delivery.queue``), not by the schedule's target, which
may have been edited since. When the
run in flight ends, the schedule is *released* (``schedule_overlap_release_many``): its buffered run, if any,
becomes the one in flight and is handed to the workers at once.

Manual and backfilled runs are outside the sequence (as for FIXED_DELAY parking): they neither wait nor hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.model import OverlapPolicy

OPEN = frozenset({"PENDING", "RETRYING"})
# How the claim reports a buffered run that nobody released yet (a PENDING run with no lease).
WAITING = "WAITING"


@dataclass(frozen=True, slots=True)
class Decision:
    fire: list[datetime]  # occurrences recorded and delivered now, ascending
    buffer: datetime | None = None  # the occurrence recorded as BUFFER_ONE's waiting run
    skipped: int = 0  # occurrences given no run
    cancel: bool = False  # CANCEL_OTHER: cancel the run in flight


def in_flight(status: str | None, queued: bool) -> bool:
    """Whether the run a schedule waits for is still in flight, from its status (None: no such run) and whether
    it was published into a work queue. Such a run that SUCCEEDED holds until the stream poll finds its message
    consumed; any other finished run has released its schedule already, or would have but for a crash: it does
    not hold."""
    return status in OPEN or status == WAITING or (queued and status == "SUCCEEDED")


def decide(policy: OverlapPolicy, due: list[datetime], busy: bool, buffered: bool) -> Decision:
    """``due``: the occurrences a claim found due (several after an outage with CATCH_UP, ascending); ``busy``:
    the previous run is in flight; ``buffered``: BUFFER_ONE already has an occurrence waiting."""
    if policy is OverlapPolicy.ALLOW or not due:
        return Decision(due)
    match policy:
        case OverlapPolicy.SKIP:
            # The first one fires if nothing is in flight; each later one would overlap it.
            fire = [] if busy else due[:1]
            return Decision(fire, skipped=len(due) - len(fire))
        case OverlapPolicy.BUFFER_ONE:
            if busy:
                if buffered:
                    return Decision([], skipped=len(due))
                return Decision([], buffer=due[0], skipped=len(due) - 1)
            buffer = due[1] if len(due) > 1 else None
            return Decision(due[:1], buffer=buffer, skipped=max(0, len(due) - 2))
        case OverlapPolicy.CANCEL_OTHER:
            # The latest occurrence wins; earlier ones of the same claim would be cancelled at once.
            return Decision(due[-1:], skipped=len(due) - 1, cancel=busy)
    raise AssertionError(policy)
