"""Shared pieces of the remediation controller tests: a controller in the test process (own connection, the
Kubernetes API test server), simulated nodes (a lightweight one that only has an inventory and a ResetGpu
responder, and a full one with discovery, the node agent and the kubelet's health view), health events, and a
feed of what the controller publishes."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
from nats.aio.msg import Msg

from libs.bus import Bus, CommandError, Endpoint
from libs.bus.device_health import DeviceHealthFollower
from libs.bus.topology import HEALTH_BUCKET, INVENTORY_BUCKET, REMEDIATION_BUCKET
from libs.devices.model import Inventory
from libs.devices.simulated import SimulatedBackend
from libs.events import Envelope, Event, decode, node_token
from libs.events.catalogue.health import EntityRef, HealthEvent, ResetGpu, ResetGpuReply
from libs.natsserver import EmbeddedNats
from libs.settings import CommonSettings
from libs.trust.roles import Role
from libs.version import VERSION
from services.discovery.service import running as running_discovery
from services.discovery.settings import Settings as DiscoverySettings
from services.health.controller import Controller, running_controller
from services.health.controller.books import StoredNode, node_key
from services.health.controller.config import from_settings
from services.health.controller.gpu_reset import RepairFailed
from services.health.controller.reboot import RebootHook
from services.health.service import node_side
from services.health.settings import Settings
from services.kubelet_shim.health_sources import InventoryWatch
from services.kubelet_shim.health_view import HealthView
from tests.support.kubeapi import KubeApiServer
from tests.support.nats_fixture import role_creds, service_common, service_fields, settings_for

E = TypeVar("E", bound=Event)
WAIT = 10.0
"""Longest wait for one expected thing; the tests take milliseconds to a second when all is well."""
T = TypeVar("T")


def controller_settings(nats_url: str, kube_api: KubeApiServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "node_name": "controller-0",
        "role": "controller",
        "kube_mode": "cluster",
        "kubeconfig": kube_api.url,
        "metrics_port": -1,
        "verify_seconds": 5.0,
        "drain_pass_seconds": 0.05,
        "drain_timeout_seconds": 30.0,
        "reset_timeout_seconds": 5.0,
        "lease_renew_seconds": 0.5,
        "sweep_seconds": 0.5,
        "controller_id": "ctl-test",
        "breaker_max_share": 1.0,
        **overrides,
    }
    if "nats_creds" not in values:
        values["nats_creds"] = role_creds(nats_url, "health", [Role.HEALTH_CONTROLLER], "controller-0")
    return msgspec.convert(values, Settings)


@asynccontextmanager
async def controller_process(settings: Settings, *, reboot: RebootHook | None = None) -> AsyncIterator[Controller]:
    """What the controller role of ``python -m services.health`` runs, on its own connection."""
    bus = await Bus.connect(settings, "health")
    try:
        async with running_controller(bus, settings, from_settings(settings), reboot=reboot) as controller:
            yield controller
    finally:
        await bus.close()


def add_node(
    kube_api: KubeApiServer,
    name: str,
    *,
    cordoned: bool = False,
    labels: dict[str, str] | None = None,
    boot_id: str = "",
) -> None:
    """A Node; with ``boot_id``, the system info its kubelet reports."""
    node: dict[str, Any] = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}}}
    if cordoned:
        node["spec"] = {"unschedulable": True}
    if boot_id:
        node["status"] = {"nodeInfo": node_info(boot_id)}
    kube_api.store.create(node)


def node_info(boot_id: str) -> dict[str, str]:
    """A kubelet's ``status.nodeInfo`` (every field is required)."""
    return {
        "bootID": boot_id,
        "machineID": "0f4e1c2b9d8a4e6f8a7b6c5d4e3f2a1b",
        "systemUUID": "4c4c4544-0042-3510-8051-b4c04f4b3732",
        "kernelVersion": "6.8.0-45-generic",
        "osImage": "Ubuntu 24.04.1 LTS",
        "containerRuntimeVersion": "containerd://1.7.22",
        "kubeletVersion": "v1.34.0",
        "kubeProxyVersion": "",
        "operatingSystem": "linux",
        "architecture": "amd64",
    }


