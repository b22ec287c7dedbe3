"""The remediation controller end to end on a real nats-server, with simulated nodes and the standalone
Kubernetes store (LocalKube on NATS KV). Three parts, each printing its figures:

- latency: under steady load (faults at ``--rate`` per second on random healthy nodes among ``--nodes``,
  half XID 48 on a GPU, half XID 79 on the node, plus informational events and duplicates), the time from the
  fault's publication to its device taint in the ``gpudra_health`` entry discovery watches, and to the Node's
  cordon in the Kubernetes store, as a watcher of each sees them; p50 and p99. Every fault runs its whole
  cycle (drain, reset or reboot, verify, back in service) meanwhile.
- burst: ``--burst-nodes`` nodes fail at once (XID 79); the time from the first publication until every one
  of them is cordoned with its device tainted (the breaker's limits raised for the run).
- ingest: ``--events`` health events already in the stream, taken in by the controller (decided, written,
  acked), beside a plain JetStream pull consumer fetching and acking the same events, in the same run.
  Two mixes: a flood of copies (what a flapping monitor sends), and events that each change something.
- sweep: the leader's periodic look over every node's book (for work a dead replica left, and Nodes whose
  cordon changed), with ``--sweep-nodes`` books in KV, each holding a quarantined GPU and its history.

Goals: p99 under 100 ms; the 1,000-node burst quarantined in under 10 s (NVSentinel: P90 163 s for 375
nodes); ingest at least 10,000 events/s (NVSentinel: about 74/s).

    python -m bench health [--part latency|burst|ingest|sweep] [--nodes 200] [--rate 20] [--seconds 10]
                           [--burst-nodes 1000] [--events 30000] [--sweep-nodes 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import msgspec
import nats
from nats.aio.msg import Msg
from nats.js import api

from bench._stats import pct
from bench._trust import SecuredServer
from libs.bus import Bus
from libs.bus.topology import HEALTH_BUCKET, INVENTORY_BUCKET, REMEDIATION_BUCKET, event_stream
from libs.devices.model import Inventory
from libs.devices.simulated import load_profile
from libs.devices.simulated.ops import initial_state, inventory_of
from libs.events import Domain, encode, node_token
from libs.events.catalogue.health import EntityRef, HealthEvent, ResetGpuReply
from libs.events.envelope import event_source
from libs.events.subjects import node_from_token
from libs.kube import NODES, LocalKube
from libs.trust.roles import Role
from services.health.catalogue import default_catalogue
from services.health.controller import Controller, running_controller
from services.health.controller import metrics as controller_metrics
from services.health.controller.books import StoredNode, node_key
from services.health.controller.config import from_settings
from services.health.remediation import InventoryObserved, RemediationConfig, assess, new_book, step
from services.health.settings import Settings

Clock = Callable[[], float]


# --- a fleet of simulated nodes ----------------------------------------------------------------------


class Fleet:
    """Inventories in KV, Nodes in the standalone store, and every node's ResetGpu answered (with the healthy
    events the node agent publishes after a reset), so each fault's whole cycle runs."""

    def __init__(self, bus: Bus, kube: LocalKube, count: int, prefix: str, reboot_seconds: float = 0.0) -> None:
        self.bus = bus
        self.reboot_seconds = reboot_seconds
        self.kube = kube
        self.names = [f"{prefix}-{index:04d}" for index in range(count)]
        self._template = inventory_of(initial_state("template", load_profile("dgx-h100")))
        self.active: dict[str, set[tuple[int, str]]] = {}
        """Per node, the XID conditions its monitors have raised (the node agent's ledger)."""

    async def fault(self, node: str, minor: int, code: str) -> None:
        self.active.setdefault(node, set()).add((minor, code))
        await self.report(event(node, self.gpu(node, minor), code))

    async def report(self, fault: HealthEvent) -> None:
        """Publish as the node's health service: the controller takes a node's health only from its own services
        (their CloudEvents source; a fault from anyone else is refused, see docs/security.md)."""
        await publish_as_node(self.bus, fault)

    def gpu(self, node: str, minor: int) -> EntityRef:
        return EntityRef(kind="gpu", id=f"GPU-{node}-{minor}", device=f"gpu-{minor}")

    def inventory(self, node: str) -> Inventory:
        gpus = tuple(msgspec.structs.replace(g, uuid=self.gpu(node, g.minor).id) for g in self._template.gpus)
        return msgspec.structs.replace(self._template, node=node, gpus=gpus)

    async def start(self) -> None:
        kv = await self.bus.kv(INVENTORY_BUCKET)
        await asyncio.gather(*(kv.put(node_token(n), msgspec.json.encode(self.inventory(n))) for n in self.names))
        for chunk in range(0, len(self.names), 100):
            await asyncio.gather(
                *(
                    self.kube.create(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
                    for name in self.names[chunk : chunk + 100]
                )
            )
        await self.bus.nc.subscribe("gpudra.v1.*.rpc.health.reset-gpu", cb=self._reset)

    async def _reset(self, msg: Msg) -> None:
        node = node_from_token(msg.subject.split(".")[2])
        device = msgspec.json.decode(msg.data)["device"]
        await self.healthy(node, int(device.removeprefix("gpu-")))
        await msg.respond(msgspec.json.encode(ResetGpuReply(device=device, duration_ms=1.0)))

    async def healthy(self, node: str, minor: int | None = None) -> None:
        """What the node agent publishes after a reset of ``minor`` (None: every GPU, a reboot)."""
        active = self.active.get(node, set())
        cleared = {(m, code) for m, code in active if minor is None or m == minor}
        active -= cleared
        for m, code in sorted(cleared):
            await self.report(event(node, self.gpu(node, m), code, healthy=True))

    async def reboot(self, node: str, mode: Literal["bare-metal", "vm"]) -> str:
        await asyncio.sleep(self.reboot_seconds)  # a machine takes its time to come back
        await self.healthy(node)
        return "rebooted (bench)"


async def publish_as_node(bus: Bus, fault: HealthEvent) -> None:
    headers, body = encode(fault, source=event_source(fault.node, "health"))
    await bus.js.publish(f"gpudra.v1.{node_token(fault.node)}.health.events", body, headers=headers)


def event(node: str, entity: EntityRef, code: str, *, check: str = "xid", healthy: bool = False) -> HealthEvent:
    return HealthEvent(
        node=node,
        check=check,
        component="gpu",
        entity=entity,
        error_codes=[code],
        healthy=healthy,
        fatal=not healthy and check == "xid",
        detected_at=dt.datetime.now(dt.UTC),
    )


# --- what the cluster shows -------------------------------------------------------------------------


class Stalled(Exception):
    """What the cluster should have shown did not come in time: the run fails, saying what was awaited."""


class Signal:
    """Wakes whoever waits for a condition on state the watchers change."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not done():
                    await self._event.wait()
        except TimeoutError:
            raise Stalled(f"{what}: not seen within {timeout:g} s") from None


class Observer:
    """What a watcher of the taints entry (discovery) and of the Nodes sees: when each node got a blocking device
    taint and a cordon after its fault, and whether it is back in service."""

    def __init__(self, bus: Bus, kube: LocalKube, clock: Clock) -> None:
        self._bus = bus
        self._kube = kube
        self._clock = clock
        self.tainted: dict[str, float] = {}
        self.cordoned: dict[str, float] = {}
        self.blocked: set[str] = set()
        self.unschedulable: set[str] = set()
        self.changed = Signal()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        watcher = await (await self._bus.kv(HEALTH_BUCKET)).watchall()
        self._tasks.append(asyncio.create_task(self._taints(watcher)))
        listed = await self._kube.list(NODES)
        self._tasks.append(asyncio.create_task(self._nodes(listed.resource_version)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def reset(self, node: str) -> None:
        self.tainted.pop(node, None)
        self.cordoned.pop(node, None)

    def in_service(self, node: str) -> bool:
        return node not in self.blocked and node not in self.unschedulable

    async def _taints(self, watcher: Any) -> None:
        async for entry in watcher:
            if entry is None:
                continue
            node = node_from_token(entry.key.removesuffix(".taints"))
            taints = msgspec.json.decode(entry.value or b"{}")
            if any(t["effect"] in ("NoSchedule", "NoExecute") for device in taints.values() for t in device):
                self.tainted.setdefault(node, self._clock())
                self.blocked.add(node)
            else:
                self.blocked.discard(node)
            self.changed.notify()

    async def _nodes(self, version: str) -> None:
        async with contextlib.aclosing(self._kube.watch(NODES, resource_version=version)) as events:
            async for _, obj in events:
                name = obj["metadata"]["name"]
                if (obj.get("spec") or {}).get("unschedulable"):
                    self.cordoned.setdefault(name, self._clock())
                    self.unschedulable.add(name)
                else:
                    self.unschedulable.discard(name)
                self.changed.notify()


# --- the system under test --------------------------------------------------------------------------


@asynccontextmanager
async def cluster(
    nodes: int, prefix: str, reboot_seconds: float = 0.0
) -> AsyncIterator[tuple[SecuredServer, Bus, Fleet]]:
    """A nats-server, the standalone Kubernetes store and a fleet of nodes (this process plays them all)."""
    with tempfile.TemporaryDirectory() as tmp:
        secured = SecuredServer(Path(tmp))
        await secured.server.start()
        bus = await Bus.connect(secured.settings("bench", "bench"), "bench")
        try:
            await bus.bootstrap()
            fleet = Fleet(bus, await LocalKube.open(bus.js), nodes, prefix, reboot_seconds)
            await fleet.start()
            yield secured, bus, fleet
        finally:
            await bus.close()
            await secured.server.stop()


@asynccontextmanager
async def controlled(secured: SecuredServer, fleet: Fleet, **settings: Any) -> AsyncIterator[Controller]:
    """The controller, on its own connection as in its own process, with the fleet as its reboot hook."""
    config = controller_settings(secured, **settings)
    bus = await Bus.connect(config, "health")
    try:
        async with running_controller(bus, config, from_settings(config), reboot=fleet) as controller:
            yield controller
    finally:
        await bus.close()


@asynccontextmanager
async def system(
    nodes: int, prefix: str, reboot_seconds: float = 0.0, **settings: Any
) -> AsyncIterator[tuple[Bus, Fleet, Controller]]:
    async with (
        cluster(nodes, prefix, reboot_seconds) as (secured, bus, fleet),
        controlled(secured, fleet, **settings) as controller,
    ):
        yield bus, fleet, controller


def controller_settings(secured: SecuredServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "nats_url": secured.url,
        "nats_creds": secured.creds("health", "controller-0", [Role.HEALTH_CONTROLLER]),
        "node_name": "controller-0",
        "role": "controller",
        "kube_mode": "local",
        "metrics_port": -1,
        "verify_seconds": 10.0,
        "drain_pass_seconds": 0.5,
        "breaker_max_share": 1.0,
        "breaker_max_nodes": 100_000,
        "controller_id": "bench",
        **overrides,
    }
    return msgspec.convert(values, Settings)


# --- latency under steady load ------------------------------------------------------------------------


async def latency(nodes: int, rate: float, seconds: float) -> None:
    async with system(nodes, "steady") as (bus, fleet, _):
        observer = Observer(bus, fleet.kube, time.perf_counter)
        await observer.start()
        samples: dict[str, list[float]] = {"taint": [], "cordon": []}
        busy: set[str] = set()
        used = dict.fromkeys(fleet.names, 0)
        noise = asyncio.create_task(background(bus, fleet, rate * 10))
        tasks: list[asyncio.Task[None]] = []
        deadline = time.perf_counter() + seconds
        try:
            while time.perf_counter() < deadline:
                node = min((n for n in fleet.names if n not in busy), key=used.__getitem__)  # few repeats
                used[node] += 1
                busy.add(node)
                scope = "node" if len(tasks) % 2 else "device"
                fault = one_fault(fleet, observer, node, scope=scope, samples=samples, busy=busy)
                tasks.append(asyncio.create_task(fault))
                await asyncio.sleep(1 / rate)  # the load's pace
            await asyncio.gather(*tasks)
        finally:  # a stalled fault ends the run: nothing may go on publishing into a closing connection
            for task in (noise, *tasks):
                task.cancel()
            await asyncio.gather(noise, *tasks, return_exceptions=True)
            await observer.stop()
    print(
        f"latency under steady load ({nodes} nodes, {rate:g} faults/s for {seconds:g} s, {10 * rate:g} other events/s)"
    )
    print(f"  detect → device taint  {summary(samples['taint'])}")
    print(f"  detect → cordon        {summary(samples['cordon'])}")


async def one_fault(
    fleet: Fleet, observer: Observer, node: str, *, scope: str, samples: dict[str, list[float]], busy: set[str]
) -> None:
    """One fault's detect → quarantine times; the node is free again once it is back in service."""
    observer.reset(node)
    started = time.perf_counter()
    await fleet.fault(node, random.randrange(8), "79" if scope == "node" else "48")
    if scope == "node":
        await observer.changed.until(
            lambda: node in observer.cordoned and node in observer.tainted, 30, f"{node}: XID 79 → cordon and taint"
        )
        samples["cordon"].append((observer.cordoned[node] - started) * 1000)
    else:
        await observer.changed.until(lambda: node in observer.tainted, 30, f"{node}: XID 48 → device taint")
    samples["taint"].append((observer.tainted[node] - started) * 1000)
    await observer.changed.until(lambda: observer.in_service(node), 60, f"{node}: back in service after its fault")
    busy.discard(node)


async def background(bus: Bus, fleet: Fleet, rate: float) -> None:
    """Informational events and duplicates, as monitors send them all the time."""
    while True:
        node = random.choice(fleet.names)
        await publish_as_node(bus, event(node, fleet.gpu(node, random.randrange(8)), "slowdown", check="thermal"))
        await asyncio.sleep(1 / rate)


def summary(samples: list[float]) -> str:
    if not samples:
        return "no samples"
    return f"p50 {statistics.median(samples):6.1f} ms   p99 {pct(samples, 0.99):6.1f} ms   ({len(samples)} faults)"


# --- a burst of nodes failing at once -----------------------------------------------------------------


async def burst(count: int) -> None:
    async with system(count, "burst", reboot_seconds=300, controller_workers=256) as (bus, fleet, _):
        observer = Observer(bus, fleet.kube, time.perf_counter)
        await observer.start()
        started = time.perf_counter()
        await asyncio.gather(*(fleet.fault(n, 3, "79") for n in fleet.names))
        published = time.perf_counter() - started
        names = set(fleet.names)
        await observer.changed.until(
            lambda: names <= observer.cordoned.keys() and names <= observer.tainted.keys(),
            120,
            f"all {count} nodes cordoned and tainted",
        )
        took = max(*observer.cordoned.values(), *observer.tainted.values()) - started
        await observer.stop()
        cordons = sorted(t - started for t in observer.cordoned.values())
    p90 = cordons[int(0.9 * len(cordons)) - 1]
    print(f"burst: {count} nodes fail at once (XID 79), published in {published:.2f} s")
    print(f"  all cordoned and tainted after {took:.2f} s   (P50 {statistics.median(cordons):.2f} s, P90 {p90:.2f} s)")


# --- health-event ingest ------------------------------------------------------------------------------


async def ingest(events: int, nodes: int) -> None:
    for mix in ("copies", "changes"):
        async with cluster(nodes, "ingest") as (secured, bus, fleet):
            await prepublish(bus, fleet, events, mix)
            raw = await raw_consume(bus, events)
            before, started = taken_in(), time.perf_counter()
            async with controlled(secured, fleet, controller_workers=256) as controller:
                await controller_consumed(controller, events, before)
                taken = events / (time.perf_counter() - started)
        print(f"ingest, {mix}: {events} events from {nodes} nodes already in the stream")
        print(f"  raw JetStream pull consumer (fetch + ack)    {raw:8.0f} events/s")
        print(
            f"  remediation controller (decide, write, ack)  {taken:8.0f} events/s   ({100 * taken / raw:.0f} % of raw)"
        )


async def prepublish(bus: Bus, fleet: Fleet, count: int, mix: str) -> None:
    """``copies``: each node's GPUs keep reporting the same few informational faults; ``changes``: every
    event flips a condition on or off, so every one changes the node's book."""
    checks = ("thermal", "pcie", "ecc-counters")
    codes = {"thermal": "slowdown", "pcie": "replays-rising", "ecc-counters": "corrected-rising"}
    sends: list[Awaitable[object]] = []
    for index in range(count):
        node = fleet.names[index % len(fleet.names)]
        round_no = index // len(fleet.names)
        check = checks[round_no % len(checks)]
        healthy = mix == "changes" and (round_no // len(checks)) % 2 == 1
        fault = event(
            node, fleet.gpu(node, round_no % 8 if mix == "changes" else 0), codes[check], check=check, healthy=healthy
        )
        sends.append(publish_as_node(bus, fault))
        if len(sends) == 1000:
            await asyncio.gather(*sends)
            sends = []
    await asyncio.gather(*sends)


async def raw_consume(bus: Bus, count: int) -> float:
    subscription = await bus.js.pull_subscribe(
        "gpudra.v1.*.health.events",
        durable="bench-raw",
        stream=event_stream(Domain.HEALTH),
        config=api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, max_ack_pending=-1),
    )
    started, seen = time.perf_counter(), 0
    while seen < count:
        with contextlib.suppress(nats.errors.TimeoutError):
            for msg in await subscription.fetch(1024, timeout=1):
                msgspec.json.decode(msg.data)
                await msg.ack()
                seen += 1
    rate = count / (time.perf_counter() - started)
    await subscription.unsubscribe()
    return rate


def taken_in() -> float:
    """Health events the controllers of this process have taken in so far (its metric)."""
    counted = [controller_metrics.EVENTS.labels(o)._value.get() for o in ("decided", "duplicate", "rejected")]
    return float(sum(counted))


async def controller_consumed(controller: Controller, count: int, before: float) -> None:
    """Returns once the controller has taken ``count`` events in since ``before``."""
    while taken_in() - before < count:  # noqa: ASYNC110 - a counter has nothing to await; 5 ms is the resolution
        await asyncio.sleep(0.005)
    await controller.lanes.wait_idle()


# --- the leader's sweep ----------------------------------------------------------------------------------


async def sweep(nodes: int, rounds: int = 10) -> None:
    async with cluster(nodes, "sweep") as (secured, bus, fleet):
        size = await write_books(bus, fleet)
        async with controlled(secured, fleet, sweep_seconds=3600.0) as controller:
            took = []
            for _ in range(rounds):
                started = time.perf_counter()
                await controller.sweep(own_only=False)
                took.append(time.perf_counter() - started)
    median = statistics.median(took)
    print(f"sweep: the leader looks over {nodes} books ({size} bytes each), {rounds} times")
    print(f"  {median * 1000:.0f} ms per sweep (min {min(took) * 1000:.0f} ms), {median / nodes * 1e6:.0f} µs per book")


async def write_books(bus: Bus, fleet: Fleet) -> int:
    """Each node's book as the rules leave it with GPU 3 quarantined for an XID 48; returns one book's size."""
    kv = await bus.kv(REMEDIATION_BUCKET)
    now, rules, catalogue = dt.datetime.now(dt.UTC), RemediationConfig(), default_catalogue()
    encoded = b""
    for chunk in range(0, len(fleet.names), 100):
        writes = []
        for node in fleet.names[chunk : chunk + 100]:
            devices = tuple(gpu.name for gpu in fleet.inventory(node).gpus)
            book, _ = step(new_book(node), InventoryObserved(devices=devices), now, rules)
            book, decided = assess(book, event(node, fleet.gpu(node, 3), "48"), catalogue, now)
            assert decided is not None
            book, _ = step(book, decided, now, rules)
            encoded = msgspec.json.encode(StoredNode(book=book))
            writes.append(kv.put(node_key(node), encoded))
        await asyncio.gather(*writes)
    return len(encoded)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench health", description=__doc__)
    parts_help = "one part (default: all)"
    parser.add_argument("--part", choices=("latency", "burst", "ingest", "sweep"), default=None, help=parts_help)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="faults per second in the latency part")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--burst-nodes", type=int, default=1000)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--sweep-nodes", type=int, default=1000)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    parts: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
        "latency": lambda: latency(args.nodes, args.rate, args.seconds),
        "burst": lambda: burst(args.burst_nodes),
        "ingest": lambda: ingest(args.events, 100),
        "sweep": lambda: sweep(args.sweep_nodes),
    }
    for name, part in parts.items():
        if args.part in (None, name):
            try:
                asyncio.run(part())
            except Stalled as stalled:
                print(f"bench health, {name}: FAILED: {stalled}", file=sys.stderr)
                sys.exit(1)
