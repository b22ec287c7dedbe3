"""Settings of claim_preparation: the common ones plus its own.

Every field is also a flag and a ``GPUDRA_*`` variable. Paths left empty are derived from ``state_dir`` (and the
backend), so a standalone system needs no more than ``--state-dir``; a node DaemonSet sets them explicitly.
``backend``, ``profile``, ``simulated_dir`` and ``mig_mode`` mean what they mean to discovery: standalone mode
gives every service one environment, and the two must agree on the machine and on who creates MIG devices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

from libs.kube import KubeconfigSetting, KubeModeSetting
from libs.settings import CommonSettings


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class Settings(CommonSettings, kw_only=True, frozen=True):
    """NodePrepareResources / NodeUnprepareResources work: claims, opaque config, MIG, CDI, checkpoint."""

    driver_name: Annotated[str, _doc("DRA driver name")] = "gpu.gpudra.io"
    cdi_dir: Annotated[str, _doc("directory for transient CDI specs")] = "/var/run/cdi"
    kube_mode: KubeModeSetting = "auto"
    kubeconfig: KubeconfigSetting = ""
    backend: Annotated[Literal["nvml", "simulated"], _doc("device backend")] = "nvml"
    profile: Annotated[str, _doc("simulated machine profile or YAML file")] = "dgx-h100"
    simulated_dir: Annotated[str, _doc("state directory of the simulated GPUs (default <state-dir>/simulated)")] = ""
    mig_mode: Annotated[
        Literal["static", "dynamic"],
        _doc("static: publish existing MIG devices; dynamic: publish every MIG partition, created on prepare"),
    ] = "static"
    dev_root: Annotated[
        str, _doc("host directory that holds dev/nvidia*: / for NVML (default), the simulated machine's otherwise")
    ] = ""
    driver_root: Annotated[
        str,
        _doc(
            "host directory the NVIDIA driver's libraries, tools and firmware are installed under, mounted into "
            "containers: / for NVML (default), the simulated machine's stand-ins otherwise"
        ),
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

    def _under_state(self, value: str, default: str) -> Path:
        return Path(value) if value else Path(self.state_dir) / default

    @property
    def simulated_state(self) -> Path:
        """The simulated machine's directory: the same setting, default and meaning as discovery's."""
        return self._under_state(self.simulated_dir, "simulated")

    @property
    def checkpoint_path(self) -> Path:
        return self._under_state(self.checkpoint_dir, "claim_preparation")

    @property
    def mps_path(self) -> Path:
        return self._under_state(self.mps_dir, "mps")

    def _host_root(self, value: str) -> str:
        """``value``, else the host's root for NVML and the simulated machine's directory, which has stand-ins."""
        if value:
            return value
        return str(self.simulated_state.absolute()) if self.backend == "simulated" else "/"

    @property
    def dev_root_path(self) -> str:
        return self._host_root(self.dev_root)

    @property
    def driver_root_path(self) -> str:
        return self._host_root(self.driver_root)
