"""The plain data every part of gpudra shares about GPUs.

Frozen msgspec structs so they can travel unchanged in events and KV entries, and so a function that
receives one cannot change what another part sees. Both backends (NVML and simulated) produce exactly these
structs; nothing downstream knows which backend it talks to.
"""

import enum
import hashlib
from typing import Literal

import msgspec

from libs.devices.names import gpu_device_name, mig_device_name


class FabricInfo(msgspec.Struct, frozen=True, kw_only=True):
    """NVLink fabric membership (GB200-class systems); GPUs of one clique can share memory over NVLink."""

    cluster_uuid: str
    clique_id: int

    @property
    def clique(self) -> str:
        """The clique id as IMEX uses it: `<clusterUUID>.<cliqueId>`."""
        return f"{self.cluster_uuid}.{self.clique_id}"


class Gpu(msgspec.Struct, frozen=True, kw_only=True):
    minor: int
    index: int
    uuid: str
    product_name: str
    brand: str
    architecture: str
    cuda_compute_capability: str
    driver_version: str
    cuda_driver_version: str
    memory_bytes: int
    pci_bus_id: str
    pcie_root: str | None
    numa_node: int | None
    mig_enabled: bool
    addressing_mode: str | None = None
    fabric: FabricInfo | None = None
    iommu_group: int | None = None
    """The IOMMU group of the GPU's PCI function (``/sys/bus/pci/devices/<bdf>/iommu_group``); None without an
    IOMMU: such a GPU cannot be passed through to a VM."""

    @property
    def name(self) -> str:
        return gpu_device_name(self.minor)


class MigPlacement(msgspec.Struct, frozen=True):
    """A GPU instance occupies memory slices [start, start + size)."""

    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size

    def overlaps(self, other: "MigPlacement") -> bool:
        return self.start < other.end and other.start < self.end


MIG_RESOURCES = (
    "multiprocessors",
    "copy_engines",
    "decoders",
    "encoders",
    "jpeg_engines",
    "ofa_engines",
    "memory_bytes",
)


class MigProfile(msgspec.Struct, frozen=True, kw_only=True):
    """A GPU-instance profile of one GPU model, with the engines and memory one instance gets."""

    name: str
    gi_profile_id: int
    nvml_profile_index: int
    slice_count: int
    instance_count: int
    multiprocessors: int
    copy_engines: int
    decoders: int
    encoders: int
    jpeg_engines: int
    ofa_engines: int
    memory_bytes: int
    placements: tuple[MigPlacement, ...]

    def device_name(self, parent_minor: int, placement_start: int) -> str:
        return mig_device_name(parent_minor, self.name, self.gi_profile_id, placement_start)

    def resources(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in MIG_RESOURCES}


def mig_totals(gpu_memory_bytes: int, profiles: tuple[MigProfile, ...]) -> dict[str, int]:
    """What the GPU's MIG instances share, per resource: the most that filling the GPU with one profile
    uses (value x instance limit), and for memory at least the GPU's memory.

    NVML reports per-profile values only; this is the tightest total that still admits every layout a
    profile table allows, and it is what both the simulated GPU and the dynamic-MIG counters enforce, so
    the scheduler and the hardware agree.
    """
    totals = {name: max((getattr(p, name) * p.instance_count for p in profiles), default=0) for name in MIG_RESOURCES}
    totals["memory_bytes"] = max(totals["memory_bytes"], gpu_memory_bytes)
    return totals


class MigDevice(msgspec.Struct, frozen=True, kw_only=True):
    """An existing MIG device (GPU instance plus its compute instance)."""

    parent_minor: int
    parent_uuid: str
    profile: MigProfile
    placement: MigPlacement
    uuid: str
    gi_id: int
    ci_id: int

    @property
    def name(self) -> str:
        return self.profile.device_name(self.parent_minor, self.placement.start)


ConfidentialComputing = Literal["on", "off", "devtools"]
"""``devtools``: on, but with the developer tools mode that leaves the GPU's memory readable."""


class Inventory(msgspec.Struct, frozen=True, kw_only=True):
    """What a node has, as one backend saw it at one moment.

    `mig_profiles` is keyed by product name: all GPUs of one model share a profile table, which is what
    dynamic MIG offers as partitions.
    """

    node: str
    backend: str
    driver_version: str
    cuda_driver_version: str
    gpus: tuple[Gpu, ...]
    mig_devices: tuple[MigDevice, ...] = ()
    mig_profiles: dict[str, tuple[MigProfile, ...]] = {}
    confidential_computing: ConfidentialComputing | None = None
    """The node's confidential-computing mode as the driver reports it (``nvmlSystemGetConfComputeState``):
    what a VM taking a GPU here can count on. None where the driver does not say."""

    def content_hash(self) -> str:
        """Changes exactly when the published content would: lets a publisher skip unchanged inventories."""
        return hashlib.sha256(msgspec.json.encode(self, order="sorted")).hexdigest()

    def profiles_for(self, gpu: Gpu) -> tuple[MigProfile, ...]:
        return self.mig_profiles.get(gpu.product_name, ())

    def mig_devices_of(self, gpu: Gpu) -> tuple[MigDevice, ...]:
        return tuple(d for d in self.mig_devices if d.parent_minor == gpu.minor)


class TimeSliceInterval(enum.StrEnum):
    """The reference's time-slicing settings; the value is what `nvidia-smi compute-policy` takes."""

    DEFAULT = "Default"
    SHORT = "Short"
    MEDIUM = "Medium"
    LONG = "Long"

    @property
    def nvidia_smi_value(self) -> int:
        return _NVIDIA_SMI_TIMESLICE[self]


_NVIDIA_SMI_TIMESLICE = {
    TimeSliceInterval.DEFAULT: 0,
    TimeSliceInterval.SHORT: 1,
    TimeSliceInterval.MEDIUM: 2,
    TimeSliceInterval.LONG: 3,
}


class MpsSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How a GPU is set up while an MPS control daemon shares it; running the daemon is claim preparation's job."""

    pipe_directory: str
    active_thread_percentage: int | None = None
    pinned_memory_limit_bytes: int | None = None


class HealthCounters(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a health poller reads from one GPU in one pass."""

    minor: int
    ecc_volatile_corrected: int = 0
    ecc_volatile_uncorrected: int = 0
    ecc_aggregate_corrected: int = 0
    ecc_aggregate_uncorrected: int = 0
    retired_pages_pending: bool = False
    row_remap_pending: bool = False
    row_remap_failed: bool = False
    temperature_c: int = 40
    thermal_slowdown: bool = False
    nvlink_up: tuple[bool, ...] = ()
    pcie_replays: int = 0
