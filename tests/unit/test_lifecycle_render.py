"""The relay's rendering of an outbox row: a CloudEvent with the schedule as the API shows it, secrets masked."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from worker.events import EVENT_TYPES, render, schedule_view

STATE = {
    "id": "4f0e0000-0000-4000-8000-000000000001",
    "tenant_id": "t1",
    "name": "nightly",
    "description": None,
    "tz": "UTC",
    "trigger": {"type": "CRON", "cron": "0 0 * * *"},
    "target": {"kind": "HTTP", "http": {"url": "https://example.com", "secretHeaders": {"Authorization": "v1:sealed"}}},
    "payload": {"a": 1},
    "enabled": False,
    "misfire_policy": "FIRE_ONCE",
    "catch_up_limit": 100,
    "retry": {"maxAttempts": 3, "backoffSec": 1.0, "maxBackoffSec": 60.0},
    "labels": {"team": "a"},
    "next_run_at": None,
    "last_run_at": "2026-12-03T00:00:00+00:00",
    "parked_run_id": None,
    "created_at": "2026-12-01T10:00:00.123456+00:00",
    "updated_at": "2026-12-03T10:00:00+00:00",
    "version": 4,
    "paused_reason": "pauseOnFailure: 2 consecutive failed run(s), the last x",
    "paused_at": "2026-12-03T10:00:00+00:00",
    "paused_by": "scheduler",
    "pause_on_failure": 2,
    "notify_run_succeeded": False,
}


def row(**extra: object) -> dict[str, object]:
    return {
        "seq": 7,
        "id": "0c8e5c47-2b0e-4d0f-9a57-3f1f1d2e8a10",
        "tenant_id": "t1",
        "schedule_id": STATE["id"],
        "type": "schedule.paused",
        "at": datetime(2026, 12, 3, 10, 0, tzinfo=UTC),
        "actor": None,
        "reason": STATE["paused_reason"],
        "state": msgspec.json.encode(STATE).decode(),  # the worker's connections load JSON as text
        "run": None,
        **extra,
    }


def test_the_schedule_is_shown_as_the_api_shows_it_with_secrets_masked() -> None:
    view = schedule_view(STATE)
    assert view["status"] == "PAUSED" and view["pausedReason"] == STATE["paused_reason"]
    assert view["target"]["http"]["secretHeaders"] == {"Authorization": "********"}
    assert view["createdAt"] == "2026-12-01T10:00:00.123456Z" and view["nextRunAt"] is None
    assert view["pauseOnFailure"] == 2 and view["notify"] == {"runSucceeded": False}
    assert "webhookSecret" not in view and "webhook_secret" not in view


def test_the_envelope_is_a_cloudevent_on_the_reserved_topic() -> None:
    topic, body = render(row())
    event = msgspec.json.decode(body)
    assert topic == "scheduler.schedule.paused"
    assert event["specversion"] == "1.0" and event["type"] == "scheduler.schedule.paused"
    assert event["id"] == "0c8e5c47-2b0e-4d0f-9a57-3f1f1d2e8a10" and event["sequence"] == "7"
    assert event["time"] == "2026-12-03T10:00:00.000000Z" and event["subject"] == STATE["id"]
    assert event["data"]["version"] == 4 and event["data"]["reason"].startswith("pauseOnFailure")
    assert b"v1:sealed" not in body


def test_a_run_event_carries_the_run() -> None:
    run = {"id": "r1", "status": "FAILED", "attempt": 3, "error": "HTTP 500"}
    _, body = render(row(type="run.failed", run=msgspec.json.encode(run).decode(), reason=None))
    data = msgspec.json.decode(body)["data"]
    assert data["run"] == run and data["type"] == "run.failed"


def test_every_event_type_is_a_topic_under_the_reserved_token() -> None:
    for kind in EVENT_TYPES:
        topic, _ = render(row(type=kind))
        assert topic.startswith("scheduler.") and topic.count(".") == 2
