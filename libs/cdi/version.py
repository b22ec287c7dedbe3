"""The lowest ``cdiVersion`` that covers the fields a spec uses.

A runtime refuses a spec whose ``cdiVersion`` is below what its fields need, and an older runtime refuses a
version it does not know; the lowest covering version is the one every runtime that can use the spec accepts.
The rules are the CDI project's own (``specs-go/version.go``), for the fields this model has:

- 0.3.0: the earliest version still supported; device nodes, mounts, hooks, env;
- 0.4.0: ``mounts[].type``;
- 0.5.0: ``deviceNodes[].hostPath``, and device names that start with a digit;
- 0.6.0: annotations (spec or device), and dots in the class part of ``kind``;
- 0.7.0: ``additionalGids``;
- 0.8.0, 1.0.0, 1.1.0: nothing this model can express (1.1.0 added ``netDevices`` and Intel RDT fields).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from libs.cdi.spec import ContainerEdits, Spec

EARLIEST = "0.3.0"
KNOWN = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0")


def _edits(spec: Spec) -> Iterator[ContainerEdits]:
    yield spec.container_edits
    for device in spec.devices:
        yield device.container_edits


def _needs_040(spec: Spec) -> bool:
    return any(mount.type for edits in _edits(spec) for mount in edits.mounts)


def _needs_050(spec: Spec) -> bool:
    if any(device.name and not _is_letter(device.name[0]) for device in spec.devices):
        return True
    return any(node.host_path for edits in _edits(spec) for node in edits.device_nodes)


def _needs_060(spec: Spec) -> bool:
    if spec.annotations or any(device.annotations for device in spec.devices):
        return True
    _, _, device_class = spec.kind.partition("/")
    return "." in device_class


def _needs_070(spec: Spec) -> bool:
    return any(edits.additional_gids for edits in _edits(spec))


_RULES: tuple[tuple[str, Callable[[Spec], bool]], ...] = (
    ("0.7.0", _needs_070),
    ("0.6.0", _needs_060),
    ("0.5.0", _needs_050),
    ("0.4.0", _needs_040),
)


def minimum_version(spec: Spec) -> str:
    """The lowest version whose fields cover ``spec`` (whatever its ``cdi_version`` says now)."""
    return next((version for version, needed in _RULES if needed(spec)), EARLIEST)


def parse(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def covers(version: str, spec: Spec) -> bool:
    """Whether ``version`` is known and high enough for what ``spec`` uses."""
    return version in KNOWN and parse(version) >= parse(minimum_version(spec))


def _is_letter(char: str) -> bool:
    return char.isascii() and char.isalpha()
