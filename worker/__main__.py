"""`python -m worker`: one worker process. Run as many as you like; they share the work through Postgres."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

from loguru import logger

from shared.logs import setup_logging
from shared.settings import Settings
from shared.tracing import setup_tracing
from worker.runtime import open_worker


async def serve(settings: Settings) -> None:
    async with open_worker(settings) as worker:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.request_stop)
        logger.info(
            "worker {} started (batch {}, concurrency {})",
            worker.id,
            worker.config.batch_size,
            worker.config.concurrency,
        )
        await worker.run()
        logger.info("worker {} stopped", worker.id)


def main() -> None:
    settings = Settings.from_env()
    if not settings.postgres_url or not settings.nats_url:
        raise SystemExit("POSTGRES_URL and NATS_URL must be set")
    setup_logging(settings.log_level, settings.log_format)
    setup_tracing("scheduler-worker", os.environ)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(settings))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (uvicorn[standard] brings it): its C event loop and transports take a good part
    of the per-fire CPU that asyncio's pure-Python loop spends on callbacks, tasks and socket writes."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    main()
