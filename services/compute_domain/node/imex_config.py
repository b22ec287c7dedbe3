"""The IMEX daemon's files for one ComputeDomain, rendered by pure functions.

Everything lives in the domain's directory ``<state>/computedomains/<uid>/``:

- ``imexd.cfg``, the daemon config (read by IMEX only at startup);
- ``nodes.cfg``, the peers, as DNS names rather than IPs: a peer whose IP changes is a new hosts entry and a
  SIGUSR1, not a restart. The names carry a hash of the domain's UID
  (``compute-domain-daemon-<hash>-NNNN``, one per slot, 18 slots), so a daemon of another domain that inherits
  a peer's IP cannot connect under a shared name (the reference driver's #1447 and its fix);
- ``hosts``, the mapping of those names: one ``<ip>\\t<name>`` line per member of this node's clique in the
  domain, and every unused slot mapped to the sentinel ``127.0.0.2``, so no name is left to resolve through DNS.

How IMEX resolves the names: ``nvidia-imex`` asks the host's resolver, so on a real node the service copies
the ``hosts`` content into the host's ``/etc/hosts`` between markers naming the domain
(``replace_hosts_block``, ``install_hosts_block``); each domain has its own block, and its own names, so
domains do not disturb each other or the rest of the file. The simulated daemon reads the domain's ``hosts``
file directly. Because the sentinel is a loopback address, the config names this node's own IP in
``BIND_INTERFACE_IP`` instead of letting IMEX pick the first name that resolves to a local interface.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

import msgspec

from libs.files import write_atomically

MAX_NODES = 18
"""Slots per IMEX domain (the reference's MAX_NODES_PER_IMEX_DOMAIN): the size of an NVL72 rack."""
SERVER_PORT = 50000
CMD_PORT = 50005
SENTINEL_IP = "127.0.0.2"
NAME_PREFIX = "compute-domain-daemon-"
HOSTS_MODE = 0o644  # every process on the node resolves through /etc/hosts


class ImexConfigError(ValueError):
    """A member or a file cannot be rendered; the message names the domain and what is wrong."""


class Member(msgspec.Struct, frozen=True, kw_only=True):
    """One IMEX daemon of this node's clique in the domain: its slot and the IP its peers reach it at."""

    node: str
    index: int
    ip_address: str


class DomainFiles(msgspec.Struct, frozen=True, kw_only=True):
    """Where one domain's IMEX files are on this node."""

    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "imexd.cfg"

    @property
    def nodes(self) -> Path:
        return self.directory / "nodes.cfg"

    @property
    def hosts(self) -> Path:
        return self.directory / "hosts"

    @property
    def log(self) -> Path:
        """The daemon's stdout and stderr (IMEX logs to stderr, as the reference configures it)."""
        return self.directory / "imexd.log"


def domain_files(state_dir: str | Path, domain_uid: str) -> DomainFiles:
    return DomainFiles(directory=Path(state_dir) / "computedomains" / domain_uid)


def domain_hash(domain_uid: str) -> str:
    """Short and stable: the same domain has the same names on every node and after every restart."""
    return hashlib.sha256(domain_uid.encode()).hexdigest()[:8]


def daemon_name(domain_uid: str, index: int) -> str:
    return f"{NAME_PREFIX}{domain_hash(domain_uid)}-{index:04d}"


def render_config(files: DomainFiles, bind_ip: str) -> str:
    """``imexd.cfg``: the reference's template values, with this node's IP and the domain's files."""
    _check_ip(bind_ip, f"this node's IMEX bind address {bind_ip!r}")
    settings = {
        "LOG_LEVEL": "4",
        "LOG_FILE_NAME": "",  # stderr, which goes to DomainFiles.log
        "STATS_FILE_NAME": str(files.directory / "imexd-stats.log"),
        "LOG_APPEND_TO_LOG": "0",
        "LOG_FILE_MAX_SIZE": "1024",
        "LOG_MAX_ROTATE_COUNT": "10",
        "LOG_USE_SYSLOG": "0",
        "DAEMONIZE": "0",
        "BIND_INTERFACE_IP": bind_ip,
        "SERVER_PORT": str(SERVER_PORT),
        "NETWORK_INTERFACE": "",
        "IMEX_NODE_CONFIG_FILE": str(files.nodes),
        "IMEX_WAIT_FOR_QUORUM": "RECOVERY",
        "IMEX_NODE_DISCONNECTED_GRACE_TIME": "-1",
        "IMEX_ENABLE_AUTH_ENCRYPTION": "0",
        "IMEX_AUTH_ENCRYPTION_MODE": "SSL_TLS",
        "IMEX_GSS_TIMEOUT_SEC": "30",
        "IMEX_GSS_RETRY_INTERVAL_SEC": "5",
        "IMEX_GSS_SHUTDOWN_ON_FAILURE": "0",
        "IMEX_CMD_ENABLED": "1",
        "IMEX_CMD_BIND_INTERFACE_IP": bind_ip,
        "IMEX_CMD_PORT": str(CMD_PORT),
        "IMEX_CMD_UNIX_DOMAIN_PATH": "",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def parse_config(text: str) -> dict[str, str]:
    """``KEY=value`` lines, comments and blank lines skipped: what IMEX reads back from ``imexd.cfg``."""
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def render_nodes(domain_uid: str) -> str:
    """``nodes.cfg``: every slot's name, fixed for the domain's life, so it is written once."""
    return "".join(f"{daemon_name(domain_uid, index)}\n" for index in range(MAX_NODES))


def render_hosts(domain_uid: str, members: Iterable[Member]) -> str:
    """The hosts mapping: each member's IP under its slot's name, the sentinel for every unused slot."""
    by_index: dict[int, Member] = {}
    for member in members:
        _check_member(domain_uid, member)
        if (other := by_index.get(member.index)) is not None:
            raise ImexConfigError(
                f"ComputeDomain {domain_uid}: nodes {other.node} and {member.node} both hold IMEX slot {member.index}"
            )
        by_index[member.index] = member
    lines = [f"# gpudra ComputeDomain {domain_uid}: IMEX daemons of this node's clique"]
    for index in range(MAX_NODES):
        ip = by_index[index].ip_address if index in by_index else SENTINEL_IP
        lines.append(f"{ip}\t{daemon_name(domain_uid, index)}")
    return "\n".join(lines) + "\n"


def parse_hosts(text: str) -> dict[str, str]:
    """Name -> IP of a hosts file's lines (the first mapping of a name wins, as the resolver does)."""
    mapping: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        for name in fields[1:]:
            mapping.setdefault(name, fields[0])
    return mapping


def _check_member(domain_uid: str, member: Member) -> None:
    if not 0 <= member.index < MAX_NODES:
        raise ImexConfigError(
            f"ComputeDomain {domain_uid}: node {member.node} has IMEX slot {member.index}, outside 0..{MAX_NODES - 1}"
        )
    _check_ip(member.ip_address, f"ComputeDomain {domain_uid}: node {member.node}'s IP {member.ip_address!r}")


def _check_ip(value: str, what: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ImexConfigError(f"{what} is not an IP address") from None


def markers(domain_uid: str) -> tuple[str, str]:
    return f"# BEGIN gpudra ComputeDomain {domain_uid}", f"# END gpudra ComputeDomain {domain_uid}"


def replace_hosts_block(text: str, domain_uid: str, block: str) -> str:
    """``text`` (an ``/etc/hosts``) with the domain's block replaced by ``block`` where it is (appended when it
    is not there yet); an empty block removes it.

    Only the lines between this domain's markers change, so the host's own entries and other domains' blocks
    stay as they are, and a name is never mapped twice (duplicates broke CUDA imports, reference #561).
    """
    begin, end = markers(domain_uid)
    lines = text.splitlines()
    start = stop = len(lines)  # no block yet: append one
    if begin in lines:
        start = lines.index(begin)
        if end not in lines[start:]:
            raise ImexConfigError(f"hosts file: {begin!r} has no {end!r} after it; fix the file by hand")
        stop = lines.index(end, start) + 1
    replacement = [begin, *block.splitlines(), end] if block else []
    return "".join(f"{line}\n" for line in [*lines[:start], *replacement, *lines[stop:]])


def install_hosts_block(path: Path, domain_uid: str, block: str) -> bool:
    """Put the domain's block into the hosts file at ``path`` (blocking); False when it was already there.

    Replaced atomically, so a resolver never reads half a file. That needs ``path`` to be a file of its own
    filesystem entry: a bind-mounted ``/etc/hosts`` (a container's) cannot be renamed over.
    """
    text = path.read_text() if path.exists() else ""
    updated = replace_hosts_block(text, domain_uid, block)
    if updated == text:
        return False
    mode = os.stat(path).st_mode & 0o777 if path.exists() else HOSTS_MODE
    write_atomically(path, updated.encode(), mode=mode, parent_mode=None)
    return True
