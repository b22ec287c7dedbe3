"""Shared pieces of the claim_preparation tests: settings in a temp dir, claims in the store, the running service.

The service runs in-process on its own bus connection (as it would in its own process), against a real
nats-server, the standalone Kubernetes store (a KV bucket on that server) and a simulated machine whose state
lives in the test's temp dir. Tests talk to it as the kubelet_shim does: NATS requests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from libs.bus import Bus, ServiceUnavailable
from libs.cdi.schema import SchemaValidator
from libs.claims.configapi import API_VERSION
from libs.devices.simulated import SimulatedBackend
from libs.devices.simulated.backend import DEFAULT_POLL_INTERVAL
from libs.devices.simulated.state import SimState, StateStore
from libs.events.catalogue import (
    ClaimRef,
    PrepareClaims,
    PrepareClaimsReply,
    UnprepareClaims,
    UnprepareClaimsReply,
)
from libs.kube import RESOURCE_CLAIMS, KubeApi
from services.claim_preparation.service import ClaimService, running
from services.claim_preparation.settings import Settings
from tests.support.nats_fixture import service_fields

NODE = "node-a"
DRIVER = "gpu.gpudra.io"
PROFILE = "mixed-mig"
"""GPUs 0-2 hold static MIG devices, GPU 3 has MIG on and nothing created (dynamic), GPUs 4-7 are whole."""
CDI_SCHEMA = Path(__file__).resolve().parents[1] / "cdi" / "schema"
"""The CDI project's JSON schema (Apache-2.0), copied byte for byte: tests/cdi/schema/SOURCE.txt says from where."""

STATIC_MIG = "gpu-0-mig-1g10gb-19-0"
DYNAMIC_MIG = "gpu-3-mig-3g40gb-9-0"


def node_fields(root: Path) -> dict[str, object]:
    """claim_preparation's settings for a simulated ``mixed-mig`` node under ``root``, all but the connection."""
    boot_id = root / "boot_id"
    if not boot_id.exists():
        boot_id.write_text("boot-1\n")
    return {
        "state_dir": str(root / "state"),
        "cdi_dir": str(root / "cdi"),
        "simulated_dir": str(root / "simulated"),
        "mig_mode": "dynamic",
        "backend": "simulated",
        "profile": PROFILE,
        "kube_mode": "local",
        "boot_id_path": str(boot_id),
        "metrics_port": -1,
    }


def service_settings(root: Path, nats_url: str, **overrides: object) -> Settings:
    values = {**service_fields(nats_url, NODE, "claim_preparation"), **node_fields(root), **overrides}
    return Settings(**values)  # type: ignore[arg-type]


def gpu_config(**sharing: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "GpuConfig", **({"sharing": sharing} if sharing else {})}


def mig_config(**sharing: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "MigDeviceConfig", **({"sharing": sharing} if sharing else {})}


def opaque(parameters: Any, requests: Sequence[str] = (), source: str = "FromClaim") -> dict[str, Any]:
    entry: dict[str, Any] = {"source": source, "opaque": {"driver": DRIVER, "parameters": parameters}}
    if requests:
        entry["requests"] = list(requests)
    return entry


def allocation(
    devices: Sequence[tuple[str, str]],
    configs: Sequence[dict[str, Any]] = (),
    *,
    node: str = NODE,
    driver: str = DRIVER,
) -> dict[str, Any]:
    """``status.allocation`` for (request, device) pairs on ``node``."""
    return {
        "devices": {
            "results": [{"request": r, "driver": driver, "pool": node, "device": d} for r, d in devices],
            "config": list(configs),
        },
        "nodeSelector": {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
        },
    }


def claim_object(name: str, requests: Sequence[str], namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "devices": {
                "requests": [
                    {"name": r, "exactly": {"deviceClassName": "gpu.gpudra.io", "allocationMode": "ExactCount"}}
                    for r in dict.fromkeys(requests)
                ]
            }
        },
    }


