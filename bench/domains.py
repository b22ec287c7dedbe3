"""ComputeDomains forming: the compute_domain controller and 18 times ``--racks`` simulated GB200 trays on a real
nats-server (authentication on, each party with its own roles) and the standalone Kubernetes store.

Each tray runs compute_domain's node side as the service does (its own connection, state, CDI directory and
simulated machine; the racks are four NVLink cliques); each IMEX daemon is a real (simulated) daemon process.
One round per ``--rounds``: a domain per rack is created, then every tray gets a channel claim of its rack's
domain, prepared as the kubelet shim forwards it (``PrepareChannels``), all at once, as when a job's pods are
scheduled. Printed per round, as medians over rounds:

- create → Ready: from the domains' creation until the last of them is Ready in the store (a watcher of the
  store sees it);
- daemons → Ready: from the moment the last tray's daemon reported ready (its event) until that domain is
  Ready: the controller's own share (NVIDIA's reference syncs status every 2 s; goal: under 2 s);
- channel prepare: each tray's first prepare (join, admission, daemon start, readiness, CDI), p50 and max; and
  a second claim on a tray whose daemon is ready (ledger + CDI only), p50, one at a time.

Not ``gpudra up``: 72 trays of five service processes each do not fit a 2-core machine; the compute-domain
parts run as the service runs them (``services.compute_domain.service``), in one process.

    python -m bench domains [--racks 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench._trust import SecuredServer
from libs.bus import Bus
from libs.claims.allocation import pinned_to
from libs.events import decode
from libs.events.catalogue import ClaimRef
from libs.events.catalogue.computedomains import (
    ComputeDomainNodeChanged,
    PrepareChannels,
    PrepareChannelsReply,
    UnprepareChannels,
    UnprepareChannelsReply,
)
from libs.kube import RESOURCE_CLAIMS, KubeApi, LocalKube, NotFound
from libs.kube.follow import follow
from libs.trust.roles import Role
from libs.version import VERSION
from services.compute_domain.api import API_VERSION, CHANNEL_CLASS, DRIVER
from services.compute_domain.controller.domains import COMPUTE_DOMAINS
from services.compute_domain.service import controller_side, node_side
from services.compute_domain.settings import Settings

TRAYS_PER_RACK = 18
PROFILE = Path(__file__).resolve().parents[1] / "libs" / "devices" / "simulated" / "builtin" / "gb200-nvl72.yaml"
TIMEOUT = 120.0


def rack_profile(directory: Path, rack: int) -> str:
    profile = yaml.safe_load(PROFILE.read_text())
    profile["name"] = f"gb200-rack-{rack}"
    profile["fabric"]["clique_id"] = rack + 1
    path = directory / f"rack-{rack}.yaml"
    path.write_text(yaml.safe_dump(profile))
    return str(path)


@dataclass
class Round:
    create_to_ready: float
    daemons_to_ready: float
    first_prepares: list[float]
    warm_prepares: list[float] = field(default_factory=list)


@dataclass
class Cluster:
    server: SecuredServer
    kube: KubeApi
    caller: Bus
    trays: dict[str, int]
    """Tray → rack."""
    ready_at: dict[str, float] = field(default_factory=dict)
    """Tray → when its daemon last said Ready (event time at the caller)."""
    domains_ready: dict[str, float] = field(default_factory=dict)
    """Domain → when the store first showed it Ready (a watcher of the store)."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def cluster(root: Path, racks: int) -> AsyncIterator[Cluster]:
    server = SecuredServer(root)
    await server.server.start()
    async with AsyncExitStack() as stack:
        stack.push_async_callback(server.server.stop)
        boot = await Bus.connect(server.settings("bootstrap", "bench"), "bootstrap")
        await boot.bootstrap()
        await boot.close()
        caller = await Bus.connect(server.settings("bench", "bench"), "bench")
        stack.push_async_callback(caller.close)
        kube = await LocalKube.open(caller.js)
        trays = {f"rack{r}-{i}": r for r in range(racks) for i in range(TRAYS_PER_RACK)}
        result = Cluster(server=server, kube=kube, caller=caller, trays=trays)
        await caller.nc.subscribe("gpudra.v1.*.computedomains.nodes", cb=functools.partial(_heard, result))
        watch = asyncio.create_task(follow(kube, COMPUTE_DOMAINS, lambda kind, obj: _seen(result, kind, obj)))
        stack.callback(watch.cancel)
        controller = _settings(server, "controller-0", root, role="controller", controller_id="controller-0")
        await stack.enter_async_context(_side(controller, controller_side))
        profiles = [rack_profile(root, rack) for rack in range(racks)]
        for tray, rack in trays.items():
            await stack.enter_async_context(_side(_settings(server, tray, root, profile=profiles[rack]), node_side))
        yield result


