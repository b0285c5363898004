"""What each schedule route does: the pure rules of shared/ plus the repository, with the clock injected."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import msgspec
from litestar.di import NamedDependency
from msgspec import UnsetType

from api.evaluation import Evaluator
from shared.audit import update_action
from shared.db.repository import Audit, ListFilter, ListPosition, Repository
from shared.db.run_ids import manual_run_id
from shared.errors import Conflict, FieldProblem, InvalidInput, PreconditionFailed
from shared.ids import uuid7
from shared.messaging.streams import QueueProvisioner
from shared.model import (
    SECRET_MASK,
    AuditPage,
    BackfillOverlap,
    BackfillRequest,
    BackfillResult,
    BulkRequest,
    BulkResult,
    CatchupPreview,
    FireTimeDetail,
    FireTimes,
    FixedDelayTrigger,
    HttpTarget,
    OccurrenceRun,
    PauseRequest,
    QueueTarget,
    RRuleTrigger,
    Run,
    RunPage,
    RunStatus,
    Schedule,
    ScheduleCreate,
    SchedulePage,
    ScheduleUpdate,
    Target,
    Trigger,
    TriggerPreviewRequest,
)
from shared.netguard import Network, is_ip_literal, refusal
from shared.occurrences import idempotency_key, occurrence_run_id
from shared.pagination import check_offset, decode_cursor, encode_cursor
from shared.schedules import apply_patch, check_body_tenant, new_schedule, pause_state
from shared.secrets import KeyRing, mask_target, new_webhook_secret, open_target, seal_target
from shared.settings import Settings
from shared.timing.budget import Budget
from shared.timing.explain import effective_dst_policy, explain_fire_times
from shared.timing.jitter import due_at
from shared.timing.misfire import plan_due
from shared.timing.next_fire import anchor_trigger, fire_times, first_fire, next_fire
from shared.tracing import current_trace_context
from shared.validation import (
    check_http_url,
    check_instant,
    check_labels,
    check_target,
    check_trigger,
    check_zone,
    parse_header_patterns,
    raise_if,
)

Clock = Callable[[], datetime]
# Workers poll at least this often anyway; a schedule due sooner is announced with NOTIFY.
WAKE_HORIZON = timedelta(seconds=2)
_TICK = timedelta(microseconds=1)
# The class defines a `list` method, which hides the builtin in its method signatures.
_Times = list[datetime]
_Occurrences = list[OccurrenceRun]


def explained(times: FireTimes, trigger: Trigger, tz: str, budget: Budget) -> FireTimes:
    """``times`` with the DST policy in effect and one detail per fire time (``?explain=true``)."""
    details = [
        FireTimeDetail(at=e.at, local=e.local, matched=list(e.matched), dst=e.dst, reason=e.reason)
        for e in explain_fire_times(trigger, tz, times.fire_times, budget=budget)
    ]
    return msgspec.structs.replace(times, dst_policy=effective_dst_policy(trigger), details=details)


def public(schedule: Schedule) -> Schedule:
    """A schedule as the API shows it: secret header values masked."""
    return msgspec.structs.replace(schedule, target=mask_target(schedule.target))


def wakes_workers(schedule: Schedule, now: datetime) -> bool:
    return schedule.enabled and schedule.next_run_at is not None and schedule.next_run_at - now <= WAKE_HORIZON


class ScheduleService:
    # A plain class, not a dataclass: Litestar's dependency injection would try to model a dataclass's fields.
    def __init__(
        self,
        repo: Repository,
        settings: Settings,
        clock: Clock,
        keys: KeyRing,
        allowed_networks: tuple[Network, ...] = (),
        queues: QueueProvisioner | None = None,
        evaluator: Evaluator | None = None,
    ) -> None:
        self.repo = repo
        self.settings = settings
        self.clock = clock
        self.keys = keys
        self.allowed_networks = allowed_networks
        self.queues = queues
        self.evaluator = evaluator or Evaluator(
            settings.trigger_eval_threads, settings.trigger_eval_queue, settings.trigger_eval_budget_ms
        )
        self.credential_headers = parse_header_patterns(settings.credential_header_patterns)

    def _audit(self, actor: str, now: datetime, **detail: Any) -> Audit:
        return Audit(actor, now, {k: v for k, v in detail.items() if v is not None} or None)

    def _new(
        self, tenant_id: str, body: ScheduleCreate, now: datetime, actor: str, budget: Budget | None
    ) -> tuple[Schedule, str, str]:
        """A new schedule as stored (targets sealed, pause state set), its sealed webhook secret and the secret."""
        schedule = new_schedule(
            body,
            tenant_id,
            uuid7(now),
            now,
            self.settings.max_payload_bytes,
            budget=budget,
            credential_headers=self.credential_headers,
        )
        schedule = msgspec.structs.replace(
            schedule, target=seal_target(schedule.target, self.keys, schedule.id, previous=None)
        )
        if not schedule.enabled:  # created paused: recorded as paused now, by its creator
            schedule = pause_state(msgspec.structs.replace(schedule, enabled=True), schedule, now, actor, None)
        secret = new_webhook_secret()
        return schedule, self.keys.seal(secret, schedule.id), secret

    async def create(self, tenant_id: str, body: ScheduleCreate, actor: str) -> Schedule:
        now = self.clock()
        schedule, sealed, secret = await self.evaluator.run(
            lambda budget: self._new(tenant_id, body, now, actor, budget), tenant_id
        )
        await self.check_reachable(schedule.target)
        await self.provision(tenant_id, schedule.target)
        stored = await self.repo.schedule_insert(
            schedule,
            sealed,
            now,
            wakes_workers(schedule, now),
            self.settings.tenant_max_schedules,
            self._audit(actor, now),
        )
        return public(msgspec.structs.replace(stored, webhook_secret=secret))  # the secret is shown this once

    async def rotate_secret(self, tenant_id: str, schedule_id: str, actor: str) -> Schedule:
        secret = new_webhook_secret()
        sealed = self.keys.seal(secret, schedule_id)
        now = self.clock()
        stored = await self.repo.schedule_set_webhook_secret(
            tenant_id, schedule_id, sealed, now, self._audit(actor, now)
        )
        return public(msgspec.structs.replace(stored, webhook_secret=secret))

    async def get(self, tenant_id: str, schedule_id: str) -> Schedule:
        return public(await self.repo.schedule_get(tenant_id, schedule_id))

    async def create_many(self, tenant_id: str, bodies: list[ScheduleCreate], actor: str) -> list[Schedule]:
        """All of ``bodies`` or none: every problem of every item is reported at once, named ``items[i].…``. Each
        item's triggers get a budget of their own, evaluated off the event loop."""
        now = self.clock()
        limit = self.evaluator.limit_sec

        def build(_: Budget) -> tuple[list[tuple[Schedule, str, str]], list[FieldProblem]]:
            built: list[tuple[Schedule, str, str]] = []
            problems: list[FieldProblem] = []
            first_index: dict[str, int] = {}
            for i, body in enumerate(bodies):
                try:
                    item = self._new(tenant_id, body, now, actor, Budget(time.thread_time, limit))
                except InvalidInput as exc:
                    problems += [FieldProblem(f"items[{i}].{p.field}", p.reason) for p in exc.problems]
                    continue
                if (seen := first_index.setdefault(item[0].name, i)) != i:
                    problems.append(FieldProblem(f"items[{i}].name", f"is also the name of items[{seen}]"))
                built.append(item)
            return built, problems

        built, problems = await self.evaluator.run(build, tenant_id)
        raise_if(problems)
        schedules = [s for s, _, _ in built]
        reachable = await asyncio.gather(*(self.check_reachable(s.target) for s in schedules), return_exceptions=True)
        for i, outcome in enumerate(reachable):
            if isinstance(outcome, InvalidInput):
                problems += [FieldProblem(f"items[{i}].{p.field}", p.reason) for p in outcome.problems]
            elif isinstance(outcome, BaseException):
                raise outcome
        raise_if(problems)
        for target in {s.target for s in schedules if isinstance(s.target, QueueTarget)}:
            await self.provision(tenant_id, target)
        stored = await self.repo.schedule_insert_many(
            tenant_id,
            [(s, sealed) for s, sealed, _ in built],
            now,
            any(wakes_workers(s, now) for s in schedules),
            self.settings.tenant_max_schedules,
            self._audit(actor, now, via="batch"),
        )
        # Each secret is shown this once.
        return [
            public(msgspec.structs.replace(s, webhook_secret=plain))
            for s, (_, _, plain) in zip(stored, built, strict=True)
        ]

    async def list(
        self, tenant_id: str, where: ListFilter, page: int, page_size: int, cursor: str | None
    ) -> SchedulePage:
        if cursor is not None:
            if page != 1:
                raise InvalidInput.field("page", "cannot be combined with cursor (the cursor says where to start)")
            position = ListPosition(after=decode_cursor(cursor))
        else:
            position = ListPosition(offset=check_offset(page, page_size))
        items, total, more = await self.repo.schedule_list(tenant_id, where, page_size, position)
        next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if more and items else None
        return SchedulePage(
            items=[public(s) for s in items], page=page, page_size=page_size, total=total, next_cursor=next_cursor
        )

    async def history(self, tenant_id: str, schedule_id: str, page: int, page_size: int) -> AuditPage:
        items, total = await self.repo.schedule_history(tenant_id, schedule_id, page_size, (page - 1) * page_size)
        return AuditPage(items=items, page=page, page_size=page_size, total=total)

    async def update(
        self, tenant_id: str, schedule_id: str, patch: ScheduleUpdate, if_match: int | None, actor: str
    ) -> Schedule:
        now = self.clock()
        if not isinstance(patch.target, UnsetType):
            await self.check_reachable(patch.target)
            raise_if(check_target(patch.target))  # before anything is made on NATS for it
            await self.provision(tenant_id, patch.target)
        updated = await self.repo.schedule_update(
            tenant_id,
            schedule_id,
            now,
            lambda current: self.evaluator.run(
                lambda budget: self._patched(current, patch, if_match, now, actor, budget), tenant_id
            ),
            lambda updated: wakes_workers(updated, now),
            self._audit(actor, now),
            update_action,
        )
        return public(updated)

    def _patched(
        self,
        current: Schedule,
        patch: ScheduleUpdate,
        if_match: int | None,
        now: datetime,
        actor: str,
        budget: Budget | None,
    ) -> Schedule:
        updated = apply_patch(
            current,
            patch,
            if_match,
            now,
            self.settings.max_payload_bytes,
            budget=budget,
            credential_headers=self.credential_headers,
        )
        updated = pause_state(current, updated, now, actor, None)
        if isinstance(patch.target, UnsetType):
            return updated
        return msgspec.structs.replace(
            updated, target=seal_target(updated.target, self.keys, current.id, previous=current.target)
        )

    async def provision(self, tenant_id: str, target: Target) -> None:
        """A QUEUE target's stream exists before the schedule is stored, so a consumer started right after the
        answer finds it (a stream left by a request that then failed is empty, and in the tenant's namespace)."""
        if isinstance(target, QueueTarget) and self.queues is not None:
            await self.queues.ensure_queue(tenant_id, target.queue.topic)

    async def pause(self, tenant_id: str, schedule_id: str, body: PauseRequest, actor: str) -> Schedule:
        """Pause (idempotent: pausing a paused schedule changes at most its reason)."""
        now = self.clock()

        def change(current: Schedule) -> Schedule | None:
            if not current.enabled and (body.reason is None or body.reason == current.paused_reason):
                return None
            paused = msgspec.structs.replace(current, enabled=False)
            return pause_state(current, paused, now, actor, body.reason)

        stored = await self.repo.schedule_update(
            tenant_id,
            schedule_id,
            now,
            change,
            lambda _: False,
            self._audit(actor, now, reason=body.reason),
            update_action,
        )
        return public(stored)

    async def resume(self, tenant_id: str, schedule_id: str, actor: str) -> Schedule:
        """Resume (idempotent): the next run is computed from now, as for a schedule re-enabled by PATCH."""
        now = self.clock()

        async def change(current: Schedule) -> Schedule | None:
            if current.enabled:
                return None
            return await self.evaluator.run(
                lambda budget: self._patched(current, ScheduleUpdate(enabled=True), None, now, actor, budget),
                tenant_id,
            )

        stored = await self.repo.schedule_update(
            tenant_id,
            schedule_id,
            now,
            change,
            lambda updated: wakes_workers(updated, now),
            self._audit(actor, now),
            update_action,
        )
        return public(stored)

    async def apply_by_name(
        self, tenant_id: str, name: str, body: ScheduleCreate, if_match: int | None, if_none_match: bool, actor: str
    ) -> tuple[Schedule, bool]:
        """PUT /schedules/by-name/{name}: the stored schedule becomes ``body`` (absent fields: their defaults).

        Idempotent: a body equal to what is stored writes nothing and keeps the version. ``if_match`` (a
        version) must be the stored one, ``if_none_match`` (``If-None-Match: *``) requires that none exists.
        """
        now = self.clock()
        await self.check_reachable(body.target)
        raise_if(check_target(body.target))  # before anything is made on NATS for it
        await self.provision(tenant_id, body.target)
        # Evaluated before the transaction, off the event loop: the schedule this body would create. Its problems
        # count only if it is created (a body that sends the secret mask back is fine for an update).
        fresh: tuple[Schedule, str, str] | None = None
        refused: InvalidInput | None = None
        try:
            fresh = await self.evaluator.run(lambda budget: self._new(tenant_id, body, now, actor, budget), tenant_id)
        except InvalidInput as exc:
            refused = exc
        secret: list[str] = []

        def create() -> tuple[Schedule, str]:
            if if_match is not None:
                raise PreconditionFailed(f"schedule {name!r} does not exist (If-Match)")
            if fresh is None:
                assert refused is not None
                raise refused
            schedule, sealed, plain = fresh
            secret.append(plain)
            return schedule, sealed

        async def change(current: Schedule) -> Schedule | None:
            if if_none_match:
                raise PreconditionFailed(f"schedule {name!r} exists (If-None-Match: *)")
            patch = self._difference(current, body)
            if patch is None:
                if if_match is not None and if_match != current.version:
                    raise PreconditionFailed(f"schedule is at version {current.version}, not {if_match}")
                return None
            return await self.evaluator.run(
                lambda budget: self._patched(current, patch, if_match, now, actor, budget), tenant_id
            )

        stored, created = await self.repo.schedule_apply_by_name(
            tenant_id,
            name,
            now,
            create,
            change,
            lambda s: wakes_workers(s, now),
            self.settings.tenant_max_schedules,
            self._audit(actor, now, via="by-name"),
        )
        if created:
            stored = msgspec.structs.replace(stored, webhook_secret=secret[0])
        return public(stored), created

    def _difference(self, current: Schedule, body: ScheduleCreate) -> ScheduleUpdate | None:
        """The PATCH that turns ``current`` into ``body`` (None: nothing differs).

        Compared as a client means them: an RRULE without startAt keeps its stored anchor, and secret header
        values are compared in clear (the mask stands for the stored value).
        """
        check_body_tenant(body.tenant_id, current.tenant_id)
        changes: dict[str, Any] = {}
        for f in ScheduleCreate.__struct_fields__:
            if f in ("tenant_id", "target", "trigger"):
                continue
            if getattr(body, f) != getattr(current, f):
                changes[f] = getattr(body, f)
        trigger = body.trigger
        if (
            isinstance(trigger, RRuleTrigger)
            and trigger.start_at is None
            and isinstance(current.trigger, RRuleTrigger)
            and current.trigger.start_at is not None
        ):
            trigger = msgspec.structs.replace(trigger, start_at=current.trigger.start_at)
        if trigger != current.trigger:
            changes["trigger"] = body.trigger
        if not self._same_target(current, body.target):
            changes["target"] = body.target
        return ScheduleUpdate(**changes) if changes else None

    def _same_target(self, current: Schedule, wanted: Target) -> bool:
        if not isinstance(wanted, HttpTarget) or not isinstance(current.target, HttpTarget):
            return wanted == current.target
        stored = open_target(current.target, self.keys, current.id)
        assert isinstance(stored, HttpTarget)
        kept = stored.http.secret_headers
        clear = {n: kept.get(n, v) if v == SECRET_MASK else v for n, v in wanted.http.secret_headers.items()}
        return msgspec.structs.replace(wanted.http, secret_headers=clear) == stored.http

    async def bulk(self, tenant_id: str, action: str, body: BulkRequest, actor: str) -> BulkResult:
        """Pause, resume or delete every schedule of the tenant carrying all of ``body.labels``, at most
        BULK_MAX_SCHEDULES of them, in one transaction, each audited."""
        if not body.labels:
            raise InvalidInput.field("labels", "must select at least one label (key: value)")
        raise_if(check_labels(body.labels))
        if body.reason is not None and action != "pause":
            raise InvalidInput.field("reason", "only pause takes a reason")
        now = self.clock()
        params: dict[str, Any] = {"now": now}
        match action:
            case "pause":
                params |= {"reason": body.reason, "actor": actor}

                async def plan(matched: list[Schedule]) -> list[Schedule]:
                    return [s for s in matched if s.enabled]

            case "resume":
                limit = self.evaluator.limit_sec

                async def plan(matched: list[Schedule]) -> list[Schedule]:
                    chosen = [s for s in matched if not s.enabled]

                    def next_runs(_: Budget) -> list[datetime | None]:
                        # Off the event loop, each schedule with a budget of its own (as a batch create).
                        return [
                            apply_patch(
                                s,
                                ScheduleUpdate(enabled=True),
                                None,
                                now,
                                self.settings.max_payload_bytes,
                                budget=Budget(time.thread_time, limit),
                            ).next_run_at
                            for s in chosen
                        ]

                    params["next_run_at"] = await self.evaluator.run(next_runs, tenant_id)
                    return chosen

            case _:

                async def plan(matched: list[Schedule]) -> list[Schedule]:
                    return matched

        matched, changed = await self.repo.schedule_bulk(
            tenant_id,
            body.labels,
            self.settings.bulk_max_schedules,
            plan,
            None if body.dry_run else action,
            self._audit(actor, now, via="bulk", selector=body.labels, reason=body.reason),
            params,
        )
        return BulkResult(
            action=action, dry_run=body.dry_run, matched=len(matched), changed=len(changed), ids=[s.id for s in changed]
        )

    async def check_reachable(self, target: Target) -> None:
        """The SSRF guard at the door: refuse an HTTP target whose host is, or resolves to, an internal address.

        A name that does not resolve from here is accepted: workers check every address again when they connect.
        """
        if not isinstance(target, HttpTarget) or check_http_url(target.http.url):
            return  # not HTTP, or a URL validation refuses anyway (with a better message)
        parts = urlsplit(target.http.url)
        host = parts.hostname or ""
        if is_ip_literal(host):
            addresses = [host.strip("[]")]
        else:
            try:
                infos = await asyncio.wait_for(
                    asyncio.get_running_loop().getaddrinfo(host, parts.port or 0, type=socket.SOCK_STREAM), 2.0
                )
            except (OSError, TimeoutError, UnicodeError):
                return
            addresses = [str(info[4][0]) for info in infos]
        for address in addresses:
            reason = refusal(address.split("%")[0], self.allowed_networks)
            if reason:
                raise InvalidInput.field(
                    "target.http.url", f"{host} is not allowed: {reason} (see HTTP_TARGET_ALLOW_CIDRS)"
                )

    async def delete(self, tenant_id: str, schedule_id: str, actor: str) -> None:
        await self.repo.schedule_delete(tenant_id, schedule_id, self._audit(actor, self.clock()))

    async def preview(self, tenant_id: str, schedule_id: str, count: int, explain: bool = False) -> FireTimes:
        s = await self.repo.schedule_get(tenant_id, schedule_id)
        now = self.clock()
        return await self.evaluator.run(
            lambda budget: self._schedule_fire_times(s, now, count, budget, explain), tenant_id
        )

    @staticmethod
    def _schedule_fire_times(
        s: Schedule, now: datetime, count: int, budget: Budget, explain: bool = False
    ) -> FireTimes:
        # What is next from now: an overdue next_run_at fires at once (first), later ones follow the trigger;
        # a parked FIXED_DELAY has none until its run finishes.
        start = (
            s.next_run_at if s.enabled else first_fire(s.trigger, s.tz, now, s.last_run_at is not None, budget=budget)
        )
        if start is None:
            return FireTimes([])
        times = [start, *fire_times(s.trigger, s.tz, max(start, now), count - 1, budget=budget)]
        due = [due_at(s.id, t, s.jitter_sec) or t for t in times] if s.jitter_sec else None
        result = FireTimes(times, due_times=due)
        return explained(result, s.trigger, s.tz, budget) if explain else result

    async def preview_trigger(self, tenant_id: str, request: TriggerPreviewRequest) -> FireTimes:
        now = self.clock()
        return await self.evaluator.run(lambda budget: self._trigger_fire_times(request, now, budget), tenant_id)

    @staticmethod
    def _trigger_fire_times(request: TriggerPreviewRequest, now: datetime, budget: Budget) -> FireTimes:
        after = request.after or now
        raise_if(
            check_instant(after, "after")
            or check_zone(request.tz)
            or check_trigger(request.trigger, request.tz, after, budget=budget)
        )
        trigger = anchor_trigger(request.trigger, after)
        times = FireTimes(fire_times(trigger, request.tz, after, request.count, budget=budget))
        return explained(times, trigger, request.tz, budget) if request.explain else times

    async def run_now(self, tenant_id: str, schedule_id: str) -> Run:
        # The request's trace continues in the worker that delivers this run.
        now = self.clock()
        return await self.repo.run_insert_manual(
            tenant_id, schedule_id, manual_run_id(now), now, current_trace_context()
        )

    async def runs(
        self, tenant_id: str, schedule_id: str, status: RunStatus | None, page: int, page_size: int
    ) -> RunPage:
        items, total = await self.repo.run_list(
            tenant_id, schedule_id, status.value if status else None, page_size, (page - 1) * page_size
        )
        return RunPage(items=items, page=page, page_size=page_size, total=total)

    async def run(self, tenant_id: str, run_id: str) -> Run:
        return await self.repo.run_get(tenant_id, run_id)

    async def cancel_run(self, tenant_id: str, run_id: str, actor: str) -> Run:
        now = self.clock()

        def rearm(schedule: Schedule) -> datetime | None:
            # FIXED_DELAY counts from when the run finished: a cancelled run finished now.
            return next_fire(schedule.trigger, schedule.tz, now) if schedule.enabled else None

        return await self.repo.run_cancel(tenant_id, run_id, now, rearm, self._audit(actor, now))

    def _occurrences(self, schedule: Schedule, times: _Times, status: str) -> _Occurrences:
        runs = []
        for at in times:
            key = idempotency_key(schedule.id, at)
            runs.append(
                OccurrenceRun(run_id=occurrence_run_id(key, at), scheduled_for=at, idempotency_key=key, status=status)
            )
        return runs

    async def backfill(self, tenant_id: str, schedule_id: str, body: BackfillRequest, actor: str) -> BackfillResult:
        """Record the occurrences of ``[from, to]`` the trigger had, with the ids and keys a worker gives them."""
        now = self.clock()
        limit = self.settings.backfill_max_runs
        raise_if(check_instant(body.from_, "from") + check_instant(body.to, "to"))
        if body.to < body.from_:
            raise InvalidInput.field("to", "must not be before from")
        if body.to > now:
            raise InvalidInput.field("to", "must not be in the future: workers fire those occurrences themselves")

        async def occurrences(schedule: Schedule, open_runs: int) -> list[tuple[str, datetime, str]]:
            if isinstance(schedule.trigger, FixedDelayTrigger):
                raise InvalidInput.field(
                    "trigger", "a FIXED_DELAY schedule's occurrences depend on when each run finished: no backfill"
                )
            if not schedule.enabled and not body.dry_run:
                raise Conflict("the schedule is paused: resume it first (workers do not deliver a paused one's runs)")
            if body.overlap is BackfillOverlap.SKIP and open_runs and not body.dry_run:
                raise Conflict(f"{open_runs} run(s) of this schedule are still open (overlap: SKIP)")
            # Budgeted and off the event loop, like every other evaluation a request asks for.
            # Bounded by the range too: a short range of a dense rule must not evaluate `limit` occurrences.
            times = await self.evaluator.run(
                lambda budget: fire_times(
                    schedule.trigger, schedule.tz, body.from_ - _TICK, limit + 1, budget=budget, until=body.to
                ),
                tenant_id,
            )
            if len(times) > limit:
                raise InvalidInput.field(
                    "to", f"the range holds more than {limit} occurrences (BACKFILL_MAX_RUNS); split it"
                )
            return [(o.run_id, o.scheduled_for, o.idempotency_key) for o in self._occurrences(schedule, times, "")]

        found, existing = await self.repo.run_backfill(
            tenant_id,
            schedule_id,
            occurrences,
            now,
            body.dry_run,
            self._audit(actor, now, **{"from": body.from_.isoformat(), "to": body.to.isoformat()}),
        )
        fresh = "WOULD_CREATE" if body.dry_run else "CREATED"
        runs = [
            OccurrenceRun(run_id=i, scheduled_for=at, idempotency_key=k, status="EXISTS" if i in existing else fresh)
            for i, at, k in found
        ]
        return BackfillResult(
            dry_run=body.dry_run,
            created=0 if body.dry_run else len(found) - len(existing),
            existing=len(existing),
            runs=runs,
        )

    async def catchup_preview(
        self, tenant_id: str, schedule_id: str, since: datetime, until: datetime | None
    ) -> CatchupPreview:
        """What the misfire policy would record if no worker ran from ``since`` until ``until`` (default now)."""
        now = self.clock()
        if until is None and since > now:
            raise InvalidInput.field("since", "must not be in the future (or give until)")
        until = until or now
        raise_if(check_instant(since, "since") + check_instant(until, "until"))
        if until < since:
            raise InvalidInput.field("until", "must not be before since")
        s = await self.repo.schedule_get(tenant_id, schedule_id)
        grace = timedelta(seconds=self.settings.misfire_grace_sec)

        def first_due(budget: Budget) -> datetime | None:
            if isinstance(s.trigger, FixedDelayTrigger):
                return first_fire(s.trigger, s.tz, since - _TICK, budget=budget)
            return next_fire(s.trigger, s.tz, since - _TICK, budget=budget)

        due = await self.evaluator.run(first_due, tenant_id)
        if due is None or due > until:
            return CatchupPreview(
                misfire_policy=s.misfire_policy, since=since, until=until, missed=0, skipped=0, runs=[], next_run_at=due
            )
        # plan_due takes no budget (its scan is bounded: catchUpLimit, and 1,000 occurrences at most), but it runs
        # off the event loop, as every evaluation a request asks for.
        plan = await self.evaluator.run(
            lambda _: plan_due(s.trigger, s.tz, due, until, s.misfire_policy, s.catch_up_limit, grace), tenant_id
        )
        return CatchupPreview(
            misfire_policy=s.misfire_policy,
            since=since,
            until=until,
            missed=plan.missed,
            skipped=plan.skipped,
            runs=self._occurrences(s, plan.fire_at, "WOULD_CREATE"),
            next_run_at=plan.next_run_at,
        )


# How route handlers ask for the service and the tenant in scope (both provided by the app / controllers).
Service = NamedDependency[ScheduleService]
TenantId = NamedDependency[str]
