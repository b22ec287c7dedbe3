"""The driver stops listing a GPU a VM holds; a process that saw it keeps it in its inventory, a later one not."""

from __future__ import annotations

from pathlib import Path

from libs.devices.pci import bind_to_vfio, restore_driver, wait_for_group_node
from libs.devices.simulated import SimulatedBackend

NODE = "node-a"


async def test_a_gpu_a_vm_holds_stays_in_the_inventory_of_a_process_that_saw_it(tmp_path: Path) -> None:
    seeing = await SimulatedBackend.open(NODE, tmp_path, "dgx-h100")
    gpu = next(g for g in (await seeing.inventory()).gpus if g.minor == 2)
    assert gpu.iommu_group is not None
    pci = seeing.pci()
    await bind_to_vfio(pci, gpu.pci_bus_id, timeout=5)
    await wait_for_group_node(pci, gpu.iommu_group, timeout=5)

    kept = await seeing.inventory()
    assert [g.minor for g in kept.gpus] == list(range(8))
    assert next(g for g in kept.gpus if g.minor == 2) == gpu  # as the driver last said
    late = await SimulatedBackend.open(NODE, tmp_path)  # a process started while the VM holds it
    assert [g.minor for g in (await late.inventory()).gpus] == [0, 1, 3, 4, 5, 6, 7]

    await restore_driver(pci, gpu.pci_bus_id, "nvidia", timeout=5)
    assert [g.minor for g in (await late.inventory()).gpus] == list(range(8))
    assert (await seeing.inventory()).gpus == (await late.inventory()).gpus
