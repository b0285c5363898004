"""The overlap policy's decisions (worker/overlap.py) and its validation, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.model import (
    CronTrigger,
    EventTarget,
    FixedDelayTrigger,
    HttpSpec,
    HttpTarget,
    OverlapPolicy,
    QueueSpec,
    QueueTarget,
)
from shared.validation import check_overlap
from worker.overlap import WAITING, Decision, decide, in_flight

T = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i) for i in range(4)]


@pytest.mark.parametrize(
    ("policy", "due", "busy", "buffered", "expected"),
    [
        # ALLOW fires everything, busy or not.
        (OverlapPolicy.ALLOW, T, True, False, Decision(T)),
        # Nothing due: nothing to decide.
        (OverlapPolicy.SKIP, [], True, False, Decision([])),
        # SKIP: the first fires when idle; every one that would overlap it is skipped.
        (OverlapPolicy.SKIP, T[:1], False, False, Decision(T[:1])),
        (OverlapPolicy.SKIP, T, False, False, Decision(T[:1], skipped=3)),
        (OverlapPolicy.SKIP, T, True, False, Decision([], skipped=4)),
        # BUFFER_ONE: idle, the first fires and the second waits; busy, the first waits; a full buffer skips.
        (OverlapPolicy.BUFFER_ONE, T[:1], False, False, Decision(T[:1])),
        (OverlapPolicy.BUFFER_ONE, T, False, False, Decision(T[:1], buffer=T[1], skipped=2)),
        (OverlapPolicy.BUFFER_ONE, T[:1], True, False, Decision([], buffer=T[0])),
        (OverlapPolicy.BUFFER_ONE, T, True, False, Decision([], buffer=T[0], skipped=3)),
        (OverlapPolicy.BUFFER_ONE, T, True, True, Decision([], skipped=4)),
        # CANCEL_OTHER: the latest wins, cancelling the run in flight if there is one.
        (OverlapPolicy.CANCEL_OTHER, T[:1], False, False, Decision(T[:1])),
        (OverlapPolicy.CANCEL_OTHER, T[:1], True, False, Decision(T[:1], cancel=True)),
        (OverlapPolicy.CANCEL_OTHER, T, True, False, Decision(T[3:], skipped=3, cancel=True)),
    ],
)
def test_decisions(policy: OverlapPolicy, due: list[datetime], busy: bool, buffered: bool, expected: Decision) -> None:
    assert decide(policy, due, busy, buffered) == expected


@pytest.mark.parametrize("policy", list(OverlapPolicy))
@pytest.mark.parametrize("count", [1, 2, 5])
@pytest.mark.parametrize("busy", [False, True])
@pytest.mark.parametrize("buffered", [False, True])
def test_every_due_occurrence_is_accounted_for_exactly_once(
    policy: OverlapPolicy, count: int, busy: bool, buffered: bool
) -> None:
    due = T[:count] if count <= len(T) else T
    d = decide(policy, due, busy, buffered)
    accounted = len(d.fire) + (d.buffer is not None) + d.skipped
    assert accounted == len(due)
    assert set(d.fire) | ({d.buffer} if d.buffer else set()) <= set(due)
    if policy is not OverlapPolicy.ALLOW:
        # Never more than one run delivered at a time, and at most one waiting.
        assert len(d.fire) <= 1
        assert not (busy and d.fire and policy is not OverlapPolicy.CANCEL_OTHER)


@pytest.mark.parametrize(
    ("status", "queued", "expected"),
    [
        (None, False, False),
        ("PENDING", False, True),
        ("RETRYING", False, True),
        (WAITING, False, True),
        ("SUCCEEDED", False, False),
        ("FAILED", False, False),
        ("CANCELLED", False, False),
        # A message published into a work queue is in flight until a consumer acked it (the stream poll
        # releases it); whether it was is told by the run's delivery, not the schedule's current target.
        ("SUCCEEDED", True, True),
        ("FAILED", True, False),
        ("CANCELLED", True, False),
    ],
)
def test_in_flight(status: str | None, queued: bool, expected: bool) -> None:
    assert in_flight(status, queued) is expected


CRON = CronTrigger(cron="0 9 * * *")
HTTP = HttpTarget(http=HttpSpec(url="https://example.com/hook"))
QUEUE = QueueTarget(queue=QueueSpec(topic="jobs"))
EVENT = EventTarget(event_topic="a.b")


@pytest.mark.parametrize("policy", list(OverlapPolicy))
@pytest.mark.parametrize("target", [HTTP, QUEUE])
def test_http_and_queue_take_every_policy(policy: OverlapPolicy, target: object) -> None:
    assert check_overlap(policy, CRON, target) == []  # type: ignore[arg-type]


def test_an_event_cannot_be_cancelled_and_fixed_delay_never_overlaps() -> None:
    assert check_overlap(OverlapPolicy.SKIP, CRON, EVENT) == []
    assert check_overlap(OverlapPolicy.BUFFER_ONE, CRON, EVENT) == []
    [problem] = check_overlap(OverlapPolicy.CANCEL_OTHER, CRON, EVENT)
    assert problem.field == "overlap" and "EVENT" in problem.reason
    fixed = FixedDelayTrigger(delay_sec=60)
    assert check_overlap(OverlapPolicy.ALLOW, fixed, HTTP) == []
    for policy in (OverlapPolicy.SKIP, OverlapPolicy.BUFFER_ONE, OverlapPolicy.CANCEL_OTHER):
        [problem] = check_overlap(policy, fixed, HTTP)
        assert problem.field == "overlap" and "FIXED_DELAY" in problem.reason
