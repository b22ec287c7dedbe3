"""Without an exporter, no span is recorded, yet trace ids are made and carried to the next hop."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from libs.bus import tracing
from libs.telemetry import tracing as telemetry_tracing

UPSTREAM = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def not_recording(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(telemetry_tracing._state, "recording", False)


@pytest.mark.usefixtures("not_recording")
def test_root_operation_gets_fresh_ids_that_travel(spans: InMemorySpanExporter) -> None:
    headers: dict[str, str] = {}
    with tracing.messaging_span("send x", trace.SpanKind.PRODUCER, {}) as span:
        tracing.inject(headers)
        trace_id = span.get_span_context().trace_id
    assert trace_id != 0
    assert headers["traceparent"].split("-")[1] == format(trace_id, "032x")
    assert spans.get_finished_spans() == ()


@pytest.mark.usefixtures("not_recording")
def test_upstream_trace_is_continued() -> None:
    parent = tracing.extract({"traceparent": UPSTREAM})
    with tracing.messaging_span("process x", trace.SpanKind.CONSUMER, {}, parent):
        assert current_trace_id() == "0af7651916cd43dd8448eb211c80319c"
    assert current_trace_id() == ""


def test_recording_mode_records_spans(spans: InMemorySpanExporter) -> None:
    with tracing.messaging_span("send y", trace.SpanKind.PRODUCER, {"messaging.system": "nats"}):
        pass
    [span] = spans.get_finished_spans()
    assert span.name == "send y"


def current_trace_id() -> str:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""
