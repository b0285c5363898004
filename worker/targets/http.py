"""HTTP webhook target: one shared aiohttp session; success is 2xx; what is retryable is decided here."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import socket
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import aiohttp.abc
import msgspec
import yarl

from shared.model import HttpSpec, HttpTarget
from shared.netguard import Network, is_ip_literal, refusal
from shared.secrets import WEBHOOK_SECRET_PREFIX, KeyRing, SecretsError, open_target, redact
from shared.tracing import inject
from shared.validation import DEFAULT_CREDENTIAL_HEADERS, is_credential_header, url_origin
from worker.fire import Delivered, DeliveryFailed, Fire, clean_text, utc_iso

MAX_RESPONSE_BYTES = 64 * 1024
MAX_REDIRECTS = 5
REDIRECTS = {301, 302, 303, 307, 308}
CONNECT_TIMEOUT_SEC = 10.0
RETRYABLE_STATUS = {408, 429}
USER_AGENT = "scheduler/0.1"
SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class _Prepared:
    """A delivery's headers, and what of them is secret: never sent to another origin, never stored."""

    __slots__ = ("headers", "secret_names", "secret_values")

    def __init__(self, headers: dict[str, str], secret_names: set[str], secret_values: list[str]) -> None:
        self.headers = headers
        self.secret_names = secret_names
        self.secret_values = secret_values

    def for_origin(self, same_origin: bool) -> dict[str, str]:
        if same_origin:
            return self.headers
        # As browsers and HTTP clients do on a cross-origin redirect, and more: secret headers, the webhook
        # signature and plain headers named like a credential stay with the origin the schedule names.
        return {name: value for name, value in self.headers.items() if name.lower() not in self.secret_names}


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def request_body(target: HttpTarget, payload: msgspec.Raw) -> tuple[bytes | None, str | None]:
    """The target's own body if it has one, else the schedule's payload, as JSON; none for GET."""
    spec = target.http
    if spec.method == "GET":
        return None, None
    if isinstance(spec.body, str):
        return spec.body.encode(), "text/plain; charset=utf-8"
    if spec.body is not None:
        return msgspec.json.encode(spec.body), "application/json"
    return bytes(payload), "application/json"


