"""Real servers on real sockets for tests that drive the API from outside: the API under uvicorn in a thread,
a worker process, and (for browser tests) Debian's Chromium through chromedriver."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from shared.settings import Settings
from worker.runtime import open_worker

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
# Nothing but loopback resolves: a page that reaches for a CDN fails visibly instead of quietly working online.
NO_NETWORK = "MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"
CSP = "default-src 'self'"

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Scope], Awaitable[None]]], Awaitable[None]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_csp(app: ASGIApp) -> ASGIApp:
    """The strict policy the deployment sends for HTML pages, on every answer: inline scripts would be blocked."""

    async def wrapped(scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Scope], Awaitable[None]]):
        async def send_with_policy(message: Scope) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"content-security-policy", CSP.encode())]
            await send(message)

        await app(scope, receive, send_with_policy)

    return wrapped


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on 127.0.0.1 in a thread with its own event loop; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"{base}/live", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline or not thread.is_alive():
                raise
            time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def worker_process(settings: Settings, nats_url: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "POSTGRES_URL": settings.postgres_url,
        "NATS_URL": nats_url,
        "AUTH_MODE": "dev",
        "DEV_DATA_DIR": settings.dev_data_dir,
        "LOG_LEVEL": "warning",
        "WORKER_POLL_MAX_SEC": "0.2",
        "WORKER_METRICS_PORT": "0",
    }
    proc = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _first(paths: tuple[str, ...], name: str) -> str | None:
    return next((p for p in paths if os.access(p, os.X_OK)), None) or shutil.which(name)


def browser_unavailable() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (make venv installs the dev extras)"
    if not _first(CHROMIUM, "chromium"):
        return "chromium is not installed (as root on Debian/Ubuntu, `make test` installs it: apt-get install chromium)"
    if not _first(CHROMEDRIVER, "chromedriver"):
        return "chromedriver is not installed (as root on Debian/Ubuntu: apt-get install chromium-driver)"
    return None


def skip_or_fail_without_browser() -> None:
    reason = browser_unavailable()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"browser tests must run in CI, but {reason}")
    pytest.skip(f"browser tests skipped: {reason}")


@contextlib.contextmanager
def chromium(width: int = 1360, height: int = 900) -> Iterator[Any]:
    """Headless Chromium with a fresh profile and no network beyond loopback."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="sched-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = _first(CHROMIUM, "chromium") or ""
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        f"--host-resolver-rules={NO_NETWORK}",
        "--lang=en-GB",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=_first(CHROMEDRIVER, "chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, nats_url: str, **overrides: object) -> AsyncIterator[None]:
    """A worker on its own thread and event loop: the test client blocks the test's loop while a request is
    served, and a worker frozen mid-transaction there would hold the row locks the request waits for."""
    config = dataclasses.replace(settings, nats_url=nats_url, worker_poll_max_sec=0.2, **overrides)  # type: ignore[arg-type]
    ready = threading.Event()
    stop: list[Callable[[], None]] = []

    async def main() -> None:
        async with open_worker(config) as w:
            loop = asyncio.get_running_loop()
            stop.append(lambda: loop.call_soon_threadsafe(w.request_stop))
            ready.set()
            await w.run()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert await asyncio.to_thread(ready.wait, 30), "the worker did not start"
    try:
        yield
    finally:
        stop[0]()
        await asyncio.to_thread(thread.join, 30)
        assert not thread.is_alive(), "the worker did not stop"
