"""The wire and storage shapes of schedules and runs.

The same msgspec types decode the API body and the JSONB stored in Postgres, so what a client sent is what a
worker reads. Field names are camelCase on the wire (``rename="camel"``); unknown fields are rejected.
"""

from __future__ import annotations

import enum
import functools
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

# Instants must carry an offset: a naive time would silently mean the server's zone.
AwareDatetime = Annotated[datetime, Meta(tz=True)]


class _Wire(Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True, kw_only=True, frozen=True):
    pass


# --- triggers -------------------------------------------------------------------------------------------
# Every trigger may carry startAt/endAt: no fire before startAt, none after endAt.


class DstGap(enum.StrEnum):
    """What a matching local time that a spring-forward gap skips does (see README "DST policy")."""

    SHIFT = "SHIFT"  # fires anyway: CRON at the end of the gap, RRULE moved on by the gap (RFC 5545 §3.3.5)
    SKIP = "SKIP"  # does not fire that day


class DstOverlap(enum.StrEnum):
    """What a matching local time that a fall-back overlap repeats does."""

    FIRST = "FIRST"  # fires on its first occurrence only
    BOTH = "BOTH"  # fires on both occurrences


class DstPolicy(_Wire, frozen=True):
    """A trigger's DST policy; an absent field keeps the trigger's documented default for it.

    Defaults: RRULE and wall-clock CRON (fixed minute and hour) SHIFT / FIRST; real-time CRON (minute or hour
    field starting with ``*``) SKIP / BOTH, i.e. it follows elapsed time.
    """

    gap: DstGap | None = None
    overlap: DstOverlap | None = None


class CronTrigger(_Wire, tag="CRON", tag_field="type", frozen=True):
    cron: Annotated[str, Meta(max_length=256)]
    start_at: AwareDatetime | None = None
    end_at: AwareDatetime | None = None
    dst_policy: DstPolicy | None = None


class RRuleTrigger(_Wire, tag="RRULE", tag_field="type", frozen=True):
    rrule: Annotated[str, Meta(max_length=4096)]
    start_at: AwareDatetime | None = None
    end_at: AwareDatetime | None = None
    dst_policy: DstPolicy | None = None


class FixedDelayTrigger(_Wire, tag="FIXED_DELAY", tag_field="type", frozen=True):
    delay_sec: int
    start_at: AwareDatetime | None = None
    end_at: AwareDatetime | None = None


class OneShotTrigger(_Wire, tag="ONE_SHOT", tag_field="type", frozen=True):
    start_at: AwareDatetime
    end_at: AwareDatetime | None = None


Trigger = CronTrigger | RRuleTrigger | FixedDelayTrigger | OneShotTrigger


# --- targets --------------------------------------------------------------------------------------------


class HttpSpec(_Wire, omit_defaults=False, frozen=True):
    url: str
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = {}
    # Sent like `headers`, but sealed at rest and shown as SECRET_MASK by the API; sending the mask back in an
    # update keeps the stored value.
    secret_headers: dict[str, str] = {}
    body: Any = None
    timeout_sec: float = 10.0
    # Off by default; when on, every hop is checked against the SSRF guard again.
    follow_redirects: bool = False


SECRET_MASK = "********"


class QueueSpec(_Wire, frozen=True):
    # Relative to the tenant's queue namespace: `queues.<tenant>.<topic>` (NATS_QUEUE_SUBJECT_PREFIX).
    topic: str


class EventDelivery(enum.StrEnum):
    """How an EVENT is published."""

    DURABLE = "DURABLE"  # through JetStream: SUCCEEDED means the tenant's event stream acknowledged it
    AT_MOST_ONCE = "AT_MOST_ONCE"  # a core NATS publish: lost if the server dies before it forwards it


class EventTarget(_Wire, tag="EVENT", tag_field="kind", frozen=True):
    # Relative to the tenant's namespace: published on `tenants.<tenant>.<eventTopic>` (NATS_SUBJECT_PREFIX).
    event_topic: str
    delivery: EventDelivery = EventDelivery.DURABLE


class HttpTarget(_Wire, tag="HTTP", tag_field="kind", frozen=True):
    http: HttpSpec


class QueueTarget(_Wire, tag="QUEUE", tag_field="kind", frozen=True):
    queue: QueueSpec


Target = EventTarget | HttpTarget | QueueTarget


