"""GPUs for VMs (issue 15): a claim of ``gpu-<minor>-vfio`` moves the GPU's IOMMU group to vfio-pci and back.

On the simulated ``mixed-mig`` node with every GPU offered to VMs and an audio function beside each GPU (a group
with a second endpoint): the whole group is bound, the CDI spec names the VFIO nodes and nothing of the host's
driver, a container claim on the same GPU is refused while the VM holds it (and the other way round), unprepare
gives everything back, a GPU some process uses is refused before anything moves, an unbind that does not finish
fails the prepare within its bound and is given back once it does, and a kill -9 after any sysfs write of the
bind or the unbind leaves every function on exactly one driver and the checkpoint true.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from libs.bus import Bus
from libs.devices.pci import PciSysfs
from libs.devices.simulated import SimulatedBackend
from libs.devices.simulated.machine import pci_location
from libs.kube import RESOURCE_CLAIMS, KubeApi
from libs.natsserver import EmbeddedNats
from services.claim_preparation.service import ClaimService
from services.claim_preparation.settings import Settings
from tests.claim_preparation.claim_prep_crash_support import crash_at
from tests.claim_preparation.claim_prep_support import (
    NODE,
    cdi_files,
    gpu_config,
    opaque,
    prepare,
    service_settings,
    serving,
    spec_of,
    store_claim,
    unprepare,
    until_answering,
)

BUILTIN = Path(__file__).resolve().parents[2] / "libs/devices/simulated/builtin"
GPU = "gpu-5"
VM_GPU = "gpu-5-vfio"
MINOR = 5
GROUP = 10 + MINOR
BDF = pci_location(MINOR)[0]
AUDIO = BDF.removesuffix(".0") + ".1"


def profile_yaml(root: Path) -> Path:
    """``mixed-mig`` with an audio function in each GPU's IOMMU group."""
    path = root / "profile.yaml"
    data = yaml.safe_load((BUILTIN / "mixed-mig.yaml").read_text())
    path.write_text(yaml.safe_dump({**data, "name": "mixed-mig-audio", "audio_functions": True}))
    return path


@pytest.fixture
def settings(tmp_path: Path, nats_server: EmbeddedNats) -> Settings:
    return service_settings(
        tmp_path,
        nats_server.url,
        profile=str(profile_yaml(tmp_path)),
        passthrough_gpus="all",
        passthrough_timeout_seconds=2,
    )


@pytest.fixture
async def machine(settings: Settings, service: ClaimService) -> SimulatedBackend:
    """The machine the running service drives, opened as another process would."""
    return await SimulatedBackend.open(NODE, settings.simulated_state)


def drivers(pci: PciSysfs) -> tuple[str | None, str | None]:
    return pci.driver_of(BDF), pci.driver_of(AUDIO)


async def test_a_vm_claim_binds_the_whole_group_and_gets_only_the_vfio_nodes(
    bus: Bus, kube: KubeApi, service: ClaimService, settings: Settings, machine: SimulatedBackend
) -> None:
    pci = machine.pci()
    assert (pci.iommu_group_of(BDF), pci.group_members(GROUP)) == (GROUP, (BDF, AUDIO))
    assert drivers(pci) == ("nvidia", "snd_hda_intel")
    ref = await store_claim(kube, "vm-0", [("gpu", VM_GPU)])
    result = (await prepare(bus, ref)).results[ref.uid]
    assert result.error == ""
    assert [d.device for d in result.devices] == [VM_GPU]
    assert drivers(pci) == ("vfio-pci", "vfio-pci")
    assert pci.group_node(GROUP).exists()
    spec = spec_of(settings, ref)
    [device] = spec["devices"]
    nodes = [node["path"] for node in device["containerEdits"]["deviceNodes"]]
    assert nodes == ["/dev/vfio/vfio", f"/dev/vfio/{GROUP}"]
    assert [n["hostPath"] for n in device["containerEdits"]["deviceNodes"]] == [
        str(pci.container_node()),
        str(pci.group_node(GROUP)),
    ]
    common = spec["containerEdits"]
    assert common == {"env": ["NVIDIA_VISIBLE_DEVICES=void"]}  # no /dev/nvidia*, no driver files
    record = service.preparer.records[ref.uid]
    assert [(e.bdf, e.driver) for plan in record.sharing for e in getattr(plan, "endpoints", ())] == [
        (BDF, "nvidia"),
        (AUDIO, "snd_hda_intel"),
    ]
    writer = service.preparer.parts.device_status
    assert writer is not None
    await writer.flush()
    claim = await kube.get(RESOURCE_CLAIMS, "vm-0", "default")
    kubernetes_validate.validate(claim, "1.36.0", strict=True)
    [entry] = claim["status"]["devices"]
    assert (entry["device"], entry["data"]["vm"]) == (VM_GPU, {"pciBusID": BDF, "iommuGroup": GROUP})

    assert (await unprepare(bus, ref)).results[ref.uid].error == ""
    assert drivers(pci) == ("nvidia", "snd_hda_intel")
    assert not pci.group_node(GROUP).exists()
    assert (pci.override_of(BDF), pci.override_of(AUDIO)) == (None, None)
    assert cdi_files(settings) == []


