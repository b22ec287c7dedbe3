"""Whole GPUs shared by consumable capacity (KEP-5075): what such a GPU offers, and what a share of it gets.

With discovery's ``consumable_capacity`` on, a GPU with MIG off is published with ``allowMultipleAllocations:
true`` and two capacities a claim can ask part of:

- ``memory``: the GPU's memory, given in whole GiB (``validRange`` from 1Gi in steps of 1Gi); a share that does
  not ask for memory gets all of it (``default``), so nobody shares a GPU without meaning to;
- ``computePercent``: 100, given in whole percents; a share that does not ask gets 0, meaning no cap of its own.

claim_preparation enforces a share with MPS (one control daemon per GPU, every share a client of it): the
memory it consumed becomes the client's pinned device memory limit, its percent the client's active thread
percentage. This module is the one place both sides read those rules from, so what discovery offers and what a
node enforces cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from libs.slices.capacity import Capacity, Policy, Range

MEMORY = "memory"
COMPUTE = "computePercent"
MEMORY_STEP = 2**30
WHOLE_PERCENT = 100


def shared_gpu_capacities(memory_bytes: int) -> dict[str, Capacity]:
    """The capacities a shareable GPU with ``memory_bytes`` of memory publishes, request policies included.

    The API server wants a range's ``max`` and ``default`` to be ``min`` plus whole steps, and ``min + step`` at
    most the value; a GPU under 2 GiB (none is made) would publish its memory without a policy."""
    compute = Capacity(
        value=WHOLE_PERCENT, policy=Policy(default=0, valid_range=Range(min=0, max=WHOLE_PERCENT, step=1))
    )
    whole = memory_bytes // MEMORY_STEP * MEMORY_STEP
    if whole < 2 * MEMORY_STEP:
        return {MEMORY: Capacity(value=memory_bytes), COMPUTE: compute}
    policy = Policy(default=whole, valid_range=Range(min=MEMORY_STEP, max=whole, step=MEMORY_STEP))
    return {MEMORY: Capacity(value=memory_bytes, policy=policy), COMPUTE: compute}


def shareable(device: Mapping[str, Any], memory_bytes: int) -> dict[str, Any]:
    """A full GPU's slice device, made shareable."""
    capacity = {name: value.render() for name, value in shared_gpu_capacities(memory_bytes).items()}
    return {**device, "allowMultipleAllocations": True, "capacity": capacity}


def memory_limit(consumed: Mapping[str, int], memory_bytes: int) -> int:
    """The pinned device memory limit of a share: what it consumed (all of it when the allocation says nothing)."""
    return consumed.get(MEMORY, memory_bytes)


def thread_percentage(consumed: Mapping[str, int]) -> int | None:
    """The active thread percentage of a share; None when it asked for no compute of its own (no cap)."""
    percent = consumed.get(COMPUTE, 0)
    return min(percent, WHOLE_PERCENT) if percent > 0 else None
