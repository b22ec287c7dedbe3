"""The server relays for clients (docs/security.md); gpudra refuses what it relays.

A push consumer delivers to any subject its creator names, even one the creator may not publish to
(nats-server issue #8274): aimed at a node's endpoint, it would turn a stored message into a command. The
endpoint refuses anything that does not come with a client's inbox to answer to. Aimed at an event subject, the
delivery is stored by the stream that captures that subject, but under the subject it was first published on,
so no consumer of the target subject ever sees it: these tests keep that server behaviour, which gpudra
relies on, in sight.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from nats.js import api

from libs.bus import Bus, Endpoint
from libs.bus.metrics import REQUESTS
from libs.bus.rpc import serve
from libs.bus.topology import event_stream
from libs.events import Domain, rpc_subject
from libs.events.catalogue import ResetGpu, ResetGpuReply
from libs.natsserver import EmbeddedNats
from libs.trust.roles import Role
from tests.bus.helpers import unprepared
from tests.trust.trust_support import holding

RESET_B = rpc_subject("node-b", ResetGpu.service, ResetGpu.endpoint)
CRAFTED = msgspec.json.encode({"device": "gpu-3", "reason": "relayed"})


class Resets:
    """node-b's GPU-reset endpoint: records the resets it was asked for."""

    def __init__(self) -> None:
        self.devices: list[str] = []

    async def reset(self, command: ResetGpu) -> ResetGpuReply:
        self.devices.append(command.device)
        return ResetGpuReply(device=command.device, duration_ms=1.0)


class Refused(logging.Handler):
    """Awaits the endpoint's "refused a command" warning."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = asyncio.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("refused a command"):
            self.messages.append(record.getMessage())
            self.seen.set()


async def test_a_delivery_aimed_at_an_endpoint_is_not_a_command(nats_server: EmbeddedNats, bus: Bus) -> None:
    resets = Resets()
    watcher = Refused()
    logging.getLogger("libs.bus.rpc").addHandler(watcher)
    refused_before = REQUESTS.labels("health-reset-gpu", "403")._value.get()
    async with (
        holding(nats_server.url, "health", [Role.HEALTH_NODE], "node-b") as node_b,
        holding(nats_server.url, "discovery", [Role.DISCOVERY], "node-a") as writer,
        holding(nats_server.url, "extender", [Role.EXTENDER], "node-a") as aimer,
    ):
        service = await serve(
            node_b.nc, name="health", version="0.0.0", node="node-b", endpoints=[Endpoint(ResetGpu, resets.reset)]
        )
        await node_b.nc.flush()
        # node-a's discovery may publish anything on its own subject; the stream keeps it as it is.
        await writer.js.publish("gpudra.v1.node-a.inventory.changed", CRAFTED)
        # A consumer that delivers it to node-b's reset endpoint: the server lets the extender create it.
        await aimer.js.add_consumer(
            event_stream(Domain.INVENTORY),
            api.ConsumerConfig(
                deliver_subject=RESET_B,
                deliver_group="q",  # nats.micro's queue group: without it the server would deliver nothing
                filter_subject="gpudra.v1.node-a.inventory.changed",
                ack_policy=api.AckPolicy.NONE,
            ),
        )
        await asyncio.wait_for(watcher.seen.wait(), 10)
        # A real command from the controller still works.
        async with holding(nats_server.url, "health", [Role.HEALTH_CONTROLLER], "controller-0") as controller:
            reply = await controller.request("node-b", ResetGpu(device="gpu-1"), ResetGpuReply, timeout=5)
        await service.stop()
    logging.getLogger("libs.bus.rpc").removeHandler(watcher)
    assert resets.devices == ["gpu-1"]
    assert reply.device == "gpu-1"
    assert "is not an inbox" in watcher.messages[0]
    assert REQUESTS.labels("health-reset-gpu", "403")._value.get() == refused_before + 1


async def test_a_delivery_aimed_at_an_event_subject_keeps_its_own_subject(nats_server: EmbeddedNats, bus: Bus) -> None:
    health = event_stream(Domain.HEALTH)
    target = "gpudra.v1.node-b.health.events"
    witness = await bus.nc.subscribe(target)  # without interest on the subject a push consumer delivers nothing
    async with holding(nats_server.url, "extender", [Role.EXTENDER], "node-a") as aimer:
        await bus.publish(unprepared("relayed"))
        await aimer.js.add_consumer(
            event_stream(Domain.CLAIMS),
            api.ConsumerConfig(deliver_subject=target, ack_policy=api.AckPolicy.NONE),
        )
        delivered = await witness.next_msg(timeout=10)
    await witness.unsubscribe()
    assert (delivered.reply or "").startswith("$JS.ACK.")  # what a core subscriber can tell it by
    await bus.js.publish(target, b"{}", headers={"Nats-Msg-Id": "genuine"})
    per_subject = (await bus.js.stream_info(health, subjects_filter=">")).state.subjects or {}
    assert per_subject == {target: 1, "gpudra.v1.node-a.claims.unprepared": 1}
    reader = await bus.js.subscribe(target, stream=health, ordered_consumer=True)
    first = await reader.next_msg(timeout=10)
    await reader.unsubscribe()
    assert (first.headers or {}).get("Nats-Msg-Id") == "genuine"
