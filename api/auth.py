"""Who is calling: bearer-token verification, the request's principal, role guards and the tenant in scope.

Production verifies tokens against ``JWKS_URL``; dev mode (``AUTH_MODE=dev``) verifies against a local key pair
kept under ``DEV_DATA_DIR`` that ``make token`` signs with. Both go through the same ``jwt.decode`` path.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from loguru import logger

from shared.errors import Forbidden, InvalidInput, TooManyRequests, Unauthenticated
from shared.settings import Settings
from shared.validation import check_tenant_id

VIEWER, EDITOR, ADMIN = "scheduler.viewer", "scheduler.editor", "scheduler.admin"
# Each role includes the ones before it.
_RANK = {VIEWER: 1, EDITOR: 2, ADMIN: 3}
DEV_ISSUER = "scheduler-dev"
DEV_KEY_FILE = "dev-signing-key.pem"
DEV_KID = "dev"
PUBLIC_PATHS = {"/health", "/ready", "/live", "/metrics"}


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    tenants: frozenset[str]  # {"*"} for platform operators
    roles: frozenset[str]

    def has_role(self, role: str) -> bool:
        return any(_RANK.get(r, 0) >= _RANK[role] for r in self.roles)

    def may_access(self, tenant_id: str) -> bool:
        return "*" in self.tenants or tenant_id in self.tenants


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _as_set(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(value.replace(",", " ").split())
    if isinstance(value, list):
        return frozenset(str(v) for v in value)
    return frozenset()


def dev_private_key(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    """The dev signing key, created on first use (P-256, so tokens are ES256 like many real IdPs issue)."""
    path = data_dir / DEV_KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(pem)
        tmp.chmod(0o600)
        tmp.replace(path)  # atomic: concurrent first uses agree on one key
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    return loaded


def mint_dev_token(
    data_dir: Path, tenants: list[str] | str, roles: list[str], ttl_sec: int = 86400, subject: str = "dev"
) -> str:
    now = int(time.time())
    claims = {
        "sub": subject,
        "iss": DEV_ISSUER,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_sec,
        "tenants": tenants,
        "roles": roles,
    }
    return jwt.encode(claims, dev_private_key(data_dir), algorithm="ES256", headers={"kid": DEV_KID})


def dev_jwks(data_dir: Path) -> dict[str, Any]:
    """The dev key's public half as a JWK Set, as an identity provider would publish it."""
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(dev_private_key(data_dir).public_key()))
    return {"keys": [{**jwk, "kid": DEV_KID, "use": "sig", "alg": "ES256"}]}


class LocalJWKClient(jwt.PyJWKClient):
    """A JWKS client whose key set is the dev key's instead of one fetched over HTTP: dev tokens go through the
    very code path production tokens do (kid lookup, algorithm allow-list, claim checks)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        super().__init__("http://dev.invalid/jwks.json", cache_keys=True)
        self._jwks = jwks

    def fetch_data(self) -> Any:
        return self._jwks


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Only asymmetric algorithms: `none` accepts forgeries, and HS* would let anyone holding the public
        # key (it is public) sign tokens.
        requested = [a.strip() for a in settings.jwt_algorithms.split(",") if a.strip()]
        self.algorithms = [a for a in requested if a.lower() != "none" and not a.upper().startswith("HS")]
        if not self.algorithms:
            raise SystemExit(f"JWT_ALGORITHMS={settings.jwt_algorithms!r} names no asymmetric algorithm")
        self.jwks: jwt.PyJWKClient
        if settings.auth_mode == "dev":
            logger.warning("AUTH_MODE=dev: tokens are checked against a local dev key; never use this in production")
            self.jwks = LocalJWKClient(dev_jwks(settings.dev_dir))
            self.issuer = settings.jwt_issuer or DEV_ISSUER
        elif settings.jwks_url:
            # Keys are cached for 5 minutes; a token with an unknown kid (a rotated key) triggers at most one
            # refetch per cooldown, so random kids cannot make us hammer the identity provider.
            self.jwks = jwt.PyJWKClient(
                settings.jwks_url, cache_keys=True, lifespan=300, cooldown_duration=10, timeout=5
            )
            self.issuer = settings.jwt_issuer
        else:
            raise SystemExit("JWKS_URL is required unless AUTH_MODE=dev")

    def verify(self, token: str) -> Principal:
        try:
            key = self.jwks.get_signing_key_from_jwt(token).key
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                issuer=self.issuer or None,
                audience=self.settings.jwt_audience or None,
                leeway=30,
                options={"require": ["exp", "iat"], "verify_aud": bool(self.settings.jwt_audience)},
            )
        except (jwt.PyJWTError, ValueError) as exc:
            raise Unauthenticated(f"invalid bearer token: {exc}") from exc
        return Principal(
            subject=str(claims.get("sub", "")),
            tenants=_as_set(_claim(claims, self.settings.jwt_tenants_claim)),
            roles=_as_set(_claim(claims, self.settings.jwt_roles_claim)),
        )


class BearerAuth(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("an `Authorization: Bearer <token>` header is required")
        verifier: TokenVerifier = connection.app.state.verifier
        principal = verifier.verify(token.strip())
        return AuthenticationResult(user=principal, auth=token)


def require(role: str):
    """Guard: the caller's token carries ``role`` (or a higher one)."""

    # async: Litestar runs a sync guard in a worker thread, a handoff that cost ~10% of a create's CPU.
    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        if not connection.user.has_role(role):
            raise Forbidden(f"requires role {role}")

    guard.role = role  # type: ignore[attr-defined]  # read by the route-table tests
    return guard


def tenant_in_scope(request: Request) -> str:
    """The X-Tenant-Id of the request, which the caller's token must grant."""
    raw = request.headers.get("x-tenant-id")
    if not raw:
        raise InvalidInput.field("X-Tenant-Id", "header is required")
    tenant_id = check_tenant_id(raw.strip())
    if not request.user.may_access(tenant_id):
        raise Forbidden(f"token does not grant tenant {tenant_id}")
    wait = request.app.state.rate_limits.take(tenant_id, time.monotonic())
    if wait:
        raise TooManyRequests(wait)
    return tenant_id
