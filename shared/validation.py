"""Semantic checks msgspec's type decoding cannot express, each naming the offending field.

``check_schedule`` collects every problem, so a client fixes its request in one round trip.
"""

from __future__ import annotations

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
    QueueTarget,
    RetryPolicy,
    RRuleTrigger,
    Target,
    Trigger,
)
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


def check_trigger(trigger: Trigger, tz: str, now: datetime, field: str = "trigger") -> list[FieldProblem]:
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
    if isinstance(trigger, CronTrigger | RRuleTrigger) and first_fire(anchor_trigger(trigger, now), tz, now) is None:
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
    parts = urlsplit(spec.url)
    if len(spec.url) > 2048 or parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(FieldProblem(f"{field}.url", "must be an absolute http:// or https:// URL"))
    elif CONTROL.search(spec.url) or " " in spec.url:
        problems.append(FieldProblem(f"{field}.url", "must not contain spaces or control characters"))
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
