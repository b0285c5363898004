"""Who is calling: bearer-token verification, the request's principal, role guards and the tenant in scope.

Production verifies tokens against ``JWKS_URL``; dev mode (``AUTH_MODE=dev``) verifies against a local key pair
kept under ``DEV_DATA_DIR`` that ``make token`` signs with. Both go through the same ``jwt.decode`` path.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.params import HeaderParameter
from loguru import logger

from api.devmode import DEV_ISSUER, dev_jwks
from shared.db.repository import current_actor
from shared.errors import Forbidden, InvalidInput, TooManyRequests, Unauthenticated, Unavailable
from shared.ratelimit import TokenBuckets
from shared.settings import Settings
from shared.validation import check_tenant_id

VIEWER, EDITOR, ADMIN = "scheduler.viewer", "scheduler.editor", "scheduler.admin"
# Each role includes the ones before it.
_RANK = {VIEWER: 1, EDITOR: 2, ADMIN: 3}
PUBLIC_PATHS = {"/health", "/ready", "/live", "/metrics"}
LEEWAY_SEC = 30
# Where tenant_in_scope leaves the validated, granted tenant for the request log line (api/observability.py).
TENANT_STATE_KEY = "scheduler_tenant_id"
# Far beyond any real token (a few KiB with many groups); bounds the work a junk header can cause.
MAX_TOKEN_CHARS = 16 * 1024
# JWS algorithm family (its first two letters) -> the JWK key type it needs.
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


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


def _string_list(claims: dict[str, Any], path: str) -> frozenset[str]:
    """A claim that must be a JSON list of non-empty strings; absent means none.

    A string is refused rather than split: ``"t1,*"`` would otherwise grant every tenant, and identity providers
    that emit space- or comma-separated strings differ in how they quote, so no reading of one is safe.
    """
    value = _claim(claims, path)
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) and v and len(v) <= 256 for v in value):
        raise Unauthenticated(f"claim {path!r} must be a list of strings")
    return frozenset(value)


def _is_number(value: Any) -> bool:
    """A JSON number usable as NumericDate: not a bool, finite, and not a huge integer (10**400 parses)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < 2**53
    return isinstance(value, float) and math.isfinite(value)


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
        if settings.auth_mode != "dev" and not settings.jwt_audience:
            # Without an audience check, any token the identity provider mints for any other service (billing,
            # a mobile app) is accepted here.
            if not settings.jwt_audience_not_required:
                raise SystemExit(
                    "JWT_AUDIENCE is required with AUTH_MODE=jwks (set JWT_AUDIENCE_NOT_REQUIRED=1 to accept "
                    "tokens minted for any audience)"
                )
            logger.warning("JWT_AUDIENCE_NOT_REQUIRED=1: tokens for any audience of the identity provider are accepted")

    def verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("bearer token too long")
        try:
            signing_key = self.jwks.get_signing_key_from_jwt(token)
            # The key decides the algorithm, not the token: a header saying RS256 on an EC key is refused here
            # rather than reaching the crypto library with a key of the wrong type.
            algorithm = jwt.get_unverified_header(token).get("alg")
            if algorithm not in self.algorithms or _KEY_TYPES.get(str(algorithm)[:2]) != signing_key.key_type:
                raise Unauthenticated(f"token algorithm {algorithm!r} does not match its {signing_key.key_type} key")
            claims = jwt.decode(
                token,
                signing_key.key,
                algorithms=[algorithm],
                issuer=self.issuer or None,
                audience=self.settings.jwt_audience or None,
                leeway=LEEWAY_SEC,
                options={"require": ["exp", "iat", "sub"], "verify_aud": bool(self.settings.jwt_audience)},
            )
        except Unauthenticated:
            raise
        except jwt.PyJWKClientConnectionError as exc:
            # The identity provider is unreachable: not the token's fault, and not a reason to drop it.
            logger.warning("cannot fetch the signing keys from JWKS_URL: {}", exc)
            raise Unavailable("the identity provider's signing keys cannot be fetched; retry later") from exc
        except Exception as exc:
            # Whatever a malformed token makes PyJWT or the crypto library raise (TypeError, KeyError, binascii
            # errors...), the answer is a 401, never a 500.
            raise Unauthenticated(f"invalid bearer token: {type(exc).__name__}: {exc}") from exc
        self._check_claims(claims)
        return Principal(
            subject=claims["sub"],
            tenants=_string_list(claims, self.settings.jwt_tenants_claim),
            roles=_string_list(claims, self.settings.jwt_roles_claim),
        )

    def _check_claims(self, claims: Any) -> None:
        if not isinstance(claims, dict):
            raise Unauthenticated("token claims are not an object")
        for name in ("exp", "iat", "nbf"):
            if name in claims and not _is_number(claims[name]):
                raise Unauthenticated(f"claim {name!r} must be a number")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 256:
            raise Unauthenticated("claim 'sub' must be a non-empty string")
        lifetime = claims["exp"] - claims["iat"]
        if lifetime > self.settings.jwt_max_lifetime_sec:
            raise Unauthenticated(
                f"token lifetime {lifetime:.0f}s exceeds JWT_MAX_LIFETIME_SEC={self.settings.jwt_max_lifetime_sec}"
            )


