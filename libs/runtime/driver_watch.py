"""A driver installed or upgraded under a running service: the service restarts to load it.

NVML is loaded once, at start, from the driver root (``libs.devices.nvml.library``), and claim_preparation finds
the driver's files for CDI specs once as well. When the driver changes under a running process (the GPU
Operator's driver upgrade, a driver container that comes up after the service did, a host package upgrade), the
loaded NVML no longer matches the kernel module and new specs would name files that are gone. Nothing short of a
new process cures that, so the watch fails the bus link with the reason: the process exits 1, as for any failure
only a restart cures, and the kubelet (or ``gpudra up``) starts it again on the new driver. A driver that goes
away is no reason to restart yet (there is nothing to load, and restarts would only loop until it is back); its
return is, even at the same version.

A service enters the watch once its device backend is open, so the version it starts from is the one it loaded
(a simulated machine lays out its stand-in driver when first opened). The version is the one ``libs.cdi.driver``
finds: the kernel module's, or on a simulated node the newest stand-in ``libcuda`` in its root. Reading it is a
small file and a few directory listings, every ``driver_check_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from libs.cdi.driver import driver_version
from libs.devices.settings import DeviceSettings
from libs.runtime.background import in_background

log = logging.getLogger(__name__)


class DriverWatch:
    """Whether the driver a process started on (``started``; "" for none) is still the one installed."""

    def __init__(self, started: str) -> None:
        self.started = started
        self.gone = False

    def check(self, now: str) -> str | None:
        """Why the process must restart, now that ``now`` is installed ("" for none), or None.

        A driver that went away and came back is a reload even at the same version: the kernel module the
        process's NVML talks to was unloaded."""
        if not now:
            self.gone = bool(self.started)
            return None
        if now != self.started:
            return (
                f"NVIDIA driver {now} replaced {self.started or 'no driver'} under this process; restarting to load it"
            )
        if self.gone:
            return f"NVIDIA driver {now} went away and came back under this process; restarting to load it again"
        return None


@asynccontextmanager
async def watching_driver(
    settings: DeviceSettings, fail: Callable[[str], None], *, proc_root: Path | str = "/proc"
) -> AsyncIterator[None]:
    """For the life of the block, ``fail`` with the reason once the driver changes (``DriverWatch``)."""
    if not settings.driver_check_seconds:
        yield
        return
    seen = settings.driver_root_seen
    started = await asyncio.to_thread(driver_version, seen, proc_root=proc_root)
    watch = _watch(seen, proc_root, DriverWatch(started), settings.driver_check_seconds, fail)
    async with in_background(watch, "driver watch"):
        yield


async def _watch(
    seen: str, proc_root: Path | str, watch: DriverWatch, every: float, fail: Callable[[str], None]
) -> None:
    while True:
        await asyncio.sleep(every)
        now = await asyncio.to_thread(driver_version, seen, proc_root=proc_root)
        reason = watch.check(now)
        if reason:
            log.warning(reason, extra={"driver_root": seen, "driver_version": now, "started_on": watch.started})
            fail(reason)
            return
