"""The audit trail's pure parts: snapshots never hold a secret, changed fields, and the pause rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from shared.audit import changed_fields, changes, snapshot, update_action
from shared.model import (
    SECRET_MASK,
    AuditAction,
    CronTrigger,
    HttpSpec,
    HttpTarget,
    MisfirePolicy,
    RetryPolicy,
    Schedule,
    ScheduleStatus,
)
from shared.schedules import pause_state

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def schedule(**changes: object) -> Schedule:
    base = Schedule(
        id="00000000-0000-4000-8000-000000000001",
        tenant_id="t1",
        name="s",
        description=None,
        tz="UTC",
        trigger=CronTrigger(cron="0 * * * *"),
        target=HttpTarget(http=HttpSpec(url="https://example.com", secret_headers={"Authorization": "sealed:xyz"})),
        payload=None,
        enabled=True,
        misfire_policy=MisfirePolicy.FIRE_ONCE,
        catch_up_limit=100,
        retry=RetryPolicy(),
        labels={},
        status=ScheduleStatus.ACTIVE,
        next_run_at=NOW + timedelta(hours=1),
        last_run_at=None,
        created_at=NOW,
        updated_at=NOW,
        version=1,
        webhook_secret="whsec_secret",
    )
    return msgspec.structs.replace(base, **changes)


def test_snapshots_mask_secret_headers_and_drop_the_webhook_secret():
    data = snapshot(schedule())
    assert data is not None
    assert data["target"]["http"]["secretHeaders"] == {"Authorization": SECRET_MASK}
    assert "webhookSecret" not in data
    text = msgspec.json.encode(data).decode()
    assert "sealed:xyz" not in text and "whsec_" not in text
    assert snapshot(None) is None


def test_changed_fields_name_what_a_client_changed_not_bookkeeping():
    before = snapshot(schedule())
    after = snapshot(schedule(description="x", version=2, updated_at=NOW + timedelta(1), next_run_at=None))
    assert changed_fields(before, after) == ["description"]
    assert changed_fields(before, before) == []
    assert "name" in changed_fields(None, after) and "name" in changed_fields(before, None)


def test_update_action_tells_pause_and_resume_from_other_updates():
    active, paused = schedule(), schedule(enabled=False)
    assert update_action(active, paused) is AuditAction.PAUSED
    assert update_action(paused, active) is AuditAction.RESUMED
    assert update_action(active, schedule(description="d")) is AuditAction.UPDATED


def test_pausing_records_why_when_and_who_and_has_no_next_run():
    active = schedule()
    paused = pause_state(active, schedule(enabled=False), NOW, "alice", "outage")
    assert (paused.paused_reason, paused.paused_at, paused.paused_by) == ("outage", NOW, "alice")
    assert paused.next_run_at is None
    later = NOW + timedelta(hours=1)
    again = pause_state(paused, paused, later, "bob", None)
    assert (again.paused_reason, again.paused_at, again.paused_by) == ("outage", NOW, "alice")
    reworded = pause_state(paused, paused, later, "bob", "still down")
    assert (reworded.paused_reason, reworded.paused_at) == ("still down", NOW)
    resumed = pause_state(paused, schedule(), later, "bob", None)
    assert (resumed.paused_reason, resumed.paused_at, resumed.paused_by) == (None, None, None)


def test_changes_name_what_masking_hides_without_showing_it():
    before = schedule()
    resealed = schedule(
        target=HttpTarget(http=HttpSpec(url="https://example.com", secret_headers={"Authorization": "sealed:new"}))
    )
    assert changes(AuditAction.UPDATED, before, resealed) == ["target"]
    assert changes(AuditAction.UPDATED, before, before) == []
    assert changes(AuditAction.SECRET_ROTATED, before, before) == ["webhookSecret"]
    assert "name" in changes(AuditAction.CREATED, None, before)
