"""Negative authentication and authorization cases for every route, generated from the app's route table:
a route added without a guard, or with one that lets a bad token through, fails here."""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.auth import EDITOR, VIEWER, TokenVerifier
from api.devmode import DEV_ISSUER, DEV_KID, dev_private_key
from shared.secrets import KeyRing
from shared.settings import Settings

PUBLIC = {"/health", "/ready", "/live", "/metrics", "/dev/jwks.json", "/dev/token"}  # /dev/*: dev mode only
# Static files and the settings the console reads before anyone signs in (tests/unit/test_console_and_docs.py).
PUBLIC_PREFIXES = ("/schema", "/console")
# Routes whose handlers do not take X-Tenant-Id: none (even previews spend a tenant's rate limit).
TENANTLESS: set[str] = set()


def route_table(settings: Settings) -> list[tuple[str, str, str]]:
    """(method, path with sample ids, minimal role) of every authenticated route."""
    table = []
    for route in create_app(settings).routes:
        if not isinstance(route, HTTPRoute) or route.path.startswith(PUBLIC_PREFIXES):
            continue
        for handler in route.route_handlers:
            if handler.http_methods == {"OPTIONS"}:
                continue  # Litestar's automatic CORS preflight handler
            guards = [g for layer in handler.ownership_layers for g in (layer.guards or [])]
            roles = [g.role for g in guards if hasattr(g, "role")]
            if route.path in PUBLIC:
                assert not roles, f"{route.path} is public but guarded"
                continue
            assert len(roles) == 1, f"{route.path} {handler.http_methods} must declare exactly one role guard"
            path = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), route.path)
            table += [(method, path, roles[0]) for method in sorted(handler.http_methods)]
    return table


def token(dev_dir: Path, *, key=None, alg: str = "ES256", kid: str = DEV_KID, **overrides) -> str:
    now = int(time.time())
    claims = {
        "sub": "t",
        "iss": DEV_ISSUER,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "tenants": ["t1"],
        "roles": [EDITOR],
        **overrides,
    }
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key if key is not None else dev_private_key(dev_dir), algorithm=alg, headers={"kid": kid})


def tampered(t: str) -> str:
    head, body, signature = t.split(".")
    return f"{head}.{body}.{signature[:-4]}{'AAAA' if not signature.endswith('AAAA') else 'BBBB'}"


