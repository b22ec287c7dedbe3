"""Connecting to NATS: reconnect forever once connected, fail fast and clearly if never connected."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from libs.bus.errors import BusError
from libs.settings import CommonSettings

log = logging.getLogger(__name__)

_SCHEMES = ("nats", "tls", "ws", "wss")


def parse_servers(url: str) -> list[str]:
    """Split and check a comma-separated server list so a typo fails here, naming the bad entry."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise BusError("NATS URL is empty (set --nats-url or GPUDRA_NATS_URL)")
    for server in servers:
        parts = urlsplit(server)
        try:
            port = parts.port
        except ValueError:
            port = None
            parts = parts._replace(netloc="")
        if parts.scheme not in _SCHEMES or not parts.hostname or (port is None and ":" in parts.netloc):
            raise BusError(f"bad NATS URL {server!r}: expected nats://host:port (or tls://, ws://, wss://)")
    return servers


def _tls(settings: CommonSettings) -> ssl.SSLContext | None:
    if not (settings.nats_tls_ca or settings.nats_tls_cert):
        return None
    context = ssl.create_default_context(cafile=settings.nats_tls_ca or None)
    if settings.nats_tls_cert:
        context.load_cert_chain(settings.nats_tls_cert, settings.nats_tls_key or None)
    return context


async def connect(settings: CommonSettings, name: str, *, connect_timeout: int = 2, attempts: int = 3) -> Client:
    """Connect as ``name`` (shown by ``nats server report connections``).

    The first connection gives up after ``attempts`` tries per server so that a wrong URL is reported at
    once; once connected, the client reconnects forever, since a NATS restart must not kill a service.
    """
    servers = parse_servers(settings.nats_url)

    async def on_error(exc: Exception) -> None:
        if nc.is_connected or nc.is_reconnecting:
            log.warning("nats error: %s", exc, extra={"client": name})

    async def on_disconnect() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("disconnected from NATS; reconnecting", extra={"client": name})

    async def on_reconnect() -> None:
        log.info("reconnected to NATS", extra={"client": name, "server": str(nc.connected_url)})

    nc = Client()
    # nats-py can wait forever on a failed TLS handshake; bound the whole first connection ourselves.
    limit = connect_timeout * attempts * len(servers) + 1
    try:
        async with asyncio.timeout(limit):
            await nc.connect(
                servers=servers,
                name=name,
                connect_timeout=connect_timeout,
                allow_reconnect=True,
                max_reconnect_attempts=attempts,
                reconnect_time_wait=1,
                user_credentials=settings.nats_creds or None,
                tls=_tls(settings),
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
            )
    except (OSError, nats.errors.Error, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await nc.close()
        detail = nc.last_error or exc or type(exc).__name__
        raise BusError(f"cannot connect to NATS at {settings.nats_url}: {detail}") from exc
    nc.options["max_reconnect_attempts"] = -1
    return nc


def jetstream(nc: Client) -> JetStreamContext:
    return nc.jetstream(timeout=5.0)
