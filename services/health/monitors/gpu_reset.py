"""The GPU-reset executor: the ``ResetGpu`` command, served by the health service on the GPU's node.

The remediation controller decides and drains; this only resets (NVML through the backend) and says how long
it took. It lives beside the monitors because it shares their backend and their view: a reset holds the GPU's
lock so its poller never reads counters mid-reset, and a successful reset clears the one-off conditions it
fixes (XIDs, ECC events, a recovery action) with healthy events, which is the controller's signal that
remediation worked. What the counters still show after the reset stays raised, and GPU lost clears only
when the poller reads the GPU again.

Errors are coded and name the node and device: 400 a name that is not a GPU (a MIG device cannot be reset
alone), 404 no such GPU, 409 the GPU is lost, 500 the reset failed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import defaultdict

from libs.bus import CommandError
from libs.devices import DeviceBackend
from libs.devices.errors import DeviceError, DeviceLost, DeviceNotFound
from libs.events.catalogue.health import ResetGpu, ResetGpuReply
from services.health.monitors.conditions import RESET_CLEARS
from services.health.monitors.entities import EntityMap
from services.health.monitors.reporter import Reporter

log = logging.getLogger(__name__)

_GPU = re.compile(r"^gpu-(\d+)$")
_MIG = re.compile(r"^gpu-(\d+)-mig-")


class GpuLocks:
    """One lock per GPU minor: a reset and that GPU's poll never overlap."""

    def __init__(self) -> None:
        self._locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    def of(self, minor: int) -> asyncio.Lock:
        return self._locks[minor]


def gpu_minor(node: str, device: str) -> int:
    """The minor of ``gpu-<minor>``; anything else is refused with an error that says what to send."""
    if match := _GPU.match(device):
        return int(match.group(1))
    if match := _MIG.match(device):
        raise CommandError(
            400,
            f"node {node}: {device} is a MIG device and cannot be reset alone; "
            f"reset its GPU gpu-{match.group(1)} (which removes all of its MIG devices)",
        )
    raise CommandError(404, f"node {node}: {device!r}: no such GPU on this node (GPU names are gpu-<minor>)")


class GpuResetter:
    """Answers ``ResetGpu``; resets of different GPUs run side by side, of the same GPU one after another."""

    def __init__(self, backend: DeviceBackend, reporter: Reporter, entities: EntityMap, locks: GpuLocks) -> None:
        self._backend = backend
        self._reporter = reporter
        self._entities = entities
        self._locks = locks

    async def __call__(self, command: ResetGpu) -> ResetGpuReply:
        node = self._backend.node
        minor = gpu_minor(node, command.device)
        extra = {"node": node, "device": command.device, "reason": command.reason}
        log.info("resetting GPU", extra=extra)
        started = time.monotonic()
        async with self._locks.of(minor):
            try:
                await self._backend.reset_gpu(minor)
            except DeviceError as exc:
                log.error("GPU reset failed: %s", exc, extra=extra)
                raise CommandError(_code(exc), f"GPU reset failed: {exc}") from None
        duration_ms = (time.monotonic() - started) * 1000
        log.info("GPU reset done", extra={**extra, "duration_ms": round(duration_ms, 1)})
        await self._after_reset(minor)
        return ResetGpuReply(device=command.device, duration_ms=duration_ms)

    async def _after_reset(self, minor: int) -> None:
        """Healthy events for what the reset fixed; the MIG devices it removed leave the entity map."""
        for entry in self._reporter.active(minor, RESET_CLEARS):
            await self._reporter.clear(entry.condition.key)
        try:
            self._entities.update(await self._backend.inventory())
        except DeviceError as exc:
            log.warning("cannot read the inventory after a reset: %s", exc, extra={"node": self._backend.node})


def _code(error: DeviceError) -> int:
    if isinstance(error, DeviceNotFound):
        return 404
    if isinstance(error, DeviceLost):
        return 409
    return 500
