"""FIXED_DELAY parking, in one place.

A FIXED_DELAY schedule counts its delay from when its run *finished* (db-scheduler's FixedDelay), so slow
targets never overlap: when it fires, its schedule is parked (``next_run_at`` NULL, ``parked_run_id`` the run),
and when that run reaches a final state the schedule is re-armed ``delaySec`` after it finished. The claim's
plan parks (``shared/timing/misfire.py``: ``DuePlan.parked``); everything else asks this module: when a parked
schedule comes due again, and which re-arms are still to be written.
"""

from __future__ import annotations

from datetime import datetime

from shared.model import decode_trigger
from shared.timing.next_fire import next_fire


def rearm_at(stored_trigger: str, tz: str, finished_at: datetime) -> datetime | None:
    """When a parked schedule comes due again. The trigger is the stored one, read when re-arming, so an edit
    made while the run was in flight (a new delaySec) applies."""
    return next_fire(decode_trigger(stored_trigger), tz, finished_at)


class Rearms:
    """Re-arms not yet written: parked run id -> when that run finished."""

    def __init__(self) -> None:
        self._due: dict[str, datetime] = {}

    def __len__(self) -> int:
        return len(self._due)

    def add(self, run_id: str, finished_at: datetime) -> None:
        self._due[run_id] = finished_at

    def snapshot(self) -> dict[str, datetime]:
        return dict(self._due)

    def written(self, snapshot: dict[str, datetime]) -> None:
        """Forget what ``snapshot`` wrote (not a later re-arm of the same run recorded meanwhile)."""
        for run_id, finished in snapshot.items():
            if self._due.get(run_id) == finished:
                del self._due[run_id]