class MisfirePolicy(enum.StrEnum):
    """What to do with occurrences that came due while no worker was running."""

    FIRE_ONCE = "FIRE_ONCE"  # one run standing for all missed occurrences
    SKIP = "SKIP"  # none; continue with the next future occurrence
    CATCH_UP = "CATCH_UP"  # one run per missed occurrence, up to catchUpLimit


class RetryPolicy(_Wire, omit_defaults=False, frozen=True):
    max_attempts: int = 3
    backoff_sec: float = 1.0
    max_backoff_sec: float = 60.0


Labels = dict[str, str]


class ActionAfterCompletion(enum.StrEnum):
    """What becomes of a schedule with no occurrence left (a ONE_SHOT that fired, an exhausted rule)."""

    KEEP = "KEEP"  # it stays, COMPLETED
    DELETE = "DELETE"  # deleted once its last runs finished (they stay readable)


class OverlapPolicy(enum.StrEnum):
    """What an occurrence does while the previous run of its schedule is still in flight (worker/overlap.py)."""

    ALLOW = "ALLOW"  # it fires anyway: runs may overlap
    SKIP = "SKIP"  # it is skipped (counted in overlapSkipped)
    BUFFER_ONE = "BUFFER_ONE"  # one waits and fires when the run finishes; more are skipped
    CANCEL_OTHER = "CANCEL_OTHER"  # the run in flight is cancelled and this one fires (HTTP and QUEUE targets)


class Notify(_Wire, omit_defaults=False, frozen=True):
    """Which optional lifecycle events a schedule announces (every other event is always on)."""

    # scheduler.run.succeeded for each successful run: off by default, as it is one more row per run.
    run_succeeded: bool = False


# --- schedules ------------------------------------------------------------------------------------------


class ScheduleCreate(_Wire, frozen=True):
    name: str
    trigger: Trigger
    target: Target
    tenant_id: str | None = None
    description: str | None = None
    tz: str = "UTC"
    payload: Any = None
    enabled: bool = True
    misfire_policy: MisfirePolicy = MisfirePolicy.FIRE_ONCE
    catch_up_limit: int = 100
    retry: RetryPolicy = RetryPolicy()
    labels: Labels = {}
    # Pause after this many consecutive failed runs (Temporal's pauseOnFailure); null: never.
    pause_on_failure: int | None = None
    notify: Notify = Notify()
    # Spread each occurrence's fire time by a deterministic offset in [0, jitterSec) (shared/timing/jitter.py).
    jitter_sec: int | None = None
    action_after_completion: ActionAfterCompletion = ActionAfterCompletion.KEEP
    overlap: OverlapPolicy = OverlapPolicy.ALLOW


class ScheduleApply(ScheduleCreate, kw_only=True, frozen=True):
    """PUT /schedules/by-name/{name}: a schedule as for POST, whose ``name`` may be left out (the path names it)."""

    name: str | None = None  # type: ignore[assignment]


class ScheduleUpdate(_Wire, frozen=True):
    """PATCH body: absent fields keep their stored value; ``version`` is an alternative to If-Match."""

    name: str | UnsetType = UNSET
    trigger: Trigger | UnsetType = UNSET
    target: Target | UnsetType = UNSET
    tenant_id: str | UnsetType = UNSET
    description: str | UnsetType | None = UNSET
    tz: str | UnsetType = UNSET
    payload: Any | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    misfire_policy: MisfirePolicy | UnsetType = UNSET
    catch_up_limit: int | UnsetType = UNSET
    retry: RetryPolicy | UnsetType = UNSET
    labels: Labels | UnsetType = UNSET
    pause_on_failure: int | UnsetType | None = UNSET
    notify: Notify | UnsetType = UNSET
    jitter_sec: int | UnsetType | None = UNSET
    action_after_completion: ActionAfterCompletion | UnsetType = UNSET
    overlap: OverlapPolicy | UnsetType = UNSET
    version: int | UnsetType = UNSET


class ScheduleStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"  # no occurrence left (ONE_SHOT fired, COUNT/UNTIL/endAt reached)


