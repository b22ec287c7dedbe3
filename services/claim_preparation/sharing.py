"""Sharing a claim's devices: one small strategy per mode, chosen once per config group.

Planning is pure (``plan_sharing``: config + devices -> a plan the checkpoint stores before anything is
done); each strategy then applies its plan, undoes it, and says what the containers need (CDI edits):

- no sharing block: nothing to do, the devices are the claim's alone;
- ``TimeSlicing``: the interval on each full GPU (``nvidia-smi compute-policy --set-timeslice``); MIG devices
  are isolated by the hardware, so a MIG group needs nothing; undo puts the GPU back to ``Default``;
- ``MPS``: the GPUs in exclusive-process mode plus one control daemon for the group, and its pipe and shm
  directories in the containers; undo stops the daemon and leaves exclusive-process mode unless another
  claim's daemon still runs on that GPU;
- a share of a GPU shared by consumable capacity (``shares.py``): the GPU in exclusive-process mode and its own
  daemon, started by the first share and stopped with the last; each claim's containers get the client limits
  from what it consumed;
- a GPU for a VM (``passthrough.py``): its IOMMU group on vfio-pci, given back to its drivers at undo.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from libs.cdi.nvidia import mps_edits
from libs.cdi.spec import ContainerEdits
from libs.claims.configapi import DeviceConfig, GpuConfig, MpsConfig, parse_quantity
from libs.devices import DeviceBackend
from libs.devices.model import MpsSettings, TimeSliceInterval
from services.claim_preparation.devices import FullGpu, Target, minor_of
from services.claim_preparation.errors import ConfigError
from services.claim_preparation.mps import MpsDaemons
from services.claim_preparation.passthrough import Passthrough
from services.claim_preparation.record import MpsPlan, PassthroughPlan, SharePlan, SharingPlan, TimeSlicePlan
from services.claim_preparation.shares import client_edits

DEFAULT_VFIO_TIMEOUT = 30.0

# --- planning (pure) ----------------------------------------------------------------------------------------


def plan_sharing(
    claim_uid: str, group: str, config: DeviceConfig, members: Sequence[Target], mps_root: Path
) -> SharingPlan | None:
    """The sharing plan for the devices ``members`` that one config applies to; None when nothing is to do."""
    if config.sharing is None:
        return None
    if config.sharing.strategy == "MPS":
        mps = config.sharing.mps_config or MpsConfig()
        return MpsPlan(
            group=group,
            directory=str(mps_root / claim_uid / group),
            devices=tuple(t.name for t in members),
            minors=tuple(sorted({minor_of(t) for t in members})),
            active_thread_percentage=mps.default_active_thread_percentage,
            pinned_limits=pinned_limits(mps, members),
        )
    return _time_slice_plan(group, config, members)


def _time_slice_plan(group: str, config: DeviceConfig, members: Sequence[Target]) -> TimeSlicePlan | None:
    """Full GPUs only: a MIG device is time-sliced within its instance by the hardware, nothing to set."""
    if not isinstance(config, GpuConfig) or config.sharing is None:
        return None
    settings = config.sharing.time_slicing_config
    minors = tuple(sorted({t.minor for t in members if isinstance(t, FullGpu)}))
    interval = settings.interval if settings is not None else TimeSliceInterval.DEFAULT
    return TimeSlicePlan(group=group, minors=minors, interval=interval)


def pinned_limits(mps: MpsConfig, members: Sequence[Target]) -> dict[str, int]:
    """Device name -> bytes: the default for every device, then per-device entries by index or UUID."""
    limits: dict[str, int] = {}
    if mps.default_pinned_device_memory_limit is not None:
        default = parse_quantity(mps.default_pinned_device_memory_limit)
        limits = {target.name: default for target in members}
    by_uuid = {target.uuid: target.name for target in members if target.uuid}
    for key, value in mps.default_per_device_pinned_memory_limit.items():
        limits[_device_for(key, members, by_uuid)] = parse_quantity(value)
    return limits


def _device_for(key: str, members: Sequence[Target], by_uuid: Mapping[str, str]) -> str:
    # ASCII digits only: "²" is a digit to str.isdigit() but not to int(); and no int() of thousands of digits.
    if key.isascii() and key.isdigit():
        index = key.lstrip("0") or "0"
        if len(index) > 9 or int(index) >= len(members):
            raise ConfigError(
                f"sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit: device index {key[:20]} is out of range; "
                f"the config applies to {len(members)} device(s)"
            )
        return members[int(index)].name
    if key in by_uuid:
        return by_uuid[key]
    raise ConfigError(
        f"sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit: {key!r} is neither an index nor the UUID of a "
        f"device the config applies to ({', '.join(t.name for t in members)})"
    )


# --- applying ---------------------------------------------------------------------------------------------


class SharingStrategy(Protocol):
    async def apply(self, uuids: Mapping[str, str]) -> None:
        """Set the sharing up; ``uuids`` maps the group's device names to their UUIDs (MIG ones now exist)."""
        ...

    async def undo(self, shared_elsewhere: Collection[int]) -> None:
        """Take it down; GPUs in ``shared_elsewhere`` are still set up for another claim and keep their mode."""
        ...

    def edits(self) -> ContainerEdits:
        """What each device of the group adds to the containers."""
        ...


