"""Device status in a claim on the system a person runs: ``gpudra up``, the CLI, a fault, its remediation.

What issue 14 asks of it, end to end: after ``gpudra kubelet prepare`` the claim's ``status.devices`` says the GPU
is Ready with its UUID (valid against the 1.36 strict schema); a fault injected on that GPU turns the condition
false with the reason, and the remediation that repairs the GPU turns it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from libs.bus import Bus
from libs.kube import RESOURCE_CLAIMS, LocalKube
from libs.settings import CommonSettings
from tests.standalone.up_support import System, cli, running_up

pytestmark = pytest.mark.slow

Claim = dict[str, Any]


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    async with running_up(tmp_path, "--node", "node-0", "--profile", "dgx-h100") as running:
        yield running


def ready_of(claim: Claim) -> list[tuple[str, str]]:
    """(status, reason) of the Ready condition of each device entry."""
    entries = (claim.get("status") or {}).get("devices") or ()
    return [(c["status"], c["reason"]) for e in entries for c in e["conditions"] if c["type"] == "Ready"]


async def until(kube: LocalKube, name: str, done: Callable[[Claim], bool], timeout: float = 60) -> Claim:
    claim = await kube.get(RESOURCE_CLAIMS, name, "default")
    if done(claim):
        return claim
    events = kube.watch(RESOURCE_CLAIMS, "default", resource_version=claim["metadata"]["resourceVersion"])
    async with asyncio.timeout(timeout), contextlib.aclosing(events):
        async for _, changed in events:
            if changed["metadata"]["name"] == name and done(changed):
                return changed
    raise AssertionError("the watch ended")


async def test_a_claims_gpu_is_ready_turns_unready_on_a_fault_and_ready_again_once_repaired(system: System) -> None:
    _, running = system
    state = ["--state-dir", running.state_dir]
    await cli("claim", "create", "watched", "--device", "gpu-3", *state)
    await cli("kubelet", "prepare", "watched", *state)
    bus = await Bus.connect(
        CommonSettings(nats_url=running.nats_url, nats_creds=running.nats_creds, node_name=running.node), "operator"
    )
    try:
        kube = await LocalKube.open(bus.js)
        await until(kube, "watched", lambda c: ready_of(c) == [("True", "Prepared")])
        claim = json.loads(await cli("claim", "get", "watched", "-o", "json", *state))
        kubernetes_validate.validate(claim, "1.36.0", strict=True)
        [entry] = claim["status"]["devices"]
        assert (entry["device"], entry["data"]["uuid"][:4]) == ("gpu-3", "GPU-")

        # A lost GPU stays lost until it comes back (an XID the controller repairs in milliseconds here, with no
        # pod to drain, and the status writer would rightly never show the moment between).
        await cli("faults", "inject", "--gpu", "3", "--kind", "gpu-lost", *state)
        sick = await until(kube, "watched", lambda c: ready_of(c) == [("False", "DeviceUnhealthy")])
        message = next(c["message"] for c in sick["status"]["devices"][0]["conditions"] if c["type"] == "Ready")
        assert "gpu-lost" in message
        await cli("faults", "inject", "--gpu", "3", "--kind", "gpu-back", *state)
        await until(kube, "watched", lambda c: ready_of(c) == [("True", "Prepared")])
    finally:
        await bus.close()
