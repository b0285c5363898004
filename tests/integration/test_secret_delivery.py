"""Write-only secrets stay write-only at delivery (issue 8, §3): a real worker, real HTTP receivers on two
origins, real Postgres. Secret headers and the webhook signature never reach another origin, and what a target
echoes back is redacted before a viewer can read it in the run."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from api.auth import VIEWER
from shared.settings import Settings
from tests.integration.conftest import Headers
from tests.integration.receivers import HttpReceiver, eventually
from worker.runtime import open_worker

SECRET_VALUE = "sk-live-4f9a2c7e1b"


@pytest.fixture(scope="module")
async def worker(settings: Settings, nats_url: str) -> AsyncIterator[None]:
    config = dataclasses.replace(settings, nats_url=nats_url, worker_poll_max_sec=0.2, run_response_excerpt_bytes=512)
    async with open_worker(config) as w:
        task = asyncio.create_task(w.run())
        yield
        w.request_stop()
        await asyncio.wait_for(task, 30)


@pytest.fixture(scope="module")
async def home() -> AsyncIterator[HttpReceiver]:
    r = HttpReceiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture(scope="module")
async def elsewhere() -> AsyncIterator[HttpReceiver]:
    """Another origin: same host, another port."""
    r = HttpReceiver()
    await r.start()
    yield r
    await r.stop()


async def schedule(client, headers: Headers, url: str, plain: dict[str, str] | None = None, **http) -> dict:
    if plain:
        http["headers"] = plain
    body = {
        "name": "secretive",
        "trigger": {"type": "ONE_SHOT", "startAt": (datetime.now(UTC) + timedelta(seconds=0.2)).isoformat()},
        "target": {"kind": "HTTP", "http": {"url": url, **http}},
        "retry": {"maxAttempts": 1, "backoffSec": 0.1, "maxBackoffSec": 1},
    }
    response = await client.post("/schedules", json=body, headers=headers())
    assert response.status_code == 201, response.text
    return response.json()


async def final_run(client, headers: Headers, schedule_id: str) -> dict:
    found: dict = {}

    async def check() -> bool:
        nonlocal found
        items = (await client.get(f"/schedules/{schedule_id}/runs", headers=headers(VIEWER))).json()["items"]
        found = next((r for r in items if r["status"] in ("SUCCEEDED", "FAILED")), {})
        return bool(found)

    await eventually(check, 20)
    return found


async def test_a_redirect_to_another_origin_gets_no_secret_and_no_signature(client, headers, worker, home, elsewhere):
    async def redirect(_: int) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"{elsewhere.url}/landing")

    home.behave["/cross"] = redirect
    created = await schedule(
        client,
        headers,
        f"{home.url}/cross",
        followRedirects=True,
        plain={"X-Team": "billing"},
        secretHeaders={"Authorization": f"Bearer {SECRET_VALUE}", "X-Api-Key": SECRET_VALUE},
    )
    run = await final_run(client, headers, created["id"])
    assert run["status"] == "SUCCEEDED", run
    [first] = home.on("/cross")
    assert first.headers["Authorization"] == f"Bearer {SECRET_VALUE}" and "webhook-signature" in first.headers
    [landed] = elsewhere.on("/landing")
    lowered = {k.lower(): v for k, v in landed.headers.items()}
    assert "authorization" not in lowered and "x-api-key" not in lowered
    assert not {"webhook-signature", "webhook-id", "webhook-timestamp"} & lowered.keys()
    assert SECRET_VALUE not in str(landed.headers)
    assert lowered["x-team"] == "billing" and "idempotency-key" in lowered


async def test_a_redirect_within_the_origin_keeps_them(client, headers, worker, home):
    async def redirect(_: int) -> web.Response:
        raise web.HTTPTemporaryRedirect("/same-landing")

    home.behave["/same"] = redirect
    created = await schedule(
        client, headers, f"{home.url}/same", followRedirects=True, secretHeaders={"X-Api-Key": SECRET_VALUE}
    )
    run = await final_run(client, headers, created["id"])
    assert run["status"] == "SUCCEEDED", run
    [landed] = home.on("/same-landing")
    assert landed.headers["X-Api-Key"] == SECRET_VALUE and "webhook-signature" in landed.headers


async def test_an_echoing_target_cannot_leak_secrets_into_the_run(client, headers, worker, home):
    async def echo(_: int) -> web.Response:
        request = home.on("/echo")[-1]
        return web.json_response({"youSent": request.headers, "padding": "x" * 5000}, status=200)

    home.behave["/echo"] = echo
    created = await schedule(client, headers, f"{home.url}/echo", secretHeaders={"X-Api-Key": SECRET_VALUE})
    secret = created["webhookSecret"]
    run = await final_run(client, headers, created["id"])
    assert run["status"] == "SUCCEEDED", run
    [request] = home.on("/echo")
    signature = request.headers["webhook-signature"].removeprefix("v1,")
    viewer_copy = (await client.get(f"/runs/{run['id']}", headers=headers(VIEWER))).text
    for leaked in (SECRET_VALUE, secret, secret.removeprefix("whsec_"), signature):
        assert leaked not in viewer_copy
    response = run["delivery"]["response"]
    assert "[redacted]" in response and len(response.encode()) <= 512  # RUN_RESPONSE_EXCERPT_BYTES


async def test_an_echo_in_an_error_is_redacted_too(client, headers, worker, home):
    async def echo_error(_: int) -> web.Response:
        request = home.on("/echo-error")[-1]
        return web.Response(status=400, text=f"bad key {request.headers.get('X-Api-Key')}")

    home.behave["/echo-error"] = echo_error
    created = await schedule(client, headers, f"{home.url}/echo-error", secretHeaders={"X-Api-Key": SECRET_VALUE})
    run = await final_run(client, headers, created["id"])
    assert run["status"] == "FAILED" and SECRET_VALUE not in str(run) and "[redacted]" in run["error"]
