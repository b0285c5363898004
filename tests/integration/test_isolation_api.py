"""Tenant isolation at the API, attacked the way a hostile tenant would (issue 8): CPU budgets and rate limits,
write-only secrets, strict tokens and requests, and records that tell the truth. Real Postgres, real HTTP."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient
from loguru import logger
from psycopg import sql

from api.app import create_app
from api.auth import ADMIN, EDITOR, VIEWER, TokenVerifier
from api.devmode import DEV_ISSUER, DEV_KID, dev_private_key, mint_dev_token
from shared.settings import Settings
from tests.integration.live_api import worst_preview

PUBLIC_IP = "93.184.216.34"  # a literal: the SSRF guard needs no DNS to accept it


def http_body(url: str, **http: Any) -> dict[str, Any]:
    return {
        "name": f"h-{uuid.uuid4().hex[:6]}",
        "trigger": {"type": "CRON", "cron": "0 9 * * *"},
        "target": {"kind": "HTTP", "http": {"url": url, **http}},
    }


def problem(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    if field is not None:
        assert field in [e["field"] for e in body.get("errors", [])], body
    return body


@pytest.fixture
def log_records() -> Iterator[list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []
    sink = logger.add(lambda m: records.append({"message": m.record["message"], **m.record["extra"]}), level="INFO")
    yield records
    logger.remove(sink)


def limited(settings: Settings, **overrides: Any) -> Settings:
    return dataclasses.replace(settings, **overrides)


# --- 2. No tenant can slow down others -----------------------------------------------------------------------


async def test_a_worst_case_preview_is_stopped_by_the_cpu_budget(client, headers):
    # Some 16 budgets of work (tests/integration/live_api.py): the 422 says the budget cut it off, whatever the
    # machine's speed (how little that costs others is measured in test_evaluation_isolation.py).
    response = await client.post("/triggers/preview", json=worst_preview(), headers=headers(VIEWER))
    body = problem(response, 422)
    assert "TRIGGER_EVAL_BUDGET_MS" in body["detail"] and "50 ms" in body["detail"]


async def test_a_stored_schedule_preview_is_budgeted_too(client, headers, settings):
    body = {
        "name": "dense",
        "trigger": {"type": "RRULE", "rrule": "FREQ=SECONDLY;BYSECOND=0,7,13,29,41,53"},
        "target": {"kind": "EVENT", "eventTopic": "a.b"},
    }
    created = await client.post("/schedules", json=body, headers=headers())
    assert created.status_code == 201, created.text
    # The same database behind an API whose budget is 0 ms of CPU: 1000 fire times exceed it on any machine.
    strict = dataclasses.replace(settings, trigger_eval_budget_ms=0)
    async with AsyncTestClient(app=create_app(strict)) as strict_client:
        path = f"/schedules/{created.json()['id']}/preview"
        problem(await strict_client.get(f"{path}?count=1000", headers=headers(VIEWER)), 422)
    cheap = await client.get(f"/schedules/{created.json()['id']}/preview?count=3", headers=headers(VIEWER))
    assert cheap.status_code == 200 and len(cheap.json()["fireTimes"]) == 3


async def test_a_backfill_is_budgeted_too(client, headers, settings):
    now = datetime.now(UTC).replace(second=0, microsecond=0)  # second 0: both ends of the ranges below fire
    hour_ago = now - timedelta(hours=1)
    body = {
        "name": "dense-backfill",
        "trigger": {
            "type": "RRULE",
            "rrule": "FREQ=SECONDLY;BYSECOND=0,7,13,29,41,53",
            "startAt": (now - timedelta(hours=2)).isoformat(),
        },
        "target": {"kind": "EVENT", "eventTopic": "a.b"},
    }
    created = await client.post("/schedules", json=body, headers=headers())
    assert created.status_code == 201, created.text
    path = f"/schedules/{created.json()['id']}"
    # An hour of this rule is 360 occurrences, far more work than a budget of 0 ms allows (a budget is checked
    # every 64 units of work, so any real evaluation exceeds it, on any machine).
    strict = dataclasses.replace(settings, trigger_eval_budget_ms=0)
    backfill = {"from": hour_ago.isoformat(), "to": now.isoformat(), "dryRun": True}
    async with AsyncTestClient(app=create_app(strict)) as strict_client:
        problem(await strict_client.post(f"{path}/backfill", json=backfill, headers=headers()), 422)
    # Ten minutes of it within the normal budget: the evaluation stops at `to`, whatever BACKFILL_MAX_RUNS is.
    short = {**backfill, "to": (hour_ago + timedelta(minutes=10)).isoformat()}
    ok = await client.post(f"{path}/backfill", json=short, headers=headers())
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["runs"]) == 60 + 1  # both ends included


async def test_previews_need_a_tenant_the_token_grants(client, dev_dir, headers, tenant):
    body = {"trigger": {"type": "CRON", "cron": "0 9 * * *"}, "count": 2}
    h = headers(VIEWER)
    problem(await client.post("/triggers/preview", json=body, headers={"Authorization": h["Authorization"]}), 400)
    no_tenants = mint_dev_token(dev_dir, [], [VIEWER], subject="nobody")
    response = await client.post(
        "/triggers/preview", json=body, headers={"Authorization": f"Bearer {no_tenants}", "X-Tenant-Id": tenant}
    )
    problem(response, 403)
    assert (await client.post("/triggers/preview", json=body, headers=h)).status_code == 200


async def test_previews_count_against_the_tenants_rate_limit(settings, headers):
    body = {"trigger": {"type": "CRON", "cron": "0 9 * * *"}, "count": 2}
    async with AsyncTestClient(
        app=create_app(limited(settings, tenant_rate_limit_rps=0.1, tenant_rate_limit_burst=3))
    ) as client:
        statuses = [(await client.post("/triggers/preview", json=body, headers=headers(VIEWER))).status_code]
        statuses += [(await client.get("/schedules", headers=headers(VIEWER))).status_code for _ in range(2)]
        statuses += [(await client.post("/triggers/preview", json=body, headers=headers(VIEWER))).status_code]
    assert statuses == [200, 200, 200, 429]  # previews and other requests share the tenant's bucket


async def test_star_tokens_cannot_mint_fresh_buckets_with_made_up_tenants(settings, dev_dir):
    operator = mint_dev_token(dev_dir, ["*"], [VIEWER], subject="operator-1")
    app = create_app(limited(settings, tenant_rate_limit_rps=0.1, tenant_rate_limit_burst=5))
    async with AsyncTestClient(app=app) as client:
        statuses = [
            (
                await client.get(
                    "/schedules", headers={"Authorization": f"Bearer {operator}", "X-Tenant-Id": f"made-up-{i}"}
                )
            ).status_code
            for i in range(60)
        ]
        assert statuses.count(200) == 5 and statuses.count(429) == 55  # 600/600 went through before
        assert len(app.state.rate_limits) == 1  # one bucket: the subject's, not one per made-up name
        other_operator = mint_dev_token(dev_dir, ["*"], [VIEWER], subject="operator-2")
        response = await client.get(
            "/schedules", headers={"Authorization": f"Bearer {other_operator}", "X-Tenant-Id": "made-up-0"}
        )
        assert response.status_code == 200  # keyed by subject: another operator has their own


async def test_one_subject_cannot_spread_over_tenants_and_tenants_do_not_share(settings, dev_dir):
    user = mint_dev_token(dev_dir, ["ta", "tb"], [VIEWER], subject="multi")
    other = mint_dev_token(dev_dir, ["ta"], [VIEWER], subject="colleague")
    async with AsyncTestClient(
        app=create_app(limited(settings, tenant_rate_limit_rps=0.1, tenant_rate_limit_burst=2))
    ) as client:

        async def get(token: str, tenant: str) -> int:
            h = {"Authorization": f"Bearer {token}", "X-Tenant-Id": tenant}
            return (await client.get("/schedules", headers=h)).status_code

        assert [await get(user, "ta"), await get(user, "tb"), await get(user, "tb")] == [200, 200, 429]
        assert await get(other, "ta") == 200  # ta has one token left
        assert await get(other, "ta") == 429  # now ta is spent, whoever asks


# --- 3. Write-only secrets stay write-only ----------------------------------------------------------------------


async def test_a_kept_secret_cannot_be_moved_to_another_origin(client, headers):
    created = await client.post(
        "/schedules",
        json=http_body(f"https://{PUBLIC_IP}/hook", secretHeaders={"X-Api-Key": "admin-set-key"}),
        headers=headers(ADMIN),
    )
    assert created.status_code == 201, created.text
    schedule = created.json()
    masked = schedule["target"]["http"]
    assert masked["secretHeaders"] == {"X-Api-Key": "********"}
    for url in (
        "https://93.184.216.35/hook",  # another host
        f"http://{PUBLIC_IP}/hook",  # another scheme
        f"https://{PUBLIC_IP}:8443/hook",  # another port
    ):
        moved = {"target": {"kind": "HTTP", "http": {**masked, "url": url}}}
        response = await client.patch(f"/schedules/{schedule['id']}", json=moved, headers=headers(EDITOR))
        body = problem(response, 400, "target.http.secretHeaders")
        assert "X-Api-Key" in body["detail"]
    same_origin = {"target": {"kind": "HTTP", "http": {**masked, "url": f"https://{PUBLIC_IP}:443/other-path"}}}
    response = await client.patch(f"/schedules/{schedule['id']}", json=same_origin, headers=headers(EDITOR))
    assert response.status_code == 200, response.text
    resent = {
        "target": {
            "kind": "HTTP",
            "http": {**masked, "url": "https://93.184.216.35/hook", "secretHeaders": {"X-Api-Key": "new-key"}},
        }
    }
    response = await client.patch(f"/schedules/{schedule['id']}", json=resent, headers=headers(EDITOR))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "name", ["Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key", "X-Auth-Token", "Client-Secret"]
)
async def test_credentials_in_plain_headers_are_refused(client, headers, name):
    response = await client.post(
        "/schedules", json=http_body(f"https://{PUBLIC_IP}/hook", headers={name: "Bearer xyz"}), headers=headers()
    )
    body = problem(response, 400, f"target.http.headers.{name}")
    assert "secretHeaders" in body["detail"]
    listed = await client.get("/schedules?pageSize=200", headers=headers(VIEWER))
    assert "Bearer xyz" not in listed.text


async def test_security_headers_on_every_answer(client, headers):
    created = await client.post("/schedules", json=http_body(f"https://{PUBLIC_IP}/hook"), headers=headers())
    rotated = await client.post(f"/schedules/{created.json()['id']}/secret:rotate", headers=headers())
    listed = await client.get("/schedules", headers=headers(VIEWER))
    unauthenticated = await client.get("/schedules")
    missing = await client.get(f"/nothing-here-{uuid.uuid4().hex}")
    for response in (created, rotated, listed, unauthenticated, missing):
        assert response.headers["cache-control"] == "no-store", response.request.url
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-frame-options"] == "DENY"
        assert "default-src 'none'" in response.headers["content-security-policy"]
    assert created.json()["webhookSecret"].startswith("whsec_")
    assert rotated.json()["webhookSecret"].startswith("whsec_")
    docs = await client.get("/schema/swagger")
    if docs.headers.get("content-type", "").startswith("text/html"):
        # HTML pages may load their own (same-origin) scripts and styles.
        assert "default-src 'self'" in docs.headers["content-security-policy"]


# --- 4. Tokens and requests: strict, and never a 500 ------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": "fuzz", "iss": DEV_ISSUER, "iat": now, "nbf": now, "exp": now + 600}
    claims |= {"tenants": ["t1"], "roles": [EDITOR]}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def malformed_tokens(dev_dir: Path) -> dict[str, str]:
    key = dev_private_key(dev_dir)
    good = jwt.encode(_claims(), key, algorithm="ES256", headers={"kid": DEV_KID})
    head, body, signature = good.split(".")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def signed(claims: dict[str, Any]) -> str:
        # Signed as raw bytes: PyJWT's encoder would refuse some of these claim sets before they could be sent.
        return jwt.api_jws.PyJWS().encode(json.dumps(claims).encode(), key, algorithm="ES256", headers={"kid": DEV_KID})

    def with_header(header: dict[str, Any]) -> str:
        return f"{_b64(json.dumps(header).encode())}.{body}.{signature}"

    def raw_claims(text: bytes) -> str:
        return f"{head}.{_b64(text)}.{signature}"

    now = int(time.time())
    return {
        "RS256 header on the EC key": jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": DEV_KID}),
        "PS256 header on the EC key": jwt.encode(_claims(), rsa_key, algorithm="PS256", headers={"kid": DEV_KID}),
        "ES384 header on a P-256 key": with_header({"alg": "ES384", "kid": DEV_KID, "typ": "JWT"}),
        "EdDSA header on the EC key": with_header({"alg": "EdDSA", "kid": DEV_KID}),
        "alg missing": with_header({"kid": DEV_KID}),
        "alg a number": with_header({"alg": 256, "kid": DEV_KID}),
        "alg a list": with_header({"alg": ["ES256"], "kid": DEV_KID}),
        "kid a number": with_header({"alg": "ES256", "kid": 7}),
        "kid a dict": with_header({"alg": "ES256", "kid": {"$ne": 1}}),
        "kid missing": with_header({"alg": "ES256"}),
        "header a list": f"{_b64(b'[1,2]')}.{body}.{signature}",
        "header not JSON": f"{_b64(b'{nope')}.{body}.{signature}",
        "header bad base64": f"!!!.{body}.{signature}",
        "crit header": with_header({"alg": "ES256", "kid": DEV_KID, "crit": ["exp"]}),
        "b64 false": with_header({"alg": "ES256", "kid": DEV_KID, "b64": False, "crit": ["b64"]}),
        "claims a list": raw_claims(b"[1]"),
        "claims not JSON": raw_claims(b"{"),
        "claims a string": raw_claims(b'"x"'),
        "exp a string": signed(_claims(exp=str(now + 600))),
        "exp a bool": signed(_claims(exp=True)),
        "exp huge": signed(_claims(exp=10**400)),
        "exp a list": signed(_claims(exp=[now + 600])),
        "iat a string": signed(_claims(iat=str(now))),
        "iat a dict": signed(_claims(iat={"n": now})),
        "iat missing": signed(_claims(iat=None)),
        "nbf a string": signed(_claims(nbf=str(now))),
        "iat in the future": signed(_claims(iat=now + 3600, exp=now + 4000)),
        "lifetime too long": signed(_claims(exp=now + 400 * 86400)),
        "sub missing": signed(_claims(sub=None)),
        "sub a number": signed(_claims(sub=7)),
        "sub empty": signed(_claims(sub="")),
        "tenants a comma string": signed(_claims(tenants="t1,*")),
        "tenants a star string": signed(_claims(tenants="*")),
        "tenants with a number": signed(_claims(tenants=["t1", 2])),
        "tenants a dict": signed(_claims(tenants={"t1": True})),
        "roles a string": signed(_claims(roles="scheduler.admin")),
        "roles nested": signed(_claims(roles=[["scheduler.admin"]])),
        "iss a list": signed(_claims(iss=[DEV_ISSUER])),
        "two segments": f"{head}.{body}",
        "four segments": f"{good}.x",
        "empty signature": f"{head}.{body}.",
        "signature of junk": f"{head}.{body}.{_b64(b'x' * 64)}",
        "huge": f"{head}.{_b64(b'{' + b' ' * 12000 + b'}')}.{signature}",
        "non-ascii": f"{head}.{body}.{signature}\u00e9",
        "dots only": "..",
        "empty": ".",
    }


async def test_every_malformed_token_is_a_401(client, dev_dir, log_records):
    for case, token in malformed_tokens(dev_dir).items():
        for method, path in (("GET", "/schedules"), ("POST", "/triggers/preview")):
            response = await client.request(
                method, path, headers={"Authorization": f"Bearer {token}".encode(), "X-Tenant-Id": "t1"}, json={}
            )
            assert response.status_code == 401, (case, response.status_code, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert not [r for r in log_records if "unhandled" in r["message"]]


def test_a_string_tenants_claim_never_grants_every_tenant(dev_dir):
    verifier = TokenVerifier(Settings(auth_mode="dev", dev_data_dir=str(dev_dir)))
    key = dev_private_key(dev_dir)
    with pytest.raises(Exception, match="list of strings"):
        verifier.verify(jwt.encode(_claims(tenants="t1,*"), key, algorithm="ES256", headers={"kid": DEV_KID}))
    principal = verifier.verify(jwt.encode(_claims(), key, algorithm="ES256", headers={"kid": DEV_KID}))
    assert principal.tenants == frozenset({"t1"}) and principal.subject == "fuzz"


def test_jwks_mode_needs_an_audience_unless_explicitly_waived(log_records):
    idp = {"auth_mode": "jwks", "jwks_url": "https://idp.example/jwks"}
    with pytest.raises(SystemExit, match="JWT_AUDIENCE"):
        TokenVerifier(Settings(**idp))
    TokenVerifier(Settings(**idp, jwt_audience="scheduler"))
    TokenVerifier(Settings(**idp, jwt_audience_not_required=1))
    assert any("JWT_AUDIENCE_NOT_REQUIRED" in r["message"] for r in log_records)


def test_the_api_process_refuses_to_start_without_an_audience(settings):
    import subprocess
    import sys

    env = {"POSTGRES_URL": settings.postgres_url, "AUTH_MODE": "jwks", "JWKS_URL": "https://idp.example/jwks"}
    env |= {"PATH": "/usr/bin:/bin", "SECRETS_KEY": "k1:" + base64.b64encode(b"k" * 32).decode(), "PORT": "1"}
    started = subprocess.run([sys.executable, "-m", "api"], env=env, capture_output=True, timeout=60, text=True)
    assert started.returncode != 0 and "JWT_AUDIENCE" in started.stderr


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


async def test_bad_input_is_a_400_and_is_not_stored(client, headers):
    before = (await client.get("/schedules", headers=headers(VIEWER))).json()["total"]
    event = {"kind": "EVENT", "eventTopic": "a.b"}
    base = '{"name": "deep", "trigger": {"type": "CRON", "cron": "0 9 * * *"}, "target": %s, "payload": %s}'
    for depth in (100, 1000, 5000, 100_000):
        raw = base % (json.dumps(event), _nested(depth))
        response = await client.post(
            "/schedules", content=raw.encode(), headers={**headers(), "Content-Type": "application/json"}
        )
        assert response.status_code == 400, (depth, response.status_code, response.text[:300])
    preview = '{"trigger": {"type": "CRON", "cron": "0 9 * * *"}, "count": 2, "x": ' + _nested(3000) + "}"
    response = await client.post(
        "/triggers/preview", content=preview.encode(), headers={**headers(VIEWER), "Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    for url in (
        "http://example.com:99999/x",
        "http://example.com:abc/x",
        "http://example.com:-1/x",
        "http://exa\\mple.com/x",
        "http://user:password@example.com/x",
        "http://[::1/x",
        "http://0x7f000001/x",
        "http://127.1/x",
        "http:///x",
        "gopher://example.com/x",
        "http://ex ample.com/x",
    ):
        response = await client.post("/schedules", json=http_body(url), headers=headers())
        problem(response, 400, "target.http.url")
    schedule = await client.post("/schedules", json=http_body(f"https://{PUBLIC_IP}/ok"), headers=headers())
    assert schedule.status_code == 201
    patched = await client.patch(
        f"/schedules/{schedule.json()['id']}",
        json={"target": {"kind": "HTTP", "http": {"url": "http://example.com:99999/"}}},
        headers=headers(),
    )
    problem(patched, 400, "target.http.url")
    after = (await client.get("/schedules", headers=headers(VIEWER))).json()["total"]
    assert after == before + 1  # only the good one


async def test_ssrf_guard_refuses_ipv6_forms_of_internal_addresses(client, headers):
    # Dev mode allows loopback (local receivers), so the embedded addresses here are the metadata service and
    # private networks.
    internal = ("[2002:a9fe:a9fe::]", "[2002:a00:1::]", "[64:ff9b::a9fe:a9fe]", "[::ffff:10.0.0.1]", "[::10.0.0.1]")
    for host in internal:
        response = await client.post("/schedules", json=http_body(f"http://{host}/"), headers=headers())
        body = problem(response, 400, "target.http.url")
        assert "not allowed" in body["detail"]


async def test_oversize_request_headers_are_a_431(client, headers, log_records):
    h = headers(VIEWER)
    big = await client.get("/schedules", headers={**h, "X-Junk": "x" * 17 * 1024})
    problem(big, 431)
    many = await client.get("/schedules", headers={**h, **{f"X-Junk-{i}": "x" * 10_000 for i in range(8)}})
    problem(many, 431)
    assert (await client.get("/schedules", headers={**h, "X-Fine": "x" * 8 * 1024})).status_code == 200
    assert any(r["message"].startswith("GET unmatched 431") for r in log_records)


# --- 5. The records tell the truth --------------------------------------------------------------------------


async def test_401s_404s_and_405s_are_logged_and_counted_as_such(client, headers, log_records):
    await client.get("/schedules", headers={"X-Tenant-Id": "t1", "Authorization": "Bearer junk"})
    for i in range(20):
        await client.get(f"/no-such-path-{uuid.uuid4().hex}/{i}")
    await client.delete("/live")
    metrics = (await client.get("/metrics")).text
    assert 'method="GET",route="/schedules",status="401"' in metrics
    assert 'method="GET",route="unmatched",status="404"' in metrics
    assert re.search(r'method="DELETE",route="[^"]*",status="405"', metrics)
    assert "no-such-path" not in metrics  # unknown paths share one series
    messages = [r["message"] for r in log_records]
    assert any(m.startswith("GET /schedules 401") for m in messages), messages
    assert any(m.startswith("GET unmatched 404") for m in messages)
    assert any(m.startswith("DELETE") and " 405 " in m for m in messages)
    assert not any(" 500 " in m for m in messages)
    weird = await client.request("PROPFIND", "/schedules")
    assert weird.status_code in (401, 405)
    assert "PROPFIND" not in (await client.get("/metrics")).text  # made-up methods do not mint series


async def test_the_logged_tenant_is_the_one_served(client, headers, tenant, log_records):
    await client.get("/schedules", headers=headers(VIEWER))
    await client.get("/schedules", headers={**headers(VIEWER), "X-Tenant-Id": "someone-else"})  # 403
    await client.get("/schedules", headers={"X-Tenant-Id": "victim", "Authorization": "Bearer junk"})  # 401
    lines = [r for r in log_records if r["message"].startswith("GET /schedules")]
    assert [(r["message"].split()[2], r.get("tenant_id")) for r in lines] == [
        ("200", tenant),
        ("403", None),
        ("401", None),
    ]


async def test_a_duplicated_tenant_header_is_refused(client, headers, tenant):
    h = headers(VIEWER)
    response = await client.get(
        "/schedules",
        headers=[("Authorization", h["Authorization"]), ("X-Tenant-Id", tenant), ("X-Tenant-Id", "other")],
    )
    problem(response, 400, "X-Tenant-Id")
    twice = await client.get(
        "/schedules",
        headers=[("Authorization", h["Authorization"]), ("Authorization", "Bearer junk"), ("X-Tenant-Id", tenant)],
    )
    problem(twice, 401)


def test_dev_stack_connections_cannot_reset_to_a_superuser(settings):
    """The API's and workers' connections in the dev stack log in as their own roles: RESET ROLE gets nowhere."""
    from shared.db.logins import ensure_login_roles

    with psycopg.connect(settings.postgres_url) as admin:
        row = admin.execute("SELECT rolname FROM pg_roles WHERE rolsuper LIMIT 1").fetchone()
        assert row is not None
        superuser = row[0]
    urls = ensure_login_roles(settings.postgres_url)
    for service, role in (("api", "scheduler_api"), ("worker", "scheduler_worker")):
        with psycopg.connect(urls[service], autocommit=True) as conn:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))  # what the pool does on connect
            conn.execute("RESET ROLE")
            row = conn.execute(
                "SELECT r.rolsuper, r.rolcreaterole, r.rolbypassrls FROM pg_roles r WHERE r.rolname = session_user"
            ).fetchone()
            assert row == (False, False, False), service
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(superuser)))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT count(*) FROM schedules")  # the bare login holds no privilege at all


async def test_the_api_works_through_its_own_login(settings, headers):
    from shared.db.logins import ensure_login_roles

    api_url = ensure_login_roles(settings.postgres_url)["api"]
    async with AsyncTestClient(app=create_app(dataclasses.replace(settings, postgres_url=api_url))) as client:
        created = await client.post("/schedules", json=http_body(f"https://{PUBLIC_IP}/x"), headers=headers())
        assert created.status_code == 201, created.text
        assert (await client.get("/ready")).status_code == 200


def test_the_compose_logins_command_creates_the_service_logins(settings):
    """What docker-compose's `migrate` service runs after the migrations."""
    import subprocess
    import sys
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(settings.postgres_url)
    host = parts.netloc.rpartition("@")[2]
    api_url = urlunsplit(parts._replace(netloc=f"scheduler_api_login:pw-api@{host}"))
    worker_url = urlunsplit(parts._replace(netloc=f"scheduler_worker_login:pw-worker@{host}"))
    done = subprocess.run(
        [sys.executable, "-m", "shared.db.logins", "--api-url", api_url, "--worker-url", worker_url],
        env={"POSTGRES_URL": settings.postgres_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for url in (api_url, worker_url):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("RESET ROLE")
            row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = session_user").fetchone()
            assert row == (False,)


def test_an_unreachable_identity_provider_is_a_503_not_a_401(dev_dir):
    from shared.errors import Unavailable
    from tests.integration.live_api import free_port

    verifier = TokenVerifier(
        Settings(auth_mode="jwks", jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json", jwt_audience="scheduler")
    )
    token = jwt.encode(_claims(aud="scheduler"), dev_private_key(dev_dir), algorithm="ES256", headers={"kid": "k"})
    with pytest.raises(Unavailable):
        verifier.verify(token)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def _maybe(valid: Any) -> st.SearchStrategy[Any]:
    """The valid value, a random JSON value, or absent (None is dropped from the claims)."""
    return st.one_of(st.just(valid), JSON, st.just(None))


@hypothesis_settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    alg=st.one_of(st.sampled_from(["ES256", "RS256", "PS256", "EdDSA", "HS256", "none", "ES384"]), JSON),
    kid=st.one_of(st.just(DEV_KID), JSON),
    extra=st.dictionaries(st.sampled_from(["crit", "b64", "jku", "x5u", "typ", "cty", "zip"]), JSON, max_size=2),
    exp=_maybe(int(time.time()) + 600),
    iat=_maybe(int(time.time())),
    nbf=_maybe(int(time.time())),
    sub=_maybe("someone"),
    iss=_maybe(DEV_ISSUER),
    tenants=_maybe(["t1"]),
    roles=_maybe([EDITOR]),
)
def test_fuzzed_token_headers_and_claims_are_401_or_valid(dev_dir, alg, kid, extra, **claims):
    """Correctly signed by the dev key, so every check after the signature is reached too."""
    from jwt.algorithms import ECAlgorithm

    from shared.errors import Unauthenticated

    header = {"alg": alg, "kid": kid, **extra}
    body = {k: v for k, v in claims.items() if v is not None}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(body).encode())}".encode()
    signature = ECAlgorithm(ECAlgorithm.SHA256).sign(signing_input, dev_private_key(dev_dir))
    token = f"{signing_input.decode()}.{_b64(signature)}"
    verifier = TokenVerifier(Settings(auth_mode="dev", dev_data_dir=str(dev_dir)))
    try:
        principal = verifier.verify(token)
    except Unauthenticated:
        return
    # Accepted: then it was a well-formed token in every respect that matters.
    assert alg == "ES256" and kid == DEV_KID
    assert isinstance(body["sub"], str) and principal.subject == body["sub"]
    for name in ("tenants", "roles"):
        value = body.get(name, [])
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
