"""Where each tenant's messages go on NATS: pure functions of the tenant, the topic and the configured prefixes.

A tenant names topics relative to its own namespace; nothing it can store leaves that namespace:

* events (EVENT targets), dead letters and the scheduler's notices: ``tenants.<tenant>.<topic>``, all captured
  by one JetStream stream per tenant (``tenants.<tenant>.>``);
* queues (QUEUE targets): ``queues.<tenant>.<topic>``, one work-queue stream per tenant and topic.

The two spaces never overlap (JetStream refuses streams with overlapping subjects, and an event stream over the
whole event namespace would otherwise swallow the work queues). Tenant ids may contain dots: they are encoded
as one subject token (``.`` -> ``~``, a character tenant ids cannot hold), so ``a.b`` and ``a`` + topic ``b...``
stay apart.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

TENANT = "{tenant}"
# Tokens of configured subjects (prefixes, the operator's dead-letter subject): no wildcards, whitespace or `$`.
_SUBJECT_TOKEN = re.compile(r"^[A-Za-z0-9_:=@+~%-]+$")
_STREAM_CHARS = re.compile(r"[^A-Za-z0-9_-]")
DEADLETTER = "deadletter"
# The first topic tokens the scheduler keeps for itself inside a tenant's namespace (`tenants.t1.deadletter`,
# `tenants.t1.scheduler.…` for its notices), and first tokens that only look like an escape (`tenants.t2.x`
# lands in `tenants.t1.tenants.t2.x`, harmless, but surely not what was meant).
RESERVED_FIRST_TOKENS = frozenset({DEADLETTER, "scheduler", "_inbox", "tenants", "queues"})


def tenant_token(tenant_id: str) -> str:
    """The tenant id as a single subject token (injective: tenant ids never contain ``~``)."""
    return tenant_id.replace(".", "~")


def _sanitized(text: str, limit: int) -> str:
    return _STREAM_CHARS.sub("_", text)[:limit]


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _tokens(pattern: str) -> list[str]:
    return pattern.split(".")


def _overlap(a: list[str], b: list[str]) -> bool:
    """Whether two token patterns (``*`` one token, ``>`` the rest) can match one subject."""
    for x, y in zip(a, b, strict=False):
        if x == ">" or y == ">":
            return True
        if x != y and "*" not in (x, y):
            return False
    return len(a) == len(b)


@dataclass(frozen=True, slots=True)
class Namespace:
    """The configured layout: NATS_SUBJECT_PREFIX, NATS_QUEUE_SUBJECT_PREFIX and DEADLETTER_SUBJECT."""

    event_prefix: str = "tenants.{tenant}."
    queue_prefix: str = "queues.{tenant}."
    operator_deadletter: str = "scheduler.deadletter"  # "" = no operator-wide copy

    def __post_init__(self) -> None:
        prefixes = (("NATS_SUBJECT_PREFIX", self.event_prefix), ("NATS_QUEUE_SUBJECT_PREFIX", self.queue_prefix))
        for name, prefix in prefixes:
            tokens = _tokens(prefix)
            if not prefix.endswith(".") or tokens[:-1].count(TENANT) != 1:
                raise ValueError(f"{name}={prefix!r} must end with '.' and hold {TENANT} once as a whole token")
            if any(t != TENANT and not _SUBJECT_TOKEN.match(t) for t in tokens[:-1]):
                raise ValueError(f"{name}={prefix!r} has an empty or illegal token (no wildcards, spaces or '$')")
        events, queues = self._pattern(self.event_prefix), self._pattern(self.queue_prefix)
        if _overlap(events, queues):
            raise ValueError(
                f"NATS_SUBJECT_PREFIX={self.event_prefix!r} and NATS_QUEUE_SUBJECT_PREFIX={self.queue_prefix!r} "
                "overlap: a tenant's event stream would capture its queues"
            )
        if self.operator_deadletter:
            tokens = _tokens(self.operator_deadletter)
            if not all(_SUBJECT_TOKEN.match(t) for t in tokens):
                raise ValueError(f"DEADLETTER_SUBJECT={self.operator_deadletter!r} is not a plain NATS subject")
            if _overlap(tokens, events) or _overlap(tokens, queues):
                raise ValueError(
                    f"DEADLETTER_SUBJECT={self.operator_deadletter!r} lies inside the tenants' namespaces: "
                    "a tenant could capture every tenant's dead letters"
                )

    @staticmethod
    def _pattern(prefix: str) -> list[str]:
        return [("*" if t == TENANT else t) for t in _tokens(prefix)[:-1]] + [">"]

    def _prefix(self, prefix: str, tenant_id: str) -> str:
        return prefix.replace(TENANT, tenant_token(tenant_id))

    # --- events, dead letters, notices ---

    def event_subject(self, tenant_id: str, topic: str) -> str:
        return self._prefix(self.event_prefix, tenant_id) + topic

    def event_filter(self, tenant_id: str) -> str:
        """Everything of one tenant's event namespace (what its event stream captures, what it subscribes to)."""
        return self._prefix(self.event_prefix, tenant_id) + ">"

    def deadletter_subject(self, tenant_id: str) -> str:
        return self.event_subject(tenant_id, DEADLETTER)

    def event_stream(self, tenant_id: str) -> str:
        """``EVENTS_<tenant>_<hash>``: legal (no dots), at most 56 characters, and distinct per tenant."""
        return f"EVENTS_{_sanitized(tenant_id, 32)}_{_digest(tenant_id)}"

    # --- queues ---

    def queue_subject(self, tenant_id: str, topic: str) -> str:
        return self._prefix(self.queue_prefix, tenant_id) + topic

    def queue_stream(self, tenant_id: str, topic: str) -> str:
        """``QUEUE_<tenant>_<topic>_<hash>``: legal, at most 113 characters, distinct per tenant and topic."""
        return f"QUEUE_{_sanitized(tenant_id, 24)}_{_sanitized(topic, 64)}_{_digest(tenant_id, topic)}"
