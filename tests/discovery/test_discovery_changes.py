"""Discovery's pure decisions: what changed between two inventories and why, which hardware events matter,
which Kubernetes version a server reports, and what the bucket holds (the shim's contract)."""

from __future__ import annotations

import functools

import msgspec
import pytest

from libs.bus import CommandError
from libs.bus.topology import taints_key
from libs.devices.events import EccEvent, GpuLostEvent, RecoveryActionEvent, XidEvent
from libs.devices.model import Inventory
from libs.devices.simulated import load_profile
from libs.devices.simulated.ops import add_mig_device, initial_state, inventory_of
from libs.runtime.startup import StartupError
from libs.slices import DeviceTaint, MigMode
from services.discovery.faults import gpu_minor, xid_target
from services.discovery.inventory_store import InventoryRecord, record_of
from services.discovery.inventory_sync import (
    device_count,
    devices_by_name,
    inventory_change,
    rereads_inventory,
)
from services.discovery.slices_sync import desired_slices
from services.discovery.startup import check_minor, minor_of
from services.kubelet_shim.health_view import devices_of


@functools.cache
def machine(profile: str = "dgx-h100") -> Inventory:
    return inventory_of(initial_state("node-a", load_profile(profile)))


def without_gpu(inventory: Inventory, minor: int) -> Inventory:
    return msgspec.structs.replace(
        inventory,
        gpus=tuple(g for g in inventory.gpus if g.minor != minor),
        mig_devices=tuple(d for d in inventory.mig_devices if d.parent_minor != minor),
    )


def test_a_first_read_is_the_start_and_adds_every_device() -> None:
    change = inventory_change(None, machine())
    assert change is not None
    assert change.reason == "start"
    assert change.added == sorted(f"gpu-{i}" for i in range(8))
    assert (change.removed, change.changed) == ([], [])


def test_the_same_inventory_is_no_change_unless_starting() -> None:
    same = msgspec.json.decode(msgspec.json.encode(machine()), type=Inventory)
    assert inventory_change(machine(), same) is None
    restart = inventory_change(machine(), same, starting=True)
    assert restart is not None
    assert (restart.reason, restart.added, restart.removed, restart.changed) == ("start", [], [], [])


def test_a_lost_gpu_is_device_lost_and_takes_its_mig_devices_with_it() -> None:
    mixed = machine("mixed-mig")
    lost_migs = sorted(d.name for d in mixed.mig_devices if d.parent_minor == 0)
    change = inventory_change(mixed, without_gpu(mixed, 0))
    assert change is not None
    assert change.reason == "device-lost"
    assert change.removed == sorted(["gpu-0", *lost_migs])
    assert change.added == []


def test_a_gpu_that_returns_is_device_back() -> None:
    change = inventory_change(without_gpu(machine(), 3), machine())
    assert change is not None
    assert (change.reason, change.added) == ("device-back", ["gpu-3"])


def test_new_or_destroyed_mig_devices_are_a_mig_reconfiguration() -> None:
    state = initial_state("node-a", load_profile("dgx-h100-mig"))
    before = inventory_of(state)
    state, mig = add_mig_device(state, 2, "1g.10gb", 0)
    after = inventory_of(state)
    change = inventory_change(before, after)
    assert change is not None
    assert (change.reason, change.added) == ("mig-reconfigured", [mig.name])
    back = inventory_change(after, before)
    assert back is not None
    assert (back.reason, back.removed) == ("mig-reconfigured", [mig.name])


def test_mig_mode_switched_on_a_gpu_is_a_mig_reconfiguration() -> None:
    before = machine()
    gpus = tuple(msgspec.structs.replace(g, mig_enabled=g.minor == 1) for g in before.gpus)
    change = inventory_change(before, msgspec.structs.replace(before, gpus=gpus))
    assert change is not None
    assert (change.reason, change.changed) == ("mig-reconfigured", ["gpu-1"])


