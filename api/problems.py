"""The one place errors become HTTP responses: RFC 9457 problem details (application/problem+json).

Application errors carry their status and field problems; Litestar's own errors (malformed JSON, wrong types,
bad path/query parameters, oversize bodies) are rewritten into the same shape; anything else is a 500 that
reveals nothing of its cause to the client and is logged in full.
"""

from __future__ import annotations

import math
import re
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler
from loguru import logger

from api.strict_query import parameter_aliases
from shared.errors import (
    Conflict,
    FieldProblem,
    InvalidInput,
    Overloaded,
    SchedulerError,
    TooManyRequests,
    Unauthenticated,
)

PROBLEM_JSON = "application/problem+json"
TOO_DEEP = "JSON nested too deeply"
T = TypeVar("T")
_NAMED_FIELD = re.compile(r"(?P<what>unknown|missing required) field `(?P<field>[^`]+)`")
_MSGSPEC_PATH = re.compile(r"^(?P<message>.*?) - at `\$\.?(?P<path>[^`]*)`$", re.DOTALL)


def problem(status: int, title: str, detail: str, **extra: Any) -> Response[bytes]:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="scheduler"'
    return Response(msgspec.json.encode(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _errors(problems: list[FieldProblem]) -> list[dict[str, str]]:
    return [{"field": p.field, "reason": p.reason} for p in problems]


def _field_problem(item: dict[str, Any]) -> FieldProblem:
    """Litestar's ``{"message", "key", "source"}`` (key: a dotted path, or "data" for the body itself)."""
    message = str(item.get("message", "invalid value"))
    key = item.get("key")
    path = "" if key in (None, "data") else str(key)
    named = _NAMED_FIELD.search(message)
    if named:
        reason = "unknown field" if named.group("what") == "unknown" else "is required"
        return FieldProblem(".".join(p for p in (path, named.group("field")) if p), reason)
    return FieldProblem(path or str(item.get("source") or "body"), message)


def strict_body(raw: bytes, kind: type[T]) -> T:
    """Decode a JSON body without type coercion (Litestar's own decoding accepts "10" for an int)."""
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        match = _MSGSPEC_PATH.match(str(exc))
        message, path = (match.group("message"), match.group("path")) if match else (str(exc), "")
        field = _field_problem({"message": message, "key": re.sub(r"\[(\d+)\]", r".\1", path) or None})
        raise InvalidInput(field) from exc
    except msgspec.DecodeError as exc:
        raise InvalidInput.field("body", f"malformed JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidInput.field("body", TOO_DEEP) from exc


class _Items(msgspec.Struct, forbid_unknown_fields=True):
    items: list[msgspec.Raw]


def strict_items(raw: bytes, kind: type[T], max_items: int) -> list[T]:
    """Decode ``{"items": [...]}`` strictly, each item as ``kind``; every item's problem is named
    ``items[i].<field>`` (all of them, not just the first item's)."""
    envelope = strict_body(raw, _Items)
    if not envelope.items:
        raise InvalidInput.field("items", "must list at least one item")
    if len(envelope.items) > max_items:
        raise InvalidInput.field("items", f"lists {len(envelope.items)} items, at most {max_items} are allowed")
    decoded: list[T] = []
    problems: list[FieldProblem] = []
    for i, item in enumerate(envelope.items):
        try:
            decoded.append(strict_body(item, kind))
        except InvalidInput as exc:
            problems += [
                FieldProblem(f"items[{i}]" + (f".{p.field}" if p.field != "body" else ""), p.reason)
                for p in exc.problems
            ]
    if problems:
        raise InvalidInput(problems)
    return decoded


def handle_scheduler_error(_: Request, exc: SchedulerError) -> Response[bytes]:
    extra: dict[str, Any] = {}
    if isinstance(exc, InvalidInput):
        extra["errors"] = _errors(exc.problems)
    if isinstance(exc, Conflict) and exc.field:
        extra["errors"] = [{"field": exc.field, "reason": exc.detail}]
    if isinstance(exc, TooManyRequests | Overloaded):
        response = problem(exc.status, exc.title, exc.detail)
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_sec)))
        return response
    if isinstance(exc, Unauthenticated):
        # The reason a token failed helps an attacker more than a client: log it, answer generically.
        logger.info("unauthenticated: {}", exc.detail)
        return problem(exc.status, exc.title, "a valid bearer token is required")
    return problem(exc.status, exc.title, exc.detail, **extra)


def handle_validation(request: Request, exc: ValidationException) -> Response[bytes]:
    items = exc.extra if isinstance(exc.extra, list) else []
    problems = [_field_problem(item) for item in items if isinstance(item, dict)]
    handler = request.scope.get("route_handler") if request is not None else None
    if isinstance(handler, HTTPRouteHandler):
        aliases = parameter_aliases(handler)
        problems = [FieldProblem(aliases.get(p.field, p.field), p.reason) for p in problems]
    if not problems:
        problems = [FieldProblem("body", str(exc.detail))]
    first = problems[0]
    return problem(400, "Invalid request", f"{first.field}: {first.reason}", errors=_errors(problems))


def handle_http(_: Request, exc: HTTPException) -> Response[bytes]:
    detail = exc.detail if exc.status_code < 500 else "internal error"
    if exc.status_code >= 500:
        logger.opt(exception=exc).error("unhandled HTTP error")
    title = {404: "Not found", 405: "Method not allowed", 413: "Payload too large"}.get(exc.status_code, "Error")
    # A body Litestar could not decode (malformed JSON) is a 400 too: name the body, like every other 400.
    extra = {"errors": [{"field": "body", "reason": str(detail)}]} if exc.status_code == 400 else {}
    response = problem(exc.status_code, title, str(detail), **extra)
    response.headers.update(exc.headers or {})
    return response


def handle_too_deep(_: Request, exc: RecursionError) -> Response[bytes]:
    """msgspec gives up on JSON nested ~1000 deep with RecursionError, raised while Litestar decodes the body
    before any handler runs; nothing else in a request recurses that deep."""
    return problem(400, "Invalid request", f"body: {TOO_DEEP}", errors=[{"field": "body", "reason": TOO_DEEP}])


def handle_unexpected(request: Request, exc: Exception) -> Response[bytes]:
    logger.opt(exception=exc).error("unhandled error on {} {}", request.method, request.url.path)
    return problem(500, "Internal error", "internal error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    SchedulerError: handle_scheduler_error,
    ValidationException: handle_validation,
    HTTPException: handle_http,
    RecursionError: handle_too_deep,
    Exception: handle_unexpected,
}
