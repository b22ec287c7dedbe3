"""The ``InjectFault`` command: make a simulated GPU fail as real hardware would, through the bus.

Discovery serves it because it holds the node's device backend; the fault then reaches every part of the
system by the paths a real one takes (the backend's event stream, its counters, a shrinking inventory), so a
test or a demo exercises the real code. Only the simulated backend can fake a fault; on NVML the command is
refused with 501, never half-applied.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from libs.bus import CommandError
from libs.devices import DeviceBackend
from libs.devices.errors import DeviceLost, DeviceNotFound
from libs.devices.simulated import SimulatedBackend
from libs.events.catalogue import InjectFault, InjectFaultReply

log = logging.getLogger(__name__)

_GPU_NAME = re.compile(r"(?:gpu-)?(\d+)")
NVLINK_LINK = 0
"""The link an ``nvlink-down`` fault takes down: the command has no link field (yet)."""
INVENTORY_FAULTS = frozenset({"gpu-lost", "gpu-back"})
"""Faults that change the inventory, so discovery reads it again at once."""


def gpu_minor(node: str, device: str) -> int:
    """The minor number of ``gpu-3`` (or ``3``); a MIG device or any other name is refused with a clear error."""
    match = _GPU_NAME.fullmatch(device)
    if match is None:
        raise CommandError(400, f"node {node}: {device!r} is not a GPU name; use gpu-<minor> (e.g. gpu-0)")
    return int(match.group(1))


def xid_target(device: str) -> int | str:
    """An XID may hit a GPU (``gpu-3``, ``3``) or a MIG device (by name); the backend resolves names."""
    return int(device) if device.isdigit() else device


class FaultInjector:
    """Answers ``InjectFault``; ``on_inventory_fault`` is told after a fault that changes the device list."""

    def __init__(self, backend: DeviceBackend, on_inventory_fault: Callable[[str], None]) -> None:
        self._backend = backend
        self._on_inventory_fault = on_inventory_fault

    async def __call__(self, command: InjectFault) -> InjectFaultReply:
        backend = self._simulated()
        try:
            await self._inject(backend, command)
        except (DeviceNotFound, DeviceLost) as exc:
            raise CommandError(404 if isinstance(exc, DeviceNotFound) else 409, str(exc)) from None
        except ValueError as exc:
            raise CommandError(400, f"node {backend.node}: {exc}") from None
        log.info(
            "injected a simulated fault",
            extra={"node": backend.node, "device": command.device, "fault": command.kind, "xid": command.xid},
        )
        if command.kind in INVENTORY_FAULTS:
            self._on_inventory_fault(command.kind)
        return InjectFaultReply(device=command.device, kind=command.kind)

    def _simulated(self) -> SimulatedBackend:
        if not isinstance(self._backend, SimulatedBackend):
            raise CommandError(
                501,
                f"node {self._backend.node}: fault injection needs the simulated backend; "
                f"this node runs {self._backend.name} (real GPUs cannot be made to fail on request)",
            )
        return self._backend

    @staticmethod
    async def _inject(backend: SimulatedBackend, command: InjectFault) -> None:
        node = backend.node
        match command.kind:
            case "xid":
                if command.xid is None:
                    raise CommandError(400, f"node {node}: an xid fault needs the xid number")
                await backend.inject_xid(xid_target(command.device), command.xid)
            case "ecc-single" | "ecc-double":
                await backend.inject_ecc(
                    gpu_minor(node, command.device), double_bit=command.kind == "ecc-double", count=command.count
                )
            case "gpu-lost":
                await backend.inject_gpu_lost(gpu_minor(node, command.device))
            case "gpu-back":
                await backend.restore_gpu(gpu_minor(node, command.device))
            case "nvlink-down":
                await backend.inject_nvlink_down(gpu_minor(node, command.device), NVLINK_LINK)
            case "thermal":
                await backend.inject_thermal(gpu_minor(node, command.device))
