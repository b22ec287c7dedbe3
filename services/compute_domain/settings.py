"""Settings of compute_domain: the node side's (role ``node``: channel claims, IMEX daemons), the controller's
(role ``controller``: domains' status, rosters, claim templates), or both in one process (the standalone
default). The device backend's fields (for the node's NVLink clique) come from DeviceSettings."""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

from libs.bus.election import ControllerIdSetting, LeaseRenewSetting, RoleSetting
from libs.devices.settings import DeviceSettings
from libs.kube import KubeconfigSetting, KubeModeSetting


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


Seconds = Annotated[float, msgspec.Meta(gt=0)]


class Settings(DeviceSettings, kw_only=True, frozen=True):
    """ComputeDomain controller and node-side IMEX channel preparation."""

    NODE_ONLY: ClassVar[frozenset[str]] = frozenset({"cdi_dir", "imex_hosts_file"})
    """Files only the node side touches (a controller-only container need not mount them)."""

    role: RoleSetting = "both"
    kube_mode: KubeModeSetting = "auto"
    kubeconfig: KubeconfigSetting = ""
    driver_name: Annotated[str, _doc("compute-domain DRA driver name")] = "compute-domain.gpudra.io"

    # --- node side (role node) ------------------------------------------------------------------------------
    cdi_dir: Annotated[str, _doc("directory for transient CDI specs")] = "/var/run/cdi"
    node_ip: Annotated[
        str, _doc("the IP this node's IMEX daemons listen on and peers reach (default 127.0.0.1; a pod: its host IP)")
    ] = ""
    channel_slots: Annotated[
        int, _doc("channel claims this node takes at once (slot devices it publishes)"), msgspec.Meta(ge=0, le=2048)
    ] = 8
    admission_timeout_seconds: Annotated[
        Seconds, _doc("how long a channel prepare waits for the controller to know the domain and admit the node")
    ] = 10.0
    channel_ready_timeout_seconds: Annotated[
        float,
        _doc("how long a channel prepare waits for the domain's IMEX daemon here to be ready (under the shim's 40 s)"),
        msgspec.Meta(gt=0, le=39),
    ] = 30.0
    imex_hosts_file: Annotated[str, _doc("the hosts file the real nvidia-imex resolves its peers' names through")] = (
        "/etc/hosts"
    )

    # --- controller (role controller) -----------------------------------------------------------------------
    controller_id: ControllerIdSetting = ""
    lease_renew_seconds: LeaseRenewSetting = 10.0
