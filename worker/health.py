"""The worker's own HTTP port (WORKER_METRICS_PORT): /metrics for Prometheus, /live and /ready for Kubernetes.

/ready means this worker can do its job: Postgres answers, NATS is connected, and the claim loop went round
recently (a wedged loop is not ready even if the process is alive).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

READY_TIMEOUT_SEC = 2.0


def health_app(
    ping_database: Callable[[], Awaitable[None]],
    nats_connected: Callable[[], bool],
    last_tick: Callable[[], float],
    max_tick_age_sec: float,
) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def live(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(_: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(ping_database(), READY_TIMEOUT_SEC)
            database = "ok"
        except Exception:  # any failure means not ready; the reason is in the worker's own logs
            database = "unavailable"
        tick_age = time.monotonic() - last_tick()
        body = {
            "database": database,
            "nats": "ok" if nats_connected() else "disconnected",
            "loop": "ok" if tick_age <= max_tick_age_sec else f"stalled for {tick_age:.0f}s",
        }
        ok = all(value == "ok" for value in body.values())
        return web.json_response({"status": "ok" if ok else "unavailable", **body}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/live", live)
    app.router.add_get("/ready", ready)
    return app


async def serve_health(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
