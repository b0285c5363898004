"""Trigger evaluation off the event loop: a small thread pool, a bounded queue and a CPU budget per request.

Evaluating a hostile trigger (``FREQ=SECONDLY;COUNT=1000`` previewed 1000 times) costs seconds of CPU. On the
event loop that would freeze every other request of every tenant; here it runs on one of a few threads, spends at
most ``TRIGGER_EVAL_BUDGET_MS`` of that thread's CPU time (``time.thread_time``: time waiting for the GIL or a core
does not count against the request) and then fails with a 422. At most ``TRIGGER_EVAL_QUEUE`` evaluations run or
wait per process, and one tenant may hold at most a quarter of those places, so that another tenant's evaluation
never waits behind more than a few budgets of someone else's; beyond that the answer is a 503 with
``Retry-After`` rather than an ever-growing queue.

Threads still share the GIL with the event loop. CPython hands the GIL to a waiting thread after the switch
interval (5 ms by default), so each of the event loop's wake-ups can wait that long behind an evaluating thread;
the API lowers the interval to 1 ms (``api/__main__.py``), which keeps ``/live`` within a few ms while
evaluations run (tests/integration/test_evaluation_isolation.py measures it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from shared.errors import Overloaded
from shared.timing.budget import Budget

T = TypeVar("T")
# For the API process: see the module docstring.
SWITCH_INTERVAL_SEC = 0.001


class Evaluator:
    def __init__(self, threads: int, queue: int, budget_ms: float) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="trigger-eval")
        self._capacity = max(1, queue)
        self._per_tenant = max(1, self._capacity // 4)
        # Touched on the event loop's thread only.
        self._in_flight = 0
        self._by_tenant: dict[str, int] = {}
        self.limit_sec = budget_ms / 1000

    async def run(self, work: Callable[[Budget], T], tenant_id: str) -> T:
        """``work(budget)`` on a pool thread, with a fresh budget of that thread's CPU time."""
        if self._in_flight >= self._capacity:
            raise Overloaded(
                f"{self._in_flight} trigger evaluations are running or queued in this API process "
                "(TRIGGER_EVAL_QUEUE); retry shortly"
            )
        if self._by_tenant.get(tenant_id, 0) >= self._per_tenant:
            raise Overloaded(
                f"tenant {tenant_id} has {self._per_tenant} trigger evaluations running or queued in this API "
                "process (a quarter of TRIGGER_EVAL_QUEUE); retry shortly"
            )
        self._in_flight += 1
        self._by_tenant[tenant_id] = self._by_tenant.get(tenant_id, 0) + 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, work)
        finally:
            self._in_flight -= 1
            left = self._by_tenant.pop(tenant_id) - 1
            if left:
                self._by_tenant[tenant_id] = left

    def _call(self, work: Callable[[Budget], T]) -> T:
        return work(Budget(time.thread_time, self.limit_sec))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