def test_a_new_driver_is_a_driver_reload_whatever_else_changed() -> None:
    before = machine()
    gpus = tuple(msgspec.structs.replace(g, driver_version="580.1.2") for g in before.gpus if g.minor != 5)
    after = msgspec.structs.replace(before, driver_version="580.1.2", gpus=gpus)
    change = inventory_change(before, after)
    assert change is not None
    assert change.reason == "driver-reload"
    assert change.removed == ["gpu-5"]
    assert change.changed == [f"gpu-{i}" for i in range(8) if i != 5]


def test_a_difference_in_details_only_is_a_resync_finding() -> None:
    before = machine()
    gpus = tuple(msgspec.structs.replace(g, numa_node=None) if g.minor == 4 else g for g in before.gpus)
    change = inventory_change(before, msgspec.structs.replace(before, gpus=gpus))
    assert change is not None
    assert (change.reason, change.changed) == ("resync", ["gpu-4"])


def test_device_names_and_count_cover_gpus_and_mig_devices() -> None:
    mixed = machine("mixed-mig")
    assert device_count(mixed) == len(mixed.gpus) + len(mixed.mig_devices) == len(devices_by_name(mixed))


def test_only_signs_of_a_lost_gpu_trigger_a_read() -> None:
    assert rereads_inventory(GpuLostEvent(minor=1, uuid="u"))
    assert rereads_inventory(XidEvent(minor=1, uuid="u", xid=79))
    assert not rereads_inventory(XidEvent(minor=1, uuid="u", xid=48))
    assert not rereads_inventory(EccEvent(minor=1, uuid="u", double_bit=True))
    assert not rereads_inventory(RecoveryActionEvent(minor=1, uuid="u", action=1))


def test_the_stored_record_reads_as_a_plain_inventory_for_the_kubelet_shim() -> None:
    record = record_of(machine(), generation=7, reason="device-back")
    value = msgspec.json.encode(record)
    as_shim_reads_it = msgspec.json.decode(value, type=Inventory)
    assert as_shim_reads_it == machine()
    assert [key.device for key in devices_of(as_shim_reads_it)] == [f"gpu-{i}" for i in range(8)]
    again = msgspec.json.decode(value, type=InventoryRecord)
    assert (again.generation, again.reason, again.inventory()) == (7, "device-back", machine())


@pytest.mark.parametrize(
    ("version", "minor"),
    [
        ({"major": "1", "minor": "34"}, 34),
        ({"major": "1", "minor": "35+", "gitVersion": "v1.35.2-gke.1"}, 35),
        ({"major": "1", "minor": "", "gitVersion": "v1.36.0"}, 36),
    ],
)
def test_the_minor_version_is_read_like_managed_clusters_report_it(version: dict[str, str], minor: int) -> None:
    assert minor_of(version) == minor


def test_a_version_without_a_minor_or_too_old_is_refused() -> None:
    with pytest.raises(ValueError, match="no minor version"):
        minor_of({"major": "1"})
    with pytest.raises(StartupError, match=r"1\.33 has no resource\.k8s\.io/v1.*GPUDRA_KUBE_MINOR") as caught:
        check_minor(33)
    assert caught.value.exit_code == 4


def test_fault_targets_are_gpu_names_or_minors() -> None:
    assert gpu_minor("node-a", "gpu-3") == gpu_minor("node-a", "3") == 3
    with pytest.raises(CommandError, match="'gpu-0-mig-1g10gb-19-0' is not a GPU name; use gpu-<minor>") as caught:
        gpu_minor("node-a", "gpu-0-mig-1g10gb-19-0")
    assert caught.value.code == 400
    assert xid_target("4") == 4
    assert xid_target("gpu-0-mig-1g10gb-19-0") == "gpu-0-mig-1g10gb-19-0"


def test_health_taints_reach_the_device_in_the_slices() -> None:
    taint = DeviceTaint(key="gpu.gpudra.io/xid-79", effect="NoExecute")
    slices = desired_slices(machine(), {"gpu-2": [taint]}, k8s_minor=34, mig_mode=MigMode.STATIC)
    devices = {d["name"]: d for s in slices for d in s["spec"]["devices"]}
    assert devices["gpu-2"]["taints"] == [{"key": "gpu.gpudra.io/xid-79", "effect": "NoExecute"}]
    assert "taints" not in devices["gpu-1"]
    assert taints_key("node.a") == "node_a.taints"