@dataclass(frozen=True)
class TimeSlicing:
    plan: TimeSlicePlan
    backend: DeviceBackend

    async def apply(self, uuids: Mapping[str, str]) -> None:
        for minor in self.plan.minors:
            await self.backend.set_time_slice(minor, self.plan.interval)

    async def undo(self, shared_elsewhere: Collection[int]) -> None:
        for minor in self.plan.minors:
            if minor not in shared_elsewhere:
                await self.backend.set_time_slice(minor, TimeSliceInterval.DEFAULT)

    def edits(self) -> ContainerEdits:
        return ContainerEdits()


@dataclass(frozen=True)
class Mps:
    plan: MpsPlan
    backend: DeviceBackend
    daemons: MpsDaemons
    members: Mapping[str, int]
    """Device name -> GPU minor."""

    async def apply(self, uuids: Mapping[str, str]) -> None:
        for minor in self.plan.minors:
            await self.backend.start_mps(minor, self._settings(minor))
        await self.daemons.start(self.plan, uuids)

    def _settings(self, minor: int) -> MpsSettings:
        limits = [limit for name, limit in self.plan.pinned_limits.items() if self.members.get(name) == minor]
        return MpsSettings(
            pipe_directory=self.plan.pipe_dir,
            active_thread_percentage=self.plan.active_thread_percentage,
            pinned_memory_limit_bytes=min(limits) if limits else None,
        )

    async def undo(self, shared_elsewhere: Collection[int]) -> None:
        await self.daemons.stop(self.plan)
        for minor in self.plan.minors:
            if minor not in shared_elsewhere:
                await self.backend.stop_mps(minor)

    def edits(self) -> ContainerEdits:
        return mps_edits(self.plan.pipe_dir, self.plan.shm_dir)


@dataclass(frozen=True)
class Share:
    """A client of the GPU's own MPS daemon: the first share starts it, the last one stops it."""

    plan: SharePlan
    backend: DeviceBackend
    daemons: MpsDaemons
    joining: bool = False
    """Another claim's share already runs the GPU's daemon: nothing to start, only the client's edits."""

    async def apply(self, uuids: Mapping[str, str]) -> None:
        if self.joining:
            return
        daemon = self.plan.daemon
        await self.backend.start_mps(self.plan.minor, MpsSettings(pipe_directory=daemon.pipe_dir))
        await self.daemons.start(daemon, uuids)

    async def undo(self, shared_elsewhere: Collection[int]) -> None:
        if self.plan.minor in shared_elsewhere:
            return  # another claim's share still uses the daemon
        await self.daemons.stop(self.plan.daemon)
        await self.backend.stop_mps(self.plan.minor)

    def edits(self) -> ContainerEdits:
        return client_edits(self.plan)


def strategy_for(
    plan: SharingPlan,
    backend: DeviceBackend,
    daemons: MpsDaemons,
    members: Mapping[str, int],
    shared_elsewhere: Collection[int] = (),
    *,
    vfio_timeout: float = DEFAULT_VFIO_TIMEOUT,
) -> SharingStrategy:
    """The strategy of ``plan``'s mode, bound to it; ``shared_elsewhere``: GPUs another claim has set up the
    same way (a share joins their daemon); ``vfio_timeout`` bounds each sysfs step of a passthrough."""
    if isinstance(plan, MpsPlan):
        return Mps(plan, backend, daemons, members)
    if isinstance(plan, SharePlan):
        return Share(plan, backend, daemons, joining=plan.minor in shared_elsewhere)
    if isinstance(plan, PassthroughPlan):
        return Passthrough(plan, backend, vfio_timeout)
    return TimeSlicing(plan, backend)
