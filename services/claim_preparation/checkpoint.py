"""The checkpoint: one file per prepared claim, versioned, checksummed, written so that kill -9 cannot tear it.

Why one file per claim rather than one file for the node: a write touches only its own claim (claims on
different GPUs checkpoint in parallel), and a damaged file loses one claim's record, not the node's.

File format (``<dir>/claims/<uid>.json``)::

    {"format": "gpudra.io/claim-checkpoint", "version": 1, "checksum": "sha256:<hex of the record bytes>",
     "record": {...}}

- The checksum covers the exact bytes of ``record``: a file that decodes but was changed or half-copied is
  caught. The record carries the node's boot id; records of an earlier boot are reset by the service.
- ``version`` says how to read ``record``; a later format adds a reader that converts the old one, so an
  upgrade reads an old checkpoint instead of misreading it (the reference driver's users lost claims to that).
  A file from a newer gpudra is reported and left alone, never overwritten.
- Writes go to a temporary file renamed over the record: after kill -9 the old or the new record is there,
  whole. They are not fsynced (see ``libs.files``): a record describes MIG devices, daemons and specs that only
  live until the next reboot, and the service resets records of an earlier boot. A power cut may tear a record
  written just before it; such a file (unreadable, and last written before this boot began) is removed with a
  note, since its claim was reset with the reboot. A file that cannot be read otherwise is moved aside to
  ``<uid>.json.corrupt`` (kept for a person to look at) and reported; the claim counts as not prepared, so the
  kubelet's next prepare starts afresh.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from libs.claims.allocation import check_uid
from libs.files import remove_file, remove_temporaries, write_atomically
from services.claim_preparation.errors import BadClaimRef
from services.claim_preparation.record import ClaimRecord

log = logging.getLogger(__name__)

FORMAT = "gpudra.io/claim-checkpoint"
VERSION = 1
SUFFIX = ".json"
CORRUPT_SUFFIX = ".corrupt"


class CheckpointError(Exception):
    """A checkpoint file cannot be used; the message names the file and says why."""


class NewerFormat(CheckpointError):
    """A record written by a newer gpudra: left in place for that version, never overwritten."""


class _Envelope(msgspec.Struct, frozen=True, kw_only=True):
    format: str
    version: int
    checksum: str
    record: msgspec.Raw


def _read_v1(raw: bytes) -> ClaimRecord:
    return msgspec.json.decode(raw, type=ClaimRecord)


_READERS: dict[int, Callable[[bytes], ClaimRecord]] = {1: _read_v1}
"""Format version -> reader returning the current record type (older versions convert here)."""


def checksum(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def encode(record: ClaimRecord) -> bytes:
    body = msgspec.json.encode(record)
    envelope = _Envelope(format=FORMAT, version=VERSION, checksum=checksum(body), record=msgspec.Raw(body))
    return msgspec.json.encode(envelope)


def decode(data: bytes, source: str = "checkpoint") -> ClaimRecord:
    """The record in ``data``, or ``CheckpointError`` saying what is wrong with it."""
    try:
        envelope = msgspec.json.decode(data, type=_Envelope)
    except msgspec.DecodeError as exc:
        raise CheckpointError(f"{source}: not a checkpoint record ({exc})") from None
    if envelope.format != FORMAT:
        raise CheckpointError(f"{source}: format {envelope.format!r}, expected {FORMAT!r}")
    reader = _READERS.get(envelope.version)
    if reader is None:
        raise NewerFormat(
            f"{source}: format version {envelope.version} was written by a newer gpudra; this one reads "
            f"{', '.join(map(str, sorted(_READERS)))}"
        )
    body = bytes(envelope.record)
    if checksum(body) != envelope.checksum:
        raise CheckpointError(f"{source}: checksum mismatch (the file was damaged or edited)")
    try:
        return reader(body)
    except msgspec.DecodeError as exc:
        raise CheckpointError(f"{source}: record version {envelope.version} is invalid ({exc})") from None


@dataclass
class Loaded:
    records: list[ClaimRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    newer: set[str] = field(default_factory=set)
    """UIDs whose records a newer gpudra wrote: not ours to change."""


class CheckpointStore:
    """``<directory>/claims/<uid>.json``, created 0700/0600: the state is nobody else's business.

    ``booted_at`` (seconds since the epoch; default: the kernel's) tells a record torn by a power cut from
    one damaged since."""

    def __init__(self, directory: Path | str, *, booted_at: float | None = None) -> None:
        self.directory = Path(directory)
        self.claims_dir = self.directory / "claims"
        self.booted_at = read_boot_time() if booted_at is None else booted_at

    def path_of(self, uid: str) -> Path:
        try:
            return self.claims_dir / f"{check_uid(uid)}{SUFFIX}"
        except BadClaimRef as exc:
            raise CheckpointError(f"cannot keep a record for claim uid {uid!r}: {exc.problem}") from None

    def save(self, record: ClaimRecord) -> None:
        """Replace the claim's record atomically and durably (blocking: call it off the event loop)."""
        target = self.path_of(record.uid)
        try:
            write_atomically(target, encode(record), durable=False)
        except OSError as exc:
            raise CheckpointError(f"{target}: cannot write it: {exc}") from exc

    def remove(self, uid: str) -> None:
        target = self.path_of(uid)
        try:
            remove_file(target, durable=False)
        except OSError as exc:
            raise CheckpointError(f"{target}: cannot remove it: {exc}") from exc

    def load(self) -> Loaded:
        """Every readable record; unreadable files are moved aside and reported, temporary leftovers removed."""
        loaded = Loaded()
        if not self.claims_dir.is_dir():
            return loaded
        remove_temporaries(self.claims_dir)  # writes a crash interrupted; the previous records are intact
        for path in sorted(self.claims_dir.iterdir()):
            if path.name.endswith(SUFFIX):
                self._load_one(path, loaded)
        return loaded

    def _load_one(self, path: Path, loaded: Loaded) -> None:
        try:
            record = decode(path.read_bytes(), str(path))
            if path.name != f"{record.uid}{SUFFIX}":
                raise CheckpointError(f"{path}: holds the record of claim uid {record.uid}")
        except NewerFormat as exc:
            loaded.newer.add(path.name.removesuffix(SUFFIX))
            loaded.problems.append(f"{exc}; left in place")
            return
        except (CheckpointError, OSError) as exc:
            if self._before_boot(path):
                with contextlib.suppress(OSError):
                    path.unlink()
                log.info("removed a checkpoint record torn before this boot; the reboot reset its claim: %s", exc)
                return
            aside = path.with_name(path.name + CORRUPT_SUFFIX)
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            loaded.problems.append(f"{exc}; moved to {aside.name}, the claim counts as not prepared")
            return
        loaded.records.append(record)

    def _before_boot(self, path: Path) -> bool:
        try:
            return path.stat().st_mtime < self.booted_at
        except OSError:
            return False


def read_boot_time(stat: Path | str = "/proc/stat") -> float:
    """When this boot began (``btime``), in seconds since the epoch; 0 (nothing is older) where unknown."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(stat).read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


def read_boot_id(path: Path | str) -> str:
    """This boot's id; "unknown" (never reset) where the system has none, with a warning."""
    try:
        return Path(path).read_text().strip() or "unknown"
    except OSError as exc:
        log.warning("no boot id; the checkpoint will not be reset after a reboot", extra={"error": str(exc)})
        return "unknown"
