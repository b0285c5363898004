"""Wiring one worker process together: pool, NATS, HTTP session, progress writer, the loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import nats
from aiohttp import web
from loguru import logger

from shared.db.pool import guarded_session, make_pool
from shared.netguard import LOOPBACK, parse_networks
from shared.secrets import key_ring
from shared.settings import Settings
from worker.delivery import Deliverer
from worker.events import EventRelay
from worker.health import health_app, serve_health
from worker.leases import Leases
from worker.loop import Worker, WorkerConfig, worker_id
from worker.maintenance import start_maintenance
from worker.progress import ProgressWriter
from worker.store import WorkerStore
from worker.targets.http import HttpSender
from worker.targets.nats import NatsPublisher


def system_clock() -> datetime:
    return datetime.now(UTC)


async def _start_health(settings: Settings, worker: Worker, nc: nats.NATS) -> web.AppRunner | None:
    if not settings.worker_metrics_port:
        return None

    # The loop goes round at least every poll interval; allow for a slow claim on a loaded database.
    patience = settings.worker_poll_max_sec + 30
    app = health_app(worker.store.ping, lambda: nc.is_connected, lambda: worker.last_tick, patience)
    try:
        return await serve_health(app, settings.worker_metrics_host, settings.worker_metrics_port)
    except OSError as exc:
        logger.error("cannot serve /metrics and /ready on port {}: {}", settings.worker_metrics_port, exc)
        return None


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        batch_size=settings.worker_batch_size,
        concurrency=settings.worker_concurrency,
        poll_max_sec=settings.worker_poll_max_sec,
        lease_sec=settings.run_lease_sec,
        misfire_grace=timedelta(seconds=settings.misfire_grace_sec),
        shutdown_grace_sec=settings.worker_shutdown_grace_sec,
        tenant_fire_rate=settings.tenant_fire_rate,
    )


@contextlib.asynccontextmanager
async def open_worker(settings: Settings, clock: Callable[[], datetime] = system_clock) -> AsyncIterator[Worker]:
    """A ready worker; its connections close when the block ends (after ``worker.run()`` returned)."""
    # A frozen worker must not keep its claim's row locks, nor a dead peer its connection (issue: frozen workers).
    session, connect = guarded_session(settings.worker_db_timeout_sec, settings.worker_db_keepalive_sec)
    pool = make_pool(
        settings.postgres_url,
        min_size=2,
        max_size=4,
        name="worker",
        role=settings.worker_db_role,
        session=session,
        connect=connect,
    )
    await pool.open(wait=False)

    async def on_nats_error(exc: Exception) -> None:
        logger.warning("NATS: {!r}", exc)

    nc = await nats.connect(
        settings.nats_url,
        name="scheduler-worker",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=on_nats_error,
        connect_timeout=5,
    )
    keys = key_ring(settings, required=False)
    if not keys.keys:
        logger.warning("SECRETS_KEY is not set: HTTP targets with secret headers or signing secrets will fail")
    allowed = parse_networks(settings.http_target_allow_cidrs)
    if settings.auth_mode == "dev":
        allowed += LOOPBACK  # local receivers in development
    http_session = HttpSender.new_session(settings.worker_concurrency, allowed)
    store = WorkerStore(pool, settings.postgres_url, worker_id())
    leases = Leases(store, clock, settings.run_lease_sec)
    progress = ProgressWriter(store)
    publisher = NatsPublisher.from_settings(nc, clock, settings)
    deliverer = Deliverer(
        publisher=publisher,
        http=HttpSender(
            http_session, settings.worker_concurrency, keys, allowed, excerpt_bytes=settings.run_response_excerpt_bytes
        ),
        record=progress.record,
        record_success=progress.succeeded,
        clock=clock,
        lease_sec=settings.run_lease_sec,
        committed=progress.committed,
        leases=leases,
        begin_retry=progress.begin_attempt,
        write_now=progress.write_now,
        withdrawn=store.withdrawn,
    )
    relay = EventRelay(store, publisher, publisher.ns)
    worker = Worker(worker_config(settings), store, deliverer, progress, leases, clock, relay=relay)
    health = await _start_health(settings, worker, nc)
    maintenance = await start_maintenance(settings, pool, clock)
    try:
        yield worker
    finally:
        if maintenance is not None:
            await maintenance.close()
        if health is not None:
            await health.cleanup()
        await http_session.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.drain(), 5)
        await pool.close()
