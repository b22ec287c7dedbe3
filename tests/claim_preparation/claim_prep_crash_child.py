"""A claim_preparation that stops dead at a chosen point of prepare or unprepare, for kill -9 tests.

``python -m tests.claim_preparation.claim_prep_crash_child NATS_URL ROOT POINT UID NAME``: prepares the claim
(and for the unprepare points, unprepares it) with the real preparer and real files, until the step named
POINT has finished; then prints ``AT POINT`` and blocks, so the parent can kill -9 it exactly there. Besides
the named ``POINTS``, ``sysfs-write-<n>`` stops after the n-th write to the simulated sysfs (a GPU for a VM).
The parent's ``crash_at`` passes settings the child overrides as JSON in ``CHILD_SETTINGS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from libs.bus import Bus
from libs.cdi import Spec, SpecDir
from libs.devices.model import MigDevice, MpsSettings
from libs.devices.pci import PciSysfs
from libs.devices.simulated import SimulatedBackend
from libs.devices.simulated.pci import SimulatedPciSysfs
from libs.events.catalogue import ClaimRef
from libs.kube import LocalKube
from services.claim_preparation.checkpoint import CheckpointStore
from services.claim_preparation.preparer import Preparer
from services.claim_preparation.record import ClaimRecord
from services.claim_preparation.service import build_parts
from tests.claim_preparation.claim_prep_crash_support import CHILD_SETTINGS
from tests.claim_preparation.claim_prep_support import open_machine, service_settings

POINTS = ("started", "mig", "sharing", "cdi", "completed", "unprepare-started", "spec-removed")
POINT = sys.argv[3] if len(sys.argv) > 3 else ""


def stop_here(point: str) -> None:
    if point == POINT:
        print(f"AT {point}", flush=True)
        time.sleep(3600)  # blocks the event loop too: nothing after this point happens


class Machine(SimulatedBackend):
    async def create_mig_device(self, parent_minor: int, profile_name: str, placement_start: int) -> MigDevice:
        device = await super().create_mig_device(parent_minor, profile_name, placement_start)
        stop_here("mig")
        return device

    async def start_mps(self, minor: int, settings: MpsSettings) -> None:
        await super().start_mps(minor, settings)
        stop_here("sharing")

    def pci(self) -> PciSysfs:
        base = super().pci()
        assert isinstance(base, SimulatedPciSysfs)
        return CountingSysfs(base.state_dir, node=self.node)


class CountingSysfs(SimulatedPciSysfs):
    """Stops after the n-th sysfs write of the run for point ``sysfs-write-<n>`` (a bind or an unbind step)."""

    writes = 0

    def write(self, relative_path: str, text: str) -> None:
        super().write(relative_path, text)
        CountingSysfs.writes += 1
        stop_here(f"sysfs-write-{CountingSysfs.writes}")


class Store(CheckpointStore):
    def save(self, record: ClaimRecord) -> None:
        super().save(record)
        stop_here({"PrepareStarted": "started", "PrepareCompleted": "completed"}.get(record.state, ""))
        if record.state == "UnprepareStarted":
            stop_here("unprepare-started")


class Specs(SpecDir):
    def write(self, name: str, spec: Spec) -> Path:
        path = super().write(name, spec)
        stop_here("cdi")
        return path

    def remove(self, name: str) -> bool:
        removed = super().remove(name)
        stop_here("spec-removed")
        return removed


async def main(nats_url: str, root: Path, uid: str, name: str) -> None:
    settings = service_settings(root, nats_url, **json.loads(os.environ.get(CHILD_SETTINGS) or "{}"))
    bus = await Bus.connect(settings, "claim_preparation")
    kube = await LocalKube.open(bus.js)
    machine = await open_machine(Machine, settings)
    async with contextlib.AsyncExitStack() as stack:
        parts = await build_parts(stack, bus, settings, kube, machine)
    parts = dataclasses.replace(parts, checkpoint=Store(parts.checkpoint.directory), specs=Specs(parts.specs.path))
    preparer = Preparer(parts)
    await preparer.start()
    ref = ClaimRef(namespace="default", name=name, uid=uid)
    outcome = await preparer.prepare(ref)
    print(f"prepared {outcome.message or 'ok'}", flush=True)
    outcome = await preparer.unprepare(ref)
    print(f"unprepared {outcome.message or 'ok'}", flush=True)
    await bus.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[4], sys.argv[5]))
