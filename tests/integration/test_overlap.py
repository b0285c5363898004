"""The overlap policy against real workers, Postgres, NATS and a slow HTTP receiver: what an occurrence does
while the previous run of its schedule is still in flight (an HTTP call under way, a queue message nobody acked).

Every schedule here fires each second (or every few), and the receiver is slower than that, so occurrences
come due while a run is in flight. The assertions are about order and identity (which occurrences ran, whether
two calls overlapped at the receiver, which run was cancelled), never about how fast anything was."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import nats.js.errors
import pytest
from aiohttp import web

from tests.integration.conftest import Headers
from tests.integration.live import running_worker
from tests.integration.receivers import HttpReceiver, Received, eventually

pytestmark = pytest.mark.asyncio


def every(seconds: int, start_in: float = 1.0) -> dict:
    start = (datetime.now(UTC) + timedelta(seconds=start_in)).replace(microsecond=0)
    return {"type": "RRULE", "rrule": f"FREQ=SECONDLY;INTERVAL={seconds}", "startAt": start.isoformat()}


async def create(client, headers: Headers, name: str, trigger: dict, target: dict, overlap: str) -> dict:
    body = {
        "name": name,
        "trigger": trigger,
        "target": target,
        "overlap": overlap,
        "retry": {"maxAttempts": 1, "backoffSec": 1, "maxBackoffSec": 1},
        "misfirePolicy": "SKIP",
    }
    response = await client.post("/schedules", json=body, headers=headers())
    assert response.status_code == 201, response.text
    assert response.json()["overlap"] == overlap
    return response.json()


def http(receiver: HttpReceiver, path: str, timeout: float = 30.0) -> dict:
    return {"kind": "HTTP", "http": {"url": f"{receiver.url}{path}", "timeoutSec": timeout}}


def slow(seconds: float):
    async def behave(_: int) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.json_response({"ok": True})

    return behave


async def runs_of(client, headers: Headers, schedule_id: str) -> list[dict]:
    response = await client.get(f"/schedules/{schedule_id}/runs?pageSize=200", headers=headers())
    assert response.status_code == 200, response.text
    return sorted(response.json()["items"], key=lambda r: r["scheduledFor"])


async def schedule(client, headers: Headers, schedule_id: str) -> dict:
    return (await client.get(f"/schedules/{schedule_id}", headers=headers())).json()


def overlapping(requests: list[Received]) -> int:
    """How many requests started while an earlier one was still being answered."""
    ordered = sorted(requests, key=lambda r: r.started)
    return sum(
        1 for i, r in enumerate(ordered) if any(o.finished == 0.0 or o.finished > r.started for o in ordered[:i])
    )


async def test_skip_never_overlaps_a_slow_target_while_allow_does(client, headers, settings, nats_url, receiver):
    receiver.behave["/skip"] = slow(2.5)
    receiver.behave["/allow"] = slow(2.5)
    skip = await create(client, headers, "skip", every(1), http(receiver, "/skip"), "SKIP")
    allow = await create(client, headers, "allow", every(1), http(receiver, "/allow"), "ALLOW")
    async with running_worker(settings, nats_url):
        await eventually(lambda: len(receiver.on("/skip")) >= 3, timeout=30)
        await eventually(lambda: all(r.finished for r in receiver.on("/skip")), timeout=10)
        await client.post(f"/schedules/{skip['id']}/pause", json={"reason": "test over"}, headers=headers())
        await client.post(f"/schedules/{allow['id']}/pause", json={"reason": "test over"}, headers=headers())
    skipped = receiver.on("/skip")
    assert overlapping(skipped) == 0
    assert overlapping(receiver.on("/allow")) > 0  # the same load does overlap without the policy
    runs = await runs_of(client, headers, skip["id"])
    # A skipped occurrence gets no run: every run recorded is one the receiver answered.
    assert sorted(r.headers["Idempotency-Key"] for r in skipped) == sorted(r["idempotencyKey"] for r in runs)
    assert all(r["status"] == "SUCCEEDED" for r in runs)
    # Three 2.5-second calls, one occurrence a second: some came due while one was in flight, and were skipped.
    assert (await schedule(client, headers, skip["id"]))["overlapSkipped"] >= 1


async def test_buffer_one_runs_the_next_occurrence_when_the_run_ends(client, headers, settings, nats_url, receiver):
    receiver.behave["/buffer"] = slow(2.5)
    created = await create(client, headers, "buffer", every(1), http(receiver, "/buffer"), "BUFFER_ONE")
    open_counts: list[int] = []
    seen: list[dict] = []
    async with running_worker(settings, nats_url):

        async def delivered_three_and_one_waits() -> bool:
            seen[:] = await runs_of(client, headers, created["id"])
            open_counts.append(sum(r["status"] == "PENDING" for r in seen))
            return sum(r["status"] == "SUCCEEDED" for r in seen) >= 3 and open_counts[-1] == 2

        await eventually(delivered_three_and_one_waits, timeout=40, step=0.1)
        # Deleting the schedule leaves nothing waiting for ever (its waiting run is cancelled; should it have
        # been handed over in the meantime, it is delivered or cancelled like any queued run).
        assert (await client.delete(f"/schedules/{created['id']}", headers=headers())).status_code == 204
        pending = [r["id"] for r in seen if r["status"] == "PENDING"]

        async def final(run_id: str) -> dict:
            return (await client.get(f"/runs/{run_id}", headers=headers())).json()

        async def settled() -> bool:
            return all([(await final(run_id))["status"] != "PENDING" for run_id in pending])

        await eventually(settled, timeout=20)
        ends = [await final(run_id) for run_id in pending]
    # One run in flight and one waiting, never more (a buffer of one).
    assert max(open_counts) <= 2
    assert overlapping(receiver.on("/buffer")) == 0
    assert all(r["status"] in ("CANCELLED", "SUCCEEDED") for r in ends), ends
    delivered = [r for r in seen if r["status"] == "SUCCEEDED"]
    first, second = (datetime.fromisoformat(r["scheduledFor"]) for r in delivered[:2])
    # The occurrence right after the first one waited for it (SKIP would have dropped it: its successor would
    # be the first occurrence due after the first run ended), and ran once the first call was answered.
    assert second - first == timedelta(seconds=1)
    by_key = {r.headers["Idempotency-Key"]: r for r in receiver.on("/buffer")}
    a, b = by_key[delivered[0]["idempotencyKey"]], by_key[delivered[1]["idempotencyKey"]]
    assert b.started >= a.finished


async def test_cancel_other_aborts_the_call_in_flight(client, headers, settings, nats_url, receiver):
    async def first_hangs(n: int) -> web.StreamResponse:
        await asyncio.sleep(60 if n == 1 else 0)
        return web.json_response({"ok": True})

    receiver.behave["/cancel"] = first_hangs
    created = await create(client, headers, "cancel", every(3), http(receiver, "/cancel", 90), "CANCEL_OTHER")
    # A short lease: the worker delivering the superseded run learns it at its next heartbeat (a quarter lease).
    async with running_worker(settings, nats_url, run_lease_sec=2.0):
        await eventually(lambda: len(receiver.on("/cancel")) >= 2, timeout=30)
        await eventually(lambda: receiver.on("/cancel")[0].finished > 0, timeout=15)
        await client.post(f"/schedules/{created['id']}/pause", json={"reason": "test over"}, headers=headers())

        async def settled() -> bool:
            runs = await runs_of(client, headers, created["id"])
            return all(r["status"] not in ("PENDING", "RETRYING") for r in runs)

        await eventually(settled, timeout=20)
    hung, second = receiver.on("/cancel")[:2]
    assert hung.finished - hung.started < 30  # aborted: answering it would have taken 60 s
    runs = await runs_of(client, headers, created["id"])
    first = next(r for r in runs if r["idempotencyKey"] == hung.headers["Idempotency-Key"])
    assert first["status"] == "CANCELLED" and "CANCEL_OTHER" in first["error"], first
    nxt = next(r for r in runs if r["idempotencyKey"] == second.headers["Idempotency-Key"])
    assert nxt["status"] == "SUCCEEDED"
    # The cancelled call was not retried: its key reached the receiver once.
    assert [r.headers["Idempotency-Key"] for r in receiver.on("/cancel")].count(first["idempotencyKey"]) == 1


async def test_a_queue_run_is_in_flight_until_a_consumer_acks_it(client, headers, settings, nats_url, nc, tenant):
    created = await create(
        client, headers, "queue-skip", every(1), {"kind": "QUEUE", "queue": {"topic": "ov.skip"}}, "SKIP"
    )
    async with running_worker(settings, nats_url):

        async def published() -> list[dict]:
            return [r for r in await runs_of(client, headers, created["id"]) if r["status"] == "SUCCEEDED"]

        await eventually(lambda: _nonempty(published()), timeout=20)
        [first] = await published()

        async def skipped(n: int) -> bool:
            return (await schedule(client, headers, created["id"]))["overlapSkipped"] >= n

        await eventually(lambda: skipped(2), timeout=20)  # occurrences come due while its message waits
        assert len(await published()) == 1
        js = nc.jetstream()
        delivery = first["delivery"]
        consumer = await js.pull_subscribe(delivery["subject"], durable="ov", stream=delivery["stream"])
        [msg] = await consumer.fetch(1, timeout=5)
        assert msg.headers and msg.headers.get("Nats-Msg-Id") == first["idempotencyKey"]
        await asyncio.sleep(2)
        assert len(await published()) == 1  # fetched but not acked: still in flight
        await msg.ack_sync()
        await eventually(lambda: _longer(published(), 1), timeout=20)
        await client.post(f"/schedules/{created['id']}/pause", json={"reason": "test over"}, headers=headers())


async def test_cancel_other_withdraws_an_unconsumed_queue_message(client, headers, settings, nats_url, nc):
    created = await create(
        client, headers, "queue-cancel", every(2), {"kind": "QUEUE", "queue": {"topic": "ov.cancel"}}, "CANCEL_OTHER"
    )
    async with running_worker(settings, nats_url):

        async def withdrawn() -> bool:
            runs = await runs_of(client, headers, created["id"])
            return any(r["status"] == "CANCELLED" for r in runs) and any(r["status"] == "SUCCEEDED" for r in runs)

        await eventually(withdrawn, timeout=30)
        await client.post(f"/schedules/{created['id']}/pause", json={"reason": "test over"}, headers=headers())
    runs = await runs_of(client, headers, created["id"])
    cancelled = [r for r in runs if r["status"] == "CANCELLED"]
    assert all("CANCEL_OTHER" in r["error"] for r in cancelled), cancelled
    # Superseded after its message was published: withdrawn from the queue (one still being published when
    # it was superseded is cancelled; its message, if the publish went through, is withdrawn all the same).
    withdrawn = [r for r in cancelled if (r["delivery"] or {}).get("withdrawn")]
    assert withdrawn, cancelled
    stream = withdrawn[0]["delivery"]["stream"]
    js = nc.jetstream()
    for run in withdrawn:
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.get_msg(stream, run["delivery"]["seq"])
    # What is left in the work queue is the latest occurrence's message, and only messages of SUCCEEDED runs.
    info = await js.stream_info(stream)
    alive = {r["delivery"]["seq"] for r in runs if r["status"] == "SUCCEEDED"}
    assert 1 <= info.state.messages <= len(alive)


async def _nonempty(pending) -> bool:
    return bool(await pending)


async def _longer(pending, n: int) -> bool:
    return len(await pending) > n


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"overlap": "NEVER"}, "overlap"),
        ({"overlap": "CANCEL_OTHER"}, "CANCEL_OTHER needs a target"),  # the base target is an EVENT
        ({"overlap": "SKIP", "trigger": {"type": "FIXED_DELAY", "delaySec": 60}}, "FIXED_DELAY"),
        ({"overlap": None}, "overlap"),
        ({"overlap": 1}, "overlap"),
    ],
)
async def test_bad_overlap_values_are_400_naming_the_field(client, headers, change, reason):
    body = {
        "name": "bad-overlap",
        "trigger": {"type": "CRON", "cron": "0 9 * * *"},
        "target": {"kind": "EVENT", "eventTopic": "a.b"},
        **change,
    }
    response = await client.post("/schedules", json=body, headers=headers())
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert reason in response.text and "overlap" in response.text
    assert (await client.get("/schedules?name=bad-overlap", headers=headers())).json()["items"] == []


async def test_overlap_is_stored_updated_and_applied_by_name(client, headers):
    base = {
        "trigger": {"type": "CRON", "cron": "0 9 * * *"},
        "target": {"kind": "EVENT", "eventTopic": "a.b"},
    }
    created = await client.post("/schedules", json={"name": "ov-default", **base}, headers=headers())
    assert created.status_code == 201 and created.json()["overlap"] == "ALLOW"
    assert created.json()["overlapSkipped"] == 0
    path = f"/schedules/{created.json()['id']}"
    patched = await client.patch(path, json={"overlap": "BUFFER_ONE"}, headers=headers())
    assert patched.status_code == 200 and patched.json()["overlap"] == "BUFFER_ONE"
    refused = await client.patch(path, json={"overlap": "CANCEL_OTHER"}, headers=headers())
    assert refused.status_code == 400 and "overlap" in refused.text
    assert (await client.get(path, headers=headers())).json()["overlap"] == "BUFFER_ONE"  # unchanged
    history = (await client.get(f"{path}/history", headers=headers())).json()["items"]
    assert any("overlap" in entry.get("changed", []) for entry in history), history
    applied = await client.put("/schedules/by-name/ov-apply", json={**base, "overlap": "SKIP"}, headers=headers())
    assert applied.status_code in (200, 201) and applied.json()["overlap"] == "SKIP"
    batch = await client.post(
        "/schedules:batch",
        json={"items": [{"name": "ov-b1", **base, "overlap": "SKIP"}, {"name": "ov-b2", **base}]},
        headers=headers(),
    )
    assert batch.status_code == 201, batch.text
    assert [s["overlap"] for s in batch.json()["items"]] == ["SKIP", "ALLOW"]


async def test_editing_the_target_never_leaves_the_schedule_waiting(client, headers, settings, nats_url, receiver):
    # Whether the run in flight is a queue message is told by that run, not by the schedule's target now: an
    # HTTP run that SUCCEEDED does not hold a schedule edited to QUEUE, which fires its first message at once.
    receiver.behave["/edit"] = slow(2.0)
    created = await create(client, headers, "edit-target", every(1), http(receiver, "/edit"), "SKIP")
    async with running_worker(settings, nats_url):
        await eventually(lambda: len(receiver.on("/edit")) >= 1, timeout=20)
        # Edited while its HTTP call is in flight: that call ends SUCCEEDED after the edit.
        patch = {"target": {"kind": "QUEUE", "queue": {"topic": "ov.edit"}}}
        assert (await client.patch(f"/schedules/{created['id']}", json=patch, headers=headers())).status_code == 200
        assert receiver.on("/edit")[0].finished == 0.0

        async def queued() -> bool:
            runs = await runs_of(client, headers, created["id"])
            return any(r["status"] == "SUCCEEDED" and "queue" in (r["delivery"] or {}) for r in runs)

        await eventually(queued, timeout=20)
        await client.post(f"/schedules/{created['id']}/pause", json={"reason": "test over"}, headers=headers())
