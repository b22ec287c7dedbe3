"""Settings of kubelet_shim: the common ones plus its own.

Every field is also a flag and a ``GPUDRA_*`` variable. Standalone mode gives all services one environment,
so names a different service might also want (a timeout, a port) carry a prefix saying what they are for.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import msgspec

from libs.claims.configapi import ComputeDomainDriverSetting
from libs.settings import CommonSettings

# The kubelet gives every DRA call 45 s; a per-claim error must reach it before that.
KUBELET_CALL_TIMEOUT = 45.0
# Without a report for 30 s the kubelet shows a device as Unknown (kubelet 1.34-1.36 health cache).
KUBELET_HEALTH_TIMEOUT = 30.0


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class Settings(CommonSettings, kw_only=True, frozen=True):
    """The kubelet's face: registration and DRA gRPC sockets, turned into NATS requests."""

    kubelet_dir: Annotated[str, _doc("kubelet root directory")] = "/var/lib/kubelet"
    driver_name: Annotated[str, _doc("DRA driver name")] = "gpu.gpudra.io"
    registration_dir: Annotated[
        str, _doc("directory of the registration socket (default <kubelet-dir>/plugins_registry)")
    ] = ""
    plugin_dir: Annotated[str, _doc("directory of the DRA socket (default <kubelet-dir>/plugins/<driver-name>)")] = ""
    pod_uid: Annotated[
        str,
        _doc("this pod's UID: rolling-update socket names <driver>-<uid>-reg.sock and dra-<uid>.sock"),
        msgspec.Meta(pattern=r"^[A-Za-z0-9-]{0,64}$"),
    ] = ""
    prepare_timeout: Annotated[
        float,
        _doc("seconds to wait for claim_preparation (or compute_domain) per kubelet call (under the kubelet's 45 s)"),
        msgspec.Meta(gt=0, le=KUBELET_CALL_TIMEOUT - 1),
    ] = 40.0
    max_claims_per_call: Annotated[
        int, _doc("claims one kubelet call may hold; more are refused with per-claim errors"), msgspec.Meta(ge=1)
    ] = 128
    health_resend_seconds: Annotated[
        float,
        _doc("resend the device health list this often (the kubelet forgets health unheard for 30 s)"),
        msgspec.Meta(gt=0, le=KUBELET_HEALTH_TIMEOUT / 2),
    ] = 10.0
    grpc_health_port: Annotated[
        int,
        _doc("TCP port of the grpc.health.v1 service for probes; 0 picks a free one, -1 disables"),
        msgspec.Meta(ge=-1, le=65535),
    ] = -1
    grpc_health_host: Annotated[str, _doc("address the grpc.health.v1 port binds")] = "127.0.0.1"
    compute_domain_driver_name: ComputeDomainDriverSetting = "compute-domain.gpudra.io"
    compute_domain_plugin_dir: Annotated[
        str, _doc("directory of its DRA socket (default <kubelet-dir>/plugins/<compute-domain-driver-name>)")
    ] = ""
    shutdown_grace_seconds: Annotated[
        float, _doc("on stop, how long kubelet calls in flight may still finish"), msgspec.Meta(ge=0)
    ] = 5.0

    def __post_init__(self) -> None:
        """The two drivers must not meet: a shared socket path would be refused at start, naming neither."""
        if not self.compute_domain_driver_name:
            return
        if self.compute_domain_driver_name == self.driver_name:
            raise ValueError(
                f"--compute-domain-driver-name {self.compute_domain_driver_name!r} is also --driver-name: "
                "give the second driver a name of its own, or an empty one not to serve it"
            )
        dra_socket = self.sockets(self.compute_domain_driver_name, self.compute_domain_plugin_dir)[1]
        if dra_socket == self.dra_socket:
            raise ValueError(
                f"both drivers would serve the DRA socket {dra_socket}: give --compute-domain-plugin-dir "
                "and --plugin-dir different directories"
            )

    @property
    def registration_socket(self) -> Path:
        return self.sockets(self.driver_name, self.plugin_dir)[0]

    @property
    def dra_socket(self) -> Path:
        return self.sockets(self.driver_name, self.plugin_dir)[1]

    @property
    def health_check_timeout_seconds(self) -> int:
        """What each device entry tells the kubelet: three missed resends before it shows Unknown."""
        return max(math.ceil(KUBELET_HEALTH_TIMEOUT), math.ceil(3 * self.health_resend_seconds))

    def sockets(self, driver: str, plugin_dir: str) -> tuple[Path, Path]:
        """(registration socket, DRA socket) of ``driver``: ``<driver>[-<podUID>]-reg.sock`` where the kubelet
        watches for plugins, and ``dra[-<podUID>].sock`` in ``plugin_dir`` (default
        ``<kubelet-dir>/plugins/<driver>``), the endpoint GetInfo hands the kubelet."""
        registration = Path(self.registration_dir or Path(self.kubelet_dir) / "plugins_registry")
        reg_name = f"{driver}-{self.pod_uid}-reg.sock" if self.pod_uid else f"{driver}-reg.sock"
        plugins = Path(plugin_dir or Path(self.kubelet_dir) / "plugins" / driver)
        dra_name = f"dra-{self.pod_uid}.sock" if self.pod_uid else "dra.sock"
        return registration.absolute() / reg_name, plugins.absolute() / dra_name
