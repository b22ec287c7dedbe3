"""Wiring of claim_preparation: Kubernetes port, device backend, checkpoint, the two endpoints, the cleanup.

Start order matters: the checkpoint is loaded and the node brought in line with it (half-prepared claims
rolled back, leftover CDI specs and created MIG devices removed) before the endpoints are served, so the first
kubelet call after a crash meets a consistent node.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from libs.bus import Bus, Endpoint
from libs.bus.device_health import DeviceHealthFollower
from libs.cdi import SpecDir
from libs.cdi.driver import DriverFiles
from libs.devices import DeviceBackend, open_configured_backend
from libs.events.catalogue import PrepareClaims, UnprepareClaims
from libs.kube import KubeApi, open_kube
from libs.runtime.driver_watch import watching_driver
from services.claim_preparation.cdi import driver_files, node_paths
from services.claim_preparation.checkpoint import CheckpointStore, read_boot_id
from services.claim_preparation.device_status import DeviceStatusWriter
from services.claim_preparation.handlers import ClaimCommands
from services.claim_preparation.mps import MpsDaemons, NvidiaMpsDaemons, RecordedMpsDaemons, mps_command, report_mps
from services.claim_preparation.outbox import RETRY_SECONDS, Outbox
from services.claim_preparation.preparer import Parts, Preparer
from services.claim_preparation.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClaimService:
    """A running claim_preparation (for the process, and for tests that drive it on a real bus)."""

    preparer: Preparer
    commands: ClaimCommands
    endpoints: Sequence[Endpoint[Any]]


async def periodically(interval: float, job: Callable[[], Awaitable[object]], name: str) -> None:
    """Run ``job`` every ``interval`` seconds until cancelled; a failing run is logged, the next one still runs."""
    while True:
        await asyncio.sleep(interval)
        try:
            await job()
        except Exception:
            log.exception("%s failed; retrying in %gs", name, interval)


def _daemons(backend: DeviceBackend, files: DriverFiles, seen: str) -> MpsDaemons:
    """The driver root's MPS daemons on a GPU node; a simulated node records what would run."""
    if backend.name != "nvml":
        return RecordedMpsDaemons()
    command = mps_command(files, seen)
    report_mps(command, files)
    return NvidiaMpsDaemons(command)


async def build_parts(
    stack: AsyncExitStack, bus: Bus, settings: Settings, kube: KubeApi | None, backend: DeviceBackend | None
) -> Parts:
    """Open what was not given (Kubernetes adapter, device backend); what is opened here is closed by ``stack``."""
    if kube is None:
        kube = await open_kube(settings, bus.js)
        stack.push_async_callback(kube.close)
    if backend is None:
        backend = await open_configured_backend(settings)
        stack.push_async_callback(backend.close)
    files = await asyncio.to_thread(
        functools.partial(
            driver_files,
            settings.driver_root_path,
            driver_mount=settings.driver_root_mount,
            hook=settings.cdi_hook_path,
        )
    )
    return Parts(
        driver=settings.driver_name,
        node=settings.node_name,
        kube=kube,
        backend=backend,
        checkpoint=CheckpointStore(settings.checkpoint_path),
        specs=SpecDir(settings.cdi_dir),
        paths=await asyncio.to_thread(
            functools.partial(node_paths, settings.dev_root_path, files, require_nodes=backend.name == "nvml")
        ),
        daemons=_daemons(backend, files, settings.driver_root_seen),
        mps_root=settings.mps_path.absolute(),
        boot_id=await asyncio.to_thread(read_boot_id, settings.boot_id_path),
        outbox=Outbox(bus, settings.checkpoint_path),
        dynamic_mig=settings.mig_mode == "dynamic",
        passthrough=settings.passthrough,
        vfio_timeout=settings.passthrough_timeout_seconds,
        device_status=(
            DeviceStatusWriter(kube, settings.driver_name, delay=settings.device_status_delay_seconds)
            if settings.device_status
            else None
        ),
    )


@asynccontextmanager
async def running(
    bus: Bus, settings: Settings, *, kube: KubeApi | None = None, backend: DeviceBackend | None = None
) -> AsyncIterator[ClaimService]:
    """Everything but serving: yields the endpoints to serve. Tests may pass their own adapter and backend."""
    async with AsyncExitStack() as stack:
        parts = await build_parts(stack, bus, settings, kube, backend)
        preparer = Preparer(parts)
        await preparer.start()
        await _report_device_status(stack, bus, settings, preparer)
        commands = ClaimCommands(preparer)
        cleanup = asyncio.create_task(
            periodically(settings.cleanup_interval_seconds, preparer.cleanup, "cleanup of unfinished claims")
        )
        outbox = asyncio.create_task(periodically(RETRY_SECONDS, parts.outbox.flush, "the claim event outbox"))
        try:
            yield ClaimService(
                preparer=preparer,
                commands=commands,
                endpoints=[
                    Endpoint(PrepareClaims, commands.prepare, concurrency=settings.prepare_concurrency),
                    Endpoint(UnprepareClaims, commands.unprepare, concurrency=settings.prepare_concurrency),
                ],
            )
        finally:
            for task in (cleanup, outbox):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await parts.outbox.flush(retry=False)


async def _report_device_status(stack: AsyncExitStack, bus: Bus, settings: Settings, preparer: Preparer) -> None:
    """The claims' device status: written by its own task, and kept in step with the node's device health."""
    writer = preparer.parts.device_status
    if writer is None:
        return
    writer.start()
    stack.push_async_callback(writer.stop)
    follower = DeviceHealthFollower(bus, settings.node_name, preparer.device_health)
    await follower.start()
    stack.push_async_callback(follower.stop)


@asynccontextmanager
async def lifespan(bus: Bus, settings: Settings) -> AsyncIterator[Sequence[Endpoint[Any]]]:
    async with running(bus, settings) as service, watching_driver(settings, bus.link.fail):
        yield service.endpoints
