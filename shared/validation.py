"""Semantic checks msgspec's type decoding cannot express, each naming the offending field.

``check_schedule`` collects every problem, so a client fixes its request in one round trip.
"""

from __future__ import annotations

import contextlib
import fnmatch
import ipaddress
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from shared.errors import FieldProblem, InvalidInput
from shared.messaging.subjects import RESERVED_FIRST_TOKENS
from shared.model import (
    CronTrigger,
    EventTarget,
    FixedDelayTrigger,
    HttpTarget,
    Labels,
    OverlapPolicy,
    QueueTarget,
    RetryPolicy,
    RRuleTrigger,
    Target,
    Trigger,
)
from shared.timing.budget import Budget
from shared.timing.next_fire import anchor_trigger, compiled_cron, first_fire
from shared.timing.rrule import validate_rrule

MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_DELAY_SEC = 366 * 24 * 3600
MAX_LABELS = 64
MAX_HTTP_TIMEOUT_SEC = 300.0
MAX_CATCH_UP = 1000
MAX_HTTP_BODY = 256 * 1024

TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
# RFC 9110 token characters.
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# An escaped NUL in encoded JSON (\u0000 not itself escaped as \\u0000): jsonb cannot store it.
JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
# Headers the scheduler sets itself on every delivery.
RESERVED_HEADERS = {
    "idempotency-key",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
}


def check_tenant_id(value: str, field: str = "X-Tenant-Id") -> str:
    if not TENANT_ID.match(value):
        raise InvalidInput.field(field, "must be 1-64 characters of letters, digits, '.', '_', ':' or '-'")
    return value


def check_zone(tz: str, field: str = "tz") -> list[FieldProblem]:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return [FieldProblem(field, f"unknown IANA time zone {tz!r}")]
    return []


# Instants outside these years are mistakes, and near datetime's limits arithmetic would overflow.
EARLIEST_YEAR, LATEST_YEAR = 1970, 9000


def check_instant(value: datetime | None, field: str) -> list[FieldProblem]:
    if value is not None and not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        return [FieldProblem(field, f"must be between the years {EARLIEST_YEAR} and {LATEST_YEAR}")]
    return []


def check_trigger(
    trigger: Trigger, tz: str, now: datetime, field: str = "trigger", budget: Budget | None = None
) -> list[FieldProblem]:
    problems = check_instant(trigger.start_at, f"{field}.startAt") + check_instant(trigger.end_at, f"{field}.endAt")
    if problems:
        return problems
    if trigger.start_at is not None and trigger.end_at is not None and trigger.end_at <= trigger.start_at:
        problems.append(FieldProblem(f"{field}.endAt", "must be after startAt"))
    match trigger:
        case CronTrigger():
            try:
                compiled_cron(trigger.cron)
            except ValueError as exc:
                problems.append(FieldProblem(f"{field}.cron", str(exc)))
        case RRuleTrigger():
            try:
                validate_rrule(trigger.rrule)
            except ValueError as exc:
                problems.append(FieldProblem(f"{field}.rrule", str(exc)))
        case FixedDelayTrigger():
            if not 1 <= trigger.delay_sec <= MAX_DELAY_SEC:
                problems.append(FieldProblem(f"{field}.delaySec", f"must be between 1 and {MAX_DELAY_SEC}"))
    if problems or check_zone(tz):
        return problems
    # An expression that never fires (`0 0 30 2 *`, an UNTIL in the past) is almost surely a mistake.
    anchored = anchor_trigger(trigger, now)
    if isinstance(trigger, CronTrigger | RRuleTrigger) and first_fire(anchored, tz, now, budget=budget) is None:
        key = "cron" if isinstance(trigger, CronTrigger) else "rrule"
        problems.append(FieldProblem(f"{field}.{key}", "never fires (no occurrence after now within bounds)"))
    return problems


def check_target(target: Target, field: str = "target") -> list[FieldProblem]:
    match target:
        case EventTarget():
            return _check_subject(target.event_topic, f"{field}.eventTopic")
        case QueueTarget():
            return _check_subject(target.queue.topic, f"{field}.queue.topic")
        case HttpTarget():
            return _check_http(target, f"{field}.http")


