"""Telemetry: OTLP export driven by OTEL_* variables, JSON logs with trace ids, a metrics endpoint."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import sys
import urllib.request
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, generate_latest

from libs.telemetry import start_metrics_server
from libs.telemetry.logs import JsonFormatter
from libs.telemetry.metrics import by_labels

CHILD = """
from opentelemetry import trace
from libs.telemetry import configure_tracing
provider = configure_tracing("otlp-child", "node-x")
with trace.get_tracer("t").start_as_current_span("exported-span"):
    pass
provider.shutdown()
"""


@pytest.fixture
async def collector() -> AsyncIterator[tuple[str, asyncio.Queue[tuple[str, bytes]]]]:
    """A stand-in OpenTelemetry collector: records what arrives on the OTLP/HTTP endpoint."""
    received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def accept(request: web.Request) -> web.Response:
        await received.put((request.path, await request.read()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/traces", accept)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", received
    await runner.cleanup()


async def test_spans_are_exported_when_an_otlp_endpoint_is_set(
    collector: tuple[str, asyncio.Queue[tuple[str, bytes]]],
) -> None:
    endpoint, received = collector
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, env=env)
    assert await asyncio.wait_for(child.wait(), 30) == 0
    path, body = await asyncio.wait_for(received.get(), 10)
    assert path == "/v1/traces"
    assert b"exported-span" in body
    assert b"otlp-child" in body


def test_json_logs_carry_trace_ids_and_extra_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter({"service": "discovery", "node": "node-a"}))
    logger = logging.getLogger("test.json")
    logger.addHandler(handler)
    logger.propagate = False
    with trace.get_tracer("t").start_as_current_span("op") as span:
        logger.warning("device lost", extra={"device": "gpu-3"})
    line = json.loads(stream.getvalue())
    assert line["msg"] == "device lost"
    assert (line["service"], line["node"], line["device"]) == ("discovery", "node-a", "gpu-3")
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_metrics_endpoint_serves_prometheus_text() -> None:
    port = start_metrics_server("127.0.0.1", 0)
    assert port is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert "# TYPE" in text
    assert start_metrics_server("127.0.0.1", -1) is None


def test_remembered_label_children_count_into_the_exposed_metric() -> None:
    registry = CollectorRegistry()
    calls = Counter("calls", "calls by method", ["method"], registry=registry)
    by_method = by_labels(calls)
    assert by_method("prepare") is by_method("prepare")
    by_method("prepare").inc()
    by_method("prepare").inc(2)
    by_method("unprepare").inc()
    text = generate_latest(registry).decode()
    assert 'calls_total{method="prepare"} 3.0' in text
    assert 'calls_total{method="unprepare"} 1.0' in text