def webhook_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks: ``v1,`` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))."""
    key = base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _cut(text: str, limit: int) -> str:
    """At most ``limit`` bytes of UTF-8, on a character boundary."""
    if limit <= 0:
        return ""
    encoded = text.encode()
    return text if len(encoded) <= limit else encoded[:limit].decode("utf-8", "ignore")


class RefusedAddress(OSError):
    """The SSRF guard refused every address of a host."""


class GuardedResolver(aiohttp.abc.AbstractResolver):
    """Resolves like aiohttp's default, then drops internal addresses (checked where the connection is made,
    so a name that resolved outward when the schedule was stored and inward now is still refused)."""

    def __init__(self, allowed: tuple[Network, ...]) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._allowed = allowed

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        infos = await self._inner.resolve(host, port, family)
        reasons = [refusal(info["host"].split("%")[0], self._allowed) for info in infos]
        usable = [info for info, reason in zip(infos, reasons, strict=True) if reason is None]
        if not usable:
            raise RefusedAddress(f"{host}: {reasons[0] if reasons else 'no address'} (see HTTP_TARGET_ALLOW_CIDRS)")
        return usable

    async def close(self) -> None:
        await self._inner.close()


class HttpSender:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        limit: int,
        keys: KeyRing,
        allowed: tuple[Network, ...],
        excerpt_bytes: int = 1024,
    ) -> None:
        self.session = session
        self.keys = keys
        self.allowed = allowed
        # How much of a response a run keeps (RUN_RESPONSE_EXCERPT_BYTES), after redaction.
        self.excerpt_bytes = excerpt_bytes
        # Requests beyond the pool's size wait here, before their timeout starts: a request must not time
        # out (and use up an attempt) while it was only queued behind others.
        self._slots = asyncio.Semaphore(limit)

    @staticmethod
    def new_session(limit: int, allowed: tuple[Network, ...]) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=limit, limit_per_host=limit, ttl_dns_cache=60, resolver=GuardedResolver(allowed)
        )
        return aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT}, auto_decompress=True)

    def _headers(self, fire: Fire, spec: HttpSpec, body: bytes | None, content_type: str | None) -> _Prepared:
        opened = open_target(fire.target, self.keys, fire.schedule_id)
        assert isinstance(opened, HttpTarget)
        secret_names = {name.lower() for name in opened.http.secret_headers} | set(SIGNATURE_HEADERS)
        # Stored before credential names were refused in plain headers (or allowed by CREDENTIAL_HEADER_PATTERNS).
        secret_names |= {n.lower() for n in spec.headers if is_credential_header(n, DEFAULT_CREDENTIAL_HEADERS)}
        secret_values = list(opened.http.secret_headers.values())
        headers = {
            **spec.headers,
            **opened.http.secret_headers,
            "Idempotency-Key": fire.key,
            "X-Scheduler-Schedule-Id": fire.schedule_id,
            "X-Scheduler-Run-Id": fire.run_id,
            "X-Scheduler-Scheduled-For": utc_iso(fire.scheduled_for),
        }
        if content_type and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = content_type
        inject(headers)  # the receiver's spans join this delivery's trace
        if fire.webhook_secret:
            timestamp = int(time.time())
            secret = self.keys.open(fire.webhook_secret, fire.schedule_id)
            headers["webhook-id"] = fire.key
            headers["webhook-timestamp"] = str(timestamp)
            headers["webhook-signature"] = webhook_signature(secret, fire.key, timestamp, body or b"")
            raw_key = secret.removeprefix(WEBHOOK_SECRET_PREFIX)
            secret_values += [secret, raw_key, headers["webhook-signature"].removeprefix("v1,")]
        return _Prepared(headers, secret_names, secret_values)

    async def send(self, fire: Fire) -> Delivered:
        target = fire.target
        assert isinstance(target, HttpTarget)
        spec = target.http
        body, content_type = request_body(target, fire.payload)
        try:
            prepared = self._headers(fire, spec, body, content_type)
        except SecretsError as exc:
            raise DeliveryFailed(f"cannot open the schedule's secrets: {exc}", retryable=False) from exc
        timeout = aiohttp.ClientTimeout(total=spec.timeout_sec, sock_connect=min(CONNECT_TIMEOUT_SEC, spec.timeout_sec))
        try:
            async with self._slots, asyncio.timeout(spec.timeout_sec):
                status, excerpt, retry_after = await self._exchange(spec, prepared, body, timeout)
        except TimeoutError as exc:
            raise DeliveryFailed(f"timed out after {spec.timeout_sec:g}s", retryable=True) from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusedAddress):
                raise DeliveryFailed(f"refused by the SSRF guard: {exc.os_error}", retryable=False) from exc
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        except aiohttp.ClientError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        # Redacted before it is cut, so that no secret survives half in the excerpt; a target echoing our request
        # headers must not hand them to every viewer of the run.
        text = clean_text(redact(excerpt.decode("utf-8", "replace"), prepared.secret_values))
        text = _cut(text, self.excerpt_bytes)
        detail: dict[str, Any] = {"status": status, "response": text}
        if 200 <= status < 300:
            return Delivered(detail, http_status=status)
        retryable = status in RETRYABLE_STATUS or status >= 500
        raise DeliveryFailed(
            f"HTTP {status}: {text[:200]}",
            retryable=retryable,
            http_status=status,
            retry_after=retry_after if retryable else None,
        )

    async def _exchange(
        self, spec: HttpSpec, prepared: _Prepared, body: bytes | None, timeout: aiohttp.ClientTimeout
    ) -> tuple[int, bytes, float | None]:
        """One request, following redirects only when the target asks for it, checking every hop; secrets go
        only to the schedule's own origin."""
        method, url = spec.method, spec.url
        home = url_origin(spec.url)
        for _ in range(MAX_REDIRECTS + 1):
            self._check_literal(url)
            headers = prepared.for_origin(url_origin(url) == home)
            async with self.session.request(
                method, url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                location = response.headers.get("Location")
                if spec.follow_redirects and response.status in REDIRECTS and location:
                    url = str(response.url.join(yarl.URL(location)))
                    if response.status in (301, 302, 303) and method != "GET":
                        method, body = "GET", None  # as browsers do; 307/308 keep method and body
                    continue
                excerpt = await response.content.read(MAX_RESPONSE_BYTES)
                retry_after = retry_after_seconds(response.headers.get("Retry-After"), datetime.now(UTC))
                return response.status, excerpt, retry_after
        raise DeliveryFailed(f"more than {MAX_REDIRECTS} redirects", retryable=False)

    def _check_literal(self, url: str) -> None:
        """An IP address in the URL never reaches the resolver, so it is checked here."""
        host = yarl.URL(url).host or ""
        if is_ip_literal(host):
            reason = refusal(host.strip("[]"), self.allowed)
            if reason:
                raise DeliveryFailed(f"refused by the SSRF guard: {reason}", retryable=False)
