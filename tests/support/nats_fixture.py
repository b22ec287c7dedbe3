"""Real nats-server fixtures with authentication on, as in standalone mode: one server per test
(restartable), or a 3-server cluster on loopback. Nobody connects anonymously.

``settings_for(url, node)`` gives a test harness client that may do anything (publish any event, bootstrap);
``service_fields(url, node, service)`` gives a service exactly the credentials ``gpudra up`` would, so a
test that runs a service that way also checks its permissions. Credentials are minted by the server's
``Authority``, found by the server's URL; a child process the test starts finds it too, through the
``GPUDRA_TEST_TRUST_<port>`` variable it inherits.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from libs.bus import Bus
from libs.bus.connection import parse_servers
from libs.natsserver import EmbeddedNats, start_cluster
from libs.settings import CommonSettings
from libs.telemetry import configure_tracing
from libs.trust.authority import Authority
from libs.trust.permissions import EVERYTHING
from libs.trust.roles import SERVICE_ROLES, Role

_EXPORTER = InMemorySpanExporter()
_AUTHORITIES: dict[str, tuple[Authority, Path]] = {}


def _variable(url: str) -> str:
    return f"GPUDRA_TEST_TRUST_{urlsplit(url).port}"


def _register(url: str, authority: Authority, directory: Path) -> None:
    _AUTHORITIES[url] = (authority, directory / "users")
    os.environ[_variable(url)] = str(directory)


def serve_with_auth(server: EmbeddedNats, directory: Path) -> EmbeddedNats:
    """Give ``server`` (not started yet) an authority kept in ``directory``, and remember it by URL."""
    authority = Authority.open(directory)
    server.auth = authority
    _register(server.url, authority, directory)
    return server


def authority_for(url: str) -> tuple[Authority, Path]:
    first = parse_servers(url)[0]
    if first not in _AUTHORITIES:  # a child process of the test: the parent left the directory in the environment
        directory = Path(os.environ[_variable(first)])
        _AUTHORITIES[first] = (Authority.open(directory), directory / "users")
    return _AUTHORITIES[first]


def harness_creds(url: str, name: str = "harness") -> str:
    authority, users = authority_for(url)
    return str(authority.write(users / f"{name}.creds", name, EVERYTHING))


def role_creds(url: str, principal: str, roles: Iterable[Role], node: str, *, lifetime: float | None = None) -> str:
    """Credentials for ``roles`` on ``node``, as the standalone supervisor issues them."""
    authority, users = authority_for(url)
    held = sorted(roles)
    path = users / f"{principal}@{node}+{'+'.join(held)}.creds"  # tests run several nodes on one server
    return str(authority.issue(path, principal, held, node, lifetime=lifetime))


def operator_args(url: str) -> list[str]:
    """``gpudra`` command-line options that reach the server at ``url`` as the operator."""
    return ["--nats-url", url, "--nats-creds", role_creds(url, "operator", [Role.OPERATOR], "node-a")]


def settings_for(url: str, node: str = "node-a", **overrides: object) -> CommonSettings:
    return CommonSettings(nats_url=url, node_name=node, nats_creds=harness_creds(url), **overrides)  # type: ignore[arg-type]


def service_env(url: str, node: str, service: str) -> dict[str, str]:
    """The environment ``gpudra up`` gives a service process: where NATS is and its own credentials."""
    return {
        "GPUDRA_NATS_URL": url,
        "GPUDRA_NODE_NAME": node,
        "GPUDRA_NATS_CREDS": role_creds(url, service, SERVICE_ROLES[service], node),
    }


def service_fields(url: str, node: str, service: str) -> dict[str, str]:
    """Settings fields (for a service's own settings type) that connect as ``service`` with its own roles."""
    return {
        "nats_url": url,
        "node_name": node,
        "nats_creds": role_creds(url, service, SERVICE_ROLES[service], node),
    }


def service_common(url: str, node: str, service: str) -> CommonSettings:
    """The shared settings of ``service`` on ``node``, connecting with its own credentials."""
    return msgspec.convert(service_fields(url, node, service), CommonSettings)


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A nats-server with JetStream whose store lives in the test's temp dir; ``restart()`` keeps it."""
    server = serve_with_auth(EmbeddedNats(tmp_path / "nats"), tmp_path / "trust")
    await server.start()
    await bootstrap(server.url)
    yield server
    await server.stop()


async def bootstrap(url: str) -> None:
    """What the standalone supervisor does before any service starts: streams and buckets exist."""
    bootstrapper = await Bus.connect(settings_for(url), "bootstrap")
    try:
        await bootstrapper.bootstrap()
    finally:
        await bootstrapper.close()


@pytest.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[list[EmbeddedNats]]:
    authority = Authority.open(tmp_path / "trust")
    servers = await start_cluster(tmp_path / "cluster", size=3, auth=authority)
    for server in servers:
        _register(server.url, authority, tmp_path / "trust")
    yield servers
    for server in servers:
        await server.stop()


@pytest.fixture
async def bus(nats_server: EmbeddedNats) -> AsyncIterator[Bus]:
    """A connected bus as service "test" on node "node-a", with the harness's permissions."""
    connected = await Bus.connect(settings_for(nats_server.url), "test")
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