async def store_claim(
    kube: KubeApi,
    name: str,
    devices: Sequence[tuple[str, str]],
    configs: Sequence[dict[str, Any]] = (),
    **where: Any,
) -> ClaimRef:
    """Create an allocated claim in the store; its ref as the kubelet would send it."""
    created = await kube.create(RESOURCE_CLAIMS, claim_object(name, [r for r, _ in devices]))
    created["status"] = {"allocation": allocation(devices, configs, **where)}
    await kube.update_status(RESOURCE_CLAIMS, created)
    return ClaimRef(namespace="default", name=name, uid=created["metadata"]["uid"])


@dataclass
class EventLog:
    """Claim events as they arrive on the bus (core subscription: sees every JetStream publish)."""

    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = field(default_factory=asyncio.Queue)
    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def on_message(self, msg: Msg) -> None:
        kind = (msg.headers or {}).get("ce-type", "")
        if kind:
            await self.queue.put((kind.split(".")[2], msgspec.json.decode(msg.data)))

    async def next(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next event of ``kind`` (``ClaimPrepared``...); earlier events of other kinds are kept in ``seen``."""
        async with asyncio.timeout(timeout):
            while True:
                got, data = await self.queue.get()
                self.seen.append((got, data))
                if got == kind:
                    return data


@asynccontextmanager
async def claim_events(bus: Bus) -> AsyncIterator[EventLog]:
    log = EventLog()
    subscription: Subscription = await bus.nc.subscribe(f"gpudra.v1.{NODE}.claims.>", cb=log.on_message)
    await bus.nc.flush()
    try:
        yield log
    finally:
        await subscription.unsubscribe()


@asynccontextmanager
async def serving(nats_url: str, settings: Settings, **given: Any) -> AsyncIterator[ClaimService]:
    """claim_preparation on its own connection, serving its endpoints until the block exits."""
    service_bus = await Bus.connect(settings, "claim_preparation")
    try:
        async with running(service_bus, settings, **given) as service:
            await service_bus.serve("0.0.0-test", service.endpoints)
            await service_bus.nc.flush()  # the endpoints' subscriptions reach the server before any request
            yield service
    finally:
        await service_bus.close()


async def until_answering(bus: Bus, attempts: int = 50) -> None:
    """Ask until the service answers: right after another connection subscribes (even after its flush),
    nats-server now and then still answers "no responders" to a first request (seen here in ~3% of starts)."""
    for _ in range(attempts - 1):
        try:
            await unprepare(bus)
            return
        except ServiceUnavailable:
            continue
    await unprepare(bus)


async def prepare(bus: Bus, *claims: ClaimRef) -> PrepareClaimsReply:
    return await bus.request(NODE, PrepareClaims(claims=list(claims)), PrepareClaimsReply, timeout=20)


async def unprepare(bus: Bus, *claims: ClaimRef) -> UnprepareClaimsReply:
    return await bus.request(NODE, UnprepareClaims(claims=list(claims)), UnprepareClaimsReply, timeout=20)


async def machine(settings: Settings) -> SimulatedBackend:
    """The simulated machine the service drives, opened separately (as another process would)."""
    return await SimulatedBackend.open(NODE, settings.simulated_state)


B = TypeVar("B", bound=SimulatedBackend)


async def open_machine(cls: type[B], settings: Settings) -> B:
    """The test's machine as a ``SimulatedBackend`` subclass (gates, failures), created from the profile."""
    await SimulatedBackend.open(NODE, settings.simulated_state, settings.profile)
    return cls(NODE, StateStore(settings.simulated_state), DEFAULT_POLL_INTERVAL)


def sim_state(settings: Settings) -> SimState:
    """What the simulated hardware holds now (sharing settings included)."""
    state = StateStore(settings.simulated_state).read()
    assert state is not None
    return state


def cdi_files(settings: Settings) -> list[Path]:
    directory = Path(settings.cdi_dir)
    return sorted(directory.iterdir()) if directory.is_dir() else []


def schema() -> SchemaValidator:
    return SchemaValidator(CDI_SCHEMA)


def spec_of(settings: Settings, ref: ClaimRef) -> dict[str, Any]:
    """The claim's CDI spec, checked against the CDI schema."""
    [spec_file] = [f for f in cdi_files(settings) if ref.uid in f.name]
    spec: dict[str, Any] = json.loads(spec_file.read_text())
    schema().check(spec)
    return spec
