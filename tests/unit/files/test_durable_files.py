"""libs.files: whole replacement, recognisable temporaries, idempotent removal."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from libs.files import is_temporary, remove_file, remove_temporaries, temporary_for, write_atomically


def test_a_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomically(target, b"old")
    write_atomically(target, b"new", mode=0o644)
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    assert stat.S_IMODE(target.stat().st_mode) & 0o600 == 0o600


def test_a_failed_write_keeps_the_old_content_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomically(target, b"old")
    (tmp_path / "blocker").mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomically(tmp_path / "blocker", b"x")  # the rename onto a directory fails
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "state.json"]


def test_only_temporaries_are_swept(tmp_path: Path) -> None:
    target = tmp_path / "claim.json"
    target.write_bytes(b"{}")
    leftover = temporary_for(target)
    leftover.write_bytes(b"half")
    (tmp_path / ".hidden").write_bytes(b"not ours")
    assert is_temporary(leftover.name)
    assert remove_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "claim.json"]
    assert remove_temporaries(tmp_path / "missing") == 0


def test_removing_twice_is_not_an_error(tmp_path: Path) -> None:
    target = tmp_path / "spec.json"
    target.write_bytes(b"{}")
    assert remove_file(target) is True
    assert remove_file(target) is False


@pytest.mark.parametrize(("durable", "fsyncs"), [(True, 3), (False, 0)])
def test_only_durable_writes_and_removals_pay_for_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool, fsyncs: int
) -> None:
    """A write syncs the file and the directory, a removal the directory; state a reboot voids skips them."""
    synced: list[int] = []
    real_fsync = os.fsync

    def counted(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counted)
    target = tmp_path / "new" / "record.json"
    write_atomically(target, b"x", durable=durable)
    assert target.read_bytes() == b"x"
    assert remove_file(target, durable=durable) is True
    assert len(synced) == fsyncs
