"""HTTP webhook target: one shared aiohttp session; success is 2xx; what is retryable is decided here."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import msgspec

from shared.model import HttpTarget
from worker.fire import Delivered, DeliveryFailed, Fire, clean_text, utc_iso

MAX_RESPONSE_BYTES = 64 * 1024
CONNECT_TIMEOUT_SEC = 10.0
RETRYABLE_STATUS = {408, 429}
USER_AGENT = "scheduler/0.1"


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


class HttpSender:
    def __init__(self, session: aiohttp.ClientSession, limit: int) -> None:
        self.session = session
        # Requests beyond the pool's size wait here, before their timeout starts: a request must not time
        # out (and use up an attempt) while it was only queued behind others.
        self._slots = asyncio.Semaphore(limit)

    @staticmethod
    def new_session(limit: int) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, ttl_dns_cache=60)
        return aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT}, auto_decompress=True)

    async def send(self, fire: Fire) -> Delivered:
        target = fire.target
        assert isinstance(target, HttpTarget)
        spec = target.http
        body, content_type = request_body(target, fire.payload)
        headers = {
            **spec.headers,
            "Idempotency-Key": fire.key,
            "X-Scheduler-Schedule-Id": fire.schedule_id,
            "X-Scheduler-Run-Id": fire.run_id,
            "X-Scheduler-Scheduled-For": utc_iso(fire.scheduled_for),
        }
        if content_type and not any(k.lower() == "content-type" for k in spec.headers):
            headers["Content-Type"] = content_type
        timeout = aiohttp.ClientTimeout(total=spec.timeout_sec, sock_connect=min(CONNECT_TIMEOUT_SEC, spec.timeout_sec))
        try:
            async with (
                self._slots,
                self.session.request(
                    spec.method, spec.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
                ) as response,
            ):
                excerpt = await response.content.read(MAX_RESPONSE_BYTES)
                status = response.status
                retry_after = retry_after_seconds(response.headers.get("Retry-After"), datetime.now(UTC))
        except TimeoutError as exc:
            raise DeliveryFailed(f"timed out after {spec.timeout_sec:g}s", retryable=True) from exc
        except aiohttp.ClientError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        except asyncio.CancelledError:
            raise
        text = clean_text(excerpt.decode("utf-8", "replace"))
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
