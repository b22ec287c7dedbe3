from pathlib import Path

from libs.devices.nvml.sysfs import numa_node, pcie_root, sysfs_bus_id


def test_nvml_bus_ids_become_extended_bdf() -> None:
    assert sysfs_bus_id("00000000:07:00.0") == "0000:07:00.0"
    assert sysfs_bus_id("00000001:BD:00.0\n") == "0001:bd:00.0"


def test_root_complex_and_numa_node_come_from_the_resolved_device_path(tmp_path: Path) -> None:
    device = tmp_path / "devices/pci0001:80/0001:80:03.0/0001:81:00.0/0001:82:00.0"
    device.mkdir(parents=True)
    (device / "numa_node").write_text("-1\n")
    (tmp_path / "bus/pci/devices").mkdir(parents=True)
    (tmp_path / "bus/pci/devices/0001:82:00.0").symlink_to(device)
    assert pcie_root(tmp_path, "0001:82:00.0") == "pci0001:80"
    assert numa_node(tmp_path, "0001:82:00.0") is None
    (device / "numa_node").write_text("3\n")
    assert numa_node(tmp_path, "0001:82:00.0") == 3


def test_an_absent_device_has_no_topology(tmp_path: Path) -> None:
    assert pcie_root(tmp_path, "0000:07:00.0") is None
    assert numa_node(tmp_path, "0000:07:00.0") is None
