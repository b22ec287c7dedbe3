"""The Registration service on ``<driver>-reg.sock``: how the kubelet learns the driver exists.

The kubelet's plugin watcher sees the socket appear, calls GetInfo, picks the first DRA version of ours it
speaks (so the order of ``SUPPORTED_VERSIONS`` matters), and reports the outcome back.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import grpc.aio

from libs.kubeletclient import DRA_V1, DRA_V1BETA1, HEALTH_V1ALPHA1, PLUGIN_TYPE
from protos.gen import pluginregistration_pb2, pluginregistration_pb2_grpc

log = logging.getLogger(__name__)

DRA_VERSIONS = (DRA_V1, DRA_V1BETA1)
"""v1 first: kubelets 1.34+ take the first they speak; v1beta1 for older ones."""
SUPPORTED_VERSIONS = (*DRA_VERSIONS, HEALTH_V1ALPHA1)
"""A driver with device health (the GPU driver) also advertises the health stream; the kubelet opens it only
on drivers that do, so one without (the compute-domain driver) must not."""


class Registration(pluginregistration_pb2_grpc.RegistrationServicer):
    def __init__(
        self, driver_name: str, dra_socket: Path, node: str, versions: tuple[str, ...] = SUPPORTED_VERSIONS
    ) -> None:
        self._info = pluginregistration_pb2.PluginInfo(
            type=PLUGIN_TYPE,
            name=driver_name,
            endpoint=str(dra_socket.absolute()),
            supported_versions=versions,
        )
        self._node = node
        self.last_status: pluginregistration_pb2.RegistrationStatus | None = None
        self.notified = asyncio.Event()
        """Set when the kubelet has reported the outcome of a registration (see ``last_status``)."""

    async def GetInfo(
        self, request: pluginregistration_pb2.InfoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pluginregistration_pb2.PluginInfo:
        return self._info

    async def NotifyRegistrationStatus(
        self, request: pluginregistration_pb2.RegistrationStatus, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pluginregistration_pb2.RegistrationStatusResponse:
        context_fields = {"driver": self._info.name, "node": self._node}
        if request.plugin_registered:
            log.info("registered with the kubelet", extra=context_fields)
        else:
            # The kubelet will not call us; nothing here can fix that, an operator has to read why.
            log.error("the kubelet refused the registration: %s", request.error, extra=context_fields)
        self.last_status = request
        self.notified.set()
        return pluginregistration_pb2.RegistrationStatusResponse()
