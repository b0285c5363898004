"""One manual run makes one connected trace: the API request, the worker's delivery, the HTTP receiver."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import AsyncTestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api.app import create_app
from tests.integration.receivers import HttpReceiver, eventually
from worker.runtime import open_worker

pytestmark = pytest.mark.asyncio


async def test_a_manual_run_is_one_trace_from_api_to_receiver(settings, headers, nats_url):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # once per process; the other tests do not install one
    receiver = HttpReceiver()
    await receiver.start()
    config = dataclasses.replace(settings, nats_url=nats_url, worker_poll_max_sec=0.1)
    try:
        async with AsyncTestClient(app=create_app(settings, tracing=True)) as client, open_worker(config) as worker:
            task = asyncio.create_task(worker.run())
            later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
            body = {
                "name": "traced",
                "trigger": {"type": "ONE_SHOT", "startAt": later},
                "target": {"kind": "HTTP", "http": {"url": f"{receiver.url}/traced"}},
            }
            created = (await client.post("/schedules", json=body, headers=headers())).json()
            assert (await client.post(f"/schedules/{created['id']}/run", headers=headers())).status_code == 202
            await eventually(lambda: receiver.on("/traced"), timeout=10)
            worker.request_stop()
            await task
    finally:
        await receiver.stop()

    traceparent = receiver.on("/traced")[0].headers["traceparent"]
    trace_id = traceparent.split("-")[1]
    spans = exporter.get_finished_spans()
    api_spans = [s for s in spans if "/run" in s.name and s.kind == trace.SpanKind.SERVER]
    [deliver] = [s for s in spans if s.name == "run.deliver"]
    assert api_spans, [s.name for s in spans]
    assert {f"{s.context.trace_id:032x}" for s in api_spans} == {trace_id}
    assert f"{deliver.context.trace_id:032x}" == trace_id
    assert deliver.attributes["scheduler.schedule_id"] == created["id"]
    assert deliver.parent is not None  # continued from the API request, not a new root