# --- NATS topics ------------------------------------------------------------------------------------------
# A topic is relative to the tenant's namespace (shared/messaging/subjects.py puts it under the tenant's prefix);
# these rules keep it a plain subject there. Tokens are the characters NATS documents as safe everywhere
# (subjects, permissions, stream filters): letters, digits and a few marks; never wildcards, `$`, whitespace.
MAX_TOPIC = 200
TOPIC_TOKEN = re.compile(r"^[A-Za-z0-9_:=@+~-]+$")


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be a tenant's topic, or None."""
    if not topic:
        return "must not be empty"
    if len(topic) > MAX_TOPIC:
        return f"at most {MAX_TOPIC} characters"
    if CONTROL.search(topic) or any(c.isspace() for c in topic):
        return "must not contain whitespace or control characters"
    if "*" in topic or ">" in topic:
        return "must not contain wildcards (* >): the scheduler publishes to one subject"
    if topic.startswith("$"):
        return "must not be a system subject ($JS, $SYS, $KV, ...)"
    if topic.startswith(".") or topic.endswith("."):
        return "must not start or end with '.'"
    tokens = topic.split(".")
    if "" in tokens:
        return "must not contain empty tokens ('..')"
    if tokens[0].lower() in RESERVED_FIRST_TOKENS:
        return (
            f"must not start with {tokens[0]!r}: reserved ({', '.join(sorted(RESERVED_FIRST_TOKENS))}); topics are "
            "relative to the tenant's namespace"
        )
    for token in tokens:
        if not TOPIC_TOKEN.match(token):
            return f"token {token!r} may hold only letters, digits and _ : = @ + ~ -"
    return None


def _check_subject(subject: str, field: str) -> list[FieldProblem]:
    problem = topic_problem(subject)
    return [FieldProblem(field, problem)] if problem else []


def _check_http(target: HttpTarget, field: str) -> list[FieldProblem]:
    spec = target.http
    problems = []
    url_problem = check_http_url(spec.url)
    if url_problem:
        problems.append(FieldProblem(f"{field}.url", url_problem))
    if len(spec.headers) + len(spec.secret_headers) > 50:
        problems.append(FieldProblem(f"{field}.headers", "at most 50 headers"))
    problems += _check_headers(spec.headers, f"{field}.headers", 8192)
    # Stored secret values are sealed (base64, a third longer) and are validated again on every update.
    problems += _check_headers(spec.secret_headers, f"{field}.secretHeaders", 12 * 1024)
    for name in {n.lower() for n in spec.headers} & {n.lower() for n in spec.secret_headers}:
        problems.append(FieldProblem(f"{field}.secretHeaders.{name}", "is also in headers"))
    if spec.body is not None:
        problems += check_json(spec.body, MAX_HTTP_BODY, f"{field}.body")
    if not 0 < spec.timeout_sec <= MAX_HTTP_TIMEOUT_SEC:
        problems.append(FieldProblem(f"{field}.timeoutSec", f"must be > 0 and <= {MAX_HTTP_TIMEOUT_SEC:g}"))
    return problems


def _check_headers(headers: dict[str, str], field: str, max_value: int) -> list[FieldProblem]:
    problems = []
    for name, value in headers.items():
        if not HEADER_NAME.match(name):
            problems.append(FieldProblem(f"{field}.{name}", "is not a legal header name"))
        elif name.lower() in RESERVED_HEADERS:
            problems.append(FieldProblem(f"{field}.{name}", "is set by the scheduler"))
        elif CONTROL.sub("", value.replace("\t", "")) != value.replace("\t", "") or len(value) > max_value:
            problems.append(FieldProblem(f"{field}.{name}", "value too long or with control characters"))
    return problems


def check_name(name: str, field: str = "name") -> list[FieldProblem]:
    if not name.strip() or len(name) > MAX_NAME or CONTROL.search(name):
        return [FieldProblem(field, f"must be 1-{MAX_NAME} characters without control characters")]
    return []


def check_description(description: str | None) -> list[FieldProblem]:
    if description is not None and (len(description) > MAX_DESCRIPTION or "\x00" in description):
        return [FieldProblem("description", f"at most {MAX_DESCRIPTION} characters, without NUL")]
    return []


def check_json(value: Any, max_bytes: int, field: str) -> list[FieldProblem]:
    if json_depth(value) > MAX_JSON_DEPTH:
        return [FieldProblem(field, f"is nested more than {MAX_JSON_DEPTH} levels deep")]
    encoded = msgspec.json.encode(value)
    if len(encoded) > max_bytes:
        return [FieldProblem(field, f"is {len(encoded)} bytes encoded; the limit is {max_bytes}")]
    if JSON_NUL.search(encoded):
        return [FieldProblem(field, "must not contain NUL characters (\\u0000): Postgres cannot store them")]
    return []