class BearerAuth(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        values = connection.headers.getall("authorization", [])
        if len(values) > 1:
            # Which copy a proxy checked and which one we would verify need not be the same.
            raise Unauthenticated("more than one Authorization header")
        scheme, _, token = (values[0] if values else "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("an `Authorization: Bearer <token>` header is required")
        verifier: TokenVerifier = connection.app.state.verifier
        principal = verifier.verify(token.strip())
        # The request's own task runs the handler after this: its transactions name the actor (sql/0070).
        current_actor.set(principal.subject)
        return AuthenticationResult(user=principal, auth=token)


def require(role: str):
    """Guard: the caller's token carries ``role`` (or a higher one)."""

    # async: Litestar runs a sync guard in a worker thread, a handoff that cost ~10% of a create's CPU.
    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        if not connection.user.has_role(role):
            raise Forbidden(f"requires role {role}")

    guard.role = role  # type: ignore[attr-defined]  # read by the route-table tests
    return guard


TENANT_HEADER = HeaderParameter(
    name="X-Tenant-Id",
    required=True,  # documented as required; checked below so that its absence is a problem naming the header
    description="The tenant the request acts on; the bearer token must grant it.",
)


def tenant_in_scope(request: Request, x_tenant_id: Annotated[str | None, TENANT_HEADER] = None) -> str:
    """The X-Tenant-Id of the request, which the caller's token must grant; the request counts against the
    tenant's and the caller's rate limits. (``x_tenant_id`` declares the header in the OpenAPI document; the
    raw headers are read so that a duplicated one is refused.)"""
    values = request.headers.getall("x-tenant-id", [])
    if not values or not values[0].strip():
        raise InvalidInput.field("X-Tenant-Id", "header is required")
    if len(values) > 1:
        # Proxies and frameworks disagree on which of two copies wins; serving one and logging the other would
        # make the records lie.
        raise InvalidInput.field("X-Tenant-Id", "must be sent once")
    tenant_id = check_tenant_id(values[0].strip())
    principal: Principal = request.user
    if not principal.may_access(tenant_id):
        raise Forbidden(f"token does not grant tenant {tenant_id}")
    request.scope["state"][TENANT_STATE_KEY] = tenant_id  # what the request log line names
    wait = rate_limit(request.app.state.rate_limits, principal, tenant_id, time.monotonic())
    if wait:
        raise TooManyRequests(wait)
    return tenant_id


def rate_limit(buckets: TokenBuckets, principal: Principal, tenant_id: str, now: float) -> float:
    """Take from the tenant's bucket and the caller's (token subject's) bucket; 0 or the seconds to wait.

    A token that grants ``*`` may name any tenant, so its requests never create a tenant's bucket (made-up names
    would mint fresh ones without end); they count against the subject's bucket, and against a tenant's only
    when that tenant is in use already.
    """
    explicit = tenant_id in principal.tenants
    return buckets.take_all((f"tenant:{tenant_id}", f"sub:{principal.subject}"), now, create=(explicit, True))


def actor_of(request: Request) -> str:
    """Who the audit trail names for a change: the token's ``sub``."""
    return request.user.subject or "(token without sub)"
