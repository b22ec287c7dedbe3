"""Container edits for NVIDIA GPUs: the device nodes a full GPU, a MIG device and every GPU container need.

The shape is the reference driver's: ``/dev/nvidia<minor>`` per GPU; for a MIG device its parent's node plus
the two capability nodes that grant access to its GPU instance and compute instance
(``/dev/nvidia-caps/nvidia-cap<N>``); ``/dev/nvidiactl``, ``/dev/nvidia-uvm`` and ``/dev/nvidia-uvm-tools`` for
every container. Paths in the container are always the real ones; ``NodePaths.host_root`` says where the host's
nodes are (``/`` on a GPU node; a simulated machine keeps stand-ins under its own directory, which the spec then
names as ``hostPath``). ``NodePaths.driver`` holds the driver's files found at start (``libs.cdi.driver``), which
every container gets too.

Capability minors come from ``/proc/driver/nvidia-caps/mig-minors`` (lines such as ``gpu0/gi1/ci0/access 13``);
where that file is absent (a simulated machine) they follow the driver's numbering: ``config`` 1, ``monitor``
2, then per GPU 15 GPU instances of 1 + 8 entries each.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from libs.cdi.driver import rooted
from libs.cdi.spec import ContainerEdits, DeviceNode, Mount, Spec

CONTROL_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
MIG_MINORS_FILE = "driver/nvidia-caps/mig-minors"
_GPU_INSTANCES = 15
_COMPUTE_INSTANCES = 8
_FIRST_GPU_MINOR = 3
_MIG_MINOR_LINE = re.compile(r"^gpu(\d+)/gi(\d+)(?:/ci(\d+))?/access\s+(\d+)$")
_NO_EDITS = ContainerEdits()

MigKey = tuple[int, int, int | None]
"""(GPU minor, GPU instance id, compute instance id or None for the GPU instance itself)."""


def numbered_mig_minor(gpu: int, gi: int, ci: int | None) -> int:
    """The capability minor the driver hands out for a GPU instance (``ci`` None) or compute instance."""
    per_gpu = _GPU_INSTANCES * (1 + _COMPUTE_INSTANCES)
    gi_minor = _FIRST_GPU_MINOR + gpu * per_gpu + gi * (1 + _COMPUTE_INSTANCES)
    return gi_minor if ci is None else gi_minor + 1 + ci


def parse_mig_minors(text: str) -> dict[MigKey, int]:
    """The ``mig-minors`` table; lines that are not GPU/compute instance entries (config, monitor) are skipped."""
    table: dict[MigKey, int] = {}
    for line in text.splitlines():
        match = _MIG_MINOR_LINE.match(line.strip())
        if match:
            gpu, gi, ci, minor = match.groups()
            table[(int(gpu), int(gi), int(ci) if ci is not None else None)] = int(minor)
    return table


@dataclass(frozen=True)
class NodePaths:
    """Where the host's GPU device nodes are, the driver's MIG capability numbering and the driver's files."""

    host_root: str = "/"
    mig_minors: dict[MigKey, int] = field(default_factory=dict)
    require_nodes: bool = False
    """Check that the host's nodes exist before a spec names them (real nodes; stand-ins need not exist)."""
    driver: ContainerEdits = _NO_EDITS
    """The driver's library, tool, firmware and socket mounts and its hooks, the same for every spec."""

    @classmethod
    def load(
        cls,
        host_root: str = "/",
        proc_root: Path | str = "/proc",
        *,
        require_nodes: bool = False,
        driver: ContainerEdits = _NO_EDITS,
    ) -> NodePaths:
        """Reads the ``mig-minors`` table when the driver provides one."""
        path = Path(proc_root) / MIG_MINORS_FILE
        table = parse_mig_minors(path.read_text()) if path.is_file() else {}
        return cls(host_root=host_root, mig_minors=table, require_nodes=require_nodes, driver=driver)

    def missing(self, spec: Spec) -> list[str]:
        """Host device nodes ``spec`` names that do not exist (none when ``require_nodes`` is off).

        A node that boots without ``/dev/nvidia-uvm`` (the module loads on first use) would otherwise get a spec
        whose containers fail to start, the reference driver's "fresh node" problem; better to fail the prepare,
        which the kubelet retries, than to hand out an incomplete spec.
        """
        if not self.require_nodes:
            return []
        edits = [spec.container_edits, *(device.container_edits for device in spec.devices)]
        paths = dict.fromkeys(node.host_path or node.path for e in edits for node in e.device_nodes)
        return [path for path in paths if not os.path.exists(path)]

    def node(self, path: str) -> DeviceNode:
        """The node at ``path`` in the container; ``hostPath`` only when the host keeps it elsewhere."""
        host_path = rooted(self.host_root, path)
        return DeviceNode(path=path, host_path="" if host_path == path else host_path)

    def mig_minor(self, gpu: int, gi: int, ci: int | None) -> int:
        return self.mig_minors.get((gpu, gi, ci), numbered_mig_minor(gpu, gi, ci))


def control_edits(paths: NodePaths) -> ContainerEdits:
    """What every GPU container needs whatever its devices: the control and unified-memory nodes."""
    return ContainerEdits(device_nodes=tuple(paths.node(path) for path in CONTROL_NODES))


def gpu_edits(paths: NodePaths, minor: int) -> ContainerEdits:
    return ContainerEdits(device_nodes=(paths.node(f"/dev/nvidia{minor}"),))


def vfio_edits(paths: NodePaths, iommu_group: int) -> ContainerEdits:
    """A GPU passed through to a VM: the VFIO container node and its IOMMU group's node, what QEMU (KubeVirt's
    virt-launcher, Kata's runtime) opens to give the VM the group's devices; no NVIDIA node or driver file."""
    return ContainerEdits(device_nodes=(paths.node("/dev/vfio/vfio"), paths.node(f"/dev/vfio/{iommu_group}")))


def mig_edits(paths: NodePaths, parent_minor: int, gi: int, ci: int) -> ContainerEdits:
    """The parent GPU's node and the capability nodes of the GPU instance and of its compute instance."""
    caps = (paths.mig_minor(parent_minor, gi, None), paths.mig_minor(parent_minor, gi, ci))
    return ContainerEdits(
        device_nodes=(
            paths.node(f"/dev/nvidia{parent_minor}"),
            *(paths.node(f"/dev/nvidia-caps/nvidia-cap{minor}") for minor in caps),
        )
    )


def mps_edits(pipe_dir: str, shm_dir: str, container_pipe_dir: str = "/tmp/nvidia-mps") -> ContainerEdits:
    """An MPS client's view of its control daemon: the pipe directory (and its variable) and the daemon's shm."""
    options = ("rw", "nosuid", "nodev", "bind")
    return ContainerEdits(
        env=(f"CUDA_MPS_PIPE_DIRECTORY={container_pipe_dir}",),
        mounts=(
            Mount(host_path=pipe_dir, container_path=container_pipe_dir, options=options),
            Mount(host_path=shm_dir, container_path="/dev/shm", options=options),
        ),
    )