async def test_a_gpu_goes_to_a_vm_or_a_container_never_both(
    bus: Bus, kube: KubeApi, service: ClaimService, settings: Settings, machine: SimulatedBackend
) -> None:
    vm = await store_claim(kube, "vm-0", [("gpu", VM_GPU)])
    container = await store_claim(kube, "train-0", [("gpu", GPU)])
    assert (await prepare(bus, vm)).results[vm.uid].error == ""
    error = (await prepare(bus, container)).results[container.uid].error
    assert f"device {GPU} overlaps {VM_GPU}, which is already prepared for claim default/vm-0" in error
    assert (await unprepare(bus, vm)).results[vm.uid].error == ""
    assert (await prepare(bus, container)).results[container.uid].error == ""
    error = (await prepare(bus, vm)).results[vm.uid].error
    assert f"device {VM_GPU} overlaps {GPU}, which is already prepared for claim default/train-0" in error
    assert drivers(machine.pci()) == ("nvidia", "snd_hda_intel")


async def test_a_gpu_processes_use_is_refused_before_anything_moves(
    bus: Bus, kube: KubeApi, service: ClaimService, settings: Settings, machine: SimulatedBackend
) -> None:
    ref = await store_claim(kube, "vm-0", [("gpu", VM_GPU)])
    await machine.mark_in_use(MINOR, pids=(4242, 4343))
    error = (await prepare(bus, ref)).results[ref.uid].error
    assert f"device {VM_GPU}: 2 process(es) use the GPU (pid 4242, 4343); a VM can take it once they end" in error
    assert drivers(machine.pci()) == ("nvidia", "snd_hda_intel")
    assert machine.pci().override_of(BDF) is None
    assert service.preparer.records == {}
    await machine.mark_idle(MINOR)
    assert (await prepare(bus, ref)).results[ref.uid].error == ""
    assert drivers(machine.pci()) == ("vfio-pci", "vfio-pci")


async def test_without_the_vfio_pci_driver_nothing_moves_and_the_error_says_how_to_load_it(
    bus: Bus, kube: KubeApi, service: ClaimService, settings: Settings, machine: SimulatedBackend
) -> None:
    pci = machine.pci()
    shutil.rmtree(pci.sys_root / "bus/pci/drivers/vfio-pci")  # the module is not loaded
    ref = await store_claim(kube, "vm-0", [("gpu", VM_GPU)])
    error = (await prepare(bus, ref)).results[ref.uid].error
    assert f"device {VM_GPU}: the vfio-pci driver is not loaded on this node; load it (modprobe vfio-pci)" in error
    assert drivers(pci) == ("nvidia", "snd_hda_intel")
    assert (pci.override_of(BDF), service.preparer.records) == (None, {})


