"""What each schedule route does: the pure rules of shared/ plus the repository, with the clock injected."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import msgspec
from litestar.di import NamedDependency
from msgspec import UnsetType

from api.evaluation import Evaluator
from shared.db.repository import ListFilter, Repository
from shared.errors import InvalidInput
from shared.messaging.streams import QueueProvisioner
from shared.model import (
    FireTimes,
    HttpTarget,
    QueueTarget,
    Run,
    RunPage,
    RunStatus,
    Schedule,
    ScheduleCreate,
    SchedulePage,
    ScheduleUpdate,
    Target,
    TriggerPreviewRequest,
)
from shared.netguard import Network, is_ip_literal, refusal
from shared.schedules import apply_patch, new_schedule
from shared.secrets import KeyRing, mask_target, new_webhook_secret, seal_target
from shared.settings import Settings
from shared.timing.budget import Budget
from shared.timing.jitter import due_at
from shared.timing.next_fire import anchor_trigger, fire_times, first_fire
from shared.tracing import current_trace_context
from shared.validation import (
    check_http_url,
    check_instant,
    check_target,
    check_trigger,
    check_zone,
    parse_header_patterns,
    raise_if,
)

Clock = Callable[[], datetime]
# Workers poll at least this often anyway; a schedule due sooner is announced with NOTIFY.
WAKE_HORIZON = timedelta(seconds=2)


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

    async def create(self, tenant_id: str, body: ScheduleCreate) -> Schedule:
        now = self.clock()
        schedule_id = str(uuid.uuid4())
        schedule = await self.evaluator.run(
            lambda budget: new_schedule(
                body,
                tenant_id,
                schedule_id,
                now,
                self.settings.max_payload_bytes,
                budget=budget,
                credential_headers=self.credential_headers,
            ),
            tenant_id,
        )
        await self.check_reachable(schedule.target)
        await self.provision(tenant_id, schedule.target)
        schedule = msgspec.structs.replace(
            schedule, target=seal_target(schedule.target, self.keys, schedule.id, previous=None)
        )
        secret = new_webhook_secret()
        stored = await self.repo.schedule_insert(
            schedule,
            self.keys.seal(secret, schedule.id),
            now,
            wakes_workers(schedule, now),
            self.settings.tenant_max_schedules,
        )
        return public(msgspec.structs.replace(stored, webhook_secret=secret))  # the secret is shown this once

    async def rotate_secret(self, tenant_id: str, schedule_id: str) -> Schedule:
        secret = new_webhook_secret()
        sealed = self.keys.seal(secret, schedule_id)
        stored = await self.repo.schedule_set_webhook_secret(tenant_id, schedule_id, sealed, self.clock())
        return public(msgspec.structs.replace(stored, webhook_secret=secret))

    async def get(self, tenant_id: str, schedule_id: str) -> Schedule:
        return public(await self.repo.schedule_get(tenant_id, schedule_id))

    async def list(self, tenant_id: str, where: ListFilter, page: int, page_size: int) -> SchedulePage:
        items, total = await self.repo.schedule_list(tenant_id, where, page_size, (page - 1) * page_size)
        return SchedulePage(items=[public(s) for s in items], page=page, page_size=page_size, total=total)

    async def update(self, tenant_id: str, schedule_id: str, patch: ScheduleUpdate, if_match: int | None) -> Schedule:
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
                lambda budget: self._patched(current, patch, if_match, now, budget), tenant_id
            ),
            lambda updated: wakes_workers(updated, now),
        )
        return public(updated)

    def _patched(
        self, current: Schedule, patch: ScheduleUpdate, if_match: int | None, now: datetime, budget: Budget
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

    async def delete(self, tenant_id: str, schedule_id: str) -> None:
        await self.repo.schedule_delete(tenant_id, schedule_id)

    async def preview(self, tenant_id: str, schedule_id: str, count: int) -> FireTimes:
        s = await self.repo.schedule_get(tenant_id, schedule_id)
        now = self.clock()
        return await self.evaluator.run(lambda budget: self._schedule_fire_times(s, now, count, budget), tenant_id)

    @staticmethod
    def _schedule_fire_times(s: Schedule, now: datetime, count: int, budget: Budget) -> FireTimes:
        # What is next from now: an overdue next_run_at fires at once (first), later ones follow the trigger;
        # a parked FIXED_DELAY has none until its run finishes.
        start = (
            s.next_run_at if s.enabled else first_fire(s.trigger, s.tz, now, s.last_run_at is not None, budget=budget)
        )
        if start is None:
            return FireTimes([])
        nominal = [start, *fire_times(s.trigger, s.tz, max(start, now), count - 1, budget=budget)]
        if not s.jitter_sec:
            return FireTimes(nominal)
        return FireTimes(nominal, due_times=[due_at(s.id, t, s.jitter_sec) or t for t in nominal])

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
        return FireTimes(fire_times(trigger, request.tz, after, request.count, budget=budget))

    async def run_now(self, tenant_id: str, schedule_id: str) -> Run:
        # The request's trace continues in the worker that delivers this run.
        return await self.repo.run_insert_manual(
            tenant_id, schedule_id, str(uuid.uuid4()), self.clock(), current_trace_context()
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


# How route handlers ask for the service and the tenant in scope (both provided by the app / controllers).
Service = NamedDependency[ScheduleService]
TenantId = NamedDependency[str]
