"""Shared GPUs by consumable capacity on the system a person runs: ``gpudra up`` with the setting on, the CLI.

Issue 14's first done-when, end to end: two claims of 40Gi share an 80Gi H100 through MPS with the limits in
their CDI edits; a third that does not fit is refused by the allocator; unprepare of one leaves the other
running; the slices and the claims validate against the 1.36 strict schemas.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.standalone.up_support import System, cli, running_up

pytestmark = pytest.mark.slow


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    settings = {"GPUDRA_CONSUMABLE_CAPACITY": "true"}
    async with running_up(tmp_path, "--node", "node-0", "--profile", "dgx-h100", env=settings) as running:
        yield running


def client_env(cdi_dir: Path, uid: str) -> dict[str, str]:
    [spec_file] = list(cdi_dir.glob(f"*{uid}*"))
    [device] = json.loads(spec_file.read_text())["devices"]
    return dict(entry.split("=", 1) for entry in device["containerEdits"]["env"])


async def test_two_claims_of_40gi_share_an_80gi_gpu_and_a_third_is_refused(system: System) -> None:
    _, running = system
    state = ["--state-dir", running.state_dir]
    slices: dict[str, Any] = json.loads(await cli("slices", "-o", "json", *state))
    for item in slices["items"]:
        kubernetes_validate.validate(item, "1.36.0", strict=True)
    gpu0 = next(d for s in slices["items"] for d in s["spec"].get("devices", ()) if d["name"] == "gpu-0")
    assert (gpu0["allowMultipleAllocations"], gpu0["capacity"]["memory"]["value"]) == (True, "80Gi")

    uids = []
    for name in ("train-a", "train-b"):
        created = json.loads(
            await cli("claim", "create", name, "--device", "gpu-0", "--memory", "40Gi", "-o", "json", *state)
        )
        kubernetes_validate.validate(created, "1.36.0", strict=True)
        uids.append(created["metadata"]["uid"])
    refused = await cli("claim", "create", "train-c", "--device", "gpu-0", "--memory", "40Gi", *state, expect=2)
    assert "device gpu-0 has 80Gi memory, 80Gi of it held by default/train-a (40Gi), default/train-b (40Gi)" in refused

    for name in ("train-a", "train-b"):
        await cli("kubelet", "prepare", name, *state)
    cdi_dir = Path(running.cdi_dir)
    for uid in uids:
        env = client_env(cdi_dir, uid)
        assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=40960M"
        assert env["CUDA_MPS_PIPE_DIRECTORY"] == "/tmp/nvidia-mps"
    [daemon] = list(Path(running.state_dir).glob("**/_gpus/gpu-0/daemon.json"))

    await cli("kubelet", "unprepare", "train-a", *state)
    assert [p.name for p in cdi_dir.glob("*.json") if uids[1] in p.name]
    assert not [p.name for p in cdi_dir.glob("*.json") if uids[0] in p.name]
    assert daemon.exists()  # the other share still uses the GPU's daemon
    claim = json.loads(await cli("claim", "get", "train-b", "-o", "json", *state))
    kubernetes_validate.validate(claim, "1.36.0", strict=True)
    await cli("kubelet", "unprepare", "train-b", *state)
    assert not daemon.exists()
