"""Everything that exists only with AUTH_MODE=dev: the local signing key (kept under DEV_DATA_DIR), its JWK Set
(which the API verifies dev tokens against, through the same path as production tokens), minting dev tokens
(`make token`, the `make run` banner, the tests) and `/dev/token`, which hands the console a token.

Nothing here is reachable unless AUTH_MODE=dev: the routes are registered only then, and production tokens come
from the identity provider.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from litestar import Response, get
from litestar.datastructures import State

from shared.settings import Settings

DEV_ISSUER = "scheduler-dev"
DEV_KEY_FILE = "dev-signing-key.pem"
DEV_KID = "dev"
DEV_TOKEN_PATH = "/dev/token"
DEV_TENANT = "demo"  # the tenant `make run` prints its example for
DEV_TOKEN_TTL_SEC = 8 * 3600


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


def dev_jwks(data_dir: Path) -> dict[str, Any]:
    """The dev key's public half as a JWK Set, as an identity provider would publish it."""
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(dev_private_key(data_dir).public_key()))
    return {"keys": [{**jwk, "kid": DEV_KID, "use": "sig", "alg": "ES256"}]}


def mint_dev_token(
    data_dir: Path, tenants: list[str], roles: list[str], ttl_sec: int = 86400, subject: str = "dev"
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


@get(DEV_TOKEN_PATH, include_in_schema=False, sync_to_thread=False)
def dev_token(state: State) -> Response[dict[str, object]]:
    """Dev mode only (never registered otherwise): an admin token for the demo tenant, like `make run` prints."""
    from api.auth import ADMIN  # api.auth imports this module

    settings: Settings = state.settings
    token = mint_dev_token(settings.dev_dir, [DEV_TENANT], [ADMIN], ttl_sec=DEV_TOKEN_TTL_SEC, subject="console")
    return Response({"token": token, "tenant": DEV_TENANT}, headers={"Cache-Control": "no-store"})
