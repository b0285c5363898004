"""What an audit entry records about a change: pure functions of the schedule before and after it."""

from __future__ import annotations

from typing import Any

import msgspec

from shared.model import AuditAction, HttpTarget, Schedule
from shared.secrets import mask_target

# Bookkeeping that changes with (or without) every edit: not "what changed".
_NOT_CHANGES = {"version", "updatedAt", "status", "nextRunAt", "lastRunAt", "webhookSecret"}


def snapshot(schedule: Schedule | None) -> dict[str, Any] | None:
    """``schedule`` as the API shows it, as JSON: secret header values masked, never the webhook secret."""
    if schedule is None:
        return None
    shown = msgspec.structs.replace(schedule, target=mask_target(schedule.target), webhook_secret=None)
    data: dict[str, Any] = msgspec.to_builtins(shown)
    data.pop("webhookSecret", None)
    return data


def changed_fields(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    """The top-level wire fields that differ (all of them on create and delete)."""
    keys = set(before or {}) | set(after or {})
    return sorted(k for k in keys - _NOT_CHANGES if (before or {}).get(k, None) != (after or {}).get(k, None))


def update_action(before: Schedule, after: Schedule) -> AuditAction:
    """An update that switches ``enabled`` is a pause or a resume, whichever route made it."""
    if before.enabled and not after.enabled:
        return AuditAction.PAUSED
    if after.enabled and not before.enabled:
        return AuditAction.RESUMED
    return AuditAction.UPDATED


def changes(action: AuditAction, before: Schedule | None, after: Schedule | None) -> list[str]:
    """What an entry says changed: the differing fields of the snapshots, plus what masking hides there (a new
    secret header value, a rotated webhook secret) without saying what it was."""
    if action is AuditAction.SECRET_ROTATED:
        return ["webhookSecret"]
    fields = changed_fields(snapshot(before), snapshot(after))
    if (
        "target" not in fields
        and before is not None
        and after is not None
        and _secret_headers(before) != _secret_headers(after)
    ):
        fields = sorted([*fields, "target"])  # the sealed values differ: a new value was sent
    return fields


def _secret_headers(schedule: Schedule) -> dict[str, str]:
    return schedule.target.http.secret_headers if isinstance(schedule.target, HttpTarget) else {}
