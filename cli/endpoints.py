"""``<state-dir>/endpoints.json``: how every ``gpudra`` command finds the running standalone system."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

FILENAME = "endpoints.json"


class KubeletPaths(msgspec.Struct, frozen=True, kw_only=True):
    """One node's kubelet directories: both drivers register in ``registration_dir``."""

    root: str
    registration_dir: str
    plugins_dir: str
    """The GPU driver's DRA socket directory."""
    compute_domain_plugins_dir: str = ""
    """The compute-domain driver's DRA socket directory ("" in files of gpudra before that driver)."""


class NodeEndpoints(msgspec.Struct, frozen=True, kw_only=True):
    """One simulated node of the system: where its kubelet sockets, state and credentials are, and its pids."""

    kubelet: KubeletPaths
    state_dir: str
    """Its services' ``GPUDRA_STATE_DIR``: checkpoint, simulated machine, health conditions."""
    cdi_dir: str
    credentials_dir: str
    """Its services' ``<service>.creds``, each confined to this node's subjects."""
    services: dict[str, int] = msgspec.field(default_factory=dict)
    """Service name → process id."""


class Endpoints(msgspec.Struct, frozen=True, kw_only=True):
    """The system; the node fields (``node``, ``kubelet``, ``cdi_dir``, ``services``) are its first node's,
    as they were before ``gpudra up --nodes``, so that readers of one node keep working."""

    nats_url: str
    nats_creds: str = ""
    """The operator's credentials file: what ``gpudra`` commands connect with."""
    extender_creds: str = ""
    """Read-only credentials for extenders (events and nothing else)."""
    credentials_dir: str = ""
    """Everyone's ``<principal>.creds``, minted by ``gpudra up`` (owner-only); with several nodes, each node's
    services have theirs in the node's own ``credentials_dir``."""
    node: str
    profile: str
    state_dir: str
    kubelet: KubeletPaths
    cdi_dir: str
    drivers: dict[str, str]
    services: dict[str, int]
    """Service name → process id: the first node's services and the nats-server."""
    logs_dir: str
    nodes: dict[str, NodeEndpoints] = msgspec.field(default_factory=dict)
    """Node name → its paths and pids, first node first (absent in files of gpudra before ``--nodes``)."""

    def node_names(self) -> list[str]:
        return list(self.nodes) or [self.node]

    def on(self, node: str = "") -> NodeEndpoints:
        """The paths of ``node`` (default: the first node); a node the system does not run is refused."""
        name = node or self.node
        if name in self.nodes:
            return self.nodes[name]
        if not self.nodes and name == self.node:
            return NodeEndpoints(
                kubelet=self.kubelet,
                state_dir=self.state_dir,
                cdi_dir=self.cdi_dir,
                credentials_dir=self.credentials_dir,
                services=self.services,
            )
        raise NoSuchNode(
            f"the gpudra in {self.state_dir} runs no node {name!r}; its nodes: {', '.join(self.node_names())}"
        )


class NotRunning(RuntimeError):
    pass


class NoSuchNode(NotRunning):
    """``--node`` names a node the running system does not simulate."""


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
