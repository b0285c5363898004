"""Wiring one worker process together: pool, NATS, HTTP session, progress writer, the loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import nats
from aiohttp import web
from loguru import logger

from shared.db.pool import make_pool
from shared.db.queries import sql
from shared.dev.keys import key_ring
from shared.netguard import LOOPBACK, parse_networks
from shared.settings import Settings
from worker.delivery import Deliverer
from worker.health import health_app, serve_health
from worker.loop import Worker, WorkerConfig
from worker.progress import ProgressWriter
from worker.targets.http import HttpSender
from worker.targets.nats import NatsPublisher


def system_clock() -> datetime:
    return datetime.now(UTC)


async def _start_health(settings: Settings, worker: Worker, nc: nats.NATS) -> web.AppRunner | None:
    if not settings.worker_metrics_port:
        return None

    async def ping() -> None:
        async with worker.pool.connection() as conn:
            await conn.execute(sql("database_ping"))

    # The loop goes round at least every poll interval; allow for a slow claim on a loaded database.
    app = health_app(ping, lambda: nc.is_connected, lambda: worker.last_tick, settings.worker_poll_max_sec + 30)
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
    )


@contextlib.asynccontextmanager
async def open_worker(settings: Settings, clock: Callable[[], datetime] = system_clock) -> AsyncIterator[Worker]:
    """A ready worker; its connections close when the block ends (after ``worker.run()`` returned)."""
    pool = make_pool(settings.postgres_url, min_size=2, max_size=4, name="worker", role=settings.worker_db_role)
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
    session = HttpSender.new_session(settings.worker_concurrency, allowed)
    progress = ProgressWriter(pool)
    deliverer = Deliverer(
        publisher=NatsPublisher(nc, clock),
        http=HttpSender(session, settings.worker_concurrency, keys, allowed),
        record=progress.record,
        record_published=progress.record_published,
        clock=clock,
        lease_sec=settings.run_lease_sec,
        deadletter_subject=settings.deadletter_subject,
        begin_retry=progress.begin_attempt,
    )
    worker = Worker(worker_config(settings), pool, deliverer, progress, clock, settings.postgres_url)
    health = await _start_health(settings, worker, nc)
    try:
        yield worker
    finally:
        if health is not None:
            await health.cleanup()
        await session.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.drain(), 5)
        await pool.close()
