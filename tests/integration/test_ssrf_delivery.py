"""A production worker (no dev-mode loopback exception) refuses internal addresses when it delivers. In a module
of its own: no dev-mode worker may compete for these runs."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from shared.secrets import dev_secrets_spec
from tests.integration.test_worker_delivery import create, settled_runs
from worker.runtime import open_worker

pytestmark = pytest.mark.asyncio


async def test_workers_refuse_internal_addresses_at_delivery(client, headers, settings, nats_url, receiver):
    """The API (dev mode) accepted loopback; a production worker must still refuse it, whether the URL names an
    address or a host that resolves to one (as after DNS rebinding)."""
    production = dataclasses.replace(
        settings,
        nats_url=nats_url,
        auth_mode="jwks",
        worker_poll_max_sec=0.1,
        secrets_key=dev_secrets_spec(settings.dev_dir),  # the key the API sealed with
    )
    async with open_worker(production) as strict:
        task = asyncio.create_task(strict.run())
        port = receiver.url.rsplit(":", 1)[1]
        for url in (f"http://127.0.0.1:{port}/internal", f"http://localhost:{port}/internal"):
            created = await create(client, headers, {"kind": "HTTP", "http": {"url": url}})
            [run] = await settled_runs(client, headers, created["id"])
            assert run["status"] == "FAILED" and run["attempt"] == 1 and "SSRF" in run["error"], run
        assert not receiver.on("/internal")
        strict.request_stop()
        await task
