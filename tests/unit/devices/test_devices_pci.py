"""The PCI layer on a simulated node's sysfs: reads, the vfio-pci dance, its faults, and recovery from any step."""

import os
import re
import time
from pathlib import Path

import pytest

from libs.devices.errors import PciError, ProfileError
from libs.devices.model import Gpu
from libs.devices.pci import PciSysfs, bind_to_vfio, restore_driver, wait_for_group_node
from libs.devices.pci.binding import (
    Binding,
    Probe,
    SetOverride,
    Unbind,
    apply,
    read_binding,
    step_to_driver,
    step_to_vfio,
)
from libs.devices.simulated import SimulatedBackend, parse_profile

PROFILE = "name: passthrough\ngpu_model: H100-SXM5-80GB\ngpu_count: 2\naudio_functions: true\n"


@pytest.fixture
async def machine(tmp_path: Path) -> SimulatedBackend:
    profile = tmp_path / "passthrough.yaml"
    profile.write_text(PROFILE)
    return await SimulatedBackend.open("node-a", tmp_path / "sim", str(profile))


@pytest.fixture
async def gpu(machine: SimulatedBackend) -> Gpu:
    return (await machine.inventory()).gpus[0]


def audio_of(gpu: Gpu) -> str:
    return f"{gpu.pci_bus_id[:-1]}1"


def snapshot(root: Path) -> dict[str, str]:
    """Every link's target and every file's content under ``root``, without following links."""
    seen = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            seen[str(path.relative_to(root))] = f"-> {os.readlink(path)}" if path.is_symlink() else path.read_text()
    return seen


def drivers(sysfs: PciSysfs, group: int) -> list[tuple[str | None, str | None]]:
    return [(sysfs.driver_of(bdf), sysfs.override_of(bdf)) for bdf in sysfs.group_members(group)]


async def test_the_tree_reads_as_a_hosts_sysfs_and_agrees_with_the_inventory(
    machine: SimulatedBackend, gpu: Gpu, tmp_path: Path
) -> None:
    sysfs = machine.pci()
    assert [g.iommu_group for g in (await machine.inventory()).gpus] == [10, 11]
    assert sysfs.group_members(10) == (gpu.pci_bus_id, audio_of(gpu))
    assert drivers(sysfs, 10) == [("nvidia", None), ("snd_hda_intel", None)]
    assert (sysfs.iommu_group_of(gpu.pci_bus_id), sysfs.iommu_group_of(audio_of(gpu))) == (10, 10)
    assert (sysfs.vendor_of(gpu.pci_bus_id), sysfs.class_of(gpu.pci_bus_id)) == (0x10DE, 0x030200)
    assert sysfs.class_of(audio_of(gpu)) == 0x040300
    assert (sysfs.numa_node_of(gpu.pci_bus_id), sysfs.pcie_root_of(gpu.pci_bus_id)) == (gpu.numa_node, gpu.pcie_root)
    assert sysfs.group_node(10) == tmp_path / "sim/dev/vfio/10"
    assert sysfs.container_node().exists()
    assert not sysfs.group_node(10).exists()


async def test_without_audio_functions_each_gpu_is_alone_in_its_group(tmp_path: Path) -> None:
    machine = await SimulatedBackend.open("node-a", tmp_path, "dgx-h100")
    sysfs = machine.pci()
    gpus = (await machine.inventory()).gpus
    assert [sysfs.group_members(sysfs.iommu_group_of(g.pci_bus_id) or -1) for g in gpus] == [
        (g.pci_bus_id,) for g in gpus
    ]
    assert [g.iommu_group for g in gpus] == list(range(10, 18))


async def test_a_missing_function_or_group_is_named(machine: SimulatedBackend) -> None:
    with pytest.raises(PciError, match=r"^node node-a: 0000:99:00\.0: no such PCI function under "):
        machine.pci().driver_of("0000:99:00.0")
    with pytest.raises(PciError, match=r"^node node-a: iommu group 99: no such IOMMU group"):
        machine.pci().group_members(99)


