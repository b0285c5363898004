"""`python -m worker`: one worker process. Run as many as you like; they share the work through Postgres."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta

import nats
from loguru import logger

from shared.db.pool import make_pool
from shared.logs import setup_logging
from shared.settings import Settings
from worker.delivery import Deliverer
from worker.loop import Worker, WorkerConfig
from worker.progress import ProgressWriter
from worker.targets.http import HttpSender
from worker.targets.nats import NatsPublisher


def system_clock() -> datetime:
    return datetime.now(UTC)


async def serve(settings: Settings) -> None:
    pool = make_pool(settings.postgres_url, min_size=2, max_size=4, name="worker")
    await pool.open(wait=False)

    async def on_nats_error(exc: Exception) -> None:
        logger.warning("NATS: {}", exc)

    nc = await nats.connect(
        settings.nats_url, name="scheduler-worker", max_reconnect_attempts=-1, reconnect_time_wait=0.5,
        error_cb=on_nats_error, connect_timeout=5,
    )
    session = HttpSender.new_session(settings.worker_concurrency)
    progress = ProgressWriter(pool)
    deliverer = Deliverer(
        publisher=NatsPublisher(nc, system_clock), http=HttpSender(session), record=progress.record,
        clock=system_clock, lease_sec=settings.run_lease_sec, deadletter_subject=settings.deadletter_subject,
    )
    config = WorkerConfig(
        batch_size=settings.worker_batch_size, concurrency=settings.worker_concurrency,
        poll_max_sec=settings.worker_poll_max_sec, lease_sec=settings.run_lease_sec,
        misfire_grace=timedelta(seconds=settings.misfire_grace_sec),
    )
    worker = Worker(config, pool, deliverer, progress, system_clock, settings.postgres_url)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)
    logger.info("worker {} started (batch {}, concurrency {})", worker.id, config.batch_size, config.concurrency)
    try:
        await worker.run()
    finally:
        await session.close()
        await nc.drain()
        await pool.close()
    logger.info("worker {} stopped", worker.id)


def main() -> None:
    settings = Settings.from_env()
    if not settings.postgres_url or not settings.nats_url:
        raise SystemExit("POSTGRES_URL and NATS_URL must be set")
    setup_logging(settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
