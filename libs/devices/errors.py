"""Typed device errors whose messages name the node and the device, so a person can act on them.

Every error keeps `node` and `device` as attributes too, for structured logs and per-claim error strings.
"""


class DeviceError(Exception):
    """Base of every error a device backend raises."""

    def __init__(self, node: str, device: str, problem: str) -> None:
        super().__init__(f"node {node}: {device}: {problem}")
        self.node = node
        self.device = device
        self.problem = problem


class DeviceNotFound(DeviceError):
    def __init__(self, node: str, device: str) -> None:
        super().__init__(node, device, "no such device on this node")


class DeviceLost(DeviceError):
    """The GPU stopped answering (NVML_ERROR_GPU_IS_LOST or a simulated GPU-lost fault)."""

    def __init__(self, node: str, device: str) -> None:
        super().__init__(node, device, "the GPU is lost (fallen off the bus or not answering)")


class MigDisabled(DeviceError):
    def __init__(self, node: str, device: str) -> None:
        super().__init__(
            node, device, "MIG mode is disabled; enable it (nvidia-smi -mig 1) before creating MIG devices"
        )


class UnknownMigProfile(DeviceError):
    def __init__(self, node: str, device: str, profile: str, known: list[str]) -> None:
        super().__init__(node, device, f"no MIG profile {profile!r}; this GPU has {', '.join(known) or 'none'}")


class InvalidPlacement(DeviceError):
    def __init__(self, node: str, device: str, profile: str, start: int, valid: list[int]) -> None:
        super().__init__(node, device, f"profile {profile} cannot start at slice {start}; valid starts are {valid}")


class InsufficientResources(DeviceError):
    """The GPU cannot host another instance of this profile (instance limit, compute slices, placement)."""


class PlacementOccupied(InsufficientResources):
    def __init__(self, node: str, device: str, wanted: str, holder: str) -> None:
        super().__init__(node, device, f"cannot create {wanted}: its memory slices are held by {holder}")


class BackendUnavailable(DeviceError):
    """The backend cannot run on this machine; the message says what to use instead."""

    def __init__(self, node: str, backend: str, reason: str, advice: str) -> None:
        super().__init__(node, f"{backend} backend", f"{reason}; {advice}")


class NvmlError(DeviceError):
    """An NVML call failed; keeps NVML's own error string and code."""

    def __init__(self, node: str, device: str, call: str, nvml_message: str, code: int) -> None:
        super().__init__(node, device, f"{call} failed: {nvml_message} (NVML error {code})")
        self.call = call
        self.code = code


class PciError(DeviceError):
    """A PCI function or IOMMU group that sysfs does not have, or a sysfs write that failed or did not finish.

    ``device`` is the function's bus id (``0000:17:00.0``) or ``iommu group <N>``, so the message says which
    function of which GPU to look at."""


class ProfileError(Exception):
    """A machine profile (built-in name or the user's YAML file) is unusable; says where and why."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"machine profile {source}: {problem}")
        self.source = source
        self.problem = problem


class StateError(Exception):
    """The simulated backend's state directory does not fit what was asked of it."""

    def __init__(self, state_dir: str, problem: str) -> None:
        super().__init__(f"simulated GPU state {state_dir}: {problem}")
        self.state_dir = state_dir
