"""OpenTelemetry tracing: off (the API's no-op tracer, zero cost) unless an OTLP endpoint is configured.

A run's trace context travels through the outbox: the API stores the W3C `traceparent` of the request that
queued it on the run, the worker continues that trace when it delivers, and every delivery carries
`traceparent` (HTTP header, NATS header), so the receiver's spans join the same trace.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, MutableMapping
from typing import Any

import msgspec
from opentelemetry import context, propagate, trace

# Entered by every span of a process without a tracer provider: reusable, it holds no state.
_NO_SPAN = contextlib.nullcontext(trace.INVALID_SPAN)


class _Tracer:
    """The scheduler's tracer. Without an installed provider, a span that continues no stored trace costs one
    check: the API's no-op tracer still builds a span and attaches a context each time, which measured ~10% of a
    worker's CPU per JetStream fire (bench/users.py with py-spy). A span with a parent ``context`` (a manual
    run's stored trace) still goes through the API, so its `traceparent` is passed on to the receiver."""

    def __init__(self, name: str) -> None:
        self._tracer = trace.get_tracer(name)

    def start_as_current_span(self, name: str, context: context.Context | None = None, **kwargs: Any) -> Any:
        if context is None and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            return _NO_SPAN
        return self._tracer.start_as_current_span(name, context=context, **kwargs)


tracer = _Tracer("scheduler")


def setup_tracing(service_name: str, env: Mapping[str, str]) -> bool:
    """Install an OTLP/HTTP exporter when the standard OTEL_* variables ask for one; return whether tracing is on."""
    wanted = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not wanted or env.get("OTEL_TRACES_EXPORTER", "otlp") == "none" or env.get("OTEL_SDK_DISABLED") == "true":
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set, override the default name.
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


def current_trace_context() -> str | None:
    """The active span's context as stored on a run (JSON of the W3C headers), or None without one."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return msgspec.json.encode(carrier).decode() if carrier else None


def stored_context(trace_context: str | None) -> context.Context | None:
    if not trace_context:
        return None
    return propagate.extract(msgspec.json.decode(trace_context))


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the active span's `traceparent` (and `tracestate`) to outgoing headers."""
    propagate.inject(headers)
