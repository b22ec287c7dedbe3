import msgspec
import pytest

from libs.devices.events import DeviceEvent, EccEvent, GpuLostEvent, RecoveryActionEvent, XidEvent
from libs.devices.model import Inventory, MigPlacement, TimeSliceInterval
from libs.devices.names import gpu_device_name, mig_device_name, profile_token
from libs.devices.simulated.machine import build_hardware
from libs.devices.simulated.profiles import load_profile


def test_device_names_follow_the_reference_format() -> None:
    assert gpu_device_name(3) == "gpu-3"
    assert mig_device_name(3, "1g.10gb", 19, 6) == "gpu-3-mig-1g10gb-19-6"
    assert profile_token("1g.10gb+me") == "1g10gbme"


def test_names_come_from_minor_numbers_not_indexes() -> None:
    profile = msgspec.structs.replace(load_profile("dgx-a100"), minor_numbers=(7, 6, 5, 4, 3, 2, 1, 0))
    gpus = build_hardware("n1", profile).gpus
    assert [(g.index, g.name) for g in gpus[:2]] == [(0, "gpu-7"), (1, "gpu-6")]


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [((0, 4), (4, 4), False), ((0, 4), (3, 1), True), ((2, 2), (0, 8), True), ((6, 2), (0, 6), False)],
)
def test_placements_overlap_on_shared_memory_slices(a: tuple[int, int], b: tuple[int, int], overlap: bool) -> None:
    assert MigPlacement(*a).overlaps(MigPlacement(*b)) is overlap
    assert MigPlacement(*b).overlaps(MigPlacement(*a)) is overlap


def test_inventory_round_trips_through_json_and_hashes_by_content() -> None:
    hardware = build_hardware("n1", load_profile("mixed-mig"))
    inventory = Inventory(
        node="n1",
        backend="simulated",
        driver_version="570.133.20",
        cuda_driver_version="12.8",
        gpus=hardware.gpus,
        mig_devices=hardware.mig_devices,
        mig_profiles=hardware.mig_profiles,
    )
    decoded = msgspec.json.decode(msgspec.json.encode(inventory), type=Inventory)
    assert decoded == inventory
    assert decoded.content_hash() == inventory.content_hash()
    changed = msgspec.structs.replace(inventory, mig_devices=inventory.mig_devices[1:])
    assert changed.content_hash() != inventory.content_hash()


def test_events_are_a_tagged_union_in_json() -> None:
    events: list[DeviceEvent] = [
        XidEvent(minor=0, uuid="GPU-a", xid=79, gpu_instance_id=3, compute_instance_id=0),
        EccEvent(minor=1, uuid="GPU-b", double_bit=True),
        GpuLostEvent(minor=2, uuid="GPU-c"),
        RecoveryActionEvent(minor=3, uuid="GPU-d", action=2),
    ]
    for event in events:
        data = msgspec.json.encode(event)
        assert msgspec.json.decode(data, type=DeviceEvent) == event
    assert msgspec.json.decode(msgspec.json.encode(events[0]))["type"] == "xid"


def test_time_slice_values_are_what_nvidia_smi_takes() -> None:
    assert [i.nvidia_smi_value for i in TimeSliceInterval] == [0, 1, 2, 3]
