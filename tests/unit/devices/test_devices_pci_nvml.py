"""The NVML backend's IOMMU groups and PciSysfs, on a hand-made host sysfs tree."""

from pathlib import Path

import pytest

from libs.devices.nvml import NvmlBackend
from libs.devices.nvml.sysfs import iommu_group
from tests.unit.devices.test_devices_nvml import FakeGpu, FakeNvml, sysfs_tree

GPU_07 = "0000:07:00.0"
AUDIO_07 = "0000:07:00.1"


def with_iommu_group(root: Path, group: int, bus_ids: list[str]) -> None:
    """Links as the kernel makes them: the function's ``iommu_group``, and the group's ``devices/<bdf>``."""
    members = root / "kernel/iommu_groups" / str(group) / "devices"
    members.mkdir(parents=True)
    for bus_id in bus_ids:
        function = (root / "bus/pci/devices" / bus_id).resolve()
        (function / "iommu_group").symlink_to(members.parent)
        (members / bus_id).symlink_to(function)


async def test_discovery_reads_each_gpus_iommu_group_and_the_backend_exposes_the_hosts_sysfs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    FakeNvml(
        monkeypatch,
        [FakeGpu(index=0, minor=0, bus=0x07), FakeGpu(index=1, minor=1, bus=0x0F), FakeGpu(index=2, minor=2, bus=0x47)],
    )
    root = sysfs_tree(tmp_path / "sys", [GPU_07, AUDIO_07, "0000:0f:00.0"])  # no IOMMU over 0f; 47 not in sysfs
    with_iommu_group(root, 35, [GPU_07, AUDIO_07])
    backend = await NvmlBackend.open("node-a", sysfs_root=root, dev_root=tmp_path / "dev", event_wait_ms=20)
    try:
        assert [gpu.iommu_group for gpu in (await backend.inventory()).gpus] == [35, None, None]
        sysfs = backend.pci()
        assert (sysfs.group_members(35), sysfs.iommu_group_of(AUDIO_07)) == ((GPU_07, AUDIO_07), 35)
        assert (sysfs.group_node(35), sysfs.node) == (tmp_path / "dev/vfio/35", "node-a")
    finally:
        await backend.close()


def test_a_function_sysfs_does_not_show_has_no_group_rather_than_an_error(tmp_path: Path) -> None:
    assert iommu_group(tmp_path, GPU_07) is None
    assert iommu_group(tmp_path, "not a bus id") is None
