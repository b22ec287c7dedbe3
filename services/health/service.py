"""Wiring of health: the node monitors (role ``node``), the remediation controller (role ``controller``), or
both in one process (``both``, the standalone default).

The node side serves ``ResetGpu`` (``gpudra.v1.<node>.rpc.health.reset-gpu``) with the service's endpoints;
the controller serves its operator commands on the cluster-wide subjects itself. A start-up problem (no
NVML, a broken profile, a wrong catalogue or drain policy, no Kubernetes API) is a ``StartupError`` with the
setting to change and an exit code of its own.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from libs.bus import Bus, Endpoint
from libs.kube import KubeError
from libs.runtime.devices import open_devices
from libs.runtime.driver_watch import watching_driver
from libs.runtime.startup import EXIT_CONFIG, EXIT_KUBE, StartupError
from services.health.controller import running_controller
from services.health.controller.config import ConfigError, from_settings
from services.health.monitors import MonitorSettings
from services.health.node_agent import node_agent
from services.health.settings import Settings

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(bus: Bus, settings: Settings) -> AsyncIterator[Sequence[Endpoint[Any]]]:
    async with AsyncExitStack() as stack:
        endpoints: list[Endpoint[Any]] = []
        if settings.role in ("node", "both"):
            endpoints += await stack.enter_async_context(node_side(bus, settings))
        if settings.role in ("controller", "both"):
            await stack.enter_async_context(controller_side(bus, settings))
        log.info("health started", extra={"role": settings.role, "node": settings.node_name})
        yield endpoints


@asynccontextmanager
async def node_side(bus: Bus, settings: Settings) -> AsyncIterator[list[Endpoint[Any]]]:
    """The monitors of this node's GPUs and the GPU-reset executor (``node_agent``), until the driver changes."""
    backend = await open_devices(settings)
    try:
        monitors = MonitorSettings.from_settings(settings)
        async with (
            node_agent(bus, backend, monitors, Path(settings.state_dir) / "health") as endpoints,
            watching_driver(settings, bus.link.fail),
        ):
            yield endpoints
    finally:
        await backend.close()


@asynccontextmanager
async def controller_side(bus: Bus, settings: Settings) -> AsyncIterator[None]:
    try:
        config = from_settings(settings)
    except ConfigError as exc:
        raise StartupError(EXIT_CONFIG, str(exc)) from exc
    try:
        async with running_controller(bus, settings, config):
            yield
    except KubeError as exc:
        raise StartupError(EXIT_KUBE, f"{exc} (settings --kube-mode / --kubeconfig)") from exc
