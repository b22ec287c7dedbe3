"""``<state-dir>/endpoints.json``: how every ``gpudra`` command finds the running standalone system."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

FILENAME = "endpoints.json"


class KubeletPaths(msgspec.Struct, frozen=True, kw_only=True):
    root: str
    registration_dir: str
    plugins_dir: str


class Endpoints(msgspec.Struct, frozen=True, kw_only=True):
    nats_url: str
    nats_creds: str = ""
    """The operator's credentials file: what ``gpudra`` commands connect with."""
    extender_creds: str = ""
    """Read-only credentials for extenders (events and nothing else)."""
    credentials_dir: str = ""
    """Each service's ``<service>.creds``, minted by ``gpudra up`` (owner-only)."""
    node: str
    profile: str
    state_dir: str
    kubelet: KubeletPaths
    cdi_dir: str
    drivers: dict[str, str]
    services: dict[str, int]
    """Service name → process id."""
    logs_dir: str


class NotRunning(RuntimeError):
    pass


def write(endpoints: Endpoints) -> Path:
    """Atomically, readable by the owner only: it names the bus of this system."""
    path = Path(endpoints.state_dir) / FILENAME
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(msgspec.json.format(msgspec.json.encode(endpoints)) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    return path


def read(state_dir: str | Path) -> Endpoints:
    path = Path(state_dir) / FILENAME
    try:
        return msgspec.json.decode(path.read_bytes(), type=Endpoints)
    except FileNotFoundError:
        raise NotRunning(
            f"no running gpudra found: {path} does not exist (start one with `gpudra up --state-dir "
            f"{state_dir}`, or pass --nats-url)"
        ) from None
    except msgspec.DecodeError as exc:
        raise NotRunning(f"{path} is damaged: {exc}") from None


def remove(state_dir: str | Path) -> None:
    (Path(state_dir) / FILENAME).unlink(missing_ok=True)
