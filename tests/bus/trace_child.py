"""Run by test_tracing in a separate process: consume one event, print the span it made as JSON."""

from __future__ import annotations

import asyncio
import sys

import msgspec
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from libs.bus import Bus, ConsumerSpec
from libs.events import Envelope, Event
from libs.settings import CommonSettings
from libs.telemetry import configure_tracing


async def main(url: str, creds: str) -> None:
    exporter = InMemorySpanExporter()
    configure_tracing("trace-child", "node-b", SimpleSpanProcessor(exporter))
    bus = await Bus.connect(CommonSettings(nats_url=url, node_name="node-b", nats_creds=creds), "child")
    got = asyncio.Event()

    async def handle(envelope: Envelope[Event]) -> None:
        got.set()

    spec = ConsumerSpec(stream="GPUDRA_CLAIMS", durable="child", filter_subjects=["gpudra.v1.*.claims.>"])
    await bus.consume(spec, handle)
    print("ready", flush=True)
    await asyncio.wait_for(got.wait(), 20)
    await bus.close()
    [span] = [span for span in exporter.get_finished_spans() if span.name.startswith("process ")]
    assert span.parent is not None
    report = {
        "trace_id": format(span.context.trace_id, "032x"),
        "parent_span_id": format(span.parent.span_id, "016x"),
        "attributes": dict(span.attributes or {}),
    }
    print(msgspec.json.encode(report).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