def check_payload(payload: Any, max_bytes: int) -> list[FieldProblem]:
    return check_json(payload, max_bytes, "payload")


def check_labels(labels: Labels) -> list[FieldProblem]:
    if len(labels) > MAX_LABELS:
        return [FieldProblem("labels", f"at most {MAX_LABELS} labels")]
    problems = []
    for key, value in labels.items():
        if not LABEL_KEY.match(key):
            problems.append(FieldProblem(f"labels.{key}", "key must be 1-63 of letters, digits, '.', '_', '/', '-'"))
        elif len(value) > 256 or CONTROL.search(value):
            problems.append(FieldProblem(f"labels.{key}", "value must be <= 256 characters without control characters"))
    return problems


def check_catch_up_limit(limit: int) -> list[FieldProblem]:
    if not 1 <= limit <= MAX_CATCH_UP:
        return [FieldProblem("catchUpLimit", f"must be between 1 and {MAX_CATCH_UP}")]
    return []


def check_retry(retry: RetryPolicy) -> list[FieldProblem]:
    problems = []
    if not 1 <= retry.max_attempts <= 20:
        problems.append(FieldProblem("retry.maxAttempts", "must be between 1 and 20"))
    if not 0 < retry.backoff_sec <= 3600:
        problems.append(FieldProblem("retry.backoffSec", "must be > 0 and <= 3600"))
    if not retry.backoff_sec <= retry.max_backoff_sec <= 86400:
        problems.append(FieldProblem("retry.maxBackoffSec", "must be >= backoffSec and <= 86400"))
    return problems


def check_query_text(value: str | None, field: str) -> None:
    if value is not None and CONTROL.search(value):
        raise InvalidInput.field(field, "must not contain control characters")


def raise_if(problems: list[FieldProblem]) -> None:
    if problems:
        raise InvalidInput(problems)


# --- HTTP targets: URLs and credential headers (issue 8) -------------------------------------------------------
# A URL the API stores must mean one thing to every parser on the way (ours, yarl in the worker, proxies): the
# forms parsers disagree on (backslashes, userinfo, numeric or hex IPv4 shorthands, zone ids, odd ports) are
# refused rather than normalised.

MAX_URL = 2048
MAX_JSON_DEPTH = 64
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_NUMERIC_LABEL = re.compile(r"^(0[xX][0-9A-Fa-f]*|[0-9]+)$")
_DOTTED_QUAD = re.compile(
    r"^(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}$"
)
_PORT = re.compile(r"^[0-9]{1,5}$")
_WHITESPACE = re.compile(r"\s")

DEFAULT_CREDENTIAL_HEADERS = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "*token*",
    "*secret*",
    "*key*",
    "*password*",
    "*passwd*",
    "*credential*",
    "*session*",
    "*signature*",
)


def check_http_url(url: str) -> str | None:
    """Why ``url`` is not an acceptable HTTP target URL, or None."""
    if len(url) > MAX_URL:
        return f"must be at most {MAX_URL} characters"
    if CONTROL.search(url) or _WHITESPACE.search(url):
        return "must not contain whitespace or control characters"
    if "\\" in url:
        return "must not contain backslashes"
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL" and the like
        return f"is not a valid URL: {exc}"
    if parts.scheme.lower() not in ("http", "https") or not url.lower().startswith(parts.scheme.lower() + "://"):
        return "must be an absolute http:// or https:// URL"
    netloc = parts.netloc
    if "@" in netloc:
        return "must not contain user info (user:password@); send credentials in secretHeaders"
    host, port = _split_host_port(netloc)
    if port is not None and (not _PORT.match(port) or not 1 <= int(port) <= 65535):
        return f"port {port!r} is not a number between 1 and 65535"
    if not host:
        return "must name a host"
    return _host_problem(host)


def _split_host_port(netloc: str) -> tuple[str, str | None]:
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            return "", None
        rest = netloc[end + 1 :]
        if rest and not rest.startswith(":"):
            return "", None
        return netloc[: end + 1], rest[1:] if rest else None
    host, sep, port = netloc.rpartition(":")
    return (host, port) if sep else (netloc, None)


