"""TLS to NATS from settings: a server that requires TLS, a client that verifies it with the CA setting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from libs.bus import Bus, BusError
from libs.natsserver import EmbeddedNats
from libs.settings import CommonSettings
from tests.bus.helpers import unprepared


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedNats, Path]]:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_file = tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem"
    server_cert.cert_chain_pems[0].write_to_path(str(cert))
    server_cert.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    server = EmbeddedNats(tmp_path / "nats", tls=(cert, key))
    await server.start()
    yield server, ca_file
    await server.stop()


async def test_bus_connects_over_tls_with_the_ca_setting(tls_server: tuple[EmbeddedNats, Path]) -> None:
    server, ca_file = tls_server
    bus = await Bus.connect(CommonSettings(nats_url=server.url, node_name="node-a", nats_tls_ca=str(ca_file)), "tls")
    try:
        await bus.bootstrap()
        ack = await bus.publish(unprepared("over-tls"))
        assert ack.seq == 1
    finally:
        await bus.close()


async def test_an_unknown_ca_is_refused_with_the_url(tls_server: tuple[EmbeddedNats, Path], tmp_path: Path) -> None:
    server, _ = tls_server
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    settings = CommonSettings(nats_url=server.url, node_name="node-a", nats_tls_ca=str(other_ca))
    with pytest.raises(BusError, match=f"cannot connect to NATS at {server.url}"):
        await Bus.connect(settings, "tls")
