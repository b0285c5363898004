"""The OpenAPI document as client generators need it, and API docs that work with no network.

- Every error a route can answer with is declared with the real problem+json shape (see ``api/problems.py``),
  so a generated client parses a 404 or a 412 into a typed ``Problem`` instead of "unexpected status".
- Operation ids are camelCase verbs (``createSchedule``); routes without an explicit one get their handler's
  name in camelCase rather than Litestar's path-derived ``schedules_schedule_id_run_run_now``.
- Swagger UI is served from the ``swagger-ui-bundle-v2`` package's files under ``/schema/assets``: air-gapped
  clusters render it, and its page has no inline script, so it works under ``Content-Security-Policy:
  default-src 'self'``. The CDN-based ReDoc/Elements/RapiDoc pages are not offered.
"""

from __future__ import annotations

import html
from http import HTTPStatus
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Router
from litestar.handlers import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router
from litestar.types import Method

from api.problems import PROBLEM_JSON

DOCS_STATIC = Path(__file__).parent / "docs"
ASSETS_PATH = "/assets"


class FieldError(msgspec.Struct):
    """One offending input: ``field`` is a dotted path on the wire (``trigger.cron``) or a header name."""

    field: str
    reason: str


class Problem(msgspec.Struct, kw_only=True):
    """RFC 9457 problem details, as ``api/problems.py`` writes them (``application/problem+json``)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    # Present on 400s (every offending field) and on conflicts that name a field.
    errors: list[FieldError] = msgspec.field(default_factory=list)


_WHEN = {
    400: "Invalid request: a body field, a parameter or the X-Tenant-Id header (see `errors`)",
    401: "No bearer token, or one that is not valid (the answer carries `WWW-Authenticate`)",
    403: "The token lacks the role, or does not grant the tenant",
    404: "No such resource in this tenant",
    409: "Conflicts with stored state: a duplicate name, or the tenant's schedule quota",
    412: "The schedule changed since the version sent in If-Match (or `version`)",
    413: "The request body is larger than MAX_BODY_BYTES",
    422: "Evaluating the trigger needs more CPU time than one request may spend",
    429: "The tenant's request rate limit is exceeded (the answer carries `Retry-After`)",
    503: "The database is unavailable; retry later",
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """Response declarations for ``statuses``, all with the problem+json body."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_JSON,
            description=_WHEN.get(status, HTTPStatus(status).phrase),
            generate_examples=False,
        )
        for status in statuses
    }


# What every authenticated route of a tenant can answer (the X-Tenant-Id header: 400; rate limit: 429).
_TENANT = (400, 401, 403, 429, 503)
TENANT_READ = problems(*_TENANT)
TENANT_READ_ONE = problems(*_TENANT, 404)
TENANT_CREATE = problems(*_TENANT, 409, 413, 422)
TENANT_UPDATE = problems(*_TENANT, 404, 409, 412, 413, 422)
TENANT_WRITE_ONE = problems(*_TENANT, 404)
TENANT_CHANGE_ONE = problems(*_TENANT, 404, 409, 413)  # a change the stored state may refuse
TENANT_BULK = problems(*_TENANT, 413)
TENANT_PREVIEW_ONE = problems(*_TENANT, 404, 422)
TRIGGER_PREVIEW = problems(*_TENANT, 413, 422)  # a tenant in scope: it spends that rate limit

# Previews: `?explain=true` (GET /schedules/{id}/preview) and `"explain": true` (POST /triggers/preview).
EXPLAIN_PARAM = (
    "Also return `dstPolicy` (the trigger's DST policy with its defaults filled in) and `details`: for each fire "
    "time, in the order of `fireTimes`, its local time, the cron fields / RRULE parts that produced it, and "
    "whether a DST transition shifted it (`SHIFTED`) or it is one copy of a repeated wall time "
    "(`OVERLAP_FIRST` / `OVERLAP_SECOND`), with the reason. Costs more CPU time (within the same budget)."
)


def camel_case(name: str) -> str:
    head, *rest = name.strip("_").split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def operation_id(route_handler: BaseRouteHandler, http_method: Method, path_components: list[str | Any]) -> str:
    """The fallback for routes without an explicit ``operation_id``: the handler's name, camelCased."""
    return camel_case(route_handler.handler_name)


class OfflineSwaggerUI(OpenAPIRenderPlugin):
    """Swagger UI from files the API serves itself; the page has only external scripts (CSP-friendly)."""

    def __init__(self, path: str | list[str] = "/swagger") -> None:
        super().__init__(path=path)

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        base = (request.app.openapi_config.path if request.app.openapi_config else None) or "/schema"
        assets = html.escape(f"{base}{ASSETS_PATH}")
        title = html.escape(str(openapi_schema.get("info", {}).get("title", "API")))
        spec = html.escape(self.get_openapi_json_route(request))
        page = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title} API</title>
  <link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
  <link rel="stylesheet" href="{assets}/swagger-page.css">
</head>
<body>
  <div id="swagger-ui" data-spec-url="{spec}"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script src="{assets}/swagger-start.js"></script>
</body>
</html>
"""
        return page.encode()

    def receive_router(self, router: Router) -> None:
        from swagger_ui_bundle import swagger_ui_path

        router.register(
            create_static_files_router(
                path=ASSETS_PATH, directories=[DOCS_STATIC, Path(str(swagger_ui_path))], name="docs-assets"
            )
        )


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Scheduler",
        version="0.1.0",
        description="Multi-tenant job scheduler. Authenticate with `Authorization: Bearer <JWT>` and name "
        "the tenant in `X-Tenant-Id`. Errors are RFC 9457 problem details (`application/problem+json`).",
        path="/schema",
        components=Components(
            security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")}
        ),
        security=[{"bearer": []}],
        render_plugins=[OfflineSwaggerUI()],
        operation_id_creator=operation_id,
    )
