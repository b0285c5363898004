"""Liveness, readiness and a health summary; no authentication."""

from __future__ import annotations

import asyncio
from importlib.metadata import version

from litestar import Response, get
from litestar.datastructures import State

from shared.errors import SchedulerError

READY_TIMEOUT_SEC = 2.0


@get("/live", tags=["health"], summary="The process is up", operation_id="getLive")
async def live() -> dict[str, str]:
    return {"status": "ok"}


async def _database_status(state: State) -> str:
    try:
        await asyncio.wait_for(state.repo.ping(), READY_TIMEOUT_SEC)
    except (TimeoutError, SchedulerError):
        return "unavailable"
    return "ok"


@get("/ready", tags=["health"], summary="Ready to serve: the database answers", operation_id="getReady")
async def ready(state: State) -> Response[dict[str, str]]:
    database = await _database_status(state)
    return Response({"status": database, "database": database}, status_code=200 if database == "ok" else 503)


@get("/health", tags=["health"], summary="Component statuses and versions", operation_id="getHealth")
async def health(state: State) -> Response[dict[str, object]]:
    database = await _database_status(state)
    body: dict[str, object] = {
        "status": "ok" if database == "ok" else "degraded",
        "version": version("scheduler"),
        "components": {"database": {"status": database}},
    }
    return Response(body, status_code=200 if database == "ok" else 503)


@get(
    "/dev/jwks.json",
    tags=["health"],
    summary="Dev mode only: the public key dev tokens are signed with",
    operation_id="getDevJwks",
)
async def dev_jwks_route(state: State) -> dict[str, object]:
    return state.dev_jwks  # type: ignore[no-any-return]
