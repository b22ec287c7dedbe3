"""OpenTelemetry tracing configured by the standard ``OTEL_*`` variables.

Platform teams already run a collector; they point ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces-only
variant) at it and every gpudra process exports there. Without an endpoint, spans are still created (so
trace ids appear in logs and travel in message headers) but nothing is exported.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

INSTRUMENTATION = "gpudra"


def _exporter_from_env() -> SpanExporter | None:
    choice = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")[0].strip().lower()
    if choice == "console":
        return ConsoleSpanExporter()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
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
    attributes = {"service.name": service, "service.namespace": "gpudra", "k8s.node.name": node}
    provider = TracerProvider(resource=Resource.create(attributes))
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true"
    exporter = None if disabled else _exporter_from_env()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


def tracer() -> trace.Tracer:
    return trace.get_tracer(INSTRUMENTATION)
