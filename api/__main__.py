"""`python -m api`: serve the API with uvicorn on HOST:PORT."""

from __future__ import annotations

import os

import uvicorn

from api.app import create_app
from shared.logs import setup_logging
from shared.settings import Settings
from shared.tracing import setup_tracing


def main() -> None:
    settings = Settings.from_env()
    if not settings.postgres_url:
        raise SystemExit("POSTGRES_URL is not set")
    setup_logging(settings.log_level, settings.log_format)
    app = create_app(settings, tracing=setup_tracing("scheduler-api", os.environ))
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        server_header=False,
    )


if __name__ == "__main__":
    main()
