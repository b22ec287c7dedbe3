"""GPUs offered to VMs (VFIO): a vfio device beside each named GPU, sharing one counter with it, valid everywhere."""

from __future__ import annotations

import functools
from typing import Any

import kubernetes_validate
import msgspec
import pytest

from libs.devices.model import Inventory
from libs.devices.simulated import builtin_profiles, load_profile
from libs.devices.simulated.ops import initial_state, inventory_of
from libs.slices import MigMode, build_slices, pool_problems
from libs.slices.passthrough import PassthroughGpus
from tests.support.kubeapi.rules import resource_slice
from tests.unit.slices.slices_support import with_iommu_groups

EVERY = PassthroughGpus(every=True)


@functools.cache
def inventory(profile: str) -> Inventory:
    return with_iommu_groups(inventory_of(initial_state("node-a", load_profile(profile))))


def devices(slices: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for s in slices for d in s["spec"].get("devices") or ()}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("none", PassthroughGpus()),
        ("", PassthroughGpus()),
        ("all", EVERY),
        ("0,3", PassthroughGpus(minors=frozenset({0, 3}))),
    ],
)
def test_the_setting_names_none_all_or_minors(text: str, expected: PassthroughGpus) -> None:
    assert PassthroughGpus.parse(text) == expected


@pytest.mark.parametrize("text", ["some", "0;3", "-1", "1,", "²"])
def test_a_setting_that_names_nothing_sensible_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="give none, all, or GPU minor numbers"):
        PassthroughGpus.parse(text)


@pytest.mark.parametrize(("profile", "mode"), [(p, mode) for p in builtin_profiles() for mode in MigMode])
@pytest.mark.parametrize("shared_gpus", [False, True])
def test_vfio_devices_validate_and_share_a_counter_with_their_gpu(
    profile: str, mode: MigMode, shared_gpus: bool
) -> None:
    inv = inventory(profile)
    for minor in (34, 35, 36):
        slices = build_slices(
            inv, k8s_minor=minor, generation=1, mig_mode=mode, shared_gpus=shared_gpus, passthrough=EVERY
        )
        for resource_slice_ in slices:
            kubernetes_validate.validate(resource_slice_, f"1.{minor}.0", strict=True)
            assert resource_slice(resource_slice_, None) == []
        assert pool_problems(slices, minor) == []
    published = devices(slices)
    whole = [gpu for gpu in inv.gpus if not gpu.mig_enabled]
    assert {name for name in published if name.endswith("-vfio")} == {f"{gpu.name}-vfio" for gpu in whole}
    for gpu in whole:
        uses = [published[name]["consumesCounters"] for name in (gpu.name, f"{gpu.name}-vfio")]
        assert (
            uses[0] == uses[1] == [{"counterSet": f"gpu-{gpu.minor}-counter-set", "counters": {"gpu": {"value": "1"}}}]
        )
        vfio = published[f"{gpu.name}-vfio"]["attributes"]
        assert (vfio["type"], vfio["iommuGroup"], vfio["uuid"]) == (
            {"string": "vfio"},
            {"int": 10 + gpu.index},
            {"string": gpu.uuid},
        )
        assert vfio["resource.kubernetes.io/pciBusID"] == {"string": gpu.pci_bus_id}
    counter_sets = {c["name"]: c for s in slices for c in s["spec"].get("sharedCounters") or ()}
    for gpu in whole:
        assert counter_sets[f"gpu-{gpu.minor}-counter-set"]["counters"] == {"gpu": {"value": "1"}}


@pytest.mark.parametrize("mode", ["on", "off", "devtools", None])
def test_a_vm_can_select_on_the_nodes_confidential_computing_mode(mode: str | None) -> None:
    inv = msgspec.structs.replace(inventory("dgx-h100"), confidential_computing=mode)
    vfio = devices(build_slices(inv, k8s_minor=36, generation=1, passthrough=EVERY))["gpu-0-vfio"]["attributes"]
    assert vfio.get("confidentialComputing") == ({"string": mode} if mode else None)


def test_only_the_named_gpus_with_an_iommu_group_are_offered() -> None:
    inv = inventory("dgx-h100")
    no_group = msgspec.structs.replace(
        inv, gpus=tuple(msgspec.structs.replace(g, iommu_group=None) if g.minor == 3 else g for g in inv.gpus)
    )
    named = PassthroughGpus.parse("1,3,9")
    published = devices(build_slices(no_group, k8s_minor=36, generation=1, passthrough=named))
    assert sorted(name for name in published if name.endswith("-vfio")) == ["gpu-1-vfio"]
    assert "consumesCounters" not in published["gpu-3"]  # not offered to VMs: nothing to share
    assert devices(build_slices(inv, k8s_minor=36, generation=1)).keys() == {f"gpu-{i}" for i in range(8)}
