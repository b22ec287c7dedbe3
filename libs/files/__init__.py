"""Files replaced whole or not at all, so that kill -9 never leaves a torn one.

Every piece of state gpudra keeps on a node (claim checkpoint, event outbox, CDI specs, the simulated machine,
the monitor ledger) is written the same way: a hidden temporary file in the same directory, renamed over the
target. After a crash of the writer a reader finds the old or the new content, never a torn file; the
temporaries a crash leaves behind are recognisable by name and removed by ``remove_temporaries`` before the
next write.

``durable`` (the default) also fsyncs the file and then the directory, so that a power cut keeps the old or the
new file too. State that a reboot voids anyway does not need it: a prepared claim's record and CDI spec describe
MIG devices, daemons and device nodes that do not survive the reboot, and are reset after one (the checkpoint
compares boot ids). Skipping the two fsyncs there takes about half a millisecond off each write and each
removal; what the page cache holds survives the death of any process.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

TEMPORARY_MARK = ".tmp-"


def temporary_for(path: Path) -> Path:
    """A fresh hidden name beside ``path``: concurrent writers never share one."""
    return path.with_name(f".{path.name}{TEMPORARY_MARK}{secrets.token_hex(4)}")


def is_temporary(name: str) -> bool:
    return name.startswith(".") and TEMPORARY_MARK in name


def write_atomically(
    path: Path, data: bytes, *, mode: int = 0o600, parent_mode: int | None = 0o700, durable: bool = True
) -> None:
    """Replace ``path`` with ``data`` (blocking; ``durable``: call it off the event loop); a missing directory is
    created with ``parent_mode`` (None: it must exist)."""
    temporary = temporary_for(path)
    try:
        fd = _create(temporary, mode, parent_mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    if durable:
        sync_directory(path.parent)


def _create(path: Path, mode: int, parent_mode: int | None) -> int:
    """Open a new file, making its directory first only when it is missing (one system call less per write)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        return os.open(path, flags, mode)
    except FileNotFoundError:
        if parent_mode is None:
            raise
    path.parent.mkdir(mode=parent_mode, parents=True, exist_ok=True)
    return os.open(path, flags, mode)


def remove_file(path: Path, *, durable: bool = True) -> bool:
    """Unlink ``path`` (``durable``: and make that survive a power cut); False when it was not there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    if durable:
        sync_directory(path.parent)
    return True


def sync_directory(path: Path) -> None:
    """Makes a rename or unlink itself durable, not only a file's content."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temporaries(directory: Path) -> int:
    """Delete the temporaries of writes a crash interrupted; call it before any write to ``directory`` starts."""
    if not directory.is_dir():
        return 0
    removed = 0
    for entry in directory.iterdir():
        if is_temporary(entry.name):
            with contextlib.suppress(OSError):
                entry.unlink()
                removed += 1
    return removed