async def _heard(cluster: Cluster, msg: Any) -> None:
    event = decode(msg.headers, msg.data).data
    if isinstance(event, ComputeDomainNodeChanged) and event.status == "Ready":
        cluster.ready_at[event.node] = time.perf_counter()


async def _seen(cluster: Cluster, kind: str, obj: dict[str, Any]) -> None:
    name = obj["metadata"]["name"]
    if kind != "DELETED" and (obj.get("status") or {}).get("status") == "Ready":
        cluster.domains_ready.setdefault(name, time.perf_counter())
    cluster.changed.set()


def _settings(server: SecuredServer, node: str, root: Path, **values: Any) -> Settings:
    roles = [Role.COMPUTE_DOMAIN_CONTROLLER] if values.get("role") == "controller" else [Role.COMPUTE_DOMAIN_NODE]
    home = root / "nodes" / node
    return Settings(
        nats_url=server.url,
        node_name=node,
        nats_creds=server.creds("compute_domain", node, roles),
        state_dir=str(home),
        cdi_dir=str(home / "cdi"),
        backend="simulated",
        kube_mode="local",
        role=values.pop("role", "node"),
        log_level="WARNING",
        **values,
    )


@asynccontextmanager
async def _side(settings: Settings, side: Any) -> AsyncIterator[None]:
    """One side of compute_domain on its own connection, serving its commands as the service does."""
    bus = await Bus.connect(settings, "compute_domain")
    try:
        kube = await LocalKube.open(bus.js)
        async with side(bus, kube, settings) as endpoints:
            service = await bus.serve(VERSION, endpoints or [], {}) if isinstance(endpoints, list) else None
            try:
                yield
            finally:
                if service is not None:
                    await service.stop()
    finally:
        await bus.close()


def _domain(name: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ComputeDomain",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"numNodes": TRAYS_PER_RACK, "channel": {"resourceClaimTemplate": {"name": f"{name}-channel"}}},
    }


def _claim(name: str, uid: str, tray: str, slot: int) -> dict[str, Any]:
    config = {
        "driver": DRIVER,
        "parameters": {"apiVersion": API_VERSION, "kind": "ComputeDomainChannelConfig", "domainID": uid},
    }
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"devices": {"requests": [{"name": "channel", "exactly": {"deviceClassName": CHANNEL_CLASS}}]}},
        "status": {
            "allocation": {
                "devices": {
                    "results": [{"request": "channel", "driver": DRIVER, "pool": tray, "device": f"slot-{slot}"}],
                    "config": [{"source": "FromClaim", "requests": ["channel"], "opaque": config}],
                },
                "nodeSelector": pinned_to(tray),
            }
        },
    }


async def _claims(cluster: Cluster, uids: dict[int, str], slot: int, tag: str) -> dict[str, ClaimRef]:
    refs: dict[str, ClaimRef] = {}
    for tray, rack in cluster.trays.items():
        claim = _claim(f"{tray}-{tag}", uids[rack], tray, slot)
        created = await cluster.kube.create(RESOURCE_CLAIMS, claim)  # the scheduler then writes the allocation:
        allocated = await cluster.kube.update_status(RESOURCE_CLAIMS, created | {"status": claim["status"]})
        meta = allocated["metadata"]
        refs[tray] = ClaimRef(namespace="default", name=meta["name"], uid=meta["uid"])
    return refs


