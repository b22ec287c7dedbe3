"""One trace spans processes: the producer's context travels in NATS headers."""

from __future__ import annotations

import asyncio
import sys

import msgspec
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from libs.bus import Bus, Endpoint
from libs.events.catalogue import PrepareClaims, PrepareClaimsReply
from libs.natsserver import EmbeddedNats
from tests.bus.helpers import unprepared
from tests.support.nats_fixture import harness_creds


async def test_trace_continues_in_another_process(bus: Bus, nats_server: EmbeddedNats) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bus.trace_child",
        nats_server.url,
        harness_creds(nats_server.url),
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    assert (await asyncio.wait_for(child.stdout.readline(), 20)).strip() == b"ready"
    with trace.get_tracer("test").start_as_current_span("kubelet call") as root:
        await bus.publish(unprepared("traced"))
        expected_trace = format(root.get_span_context().trace_id, "032x")
    line = await asyncio.wait_for(child.stdout.readline(), 20)
    assert await child.wait() == 0
    report = msgspec.json.decode(line)
    assert report["trace_id"] == expected_trace
    assert report["attributes"]["messaging.system"] == "nats"
    assert report["attributes"]["messaging.operation.type"] == "process"
    assert report["attributes"]["messaging.destination.name"] == "gpudra.v1.node-a.claims.unprepared"
    assert report["attributes"]["messaging.consumer.group.name"] == "child"


async def test_publish_span_is_the_parent_seen_by_the_consumer(bus: Bus, spans: InMemorySpanExporter) -> None:
    done = asyncio.Event()

    async def handle(_: object) -> None:
        done.set()

    from tests.bus.helpers import claims_consumer

    await bus.consume(claims_consumer("traced"), handle)
    with trace.get_tracer("test").start_as_current_span("root"):
        await bus.publish(unprepared("t1"))
    await asyncio.wait_for(done.wait(), 10)
    await bus.close()
    by_name = {span.name: span for span in spans.get_finished_spans()}
    send = by_name["send gpudra.v1.node-a.claims.unprepared"]
    process = by_name["process gpudra.v1.node-a.claims.unprepared"]
    assert send.kind == trace.SpanKind.PRODUCER
    assert process.kind == trace.SpanKind.CONSUMER
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert send.attributes is not None
    assert send.attributes["messaging.operation.type"] == "send"


async def test_request_and_reply_share_a_trace(bus: Bus, spans: InMemorySpanExporter) -> None:
    async def answer(command: PrepareClaims) -> PrepareClaimsReply:
        return PrepareClaimsReply(results={})

    await bus.serve("1.0.0", [Endpoint(PrepareClaims, answer)])
    await bus.request("node-a", PrepareClaims(claims=[]), PrepareClaimsReply, timeout=5)
    by_name = {span.name: span for span in spans.get_finished_spans()}
    client = by_name["send gpudra.v1.node-a.rpc.claims.prepare"]
    server = by_name["process gpudra.v1.node-a.rpc.claims.prepare"]
    assert server.context.trace_id == client.context.trace_id
    assert server.parent is not None
    assert server.parent.span_id == client.context.span_id
