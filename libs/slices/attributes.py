"""Device attributes and capacities: what CEL selectors and matchAttribute constraints see.

Unqualified names live in the driver's domain (`device.attributes["gpu.gpudra.io"].productName`); the
`resource.kubernetes.io/` ones are the standard attributes other drivers publish too, so a GPU and a NIC
can be aligned on PCIe root or NUMA node. A value the API server would reject (a string over 64
characters, a version that is not semver) is left out with a warning instead of making the whole slice
invalid: a truncated value would be one the device does not have, and a selector could match it wrongly.
"""

import logging
import re
from collections.abc import Iterable
from typing import Literal

from libs.devices.model import Gpu, MigProfile
from libs.slices.quantity import format_quantity

logger = logging.getLogger(__name__)

STANDARD = "resource.kubernetes.io"
MAX_STRING = 64

Kind = Literal["string", "int", "bool", "version"]
Entry = tuple[str, Kind, str | int | bool | None]
Attributes = dict[str, dict[str, str | int | bool]]

_VERSION = re.compile(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?$")


def semver(text: str) -> str | None:
    """NVIDIA writes `535.104.05` and `9.0`; semver wants `535.104.5` and `9.0.0`. None if it is not numeric."""
    match = _VERSION.match(text.strip())
    if match is None:
        return None
    return ".".join(str(int(part or 0)) for part in match.groups())


def gpu_attributes(gpu: Gpu, shared: Attributes) -> Attributes:
    """`shared` is shared_attributes(gpu), computed once for the GPU and all its MIG devices."""
    entries: list[Entry] = [
        ("type", "string", "gpu"),
        ("uuid", "string", gpu.uuid),
        ("index", "int", gpu.index),
        ("minor", "int", gpu.minor),
        (f"{STANDARD}/pciBusID", "string", gpu.pci_bus_id),
    ]
    return encode(gpu.name, entries) | shared


def mig_attributes(name: str, gpu: Gpu, profile: MigProfile, uuid: str | None, shared: Attributes) -> Attributes:
    """`uuid` only for a MIG device that exists (static MIG); a partition gets one when it is created."""
    entries: list[Entry] = [
        ("type", "string", "mig"),
        ("uuid", "string", uuid),
        ("parentUUID", "string", gpu.uuid),
        ("parentMinor", "int", gpu.minor),
        ("profile", "string", profile.name),
    ]
    return encode(name, entries) | shared


def shared_attributes(gpu: Gpu) -> Attributes:
    """What a MIG device shares with its GPU: model, versions and place in the machine."""
    return encode(gpu.name, _shared_entries(gpu))


def _shared_entries(gpu: Gpu) -> list[Entry]:
    return [
        ("productName", "string", gpu.product_name),
        ("brand", "string", gpu.brand),
        ("architecture", "string", gpu.architecture),
        ("cudaComputeCapability", "version", gpu.cuda_compute_capability),
        ("driverVersion", "version", gpu.driver_version),
        ("cudaDriverVersion", "version", gpu.cuda_driver_version),
        ("addressingMode", "string", gpu.addressing_mode),
        ("numaNode", "int", gpu.numa_node),
        (f"{STANDARD}/numaNode", "int", gpu.numa_node),
        (f"{STANDARD}/pcieRoot", "string", gpu.pcie_root),
        ("cliqueID", "string", gpu.fabric.clique if gpu.fabric else None),
    ]


def encode(device: str, entries: Iterable[Entry]) -> Attributes:
    """The API's one-of-four value shape, skipping absent values and values the API server would reject."""
    attributes: Attributes = {}
    for name, kind, value in entries:
        accepted = _acceptable(device, name, kind, value)
        if accepted is not None:
            attributes[name] = {kind: accepted}
    return attributes


def _acceptable(device: str, name: str, kind: Kind, value: str | int | bool | None) -> str | int | bool | None:
    if value is None:
        return None
    if kind == "version":
        return _version(device, name, str(value))
    if kind == "string" and len(str(value)) > MAX_STRING:
        _skip(device, name, value, f"longer than {MAX_STRING} characters")
        return None
    return value


def _version(device: str, name: str, text: str) -> str | None:
    version = semver(text)
    if version is None:
        _skip(device, name, text, "not a version number")
    return version


def _skip(device: str, name: str, value: object, why: str) -> None:
    logger.warning(
        "device %s: leaving out attribute %s (%s), which the API server would reject",
        device,
        name,
        why,
        extra={"device": device, "attribute": name, "value": str(value), "reason": why},
    )


def gpu_capacity(gpu: Gpu) -> dict[str, dict[str, str]]:
    return {"memory": {"value": format_quantity(gpu.memory_bytes)}}


def mig_capacity(profile: MigProfile) -> dict[str, dict[str, str]]:
    values = {
        "multiprocessors": profile.multiprocessors,
        "copyEngines": profile.copy_engines,
        "decoders": profile.decoders,
        "encoders": profile.encoders,
        "jpegEngines": profile.jpeg_engines,
        "ofaEngines": profile.ofa_engines,
        "memory": profile.memory_bytes,
    }
    return {name: {"value": format_quantity(value)} for name, value in values.items()}