async def test_an_unbind_that_does_not_finish_fails_within_the_bound_and_is_given_back_once_it_does(
    bus: Bus, kube: KubeApi, service: ClaimService, settings: Settings, machine: SimulatedBackend
) -> None:
    """A driver stuck in its remove: the process list was empty, the unbind does not finish."""
    ref = await store_claim(kube, "vm-0", [("gpu", VM_GPU)])
    await machine.hold_unbind(BDF)
    error = (await prepare(bus, ref)).results[ref.uid].error
    assert f"{BDF}: the unbind from nvidia did not finish in 2s" in error
    # The kernel may still finish that unbind: nothing is given back under it, and the record says what to undo.
    assert f"a write to {BDF} is still in the kernel after 2s" in error
    assert drivers(machine.pci()) == ("nvidia", "snd_hda_intel")
    assert service.preparer.records[ref.uid].state == "PrepareStarted"
    await machine.release_unbind(BDF)  # the unbind finishes, leaving the GPU on no driver
    # The kubelet's next prepare gives everything back first (the GPU to nvidia), then binds the group.
    assert (await prepare(bus, ref)).results[ref.uid].error == ""
    assert drivers(machine.pci()) == ("vfio-pci", "vfio-pci")
    assert (await unprepare(bus, ref)).results[ref.uid].error == ""
    assert drivers(machine.pci()) == ("nvidia", "snd_hda_intel")


@pytest.mark.parametrize(
    ("device", "configs", "expected"),
    [
        ("gpu-0-vfio", [], r"device gpu-0-vfio: gpu-0 is not offered to VMs on this node \(MIG is on\)"),
        (VM_GPU, [opaque(gpu_config(strategy="TimeSlicing"), requests=["gpu"])], r"gets gpu-5-vfio, a GPU for a VM"),
    ],
)
async def test_a_vm_claim_the_node_cannot_serve_is_refused_before_anything_moves(
    device: str,
    configs: list[dict[str, Any]],
    expected: str,
    *,
    bus: Bus,
    kube: KubeApi,
    service: ClaimService,
    settings: Settings,
    machine: SimulatedBackend,
) -> None:
    ref = await store_claim(kube, "vm-0", [("gpu", device)], configs)
    error = (await prepare(bus, ref)).results[ref.uid].error
    assert re.search(expected, error), error
    assert drivers(machine.pci()) == ("nvidia", "snd_hda_intel")
    assert service.preparer.records == {}


async def test_where_the_node_offers_no_gpu_to_vms_a_vfio_device_is_unknown(
    tmp_path: Path, nats_server: EmbeddedNats, bus: Bus, kube: KubeApi
) -> None:
    settings = service_settings(tmp_path, nats_server.url, profile=str(profile_yaml(tmp_path)))
    async with serving(nats_server.url, settings):
        await until_answering(bus)
        ref = await store_claim(kube, "vm-0", [("gpu", VM_GPU)])
        error = (await prepare(bus, ref)).results[ref.uid].error
    assert "gpu-5 is not offered to VMs on this node (GPUDRA_PASSTHROUGH_GPUS does not name it)" in error


BIND_WRITES = 6
"""Override, unbind and probe of each of the group's two functions."""
UNBIND_WRITES = 6
"""Override cleared, unbind and probe of each."""


@pytest.mark.parametrize("write", [f"sysfs-write-{n}" for n in range(1, BIND_WRITES + UNBIND_WRITES + 1)])
async def test_kill_9_after_any_sysfs_write_leaves_every_function_on_one_driver_and_the_record_true(
    write: str, *, tmp_path: Path, nats_server: EmbeddedNats, bus: Bus, kube: KubeApi, settings: Settings
) -> None:
    ref = await store_claim(kube, "vm-0", [("gpu", VM_GPU)])
    child = {"passthrough_gpus": "all", "profile": str(profile_yaml(tmp_path))}
    await crash_at(write, nats_server.url, tmp_path, ref, child_settings=child)
    pci = (await SimulatedBackend.open(NODE, settings.simulated_state)).pci()
    async with serving(nats_server.url, settings) as service:
        await until_answering(bus)
        record = service.preparer.records.get(ref.uid)
        if record is None:  # half prepared or half unprepared: rolled back at start
            assert drivers(pci) == ("nvidia", "snd_hda_intel")
            assert not pci.group_node(GROUP).exists()
        else:
            assert record.state == "PrepareCompleted"
            assert drivers(pci) == ("vfio-pci", "vfio-pci")
        assert (await prepare(bus, ref)).results[ref.uid].error == ""
        assert drivers(pci) == ("vfio-pci", "vfio-pci")
        assert (await unprepare(bus, ref)).results[ref.uid].error == ""
        assert drivers(pci) == ("nvidia", "snd_hda_intel")
        assert (pci.override_of(BDF), pci.override_of(AUDIO)) == (None, None)
