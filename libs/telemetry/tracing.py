"""OpenTelemetry tracing configured by the standard ``OTEL_*`` variables.

Platform teams already run a collector; they point ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces-only
variant) at it and every gpudra process exports there, sampled as ``OTEL_TRACES_SAMPLER`` says (default:
follow the parent, else record). Without an exporter, spans are not recorded — recording a span costs tens
of microseconds on the hot path for nothing — but trace ids are still made and travel in message headers
and gRPC metadata, so log lines of one kubelet call share a trace id across services.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler

INSTRUMENTATION = "gpudra"
_state = {"recording": True}


def _exporter_from_env() -> SpanExporter | None:
    choice = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")[0].strip().lower()
    if choice == "console":
        return ConsoleSpanExporter()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if choice != "otlp" or not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def configure_tracing(service: str, node: str, processor: SpanProcessor | None = None) -> TracerProvider:
    """Install the process-wide tracer provider once; later calls add ``processor`` to the same provider.

    ``processor`` lets tests attach an in-memory exporter without touching the environment.
    """
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        if processor is not None:
            current.add_span_processor(processor)
        return current
    attributes = {
        "service.name": os.environ.get("OTEL_SERVICE_NAME", service),
        "service.namespace": "gpudra",
        "k8s.node.name": node,
    }
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true"
    exporter = None if disabled else _exporter_from_env()
    # None lets the SDK read OTEL_TRACES_SAMPLER; with nowhere to send spans, only ids are worth making.
    sampler: Sampler | None = None if exporter or processor or os.environ.get("OTEL_TRACES_SAMPLER") else ALWAYS_OFF
    provider = TracerProvider(resource=Resource.create(attributes), sampler=sampler)
    _state["recording"] = sampler is not ALWAYS_OFF
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


_tracers: dict[int, trace.Tracer] = {}


def tracer() -> trace.Tracer:
    """The project's tracer, cached per provider: ``get_tracer`` costs more than the span on hot paths."""
    provider = trace.get_tracer_provider()
    cached = _tracers.get(id(provider))
    if cached is None:
        cached = _tracers[id(provider)] = provider.get_tracer(INSTRUMENTATION)
    return cached


def recording() -> bool:
    """False when gpudra itself configured tracing with nowhere to send spans."""
    return _state["recording"]


@contextmanager
def span(
    name: str,
    kind: trace.SpanKind,
    attributes: Mapping[str, str | int],
    parent: otel_context.Context | None = None,
) -> Iterator[trace.Span]:
    """A span when spans are recorded; otherwise only a trace context (the parent's, or fresh ids).

    The second path is what makes tracing free when no exporter is set, while trace ids still reach logs
    and downstream services. An escaping exception is recorded on a real span and propagates.
    """
    if recording():
        with tracer().start_as_current_span(
            name, context=parent, kind=kind, attributes=dict(attributes), record_exception=True
        ) as current:
            yield current
        return
    if parent is None and trace.get_current_span().get_span_context().is_valid:
        yield trace.get_current_span()  # already inside a trace: nothing to add
        return
    base = parent if parent is not None else otel_context.get_current()
    current = trace.get_current_span(base)
    if not current.get_span_context().is_valid:
        current = trace.NonRecordingSpan(
            trace.SpanContext(
                trace_id=random.getrandbits(128) or 1,
                span_id=random.getrandbits(64) or 1,
                is_remote=False,
                trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT),
            )
        )
    token = otel_context.attach(trace.set_span_in_context(current, base))
    try:
        yield current
    finally:
        otel_context.detach(token)
