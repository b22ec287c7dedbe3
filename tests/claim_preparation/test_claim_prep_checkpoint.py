"""The checkpoint format: versioned, checksummed, atomic, private; damaged files reported and set aside."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import msgspec
import pytest

from libs.devices.model import TimeSliceInterval
from libs.events.catalogue import PreparedDevice
from services.claim_preparation.checkpoint import (
    FORMAT,
    CheckpointError,
    CheckpointStore,
    NewerFormat,
    decode,
    encode,
    read_boot_id,
    read_boot_time,
)
from services.claim_preparation.devices import FullGpu, MigTarget
from services.claim_preparation.record import ClaimRecord, MpsPlan, PlannedDevice, TimeSlicePlan

UID = "7d2e1c3a-0000-4000-8000-00000000000a"


def record(uid: str = UID, state: str = "PrepareCompleted") -> ClaimRecord:
    mig = MigTarget(
        name="gpu-3-mig-1g10gb-19-0",
        parent_minor=3,
        parent_uuid="GPU-3",
        profile="1g.10gb",
        placement_start=0,
        dynamic=True,
        uuid="MIG-1",
        gi_id=1,
        ci_id=0,
    )
    return ClaimRecord(
        uid=uid,
        namespace="default",
        name="train-0",
        state=state,  # type: ignore[arg-type]
        boot_id="boot-1",
        started_at=1.0,
        completed_at=2.0,
        devices=(
            PlannedDevice(request="gpu", pool="node-a", target=FullGpu(name="gpu-4", minor=4, uuid="GPU-4"), group="0"),
            PlannedDevice(request="mig", pool="node-a", target=mig, group="1", share_id="s"),
        ),
        sharing=(
            TimeSlicePlan(group="0", minors=(4,), interval=TimeSliceInterval.LONG),
            MpsPlan(group="1", directory="/mps/u/1", devices=(mig.name,), minors=(3,), pinned_limits={mig.name: 1}),
        ),
        cdi_spec=f"k8s.gpu.gpudra.io-claim_{uid}",
        prepared=(PreparedDevice(request_names=["gpu"], pool="node-a", device="gpu-4", cdi_device_ids=["k/c=x"]),),
    )


def test_records_round_trip_through_files_readable_by_the_owner_only(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "cp")
    store.save(record())
    path = store.path_of(UID)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = store.load()
    assert loaded.records == [record()]
    assert loaded.problems == []


def test_the_file_says_its_format_version_and_checksum() -> None:
    envelope = msgspec.json.decode(encode(record()))
    assert (envelope["format"], envelope["version"]) == (FORMAT, 1)
    assert envelope["checksum"].startswith("sha256:")
    assert decode(encode(record())) == record()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[: len(data) // 2], "not a checkpoint record"),
        (lambda data: data.replace(b"gpu-4", b"gpu-5"), "checksum mismatch"),
        (lambda data: data.replace(FORMAT.encode(), b"something/else"), "format 'something/else'"),
        (lambda data: b"", "not a checkpoint record"),
    ],
)
def test_damage_is_detected_and_the_file_set_aside(tmp_path: Path, damage: object, message: str) -> None:
    store = CheckpointStore(tmp_path)
    store.save(record())
    path = store.path_of(UID)
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(CheckpointError, match=message):
        decode(path.read_bytes())
    loaded = store.load()
    assert loaded.records == []
    [problem] = loaded.problems
    assert message in problem
    assert "moved to" in problem
    assert not path.exists()
    assert path.with_name(path.name + ".corrupt").exists()


def test_a_record_torn_before_this_boot_is_removed_quietly_and_a_later_one_set_aside(tmp_path: Path) -> None:
    """A power cut may tear a record (they are not fsynced); its claim was reset with the reboot, so the file
    goes without an error. Damage after the boot began is still a problem for a person to look at."""
    booted_at = 1_000_000.0
    store = CheckpointStore(tmp_path, booted_at=booted_at)
    torn, damaged = "7d2e1c3a-0000-4000-8000-00000000000b", "7d2e1c3a-0000-4000-8000-00000000000c"
    for uid, written_at in ((torn, booted_at - 60), (damaged, booted_at + 60)):
        store.save(record(uid))
        path = store.path_of(uid)
        path.write_bytes(path.read_bytes()[:40])
        os.utime(path, (written_at, written_at))
    loaded = store.load()
    assert loaded.records == []
    [problem] = loaded.problems
    assert damaged in problem
    assert "moved to" in problem
    assert sorted(p.name for p in store.claims_dir.iterdir()) == [f"{damaged}.json.corrupt"]


def test_the_boot_time_comes_from_the_kernel(tmp_path: Path) -> None:
    stat_file = tmp_path / "stat"
    stat_file.write_text("cpu  1 2 3\nbtime 1733390000\nprocesses 9\n")
    assert read_boot_time(stat_file) == 1733390000.0
    assert read_boot_time(tmp_path / "missing") == 0.0
    assert 0 < read_boot_time() <= time.time()


def test_a_record_from_a_newer_gpudra_is_left_alone(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(record())
    path = store.path_of(UID)
    path.write_bytes(path.read_bytes().replace(b'"version":1', b'"version":2'))
    with pytest.raises(NewerFormat, match="written by a newer gpudra"):
        decode(path.read_bytes())
    loaded = store.load()
    assert loaded.newer == {UID}
    assert path.exists()


def test_a_record_under_another_claims_name_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(record())
    store.path_of(UID).rename(store.path_of("other"))
    assert "holds the record of claim uid" in store.load().problems[0]


def test_an_interrupted_write_leaves_the_previous_record(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(record(state="PrepareStarted"))
    leftover = store.claims_dir / f".{UID}.json.tmp-dead"
    leftover.write_bytes(encode(record())[:40])  # what a crash in the middle of the next write leaves
    loaded = store.load()
    assert [r.state for r in loaded.records] == ["PrepareStarted"]
    assert not leftover.exists()


def test_removing_is_idempotent(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(record())
    store.remove(UID)
    store.remove(UID)
    assert store.load().records == []


def test_path_like_uids_never_name_a_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="path-like"):
        CheckpointStore(tmp_path).path_of("../../etc/passwd")


def test_boot_id(tmp_path: Path) -> None:
    (tmp_path / "boot_id").write_text("1234-abcd\n")
    assert read_boot_id(tmp_path / "boot_id") == "1234-abcd"
    assert read_boot_id(tmp_path / "missing") == "unknown"
