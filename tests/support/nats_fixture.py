"""Real nats-server fixtures: one server per test (restartable), or a 3-server cluster on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from libs.bus import Bus
from libs.natsserver import EmbeddedNats, start_cluster
from libs.settings import CommonSettings
from libs.telemetry import configure_tracing

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A nats-server with JetStream whose store lives in the test's temp dir; ``restart()`` keeps it."""
    server = EmbeddedNats(tmp_path / "nats")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[list[EmbeddedNats]]:
    servers = await start_cluster(tmp_path / "cluster", size=3)
    yield servers
    for server in servers:
        await server.stop()


def settings_for(url: str, node: str = "node-a", **overrides: object) -> CommonSettings:
    return CommonSettings(nats_url=url, node_name=node, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def bus(nats_server: EmbeddedNats) -> AsyncIterator[Bus]:
    """A connected, bootstrapped bus as service "test" on node "node-a"."""
    connected = await Bus.connect(settings_for(nats_server.url), "test")
    await connected.bootstrap()
    yield connected
    await connected.close()


def pytest_configure(config: pytest.Config) -> None:
    """Once per session: every span of the test process lands in memory."""
    configure_tracing("tests", "node-a", SimpleSpanProcessor(_EXPORTER))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans finished during the test, from the process-wide tracer provider."""
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()
