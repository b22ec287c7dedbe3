"""The in-cluster NATS members route to each other over mutual TLS, and nothing else joins them.

Three nats-servers run the overlay's own nats.conf with the Secrets docs/deploy.md has you create, mounted where
the StatefulSet mounts them; only the addresses change: each member listens on local ports, and the routes to the
headless Service's names point at the other members' route ports on ``localhost``, a name the routes' certificate
carries here besides the documented ones. They form the cluster; a server without TLS, and one with a certificate
of another CA, try to route to a member and are refused, whatever the NetworkPolicy would have let through.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import trustme

from libs.natsserver import free_port, nats_server_binary
from tests.deploy.test_deploy_kustomize import (
    STANDALONE,
    PodFiles,
    Secrets,
    build,
    documented_secrets,
    nats_conf,
    secret_env,
    tls_secret,
)

MEMBERS = 3
FORMING_SECONDS = 30
HEADLESS_ROUTE = re.compile(r"nats://gpudra-nats-(\d+)\.gpudra-nats-headless:6222")


@dataclass
class Server:
    name: str
    http_port: int
    route_port: int
    log: Path

    async def routes(self) -> list[dict[str, object]]:
        """The routes of this server (its monitoring endpoint's /routez), a pool of several to each peer."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.http_port}/routez") as response,
        ):
            body = await response.json()
        return list(body.get("routes") or [])

    async def peers(self) -> list[str]:
        """The names of the servers this one has a route to."""
        return sorted({str(route.get("remote_name", "")) for route in await self.routes()})

    def logged(self, pattern: str) -> bool:
        return re.search(pattern, self.log.read_text(errors="replace")) is not None


Check = Callable[[], Awaitable[bool]]


async def until(check: Check, what: str, seconds: float = FORMING_SECONDS) -> None:
    """Poll ``check`` until it holds: the servers report no events to await, only their state and their logs."""
    try:
        async with asyncio.timeout(seconds):
            while not await check():  # noqa: ASYNC110 - other processes' state and logs: nothing to await
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not within {seconds}s: {what}") from None


class Cluster:
    def __init__(self, root: Path, secrets: Secrets) -> None:
        self.root = root
        self.secrets = secrets
        self.objects = build(STANDALONE)
        self.route_ports = [free_port() for _ in range(MEMBERS)]
        self.stack = contextlib.AsyncExitStack()

    async def member(self, index: int) -> Server:
        """Member ``index`` with the overlay's nats.conf, files and environment, at local addresses."""
        statefulset, container, conf = nats_conf(self.objects)
        name = f"gpudra-nats-{index}"
        files = PodFiles(self.root / name, self.objects, statefulset, container, secrets=self.secrets, token="")
        server = Server(name, free_port(), self.route_ports[index], self.root / f"{name}.log")
        conf = files.local(conf)
        for old, new in (
            ("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{free_port()}"),
            ("http: 0.0.0.0:8222", f"http: 127.0.0.1:{server.http_port}"),
            ("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{server.route_port}"),
        ):
            assert old in conf
            conf = conf.replace(old, new)
        conf = HEADLESS_ROUTE.sub(lambda m: f"nats://localhost:{self.route_ports[int(m[1])]}", conf)
        env = {key: self.secrets[secret][item].decode() for key, (secret, item) in secret_env(container).items()}
        await self.start(server, conf, env | {"SERVER_NAME": name})
        return server

    async def outsider(self, name: str, cluster_tls: str = "") -> Server:
        """A server that is no member, routing to member 0 with ``cluster_tls`` (empty: plain TCP)."""
        server = Server(name, free_port(), free_port(), self.root / f"{name}.log")
        conf = f"""
            server_name: {name}
            listen: 127.0.0.1:{free_port()}
            http: 127.0.0.1:{server.http_port}
            cluster {{
              name: gpudra
              listen: 127.0.0.1:{server.route_port}
              {cluster_tls}
              routes: [ nats://localhost:{self.route_ports[0]} ]
            }}
        """
        await self.start(server, conf, {})
        return server

    async def start(self, server: Server, conf: str, env: dict[str, str]) -> None:
        path = self.root / f"{server.name}.conf"
        path.write_text(conf)
        with server.log.open("wb") as output:
            process = await asyncio.create_subprocess_exec(
                nats_server_binary(), "-c", str(path), env=env, stdout=output, stderr=output
            )
        self.stack.push_async_callback(_stop, process)

        async def answers() -> bool:
            assert process.returncode is None, f"{server.name} exited: {server.log.read_text()}"
            try:
                await server.routes()
            except aiohttp.ClientError:
                return False
            return True

        await until(answers, f"{server.name} serves /routez")

    def foreign_tls(self, ca: trustme.CA) -> str:
        """A cluster.tls block with a certificate of ``ca`` for localhost, trusting the members' CA."""
        secret = tls_secret(ca, "localhost")
        folder = self.root / "foreign"
        folder.mkdir(exist_ok=True)
        for key, data in secret.items():
            (folder / key).write_bytes(data)
        (folder / "members-ca.crt").write_bytes(self.secrets["gpudra-nats-routes-tls"]["ca.crt"])
        return f"""tls {{
                cert_file: {folder / "tls.crt"}
                key_file: {folder / "tls.key"}
                ca_file: {folder / "members-ca.crt"}
              }}"""


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        await process.wait()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    running = Cluster(tmp_path, documented_secrets())
    async with running.stack:
        yield running


@pytest.mark.slow
async def test_members_route_over_tls_and_servers_without_their_certificate_are_refused(cluster: Cluster) -> None:
    members = [await cluster.member(index) for index in range(MEMBERS)]
    names = [member.name for member in members]

    async def formed() -> bool:
        routed = [await member.peers() for member in members]
        return all(
            routes == [n for n in names if n != member.name] for member, routes in zip(members, routed, strict=True)
        )

    await until(formed, "the three members route to each other")
    first = members[0]

    plain = await cluster.outsider("outsider-plain")
    await until(
        _logged(first, r"TLS route handshake error: tls: first record does not look like a TLS handshake"),
        "member 0 refuses the route without TLS",
    )

    foreign = await cluster.outsider("outsider-foreign-ca", cluster.foreign_tls(trustme.CA()))
    await until(
        _logged(first, r"TLS route handshake error: tls: client didn't provide a certificate"),
        "member 0 refuses the certificate another CA signed",
    )

    assert await first.peers() == names[1:]
    assert await plain.peers() == []
    assert await foreign.peers() == []


def _logged(server: Server, pattern: str) -> Check:
    async def check() -> bool:
        return server.logged(pattern)

    return check
