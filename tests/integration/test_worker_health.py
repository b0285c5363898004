"""A worker's own port: /live, /ready (database, NATS, loop) and /metrics after real deliveries."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from tests.integration.receivers import eventually
from worker.runtime import open_worker

pytestmark = pytest.mark.asyncio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_health_and_metrics(client, headers, settings, nats_url):
    port = free_port()
    config = dataclasses.replace(
        settings, nats_url=nats_url, worker_metrics_port=port, worker_metrics_host="127.0.0.1", worker_poll_max_sec=0.1
    )
    base = f"http://127.0.0.1:{port}"
    async with open_worker(config) as worker, aiohttp.ClientSession() as http:
        task = asyncio.create_task(worker.run())
        async with http.get(f"{base}/live") as live:
            assert live.status == 200
        async with http.get(f"{base}/ready") as ready:
            assert ready.status == 200, await ready.text()
            assert await ready.json() == {"status": "ok", "database": "ok", "nats": "ok", "loop": "ok"}
        due = (datetime.now(UTC) + timedelta(seconds=0.2)).isoformat()
        body = {
            "name": "metered-fire",
            "trigger": {"type": "ONE_SHOT", "startAt": due},
            "target": {"kind": "EVENT", "eventTopic": "it.metrics"},
        }
        assert (await client.post("/schedules", json=body, headers=headers())).status_code == 201

        async def counted() -> bool:
            async with http.get(f"{base}/metrics") as response:
                text = await response.text()
            return 'scheduler_runs_total{outcome="succeeded",target="EVENT"}' in text

        await eventually(counted, timeout=10)
        async with http.get(f"{base}/metrics") as response:
            text = await response.text()
        for name in (
            "scheduler_scheduling_lag_seconds_bucket",
            "scheduler_claim_batch_size_bucket",
            "scheduler_delivery_duration_seconds_bucket",
            "scheduler_backlog_age_seconds",
        ):
            assert name in text
        worker.request_stop()
        await task
