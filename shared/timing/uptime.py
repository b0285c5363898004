"""When the worker fleet was alive: the union of every worker process's [started, last heartbeat + slack].

An occurrence that comes due while some worker is alive was not *missed* however late it is claimed (the fleet
was busy, not down); only one due while no worker was alive is. Pure: the caller loads the intervals and passes
the time in.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class FleetUptime:
    """Merged, sorted intervals during which at least one worker was alive."""

    starts: list[datetime] = field(default_factory=list)
    ends: list[datetime] = field(default_factory=list)

    @classmethod
    def of(cls, intervals: Iterable[tuple[datetime, datetime]]) -> FleetUptime:
        starts: list[datetime] = []
        ends: list[datetime] = []
        for start, end in sorted(i for i in intervals if i[0] <= i[1]):
            if ends and start <= ends[-1]:
                ends[-1] = max(ends[-1], end)
            else:
                starts.append(start)
                ends.append(end)
        return cls(starts, ends)

    def up_at(self, instant: datetime) -> bool:
        i = bisect.bisect_right(self.starts, instant) - 1
        return i >= 0 and instant <= self.ends[i]

    def up_again_after(self, instant: datetime) -> datetime | None:
        """The first instant after ``instant`` (inside an outage) at which the fleet was alive again."""
        i = bisect.bisect_right(self.starts, instant)
        return self.starts[i] if i < len(self.starts) else None


# Nothing known: every occurrence older than the grace period counts as missed (the rule before heartbeats).
NEVER_UP = FleetUptime()
