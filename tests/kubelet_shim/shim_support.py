"""Shared pieces of the kubelet_shim tests: a claim_preparation stand-in on the real bus, settings, inventories.

The stand-in is a real ``nats.micro`` service on its own connection, answering the same commands the real
claim_preparation will; it records what it was asked and can be told to misbehave.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cli.up import channel_plugin_dir
from libs.bus import Bus, CommandError, Endpoint
from libs.devices.model import Gpu, Inventory
from libs.events.catalogue import (
    ClaimPrepareResult,
    ClaimRef,
    ClaimUnprepareResult,
    PrepareClaims,
    PrepareClaimsReply,
    PreparedDevice,
    UnprepareClaims,
    UnprepareClaimsReply,
)
from services.kubelet_shim.settings import Settings
from tests.support.nats_fixture import service_common, service_fields

NODE = "node-a"
DRIVER = "gpu.gpudra.io"


@dataclass
class Responder:
    """Plays claim_preparation: one device per claim, or what the test configured."""

    errors: dict[str, str] = field(default_factory=dict)
    leave_out: set[str] = field(default_factory=set)
    extra_uid: str | None = None
    fail: CommandError | None = None
    hang: bool = False
    calls: list[PrepareClaims | UnprepareClaims] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def _misbehave(self) -> None:
        if self.hang:
            await self.release.wait()
        if self.fail is not None:
            raise self.fail

    def _uids(self, claims: list[ClaimRef]) -> list[str]:
        uids = [c.uid for c in claims if c.uid not in self.leave_out]
        return uids + ([self.extra_uid] if self.extra_uid else [])

    async def prepare(self, command: PrepareClaims) -> PrepareClaimsReply:
        self.calls.append(command)
        await self._misbehave()
        return PrepareClaimsReply(results={uid: self._prepared(uid) for uid in self._uids(command.claims)})

    def _prepared(self, uid: str) -> ClaimPrepareResult:
        if uid in self.errors:
            return ClaimPrepareResult(error=self.errors[uid])
        device = PreparedDevice(
            request_names=["gpu"],
            pool=NODE,
            device="gpu-0",
            cdi_device_ids=[f"k8s.{DRIVER}/claim={uid}-gpu-0"],
            share_id=f"share-{uid}",
        )
        return ClaimPrepareResult(devices=[device])

    async def unprepare(self, command: UnprepareClaims) -> UnprepareClaimsReply:
        self.calls.append(command)
        await self._misbehave()
        return UnprepareClaimsReply(
            results={uid: ClaimUnprepareResult(error=self.errors.get(uid, "")) for uid in self._uids(command.claims)}
        )


@asynccontextmanager
async def claim_preparation(nats_url: str, responder: Responder) -> AsyncIterator[Responder]:
    """Serve ``responder`` as the "claim_preparation" service of node-a until the block exits."""
    bus = await Bus.connect(service_common(nats_url, NODE, "claim_preparation"), "claim_preparation")
    try:
        await bus.serve(
            "0.0.0-test",
            [
                Endpoint(PrepareClaims, responder.prepare, concurrency=4),
                Endpoint(UnprepareClaims, responder.unprepare, concurrency=4),
            ],
        )
        yield responder
    finally:
        responder.release.set()
        await bus.close()


@contextmanager
def short_dir(prefix: str = "ks-") -> Iterator[Path]:
    """A temporary directory short enough for unix socket paths (pytest's tmp_path can be too long)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def shim_settings(nats_url: str, kubelet_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        **service_fields(nats_url, NODE, "kubelet_shim"),
        "kubelet_dir": str(kubelet_dir),
        "driver_name": DRIVER,
        "compute_domain_plugin_dir": channel_plugin_dir(str(kubelet_dir)),  # as gpudra up lays it out
        "shutdown_grace_seconds": 0.5,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


def gpu(minor: int) -> Gpu:
    return Gpu(
        minor=minor,
        index=minor,
        uuid=f"GPU-{minor:08d}-0000-0000-0000-000000000000",
        product_name="NVIDIA H100 80GB HBM3",
        brand="Nvidia",
        architecture="Hopper",
        cuda_compute_capability="9.0",
        driver_version="550.54.15",
        cuda_driver_version="12.4",
        memory_bytes=80 * 2**30,
        pci_bus_id=f"0000:{minor + 0x10:02x}:00.0",
        pcie_root="pci0000:00",
        numa_node=0,
        mig_enabled=False,
    )


def inventory(count: int, node: str = NODE) -> Inventory:
    return Inventory(
        node=node,
        backend="simulated",
        driver_version="550.54.15",
        cuda_driver_version="12.4",
        gpus=tuple(gpu(minor) for minor in range(count)),
    )


def claim(uid: str, name: str | None = None, namespace: str = "default") -> tuple[str, str, str]:
    """A kubelet-client claim tuple: (namespace, name, uid)."""
    return (namespace, name or f"claim-{uid}", uid)
