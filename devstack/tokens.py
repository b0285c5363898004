"""Dev bearer tokens, signed with the dev key the API trusts in AUTH_MODE=dev (`make token`, the `make run` banner
and the tests). Never imported by the API or the workers: production tokens come from the identity provider."""

from __future__ import annotations

import time
from pathlib import Path

import jwt

from api.auth import DEV_ISSUER, DEV_KID, dev_private_key


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