async def _prepare(cluster: Cluster, tray: str, claim: ClaimRef) -> float:
    began = time.perf_counter()
    command = PrepareChannels(claims=[claim])
    reply = await cluster.caller.request(tray, command, PrepareChannelsReply, timeout=TIMEOUT)
    if reply.results[claim.uid].error:
        raise RuntimeError(reply.results[claim.uid].error)
    return time.perf_counter() - began


async def _all_ready(cluster: Cluster, names: list[str]) -> float:
    """When the last of ``names`` was first seen Ready."""
    async with asyncio.timeout(TIMEOUT):
        while not all(name in cluster.domains_ready for name in names):
            cluster.changed.clear()
            await cluster.changed.wait()
    return max(cluster.domains_ready[name] for name in names)


async def one_round(cluster: Cluster, number: int) -> Round:
    racks = sorted(set(cluster.trays.values()))
    names = [f"job{number}-rack{rack}" for rack in racks]
    cluster.ready_at.clear()
    began = time.perf_counter()
    uids = {}
    for rack, name in zip(racks, names, strict=True):
        uids[rack] = (await cluster.kube.create(COMPUTE_DOMAINS, _domain(name)))["metadata"]["uid"]
    first = await _claims(cluster, uids, 0, "a")
    firsts = await asyncio.gather(*(_prepare(cluster, tray, ref) for tray, ref in first.items()))
    ready = await _all_ready(cluster, names)
    second = await _claims(cluster, uids, 1, "b")
    warm = [await _prepare(cluster, tray, ref) for tray, ref in second.items()]
    for refs in (first, second):
        await asyncio.gather(*(_unprepare(cluster, tray, ref) for tray, ref in refs.items()))
    for name in names:
        await cluster.kube.delete(COMPUTE_DOMAINS, name, "default")
    await _gone(cluster, names)
    last_daemon = max(cluster.ready_at.values())
    return Round(
        create_to_ready=ready - began,
        daemons_to_ready=ready - last_daemon,
        first_prepares=list(firsts),
        warm_prepares=warm,
    )


async def _unprepare(cluster: Cluster, tray: str, claim: ClaimRef) -> None:
    command = UnprepareChannels(claims=[claim])
    await cluster.caller.request(tray, command, UnprepareChannelsReply, timeout=TIMEOUT)
    await cluster.kube.delete(RESOURCE_CLAIMS, claim.name, claim.namespace)


async def _gone(cluster: Cluster, names: list[str]) -> None:
    """Until the controller finalized them (the next round starts clean)."""
    async with asyncio.timeout(TIMEOUT):
        for name in names:
            while True:
                try:
                    await cluster.kube.get(COMPUTE_DOMAINS, name, "default")
                except NotFound:
                    break
                cluster.changed.clear()
                await cluster.changed.wait()


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _describe(result: Round) -> str:
    firsts, warm = result.first_prepares, result.warm_prepares
    return (
        f"create→Ready {_ms(result.create_to_ready)}, last daemon→Ready {_ms(result.daemons_to_ready)}, "
        f"first prepare p50 {_ms(statistics.median(firsts))} max {_ms(max(firsts))}, "
        f"warm prepare p50 {_ms(statistics.median(warm))}"
    )


async def run(racks: int, rounds: int) -> list[Round]:
    with tempfile.TemporaryDirectory(prefix="gpudra-bench-domains-") as root:
        async with cluster(Path(root), racks) as trays:
            results = []
            for number in range(rounds):
                cpu = time.process_time()
                result = await one_round(trays, number)
                results.append(result)
                print(f"round {number}: {_describe(result)}, bench process CPU {time.process_time() - cpu:.2f} s")
            return results


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench domains")
    parser.add_argument("--racks", type=int, default=1, help="racks of 18 trays, one domain each")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.racks, args.rounds))
    print(
        f"{args.racks * TRAYS_PER_RACK} trays, {args.racks} domain(s), median of {len(results)} rounds: "
        f"create→Ready {_ms(statistics.median(r.create_to_ready for r in results))}, "
        f"last daemon→Ready {_ms(statistics.median(r.daemons_to_ready for r in results))}, "
        f"first channel prepare p50 {_ms(statistics.median(p for r in results for p in r.first_prepares))}, "
        f"warm channel prepare p50 {_ms(statistics.median(p for r in results for p in r.warm_prepares))}"
    )
