"""Bad input reaches the controller and nothing breaks: unreadable or foreign events end in the dead letters
with the reason, faults for devices or nodes nobody publishes are only recorded, a flood of copies is one
decision and no writes, and a catalogue or drain policy that cannot be used stops the start with the line."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest
from nats.js import api

from libs.bus import Bus
from libs.bus.deadletter import header_size
from libs.bus.topology import DEADLETTER_STREAM, MAX_EVENT_BYTES, REMEDIATION_BUCKET
from libs.events import encode
from libs.events.catalogue.health import EntityRef, FaultClassified, HealthEvent
from libs.natsserver import EmbeddedNats
from libs.trust.roles import Role
from services.health.controller import Controller
from services.health.controller.books import node_key
from services.health.controller.config import ConfigError, from_settings
from tests.health_controller.health_controller_support import (
    REPO,
    Feed,
    LightNode,
    add_node,
    controller_process,
    controller_settings,
    cordoned,
    health_event,
    light_node,
)
from tests.support.kubeapi import KubeApiServer
from tests.support.nats_fixture import role_creds, settings_for

SUBJECT = "gpudra.v1.node-a.health.events"


@asynccontextmanager
async def one_node(
    nats: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> AsyncIterator[tuple[LightNode, Feed, Controller]]:
    add_node(kube_api, "node-a")
    feed = await Feed.subscribe(bus)
    async with (
        light_node(nats.url, tmp_path, "node-a") as node,
        controller_process(controller_settings(nats.url, kube_api)) as controller,
    ):
        yield node, feed, controller


async def dead_letters(bus: Bus, count: int) -> list[str]:
    """The reasons of the first ``count`` dead letters."""
    subscription = await bus.js.subscribe(
        "gpudra.deadletter.>", stream=DEADLETTER_STREAM, ordered_consumer=True, deliver_policy=api.DeliverPolicy.ALL
    )
    try:
        reasons: list[str] = []
        while len(reasons) < count:
            msg = await subscription.next_msg(timeout=10)
            reasons.append((msg.headers or {}).get("gpudra-dlq-reason", ""))
        return reasons
    finally:
        await subscription.unsubscribe()


async def test_unreadable_and_foreign_events_go_to_the_dead_letters_and_the_next_fault_is_handled(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    async with one_node(nats_server, bus, kube_api, tmp_path) as (node, feed, _):
        headers, body = encode(health_event("node-a", node.gpu(1)), source="/test")
        await bus.js.publish(SUBJECT, b"not json at all", headers={**headers, "ce-id": "bad-1", "Nats-Msg-Id": "bad-1"})
        await bus.js.publish(SUBJECT, body, headers={"Nats-Msg-Id": "bad-2"})
        await bus.js.publish(SUBJECT, body, headers={**headers, "ce-type": "io.gpudra.Nope.v1", "Nats-Msg-Id": "bad-3"})
        no_number = HealthEvent(node="node-a", check="xid", component="gpu", entity=node.gpu(1), fatal=True)
        await bus.publish(no_number, event_id="bad-4")
        headers, body = encode(health_event("node-b", node.gpu(1)), source="/test", event_id="bad-6")
        await bus.js.publish(SUBJECT, body, headers=headers)
        reasons = await dead_letters(bus, 5)
        await bus.publish(health_event("node-a", node.gpu(1)))
        verdict = await feed.expect(FaultClassified)
    assert len(feed.of(FaultClassified)) == 1
    assert "data is not JSON" in reasons[0]
    assert "missing header(s) ce-specversion" in reasons[1]
    assert "unknown event type 'io.gpudra.Nope.v1'" in reasons[2]
    assert "needs XID numbers in error_codes" in reasons[3]
    assert "event of node 'node-b' published on node node-a's subject" in reasons[4]
    assert (verdict.node, verdict.disposition) == ("node-a", "acted")


async def test_a_poison_event_at_the_size_limit_is_dead_lettered_and_the_controller_carries_on(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    """The attack that silenced health: an undecodable body just under the limit, with CloudEvents headers. Its
    dead-letter copy would not fit; it is cut to fit, and the controller's connection stays up."""
    async with one_node(nats_server, bus, kube_api, tmp_path) as (node, feed, controller):
        headers, _ = encode(health_event("node-a", node.gpu(1)), source="/gpudra/node-a/health")
        poison = b"\xff" * (MAX_EVENT_BYTES - header_size(headers) - 64)
        await bus.js.publish(SUBJECT, poison, headers=headers)
        [reason] = await dead_letters(bus, 1)
        await node.report(health_event("node-a", node.gpu(1)))
        verdict = await feed.expect(FaultClassified)
        assert controller.bus.nc.is_connected
    assert "data is not JSON" in reason
    assert (verdict.node, verdict.disposition) == ("node-a", "acted")


