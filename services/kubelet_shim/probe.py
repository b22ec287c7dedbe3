"""``grpc.health.v1`` for liveness probes: SERVING while both sockets are ours and in place.

A process can be alive and useless: if the kubelet's directory was wiped (a node reinstall, a kubelet
cleanup) our sockets are gone and the kubelet forgets the driver. Answering NOT_SERVING then lets the
liveness probe restart the shim, which recreates them. The state of NATS does not count: a restart would
not bring claim_preparation back, and per-claim errors already tell the kubelet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc.aio
from grpc_health.v1 import health, health_pb2

from services.kubelet_shim.sockets import BoundSocket

OVERALL = ""


class SocketHealth(health.aio.HealthServicer):
    """The stock servicer, with each Check first looking at the sockets."""

    def __init__(self, sockets: Sequence[BoundSocket], services: Sequence[str]) -> None:
        super().__init__()
        self._sockets = list(sockets)
        self._services = (OVERALL, *services)

    def add(self, socket: BoundSocket) -> None:
        self._sockets.append(socket)

    async def refresh(self) -> None:
        serving = bool(self._sockets) and all(socket.is_ours() for socket in self._sockets)
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in self._services:
            await self.set(service, status)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        await self.refresh()
        return await super().Check(request, context)
