"""CDI names: ``kind`` (``vendor/class``), device names, qualified device ids and transient spec file names.

The character rules are the CDI parser's (``specs-go/parser.go``), checked before a spec is written, so a
name a runtime would refuse fails at prepare time with a message, not later inside the container runtime.
"""

from __future__ import annotations

import re

from libs.cdi.errors import CdiError

# Vendor and class: start with a letter, end with a letter or digit; letters, digits, '-', '_', '.' between.
_VENDOR_OR_CLASS = re.compile(r"[A-Za-z]([A-Za-z0-9_.-]*[A-Za-z0-9])?")
# Device names: start and end with a letter or digit; letters, digits, '-', '_', '.', ':' between.
_DEVICE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?")


def kind_problem(kind: str) -> str | None:
    vendor, slash, device_class = kind.partition("/")
    if not slash:
        return f"kind {kind!r} must be vendor/class"
    if not _VENDOR_OR_CLASS.fullmatch(vendor):
        return f"kind {kind!r}: vendor {vendor!r} must start with a letter and hold only letters, digits, - _ ."
    if not _VENDOR_OR_CLASS.fullmatch(device_class):
        return f"kind {kind!r}: class {device_class!r} must start with a letter and hold only letters, digits, - _ ."
    return None


def device_name_problem(name: str) -> str | None:
    if not _DEVICE.fullmatch(name):
        return f"device name {name!r} must start and end with a letter or digit and hold only letters, digits, - _ . :"
    return None


def check_kind(kind: str) -> str:
    problem = kind_problem(kind)
    if problem:
        raise CdiError(problem)
    return kind


def qualified_name(kind: str, device: str) -> str:
    """``vendor/class=device``: what a container (and the kubelet's ``cdi_device_ids``) names the device by."""
    return f"{kind}={device}"


def transient_spec_name(kind: str, transient_id: str) -> str:
    """``<vendor>-<class>_<id>``, the CDI convention for a spec that lives as long as one claim."""
    vendor, _, device_class = check_kind(kind).partition("/")
    if not _DEVICE.fullmatch(transient_id):
        raise CdiError(f"transient spec id {transient_id!r} is not usable in a file name")
    return f"{vendor}-{device_class}_{transient_id}"


def claim_kind(driver: str) -> str:
    """``k8s.<driver>/claim``: the kind of a DRA driver's per-claim specs (the reference driver's layout, so
    tooling that reads one reads the other)."""
    return f"k8s.{driver}/claim"


def claim_spec_name(driver: str, claim_uid: str) -> str:
    return transient_spec_name(claim_kind(driver), claim_uid)


def claim_spec_prefix(driver: str) -> str:
    """What every claim spec name of this driver starts with (to find leftovers)."""
    vendor, _, device_class = claim_kind(driver).partition("/")
    return f"{vendor}-{device_class}_"
