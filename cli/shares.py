"""The standalone allocator's part for consumable capacity: a share of a device, or a refusal, as a scheduler would.

``gpudra claim create --device gpu-0 --memory 20Gi`` plays the scheduler for a device published with
``allowMultipleAllocations``: it computes what the share consumes (``libs.slices.capacity``, the scheduler's
rules), refuses one that does not fit beside the shares other claims hold, and writes the result with a fresh
``shareID`` and its ``consumedCapacity``. On a device that is not shareable, capacity requests only select: the
device must have at least what is asked, and is allocated whole. All of it is pure over the published devices
and the stored claims; ``cli.claims`` reads those and writes the claim.

Two ``claim create`` runs at the same moment could both see room for one share; claim_preparation checks again
at prepare, under the GPU's lock, and refuses the one that does not fit.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from libs.slices.capacity import CapacityError, consumption, fit_problem, quantity, read_capacities, rendered
from libs.slices.quantity import format_quantity

Device = Mapping[str, Any]
Claim = Mapping[str, Any]


class AllocationRefused(ValueError):
    """The device cannot be given as asked; the message says why, naming the claims in the way."""


def parse_capacity_requests(pairs: Sequence[str], memory: str | None) -> dict[str, int]:
    """``NAME=QUANTITY`` pairs (and ``--memory``) as whole numbers; ``AllocationRefused`` for one that is not."""
    requests: dict[str, int] = {}
    for pair in [*pairs, *([f"memory={memory}"] if memory is not None else [])]:
        name, sep, amount = pair.partition("=")
        if not sep or not name:
            raise AllocationRefused(f"--capacity {pair!r}: write NAME=QUANTITY, e.g. memory=20Gi")
        if name in requests:
            raise AllocationRefused(f"capacity {name} is asked for twice")
        try:
            requests[name] = quantity(amount, f"capacity {name}")
        except CapacityError as exc:
            raise AllocationRefused(str(exc)) from None
    return requests


def holders(claims: Sequence[Claim], driver: str, pool: str, device: str) -> list[tuple[str, Mapping[str, Any]]]:
    """(``namespace/name``, result) of every stored claim's allocation result for this device."""
    found = []
    for claim in claims:
        meta = claim.get("metadata") or {}
        allocation = (claim.get("status") or {}).get("allocation") or {}
        for result in (allocation.get("devices") or {}).get("results") or ():
            if (result.get("driver"), result.get("pool"), result.get("device")) == (driver, pool, device):
                found.append((f"{meta.get('namespace')}/{meta.get('name')}", result))
    return found


def whole_devices(wanted: Sequence[tuple[str, str]], *, node: str, driver: str) -> list[dict[str, Any]]:
    """The results for ``wanted`` ((request, device) pairs) allocated whole, in the node's pool."""
    return [{"request": request, "driver": driver, "pool": node, "device": name} for request, name in wanted]


def allocate(
    wanted: Sequence[tuple[str, str]],
    requests: Mapping[str, int],
    published: Mapping[str, Device],
    claims: Sequence[Claim],
    *,
    node: str,
    driver: str,
) -> list[dict[str, Any]]:
    """The allocation results for ``wanted`` ((request, device) pairs), each share fitted beside the others."""
    results: list[dict[str, Any]] = []
    for whole in whole_devices(wanted, node=node, driver=driver):
        name = whole["device"]
        device = published[name]
        if device.get("allowMultipleAllocations"):
            held = holders(claims, driver, node, name) + [("this claim", r) for r in results if r["device"] == name]
            results.append(whole | _share(device, requests, held))
        else:
            _check_selects(device, requests)
            results.append(whole)
    return results


def _share(
    device: Device, requests: Mapping[str, int], held: Sequence[tuple[str, Mapping[str, Any]]]
) -> dict[str, Any]:
    name = str(device.get("name"))
    whole = [who for who, result in held if not result.get("shareID")]
    if whole:
        raise AllocationRefused(f"device {name} is allocated whole to claim {', '.join(whole)}; it cannot be shared")
    try:
        capacities = read_capacities(device)
        consumed = consumption(requests, capacities, name)
        taken = [(who, _consumed(result, name)) for who, result in held]
    except CapacityError as exc:
        raise AllocationRefused(str(exc)) from None
    problem = fit_problem(name, capacities, taken, consumed)
    if problem:
        raise AllocationRefused(problem)
    return {"shareID": str(uuid.uuid4()), "consumedCapacity": rendered(consumed)}


def _consumed(result: Mapping[str, Any], device: str) -> dict[str, int]:
    return {
        name: quantity(amount, f"device {device} share {result.get('shareID')} consumedCapacity.{name}")
        for name, amount in (result.get("consumedCapacity") or {}).items()
    }


def _check_selects(device: Device, requests: Mapping[str, int]) -> None:
    """On a device that is not shareable a capacity request only selects: the device must have that much."""
    if not requests:
        return
    name = str(device.get("name"))
    try:
        capacities = read_capacities(device)
    except CapacityError as exc:
        raise AllocationRefused(str(exc)) from None
    for capacity, amount in sorted(requests.items()):
        have = capacities.get(capacity)
        if have is None or have.value < amount:
            what = f"has {format_quantity(have.value)}" if have else "has none"
            raise AllocationRefused(f"device {name} {what} of {capacity}, not the {format_quantity(amount)} asked")
