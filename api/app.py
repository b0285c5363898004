"""The Litestar application: routes, dependencies, error mapping and the database pool's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

from api.auth import PUBLIC_PATHS, BearerAuth, TokenVerifier
from api.console import console_paths, console_routes
from api.devmode import dev_jwks
from api.evaluation import Evaluator
from api.observability import metrics_route, request_metrics
from api.openapi import openapi_config
from api.problems import EXCEPTION_HANDLERS
from api.routes.health import dev_jwks_route, health, live, ready
from api.routes.runs import RunController
from api.routes.schedules import ScheduleController, create_batch
from api.routes.triggers import preview_trigger
from api.service import Clock, ScheduleService
from api.serving import security_headers
from api.strict_query import reject_unknown_query
from shared.db.pool import make_pool
from shared.db.repository import Repository
from shared.messaging.streams import QueueProvisioner, namespace_of, stream_limits
from shared.netguard import LOOPBACK, parse_networks
from shared.ratelimit import TokenBuckets
from shared.secrets import key_ring
from shared.settings import Settings


def system_clock() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings, clock: Clock = system_clock, tracing: bool = False) -> Litestar:
    """``tracing``: add OpenTelemetry's ASGI instrumentation (only when an exporter is installed: it is not free)."""
    pool = make_pool(
        settings.postgres_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        name="api",
        role=settings.api_db_role,
    )
    repo = Repository(pool)
    allowed = parse_networks(settings.http_target_allow_cidrs)
    if settings.auth_mode == "dev":
        allowed += LOOPBACK  # local receivers in development
    queues = QueueProvisioner(settings.nats_url, namespace_of(settings), stream_limits(settings)[1])
    evaluator = Evaluator(settings.trigger_eval_threads, settings.trigger_eval_queue, settings.trigger_eval_budget_ms)
    service = ScheduleService(repo, settings, clock, key_ring(settings), allowed, queues, evaluator)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await pool.open(wait=False)
        try:
            yield
        finally:
            evaluator.close()
            await queues.close()
            await pool.close()

    dev = settings.auth_mode == "dev"
    public = [*PUBLIC_PATHS, *(["/dev/jwks.json"] if dev else [])]
    app = Litestar(
        route_handlers=[
            ScheduleController,
            create_batch,
            RunController,
            preview_trigger,
            health,
            ready,
            live,
            metrics_route,
            *([dev_jwks_route] if dev else []),
            *console_routes(settings),
        ],
        dependencies={"service": Provide(lambda: service, use_cache=True, sync_to_thread=False)},
        state=State(
            {
                "repo": repo,
                "verifier": TokenVerifier(settings),
                "settings": settings,
                "rate_limits": TokenBuckets(
                    settings.tenant_rate_limit_rps, settings.tenant_rate_limit_burst, settings.rate_limit_max_keys
                ),
                "dev_jwks": dev_jwks(settings.dev_dir) if dev else None,
            }
        ),
        middleware=[
            DefineMiddleware(BearerAuth, exclude=[*(f"^{p}$" for p in public), "^/schema", *console_paths(settings)]),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=reject_unknown_query,
        lifespan=[lifespan],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi_config(),
        plugins=[OpenTelemetryPlugin(OpenTelemetryConfig())] if tracing else [],
        debug=False,
        logging_config=None,  # shared/logs.py routes stdlib logging through loguru
    )
    # Around Litestar's own exception handling and routing, so that every answer (a 401 from authentication, a 404
    # for an unknown path, a 431) is logged and counted with the status the client got.
    app.asgi_handler = request_metrics(security_headers(app.asgi_handler, settings.max_header_bytes))
    return app
