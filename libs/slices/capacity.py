"""Consumable capacity (KEP-5075): what a share of a device consumes, and whether it fits, as the scheduler says.

A device published with ``allowMultipleAllocations: true`` can be allocated to many claims at once; each
allocation (a *share*, with its own ``shareID``) consumes part of every capacity of the device, and the shares
together may not consume more than the device has. The rules here are the 1.36 scheduler's
(``structured/internal/incubating/consumable_capacity.go``), so the standalone allocator (``gpudra claim
create``) hands out what a cluster would, and claim_preparation checks at prepare what the scheduler promised:

- a capacity the request names is rounded up to what the device's request policy allows (``validRange``: to
  ``min``, then up to a whole ``step``; ``validValues``: the smallest one that is not less); a result over the
  policy's ``max`` or its largest value, or a name the device does not have, makes the device ineligible;
- a capacity the request does not name consumes the policy's ``default``, or the whole value without a policy;
- the shares of a device fit when, for every capacity, their sum is at most the device's value.

Quantities are whole numbers here, as the scheduler's ``Quantity.Value()`` (fractions round up).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from libs.claims.configapi.quantity import QuantityError, parse_quantity
from libs.slices.quantity import format_quantity


class CapacityError(ValueError):
    """A capacity or request that cannot be read, or a share the device cannot give; the message says which."""


class Range(msgspec.Struct, frozen=True, kw_only=True):
    min: int
    max: int | None = None
    step: int | None = None


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    default: int | None = None
    valid_values: tuple[int, ...] = ()
    valid_range: Range | None = None


class Capacity(msgspec.Struct, frozen=True, kw_only=True):
    value: int
    policy: Policy | None = None

    def render(self) -> dict[str, Any]:
        """The ``DeviceCapacity`` as a ResourceSlice carries it, quantities in canonical form."""
        rendered: dict[str, Any] = {"value": format_quantity(self.value)}
        if self.policy is not None:
            rendered["requestPolicy"] = _render_policy(self.policy)
        return rendered


Capacities = Mapping[str, Capacity]
Consumption = Mapping[str, int]


def _render_policy(policy: Policy) -> dict[str, Any]:
    rendered: dict[str, Any] = {}
    if policy.default is not None:
        rendered["default"] = format_quantity(policy.default)
    if policy.valid_values:
        rendered["validValues"] = [format_quantity(v) for v in policy.valid_values]
    if policy.valid_range is not None:
        bounds = {"min": policy.valid_range.min, "max": policy.valid_range.max, "step": policy.valid_range.step}
        rendered["validRange"] = {key: format_quantity(v) for key, v in bounds.items() if v is not None}
    return rendered


# --- reading a device of a ResourceSlice ------------------------------------------------------------------


def read_capacities(device: Mapping[str, Any]) -> dict[str, Capacity]:
    """The capacities of a slice's device (``spec.devices[]``), or ``CapacityError`` naming the bad one."""
    capacities: dict[str, Capacity] = {}
    for name, entry in (device.get("capacity") or {}).items():
        where = f"device {device.get('name')} capacity {name}"
        if not isinstance(entry, Mapping):
            raise CapacityError(f"{where}: not an object")
        policy = entry.get("requestPolicy")
        capacities[name] = Capacity(
            value=quantity(entry.get("value"), where),
            policy=_read_policy(policy, where) if isinstance(policy, Mapping) else None,
        )
    return capacities


def _read_policy(policy: Mapping[str, Any], where: str) -> Policy:
    bounds = policy.get("validRange")
    valid_range = None
    if isinstance(bounds, Mapping):
        valid_range = Range(
            min=quantity(bounds.get("min"), f"{where} validRange.min"),
            max=_optional(bounds.get("max"), f"{where} validRange.max"),
            step=_optional(bounds.get("step"), f"{where} validRange.step"),
        )
    return Policy(
        default=_optional(policy.get("default"), f"{where} default"),
        valid_values=tuple(quantity(v, f"{where} validValues") for v in policy.get("validValues") or ()),
        valid_range=valid_range,
    )


def _optional(value: object, where: str) -> int | None:
    return None if value is None else quantity(value, where)


def quantity(value: object, where: str) -> int:
    """A quantity (``40Gi``, ``"50"``, 8) as a whole number, or ``CapacityError`` saying ``where``."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise CapacityError(f"{where}: {value!r} is not a quantity")
    try:
        return parse_quantity(value)
    except QuantityError as exc:
        raise CapacityError(f"{where}: {exc}") from None


# --- the scheduler's rules (pure) --------------------------------------------------------------------------


def consumption(requests: Mapping[str, int], capacities: Capacities, device: str) -> dict[str, int]:
    """What one share of ``device`` consumes of each of its capacities for ``requests``, or ``CapacityError``."""
    unknown = sorted(set(requests) - set(capacities))
    if unknown:
        raise CapacityError(f"device {device} has no capacity {', '.join(unknown)} (it has {_names(capacities)})")
    return {
        name: _consumed(name, capacity, requests.get(name), device) for name, capacity in sorted(capacities.items())
    }


def _consumed(name: str, capacity: Capacity, request: int | None, device: str) -> int:
    policy = capacity.policy
    if request is None:
        return capacity.value if policy is None or policy.default is None else policy.default
    if policy is None:
        return request
    if policy.valid_values:
        allowed = [value for value in policy.valid_values if value >= request]
        if not allowed:
            raise CapacityError(
                f"device {device}: {name} {format_quantity(request)} is over the largest value it gives "
                f"({format_quantity(policy.valid_values[-1])})"
            )
        return min(allowed)
    if policy.valid_range is not None:
        return _in_range(name, policy.valid_range, request, capacity.value, device)
    return request


def _in_range(name: str, bounds: Range, request: int, value: int, device: str) -> int:
    amount = max(request, bounds.min)
    if bounds.step:
        amount = bounds.min + math.ceil((amount - bounds.min) / bounds.step) * bounds.step
    limit = bounds.max if bounds.max is not None else value
    if amount > limit:
        raise CapacityError(
            f"device {device}: {name} {format_quantity(request)} is over what one share may have "
            f"({format_quantity(limit)})"
        )
    return amount


def fit_problem(
    device: str, capacities: Capacities, held: Iterable[tuple[str, Consumption]], wanted: Consumption
) -> str | None:
    """Why a share consuming ``wanted`` does not fit beside ``held`` ((holder, consumption) pairs), or None."""
    held = list(held)
    for name, capacity in sorted(capacities.items()):
        used = sum(consumed.get(name, 0) for _, consumed in held)
        if used + wanted.get(name, 0) > capacity.value:
            holders = ", ".join(f"{who} ({format_quantity(consumed.get(name, 0))})" for who, consumed in held)
            return (
                f"device {device} has {format_quantity(capacity.value)} {name}, "
                f"{format_quantity(used)} of it held by {holders or 'no share'}: "
                f"{format_quantity(wanted.get(name, 0))} more does not fit "
                f"({format_quantity(max(0, capacity.value - used))} left)"
            )
    return None


def rendered(consumed: Consumption) -> dict[str, str]:
    """A ``consumedCapacity`` as an allocation result carries it."""
    return {name: format_quantity(amount) for name, amount in sorted(consumed.items())}


def _names(capacities: Capacities) -> str:
    return ", ".join(sorted(capacities)) or "none"
