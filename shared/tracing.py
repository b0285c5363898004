"""OpenTelemetry tracing: off (the API's no-op tracer, zero cost) unless an OTLP endpoint is configured.

A run's trace context travels through the outbox: the API stores the W3C `traceparent` of the request that
queued it on the run, the worker continues that trace when it delivers, and every delivery carries
`traceparent` (HTTP header, NATS header), so the receiver's spans join the same trace.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import msgspec
from opentelemetry import context, propagate, trace

tracer = trace.get_tracer("scheduler")


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
