"""A cooperative CPU budget for trigger evaluation.

Evaluating a hostile expression (``FREQ=SECONDLY`` with a huge COUNT, a cron that matches almost nothing) can
cost seconds of CPU. Evaluators call :meth:`Budget.tick` inside their loops; once the budget is spent it raises
:class:`shared.errors.EvaluationBudgetExceeded`, which the API answers with a 422 naming the limit. The clock is
passed in (``time.thread_time`` or ``time.perf_counter`` at the edge) so this module never reads time itself, and
ticks are counted so the clock is only read every ``_CHECK_EVERY`` ticks.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from shared.errors import EvaluationBudgetExceeded

_CHECK_EVERY = 64


class Budget:
    """At most ``limit_sec`` of ``clock`` time from construction; ``Budget.unlimited()`` never runs out."""

    __slots__ = ("_clock", "_deadline", "_ticks", "limit_sec")

    def __init__(self, clock: Callable[[], float] | None, limit_sec: float) -> None:
        self._clock = clock
        self.limit_sec = limit_sec
        self._deadline = clock() + limit_sec if clock is not None and math.isfinite(limit_sec) else math.inf
        self._ticks = 0

    @property
    def ticks(self) -> int:
        """Units of work accounted so far (counted whenever a clock is given): a machine-independent cost."""
        return self._ticks

    @classmethod
    def unlimited(cls) -> Budget:
        return cls(None, math.inf)

    def tick(self) -> None:
        """Account one unit of evaluation work; raise once the budget is spent."""
        if self._clock is None:
            return
        self._ticks += 1
        if self._ticks % _CHECK_EVERY == 0 and self._clock() > self._deadline:
            raise EvaluationBudgetExceeded(self.limit_sec)
