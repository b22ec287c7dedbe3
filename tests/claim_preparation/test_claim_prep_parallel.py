"""Claims on different GPUs prepare in parallel; claims on the same GPU take turns (proved with gates, not timing)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest

from libs.bus import Bus
from libs.devices.errors import DeviceError
from libs.devices.model import MigDevice, TimeSliceInterval
from libs.devices.simulated import SimulatedBackend
from libs.devices.simulated.state import StateStore
from libs.kube import KubeApi
from libs.natsserver import EmbeddedNats
from services.claim_preparation.settings import Settings
from tests.claim_preparation.claim_prep_support import (
    gpu_config,
    opaque,
    open_machine,
    prepare,
    serving,
    store_claim,
    until_answering,
)

Key = tuple[str, int]


class GatedMachine(SimulatedBackend):
    """The simulated machine, where chosen operations wait at a gate the test opens, and say they started."""

    def __init__(self, node: str, store: StateStore, poll_interval: float) -> None:
        super().__init__(node, store, poll_interval)
        self.gates: dict[Key, asyncio.Event] = {}
        self.entered: defaultdict[Key, asyncio.Event] = defaultdict(asyncio.Event)
        self.finished: defaultdict[Key, asyncio.Event] = defaultdict(asyncio.Event)
        self.inside = 0
        self.most_inside = 0
        self.failing: set[Key] = set()

    def gate(self, key: Key) -> asyncio.Event:
        self.entered[key] = asyncio.Event()
        return self.gates.setdefault(key, asyncio.Event())

    async def _through(self, key: Key) -> None:
        self.entered[key].set()
        if key in self.gates:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            await self.gates[key].wait()
            self.inside -= 1

    async def set_time_slice(self, minor: int, interval: TimeSliceInterval) -> None:
        await self._through(("time_slice", minor))
        await super().set_time_slice(minor, interval)

    async def create_mig_device(self, parent_minor: int, profile_name: str, placement_start: int) -> MigDevice:
        await self._through(("create", placement_start))
        try:
            if ("create", placement_start) in self.failing:
                raise DeviceError("node-a", f"gpu-{parent_minor}", f"no room at placement {placement_start}")
            return await super().create_mig_device(parent_minor, profile_name, placement_start)
        finally:
            self.finished[("create", placement_start)].set()


@pytest.fixture
async def gated(nats_server: EmbeddedNats, settings: Settings, bus: Bus) -> AsyncIterator[GatedMachine]:
    machine = await open_machine(GatedMachine, settings)
    async with serving(nats_server.url, settings, backend=machine):
        await until_answering(bus)
        yield machine


@contextmanager
def logged(fragment: str) -> Iterator[asyncio.Event]:
    """An event set when the preparer logs a line containing ``fragment``."""
    seen = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if fragment in record.getMessage():
                seen.set()

    logger = logging.getLogger("services.claim_preparation.preparer")
    handler = Watch()
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _time_sliced(interval: str) -> list[dict[str, object]]:
    return [opaque(gpu_config(strategy="TimeSlicing", timeSlicingConfig={"interval": interval}))]


async def test_a_claim_on_another_gpu_is_not_held_up(bus: Bus, kube: KubeApi, gated: GatedMachine) -> None:
    slow = await store_claim(kube, "slow-0", [("gpu", "gpu-4")], _time_sliced("Long"))
    fast = await store_claim(kube, "fast-0", [("gpu", "gpu-5")], _time_sliced("Short"))
    gate = gated.gate(("time_slice", 4))
    slow_call = asyncio.create_task(prepare(bus, slow))
    await gated.entered[("time_slice", 4)].wait()
    async with asyncio.timeout(10):  # a node-wide lock would hold this call until the gate opens: never
        assert (await prepare(bus, fast)).results[fast.uid].error == ""  # gpu-4's claim is still in the middle
    assert not slow_call.done()
    gate.set()
    assert (await slow_call).results[slow.uid].error == ""


async def test_claims_on_the_same_gpu_take_turns(bus: Bus, kube: KubeApi, gated: GatedMachine) -> None:
    first = await store_claim(kube, "first-0", [("mig", "gpu-3-mig-1g10gb-19-0")])
    second = await store_claim(kube, "second-0", [("mig", "gpu-3-mig-1g10gb-19-1")])
    first_gate, second_gate = gated.gate(("create", 0)), gated.gate(("create", 1))
    with logged(f"claim {second}: waits for gpu-3") as second_waits:
        first_call = asyncio.create_task(prepare(bus, first))
        await gated.entered[("create", 0)].wait()
        second_call = asyncio.create_task(prepare(bus, second))
        async with asyncio.timeout(10):  # without per-GPU locks it never waits: it runs into the gate instead
            await second_waits.wait()
    assert not gated.entered[("create", 1)].is_set()
    first_gate.set()
    await gated.entered[("create", 1)].wait()
    second_gate.set()
    replies = await asyncio.gather(first_call, second_call)
    assert [r.results[c.uid].error for r, c in zip(replies, (first, second), strict=True)] == ["", ""]
    assert gated.most_inside == 1


MIG_PAIR = [("mig", "gpu-3-mig-1g10gb-19-0"), ("mig", "gpu-3-mig-1g10gb-19-1")]


async def test_the_mig_devices_of_one_claim_are_created_at_once(bus: Bus, kube: KubeApi, gated: GatedMachine) -> None:
    claim = await store_claim(kube, "pair-0", MIG_PAIR)
    first_gate, second_gate = gated.gate(("create", 0)), gated.gate(("create", 1))
    call = asyncio.create_task(prepare(bus, claim))
    async with asyncio.timeout(10):  # one after another, the second never starts while the first is held
        await gated.entered[("create", 0)].wait()
        await gated.entered[("create", 1)].wait()
    assert gated.most_inside == 2
    first_gate.set()
    second_gate.set()
    assert (await call).results[claim.uid].error == ""
    assert {d.name for d in (await gated.inventory()).mig_devices} >= {name for _, name in MIG_PAIR}


async def test_a_failed_creation_waits_for_the_others_and_rolls_them_back(
    bus: Bus, kube: KubeApi, gated: GatedMachine
) -> None:
    claim = await store_claim(kube, "pair-1", MIG_PAIR)
    held = gated.gate(("create", 0))
    gated.failing.add(("create", 1))
    call = asyncio.create_task(prepare(bus, claim))
    await gated.entered[("create", 0)].wait()
    await gated.finished[("create", 1)].wait()  # failed at once, while the other is held
    held.set()
    error = (await call).results[claim.uid].error
    await gated.finished[("create", 0)].wait()
    assert "gpu-3-mig-1g10gb-19-1" in error
    assert "no room at placement 1" in error
    # Rolled back before the held creation ended, the claim would leave that device behind.
    assert not {d.name for d in (await gated.inventory()).mig_devices} & {name for _, name in MIG_PAIR}
