"""Settings of claim_preparation: the common ones plus its own.

Every field is also a flag and a ``GPUDRA_*`` variable. Paths left empty are derived from ``state_dir`` (and the
backend), so a standalone system needs no more than ``--state-dir``; a node DaemonSet sets them explicitly.
The device backend and driver root fields come from ``DeviceSettings``; ``mig_mode`` means what it means to
discovery: standalone mode gives every service one environment, and the two must agree on who creates MIG devices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

from libs.devices.settings import DeviceSettings
from libs.kube import KubeconfigSetting, KubeModeSetting
from libs.slices.passthrough import NONE, PassthroughGpus, PassthroughSetting


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class Settings(DeviceSettings, kw_only=True, frozen=True):
    """NodePrepareResources / NodeUnprepareResources work: claims, opaque config, MIG, CDI, checkpoint."""

    driver_name: Annotated[str, _doc("DRA driver name")] = "gpu.gpudra.io"
    cdi_dir: Annotated[str, _doc("directory for transient CDI specs")] = "/var/run/cdi"
    kube_mode: KubeModeSetting = "auto"
    kubeconfig: KubeconfigSetting = ""
    mig_mode: Annotated[
        Literal["static", "dynamic"],
        _doc("static: publish existing MIG devices; dynamic: publish every MIG partition, created on prepare"),
    ] = "static"
    passthrough_gpus: PassthroughSetting = NONE
    passthrough_timeout_seconds: Annotated[
        float,
        _doc(
            "bound on moving each PCI function of a GPU for a VM to or from vfio-pci, and on the wait for "
            "/dev/vfio/<group>"
        ),
        msgspec.Meta(gt=0, le=600),
    ] = 30.0
    dev_root: Annotated[
        str, _doc("host directory that holds dev/nvidia*: / for NVML (default), the simulated machine's otherwise")
    ] = ""
    cdi_hook_path: Annotated[
        str,
        _doc(
            "host path of nvidia-cdi-hook or nvidia-ctk for the CDI specs' hooks, such as the GPU Operator's "
            "/usr/local/nvidia/toolkit/nvidia-cdi-hook; empty: looked for under the driver root"
        ),
        msgspec.Meta(pattern=r"^$|^/(.*/)?(nvidia-cdi-hook|nvidia-ctk)$"),
    ] = ""
    checkpoint_dir: Annotated[str, _doc("prepared-claims checkpoint (default <state-dir>/claim_preparation)")] = ""
    mps_dir: Annotated[str, _doc("per-claim MPS pipe and shm directories (default <state-dir>/mps)")] = ""
    boot_id_path: Annotated[str, _doc("file holding this boot's id")] = "/proc/sys/kernel/random/boot_id"
    cleanup_interval_seconds: Annotated[
        float, _doc("how often half-prepared claims that no longer exist are rolled back"), msgspec.Meta(gt=0)
    ] = 600.0
    prepare_concurrency: Annotated[
        int, _doc("kubelet calls (prepare or unprepare) handled at once"), msgspec.Meta(ge=1, le=1024)
    ] = 16
    device_status: Annotated[
        bool,
        _doc("report each prepared device in its claim's status.devices (Ready condition, UUID, MIG placement)"),
    ] = True
    device_status_delay_seconds: Annotated[
        float,
        _doc("wait this long before writing a claim's device status; a newer change of the claim replaces it"),
        msgspec.Meta(ge=0, le=60),
    ] = 0.1

    def _under_state(self, value: str, default: str) -> Path:
        return Path(value) if value else Path(self.state_dir) / default

    @property
    def checkpoint_path(self) -> Path:
        return self._under_state(self.checkpoint_dir, "claim_preparation")

    @property
    def mps_path(self) -> Path:
        return self._under_state(self.mps_dir, "mps")

    @property
    def passthrough(self) -> PassthroughGpus:
        return PassthroughGpus.parse(self.passthrough_gpus)

    @property
    def dev_root_path(self) -> str:
        return self.host_root(self.dev_root)