def test_the_audio_option_is_a_checked_profile_field() -> None:
    assert not parse_profile("name: x\ngpu_model: H100-SXM5-80GB\n", source="x.yaml").audio_functions
    with pytest.raises(ProfileError, match=r"line 3 \(\$\.audio_functions\)"):
        parse_profile("name: x\ngpu_model: H100-SXM5-80GB\naudio_functions: sometimes\n", source="x.yaml")


async def test_the_group_node_appears_only_once_both_functions_are_on_vfio_pci(
    machine: SimulatedBackend, gpu: Gpu
) -> None:
    sysfs = machine.pci()
    await bind_to_vfio(sysfs, gpu.pci_bus_id, timeout=5)
    assert drivers(sysfs, 10) == [("vfio-pci", "vfio-pci"), ("snd_hda_intel", None)]
    assert not sysfs.group_node(10).exists()
    with pytest.raises(
        PciError, match=rf"iommu group 10: .*/dev/vfio/10 did not appear in 0.05s; .*{audio_of(gpu)} on snd"
    ):
        await wait_for_group_node(sysfs, 10, timeout=0.05)
    await bind_to_vfio(sysfs, audio_of(gpu), timeout=5)
    await wait_for_group_node(sysfs, 10, timeout=5)
    assert not sysfs.group_node(11).exists()


async def test_restoring_puts_both_functions_back_and_removes_the_node(machine: SimulatedBackend, gpu: Gpu) -> None:
    sysfs = machine.pci()
    for bdf in sysfs.group_members(10):
        await bind_to_vfio(sysfs, bdf, timeout=5)
    await restore_driver(sysfs, gpu.pci_bus_id, "nvidia", timeout=5)
    assert not sysfs.group_node(10).exists()
    await restore_driver(sysfs, audio_of(gpu), "snd_hda_intel", timeout=5)
    assert drivers(sysfs, 10) == [("nvidia", None), ("snd_hda_intel", None)]
    assert not sysfs.group_node(10).exists()


async def test_every_call_repeated_changes_nothing(machine: SimulatedBackend, gpu: Gpu, tmp_path: Path) -> None:
    sysfs = machine.pci()
    members = sysfs.group_members(10)
    for bdf in members:
        await bind_to_vfio(sysfs, bdf, timeout=5)
    bound = snapshot(tmp_path / "sim")
    for bdf in members:
        await bind_to_vfio(sysfs, bdf, timeout=5)
    await SimulatedBackend.open("node-a", tmp_path / "sim")  # lays the tree out again
    assert snapshot(tmp_path / "sim") == bound
    await restore_driver(sysfs, gpu.pci_bus_id, "nvidia", timeout=5)
    await restore_driver(sysfs, audio_of(gpu), "snd_hda_intel", timeout=5)
    restored = snapshot(tmp_path / "sim")
    await restore_driver(sysfs, gpu.pci_bus_id, "nvidia", timeout=5)
    await restore_driver(sysfs, audio_of(gpu), "snd_hda_intel", timeout=5)
    assert snapshot(tmp_path / "sim") == restored


async def test_a_hung_unbind_fails_within_the_timeout_and_a_retry_after_it_ends_succeeds(
    machine: SimulatedBackend, gpu: Gpu
) -> None:
    sysfs = machine.pci()
    await machine.hold_unbind(gpu.pci_bus_id)
    started = time.monotonic()
    with pytest.raises(PciError) as failure:
        await bind_to_vfio(sysfs, gpu.pci_bus_id, timeout=0.2)
    assert time.monotonic() - started < 2
    assert str(failure.value) == (
        f"node node-a: {gpu.pci_bus_id}: the unbind from nvidia did not finish in 0.2s, "
        "likely because a process still uses it"
    )
    assert sysfs.driver_of(gpu.pci_bus_id) == "nvidia"
    await machine.release_unbind(gpu.pci_bus_id)
    await bind_to_vfio(sysfs, gpu.pci_bus_id, timeout=5)
    assert sysfs.driver_of(gpu.pci_bus_id) == "vfio-pci"


