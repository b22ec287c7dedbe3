"""What a CEL selector or a matchAttribute constraint sees on each kind of device."""

import functools
import logging
from typing import Any

import kubernetes_validate
import msgspec
import pytest

from libs.devices.model import Inventory
from libs.devices.simulated import load_profile
from libs.devices.simulated.machine import create_mig_device, layout_of
from libs.devices.simulated.ops import initial_state, inventory_of
from libs.slices import DeviceTaint, MigMode, SliceLayoutError, build_slices, pool_problems, slice_name


@functools.cache
def inventory(profile: str) -> Inventory:
    return inventory_of(initial_state("node-a", load_profile(profile)))


def device(slices: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(d for s in slices for d in s["spec"].get("devices") or () if d["name"] == name)


def values(dev: dict[str, Any]) -> dict[str, Any]:
    return {name: next(iter(value.values())) for name, value in dev["attributes"].items()}


def test_a_full_gpu_has_the_reference_attributes_plus_topology() -> None:
    inv = inventory("dgx-h100")
    gpu = device(build_slices(inv, k8s_minor=35, generation=1), "gpu-5")
    assert values(gpu) == {
        "type": "gpu",
        "uuid": inv.gpus[5].uuid,
        "index": 5,
        "minor": 5,
        "productName": "NVIDIA H100 80GB HBM3",
        "brand": "Nvidia",
        "architecture": "Hopper",
        "cudaComputeCapability": "9.0.0",
        "driverVersion": "570.133.20",
        "cudaDriverVersion": "12.8.0",
        "numaNode": 1,
        "resource.kubernetes.io/numaNode": 1,
        "resource.kubernetes.io/pciBusID": "0000:b0:00.0",
        "resource.kubernetes.io/pcieRoot": "pci0000:80",
    }
    assert set(gpu["attributes"]["driverVersion"]) == {"version"}
    assert gpu["capacity"] == {"memory": {"value": "80Gi"}}


def test_a_static_mig_device_names_its_parent_and_profile() -> None:
    inv = inventory("mixed-mig")
    mig = device(build_slices(inv, k8s_minor=35, generation=1), "gpu-1-mig-3g40gb-9-0")
    attributes = values(mig)
    assert (attributes["type"], attributes["profile"], attributes["parentUUID"]) == ("mig", "3g.40gb", inv.gpus[1].uuid)
    assert attributes["uuid"].startswith("MIG-")
    assert attributes["parentMinor"] == 1
    assert attributes["productName"] == "NVIDIA H100 80GB HBM3"
    assert attributes["resource.kubernetes.io/pcieRoot"] == "pci0000:00"
    assert "resource.kubernetes.io/pciBusID" not in attributes
    assert mig["capacity"] == {
        "multiprocessors": {"value": "48"},
        "copyEngines": {"value": "3"},
        "decoders": {"value": "3"},
        "encoders": {"value": "0"},
        "jpegEngines": {"value": "3"},
        "ofaEngines": {"value": "0"},
        "memory": {"value": "40Gi"},
    }


def test_a_partition_consumes_its_memory_slices_and_has_no_uuid_yet() -> None:
    slices = build_slices(inventory("dgx-h100-mig"), k8s_minor=35, generation=1, mig_mode=MigMode.DYNAMIC)
    part = device(slices, "gpu-2-mig-3g40gb-9-4")
    assert "uuid" not in part["attributes"]
    (use,) = part["consumesCounters"]
    assert use["counterSet"] == "gpu-2-counter-set"
    assert sorted(k for k in use["counters"] if k.startswith("memory-slice")) == [
        f"memory-slice-{i}" for i in range(4, 8)
    ]
    assert use["counters"]["multiprocessors"] == {"value": "48"}


def test_the_full_gpu_consumes_its_whole_counter_set() -> None:
    slices = build_slices(inventory("dgx-h100-mig"), k8s_minor=35, generation=1, mig_mode=MigMode.DYNAMIC)
    counter_set = next(c for c in slices[0]["spec"]["sharedCounters"] if c["name"] == "gpu-6-counter-set")
    assert device(slices, "gpu-6")["consumesCounters"] == [
        {"counterSet": "gpu-6-counter-set", "counters": counter_set["counters"]}
    ]
    assert counter_set["counters"]["memory"] == {"value": "80Gi"}
    assert [f"memory-slice-{i}" in counter_set["counters"] for i in range(9)] == [True] * 8 + [False]


def test_gb200_gpus_carry_their_nvlink_clique() -> None:
    gpu = device(build_slices(inventory("gb200-nvl72"), k8s_minor=35, generation=1), "gpu-0")
    assert values(gpu)["cliqueID"] == "6c1f6a52-3d0e-4b8a-9a57-1d2f0c9e7b31.1"
    assert values(gpu)["addressingMode"] == "ATS"


def test_an_attribute_over_64_characters_is_left_out_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    inv = inventory("dgx-a100")
    long_name = "NVIDIA A100-SXM4-40GB with a product name far too long for Kubernetes"
    gpus = (msgspec.structs.replace(inv.gpus[0], product_name=long_name), *inv.gpus[1:])
    with caplog.at_level(logging.WARNING):
        slices = build_slices(msgspec.structs.replace(inv, gpus=gpus), k8s_minor=34, generation=1)
    assert "productName" not in device(slices, "gpu-0")["attributes"]
    assert values(device(slices, "gpu-1"))["productName"] == "NVIDIA A100-SXM4-40GB"
    assert any("gpu-0" in r.getMessage() and "productName" in r.getMessage() for r in caplog.records)
    kubernetes_validate.validate(slices[0], "1.34.0", strict=True)


def test_versions_become_semver_or_are_left_out(caplog: pytest.LogCaptureFixture) -> None:
    inv = inventory("dgx-a100")
    gpus = (
        msgspec.structs.replace(inv.gpus[0], driver_version="535.104.05"),
        msgspec.structs.replace(inv.gpus[1], driver_version="r535-beta"),
    )
    with caplog.at_level(logging.WARNING):
        slices = build_slices(msgspec.structs.replace(inv, gpus=gpus), k8s_minor=34, generation=1)
    assert values(device(slices, "gpu-0"))["driverVersion"] == "535.104.5"
    assert "driverVersion" not in device(slices, "gpu-1")["attributes"]
    assert any("driverVersion" in r.getMessage() for r in caplog.records)


def test_taints_are_published_within_each_versions_rules() -> None:
    taints = {
        "gpu-2": [
            DeviceTaint(key="gpu.gpudra.io/xid", value="79", effect="NoSchedule"),
            DeviceTaint(key="gpu.gpudra.io/unmonitored", effect="None"),
            DeviceTaint(key="gpu.gpudra.io/gpu-lost", effect="NoExecute", time_added="2026-01-02T03:04:05Z"),
        ]
    }
    on_134 = device(build_slices(inventory("dgx-b200"), k8s_minor=34, generation=1, taints=taints), "gpu-2")
    on_135 = device(build_slices(inventory("dgx-b200"), k8s_minor=35, generation=1, taints=taints), "gpu-2")
    assert [t["effect"] for t in on_134["taints"]] == ["NoExecute", "NoSchedule"]
    assert [t["effect"] for t in on_135["taints"]] == ["NoExecute", "NoSchedule", "None"]
    assert on_135["taints"][0] == {
        "key": "gpu.gpudra.io/gpu-lost",
        "effect": "NoExecute",
        "timeAdded": "2026-01-02T03:04:05Z",
    }
    many = {"gpu-0": [DeviceTaint(key=f"example.com/t{i}", effect="NoSchedule") for i in range(6)]}
    assert (
        len(device(build_slices(inventory("dgx-b200"), k8s_minor=34, generation=1, taints=many), "gpu-0")["taints"])
        == 4
    )


def big_static_inventory(gpu_count: int) -> Inventory:
    """`gpu_count` A100s, each cut into seven 1g.5gb MIG devices."""
    base = inventory_of(
        initial_state(
            "node-a", msgspec.structs.replace(load_profile("dgx-a100"), gpu_count=gpu_count, mig_enabled="all")
        )
    )
    devices: tuple[Any, ...] = ()
    for gpu in base.gpus:
        for start in range(7):
            devices += (create_mig_device(layout_of("node-a", gpu, base.profiles_for(gpu), devices), "1g.5gb", start),)
    return msgspec.structs.replace(base, mig_devices=devices)


def test_slices_split_at_128_devices_and_at_64_when_tainted_from_135() -> None:
    """Only a slice that holds a tainted device is limited to 64."""
    inv = big_static_inventory(40)
    plain = build_slices(inv, k8s_minor=35, generation=1)
    assert [len(s["spec"]["devices"]) for s in plain] == [128, 128, 24]
    tainted = build_slices(
        inv,
        k8s_minor=35,
        generation=1,
        taints={"gpu-0-mig-1g5gb-19-0": [DeviceTaint(key="a.b/c", effect="NoSchedule")]},
    )
    assert [len(s["spec"]["devices"]) for s in tainted] == [64, 128, 88]
    on_134 = build_slices(
        inv,
        k8s_minor=34,
        generation=1,
        taints={"gpu-0-mig-1g5gb-19-0": [DeviceTaint(key="a.b/c", effect="NoSchedule")]},
    )
    assert [len(s["spec"]["devices"]) for s in on_134] == [128, 128, 24]
    for slices, minor in ((plain, 35), (tainted, 35), (on_134, 34)):
        assert pool_problems(slices, minor) == []
        assert {s["spec"]["pool"]["resourceSliceCount"] for s in slices} == {len(slices)}


def test_more_than_eight_counter_sets_take_several_counter_slices() -> None:
    inv = inventory_of(initial_state("node-a", msgspec.structs.replace(load_profile("dgx-h100-mig"), gpu_count=20)))
    slices = build_slices(inv, k8s_minor=36, generation=1, mig_mode=MigMode.DYNAMIC)
    assert [len(s["spec"].get("sharedCounters", ())) for s in slices[:4]] == [8, 8, 4, 0]
    assert len(slices) == 3 + 20
    assert pool_problems(slices, 36) == []


def test_a_gpu_too_big_for_one_134_slice_is_an_error_naming_it() -> None:
    inv = inventory("dgx-h100-mig")
    profiles = inv.mig_profiles["NVIDIA H100 80GB HBM3"]
    bloated = {"NVIDIA H100 80GB HBM3": profiles * 6}
    with pytest.raises(SliceLayoutError, match=r"gpu-0: dynamic MIG needs 151 devices"):
        build_slices(
            msgspec.structs.replace(inv, mig_profiles=bloated), k8s_minor=34, generation=1, mig_mode=MigMode.DYNAMIC
        )


def test_slice_names_are_deterministic_dns_names() -> None:
    assert slice_name("node-a", 2) == "node-a-gpu.gpudra.io-2"
    long_node = "n" * 250
    name = slice_name(long_node, 11)
    assert len(name) <= 253
    assert name.endswith("-gpu.gpudra.io-11")
    assert name != slice_name("n" * 249 + "m", 11)


def test_an_empty_node_still_publishes_one_empty_slice_with_its_owner() -> None:
    inv = msgspec.structs.replace(inventory("dgx-a100"), gpus=())
    owner = {"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "0b9c5a4e-33b3-4c5e-8d54-1f6c2b7a9e10"}
    (only,) = build_slices(inv, k8s_minor=35, generation=7, owner=owner)
    assert only["spec"]["devices"] == []
    assert only["spec"]["pool"] == {
        "name": "node-a",
        "generation": 7,
        "resourceSliceCount": 1,
    }
    assert only["metadata"]["ownerReferences"] == [owner]
    kubernetes_validate.validate(only, "1.35.0", strict=True)


def test_kubernetes_before_134_is_refused() -> None:
    with pytest.raises(ValueError, match=r"1\.33 has no resource\.k8s\.io/v1"):
        build_slices(inventory("dgx-a100"), k8s_minor=33, generation=1)
