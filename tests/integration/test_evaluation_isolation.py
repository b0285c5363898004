"""One tenant's costly trigger evaluations do not slow down the API for others (issue 8, §2), and oversize
headers are refused as they arrive (§4): measured against ``python -m api`` in its own process."""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from api.auth import EDITOR, VIEWER
from api.devmode import mint_dev_token
from tests.integration.live_api import live_api, worst_preview

UNLIMITED = {"TENANT_RATE_LIMIT_RPS": "1000000", "TENANT_RATE_LIMIT_BURST": "1000000"}


def call(method: str, url: str, headers: dict[str, str], body: Any = None) -> tuple[int, float, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={**headers, "Content-Type": "application/json"}
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return response.status, time.perf_counter() - started, response.headers
    except urllib.error.HTTPError as error:
        error.read()
        return error.code, time.perf_counter() - started, error.headers


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_worst_case_previews_do_not_slow_other_tenants(db_url, dev_dir):
    attacker, victim = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    bad = {
        "Authorization": f"Bearer {mint_dev_token(dev_dir, [attacker], [VIEWER], subject='a')}",
        "X-Tenant-Id": attacker,
    }
    good = {
        "Authorization": f"Bearer {mint_dev_token(dev_dir, [victim], [EDITOR], subject='b')}",
        "X-Tenant-Id": victim,
    }
    with live_api(db_url, dev_dir, **UNLIMITED) as base:
        for i in range(20):
            body = {"name": f"s{i}", "trigger": {"type": "CRON", "cron": "0 9 * * *"}}
            body["target"] = {"kind": "EVENT", "eventTopic": "a.b"}
            assert call("POST", f"{base}/schedules", good, body)[0] == 201
        idle_live = [call("GET", f"{base}/live", {})[1] for _ in range(20)]
        idle_list = [call("GET", f"{base}/schedules", good)[1] for _ in range(20)]
        # The good tenant's own evaluations are not starved either.
        cheap = {"trigger": {"type": "CRON", "cron": "0 9 * * *"}, "count": 5}

        stop = threading.Event()
        statuses: list[int] = []
        durations: list[float] = []

        def attack() -> None:
            while not stop.is_set():
                status, elapsed, _ = call("POST", f"{base}/triggers/preview", bad, worst_preview())
                statuses.append(status)
                durations.append(elapsed)

        attackers = [threading.Thread(target=attack) for _ in range(4)]
        for thread in attackers:
            thread.start()
        try:
            time.sleep(0.3)
            busy_live, busy_list, busy_preview = [], [], []
            for _ in range(40):
                busy_live.append(call("GET", f"{base}/live", {})[1])
                busy_list.append(call("GET", f"{base}/schedules", good)[1])
                status, elapsed, _ = call("POST", f"{base}/triggers/preview", good, cheap)
                assert status == 200
                busy_preview.append(elapsed)
                time.sleep(0.01)
        finally:
            stop.set()
            for thread in attackers:
                thread.join(60)
        idle_live += [call("GET", f"{base}/live", {})[1] for _ in range(20)]
        idle_list += [call("GET", f"{base}/schedules", good)[1] for _ in range(20)]

    figures = {
        "idle /live p50/p90 ms": (quantile(idle_live, 0.5) * 1000, quantile(idle_live, 0.9) * 1000),
        "idle list p50/p90 ms": (quantile(idle_list, 0.5) * 1000, quantile(idle_list, 0.9) * 1000),
        "busy /live p50/p90/max ms": [round(quantile(busy_live, q) * 1000, 1) for q in (0.5, 0.9, 1.0)],
        "busy list p50/p90/max ms": [round(quantile(busy_list, q) * 1000, 1) for q in (0.5, 0.9, 1.0)],
        "busy own preview p50/p90/max ms": [round(quantile(busy_preview, q) * 1000, 1) for q in (0.5, 0.9, 1.0)],
        "attack requests": len(statuses),
        "attack statuses": sorted(set(statuses)),
        "attack mean s": statistics.mean(durations) if durations else None,
    }
    print(figures)
    assert statuses and set(statuses) <= {422, 503}, figures  # the budget stopped every one of them
    # The targets (/live < 50 ms, another tenant's list < 200 ms) for the typical request, plus what this
    # shared 2-core machine adds on its own at the time (the same requests without the attack, measured before and
    # after it); the slow tail gets twice that. Before the fix: /live 5-10 s, the list 22-47 s.
    live_noise, list_noise = quantile(idle_live, 0.9), quantile(idle_list, 0.9)
    assert quantile(busy_live, 0.5) < 0.050 + 2 * live_noise, figures
    assert quantile(busy_list, 0.5) < 0.200 + 2 * list_noise, figures
    assert quantile(busy_live, 0.9) < 0.100 + 3 * live_noise, figures
    assert quantile(busy_list, 0.9) < 0.400 + 3 * list_noise, figures
    assert max(busy_live) < 2.0 and max(busy_list) < 4.0 and max(busy_preview) < 4.0, figures


def test_evaluations_beyond_the_queue_get_503_not_a_longer_queue(db_url, dev_dir):
    tenant = f"q-{uuid.uuid4().hex[:6]}"
    h = {"Authorization": f"Bearer {mint_dev_token(dev_dir, [tenant], [VIEWER], subject='q')}", "X-Tenant-Id": tenant}
    with live_api(db_url, dev_dir, TRIGGER_EVAL_THREADS="1", TRIGGER_EVAL_QUEUE="1", **UNLIMITED) as base:
        barrier = threading.Barrier(6)

        def one(_: int) -> tuple[int, float, Any]:
            barrier.wait()
            return call("POST", f"{base}/triggers/preview", h, worst_preview())

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(one, range(6)))
    statuses = [status for status, _, _ in results]
    assert 503 in statuses and set(statuses) <= {422, 503}, statuses
    refused = next(headers for status, _, headers in results if status == 503)
    assert int(refused["Retry-After"]) >= 1


