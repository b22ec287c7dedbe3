"""The event-stream monitor: the backend's hardware events (NVML's event set) as HealthEvents.

XIDs and ECC events are one-off reports: each is published (the controller counts repeats) and stays active
until a GPU reset clears it. GPU lost is a state, shared with the pollers, which clear it when the GPU answers
again. A recovery action is a state too: the driver's next recovery action replaces it, and NONE clears it.

The stream has no deadline (silence is the normal case); a subscription that fails or ends is a crash, and
the watchdog makes every GPU unmonitored until it is back.
"""

from __future__ import annotations

import logging

from libs.devices import DeviceBackend
from libs.devices.errors import DeviceError
from libs.devices.events import DeviceEvent, EccEvent, GpuLostEvent, RecoveryAction, RecoveryActionEvent, XidEvent
from libs.events.catalogue.health import EntityRef
from services.health.monitors import opinions
from services.health.monitors.conditions import (
    CHECK_ECC,
    CHECK_GPU_LOST,
    CHECK_RECOVERY,
    CHECK_XID,
    Condition,
    condition_key,
)
from services.health.monitors.entities import EntityMap
from services.health.monitors.reporter import Reporter
from services.health.monitors.watchdog import Heartbeat

log = logging.getLogger(__name__)

MONITOR_NAME = "device-events"


def xid_condition(event: XidEvent, entity: EntityRef, note: str = "") -> Condition:
    """An XID on a GPU, or on one of its MIG devices when ``entity`` is the MIG device."""
    return Condition(
        check=CHECK_XID,
        component="mig" if entity.kind == "mig" else "gpu",
        entity=entity,
        code=str(event.xid),
        minor=event.minor,
        action=opinions.xid_action(event.xid),
        message=f"XID {event.xid} ({opinions.xid_meaning(event.xid)}) on {entity.device}{note}",
    )


def ecc_condition(event: EccEvent, entity: EntityRef) -> Condition:
    kind = "double-bit" if event.double_bit else "single-bit"
    return Condition(
        check=CHECK_ECC,
        component="memory",
        entity=entity,
        code=kind,
        minor=event.minor,
        action="COMPONENT_RESET" if event.double_bit else "NONE",
        message=f"{kind} ECC error on {entity.device}",
    )


def gpu_lost_condition(minor: int, entity: EntityRef, why: str) -> Condition:
    return Condition(
        check=CHECK_GPU_LOST,
        component="gpu",
        entity=entity,
        code="gpu-lost",
        minor=minor,
        action=opinions.GPU_LOST_ACTION,
        message=f"{entity.device} is lost: {why}",
    )


def recovery_condition(event: RecoveryActionEvent, entity: EntityRef) -> Condition:
    """One condition per GPU whose detail is the driver's latest action, so a new action replaces the old."""
    name = opinions.recovery_action_name(event.action)
    return Condition(
        check=CHECK_RECOVERY,
        component="gpu",
        entity=entity,
        code="requested",
        minor=event.minor,
        action=opinions.recovery_action(event.action),
        error_codes=(name,),
        detail=name,
        message=f"the driver asks for recovery action {name} on {entity.device}",
    )


class EventStreamMonitor:
    def __init__(self, backend: DeviceBackend, reporter: Reporter, entities: EntityMap) -> None:
        self._backend = backend
        self._reporter = reporter
        self._entities = entities

    async def run(self, beat: Heartbeat) -> None:
        """Subscribes (that is the moment it answers), then handles events until the stream fails."""
        events = self._backend.events()
        beat()
        async for event in events:
            await self.handle(event)
        raise RuntimeError("the device event stream ended")

    async def handle(self, event: DeviceEvent) -> None:
        gpu = self._entities.gpu(event.minor, event.uuid)
        match event:
            case XidEvent():
                await self._reporter.point(await self._xid(event, gpu), event.at)
            case EccEvent():
                await self._reporter.point(ecc_condition(event, gpu), event.at)
            case GpuLostEvent():
                await self._reporter.report(gpu_lost_condition(event.minor, gpu, "NVML reports the GPU unavailable"))
            case RecoveryActionEvent() if event.action == RecoveryAction.NONE:
                await self._reporter.clear(condition_key(CHECK_RECOVERY, gpu.id, "requested"))
            case RecoveryActionEvent():
                await self._reporter.report(recovery_condition(event, gpu))

    async def _xid(self, event: XidEvent, gpu: EntityRef) -> Condition:
        """On a MIG device, the MIG entity; one created since the last look is found by reading the inventory."""
        gi, ci = event.gpu_instance_id, event.compute_instance_id
        if gi is None or ci is None:
            return xid_condition(event, gpu)
        entity = self._entities.mig(event.minor, gi, ci) or await self._refreshed_mig(event.minor, gi, ci)
        if entity is None:
            return xid_condition(event, gpu, f" (GPU instance {gi}, compute instance {ci}: no such MIG device now)")
        return xid_condition(event, entity)

    async def _refreshed_mig(self, minor: int, gi: int, ci: int) -> EntityRef | None:
        try:
            self._entities.update(await self._backend.inventory())
        except DeviceError as exc:
            log.warning("cannot read the inventory to name a MIG device: %s", exc, extra=self._log(minor))
            return None
        return self._entities.mig(minor, gi, ci)

    def _log(self, minor: int) -> dict[str, str]:
        return {"node": self._reporter.node, "device": self._entities.gpu(minor).device}