async def test_a_gpu_in_use_holds_its_unbind_from_nvidia_only(machine: SimulatedBackend, gpu: Gpu) -> None:
    sysfs = machine.pci()
    await machine.mark_in_use(gpu.minor)
    with pytest.raises(PciError, match=r"the unbind from nvidia did not finish in 0\.1s"):
        await bind_to_vfio(sysfs, gpu.pci_bus_id, timeout=0.1)
    await machine.mark_idle(gpu.minor)
    await bind_to_vfio(sysfs, gpu.pci_bus_id, timeout=5)
    await machine.mark_in_use(gpu.minor)  # a VM's use is not nvidia's: the way back is free
    await restore_driver(sysfs, gpu.pci_bus_id, "nvidia", timeout=5)
    assert drivers(sysfs, 10)[0] == ("nvidia", None)


@pytest.mark.parametrize("recover", ["restore", "bind"])
@pytest.mark.parametrize("toward", ["vfio-pci", "nvidia"])
@pytest.mark.parametrize("steps", [0, 1, 2, 3])
async def test_a_dance_stopped_after_any_write_is_finished_or_undone(
    machine: SimulatedBackend, gpu: Gpu, recover: str, toward: str, steps: int
) -> None:
    """The other function is on vfio-pci throughout, so the GPU's binding alone decides the group's node."""
    sysfs, bdf = machine.pci(), gpu.pci_bus_id
    await bind_to_vfio(sysfs, audio_of(gpu), timeout=5)
    if toward == "nvidia":
        await bind_to_vfio(sysfs, bdf, timeout=5)
    for _ in range(steps):
        now = read_binding(sysfs, bdf)
        step = step_to_vfio(now) if toward == "vfio-pci" else step_to_driver(now, "nvidia", override=False)
        assert step is not None
        apply(sysfs, bdf, step)
    if recover == "restore":
        await restore_driver(sysfs, bdf, "nvidia", timeout=5)
        assert (read_binding(sysfs, bdf), sysfs.group_node(10).exists()) == (Binding("nvidia", None), False)
    else:
        await bind_to_vfio(sysfs, bdf, timeout=5)  # a function already on vfio-pci keeps whatever override it has
        assert (sysfs.driver_of(bdf), sysfs.group_node(10).exists()) == ("vfio-pci", True)


async def test_a_kernel_write_killed_between_link_and_node_is_put_right(
    machine: SimulatedBackend, gpu: Gpu, tmp_path: Path
) -> None:
    """An unbind from vfio-pci killed after the link went and before the node did: the next write fixes the node."""
    sysfs = machine.pci()
    for bdf in sysfs.group_members(10):
        await bind_to_vfio(sysfs, bdf, timeout=5)
    (sysfs.device_dir(gpu.pci_bus_id) / "driver").unlink()
    assert sysfs.group_node(10).exists()
    await restore_driver(sysfs, gpu.pci_bus_id, "nvidia", timeout=5)
    assert not sysfs.group_node(10).exists()
    assert not [p for p in (tmp_path / "sim/sys").rglob("*") if ".tmp-" in p.name]


