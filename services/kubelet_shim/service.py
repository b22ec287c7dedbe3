"""Wiring of kubelet_shim: the health view and its feeds, then per driver the DRA server and its registration socket.

One shim serves both of gpudra's DRA drivers, each with its own registration and DRA sockets: GPU claims
(``gpu.gpudra.io``, forwarded to claim_preparation, with the device health stream) and IMEX channel claims of
ComputeDomains (``compute-domain.gpudra.io``, forwarded to compute_domain, no health stream), so the kubelet's
face is one process with one set of rules for checks, deadlines and per-claim errors. The drivers differ only
by a ``Route`` (which commands, to which node service) and their socket paths.

Start order is what the kubelet needs to see: the device health is loaded before anything is served, and for
each driver the DRA socket answers before its registration socket appears (the kubelet calls the endpoint as
soon as it has registered); the GPU driver comes first. Stop order is the reverse, driver by driver (the
compute-domain driver first): its registration socket goes first, which deregisters it, then its calls in
flight get ``shutdown_grace_seconds`` to finish, then its DRA socket goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc.aio
from grpc_health.v1 import health_pb2_grpc

from libs.bus import Bus, Endpoint
from libs.bus.device_health import DeviceHealthFollower
from protos.gen import dra_v1_pb2_grpc, dra_v1beta1_pb2_grpc, health_v1alpha1_pb2_grpc, pluginregistration_pb2_grpc
from services.kubelet_shim.dra import (
    CHANNEL_ROUTE,
    GPU_ROUTE,
    V1_SERVICE,
    V1BETA1_SERVICE,
    ClaimForwarder,
    DraV1,
    DraV1beta1,
    Route,
)
from services.kubelet_shim.health_sources import InventoryWatch
from services.kubelet_shim.health_stream import ResourceHealth
from services.kubelet_shim.health_view import HealthView
from services.kubelet_shim.probe import SocketHealth
from services.kubelet_shim.registration import DRA_VERSIONS, SUPPORTED_VERSIONS, Registration
from services.kubelet_shim.settings import Settings
from services.kubelet_shim.sockets import BoundSocket, SocketError, bind

log = logging.getLogger(__name__)

STARTUP_SYNC_SECONDS = 5.0
"""How long the start waits for the inventory and health replay before serving what it has."""


@dataclass(frozen=True, kw_only=True)
class Shim:
    """What a running shim exposes (to tests and to the process)."""

    view: HealthView
    registration: Registration
    registration_socket: BoundSocket
    dra_socket: BoundSocket
    probe: SocketHealth
    probe_port: int | None
    channels: ServedDriver | None = None
    """The compute-domain driver's sockets, when served."""


@dataclass(frozen=True, kw_only=True)
class ServedDriver:
    """One driver the shim serves: its registration servicer and its two sockets."""

    registration: Registration
    registration_socket: BoundSocket
    dra_socket: BoundSocket


async def _feed_view(stack: contextlib.AsyncExitStack, bus: Bus, settings: Settings) -> HealthView:
    view = HealthView()
    inventory = InventoryWatch(bus, view, settings.node_name)
    events = DeviceHealthFollower(bus, settings.node_name, view.apply)
    await inventory.start()
    stack.push_async_callback(inventory.stop)
    await events.start()
    stack.push_async_callback(events.stop)
    try:
        async with asyncio.timeout(STARTUP_SYNC_SECONDS):
            await asyncio.gather(inventory.synced.wait(), events.synced.wait())
    except TimeoutError:
        log.warning(
            "device health not fully loaded at start; serving what is known", extra={"node": settings.node_name}
        )
    return view


async def _serve_dra(
    stack: contextlib.AsyncExitStack,
    bus: Bus,
    settings: Settings,
    *,
    socket_path: Path,
    route: Route,
    view: HealthView | None,
    probe: SocketHealth,
) -> BoundSocket:
    """One driver's DRA socket; ``view``: the GPU driver's device health stream (channels have none)."""
    forwarder = ClaimForwarder(
        bus,
        node=settings.node_name,
        timeout=settings.prepare_timeout,
        max_claims=settings.max_claims_per_call,
        route=route,
    )
    server = grpc.aio.server()
    dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(DraV1(forwarder), server)
    dra_v1beta1_pb2_grpc.add_DRAPluginServicer_to_server(DraV1beta1(forwarder), server)
    if view is not None:
        health = ResourceHealth(
            view,
            resend=settings.health_resend_seconds,
            timeout_seconds=settings.health_check_timeout_seconds,
            node=settings.node_name,
        )
        health_v1alpha1_pb2_grpc.add_DRAResourceHealthServicer_to_server(health, server)
    health_pb2_grpc.add_HealthServicer_to_server(probe, server)
    socket = bind(server, socket_path, dialled=True)

    async def stop() -> None:
        if view is not None:
            view.close()  # health streams end now; the kubelet reconnects to the next shim
        await server.stop(settings.shutdown_grace_seconds)
        socket.remove()
        socket.close()

    stack.push_async_callback(stop)
    await server.start()
    return socket


