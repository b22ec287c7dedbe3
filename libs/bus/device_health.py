"""Following one node's ``DeviceHealthChanged`` events: the health controller's word on each device.

A JetStream ordered consumer on the node's subject: nothing durable to clean up; it replays the node's events
at start, oldest first, so the last word on each device wins, and nats-py recreates it after a reconnect or a
missed heartbeat from the next sequence. Whoever follows (the kubelet shim's health stream, claim_preparation's
device status) finds the same state after a restart, and a restarted NATS loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from libs.bus.bus import Bus
from libs.bus.consumer import checked
from libs.bus.topology import event_stream
from libs.events import Domain, EventError, event_subject
from libs.events.catalogue import DeviceHealthChanged

log = logging.getLogger(__name__)

HEALTH_HEARTBEAT_SECONDS = 1.0
"""The server's idle heartbeat on the consumer: two missed ones and nats-py recreates it, so a NATS restart
delays health updates by seconds, not the default's twenty."""

Apply = Callable[[DeviceHealthChanged, float], None]
"""Takes one event and the time it was stated (Unix seconds)."""


def health_subject(node: str) -> str:
    return event_subject(node, DeviceHealthChanged.domain, DeviceHealthChanged.topic)


class DeviceHealthFollower:
    """Hands the node's ``DeviceHealthChanged`` events to ``apply``, replaying the stream at start; ``synced`` is
    set once the replay has caught up."""

    def __init__(self, bus: Bus, node: str, apply: Apply) -> None:
        self._bus = bus
        self._node = node
        self._apply = apply
        self.synced = asyncio.Event()
        self._subscription: JetStreamContext.PushSubscription | None = None

    async def start(self) -> None:
        subscription = await self._bus.js.subscribe(
            health_subject(self._node),
            stream=event_stream(Domain.HEALTH),
            cb=self._on_message,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.ALL,
            idle_heartbeat=HEALTH_HEARTBEAT_SECONDS,
        )
        self._subscription = subscription
        info = await subscription.consumer_info()
        if info.num_pending == 0 and subscription.delivered == 0:
            self.synced.set()

    async def _on_message(self, msg: Msg) -> None:
        if msg.metadata.num_pending == 0:
            self.synced.set()
        try:
            envelope = checked(msg)
        except EventError as exc:
            log.warning("skipped a bad health event: %s", exc, extra={"node": self._node})
            return
        event = envelope.data
        if isinstance(event, DeviceHealthChanged):
            self._apply(event, envelope.time.timestamp())
            log.debug(
                "device health: %s",
                event.health,
                extra={"node": self._node, "device": event.device, "reason": event.reason},
            )

    async def stop(self) -> None:
        subscription = self._subscription
        self._subscription = None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