class Schedule(Struct, rename="camel", kw_only=True):
    """A stored schedule, as the API returns it."""

    id: str
    tenant_id: str
    name: str
    description: str | None
    tz: str
    trigger: Trigger
    target: Target
    payload: Any
    enabled: bool
    misfire_policy: MisfirePolicy
    catch_up_limit: int
    retry: RetryPolicy
    labels: Labels
    status: ScheduleStatus
    next_run_at: datetime | None
    last_run_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int
    # The Standard Webhooks signing secret: shown only in the answers to create and secret:rotate.
    webhook_secret: str | None = None
    # Set while the schedule is paused (enabled false): why, since when and by whom (the token's `sub`).
    paused_reason: str | None = None
    paused_at: datetime | None = None
    paused_by: str | None = None
    # Lifecycle events and pause on failure (issue 12, README "Lifecycle events").
    pause_on_failure: int | None = None
    notify: Notify = Notify()
    jitter_sec: int | None = None
    action_after_completion: ActionAfterCompletion = ActionAfterCompletion.KEEP
    overlap: OverlapPolicy = OverlapPolicy.ALLOW
    # Occurrences the overlap policy did not fire because a run was still in flight (read-only).
    overlap_skipped: int = 0
    # When nextRunAt is fired: nextRunAt (the nominal occurrence, its run's scheduledFor) plus its jitter offset.
    next_due_at: datetime | None = None


class SchedulePage(Struct, rename="camel", kw_only=True):
    items: list[Schedule]
    page: int
    page_size: int
    # Exact, from the tenant's counter row without filters; with filters, counted up to LIST_COUNT_CAP matches
    # and null beyond (counting a million rows would cost more than the page).
    total: int | None
    # Pass as `cursor` for the page after this one; null on the last page.
    next_cursor: str | None = None


class ScheduleBatchCreate(_Wire, frozen=True):
    """POST /schedules:batch body: created all together or not at all."""

    items: Annotated[list[ScheduleCreate], Meta(min_length=1, max_length=1000)]


class ScheduleBatch(Struct, rename="camel", kw_only=True):
    items: list[Schedule]


class TriggerPreviewRequest(_Wire, frozen=True):
    trigger: Trigger
    tz: str = "UTC"
    after: AwareDatetime | None = None
    count: Annotated[int, Meta(ge=1, le=1000)] = 10
    # Also answer `details`: why each fire time fires and what DST did to it.
    explain: bool = False


class DstEffect(enum.StrEnum):
    """What a DST transition did to one fire time."""

    SHIFTED = "SHIFTED"  # its wall time was skipped by a gap and it fired anyway (dstPolicy.gap=SHIFT)
    OVERLAP_FIRST = "OVERLAP_FIRST"  # its wall time occurs twice; this is the first occurrence
    OVERLAP_SECOND = "OVERLAP_SECOND"  # ... and this the second (dstPolicy.overlap=BOTH)


class FireTimeDetail(Struct, rename="camel", omit_defaults=True, kw_only=True):
    """One fire time explained: its local time, what produced it, and any DST effect with the reason."""

    at: datetime
    local: datetime
    matched: list[str]
    dst: DstEffect | None = None
    reason: str | None = None


class FireTimes(Struct, rename="camel", omit_defaults=True):
    """The next fire times (UTC); with explain, also why each fires and what DST did to it."""

    fire_times: list[datetime]
    # With jitterSec: when each of fireTimes (the nominal occurrences) is fired.
    due_times: list[datetime] | None = None
    # Only with explain: the DST policy in effect (the trigger's, with defaults filled in; CRON and RRULE) and
    # one detail per fire time, in the same order as fireTimes.
    dst_policy: DstPolicy | None = None
    details: list[FireTimeDetail] | None = None


# Stored JSON -> typed structs. Many schedules share a trigger, target or retry policy, and these structs are
# frozen (safe to share), so each distinct JSON text is decoded once.
decode_trigger = functools.lru_cache(maxsize=4096)(msgspec.json.Decoder(Trigger).decode)
decode_target = functools.lru_cache(maxsize=4096)(msgspec.json.Decoder(Target).decode)
decode_retry = functools.lru_cache(maxsize=256)(msgspec.json.Decoder(RetryPolicy).decode)


# --- runs -----------------------------------------------------------------------------------------------


class RunStatus(enum.StrEnum):
    PENDING = "PENDING"  # recorded, not yet delivered (or its worker died: rescued after the lease)
    RETRYING = "RETRYING"  # an attempt failed; another follows at nextAttemptAt
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"  # attempts exhausted or a non-retryable answer; also sent to the dead-letter subject
    CANCELLED = "CANCELLED"  # cancelled (POST /runs/{id}/cancel), or its schedule was deleted or paused first