async def _serve_driver(
    stack: contextlib.AsyncExitStack,
    bus: Bus,
    settings: Settings,
    *,
    driver: str,
    plugin_dir: str,
    route: Route,
    view: HealthView | None,
    probe: SocketHealth,
) -> ServedDriver:
    """The DRA socket first, then the registration socket (the kubelet dials the endpoint once registered)."""
    registration_path, dra_path = settings.sockets(driver, plugin_dir)
    dra_socket = await _serve_dra(stack, bus, settings, socket_path=dra_path, route=route, view=view, probe=probe)
    probe.add(dra_socket)
    versions = SUPPORTED_VERSIONS if view is not None else DRA_VERSIONS  # the health stream only where served
    registration = Registration(driver, dra_path, settings.node_name, versions)
    registration_socket = await _serve_registration(stack, registration_path, registration)
    probe.add(registration_socket)
    return ServedDriver(registration=registration, registration_socket=registration_socket, dra_socket=dra_socket)


async def _serve_registration(stack: contextlib.AsyncExitStack, path: Path, registration: Registration) -> BoundSocket:
    server = grpc.aio.server()
    pluginregistration_pb2_grpc.add_RegistrationServicer_to_server(registration, server)
    socket = bind(server, path, dialled=False)

    async def stop() -> None:
        socket.remove()  # first: the kubelet deregisters the driver when the socket goes
        await server.stop(None)
        socket.close()

    stack.push_async_callback(stop)
    await server.start()
    return socket


async def _serve_probe(stack: contextlib.AsyncExitStack, settings: Settings, probe: SocketHealth) -> int | None:
    if settings.grpc_health_port < 0:
        return None
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(probe, server)
    address = f"{settings.grpc_health_host}:{settings.grpc_health_port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise SocketError(f"cannot bind the grpc health port {address}: {exc}") from None
    await server.start()

    async def stop() -> None:
        await probe.enter_graceful_shutdown()
        await server.stop(None)

    stack.push_async_callback(stop)
    return port


@contextlib.asynccontextmanager
async def serve(bus: Bus, settings: Settings) -> AsyncIterator[Shim]:
    """Run the shim until the block exits; sockets are removed on the way out, even after an error."""
    async with contextlib.AsyncExitStack() as stack:
        view = await _feed_view(stack, bus, settings)
        probe = SocketHealth([], services=[V1_SERVICE, V1BETA1_SERVICE])
        gpus = await _serve_driver(
            stack, bus, settings, driver=settings.driver_name, plugin_dir=settings.plugin_dir, route=GPU_ROUTE,
            view=view, probe=probe,
        )  # fmt: skip
        channels = None
        if settings.compute_domain_driver_name:
            channels = await _serve_driver(
                stack, bus, settings, driver=settings.compute_domain_driver_name,
                plugin_dir=settings.compute_domain_plugin_dir, route=CHANNEL_ROUTE, view=None, probe=probe,
            )  # fmt: skip
        probe_port = await _serve_probe(stack, settings, probe)
        log.info(
            "serving the kubelet",
            extra={
                "node": settings.node_name,
                "registration_socket": str(gpus.registration_socket.path),
                "dra_socket": str(gpus.dra_socket.path),
                "compute_domain_dra_socket": str(channels.dra_socket.path) if channels else None,
                "grpc_health_port": probe_port,
            },
        )
        yield Shim(
            view=view,
            registration=gpus.registration,
            registration_socket=gpus.registration_socket,
            dra_socket=gpus.dra_socket,
            probe=probe,
            probe_port=probe_port,
            channels=channels,
        )


@contextlib.asynccontextmanager
async def lifespan(bus: Bus, settings: Settings) -> AsyncIterator[Sequence[Endpoint[Any]]]:
    """The shim serves gRPC, not NATS commands: no endpoints of its own."""
    try:
        async with serve(bus, settings):
            yield []
    except SocketError as exc:
        log.error("cannot serve the kubelet: %s", exc, extra={"node": settings.node_name})
        raise SystemExit(1) from None
