"""From the inventory (and the devices' taints) to the node's published ResourceSlices.

Building is ``libs.slices.build_slices`` (pure); publishing is ``libs.kube.SlicePublisher`` (diff, write only
what changed, 409 retries, owner reference, obsolete slices deleted). What this module adds is the join with
device taints, which the health service decides.

The taint seam: ``TaintSource.taints_for(node)`` reads the node's entry in the ``gpudra_health`` bucket (key
``<node token>.taints``, value ``{"<device>": [DeviceTaint, ...]}``) and returns no taints when there is none.
The health issue owns that entry; when it changes, ``TaintWatch`` makes discovery republish at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from libs.bus import Bus
from libs.bus.topology import HEALTH_BUCKET, taints_key
from libs.bus.watching import stop_watching
from libs.devices.model import Inventory
from libs.kube.slice_publisher import PublishResult, SlicePublisher
from libs.slices import DeviceTaint, MigMode, build_slices
from libs.slices.passthrough import NO_PASSTHROUGH, PassthroughGpus

log = logging.getLogger(__name__)

Taints = dict[str, list[DeviceTaint]]
"""Device name -> its taints."""


def desired_slices(
    inventory: Inventory,
    taints: Mapping[str, Sequence[DeviceTaint]],
    *,
    k8s_minor: int,
    mig_mode: MigMode,
    shared_gpus: bool = False,
    passthrough: PassthroughGpus = NO_PASSTHROUGH,
) -> list[dict[str, Any]]:
    """The pool as it should be; the generation is the publisher's to choose (it must exceed the published one)."""
    return build_slices(
        inventory,
        k8s_minor=k8s_minor,
        generation=1,
        mig_mode=mig_mode,
        taints=taints,
        shared_gpus=shared_gpus,
        passthrough=passthrough,
    )


class TaintSource:
    """Device taints per node, from the health bucket; the last readable value wins over an unreadable one."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self._last: dict[str, Taints] = {}

    @classmethod
    async def open(cls, bus: Bus) -> TaintSource:
        return cls(await bus.kv(HEALTH_BUCKET))

    async def taints_for(self, node: str) -> Taints:
        try:
            entry = await self.kv.get(taints_key(node))
        except KeyNotFoundError:
            self._last[node] = {}
            return {}
        try:
            taints = msgspec.json.decode(entry.value or b"{}", type=Taints)
        except msgspec.DecodeError as exc:
            log.warning(
                "unreadable device taints; keeping the last ones read",
                extra={"node": node, "key": taints_key(node), "error": str(exc)},
            )
            return self._last.get(node, {})
        self._last[node] = taints
        return taints


class TaintWatch:
    """Calls ``on_change`` for every value of a node's taint entry (the current one first).

    The watcher is created in ``start`` (awaited), not in the background task: a watch cancelled while its
    consumer is being created leaves a subscription that stalls the connection's drain at shutdown.
    """

    def __init__(self, kv: KeyValue, node: str) -> None:
        self._kv = kv
        self._node = node
        self._watcher: KeyValue.KeyWatcher | None = None

    async def start(self) -> None:
        self._watcher = await self._kv.watch(taints_key(self._node))

    async def run(self, on_change: Callable[[str], None]) -> None:
        if self._watcher is None:
            raise RuntimeError("TaintWatch.run before start")
        async for entry in self._watcher:
            if entry is not None:
                on_change("taints")

    async def stop(self) -> None:
        await stop_watching(self._watcher)
        self._watcher = None


class SliceSync:
    """Publishes the node's pool for an inventory: taints joined, laid out for the API server's version."""

    def __init__(
        self,
        publisher: SlicePublisher,
        taints: TaintSource,
        *,
        k8s_minor: int,
        mig_mode: MigMode,
        shared_gpus: bool = False,
        passthrough: PassthroughGpus = NO_PASSTHROUGH,
    ) -> None:
        self.publisher = publisher
        self.taints = taints
        self.k8s_minor = k8s_minor
        self.mig_mode = mig_mode
        self.shared_gpus = shared_gpus
        self.passthrough = passthrough

    async def publish(self, inventory: Inventory) -> PublishResult:
        """Raises ``SlicePublishError`` (API) or ``SliceLayoutError`` (a GPU the version cannot describe)."""
        taints = await self.taints.taints_for(inventory.node)
        desired = desired_slices(
            inventory,
            taints,
            k8s_minor=self.k8s_minor,
            mig_mode=self.mig_mode,
            shared_gpus=self.shared_gpus,
            passthrough=self.passthrough,
        )
        return await self.publisher.publish(desired)