def add_pod(
    kube_api: KubeApiServer,
    node: str,
    name: str,
    *,
    device: str = "",
    namespace: str = "default",
    tolerations: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> None:
    """A running pod on ``node``; with ``device``, it holds that GPU through a ResourceClaim of its own, whose
    result carries ``tolerations`` as the scheduler copies them from the request."""
    result: dict[str, Any] = {"request": "gpu", "driver": "gpu.gpudra.io", "pool": node, "device": device}
    if tolerations:
        result["tolerations"] = tolerations
    spec: dict[str, Any] = {"nodeName": node, "containers": [{"name": "main", "image": "trainer"}]}
    if device:
        spec["resourceClaims"] = [{"name": "gpu", "resourceClaimName": f"{name}-gpu"}]
        kube_api.store.create(
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaim",
                "metadata": {"name": f"{name}-gpu", "namespace": namespace},
                "spec": {"devices": {"requests": []}},
                "status": {"allocation": {"devices": {"results": [result]}}},
            }
        )
    metadata = {"name": name, "namespace": namespace, **extra}
    kube_api.store.create(
        {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": {"phase": "Running"}}
    )


def pods_on(kube_api: KubeApiServer, node: str) -> list[str]:
    return sorted(
        f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        for p in kube_api.store.list("pods")
        if p["spec"].get("nodeName") == node
    )


def kube_node(kube_api: KubeApiServer, name: str) -> dict[str, Any]:
    found = kube_api.store.get("nodes", name)
    assert found is not None
    return found


def cordoned(kube_api: KubeApiServer, name: str) -> bool:
    return bool(kube_node(kube_api, name).get("spec", {}).get("unschedulable"))


def node_taints(kube_api: KubeApiServer, name: str) -> list[str]:
    return [
        f"{t['key']}={t.get('value', '')}:{t['effect']}" for t in kube_node(kube_api, name)["spec"].get("taints") or []
    ]


async def until(check: Callable[[], T | None], kube_api: KubeApiServer, timeout: float = WAIT) -> T:
    """``check()`` once truthy, looked at again after every write to the API server."""
    return await kube_api.store.wait_for(check, timeout)


class Signal:
    """Says "something changed" to whoever waits for a condition on state another task changes."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def until(self, check: Callable[[], T | None], timeout: float = WAIT) -> T:
        async with asyncio.timeout(timeout):
            while not (result := check()):
                await self._event.wait()
        return result


# --- nodes -------------------------------------------------------------------------------------------


@dataclass
class LightNode:
    """A node that has only an inventory in KV and a ResetGpu responder (records calls; ``on_reset`` runs
    before the reply, ``gate`` holds the reply until set)."""

    name: str
    inventory: Inventory
    resets: list[str] = field(default_factory=list)
    fail_resets: bool = False
    gate: asyncio.Event | None = None
    publish_healthy: bool = True
    bus: Bus | None = None
    changed: Signal = field(default_factory=Signal)

    def gpu(self, minor: int) -> EntityRef:
        gpu = next(g for g in self.inventory.gpus if g.minor == minor)
        return EntityRef(kind="gpu", id=gpu.uuid, device=gpu.name)

    async def report(self, event: HealthEvent) -> None:
        """As the node's monitors report it: on the node's own connection, so the source names the node."""
        assert self.bus is not None, "the node is not connected"
        await self.bus.publish(event)

    async def reset(self, command: ResetGpu) -> ResetGpuReply:
        self.resets.append(command.device)
        self.changed.notify()
        if self.fail_resets:
            raise CommandError(500, f"node {self.name}: GPU reset failed: simulated")
        if self.publish_healthy and self.bus is not None:
            minor = int(command.device.removeprefix("gpu-"))
            for code in ("48", "79", "74"):
                await self.bus.publish(health_event(self.name, self.gpu(minor), "xid", code, healthy=True))
        if self.gate is not None:
            await self.gate.wait()
        return ResetGpuReply(device=command.device, duration_ms=1.0)


@asynccontextmanager
async def light_node(nats_url: str, tmp_path: Path, name: str, profile: str = "dgx-h100") -> AsyncIterator[LightNode]:
    backend = await SimulatedBackend.open(name, tmp_path / name, profile)
    node = LightNode(name=name, inventory=await backend.inventory())
    bus = await Bus.connect(settings_for(nats_url, name), "health")  # plays discovery and the node agent
    node.bus = bus
    try:
        kv = await bus.kv(INVENTORY_BUCKET)
        await kv.put(node_token(name), msgspec.json.encode(node.inventory))
        await bus.serve(VERSION, [Endpoint(ResetGpu, node.reset, concurrency=8)])
        await bus.nc.flush()
        yield node
    finally:
        await bus.close()


@dataclass
class SimNode:
    """A node with real parts: discovery (slices to the API server), the node agent, the kubelet's view."""

    name: str
    view: HealthView
    backend: SimulatedBackend
    seen: dict[str, list[str]] = field(default_factory=dict)
    """Per device, each health the kubelet's stream reported, in order (repeats folded)."""
    changed: Signal = field(default_factory=Signal)

    def health(self, device: str) -> str:
        return next((e.health for e in self.view.snapshot() if e.device == device), "")

    async def follow(self) -> None:
        version = -1
        while not self.view.closed:
            await self.view.wait_change(version, 60.0)
            version = self.view.version
            for entry in self.view.snapshot():
                history = self.seen.setdefault(entry.device, [])
                if not history or history[-1] != entry.health:
                    history.append(entry.health)
            self.changed.notify()


@asynccontextmanager
async def sim_node(nats: EmbeddedNats, kube_api: KubeApiServer, tmp_path: Path, name: str) -> AsyncIterator[SimNode]:
    state = tmp_path / name
    common: dict[str, Any] = {
        "nats_url": nats.url,
        "node_name": name,
        "state_dir": str(state),
        "backend": "simulated",
        "profile": "dgx-h100",
        "kube_mode": "cluster",
        "kubeconfig": kube_api.url,
        "metrics_port": -1,
    }
    discovery = msgspec.convert(
        {**common, **service_fields(nats.url, name, "discovery"), "resync_seconds": 3600.0, "retry_seconds": 0.2},
        DiscoverySettings,
    )
    health = msgspec.convert(
        {
            **common,
            "nats_creds": role_creds(nats.url, "health", [Role.HEALTH_NODE], name),
            "role": "node",
            "monitor_poll_seconds": 0.05,
            "monitor_deadline_seconds": 2.0,
            "monitor_restart_seconds": 0.05,
            "monitor_inventory_seconds": 0.5,
        },
        Settings,
    )
    async with AsyncExitStack() as stack:
        discovery_bus = await _bus(stack, discovery, "discovery")
        found = await stack.enter_async_context(running_discovery(discovery_bus, discovery))
        await discovery_bus.serve(VERSION, found.endpoints)
        health_bus = await _bus(stack, health, "health")
        endpoints = await stack.enter_async_context(node_side(health_bus, health))
        await health_bus.serve(VERSION, endpoints)
        shim_bus = await _bus(stack, service_common(nats.url, name, "kubelet_shim"), "kubelet_shim")
        view = HealthView()
        for source in (DeviceHealthFollower(shim_bus, name, view.apply), InventoryWatch(shim_bus, view, name)):
            await source.start()
            stack.push_async_callback(source.stop)
        await discovery_bus.nc.flush()
        await health_bus.nc.flush()
        backend = await SimulatedBackend.open(name, state / "simulated")
        node = SimNode(name=name, view=view, backend=backend)
        follower = asyncio.create_task(node.follow())
        stack.callback(view.close)
        stack.callback(follower.cancel)
        yield node


async def _bus(stack: AsyncExitStack, settings: CommonSettings, service: str) -> Bus:
    bus = await Bus.connect(settings, service)
    stack.push_async_callback(bus.close)
    return bus


def slice_taints(kube_api: KubeApiServer, node: str, device: str) -> list[dict[str, Any]]:
    for item in kube_api.store.list("resourceslices.resource.k8s.io"):
        if item["spec"].get("nodeName") != node:
            continue
        for published in item["spec"].get("devices") or ():
            if published["name"] == device:
                return list(published.get("taints") or [])
    return []


# --- events ------------------------------------------------------------------------------------------


def health_event(
    node: str, entity: EntityRef, check: str = "xid", code: str = "48", *, healthy: bool = False
) -> HealthEvent:
    return HealthEvent(
        node=node,
        check=check,
        component="gpu",
        entity=entity,
        error_codes=[code],
        healthy=healthy,
        fatal=not healthy,
        detected_at=dt.datetime.now(dt.UTC),
    )


class Feed:
    """What the controller publishes (remediation events, verdicts, device health), as any subscriber sees it."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Envelope[Event]] = asyncio.Queue()
        self.seen: list[Event] = []
        self.ids: list[str] = []
        self.changed = Signal()

    @classmethod
    async def subscribe(cls, bus: Bus) -> Feed:
        feed = cls()
        for subject in ("gpudra.v1.*.remediation.>", "gpudra.v1.*.health.verdicts", "gpudra.v1.*.health.devices"):
            await bus.nc.subscribe(subject, cb=feed._received)
        await bus.nc.flush()
        return feed

    async def _received(self, msg: Msg) -> None:
        envelope = decode(msg.headers, msg.data)
        self.seen.append(envelope.data)
        self.ids.append(envelope.id)
        self._queue.put_nowait(envelope)
        self.changed.notify()

    async def expect(self, kind: type[E], match: Callable[[E], bool] = lambda _: True, timeout: float = WAIT) -> E:
        async with asyncio.timeout(timeout):
            while True:
                event = (await self._queue.get()).data
                if isinstance(event, kind) and match(event):
                    return event

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.seen if isinstance(e, kind)]

    def ids_of(self, kind: type[E], match: Callable[[E], bool] = lambda _: True) -> list[str]:
        return [i for i, e in zip(self.ids, self.seen, strict=True) if isinstance(e, kind) and match(e)]


async def stored_node(bus: Bus, node: str) -> StoredNode:
    entry = await (await bus.kv(REMEDIATION_BUCKET)).get(node_key(node))
    return msgspec.json.decode(entry.value or b"", type=StoredNode)


async def taints_entry(bus: Bus, node: str) -> dict[str, Any]:
    entry = await (await bus.kv(HEALTH_BUCKET)).get(f"{node_token(node)}.taints")
    result: dict[str, Any] = msgspec.json.decode(entry.value or b"{}")
    return result


REPO = Path(__file__).resolve().parents[2]


class ChildController:
    """The controller in a child process, to be killed with SIGKILL mid-remediation."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.health_controller.health_controller_crash_child",
            msgspec.json.encode(self._settings).decode(),
            cwd=REPO,
            env={**os.environ, "OTEL_SDK_DISABLED": "true"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self._process.stdout is not None
        seen = b""
        async with asyncio.timeout(30):
            while b"READY" not in seen:
                line = await self._process.stdout.readline()
                if not line:
                    raise AssertionError(f"the controller child ended before it was ready:\n{seen.decode()}")
                seen += line

    async def kill(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        await self._process.wait()


class RecordingReboot:
    """A reboot hook that records its calls; a reboot that ``works`` clears the node's XID conditions the way
    the node agent reports them after GPU resets (healthy events), one that does not raises."""

    def __init__(self, nodes: dict[str, LightNode], *, works: bool = True) -> None:
        self.calls: list[tuple[str, str]] = []
        self._nodes = nodes
        self.works = works

    async def reboot(self, node: str, mode: Literal["bare-metal", "vm"]) -> str:
        self.calls.append((node, mode))
        if not self.works:
            raise RepairFailed(f"node {node} did not come back (test)")
        light = self._nodes[node]
        assert light.bus is not None
        for gpu in light.inventory.gpus:
            for code in ("48", "79"):
                await light.bus.publish(health_event(node, light.gpu(gpu.minor), "xid", code, healthy=True))
        return "rebooted (test)"
