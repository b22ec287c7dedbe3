"""The compute-domain story end to end, on one nats-server and the test API server: four simulated GB200 trays
form a four-node domain that becomes Ready; a killed daemon makes it NotReady with the reason and Ready again
when it is back; a tray of another rack is not admitted; a claim from another namespace is refused; two domains
on one tray get different channels; unprepare leaves the domain and removes what prepare wrote."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from libs.events.catalogue import ClaimRef
from libs.natsserver import EmbeddedNats
from services.compute_domain.node.imex_config import domain_files
from tests.compute_domain.cd_story_support import (
    WAIT,
    Node,
    claim_on,
    create_domain,
    create_nodes,
    daemon_pid,
    other_rack_profile,
    prepare,
    running_controller,
    running_node,
    settings_for,
    shim_bus,
    spec_file,
    unprepare,
)
from tests.compute_domain.test_cd_controller import ready_reason, stored
from tests.support.kubeapi import KubeApiServer

TRAYS = [f"gb-{index}" for index in range(4)]


@pytest.fixture
async def rack(
    nats_server: EmbeddedNats,
    installed: KubeApiServer,
    tmp_path: Path,
) -> AsyncIterator[dict[str, Node]]:
    """The controller and four trays of one rack (IPs 127.0.0.1-4), each with its Node object."""
    create_nodes(installed, *TRAYS)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running_controller(nats_server.url, installed.url))
        nodes: dict[str, Node] = {}
        for index, name in enumerate(TRAYS):
            settings = settings_for(
                nats_server.url, installed.url, name, tmp_path / name, node_ip=f"127.0.0.{index + 1}"
            )
            nodes[name] = await stack.enter_async_context(running_node(settings))
        yield nodes


async def status_is(kube_api: KubeApiServer, name: str, state: str, reason: str = "") -> tuple[str, ...]:
    """The domain's (status, reason, message) once its status is ``state`` (with ``reason``, if given)."""

    def check() -> tuple[str, str, str] | None:
        found = ready_reason(kube_api.store.get("computedomains", name, "default") or {})
        return found if found[0] == state and reason in ("", found[1]) else None

    return await kube_api.store.wait_for(check, WAIT)


def spec_of(node: Node, claim: ClaimRef) -> dict[str, Any]:
    return dict(json.loads(spec_file(node.settings, claim).read_text()))


def channel_paths(spec: dict[str, Any]) -> list[str]:
    return [n["path"] for device in spec["devices"] for n in device["containerEdits"]["deviceNodes"]]


async def test_four_trays_form_a_domain_that_survives_a_killed_daemon(
    rack: dict[str, Node], installed: KubeApiServer, nats_server: EmbeddedNats
) -> None:
    uid = create_domain(installed, "train", 4)
    assert (await status_is(installed, "train", "NotReady"))[1] == "WaitingForNodes"
    claims = {name: claim_on(installed, f"train-{name}", uid, name) for name in TRAYS}
    shims = {name: await shim_bus(nats_server.url, name) for name in TRAYS}
    try:
        for name in TRAYS:
            results = await prepare(shims[name], name, claims[name])
            assert results[claims[name].uid].error == "", results
            spec = spec_of(rack[name], claims[name])
            assert channel_paths(spec) == ["/dev/nvidia-caps-imex-channels/channel0"]
        assert await status_is(installed, "train", "Ready") == ("Ready", "AllNodesReady", "4 of 4 nodes ready")
        nodes = stored(installed)["status"]["nodes"]
        assert [(n["name"], n["index"], n["ipAddress"]) for n in nodes] == [
            (name, index, f"127.0.0.{index + 1}") for index, name in enumerate(TRAYS)
        ]

        os.kill(daemon_pid(rack["gb-2"].settings, uid), signal.SIGKILL)
        _, reason, message = await status_is(installed, "train", "NotReady")
        assert reason == "NodeNotReady"
        assert message.startswith("gb-2: ")
        assert "SIGKILL" in message
        await status_is(installed, "train", "Ready")  # the node service restarted its daemon
        events = [(e["type"], e["reason"], e["note"]) for e in installed.store.list("events", "default")]
        assert ("Normal", "AllNodesReady", "4 of 4 nodes ready") in events
        assert ("Warning", "NodeNotReady", message) in events  # what `kubectl events` shows for the domain

        again = await prepare(shims["gb-0"], "gb-0", claims["gb-0"])  # the kubelet repeats a call: same answer
        assert again[claims["gb-0"].uid].error == ""

        assert (await unprepare(shims["gb-3"], "gb-3", claims["gb-3"]))[claims["gb-3"].uid].error == ""
        left = await status_is(installed, "train", "NotReady", "WaitingForNodes")
        assert left[2] == "3 of 4 nodes joined"
        assert not spec_file(rack["gb-3"].settings, claims["gb-3"]).exists()
        assert not domain_files(rack["gb-3"].settings.state_dir, uid).directory.exists()
    finally:
        for bus in shims.values():
            await bus.close()


