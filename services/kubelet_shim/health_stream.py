"""``v1alpha1.DRAResourceHealth/NodeWatchResources``: the node's device list with health, streamed.

Every message is the complete list (the kubelet treats a device left out as gone). A message goes out at
once, on every change, and every ``resend`` seconds even without one: the kubelet stamps each report with
its own clock and shows a device as Unknown when it has not heard of it for 30 s.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc.aio

from protos.gen import health_v1alpha1_pb2, health_v1alpha1_pb2_grpc
from services.kubelet_shim.health_view import DeviceHealthEntry, Health, HealthView
from services.kubelet_shim.metrics import HEALTH_STREAMS

log = logging.getLogger(__name__)

_TO_PROTO: Mapping[Health, health_v1alpha1_pb2.HealthStatus.ValueType] = {
    "Healthy": health_v1alpha1_pb2.HEALTHY,
    "Unhealthy": health_v1alpha1_pb2.UNHEALTHY,
    "Unknown": health_v1alpha1_pb2.UNKNOWN,
}


def response(entries: list[DeviceHealthEntry], timeout_seconds: int) -> health_v1alpha1_pb2.NodeWatchResourcesResponse:
    return health_v1alpha1_pb2.NodeWatchResourcesResponse(
        devices=[
            health_v1alpha1_pb2.DeviceHealth(
                device=health_v1alpha1_pb2.DeviceIdentifier(pool_name=e.pool, device_name=e.device),
                health=_TO_PROTO[e.health],
                last_updated_time=e.since,
                health_check_timeout_seconds=timeout_seconds,
                message=e.message,
            )
            for e in entries
        ]
    )


class ResourceHealth(health_v1alpha1_pb2_grpc.DRAResourceHealthServicer):
    def __init__(self, view: HealthView, *, resend: float, timeout_seconds: int, node: str) -> None:
        self._view = view
        self._resend = resend
        self._timeout_seconds = timeout_seconds
        self._node = node

    async def NodeWatchResources(
        self, request: health_v1alpha1_pb2.NodeWatchResourcesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[health_v1alpha1_pb2.NodeWatchResourcesResponse]:
        """Ends when the shim stops; the kubelet then retries every 5 s, reaching the next shim."""
        HEALTH_STREAMS.inc()
        log.info("health stream opened", extra={"node": self._node})
        try:
            while not self._view.closed:
                seen = self._view.version
                yield response(self._view.snapshot(), self._timeout_seconds)
                await self._view.wait_change(seen, self._resend)
        finally:
            HEALTH_STREAMS.dec()
            log.info("health stream closed", extra={"node": self._node})
