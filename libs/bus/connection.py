"""Connecting to NATS: reconnect forever once connected, fail fast and clearly if never connected.

Every client authenticates (docs/security.md): with a ``.creds`` file (standalone, external NATS), or with a
token file the auth callout turns into a user of this node (a pod's projected ServiceAccount token, re-read at
every reconnect because the kubelet rotates it). Replies arrive under the client's own inbox prefix, the one
its credentials allow. The server's refusals (a subject outside the permissions, credentials it no longer
accepts) are recorded on the connection's ``Link`` so a service can fail its start naming the subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from libs.bus.errors import BusError
from libs.bus.metrics import REFUSED
from libs.events.subjects import inbox_prefix
from libs.settings import CommonSettings
from libs.trust import creds

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


PERMISSIONS_ERROR = "permissions violation"
_AUTH_ERRORS = ("authorization violation", "user authentication expired", "authentication revoked")


class Link:
    """What a connection went through that its owner may wait on (the server and nats-py tell it in callbacks):
    the server's refusals, in the order they came, reconnects, and a failure no reconnect cures."""

    def __init__(self) -> None:
        self.refusals: list[str] = []
        self.refused = asyncio.Event()
        self.reconnected = asyncio.Event()
        self.failure = ""
        self.failed = asyncio.Event()
        self.closing = False
        """Set by the owner before it closes the connection itself: that close is no failure."""

    def refuse(self, text: str) -> None:
        self.refusals.append(text)
        self.refused.set()

    def fail(self, reason: str) -> None:
        """The first failure wins: it is the cause, what follows is consequence."""
        if not self.failure:
            self.failure = reason
            self.failed.set()


def check_credentials(settings: CommonSettings) -> None:
    """Refuse to start on credentials that cannot work, with what to fix; warn about readable secrets."""
    if settings.nats_creds:
        try:
            found = creds.check(settings.nats_creds)
        except creds.CredentialsError as exc:
            raise BusError(str(exc)) from None
        if found.shared_with_others:
            log.warning("NATS credentials file is readable by group or others", extra={"path": found.path})
    if settings.nats_token_file:
        _read_secret(settings.nats_token_file, "--nats-token-file")
    if settings.nats_user:
        _read_secret(settings.nats_password_file, "--nats-password-file")


def _read_secret(path: str, setting: str) -> str:
    try:
        secret = Path(path).read_text().strip()
    except OSError as exc:
        raise BusError(f"{setting} {path!r} cannot be read: {exc}") from None
    if not secret:
        raise BusError(f"{setting} {path} is empty")
    return secret


def _token(path: str) -> Callable[[], str]:
    """Read at every (re)connect: the kubelet rotates a projected token in place."""
    return lambda: _read_secret(path, "--nats-token-file")


def _auth_options(settings: CommonSettings) -> dict[str, object]:
    options: dict[str, object] = {}
    if settings.nats_creds:
        options["user_credentials"] = settings.nats_creds
    if settings.nats_token_file:
        options["token"] = _token(settings.nats_token_file)
    if settings.nats_user:
        options["user"] = settings.nats_user
        options["password"] = _read_secret(settings.nats_password_file, "--nats-password-file")
    return options


async def connect(
    settings: CommonSettings,
    service: str,
    *,
    link: Link | None = None,
    connect_timeout: int = 2,
    attempts: int = 3,
) -> Client:
    """Connect as ``service`` on this node (``gpudra-<service>@<node>`` in ``nats server report connections``).

    The first connection gives up after ``attempts`` tries per server so that a wrong URL or refused
    credentials are reported at once; once connected, the client reconnects forever, since a NATS restart
    must not kill a service.
    """
    servers = parse_servers(settings.nats_url)
    check_credentials(settings)
    name = f"gpudra-{service}@{settings.node_name}"
    seen = link or Link()
    failures: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        text = str(exc)
        failures.append(exc)
        if not nc.is_connected and _is_auth_error(text):
            nc.options["allow_reconnect"] = False  # nats-py then gives up at once: trying again cannot help
        if PERMISSIONS_ERROR in text:
            # nats-py lowercases the server's message, subject included; it still names what was refused.
            REFUSED.inc()
            seen.refuse(text.removeprefix("nats: "))
            log.error("NATS refused: %s", text.removeprefix("nats: "), extra={"client": name})
        elif nc.is_connected or nc.is_reconnecting:
            log.warning("nats error: %s", exc, extra={"client": name})

    async def on_disconnect() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("disconnected from NATS; reconnecting", extra={"client": name})

    async def on_closed() -> None:
        # nats-py closes for good, without reconnecting, after an -ERR it does not treat as a disconnect
        # (a payload over the limit, expired or revoked credentials): only a new process can connect again.
        if not (seen.closing or connecting):
            seen.fail(f"the NATS connection was closed and will not reconnect: {nc.last_error or 'closed'}")

    async def on_reconnect() -> None:
        seen.reconnected.set()
        log.info("reconnected to NATS", extra={"client": name, "server": str(nc.connected_url)})

    nc = Client()
    connecting = True
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
                tls=_tls(settings),
                inbox_prefix=inbox_prefix(service, settings.node_name),
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                closed_cb=on_closed,
                **_auth_options(settings),  # type: ignore[arg-type]
            )
    except (OSError, nats.errors.Error, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await nc.close()
        detail = next((f for f in reversed(failures) if _is_auth_error(str(f))), nc.last_error or exc)
        raise BusError(f"cannot connect to NATS at {settings.nats_url}: {_explain(str(detail))}") from exc
    if not nc.is_connected:  # nats-py returns early when a slow auth callout is still deciding
        await nc.close()
        raise BusError(f"cannot connect to NATS at {settings.nats_url}: the server did not accept us in time")
    nc.options["allow_reconnect"] = True
    nc.options["max_reconnect_attempts"] = -1
    connecting = False
    return nc


def _is_auth_error(text: str) -> bool:
    return any(marker in text.lower() for marker in _AUTH_ERRORS)


def _explain(detail: str) -> str:
    if _is_auth_error(detail):
        return (
            f"{detail}: the server refused these credentials (setting --nats-creds / --nats-token-file); "
            "see docs/security.md"
        )
    return detail


def jetstream(nc: Client) -> JetStreamContext:
    return nc.jetstream(timeout=5.0)
