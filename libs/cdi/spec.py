"""The CDI spec as typed data: what a container runtime reads from ``/var/run/cdi``.

Field names follow the CDI JSON (``cdiVersion``, ``containerEdits``, ``deviceNodes``, ``hostPath``...), so a spec
encodes to exactly what the schema describes; empty optional fields are left out, because a runtime checks the
``cdiVersion`` against the fields present and an absent field needs no version. Only the fields gpudra writes
are modelled (no ``intelRdt`` or ``netDevices``): what cannot be built cannot be written by mistake.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

T = TypeVar("T")


class _Cdi(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel", forbid_unknown_fields=True):
    """Shared options: camelCase JSON names, defaults omitted, unknown fields refused on decode."""


class DeviceNode(_Cdi, frozen=True, kw_only=True):
    """A device node in the container at ``path``; ``host_path`` when the host's node lives elsewhere."""

    path: str
    host_path: str = ""
    type: str = ""
    major: int | None = None
    minor: int | None = None
    file_mode: int | None = None
    permissions: str = ""
    uid: int | None = None
    gid: int | None = None


class Mount(_Cdi, frozen=True, kw_only=True):
    host_path: str
    container_path: str
    options: tuple[str, ...] = ()
    type: str = ""


class Hook(_Cdi, frozen=True, kw_only=True):
    hook_name: str
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None


class ContainerEdits(_Cdi, frozen=True, kw_only=True):
    env: tuple[str, ...] = ()
    device_nodes: tuple[DeviceNode, ...] = ()
    mounts: tuple[Mount, ...] = ()
    hooks: tuple[Hook, ...] = ()
    additional_gids: tuple[int, ...] = ()

    def __add__(self, other: ContainerEdits) -> ContainerEdits:
        """Both edits, ``self`` first; a device node, mount or variable already present is not repeated."""
        return ContainerEdits(
            env=_union(self.env, other.env),
            device_nodes=_union(self.device_nodes, other.device_nodes),
            mounts=_union(self.mounts, other.mounts),
            hooks=_union(self.hooks, other.hooks),
            additional_gids=_union(self.additional_gids, other.additional_gids),
        )


class Device(_Cdi, frozen=True, kw_only=True):
    """One device a container can ask for by its qualified name ``<kind>=<name>``."""

    name: str
    container_edits: ContainerEdits
    annotations: dict[str, str] = {}


class Spec(_Cdi, frozen=True, kw_only=True):
    cdi_version: str
    kind: str
    devices: tuple[Device, ...]
    container_edits: ContainerEdits = ContainerEdits()
    annotations: dict[str, str] = {}


def _union(first: tuple[T, ...], second: tuple[T, ...]) -> tuple[T, ...]:
    return first + tuple(item for item in second if item not in first)


def encode(spec: Spec) -> bytes:
    """The spec as the JSON a runtime reads."""
    return msgspec.json.encode(spec)


def decode(data: bytes) -> Spec:
    """A spec read back (tests, ``gpudra`` tools); unknown fields are an error, as in the runtimes."""
    return msgspec.json.decode(data, type=Spec)


def to_document(spec: Spec) -> dict[str, object]:
    """The spec as plain JSON data, for schema validation."""
    document: dict[str, object] = msgspec.json.decode(encode(spec))
    return document
