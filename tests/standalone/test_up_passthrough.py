"""GPUs for VMs on the system a person runs: ``gpudra up`` with ``GPUDRA_PASSTHROUGH_GPUS=all``, the CLI, health.

Issue 15 end to end: the node publishes gpu-3-vfio beside gpu-3 (sharing one counter, valid against 1.36
strict); a VM claim's prepare binds the GPU to vfio-pci and hands out the VFIO nodes; a container claim of gpu-3
is refused meanwhile; health says the GPU is with a VM (no GPU lost, nothing remediated) until unprepare gives it
back.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from libs.devices.simulated import SimulatedBackend
from tests.standalone.up_support import System, cli, running_up

pytestmark = pytest.mark.slow


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    settings = {"GPUDRA_PASSTHROUGH_GPUS": "all", "GPUDRA_MONITOR_POLL_SECONDS": "0.2"}
    async with running_up(tmp_path, "--node", "node-0", "--profile", "dgx-h100", env=settings) as running:
        yield running


async def health_of(state: list[str], device: str) -> dict[str, Any]:
    status = json.loads(await cli("health", "status", "-o", "json", *state))
    [node] = status["nodes"]
    return next((e for e in node["entities"] if e["entity"] == device), {})


async def until_faults(state: list[str], device: str, faults: list[str]) -> dict[str, Any]:
    """The device's entry once its faults are ``faults`` (the controller's books follow the node's reports)."""
    for _ in range(100):
        entity = await health_of(state, device)
        if entity.get("faults", []) == faults:
            return entity
    raise AssertionError(f"{device}: faults never became {faults}: {entity}")


async def test_a_vm_gets_gpu_3_and_health_says_so_until_it_gives_it_back(system: System) -> None:
    _, running = system
    state = ["--state-dir", running.state_dir]
    slices = json.loads(await cli("slices", "-o", "json", *state))
    for item in slices["items"]:
        kubernetes_validate.validate(item, "1.36.0", strict=True)
    devices = {d["name"]: d for s in slices["items"] for d in s["spec"].get("devices", ())}
    assert devices["gpu-3-vfio"]["consumesCounters"] == devices["gpu-3"]["consumesCounters"]

    created = json.loads(await cli("claim", "create", "vm-0", "--device", "gpu-3-vfio", "-o", "json", *state))
    assert created["spec"]["devices"]["requests"][0]["exactly"]["deviceClassName"] == "vfio.gpudra.io"
    await cli("kubelet", "prepare", "vm-0", *state)
    pci = (await SimulatedBackend.open(running.node, Path(running.state_dir) / "simulated")).pci()
    bus_id = devices["gpu-3"]["attributes"]["resource.kubernetes.io/pciBusID"]["string"]
    assert pci.driver_of(bus_id) == "vfio-pci"
    await cli("claim", "create", "train-0", "--device", "gpu-3", *state)
    refused = await cli("kubelet", "prepare", "train-0", *state, expect=1)
    assert "device gpu-3 overlaps gpu-3-vfio, which is already prepared for claim default/vm-0" in refused

    with_vm = await until_faults(state, "gpu-3", ["passthrough-vm"])
    assert with_vm["state"] == "healthy"
    table = await cli("health", "status", *state)
    assert "passthrough-vm" in table

    await cli("kubelet", "unprepare", "vm-0", *state)
    assert pci.driver_of(bus_id) == "nvidia"
    await until_faults(state, "gpu-3", [])