async def test_a_tray_of_another_rack_is_not_admitted(
    rack: dict[str, Node], installed: KubeApiServer, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    uid = create_domain(installed, "train", 2)
    create_nodes(installed, "rack2-0")
    settings = settings_for(
        nats_server.url, installed.url, "rack2-0", tmp_path / "rack2-0", profile=other_rack_profile(tmp_path)
    )
    async with running_node(settings) as stranger:
        first = claim_on(installed, "first", uid, "gb-0")
        outsider = claim_on(installed, "outsider", uid, "rack2-0")
        shim0, shim_r = await shim_bus(nats_server.url, "gb-0"), await shim_bus(nats_server.url, "rack2-0")
        try:
            assert (await prepare(shim0, "gb-0", first))[first.uid].error == ""
            refused = (await prepare(shim_r, "rack2-0", outsider))[outsider.uid].error
            assert "node rack2-0 is in NVLink clique" in refused
            assert "the domain's is" in refused
            assert not spec_file(stranger.settings, outsider).exists()
            _, reason, message = await status_is(installed, "train", "NotReady")
            assert (reason, message) == ("WaitingForNodes", "1 of 2 nodes joined")
            assert [n["name"] for n in stored(installed)["status"]["nodes"]] == ["gb-0"]
        finally:
            await shim0.close()
            await shim_r.close()


async def test_a_claim_from_another_namespace_is_refused(
    rack: dict[str, Node], installed: KubeApiServer, nats_server: EmbeddedNats
) -> None:
    uid = create_domain(installed, "train", 1)
    installed.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "intruder"}})
    stolen = claim_on(installed, "stolen", uid, "gb-0", ns="intruder")
    shim = await shim_bus(nats_server.url, "gb-0")
    try:
        error = (await prepare(shim, "gb-0", stolen))[stolen.uid].error
    finally:
        await shim.close()
    assert "it is in namespace intruder, but ComputeDomain default/train is in default" in error
    assert not spec_file(rack["gb-0"].settings, stolen).exists()
    assert (await status_is(installed, "train", "NotReady"))[1] == "WaitingForNodes"  # the node never joined


async def test_two_domains_on_one_tray_get_different_channels(
    rack: dict[str, Node], installed: KubeApiServer, nats_server: EmbeddedNats
) -> None:
    first, second = create_domain(installed, "first", 1), create_domain(installed, "second", 1)
    a = claim_on(installed, "a", first, "gb-1", slot="slot-0")
    b = claim_on(installed, "b", second, "gb-1", slot="slot-1")
    a2 = claim_on(installed, "a2", first, "gb-1", slot="slot-2")  # a second pod of the first domain
    shim = await shim_bus(nats_server.url, "gb-1")
    try:
        results = await prepare(shim, "gb-1", a, b, a2)
        assert all(result.error == "" for result in results.values()), results
        node = rack["gb-1"]
        paths = {claim.name: channel_paths(spec_of(node, claim)) for claim in (a, b, a2)}
        assert paths["a"] == paths["a2"] == ["/dev/nvidia-caps-imex-channels/channel0"]
        assert paths["b"] == ["/dev/nvidia-caps-imex-channels/channel1"]
        await status_is(installed, "first", "Ready")
        await status_is(installed, "second", "Ready")
        assert daemon_pid(node.settings, first) != daemon_pid(node.settings, second)
    finally:
        await shim.close()
