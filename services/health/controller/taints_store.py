"""Device quarantine as the rest of gpudra sees it: the taints entry discovery publishes, and the health fact
the kubelet shim reports.

The entry is ``<node token>.taints`` in ``gpudra_health``, value ``{"<device>": [DeviceTaint, ...]}`` (the
contract of ``services.discovery.slices_sync``): discovery watches it and republishes the node's
ResourceSlices with the taints joined. It always holds the complete map the book calls for, so writing it is
idempotent and a late write can never leave a taint behind that the book no longer wants.

Each device whose taints change also gets a ``DeviceHealthChanged`` (``gpudra.v1.<node>.health.devices``,
pool = the node), which the kubelet shim turns into the device's health in the kubelet's stream: Unhealthy
while a taint keeps claims (or pods) off it, Healthy again when none is left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec
from nats.js.kv import KeyValue

from libs.bus import Bus
from libs.bus.topology import HEALTH_BUCKET, taints_key
from libs.events.catalogue.health import DeviceHealthChanged
from libs.slices import DeviceTaint
from services.health.controller.taint_rules import BLOCKING, RuleTaint, blocking_rules

_encoder = msgspec.json.Encoder()


def device_health(
    node: str, device: str, taints: Sequence[DeviceTaint], reason: str, ruled: Sequence[RuleTaint] = ()
) -> DeviceHealthChanged:
    """The device's health as Kubernetes sees it: gpudra's taints and, from ``ruled``, an operator's
    DeviceTaintRules; unhealthy while any of them blocks it, with a reason naming the taints and the rules."""
    blocked = [t for t in [*taints, *(r.taint for r in ruled)] if t.effect in BLOCKING]
    if not blocked:
        return DeviceHealthChanged(node=node, pool=node, device=device, health="Healthy", reason=reason)
    keys = ", ".join(f"{t.key}={t.value}:{t.effect}" if t.value else f"{t.key}:{t.effect}" for t in blocked)
    rules = blocking_rules(ruled)
    if rules:
        keys += f"; by DeviceTaintRule {', '.join(rules)}"
    why = f"{reason} (taints {keys})" if reason else f"taints {keys}"
    return DeviceHealthChanged(node=node, pool=node, device=device, health="Unhealthy", reason=why)


class TaintStore:
    def __init__(self, bus: Bus, kv: KeyValue) -> None:
        self._bus = bus
        self._kv = kv

    @classmethod
    async def open(cls, bus: Bus) -> TaintStore:
        return cls(bus, await bus.kv(HEALTH_BUCKET))

    async def write(self, node: str, taints: Mapping[str, Sequence[DeviceTaint]]) -> None:
        """The node's complete map (an empty one when nothing is tainted)."""
        value = {device: list(device_taints) for device, device_taints in sorted(taints.items()) if device_taints}
        await self._kv.put(taints_key(node), _encoder.encode(value))

    async def announce(self, event: DeviceHealthChanged, event_id: str) -> None:
        await self._bus.publish(event, event_id=event_id)
