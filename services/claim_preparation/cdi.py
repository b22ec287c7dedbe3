"""The claim's CDI spec: one transient spec per claim, one CDI device per allocated device, pure.

Kind ``k8s.<driver>/claim``, spec ``k8s.<driver>-claim_<claimUID>.json``, device ``<claimUID>-<device>``, id
``k8s.<driver>/claim=<claimUID>-<device>``: the reference driver's layout, so tooling that reads one reads the
other. Every device carries its own nodes (``libs.cdi.nvidia``) and its group's sharing edits (MPS pipe and
shm); the spec-level edits (control nodes, ``NVIDIA_VISIBLE_DEVICES=void`` so a legacy NVIDIA runtime hook
adds no GPUs of its own) apply once to any container that uses one of the claim's devices. The ``cdiVersion``
is the lowest that covers what was written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from libs.cdi import ContainerEdits, Device, Spec, minimum_version, qualified_name, transient_spec_name
from libs.cdi.nvidia import NodePaths, control_edits, gpu_edits, mig_edits
from libs.events.catalogue import PreparedDevice
from services.claim_preparation.devices import FullGpu, Target
from services.claim_preparation.record import PlannedDevice

VISIBLE_DEVICES_VOID = "NVIDIA_VISIBLE_DEVICES=void"


def cdi_kind(driver: str) -> str:
    return f"k8s.{driver}/claim"


def spec_name(driver: str, claim_uid: str) -> str:
    return transient_spec_name(cdi_kind(driver), claim_uid)


def spec_prefix(driver: str) -> str:
    """What every claim spec name of this driver starts with (to find leftovers)."""
    vendor, _, device_class = cdi_kind(driver).partition("/")
    return f"{vendor}-{device_class}_"


def device_edits(target: Target, paths: NodePaths) -> ContainerEdits:
    if isinstance(target, FullGpu):
        return gpu_edits(paths, target.minor)
    if target.gi_id is None or target.ci_id is None:
        raise ValueError(f"MIG device {target.name} has no instance ids yet; create it first")
    return mig_edits(paths, target.parent_minor, target.gi_id, target.ci_id)


def claim_spec(
    driver: str,
    claim_uid: str,
    devices: Sequence[PlannedDevice],
    group_edits: Mapping[str, ContainerEdits],
    paths: NodePaths,
) -> Spec:
    """The spec for the claim's devices (each device once, however many requests share it)."""
    unique: dict[str, PlannedDevice] = {}
    for device in devices:
        unique.setdefault(device.target.name, device)
    cdi_devices = tuple(
        Device(
            name=f"{claim_uid}-{name}",
            container_edits=device_edits(device.target, paths) + group_edits.get(device.group, ContainerEdits()),
        )
        for name, device in unique.items()
    )
    common = control_edits(paths) + ContainerEdits(env=(VISIBLE_DEVICES_VOID,))
    spec = Spec(cdi_version="0.3.0", kind=cdi_kind(driver), devices=cdi_devices, container_edits=common)
    return Spec(cdi_version=minimum_version(spec), kind=spec.kind, devices=spec.devices, container_edits=common)


def prepared_devices(driver: str, claim_uid: str, devices: Sequence[PlannedDevice]) -> tuple[PreparedDevice, ...]:
    """The kubelet's answer: one entry per allocation result, its request as the kubelet names it."""
    kind = cdi_kind(driver)
    return tuple(
        PreparedDevice(
            request_names=[device.request.split("/", 1)[0]],
            pool=device.pool,
            device=device.target.name,
            cdi_device_ids=[qualified_name(kind, f"{claim_uid}-{device.target.name}")],
            share_id=device.share_id,
        )
        for device in devices
    )
