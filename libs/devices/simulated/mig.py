"""MIG placement rules, as the GPU enforces them, for the simulated backend.

A GPU instance occupies the memory slices [start, start + size) of its placement; two instances never
share a slice. On top of that a GPU has a fixed number of compute slices (7 on A100/H100/H200/B200), a
profile has an instance limit, and the instances together cannot use more engines or memory than the GPU
has (model.mig_totals): one media-extension (`+me`) instance at a time, and no more memory than the GPU
even where a profile table's placements are too small, as some of the go-nvml mock's are.
"""

import msgspec

from libs.devices.errors import (
    InsufficientResources,
    InvalidPlacement,
    MigDisabled,
    PlacementOccupied,
    UnknownMigProfile,
)
from libs.devices.model import Gpu, MigDevice, MigPlacement, MigProfile, mig_totals


class GpuLayout(msgspec.Struct, frozen=True, kw_only=True):
    """One GPU, its profile table and the MIG devices it holds now."""

    node: str
    gpu: Gpu
    profiles: tuple[MigProfile, ...]
    devices: tuple[MigDevice, ...]

    def find_profile(self, name: str) -> MigProfile:
        for profile in self.profiles:
            if profile.name == name:
                return profile
        raise UnknownMigProfile(self.node, self.gpu.name, name, [p.name for p in self.profiles])

    @property
    def compute_slices(self) -> int:
        """The GPU's compute slices: what its largest profile takes."""
        return max((p.slice_count for p in self.profiles), default=0)

    def plan(self, profile_name: str, start: int) -> tuple[MigProfile, MigPlacement]:
        """Returns where the new instance goes, or raises the error the hardware would give."""
        if not self.gpu.mig_enabled:
            raise MigDisabled(self.node, self.gpu.name)
        profile = self.find_profile(profile_name)
        placement = next((p for p in profile.placements if p.start == start), None)
        if placement is None:
            starts = [p.start for p in profile.placements]
            raise InvalidPlacement(self.node, self.gpu.name, profile.name, start, starts)
        wanted = profile.device_name(self.gpu.minor, start)
        for device in self.devices:
            if device.placement.overlaps(placement):
                raise PlacementOccupied(self.node, self.gpu.name, wanted, device.name)
        self._check_capacity(profile, wanted)
        return profile, placement

    def _check_capacity(self, profile: MigProfile, wanted: str) -> None:
        same_profile = sum(1 for d in self.devices if d.profile.name == profile.name)
        if same_profile >= profile.instance_count:
            problem = f"cannot create {wanted}: profile {profile.name} allows {profile.instance_count}"
            raise InsufficientResources(self.node, self.gpu.name, problem)
        used = sum(d.profile.slice_count for d in self.devices)
        if used + profile.slice_count > self.compute_slices:
            problem = f"cannot create {wanted}: {used} of {self.compute_slices} compute slices are in use"
            raise InsufficientResources(self.node, self.gpu.name, problem)
        instances = [*(d.profile for d in self.devices), profile]
        for resource, total in mig_totals(self.gpu.memory_bytes, self.profiles).items():
            use = sum(getattr(p, resource) for p in instances)
            if use > total:
                problem = f"cannot create {wanted}: {use} {resource} needed, the GPU has {total}"
                raise InsufficientResources(self.node, self.gpu.name, problem)

    def next_gpu_instance_id(self) -> int:
        """The lowest free GPU-instance id, as the driver hands them out."""
        taken = {d.gi_id for d in self.devices}
        return next(i for i in range(1, len(taken) + 2) if i not in taken)
