"""The HTTP side of schedctl: one request function, problem+json answers turned into :class:`ApiError`."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from schedctl.config import Profile

_TIMEOUT_SEC = 30


@dataclass
class ApiError(Exception):
    """A non-2xx answer, with the RFC 9457 fields the API sends."""

    status: int
    title: str
    detail: str = ""
    errors: list[dict[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.status} {self.title}" + (f": {self.detail}" if self.detail else "")]
        lines += [f"  {e.get('field', '?')}: {e.get('reason', '')}" for e in self.errors]
        return "\n".join(lines)


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]


class Client:
    def __init__(self, profile: Profile) -> None:
        self.profile = profile

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        url = self.profile.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        sent = {"Accept": "application/json, application/problem+json", **(headers or {})}
        if self.profile.token:
            sent["Authorization"] = f"Bearer {self.profile.token}"
        if self.profile.tenant:
            sent["X-Tenant-Id"] = self.profile.tenant
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT_SEC) as answer:
                return Response(answer.status, _decode(answer.read()), dict(answer.headers.items()))
        except urllib.error.HTTPError as exc:
            raise _problem(exc.code, exc.reason, exc.read()) from None
        except urllib.error.URLError as exc:
            raise ApiError(0, "Cannot reach the API", f"{url}: {exc.reason}") from None


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _problem(status: int, reason: str, raw: bytes) -> ApiError:
    body = _decode(raw)
    if isinstance(body, dict):
        errors = body.get("errors") if isinstance(body.get("errors"), list) else []
        return ApiError(status, str(body.get("title") or reason), str(body.get("detail") or ""), errors or [])
    return ApiError(status, str(reason), str(body or "")[:500])
