"""``gpudra faults inject`` and ``gpudra health status / reset / breaker reset`` as separate processes against
a running controller (real bus, the Kubernetes API test server, simulated nodes)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import msgspec
import pytest

from libs.bus import Bus
from libs.events.catalogue.remediation import RemediationStateChanged
from libs.natsserver import EmbeddedNats
from tests.health_controller.health_controller_support import (
    REPO,
    Feed,
    RecordingReboot,
    add_node,
    controller_process,
    controller_settings,
    health_event,
    light_node,
    sim_node,
)
from tests.support.kubeapi import KubeApiServer
from tests.support.nats_fixture import operator_args

pytestmark = pytest.mark.slow
STEPS = {"cordon", "uncordon", "taint", "untaint", "drain", "evict", "gpu-reset", "reboot", "verify"}


async def gpudra(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", *args, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_an_injected_xid_runs_the_whole_cycle_and_status_shows_the_node_healthy(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    add_node(kube_api, "node-a")
    feed = await Feed.subscribe(bus)
    async with (
        sim_node(nats_server, kube_api, tmp_path, "node-a") as node,
        controller_process(controller_settings(nats_server.url, kube_api)),
    ):
        code, out, err = await gpudra(
            "faults", "inject", *operator_args(nats_server.url), "--node", "node-a", "--gpu", "2", "--xid", "48"
        )
        assert (code, err) == (0, "")
        assert out.startswith("injected XID 48 on node node-a, gpu-2")
        await feed.expect(RemediationStateChanged, lambda e: e.state == "healthy")
        code, out, _ = await gpudra("health", "status", *operator_args(nats_server.url))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "# circuit breaker closed: 1 nodes in the window"
    assert lines[2].split()[:4] == ["node-a", "node", "healthy", "-"]
    assert node.health("gpu-2") == "Healthy"
    # The book holds nothing of it now; the history does, step by step.
    past = lines[lines.index("# recent remediations (1)") + 2].split()
    assert (past[0], past[1], past[2], past[5]) == ("node-a", "gpu-2", "xid-48", "healthy")
    assert [word for word in past[6:] if word.rstrip(",") in STEPS] == ["drain", "gpu-reset", "verify"]
    code, out, _ = await gpudra("health", "status", *operator_args(nats_server.url), "-o", "json", "--history", "1")
    [recent] = msgspec.json.decode(out)["recent"]
    assert [step["outcome"] for step in recent["steps"]] == ["succeeded"] * len(recent["steps"])
    code, out, err = await gpudra("health", "status", *operator_args(nats_server.url), "--node", "nope")
    assert (code, out) == (1, "")
    assert err.strip() == "gpudra: no node 'nope' is known to gpudra (no inventory, no remediation record)"


async def test_status_shows_a_failed_remediation_and_a_person_resets_it(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    add_node(kube_api, "node-a")
    feed = await Feed.subscribe(bus)
    url = nats_server.url
    async with light_node(url, tmp_path, "node-a") as node:
        reboot = RecordingReboot({"node-a": node}, works=False)
        async with controller_process(controller_settings(url, kube_api, reset_attempts=1), reboot=reboot):
            await bus.publish(health_event("node-a", node.gpu(4), "xid", "79"))
            await feed.expect(RemediationStateChanged, lambda e: e.state == "remediation-failed")
            code, out, _ = await gpudra("health", "status", *operator_args(url), "-o", "json")
            assert code == 0
            status = msgspec.json.decode(out)
            [entry] = status["nodes"]
            assert (entry["node"], entry["state"]) == ("node-a", "remediation-failed")
            assert entry["entities"][0]["faults"] == ["xid-79"]
            code, out, _ = await gpudra("health", "status", *operator_args(url))
            row = next(line for line in out.splitlines() if " node " in line)
            assert "remediation-failed" in row
            assert "a person must act" in row
            code, out, err = await gpudra("health", "reset", *operator_args(url), "--node", "node-a", "--by", "alice")
            assert (code, out.strip(), err) == (0, "node node-a: healthy", "")
            code, out, _ = await gpudra("health", "breaker", "reset", *operator_args(url))
            assert (code, out.strip()) == (0, "circuit breaker closed; 0 held fault(s) handed back for admission")
            code, _, err = await gpudra("faults", "inject", *operator_args(url), "--gpu", "1", "--xid", "48")
            assert code == 1
            assert "give --node" in err
