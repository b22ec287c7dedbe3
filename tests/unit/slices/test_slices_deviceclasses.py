"""The DeviceClasses shipped in deploy/ are valid and select what the slices actually publish."""

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from libs.devices.simulated import load_profile
from libs.devices.simulated.ops import initial_state, inventory_of
from libs.slices import DRIVER_NAME, MigMode, build_slices
from libs.slices.passthrough import PassthroughGpus
from tests.unit.slices.slices_support import with_iommu_groups

CLASSES = Path(__file__).resolve().parents[3] / "deploy/kustomize/base/deviceclasses.yaml"
EQUALS = re.compile(r'device\.attributes\["gpu\.gpudra\.io"\]\.(\w+) (==|in) ("[^"]*"|\[[^\]]*\])')


def classes() -> dict[str, dict[str, Any]]:
    return {c["metadata"]["name"]: c for c in yaml.safe_load_all(CLASSES.read_text())}


@pytest.mark.parametrize("version", ["1.34.0", "1.35.0", "1.36.0"])
def test_device_classes_validate(version: str) -> None:
    for device_class in classes().values():
        kubernetes_validate.validate(device_class, version, strict=True)


def selects(expression: str, device: dict[str, Any]) -> bool:
    """Enough of CEL for these selectors: the driver check and equality/membership on one attribute. The GPU
    driver's devices only: a class of another driver (compute domains) selects none of them."""
    if f'device.driver == "{DRIVER_NAME}"' not in expression:
        return False
    attributes = {name: next(iter(value.values())) for name, value in device["attributes"].items()}
    matches = EQUALS.findall(expression)
    assert matches, expression
    return all(
        attributes.get(name) in (yaml.safe_load(value) if op == "in" else [yaml.safe_load(value)])
        for name, op, value in matches
    )


def test_each_class_selects_the_devices_it_names() -> None:
    """``mixed-mig`` with every GPU offered to VMs: the whole ones (4-7, MIG off) get a vfio device each."""
    inventory = with_iommu_groups(inventory_of(initial_state("node-a", load_profile("mixed-mig"))))
    slices = build_slices(inventory, k8s_minor=35, generation=1, passthrough=PassthroughGpus(every=True))
    devices = [d for s in slices for d in s["spec"].get("devices") or ()]
    chosen = {
        name: {d["name"] for d in devices if selects(c["spec"]["selectors"][0]["cel"]["expression"], d)}
        for name, c in classes().items()
    }
    assert chosen["gpu.gpudra.io"] == {f"gpu-{i}" for i in range(4, 8)}
    assert chosen["mig.gpudra.io"] == {d["name"] for d in devices if "-mig-" in d["name"]}
    assert chosen["vfio.gpudra.io"] == {f"gpu-{i}-vfio" for i in range(4, 8)}
    assert chosen["any.gpu.gpudra.io"] == {d["name"] for d in devices if not d["name"].endswith("-vfio")}
    assert chosen["compute-domain-default-channel.gpudra.io"] == set()
    assert classes()["gpu.gpudra.io"]["spec"]["extendedResourceName"] == "gpudra.io/gpu"


def test_dynamic_mig_partitions_are_mig_devices_too() -> None:
    inventory = inventory_of(initial_state("node-a", load_profile("dgx-h100-mig")))
    slices = build_slices(inventory, k8s_minor=35, generation=1, mig_mode=MigMode.DYNAMIC)
    expression = classes()["mig.gpudra.io"]["spec"]["selectors"][0]["cel"]["expression"]
    partitions = [d for s in slices for d in s["spec"].get("devices") or () if selects(expression, d)]
    assert len(partitions) == 8 * 25