def test_binding_decisions() -> None:
    assert step_to_vfio(Binding("nvidia", None)) == SetOverride("vfio-pci")
    assert step_to_vfio(Binding("nvidia", "vfio-pci")) == Unbind("nvidia")
    assert step_to_vfio(Binding(None, "vfio-pci")) == Probe()
    assert step_to_vfio(Binding("vfio-pci", "vfio-pci")) is None
    assert step_to_vfio(Binding("vfio-pci", None)) is None
    assert step_to_driver(Binding("vfio-pci", "vfio-pci"), "nvidia", override=False) == SetOverride(None)
    assert step_to_driver(Binding("vfio-pci", None), "nvidia", override=False) == Unbind("vfio-pci")
    assert step_to_driver(Binding(None, None), "nvidia", override=False) == Probe()
    assert step_to_driver(Binding("nouveau", None), "nvidia", override=True) == SetOverride("nvidia")
    assert step_to_driver(Binding("nouveau", "nvidia"), "nvidia", override=True) == Unbind("nouveau")
    assert step_to_driver(Binding("nvidia", "nvidia"), "nvidia", override=True) == SetOverride(None)
    assert step_to_driver(Binding("nvidia", None), "nvidia", override=False) is None


async def test_a_driver_the_default_probe_does_not_pick_is_reached_by_an_override_that_is_then_cleared(
    machine: SimulatedBackend, gpu: Gpu
) -> None:
    sysfs = machine.pci()
    await restore_driver(sysfs, audio_of(gpu), "vfio-pci", timeout=5)
    assert read_binding(sysfs, audio_of(gpu)) == Binding("vfio-pci", None)
    await restore_driver(sysfs, audio_of(gpu), "snd_hda_intel", timeout=5)
    assert read_binding(sysfs, audio_of(gpu)) == Binding("snd_hda_intel", None)


async def test_a_driver_that_never_binds_is_reported(machine: SimulatedBackend, gpu: Gpu) -> None:
    with pytest.raises(PciError, match=rf"{gpu.pci_bus_id}: the kernel's probe bound it to no driver, not i915$"):
        await restore_driver(machine.pci(), gpu.pci_bus_id, "i915", timeout=5)


BAD_BUS_IDS = [
    "../../../../evil",
    "0000:17:00.0/../../../../../evil",
    "0000:17:00.0\n",
    "0000:17:00.0 ",
    "0000:17:00.8",
    "0000:17:0G.0",
    "0000:17:00.0/driver",
    "17:00.0",
    "",
]


@pytest.mark.parametrize("bdf", BAD_BUS_IDS)
async def test_a_bad_bus_id_is_refused_before_it_reaches_a_path(tmp_path: Path, bdf: str) -> None:
    """``evil`` is where each would lead: it looks like a bound function, so a read that got there would answer."""
    (tmp_path / "sys/bus/pci/devices/0000:17:00.0").mkdir(parents=True)
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "driver").symlink_to("../drivers/nvidia")
    (evil / "driver_override").write_text("(null)\n")
    sysfs = PciSysfs(tmp_path / "sys", tmp_path / "dev", node="node-a")
    refused = rf"^node node-a: {re.escape(repr(bdf))}: not a PCI bus id"
    with pytest.raises(PciError, match=refused):
        sysfs.driver_of(bdf)
    with pytest.raises(PciError, match=refused):
        sysfs.set_override(bdf, "vfio-pci")
    with pytest.raises(PciError, match=refused):
        await bind_to_vfio(sysfs, bdf, timeout=1)
    assert (evil / "driver_override").read_text() == "(null)\n"


async def test_a_bad_driver_name_or_group_is_refused(machine: SimulatedBackend, gpu: Gpu) -> None:
    sysfs = machine.pci()
    with pytest.raises(PciError, match=r"'\.\./nvidia': not a kernel driver name"):
        await restore_driver(sysfs, gpu.pci_bus_id, "../nvidia", timeout=1)
    with pytest.raises(PciError, match="'vfio-pci/x': not a kernel driver name"):
        sysfs.set_override(gpu.pci_bus_id, "vfio-pci/x")
    with pytest.raises(PciError, match="iommu group -1: not an IOMMU group number"):
        sysfs.group_node(-1)
    assert read_binding(sysfs, gpu.pci_bus_id) == Binding("nvidia", None)
