"""Where schedctl finds the API URL, the token and the tenant: flags, then the environment, then the file
``schedctl login`` wrote (``$XDG_CONFIG_HOME/schedctl/config.json``, mode 0600)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:3080"


@dataclass(frozen=True, slots=True)
class Profile:
    url: str
    token: str
    tenant: str


def config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "schedctl" / "config.json"


def load(env: Mapping[str, str], url: str | None, token: str | None, tenant: str | None) -> Profile:
    stored: dict[str, str] = {}
    path = config_path(env)
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = {}
    return Profile(
        url=(url or env.get("SCHEDCTL_URL") or stored.get("url") or DEFAULT_URL).rstrip("/"),
        token=token or env.get("SCHEDCTL_TOKEN") or env.get("TOKEN") or stored.get("token") or "",
        tenant=tenant or env.get("SCHEDCTL_TENANT") or stored.get("tenant") or "",
    )


def save(env: Mapping[str, str], profile: Profile) -> Path:
    path = config_path(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 before anything is written: the file holds a bearer token.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": profile.url, "token": profile.token, "tenant": profile.tenant}, handle)
    path.chmod(0o600)
    return path