async def test_faults_on_unknown_devices_and_nodes_are_recorded_and_nothing_is_quarantined(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    async with one_node(nats_server, bus, kube_api, tmp_path) as (node, feed, _):
        await bus.publish(health_event("node-a", EntityRef(kind="gpu", id="GPU-unknown", device="gpu-99")))
        unknown_device = await feed.expect(FaultClassified)
        ghost = await Bus.connect(settings_for(nats_server.url, "ghost-node"), "health")
        await ghost.publish(health_event("ghost-node", node.gpu(1), "xid", "79"))
        await ghost.close()
        unknown_node = await feed.expect(FaultClassified)
        await bus.publish(health_event("node-a", node.gpu(1), "fan-speed", "slow"))
        unknown_check = await feed.expect(FaultClassified)
    assert unknown_device.disposition == unknown_node.disposition == unknown_check.disposition == "recorded"
    assert "'gpu-99' is not in node node-a's inventory" in unknown_device.reason
    assert "node ghost-node has no known device inventory" in unknown_node.reason
    assert kube_api.store.writes() == 0
    assert not cordoned(kube_api, "node-a")
    assert node.resets == []


async def test_a_flood_of_copies_is_one_decision_and_costs_no_writes(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    async with one_node(nats_server, bus, kube_api, tmp_path) as (node, feed, controller):
        node.gate = asyncio.Event()  # keep the GPU in its reset, so the copies meet a device under repair
        node.publish_healthy = False
        fault = health_event("node-a", node.gpu(1))
        await bus.publish(fault)
        await node.changed.until(lambda: node.resets)
        await controller.lanes.wait_idle()
        kv = await bus.kv(REMEDIATION_BUCKET)
        before = (await kv.get(node_key("node-a"))).revision or 0
        await asyncio.gather(*(bus.publish(fault) for _ in range(500)))
        await bus.publish(health_event("node-a", node.gpu(3), "thermal", "slowdown"))  # a different event, after
        await feed.expect(FaultClassified, lambda e: e.fault != "xid-48")
        after = (await kv.get(node_key("node-a"))).revision or 0
        node.gate.set()
    assert [e.disposition for e in feed.of(FaultClassified) if e.fault == "xid-48"] == ["acted"]
    assert after - before <= 2  # the thermal event's write (and its outbox tidying), none for the copies


def test_a_catalogue_with_an_unknown_action_stops_the_start_naming_the_line(
    kube_api: KubeApiServer, tmp_path: Path
) -> None:
    bad = tmp_path / "faults.yaml"
    bad.write_text("version: 1\nxids:\n  - codes: [48]\n    action: REBOOT_NOW\n")
    with pytest.raises(ConfigError, match=r"faults.yaml line 4: .*REBOOT_NOW"):
        from_settings(controller_settings("nats://127.0.0.1:1", kube_api, nats_creds="", catalogue_file=str(bad)))
    policy = tmp_path / "drain.yaml"
    policy.write_text("rules:\n  - mode: Sometimes\n")
    with pytest.raises(ConfigError, match=r"drain.yaml line 2"):
        from_settings(controller_settings("nats://127.0.0.1:1", kube_api, nats_creds="", drain_policy_file=str(policy)))


async def test_the_service_exits_with_a_clear_message_on_a_bad_catalogue(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    bad = tmp_path / "faults.yaml"
    bad.write_text("xids:\n  - codes: [48]\n    action: REBOOT_NOW\n")
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.health",
        "--role=controller",
        f"--nats-url={nats_server.url}",
        f"--nats-creds={role_creds(nats_server.url, 'health', [Role.HEALTH_CONTROLLER], 'node-0')}",
        f"--catalogue-file={bad}",
        "--metrics-port=-1",
        "--log-format=text",
        cwd=REPO,
        env={**os.environ, "OTEL_SDK_DISABLED": "true"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(child.communicate(), 30)
    assert child.returncode == 5
    assert b"cannot start: fault catalogue" in output
    assert b"REBOOT_NOW" in output
    assert b"Traceback" not in output


def test_stored_books_are_plain_json(tmp_path: Path) -> None:
    """What ``gpudra health status`` and any other reader decode (a quick guard on the stored shape)."""
    from services.health.controller.books import StoredNode, fresh

    stored = fresh("node-a").stored
    assert msgspec.json.decode(msgspec.json.encode(stored), type=StoredNode) == stored
