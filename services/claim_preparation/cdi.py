"""The claim's CDI spec: one transient spec per claim, one CDI device per allocated device, pure.

Kind ``k8s.<driver>/claim``, spec ``k8s.<driver>-claim_<claimUID>.json``, device ``<claimUID>-<device>``, id
``k8s.<driver>/claim=<claimUID>-<device>``: the reference driver's layout, so tooling that reads one reads the
other. Every device carries its own nodes (``libs.cdi.nvidia``) and its group's sharing edits (MPS pipe and
shm); the spec-level edits (control nodes, the driver's files and hooks, ``NVIDIA_VISIBLE_DEVICES=void`` so a
legacy NVIDIA runtime hook adds no GPUs of its own) apply once to any container that uses one of the claim's
devices. A GPU passed through to a VM gets its VFIO nodes only: a claim of VM GPUs alone gets no NVIDIA control
node and no driver file, as the host's driver no longer holds those GPUs. The ``cdiVersion`` is the lowest that
covers what was written.

The impure parts, ``driver_files`` and ``node_paths``, run once at start: the driver root is searched then, not
on every prepare, whose latency is the kubelet's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

from libs.cdi import ContainerEdits, Device, Spec, claim_kind, minimum_version, qualified_name
from libs.cdi.driver import LIB_DIRS, VERSION_FILE, DriverFiles, discover_driver, driver_edits
from libs.cdi.nvidia import NodePaths, control_edits, gpu_edits, mig_edits, vfio_edits
from libs.events.catalogue import PreparedDevice
from services.claim_preparation.devices import FullGpu, Target, VfioTarget
from services.claim_preparation.record import PlannedDevice

VISIBLE_DEVICES_VOID = "NVIDIA_VISIBLE_DEVICES=void"

_HINT = (
    "CDI specs still name the device nodes, and containers get the driver's libraries only if the runtime's NVIDIA "
    "hook adds them (set --driver-root / GPUDRA_DRIVER_ROOT to where the driver is installed on the host, and "
    "--driver-root-mount / GPUDRA_DRIVER_ROOT_MOUNT to where this service sees it)"
)

log = logging.getLogger(__name__)


def device_edits(target: Target, paths: NodePaths) -> ContainerEdits:
    if isinstance(target, FullGpu):
        return gpu_edits(paths, target.minor)
    if isinstance(target, VfioTarget):
        return vfio_edits(paths, target.iommu_group)
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
    void = ContainerEdits(env=(VISIBLE_DEVICES_VOID,))
    containers = any(not isinstance(device.target, VfioTarget) for device in unique.values())
    common = control_edits(paths) + paths.driver + void if containers else void
    spec = Spec(cdi_version="0.3.0", kind=claim_kind(driver), devices=cdi_devices, container_edits=common)
    return Spec(cdi_version=minimum_version(spec), kind=spec.kind, devices=spec.devices, container_edits=common)


def prepared_devices(driver: str, claim_uid: str, devices: Sequence[PlannedDevice]) -> tuple[PreparedDevice, ...]:
    """The kubelet's answer: one entry per allocation result, its request as the kubelet names it."""
    kind = claim_kind(driver)
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


def driver_files(driver_root: str, *, driver_mount: str = "", hook: str = "") -> DriverFiles:
    """The driver's files under the host's ``driver_root``, read under ``driver_mount`` when this service sees it
    there (the hook binary also on ``PATH`` when not, or at ``hook`` when the operator names it); says what it
    found and what is missing."""
    files = discover_driver(driver_root, mount=driver_mount, search_path=os.environ.get("PATH", ""), hook=hook)
    _report_driver(files, driver_mount)
    return files


def node_paths(dev_root: str, files: DriverFiles, *, require_nodes: bool) -> NodePaths:
    """What every spec of this node names: device nodes under ``dev_root`` and the driver's ``files``."""
    return NodePaths.load(dev_root, require_nodes=require_nodes, driver=driver_edits(files))


def _report_driver(files: DriverFiles, mount: str) -> None:
    """One line on what containers get; a warning for what they will lack, naming where it was looked for."""
    where = f"driver root {files.root}" + (f" (read at {mount})" if mount and mount != files.root else "")
    log.info(
        "%s: driver %s, %d libraries, %d binaries, %d firmware files, %d sockets, hook %s",
        where,
        files.version or "unknown",
        len(files.libraries),
        len(files.binaries),
        len(files.firmware),
        len(files.sockets),
        files.hook.path if files.hook else "none",
    )
    folders = ", ".join(LIB_DIRS)
    if not files.version:
        log.warning(
            "%s: no NVIDIA driver (no libcuda.so.<version> in %s, no /proc/%s); %s", where, folders, VERSION_FILE, _HINT
        )
    elif files.missing:
        names = ", ".join(f"{name}.so.{files.version}" for name in files.missing)
        log.warning("%s: no %s in %s; %s", where, names, folders, _HINT)
    if files.hook is None and files.libraries:
        log.warning(
            "%s: no nvidia-cdi-hook or nvidia-ctk there or on PATH; CDI specs get no hooks (no libcuda.so links, "
            "no loader cache update), so containers find the driver's libraries only if their loader searches %s",
            where,
            ", ".join(sorted({path.rsplit("/", 1)[0] for path in files.libraries})),
        )
