"""Per-request observability for the API: one log line and one metric sample per request."""

from __future__ import annotations

import time

from litestar import Response, get
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import TENANT_STATE_KEY
from shared import metrics

_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def request_metrics(app: ASGIApp) -> ASGIApp:
    """ASGI middleware around the whole application, so that every answer is seen with the status the client
    got (401s raised by authentication, 404/405 for paths no route matches, 431s): duration by route template
    (not the raw path: ids would explode the series; ``unmatched`` for every unknown path) and status, and a
    request log line without headers (no Authorization, no secrets) naming the tenant only once the token was
    found to grant it."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        raw_method = str(scope.get("method", ""))
        method = raw_method if raw_method in _METHODS else "OTHER"

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, record_status)
        finally:
            elapsed = time.perf_counter() - started
            route = str(scope.get("path_template") or "unmatched")
            metrics.api_requests.labels(method, route, str(status)).observe(elapsed)
            tenant = (scope.get("state") or {}).get(TENANT_STATE_KEY)
            logger.bind(tenant_id=tenant).info("{} {} {} {:.1f}ms", method, route, status, elapsed * 1000)

    return middleware


@get("/metrics", tags=["health"], summary="Prometheus metrics of this API process", include_in_schema=False)
async def metrics_route() -> Response[bytes]:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
