"""Cancelling runs against real workers, Postgres and an HTTP receiver: a cancelled run is never delivered (nor
retried), and under a race every run is either cancelled and never sent, or refused (409) and delivered. Also
backfilled runs: delivered once each, with the keys a worker gives those occurrences."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from tests.integration.conftest import Headers
from tests.integration.live import running_worker
from tests.integration.receivers import HttpReceiver, eventually

pytestmark = pytest.mark.asyncio


async def http_schedule(client, headers: Headers, url: str, retry: dict | None = None) -> dict:
    far = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    body = {
        "name": f"c-{datetime.now(UTC).timestamp()}",
        "trigger": {"type": "ONE_SHOT", "startAt": far},
        "target": {"kind": "HTTP", "http": {"url": url}},
        "retry": retry or {"maxAttempts": 1, "backoffSec": 1, "maxBackoffSec": 1},
    }
    response = await client.post("/schedules", json=body, headers=headers())
    assert response.status_code == 201, response.text
    return response.json()


async def run_status(client, headers: Headers, run_id: str) -> str:
    return (await client.get(f"/runs/{run_id}", headers=headers())).json()["status"]


def keys_received(receiver: HttpReceiver, path: str) -> set[str]:
    return {r.headers["Idempotency-Key"] for r in receiver.on(path)}


async def test_a_run_cancelled_before_any_worker_saw_it_is_never_delivered(
    client, headers, settings, nats_url, receiver
):
    created = await http_schedule(client, headers, f"{receiver.url}/queued")
    kept = (await client.post(f"/schedules/{created['id']}/run", headers=headers())).json()
    dropped = (await client.post(f"/schedules/{created['id']}/run", headers=headers())).json()
    assert (await client.post(f"/runs/{dropped['id']}/cancel", headers=headers())).status_code == 200
    async with running_worker(settings, nats_url):

        async def kept_succeeded() -> bool:
            return await run_status(client, headers, kept["id"]) == "SUCCEEDED"

        await eventually(kept_succeeded, 15)
        await asyncio.sleep(1.5)  # more rescue rounds: the cancelled run stays untouched
    assert keys_received(receiver, "/queued") == {kept["idempotencyKey"]}
    assert await run_status(client, headers, dropped["id"]) == "CANCELLED"


async def test_a_run_cancelled_while_waiting_to_retry_is_not_retried(client, headers, settings, nats_url, receiver):
    async def failing(n: int) -> web.Response:
        return web.Response(status=503)

    receiver.behave["/retry-cancelled"] = failing
    receiver.behave["/retry-control"] = failing
    retry = {"maxAttempts": 2, "backoffSec": 2.5, "maxBackoffSec": 2.5}  # the retry waits 1.25-2.5 s
    cancelled = await http_schedule(client, headers, f"{receiver.url}/retry-cancelled", retry)
    control = await http_schedule(client, headers, f"{receiver.url}/retry-control", retry)
    async with running_worker(settings, nats_url):
        run = (await client.post(f"/schedules/{cancelled['id']}/run", headers=headers())).json()
        other = (await client.post(f"/schedules/{control['id']}/run", headers=headers())).json()

        async def retrying() -> bool:
            return await run_status(client, headers, run["id"]) == "RETRYING"

        await eventually(retrying, 10, step=0.02)
        response = await client.post(f"/runs/{run['id']}/cancel", headers=headers())
        assert response.status_code == 200, response.text

        async def control_failed() -> bool:
            return await run_status(client, headers, other["id"]) == "FAILED"

        await eventually(control_failed, 15)  # the control run was retried (and failed again)
        await asyncio.sleep(1.0)
    assert len(receiver.on("/retry-control")) == 2
    assert len(receiver.on("/retry-cancelled")) == 1  # the first attempt only
    final = (await client.get(f"/runs/{run['id']}", headers=headers())).json()
    assert final["status"] == "CANCELLED" and final["attempt"] == 1


async def test_cancel_racing_workers_never_cancels_a_delivered_run(client, headers, settings, nats_url, receiver):
    async def slow(n: int) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(status=204)

    receiver.behave["/race"] = slow
    created = await http_schedule(client, headers, f"{receiver.url}/race")
    # Two workers taking at most 3 runs at a time, each delivery 0.3 s: while the cancels below go out one by
    # one, some runs are being delivered and the others still wait for a worker.
    small = {"worker_concurrency": 3, "worker_batch_size": 3}
    async with running_worker(settings, nats_url, **small), running_worker(settings, nats_url, **small):
        runs = [(await client.post(f"/schedules/{created['id']}/run", headers=headers())).json() for _ in range(30)]
        codes = []
        for run in runs:
            answer = await client.post(f"/runs/{run['id']}/cancel", headers=headers())
            assert answer.status_code in (200, 409), answer.text
            codes.append(answer.status_code)
        assert 200 in codes and 409 in codes, codes

        async def settled() -> bool:
            statuses = [await run_status(client, headers, r["id"]) for r in runs]
            return all(s in ("SUCCEEDED", "CANCELLED") for s in statuses)

        await eventually(settled, 30)
        await asyncio.sleep(1.5)  # more rescue rounds: nothing cancelled is taken up
    received = keys_received(receiver, "/race")
    for run, code in zip(runs, codes, strict=True):
        status = await run_status(client, headers, run["id"])
        if code == 200:
            assert status == "CANCELLED" and run["idempotencyKey"] not in received, run["id"]
        else:
            assert status == "SUCCEEDED" and run["idempotencyKey"] in received, run["id"]


async def test_backfilled_runs_are_delivered_once_with_the_keys_a_worker_gives_them(
    client, headers, settings, nats_url, receiver
):
    created = await http_schedule(client, headers, f"{receiver.url}/backfill")
    body = {
        "name": created["name"],
        "tz": "UTC",
        "trigger": {"type": "CRON", "cron": "0 * * * *"},
        "target": created["target"],
        "retry": created["retry"],
    }
    assert (await client.put(f"/schedules/by-name/{created['name']}", json=body, headers=headers())).status_code == 200
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    window = {"from": start.isoformat(), "to": (start + timedelta(hours=2)).isoformat()}
    async with running_worker(settings, nats_url):
        first = await client.post(f"/schedules/{created['id']}/backfill", json=window, headers=headers())
        assert first.status_code == 200 and first.json()["created"] == 3, first.text
        expected = {r["idempotencyKey"] for r in first.json()["runs"]}

        async def delivered() -> bool:
            return keys_received(receiver, "/backfill") == expected

        await eventually(delivered, 15)
        # The same range again (and one more hour): only the new occurrence is recorded and delivered.
        wider = {**window, "to": (start + timedelta(hours=3)).isoformat()}
        again = (await client.post(f"/schedules/{created['id']}/backfill", json=wider, headers=headers())).json()
        assert (again["created"], again["existing"]) == (1, 3)

        async def four() -> bool:
            return len(receiver.on("/backfill")) == 4

        await eventually(four, 15)
        await asyncio.sleep(1.0)
    assert len(receiver.on("/backfill")) == 4  # no occurrence twice
    for request in receiver.on("/backfill"):
        key = request.headers["Idempotency-Key"]
        scheduled_for = datetime.fromisoformat(key.removeprefix(created["id"] + ":"))
        assert start <= scheduled_for <= start + timedelta(hours=3) and scheduled_for.minute == 0
    runs = (await client.get(f"/schedules/{created['id']}/runs", headers=headers())).json()["items"]
    assert len(runs) == 4 and all(r["status"] == "SUCCEEDED" and not r["manual"] for r in runs)
