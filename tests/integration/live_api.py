"""The API as production runs it: ``python -m api`` in its own process (uvicorn, the bounded-headers protocol,
the switch interval), against the test database."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


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
