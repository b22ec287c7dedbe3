"""The node's devices and their health, as the kubelet's health stream reports them.

Two facts meet here: which devices exist (the node's inventory) and how each is doing (the
``DeviceHealthChanged`` events). A health fact may arrive before its device does, or outlive it, so both
are kept apart and joined only when a list is taken. Without any fact a device is Healthy: until the
health service runs nothing watches the GPUs, and Unknown would make the kubelet flag every pod.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Literal

import msgspec

from libs.devices.model import Inventory
from libs.events.catalogue import DeviceHealthChanged

Health = Literal["Healthy", "Unhealthy", "Unknown"]
DEFAULT_HEALTH: Health = "Healthy"
MAX_MESSAGE = 1024  # the kubelet cuts longer messages


class DeviceKey(msgspec.Struct, frozen=True, order=True):
    pool: str
    device: str


class DeviceHealthEntry(msgspec.Struct, frozen=True, kw_only=True):
    pool: str
    device: str
    health: Health
    since: int
    """Unix seconds of the last change (or of the device's appearance, without a health fact)."""
    message: str = ""


class _Fact(msgspec.Struct, frozen=True, kw_only=True):
    health: Health
    since: int
    message: str


def devices_of(inventory: Inventory) -> list[DeviceKey]:
    """The devices this node publishes, in the inventory's order; the pool is named after the node.

    TODO(discovery): follow the published ResourceSlices once libs/slices defines them (dynamic MIG
    partitions that do not exist yet are devices there too).
    """
    names = [gpu.name for gpu in inventory.gpus] + [mig.name for mig in inventory.mig_devices]
    return [DeviceKey(pool=inventory.node, device=name) for name in names]


class HealthView:
    """Current device list with health; ``version`` grows on every change a stream must send."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._devices: dict[DeviceKey, int] = {}
        """Device -> unix seconds it (last) appeared."""
        self._facts: dict[DeviceKey, _Fact] = {}
        self.version = 0
        self.closed = False
        self._changed = asyncio.Event()

    def set_devices(self, devices: list[DeviceKey]) -> None:
        now = int(self._clock())
        updated = {key: self._devices.get(key, now) for key in devices}
        if list(updated) != list(self._devices):
            self._devices = updated
            self._bump()

    def apply(self, event: DeviceHealthChanged, at: float | None = None) -> None:
        key = DeviceKey(pool=event.pool, device=event.device)
        fact = _Fact(health=event.health, since=int(self._clock() if at is None else at), message=event.reason)
        previous = self._facts.get(key)
        self._facts[key] = fact
        if key in self._devices and (
            previous is None or (previous.health, previous.message) != (fact.health, fact.message)
        ):
            self._bump()

    def snapshot(self) -> list[DeviceHealthEntry]:
        """The complete list, as every stream message must carry it."""
        return [self._entry(key, appeared) for key, appeared in self._devices.items()]

    def _entry(self, key: DeviceKey, appeared: int) -> DeviceHealthEntry:
        fact = self._facts.get(key)
        if fact is None:
            return DeviceHealthEntry(pool=key.pool, device=key.device, health=DEFAULT_HEALTH, since=appeared)
        return DeviceHealthEntry(
            pool=key.pool,
            device=key.device,
            health=fact.health,
            since=max(fact.since, appeared),
            message=fact.message[:MAX_MESSAGE],
        )

    async def wait_change(self, seen: int, timeout: float) -> None:
        """Return when ``version`` differs from ``seen``, the view closes, or ``timeout`` passes."""
        if self.version != seen or self.closed:
            return
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return

    def close(self) -> None:
        """Ends every stream waiting on the view (the process stops)."""
        self.closed = True
        self._bump()

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()
