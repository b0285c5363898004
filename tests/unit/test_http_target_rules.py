"""The rules an HTTP target's URL and headers must follow, and trigger evaluation under a CPU budget."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from shared.errors import EvaluationBudgetExceeded, InvalidInput
from shared.model import SECRET_MASK, HttpSpec, HttpTarget, RRuleTrigger
from shared.secrets import KeyRing, redact, seal_target
from shared.timing.budget import Budget
from shared.timing.cron import cron_next, parse_cron
from shared.timing.next_fire import fire_times
from shared.validation import (
    DEFAULT_CREDENTIAL_HEADERS,
    check_credential_headers,
    check_http_url,
    json_depth,
    url_origin,
)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com:99999/",
        "http://example.com:abc/",
        "http://example.com:-1/",
        "http://example.com:0/",
        "http://example.com:/",
        "http://exa\\mple.com/",
        "http://example.com\\@evil.com/",
        "http://user:pw@example.com/",
        "http://@example.com/",
        "http:///path",
        "http://:80/",
        "http://exa mple.com/",
        "http://example.com/\t",
        "http://example.com/\u00a0",
        "http://example.com\x00.evil/",
        "ftp://example.com/",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http:/example.com",
        "//example.com/",
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f.0.0.1/",
        "http://0177.0.0.1/",
        "http://[::1%25lo]/",
        "http://[::g]/",
        "http://[::1/",
        "http://exa_mple.com/",
        "http://-example.com/",
        "http://" + "a" * 64 + ".com/",
        "http://xn--zz.com/",
        "http://example.com/" + "a" * 2048,
    ],
)
def test_odd_urls_are_refused(url):
    assert check_http_url(url) is not None, url


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com/sync?x=1#frag",
        "http://example.com:8080/",
        "HTTPS://Example.COM/",
        "http://93.184.216.34/",
        "http://[2606:4700::1111]:443/",
        "https://bücher.example/",
        "https://example.com./",
    ],
)
def test_ordinary_urls_pass(url):
    assert check_http_url(url) is None, url


def test_origins_compare_as_rfc_6454_says():
    assert url_origin("https://Example.com/a") == url_origin("https://example.com:443/b")
    assert url_origin("http://example.com/") != url_origin("https://example.com/")
    assert url_origin("https://example.com/") != url_origin("https://example.com:8443/")
    assert url_origin("https://bücher.example/") == url_origin("https://xn--bcher-kva.example/")


@pytest.mark.parametrize(
    "name", ["Authorization", "proxy-authorization", "Cookie", "X-Api-Key", "X-Auth-Token", "Client-Secret", "apikey"]
)
def test_credential_header_names_belong_in_secret_headers(name):
    target = HttpTarget(http=HttpSpec(url="https://example.com/", headers={name: "v"}))
    [problem] = check_credential_headers(target, DEFAULT_CREDENTIAL_HEADERS)
    assert problem.field == f"target.http.headers.{name}" and "secretHeaders" in problem.reason


def test_ordinary_header_names_are_fine():
    target = HttpTarget(http=HttpSpec(url="https://example.com/", headers={"X-Team": "a", "Accept": "*/*"}))
    assert check_credential_headers(target, DEFAULT_CREDENTIAL_HEADERS) == []


def test_a_kept_secret_stays_with_its_origin():
    keys = KeyRing.parse(KeyRing.new_key_spec("k1"))
    first = HttpTarget(http=HttpSpec(url="https://a.example/hook", secret_headers={"X-Api-Key": "s3cret"}))
    stored = seal_target(first, keys, "id", previous=None)
    moved = HttpTarget(http=HttpSpec(url="https://b.example/hook", secret_headers={"X-Api-Key": SECRET_MASK}))
    with pytest.raises(InvalidInput) as refused:
        seal_target(moved, keys, "id", previous=stored)
    assert refused.value.problems[0].field == "target.http.secretHeaders"
    same_origin = HttpTarget(
        http=HttpSpec(url="https://A.example:443/other", secret_headers={"X-Api-Key": SECRET_MASK})
    )
    assert seal_target(same_origin, keys, "id", previous=stored).http.secret_headers == stored.http.secret_headers
    resent = HttpTarget(http=HttpSpec(url="https://b.example/hook", secret_headers={"X-Api-Key": "new"}))
    assert seal_target(resent, keys, "id", previous=stored).http.secret_headers["X-Api-Key"] != SECRET_MASK


def test_redaction_replaces_every_secret():
    assert redact("key=abcd1234 again abcd1234", ["abcd1234"]) == "key=[redacted] again [redacted]"
    assert redact("x", [""]) == "x"


def test_json_depth():
    assert json_depth(1) == 0 and json_depth({"a": [1]}) == 2
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    assert json_depth(deep) > 64  # without recursion: no RecursionError


def test_a_budget_stops_a_costly_preview():
    trigger = RRuleTrigger(rrule="FREQ=SECONDLY;COUNT=1000", start_at=datetime(2026, 1, 1, tzinfo=UTC))
    # A clock that advances one unit per reading (every 64 units of work): 10 readings' worth, whatever the
    # machine's speed; 1,000 per-second fire times take some 24,000 units.
    ticks = iter(range(10**9))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(EvaluationBudgetExceeded):
        fire_times(trigger, "UTC", start, 1000, budget=Budget(lambda: float(next(ticks)), 10))
    assert (
        len(fire_times(trigger, "UTC", datetime(2026, 1, 1, tzinfo=UTC), 3, budget=Budget(time.thread_time, 1.0))) == 3
    )


def test_a_budget_stops_long_cron_scans():
    # An expression that never fires makes the scan walk its whole horizon; one request's scans share a budget.
    expr = parse_cron("0 0 30 2 *")
    clock = iter(range(1_000_000))
    budget = Budget(lambda: float(next(clock)), 0.5)
    with pytest.raises(EvaluationBudgetExceeded):
        for _ in range(10):
            cron_next(expr, __import__("zoneinfo").ZoneInfo("UTC"), datetime(2026, 1, 1, tzinfo=UTC), budget=budget)


def test_response_excerpts_are_cut_on_a_character_boundary():
    from worker.targets.http import _cut

    assert _cut("héllo", 0) == ""
    assert _cut("héllo", 2) == "h"  # the é would be split: dropped
    assert _cut("héllo", 100) == "héllo"
