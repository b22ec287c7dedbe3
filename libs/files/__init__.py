"""Files that survive kill -9 and power loss: replaced whole or not at all.

Every piece of state gpudra keeps on a node (claim checkpoint, event outbox, CDI specs, the simulated machine,
the monitor ledger) is written the same way: a hidden temporary file in the same directory, fsynced, renamed
over the target, and the directory fsynced so the rename itself is durable. After a crash a reader finds the
old or the new content, never a torn file; the temporaries a crash leaves behind are recognisable by name and
removed by ``remove_temporaries`` before the next write.
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


def write_atomically(path: Path, data: bytes, *, mode: int = 0o600, parent_mode: int | None = 0o700) -> None:
    """Replace ``path`` with ``data`` durably (blocking: call it off the event loop); the directory is created
    with ``parent_mode`` if missing (None: it must exist)."""
    if parent_mode is not None:
        path.parent.mkdir(mode=parent_mode, parents=True, exist_ok=True)
    temporary = temporary_for(path)
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    sync_directory(path.parent)


def remove_durably(path: Path) -> bool:
    """Unlink ``path`` and make that durable; False when it was not there."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
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
