"""The web console at /console: static files shipped in this package, and the two small routes it reads.

The console is plain ES modules (no framework, no build step): the files under ``static/`` are what the browser
runs. It calls the public API with the token the user signs in with; nothing here grants anything the API would
not. ``/dev/token`` (dev mode only) hands out the token `make run` prints, so the sign-in form can be pre-filled.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Response, get
from litestar.datastructures import CacheControlHeader, State
from litestar.handlers import HTTPRouteHandler
from litestar.router import Router
from litestar.static_files import create_static_files_router

from api.devmode import DEV_TOKEN_PATH, dev_token
from shared.settings import Settings

STATIC = Path(__file__).parent / "static"
CONSOLE_PATH = "/console"


@get(f"{CONSOLE_PATH}-config.json", include_in_schema=False, sync_to_thread=False)
def console_config(state: State) -> Response[dict[str, object]]:
    """Where the console finds tenants and roles in a token (for display only: the API enforces them)."""
    settings: Settings = state.settings
    body: dict[str, object] = {
        "tenantsClaim": settings.jwt_tenants_claim,
        "rolesClaim": settings.jwt_roles_claim,
        "devToken": DEV_TOKEN_PATH if settings.auth_mode == "dev" else None,
    }
    return Response(body, headers={"Cache-Control": "no-store"})


def console_routes(settings: Settings) -> list[Router | HTTPRouteHandler]:
    static = create_static_files_router(
        path=CONSOLE_PATH,
        directories=[STATIC],
        html_mode=True,
        name="console",
        # No build step, so no content hashes in file names: browsers revalidate (ETag) on every load.
        cache_control=CacheControlHeader(no_cache=True),
    )
    return [static, console_config, *([dev_token] if settings.auth_mode == "dev" else [])]


def console_paths(settings: Settings) -> list[str]:
    """Path patterns the console needs without a token (the token is only typed in on its sign-in page)."""
    return [
        f"^{CONSOLE_PATH}($|/)",
        f"^{CONSOLE_PATH}-config.json$",
        *([f"^{DEV_TOKEN_PATH}$"] if settings.auth_mode == "dev" else []),
    ]
