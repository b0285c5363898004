"""The API as production runs it: ``python -m api`` in its own process (uvicorn, the bounded-headers protocol,
the switch interval), against the test database."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def live_api(postgres_url: str, dev_dir: Path, **env: str) -> Iterator[str]:
    port = free_port()
    environment = {
        **os.environ,
        "POSTGRES_URL": postgres_url,
        "AUTH_MODE": "dev",
        "DEV_DATA_DIR": str(dev_dir),
        "PORT": str(port),
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "text",
        "OTEL_SDK_DISABLED": "true",
        **env,
    }
    environment.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    process = subprocess.Popen([sys.executable, "-m", "api"], env=environment, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/live", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the API did not start (exit code {process.poll()})") from None
                time.sleep(0.05)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def worst_preview() -> dict[str, Any]:
    """A preview that needs far more CPU than the budget whatever the evaluator's caches hold: a leap-day rule
    every 13 seconds counted from an anchor in 1970 (so every fire time after now means counting 56 years of it:
    about 680k units of work, some 16 times the default budget's worth), anchor and COUNT fresh on every call so
    that no checkpoint of an earlier request helps. (A plain per-second COUNT rule costs about the budget itself
    since the RRULE evaluator counts whole periods at once: it was let through now and then.)"""
    anchor = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=random.randrange(86_400 * 300))
    count = 2_000_000_000 - random.randrange(1_000_000)
    rule = f"FREQ=SECONDLY;INTERVAL=13;BYYEARDAY=366;BYHOUR=0;BYMINUTE=0;COUNT={count}"
    return {"trigger": {"type": "RRULE", "rrule": rule, "startAt": anchor.isoformat()}, "count": 1000}
