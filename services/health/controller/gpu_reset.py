"""The GPU-reset executor: a ``ResetGpu`` request to the health service on the GPU's node.

The node resets through its device backend (NVML there, the simulated GPUs in standalone mode) and publishes
healthy events for what the reset fixed, which is how verification learns that it worked. A MIG device cannot
be reset alone: its GPU is reset, which the drain before it accounted for.
"""

from __future__ import annotations

import logging
import time

from libs.bus import Bus, CommandError
from libs.events.catalogue.health import ResetGpu, ResetGpuReply
from services.health.controller.kube_actions import parent_gpu

log = logging.getLogger(__name__)


class RepairFailed(Exception):
    """A reset or reboot did not happen; the message says why (it becomes the outcome's detail)."""


class GpuResetter:
    def __init__(self, bus: Bus, timeout: float) -> None:
        self._bus = bus
        self._timeout = timeout

    async def reset(self, node: str, device: str, reason: str) -> str:
        """Resets ``device``'s GPU; returns a detail for the outcome, raises ``RepairFailed``."""
        gpu = parent_gpu(device)
        started = time.monotonic()
        try:
            reply = await self._bus.request(
                node, ResetGpu(device=gpu, reason=reason), ResetGpuReply, timeout=self._timeout
            )
        except CommandError as exc:
            raise RepairFailed(f"GPU reset of {gpu} on node {node} failed: {exc}") from None
        took = time.monotonic() - started
        log.info("GPU reset done", extra={"node": node, "device": gpu, "duration_ms": round(reply.duration_ms, 1)})
        return f"{gpu} reset in {took:.1f}s"