def _host_problem(host: str) -> str | None:
    if host.startswith("["):
        literal = host[1:-1]
        if "%" in literal:
            return "must not carry an IPv6 zone id"
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            return f"{host} is not an IPv6 address"
        return None
    name = host[:-1] if host.endswith(".") else host
    try:
        ascii_name = name.encode("idna").decode("ascii") if not name.isascii() else name
    except UnicodeError:
        return f"host {host!r} is not a valid internationalised domain name"
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        return f"host {host!r} is not a DNS name or an IP address"
    for label in labels:
        if label.lower().startswith("xn--"):
            try:
                label.encode("ascii").decode("idna")
            except UnicodeError:
                return f"host {host!r} has an invalid punycode label {label!r}"
    # WHATWG URL parsers read a name whose last label is numeric as an IPv4 address (127.1, 0x7f.1, 2130706433):
    # only the canonical dotted quad is accepted, so that every layer agrees on which address it is.
    if _NUMERIC_LABEL.match(labels[-1]) and not _DOTTED_QUAD.match(ascii_name):
        return f"host {host!r} is not a canonical IPv4 address (a.b.c.d)"
    return None


def json_depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value (a scalar is 0), without recursion."""
    depth, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth = max(depth, level)
        if depth > MAX_JSON_DEPTH:
            return depth
        stack.extend((child, level + 1) for child in children)
    return depth


def parse_header_patterns(text: str) -> tuple[str, ...]:
    return tuple(p.strip().lower() for p in text.split(",") if p.strip())


def is_credential_header(name: str, patterns: tuple[str, ...]) -> bool:
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, pattern) for pattern in patterns)


def check_credential_headers(target: Target, patterns: tuple[str, ...], field: str = "target") -> list[FieldProblem]:
    """Plain headers are shown to every viewer: credential-bearing names belong in ``secretHeaders``."""
    if not isinstance(target, HttpTarget):
        return []
    return [
        FieldProblem(
            f"{field}.http.headers.{name}",
            f"carries a credential and would be readable by every viewer: move it to {field}.http.secretHeaders "
            "(write-only, sealed at rest)",
        )
        for name in target.http.headers
        if is_credential_header(name, patterns)
    ]


_DEFAULT_PORTS = {"http": 80, "https": 443}


def url_origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) as RFC 6454 compares them: lower case, IDN hosts in punycode, default ports filled in."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return "", url, -1  # never equal to a valid URL's origin
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    with contextlib.suppress(UnicodeError):
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        port = -1
    return scheme, host.lower(), port


# --- lifecycle events and pause on failure (issue 12) ---------------------------------------------------

MAX_PAUSE_ON_FAILURE = 1000


def check_pause_on_failure(count: int | None) -> list[FieldProblem]:
    if count is not None and not 1 <= count <= MAX_PAUSE_ON_FAILURE:
        return [FieldProblem("pauseOnFailure", f"must be null or between 1 and {MAX_PAUSE_ON_FAILURE}")]
    return []


MAX_JITTER_SEC = 24 * 3600


def check_jitter(jitter_sec: int | None, trigger: object) -> list[FieldProblem]:
    if jitter_sec is None:
        return []
    if not 0 <= jitter_sec <= MAX_JITTER_SEC:
        return [FieldProblem("jitterSec", f"must be null or between 0 and {MAX_JITTER_SEC}")]
    if jitter_sec and type(trigger).__name__ == "FixedDelayTrigger":
        return [FieldProblem("jitterSec", "does not apply to FIXED_DELAY (its delay counts from the last run)")]
    return []


def check_overlap(policy: OverlapPolicy, trigger: Trigger, target: Target) -> list[FieldProblem]:
    if policy is OverlapPolicy.ALLOW:
        return []
    if isinstance(trigger, FixedDelayTrigger):
        return [
            FieldProblem("overlap", "must be ALLOW for FIXED_DELAY: its runs never overlap (each delay counts from "
                         "the end of the previous run)")
        ]  # fmt: skip
    if policy is OverlapPolicy.CANCEL_OTHER and isinstance(target, EventTarget):
        return [
            FieldProblem("overlap", "CANCEL_OTHER needs a target whose run can be cancelled (HTTP, QUEUE): an EVENT "
                         "is delivered by one publish")
        ]  # fmt: skip
    return []
