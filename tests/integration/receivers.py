"""Real receivers for deliveries: a local aiohttp server and NATS subscribers that record what arrives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web


@dataclass
class Received:
    path: str
    method: str
    headers: dict[str, str]
    body: bytes
    started: float
    finished: float = 0.0

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


Behaviour = Callable[[int], Awaitable[web.StreamResponse]]


@dataclass
class HttpReceiver:
    """Records every request; ``behave[path](n)`` answers the n-th request (1-based) to that path."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    behave: dict[str, Behaviour] = field(default_factory=dict)
    _runner: web.AppRunner | None = None

    def on(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        record = Received(request.path, request.method, dict(request.headers), await request.read(), time.monotonic())
        self.requests.append(record)
        n = len(self.on(request.path))
        try:
            behaviour = self.behave.get(request.path)
            return await behaviour(n) if behaviour else web.json_response({"ok": True})
        finally:
            record.finished = time.monotonic()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 15.0, step: float = 0.05) -> None:
    """Wait until ``check`` holds; fail with a clear message otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)
