"""`python -m api`: serve the API with uvicorn on HOST:PORT."""

from __future__ import annotations

import os
import sys

import uvicorn

from api.app import create_app
from api.evaluation import SWITCH_INTERVAL_SEC
from api.serving import bounded_headers_protocol
from shared.logs import setup_logging
from shared.settings import Settings
from shared.tracing import setup_tracing


def main() -> None:
    settings = Settings.from_env()
    if not settings.postgres_url:
        raise SystemExit("POSTGRES_URL is not set")
    setup_logging(settings.log_level, settings.log_format)
    app = create_app(settings, tracing=setup_tracing("scheduler-api", os.environ))
    sys.setswitchinterval(SWITCH_INTERVAL_SEC)  # see api/evaluation.py
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        server_header=False,
        http=bounded_headers_protocol(settings.max_header_bytes),
    )


if __name__ == "__main__":
    main()