class Run(Struct, rename="camel", kw_only=True):
    id: str
    schedule_id: str
    tenant_id: str
    scheduled_for: datetime
    manual: bool
    idempotency_key: str
    status: RunStatus
    attempt: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    duration_ms: int | None
    http_status: int | None
    error: str | None
    delivery: Any


class RunPage(Struct, rename="camel", kw_only=True):
    items: list[Run]
    page: int
    page_size: int
    total: int


# --- audit, pause, bulk, filters, backfill (issue 12) -----------------------------------------------------


class AuditAction(enum.StrEnum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    PAUSED = "PAUSED"
    RESUMED = "RESUMED"
    DELETED = "DELETED"
    SECRET_ROTATED = "SECRET_ROTATED"
    RUN_CANCELLED = "RUN_CANCELLED"
    BACKFILLED = "BACKFILLED"


class AuditEntry(Struct, rename="camel", kw_only=True):
    """One change of a schedule: who (the token's ``sub``), what, when, and the versions before and after.

    ``before`` / ``after`` are the schedule as the API showed it then (secret header values masked, never a
    webhook secret); ``changed`` names the fields that differ.
    """

    id: int
    schedule_id: str
    action: AuditAction
    actor: str
    at: datetime
    version_before: int | None
    version_after: int | None
    changed: list[str]
    before: Any
    after: Any
    detail: Any


class AuditPage(Struct, rename="camel", kw_only=True):
    items: list[AuditEntry]
    page: int
    page_size: int
    total: int


class PauseRequest(_Wire, frozen=True):
    reason: Annotated[str, Meta(max_length=1000)] | None = None


class ScheduleSort(enum.StrEnum):
    """List orders; a leading ``-`` means descending. Ties are broken by id."""

    CREATED_AT = "createdAt"
    CREATED_AT_DESC = "-createdAt"
    UPDATED_AT = "updatedAt"
    UPDATED_AT_DESC = "-updatedAt"
    NEXT_RUN_AT = "nextRunAt"  # paused and completed schedules (no next run) last
    NEXT_RUN_AT_DESC = "-nextRunAt"
    NAME = "name"
    NAME_DESC = "-name"


class TargetKind(enum.StrEnum):
    EVENT = "EVENT"
    HTTP = "HTTP"
    QUEUE = "QUEUE"


class BulkRequest(_Wire, frozen=True):
    """A label selector (every label must match; at least one) and, for pause, the reason."""

    labels: Labels
    reason: Annotated[str, Meta(max_length=1000)] | None = None
    dry_run: bool = False


class BulkResult(Struct, rename="camel", kw_only=True):
    action: str
    dry_run: bool
    matched: int  # schedules the selector matches
    changed: int  # of those, the ones this request changed (a paused one is not paused again)
    ids: list[str]  # the changed ones (dry run: the ones that would change)


class BackfillOverlap(enum.StrEnum):
    ALLOW = "ALLOW"  # record every occurrence of the range at once
    SKIP = "SKIP"  # refuse (409) while a run of the schedule is still open


class BackfillRequest(_Wire, frozen=True):
    from_: AwareDatetime = msgspec.field(name="from")
    to: AwareDatetime
    overlap: BackfillOverlap = BackfillOverlap.ALLOW
    dry_run: bool = False


class OccurrenceRun(Struct, rename="camel", kw_only=True):
    """An occurrence and the run it has (or would have): the same id and idempotency key a worker uses."""

    run_id: str
    scheduled_for: datetime
    idempotency_key: str
    # CREATED (recorded by this request), EXISTS (already recorded: a receiver got or gets it once),
    # WOULD_CREATE (dry run)
    status: str


class BackfillResult(Struct, rename="camel", kw_only=True):
    dry_run: bool
    created: int
    existing: int
    runs: list[OccurrenceRun]


class CatchupPreview(Struct, rename="camel", kw_only=True):
    """What the misfire policy would do if no worker ran from ``since`` until ``until``."""

    misfire_policy: MisfirePolicy
    since: datetime
    until: datetime
    missed: int  # occurrences older than the grace period at ``until`` (at least this many when cut)
    skipped: int  # missed occurrences that get no run of their own
    runs: list[OccurrenceRun]  # the runs a worker would record at ``until``, missed and on time
    next_run_at: datetime | None  # the schedule's next occurrence after those
