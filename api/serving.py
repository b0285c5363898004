"""How the API meets the network: the HTTP protocol with bounded request headers, and the ASGI layer around the
Litestar app (request log line and metrics for every answer, security headers, header limits).

Header limits are enforced twice on purpose. The protocol (used by ``python -m api``, hence by ``make run``, the
image and the chart) refuses oversize headers while they arrive, so a 64 MB header costs at most the limit plus one
read of memory; the ASGI check answers the same 431 under any other server (tests, granian, ...).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

PROBLEM_JSON = b"application/problem+json"
# For JSON answers: nothing in them may be run, framed or loaded as a page's resource.
API_CSP = b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# For HTML pages (API docs, a console): scripts and styles from this origin only, nothing from elsewhere. Inline
# scripts stay allowed because Litestar's docs pages start Swagger UI / ReDoc from one; these pages render no
# tenant data into their HTML.
HTML_CSP = (
    b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    b"script-src 'self' 'unsafe-inline'; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; "
    b"form-action 'self'"
)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def header_total_limit(max_header_bytes: int) -> int:
    return max_header_bytes * 4


def header_problem(headers: list[tuple[bytes, bytes]], max_header_bytes: int) -> str | None:
    """Why the request's headers are too large, or None."""
    total = 0
    for name, value in headers:
        size = len(name) + len(value)
        if size > max_header_bytes:
            return f"header {name[:64].decode('latin-1')!r} is {size} bytes; the limit is {max_header_bytes}"
        total += size
    limit = header_total_limit(max_header_bytes)
    if total > limit:
        return f"the request's headers are {total} bytes; the limit is {limit}"
    return None


def problem_bytes(status: int, title: str, detail: str) -> bytes:
    return msgspec.json.encode({"type": "about:blank", "title": title, "status": status, "detail": detail})


def security_headers(app: ASGIApp, max_header_bytes: int) -> ASGIApp:
    """Security headers on every answer, ``Cache-Control: no-store`` unless a route set its own caching (answers
    carry tenants' data and one-time secrets), and the 431 for oversize request headers."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        too_large = header_problem(list(scope.get("headers") or []), max_header_bytes)
        if too_large:
            body = problem_bytes(431, "Request header fields too large", too_large)
            headers = [(b"content-type", PROBLEM_JSON), (b"content-length", str(len(body)).encode())]
            start: Message = {"type": "http.response.start", "status": 431, "headers": headers}
            await send_with_headers(send)(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        await app(scope, receive, send_with_headers(send))

    return middleware


def send_with_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers") or [])
            names = {name.lower() for name, _ in headers}
            content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
            extra = [(n, v) for n, v in SECURITY_HEADERS if n not in names]
            if b"content-security-policy" not in names:
                extra.append((b"content-security-policy", HTML_CSP if b"text/html" in content_type else API_CSP))
            if b"cache-control" not in names:
                extra.append((b"cache-control", b"no-store"))
            message = {**message, "headers": headers + extra}
        await send(message)

    return wrapped


class BoundedHeadersProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing with 431 a request whose headers exceed the limits as they arrive
    (uvicorn itself has no limit with httptools). Configure with :func:`bounded_headers_protocol`."""

    max_header_bytes = 16 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_headers = True
        self._header_bytes = 0
        self._raw_header_bytes = 0
        self._rejected = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0
        self._raw_header_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        self._header_bytes += size
        if size > self.max_header_bytes or self._header_bytes > header_total_limit(self.max_header_bytes):
            self._reject()
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        if self._rejected:
            return
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        super().data_received(data)
        # Bytes still belonging to the header section (the parser keeps an unfinished header in memory).
        if self._in_headers and not self._rejected:
            self._raw_header_bytes += len(data)
            if self._raw_header_bytes > header_total_limit(self.max_header_bytes) + self.max_header_bytes:
                self._reject()

    def on_url(self, url: bytes) -> None:
        if not self._rejected:
            super().on_url(url)

    def on_body(self, body: bytes) -> None:
        if not self._rejected:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._rejected:
            super().on_message_complete()

    def _reject(self) -> None:
        if self._rejected:
            return
        self._rejected = True
        body = problem_bytes(431, "Request header fields too large", "the request's headers are too large")
        head = [b"HTTP/1.1 431 Request Header Fields Too Large"]
        head += [b"content-type: " + PROBLEM_JSON, b"content-length: " + str(len(body)).encode()]
        head += [n + b": " + v for n, v in SECURITY_HEADERS] + [b"cache-control: no-store", b"connection: close"]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()


def bounded_headers_protocol(max_header_bytes: int) -> type[BoundedHeadersProtocol]:
    return type("BoundedHeadersProtocol", (BoundedHeadersProtocol,), {"max_header_bytes": max_header_bytes})
