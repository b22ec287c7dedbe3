"""Wiring of discovery: device backend + Kubernetes API + the loop that keeps inventory and slices current.

Start-up reads the inventory and publishes the slices before the service registers on the bus, so once
``gpudra up`` (or a readiness check) sees discovery, the node's inventory and slices are there to read.
The one command served is ``InjectFault`` (subject ``gpudra.v1.<node>.rpc.devices.inject-fault``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from libs.bus import Bus, Endpoint
from libs.events.catalogue import InjectFault
from libs.kube.slice_publisher import SlicePublisher
from libs.runtime.devices import open_devices
from libs.runtime.driver_watch import watching_driver
from services.discovery.faults import FaultInjector
from services.discovery.inventory_store import InventoryStore
from services.discovery.reconcile import Reconciler
from services.discovery.settings import CONSUMABLE_CAPACITY_BETA, Settings
from services.discovery.slices_sync import SliceSync, TaintSource, TaintWatch
from services.discovery.startup import Kubernetes, open_kubernetes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Discovery:
    """The running parts, for the process (``lifespan``) and for tests that drive them directly."""

    reconciler: Reconciler
    kube: Kubernetes
    endpoints: list[Endpoint[Any]]


@asynccontextmanager
async def running(bus: Bus, settings: Settings) -> AsyncIterator[Discovery]:
    """Opens, starts (one inventory read and slice publication done) and finally stops discovery.

    Raises ``StartupError`` (with its exit code) when the backend or the Kubernetes API cannot be used.
    """
    async with AsyncExitStack() as stack:
        backend = await open_devices(settings)
        stack.push_async_callback(backend.close)
        kube = await open_kubernetes(settings, bus)
        stack.push_async_callback(kube.api.close)
        log.info(
            "discovery starting",
            extra={
                "node": settings.node_name,
                "backend": backend.name,
                "kube_mode": kube.mode,
                "kube_minor": kube.minor,
                "mig_mode": settings.mig_mode,
                "consumable_capacity": settings.consumable_capacity,
                "passthrough_gpus": settings.passthrough_gpus,
            },
        )
        if settings.consumable_capacity and kube.mode != "local" and kube.minor < CONSUMABLE_CAPACITY_BETA:
            log.warning(
                "consumable_capacity is on, but Kubernetes 1.%d has DRAConsumableCapacity off by default: unless the "
                "gate is on, the API server drops allowMultipleAllocations and every GPU stays whole to one claim",
                kube.minor,
                extra={"node": settings.node_name, "kube_minor": kube.minor},
            )
        taints = await TaintSource.open(bus)
        publisher = SlicePublisher(kube.api, settings.node_name, synthetic_owner=kube.mode == "local")
        reconciler = Reconciler(
            bus=bus,
            backend=backend,
            store=await InventoryStore.open(bus, settings.node_name),
            slices=SliceSync(
                publisher,
                taints,
                k8s_minor=kube.minor,
                mig_mode=settings.mig,
                shared_gpus=settings.consumable_capacity,
                passthrough=settings.passthrough,
            ),
            resync_seconds=settings.resync_seconds,
            retry_seconds=settings.retry_seconds,
        )
        taint_watch = TaintWatch(taints.kv, settings.node_name)
        await taint_watch.start()
        stack.push_async_callback(taint_watch.stop)
        await reconciler.start()
        stack.push_async_callback(reconciler.stop)
        reconciler.background(taint_watch.run(reconciler.request), "taint watch")
        yield Discovery(
            reconciler=reconciler,
            kube=kube,
            endpoints=[Endpoint(InjectFault, FaultInjector(backend, reconciler.request))],
        )


@asynccontextmanager
async def lifespan(bus: Bus, settings: Settings) -> AsyncIterator[Sequence[Endpoint[Any]]]:
    async with running(bus, settings) as discovery, watching_driver(settings, bus.link.fail):
        yield discovery.endpoints