def test_one_tenant_cannot_take_every_evaluation_place(db_url, dev_dir):
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    ha = {"Authorization": f"Bearer {mint_dev_token(dev_dir, [a], [VIEWER], subject='a')}", "X-Tenant-Id": a}
    hb = {"Authorization": f"Bearer {mint_dev_token(dev_dir, [b], [VIEWER], subject='b')}", "X-Tenant-Id": b}
    cheap = {"trigger": {"type": "CRON", "cron": "0 9 * * *"}, "count": 5}
    # Four places, so one per tenant at most.
    with live_api(db_url, dev_dir, TRIGGER_EVAL_THREADS="1", TRIGGER_EVAL_QUEUE="4", **UNLIMITED) as base:
        barrier = threading.Barrier(7)

        def attacker(_: int) -> int:
            barrier.wait()
            return call("POST", f"{base}/triggers/preview", ha, worst_preview())[0]

        def victim() -> tuple[int, float, Any]:
            barrier.wait()
            time.sleep(0.01)  # after the attacker's requests arrived
            return call("POST", f"{base}/triggers/preview", hb, cheap)

        with ThreadPoolExecutor(7) as pool:
            attacks = [pool.submit(attacker, i) for i in range(6)]
            mine = pool.submit(victim)
            statuses = [f.result() for f in attacks]
            status, elapsed, _ = mine.result()
    assert statuses.count(503) >= 4 and set(statuses) <= {422, 503}, statuses
    assert status == 200 and elapsed < 2.0


@pytest.mark.parametrize("size", [20 * 1024, 64 * 1024 * 1024])
def test_oversize_headers_are_refused_as_they_arrive(db_url, dev_dir, size):
    with live_api(db_url, dev_dir) as base:
        port = int(base.rsplit(":", 1)[1])
        sent = 0
        answer = b""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\nX-Big: ")
            chunk = b"a" * 65536
            try:
                while sent < size:
                    sock.sendall(chunk[: size - sent])
                    sent += min(len(chunk), size - sent)
                sock.sendall(b"\r\n\r\n")
            except OSError:
                pass  # the server closed the connection while we were still sending
            try:
                while data := sock.recv(65536):
                    answer += data
            except OSError:
                pass
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert b"application/problem+json" in answer
        if size > 1024 * 1024:
            assert sent < size  # refused long before the 64 MB arrived
        status, _, _ = call("GET", f"{base}/live", {})
        assert status == 200
        big = call("GET", f"{base}/live", {"X-Big": "a" * 17 * 1024})
        assert big[0] == 431
