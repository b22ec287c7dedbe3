"""The simulated PCI tree against other processes: laid out by several at once, and killed in the middle of writes."""

import asyncio
import random
import sys
from pathlib import Path

from libs.devices.pci import VFIO_PCI, PciSysfs, restore_driver
from libs.devices.simulated import SimulatedBackend
from libs.devices.simulated.pci import lay_out
from tests.unit.devices.test_devices_pci import PROFILE, snapshot

REPO = Path(__file__).resolve().parents[3]

DANCER = """
import asyncio, sys
from libs.devices.pci import bind_to_vfio, restore_driver
from libs.devices.simulated import SimulatedBackend

async def main():
    sysfs = (await SimulatedBackend.open("node-a", sys.argv[1])).pci()
    gpu, audio = sysfs.group_members(10)
    while True:
        for bdf in (gpu, audio):
            await bind_to_vfio(sysfs, bdf, timeout=5)
        await restore_driver(sysfs, gpu, "nvidia", timeout=5)
        await restore_driver(sysfs, audio, "snd_hda_intel", timeout=5)
        print("cycle", flush=True)

asyncio.run(main())
"""


async def test_processes_laying_the_tree_out_at_once_build_it_once(tmp_path: Path) -> None:
    machine = await SimulatedBackend.open("node-a", tmp_path / "alone", "dgx-h100")
    gpus = (await machine.inventory()).gpus
    await asyncio.gather(
        *(asyncio.to_thread(lay_out, tmp_path / "together", gpus, audio_functions=False) for _ in range(4))
    )
    assert snapshot(tmp_path / "together/sys") == snapshot(tmp_path / "alone/sys")


async def test_a_dance_killed_anywhere_leaves_a_state_the_next_call_puts_right(tmp_path: Path) -> None:
    """The group's node never lags a group wholly on vfio-pci; what a kill leaves, a reopen and a restore clear."""
    profile = tmp_path / "passthrough.yaml"
    profile.write_text(PROFILE)
    machine = await SimulatedBackend.open("node-a", tmp_path / "sim", str(profile))
    sysfs, rng = machine.pci(), random.Random(7)
    for _ in range(6):
        dancer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", DANCER, str(tmp_path / "sim"), cwd=REPO, stdout=asyncio.subprocess.PIPE
        )
        assert dancer.stdout is not None
        assert await asyncio.wait_for(dancer.stdout.readline(), timeout=30) == b"cycle\n"
        await asyncio.sleep(rng.uniform(0, 0.01))  # somewhere inside a later cycle
        dancer.kill()
        await dancer.wait()
        assert sysfs.group_node(10).exists() or not all(_on_vfio(sysfs, bdf) for bdf in sysfs.group_members(10))
    await SimulatedBackend.open("node-a", tmp_path / "sim")
    gpu, audio = sysfs.group_members(10)
    await restore_driver(sysfs, gpu, "nvidia", timeout=5)
    await restore_driver(sysfs, audio, "snd_hda_intel", timeout=5)
    assert [sysfs.driver_of(gpu), sysfs.driver_of(audio), sysfs.override_of(gpu), sysfs.override_of(audio)] == [
        "nvidia",
        "snd_hda_intel",
        None,
        None,
    ]
    assert not sysfs.group_node(10).exists()
    assert not [name for name in snapshot(tmp_path / "sim/sys") if ".tmp-" in name]


def _on_vfio(sysfs: PciSysfs, bdf: str) -> bool:
    return sysfs.driver_of(bdf) == VFIO_PCI