def bad_tokens(dev_dir: Path) -> dict[str, str]:
    unsigned = jwt.encode(
        {
            "sub": "t",
            "iss": DEV_ISSUER,
            "exp": int(time.time()) + 600,
            "iat": int(time.time()),
            "tenants": ["t1"],
            "roles": [EDITOR],
        },
        None,
        algorithm="none",
        headers={"kid": DEV_KID},
    )
    return {
        "tampered signature": tampered(token(dev_dir)),
        "alg none": unsigned,
        "expired": token(dev_dir, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
        "not yet valid": token(dev_dir, nbf=int(time.time()) + 3600),
        "wrong kid": token(dev_dir, kid="someone-else"),
        "wrong issuer": token(dev_dir, iss="https://evil.example"),
        "other key": token(dev_dir, key=ec.generate_private_key(ec.SECP256R1())),
        "HS256 with the public key": jwt.encode(
            {"sub": "t", "iss": DEV_ISSUER, "exp": int(time.time()) + 600, "iat": int(time.time())},
            "a-shared-secret-that-is-long-enough-for-hs256",
            algorithm="HS256",
            headers={"kid": DEV_KID},
        ),
        "no exp": token(dev_dir, exp=None),
        "garbage": "not.a.token",
    }


async def test_every_route_refuses_bad_tokens(client, settings: Settings, dev_dir: Path):
    table = route_table(settings)
    assert len(table) >= 10
    for method, path, _ in table:
        response = await client.request(method, path, headers={"X-Tenant-Id": "t1"}, json={})
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        for case, bad in bad_tokens(dev_dir).items():
            response = await client.request(
                method, path, headers={"Authorization": f"Bearer {bad}", "X-Tenant-Id": "t1"}, json={}
            )
            assert response.status_code == 401, (case, method, path, response.text)
            assert "Traceback" not in response.text and "SELECT" not in response.text


async def test_every_route_checks_the_audience_when_configured(settings: Settings, dev_dir: Path):
    with_audience = dataclasses.replace(settings, jwt_audience="scheduler-api")
    async with AsyncTestClient(app=create_app(with_audience)) as client:
        for method, path, role in route_table(with_audience):
            for case, aud in (("wrong audience", "another-api"), ("no audience", None)):
                bad = token(dev_dir, aud=aud, roles=[role])
                response = await client.request(
                    method, path, headers={"Authorization": f"Bearer {bad}", "X-Tenant-Id": "t1"}, json={}
                )
                assert response.status_code == 401, (case, method, path, response.text)
            good = token(dev_dir, aud="scheduler-api", roles=[role])
            response = await client.request(
                method, path, headers={"Authorization": f"Bearer {good}", "X-Tenant-Id": "t1"}, json={}
            )
            assert response.status_code not in (401, 403), (method, path, response.text)


async def test_every_route_checks_role_and_tenant(client, settings: Settings, dev_dir: Path):
    for method, path, role in route_table(settings):
        too_low = [] if role == VIEWER else [VIEWER]
        weak = token(dev_dir, roles=too_low)
        response = await client.request(
            method, path, headers={"Authorization": f"Bearer {weak}", "X-Tenant-Id": "t1"}, json={}
        )
        assert response.status_code == 403, (method, path, response.text)
        if path in TENANTLESS:
            continue
        good = {"Authorization": f"Bearer {token(dev_dir, roles=[role])}"}
        wrong_tenant = await client.request(method, path, headers={**good, "X-Tenant-Id": "t2"}, json={})
        assert wrong_tenant.status_code == 403, (method, path, wrong_tenant.text)
        missing = await client.request(method, path, headers=good, json={})
        assert missing.status_code == 400, (method, path, missing.text)


async def test_public_routes_need_no_token(client):
    for path in sorted(PUBLIC):
        assert (await client.get(path)).status_code == 200
    jwks = (await client.get("/dev/jwks.json")).json()
    assert jwks["keys"][0]["kid"] == DEV_KID and "d" not in jwks["keys"][0]  # the public half only


def test_dev_mode_serves_no_key_set_in_production(settings: Settings):
    production = create_app(
        dataclasses.replace(
            settings,
            auth_mode="jwks",
            jwks_url="https://idp.example/jwks",
            jwt_audience="scheduler",
            secrets_key=KeyRing.new_key_spec("k1"),
        )
    )
    assert "/dev/jwks.json" not in {route.path for route in production.routes}


def test_audience_is_enforced_when_configured(dev_dir: Path):
    verifier = TokenVerifier(Settings(auth_mode="dev", dev_data_dir=str(dev_dir), jwt_audience="scheduler-api"))
    verifier.verify(token(dev_dir, aud="scheduler-api"))
    for audience in ("someone-else", None):
        with pytest.raises(Exception, match="bearer token"):
            verifier.verify(token(dev_dir, aud=audience))


def test_claims_can_live_at_dotted_paths(dev_dir: Path):
    keycloak_like = Settings(
        auth_mode="dev",
        dev_data_dir=str(dev_dir),
        jwt_roles_claim="realm_access.roles",
        jwt_tenants_claim="ext.tenants",
    )
    principal = TokenVerifier(keycloak_like).verify(
        token(dev_dir, roles=None, tenants=None, realm_access={"roles": [VIEWER]}, ext={"tenants": ["*"]})
    )
    assert principal.has_role(VIEWER) and not principal.has_role(EDITOR)
    assert principal.may_access("any-tenant")


def test_symmetric_and_none_algorithms_are_never_accepted(dev_dir: Path):
    idp = {"auth_mode": "jwks", "jwks_url": "https://idp.example/jwks", "jwt_audience": "scheduler"}
    with pytest.raises(SystemExit):
        TokenVerifier(Settings(**idp, jwt_algorithms="HS256,none"))
    verifier = TokenVerifier(Settings(**idp, jwt_algorithms="RS256,HS256,none"))
    assert verifier.algorithms == ["RS256"]
