"""What the checkpoint remembers about one claim: enough to answer a repeated prepare and to undo it all.

A prepare that changes the GPUs (creates MIG devices, sets up sharing) writes a record with state
``PrepareStarted`` *before* anything is changed, holding the plan (which MIG devices will be created, which
sharing settings and MPS daemons will exist, the CDI spec's name), so a crash at any later point leaves a record
that says exactly what may need undoing. A prepare that only hands out devices skips it: a crash can leave no
more than its CDI spec, which the next start removes as an orphan. ``PrepareCompleted`` adds the answer given to
the kubelet. ``UnprepareStarted`` marks a claim being taken apart: a prepare arriving then (or after a crash)
rolls it back completely before preparing again, never answering from a half-undone record.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from libs.devices.model import TimeSliceInterval
from libs.events.catalogue import ClaimRef, PreparedDevice
from services.claim_preparation.devices import Target

State = Literal["PrepareStarted", "PrepareCompleted", "UnprepareStarted"]
PREPARE_STARTED: State = "PrepareStarted"
PREPARE_COMPLETED: State = "PrepareCompleted"
UNPREPARE_STARTED: State = "UnprepareStarted"


class PlannedDevice(msgspec.Struct, frozen=True, kw_only=True):
    """One allocation result of this driver and what it becomes."""

    request: str
    pool: str
    target: Target
    group: str
    """The opaque config that applies (its index, or ``default-gpu``/``default-mig``): one setting per group."""
    share_id: str | None = None
    consumed: dict[str, int] = {}
    """What a share consumes of the device (``consumedCapacity``); empty for a device held whole."""
    admin_access: bool = False


class TimeSlicePlan(msgspec.Struct, frozen=True, kw_only=True, tag="TimeSlicing"):
    group: str
    minors: tuple[int, ...]
    interval: TimeSliceInterval


class MpsPlan(msgspec.Struct, frozen=True, kw_only=True, tag="MPS"):
    """One MPS control daemon for the devices of one config group of one claim."""

    group: str
    directory: str
    """``<mps-dir>/<claim uid>/<group>``, holding ``pipe``, ``shm`` and ``log``."""
    devices: tuple[str, ...]
    minors: tuple[int, ...]
    active_thread_percentage: int | None = None
    pinned_limits: dict[str, int] = {}
    """Device name -> pinned device memory limit in bytes."""

    @property
    def pipe_dir(self) -> str:
        return f"{self.directory}/pipe"

    @property
    def shm_dir(self) -> str:
        return f"{self.directory}/shm"

    @property
    def log_dir(self) -> str:
        return f"{self.directory}/log"


class SharePlan(msgspec.Struct, frozen=True, kw_only=True, tag="Share"):
    """A claim's share of a GPU shared by consumable capacity: a client of the GPU's own MPS control daemon.

    The daemon is the GPU's, not the claim's: the first share starts it, the last one to go stops it. What the
    claim may use is its client's limits, from what it consumed."""

    group: str
    gpu: str
    minor: int
    directory: str
    """The GPU's daemon: ``<mps-dir>/_gpus/<gpu>`` (no claim UID starts with ``_``)."""
    consumed: dict[str, int]
    """The claim's consumption of the GPU, all its shares of it together: what must fit beside other claims."""
    memory_limit: int
    """The client's pinned device memory limit in bytes."""
    active_thread_percentage: int | None = None

    @property
    def minors(self) -> tuple[int, ...]:
        return (self.minor,)

    @property
    def daemon(self) -> MpsPlan:
        """The GPU's daemon as an MPS plan: no defaults of its own, every limit is a client's."""
        return MpsPlan(group=self.gpu, directory=self.directory, devices=(self.gpu,), minors=(self.minor,))


class Endpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A PCI function of a passed-through GPU's IOMMU group and the driver it had before: what it goes back to."""

    bdf: str
    driver: str | None


class PassthroughPlan(msgspec.Struct, frozen=True, kw_only=True, tag="VFIO"):
    """A GPU handed to a VM: every endpoint of its IOMMU group on vfio-pci until unprepare gives them back.

    Recorded before the first sysfs write, with each endpoint's driver as it was, so a crash at any point is
    undone by putting each one back where it was."""

    group: str
    gpu: str
    minor: int
    bdf: str
    """The GPU's own PCI function."""
    iommu_group: int
    endpoints: tuple[Endpoint, ...]

    @property
    def minors(self) -> tuple[int, ...]:
        return (self.minor,)


SharingPlan = TimeSlicePlan | MpsPlan | SharePlan | PassthroughPlan


class ClaimRecord(msgspec.Struct, frozen=True, kw_only=True):
    uid: str
    namespace: str
    name: str
    state: State
    boot_id: str
    started_at: float
    completed_at: float | None = None
    devices: tuple[PlannedDevice, ...] = ()
    sharing: tuple[SharingPlan, ...] = ()
    cdi_spec: str = ""
    prepared: tuple[PreparedDevice, ...] = ()
    """The answer given to the kubelet, repeated as it is for a repeated prepare."""
    event_id: str = ""
    """The id of the event this state owes (``ClaimPrepared`` when completed, ``ClaimUnprepared`` when being
    unprepared): sent again with the same id after a crash, and dropped by JetStream if it had gone out."""

    @property
    def ref(self) -> ClaimRef:
        return ClaimRef(namespace=self.namespace, name=self.name, uid=self.uid)

    @property
    def label(self) -> str:
        """``namespace/name``, as another claim's error names this one."""
        return f"{self.namespace}/{self.name}"

    def with_state(self, state: State, event_id: str = "") -> ClaimRecord:
        return msgspec.structs.replace(self, state=state, event_id=event_id)
