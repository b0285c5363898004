"""Building and changing schedules: pure functions of the request, the stored row and the time."""

from __future__ import annotations

from datetime import datetime

import msgspec
from msgspec import UNSET

from shared.errors import FieldProblem, InvalidInput, PreconditionFailed
from shared.model import OneShotTrigger, Schedule, ScheduleCreate, ScheduleStatus, ScheduleUpdate
from shared.timing.budget import Budget
from shared.timing.next_fire import anchor_trigger, first_fire
from shared.validation import (
    check_catch_up_limit,
    check_credential_headers,
    check_description,
    check_jitter,
    check_labels,
    check_name,
    check_overlap,
    check_pause_on_failure,
    check_payload,
    check_retry,
    check_target,
    check_trigger,
    check_zone,
    raise_if,
)


def check_schedule(
    s: Schedule, now: datetime, max_payload_bytes: int, with_target: bool = True, budget: Budget | None = None
) -> None:
    """Raise InvalidInput listing every problem of ``s``.

    ``with_target=False``: an update that leaves the target alone does not judge it again, so a schedule stored
    under older topic rules can still be paused or renamed (its topic is confined to its tenant anyway).
    """
    raise_if(
        check_name(s.name)
        + check_description(s.description)
        + check_zone(s.tz)
        + check_trigger(s.trigger, s.tz, now, budget=budget)
        + (check_target(s.target) if with_target else [])
        + check_payload(s.payload, max_payload_bytes)
        + check_labels(s.labels)
        + check_catch_up_limit(s.catch_up_limit)
        + check_retry(s.retry)
        + check_pause_on_failure(s.pause_on_failure)
        + check_jitter(s.jitter_sec, s.trigger)
        + check_overlap(s.overlap, s.trigger, s.target)
    )


def check_body_tenant(body_tenant: str | None, tenant_id: str) -> None:
    if body_tenant is not None and body_tenant != tenant_id:
        raise InvalidInput.field("tenantId", "differs from the X-Tenant-Id header")


def new_schedule(
    body: ScheduleCreate,
    tenant_id: str,
    schedule_id: str,
    now: datetime,
    max_payload: int,
    budget: Budget | None = None,
    credential_headers: tuple[str, ...] = (),
) -> Schedule:
    """``budget``: the CPU budget of evaluating the trigger; ``credential_headers``: header-name patterns refused in
    the target's plain headers (see check_credential_headers)."""
    check_body_tenant(body.tenant_id, tenant_id)
    trigger = anchor_trigger(body.trigger, now)
    schedule = Schedule(
        id=schedule_id,
        tenant_id=tenant_id,
        name=body.name,
        description=body.description,
        tz=body.tz,
        trigger=trigger,
        target=body.target,
        payload=body.payload,
        enabled=body.enabled,
        misfire_policy=body.misfire_policy,
        catch_up_limit=body.catch_up_limit,
        retry=body.retry,
        labels=body.labels,
        status=ScheduleStatus.ACTIVE,
        next_run_at=None,
        last_run_at=None,
        created_at=now,
        updated_at=now,
        version=1,
        pause_on_failure=body.pause_on_failure,
        notify=body.notify,
        jitter_sec=body.jitter_sec,
        action_after_completion=body.action_after_completion,
        overlap=body.overlap,
    )
    raise_if(check_credential_headers(schedule.target, credential_headers))
    check_schedule(schedule, now, max_payload, budget=budget)
    return msgspec.structs.replace(schedule, next_run_at=first_fire(trigger, body.tz, now, budget=budget))


def apply_patch(
    current: Schedule,
    patch: ScheduleUpdate,
    expected_version: int | None,
    now: datetime,
    max_payload: int,
    budget: Budget | None = None,
    credential_headers: tuple[str, ...] = (),
) -> Schedule:
    """``current`` with ``patch`` applied; next_run_at recomputed when what decides it changed."""
    if patch.version is not UNSET and expected_version is not None and patch.version != expected_version:
        raise InvalidInput(FieldProblem("version", "differs from the If-Match header"))
    expected = expected_version if expected_version is not None else patch.version
    if expected is not UNSET and expected is not None and expected != current.version:
        raise PreconditionFailed(f"schedule is at version {current.version}, not {expected}")
    if patch.tenant_id is not UNSET:
        check_body_tenant(patch.tenant_id, current.tenant_id)

    changes = {
        f: getattr(patch, f)
        for f in patch.__struct_fields__
        if f not in ("version", "tenant_id") and getattr(patch, f) is not UNSET
    }
    if "trigger" in changes:
        changes["trigger"] = anchor_trigger(changes["trigger"], now)
    updated = msgspec.structs.replace(current, **changes)
    if "target" in changes:
        # Only a target being written is held to the rule: stored ones from before it keep working.
        raise_if(check_credential_headers(updated.target, credential_headers))
    check_schedule(updated, now, max_payload, with_target="target" in changes, budget=budget)

    timing_changed = "trigger" in changes or "tz" in changes
    re_enabled = updated.enabled and not current.enabled
    if timing_changed or re_enabled:
        # A ONE_SHOT given a new trigger is a new one-shot; otherwise what already fired stays fired (a
        # FIXED_DELAY must not go back to a startAt in the past, a ONE_SHOT must not fire twice).
        new_one_shot = "trigger" in changes and isinstance(updated.trigger, OneShotTrigger)
        fired_before = current.last_run_at is not None and not new_one_shot
        updated = msgspec.structs.replace(
            updated,
            next_run_at=first_fire(updated.trigger, updated.tz, now, fired_before=fired_before, budget=budget),
        )
    return updated


def pause_state(current: Schedule, updated: Schedule, now: datetime, actor: str, reason: str | None) -> Schedule:
    """``updated`` with its pause fields in step with ``enabled``: a schedule being paused records why, when and
    by whom and has no next run (``nextRunAt: null``); a resumed one clears them (apply_patch gave it a next
    run). Pausing a paused schedule with a new reason changes only the reason."""
    if updated.enabled:
        return msgspec.structs.replace(updated, paused_reason=None, paused_at=None, paused_by=None)
    if not current.enabled:
        changed_reason = reason if reason is not None else current.paused_reason
        return msgspec.structs.replace(updated, next_run_at=None, paused_reason=changed_reason)
    return msgspec.structs.replace(updated, next_run_at=None, paused_reason=reason, paused_at=now, paused_by=actor)
