"""Settings of discovery: the common ones plus its own.

Standalone mode gives every service one environment, so a name here means the same thing to every service
that reads it: the device backend and driver root fields come from ``DeviceSettings``, ``mig_mode`` is what
claim preparation must agree on too, and ``kube_mode``/``kubeconfig`` are the fields ``libs.kube.settings`` asks
every service to carry.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from libs.devices.settings import DeviceSettings
from libs.kube import KubeconfigSetting, KubeModeSetting
from libs.slices import MigMode
from libs.slices.passthrough import NONE, PassthroughGpus, PassthroughSetting

CONSUMABLE_CAPACITY_BETA = 36
"""The first Kubernetes minor with DRAConsumableCapacity on by default (beta)."""

STANDALONE_KUBE_MINOR = 34
"""The Kubernetes version whose ResourceSlice rules apply to the standalone store: the oldest gpudra supports,
so a slice that passes here is one every supported API server takes."""


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class Settings(DeviceSettings, kw_only=True, frozen=True):
    """Device inventory (NVML or simulated) and ResourceSlices for this node."""

    resync_seconds: Annotated[float, _doc("full inventory resync period"), msgspec.Meta(gt=0)] = 300.0
    retry_seconds: Annotated[
        float, _doc("delay before retrying a failed inventory read or slice publication"), msgspec.Meta(gt=0)
    ] = 15.0
    mig_mode: Annotated[
        Literal["static", "dynamic"],
        _doc("static: publish existing MIG devices; dynamic: publish every MIG partition, created on prepare"),
    ] = "static"
    consumable_capacity: Annotated[
        bool,
        _doc(
            "publish GPUs with MIG off as shareable by consumable capacity (memory, computePercent), each share "
            "an MPS client with its limits; Kubernetes 1.36 (DRAConsumableCapacity)"
        ),
    ] = False
    passthrough_gpus: PassthroughSetting = NONE
    kube_minor: Annotated[
        int,
        _doc(
            "Kubernetes minor version the slices are laid out for; 0: ask the API server (/version), "
            f"or 1.{STANDALONE_KUBE_MINOR} for the standalone store"
        ),
        msgspec.Meta(ge=0),
    ] = 0
    kube_mode: KubeModeSetting = "auto"
    kubeconfig: KubeconfigSetting = ""

    @property
    def mig(self) -> MigMode:
        return MigMode(self.mig_mode)

    @property
    def passthrough(self) -> PassthroughGpus:
        return PassthroughGpus.parse(self.passthrough_gpus)
