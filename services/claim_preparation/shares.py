"""A claim's share of a GPU shared by consumable capacity (KEP-5075): planned and checked, pure.

The scheduler gives each share a ``shareID`` and writes what it consumed; the node makes that true with MPS:
one control daemon per GPU, every claim with a share of it one client, whose pinned device memory limit and
active thread percentage come from what it consumed (``libs.slices.sharing``). Before anything is started the
plan is checked here:

- only a whole GPU is shared this way, and a claim's shares are all of one GPU and nothing else of this
  driver's (a container talks to one MPS daemon, and a device outside it would be unreachable under MPS);
- the claim's config may not ask for sharing of its own (time-slicing, a daemon of its own): the share is
  already an MPS client;
- the GPU must have every capacity consumed, and the claim's consumption must fit beside the shares other
  claims hold (the scheduler checked too; two allocators racing, or a stale allocation, are caught here).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from libs.cdi.nvidia import mps_edits
from libs.cdi.spec import ContainerEdits
from libs.claims.configapi import DeviceConfig
from libs.devices.model import Inventory
from libs.slices.capacity import fit_problem
from libs.slices.sharing import memory_limit, shared_gpu_capacities, thread_percentage
from services.claim_preparation.devices import FullGpu
from services.claim_preparation.errors import ClaimNotUsable, ConfigError, ShareDoesNotFit
from services.claim_preparation.record import PlannedDevice, SharePlan

SHARE_GROUP = "share"
"""The group of a claim's shared devices: no config group has this name."""
DAEMONS = "_gpus"
"""Where under the MPS directory each shared GPU's daemon lives; no claim UID starts with ``_``."""
_MIB = 2**20


def check_share_config(device: str, config: DeviceConfig) -> None:
    """A share is a client of its GPU's MPS daemon: a config asking for other sharing cannot apply."""
    if config.sharing is not None:
        raise ConfigError(
            f"device {device} is a share of a GPU shared by consumable capacity, already an MPS client of the GPU's "
            f"daemon with the limits its allocation consumed; sharing.strategy {config.sharing.strategy} does not "
            "apply to it"
        )


def plan_share(
    claim_uid: str, devices: Sequence[PlannedDevice], inventory: Inventory, mps_root: Path
) -> SharePlan | None:
    """The claim's share plan; None when it holds no share. Raises when the shares cannot be served."""
    shares = [device for device in devices if device.group == SHARE_GROUP]
    if not shares:
        return None
    others = sorted({d.target.name for d in devices if d.group != SHARE_GROUP and not d.admin_access})
    gpus = sorted({d.target.name for d in shares})
    if len(gpus) > 1 or others:
        raise ClaimNotUsable(
            f"it holds shares of {', '.join(gpus)}"
            + (f" besides {', '.join(others)}" if others else "")
            + ": a container talks to one MPS daemon, so a claim with a share holds shares of one GPU and nothing else"
        )
    target = shares[0].target
    if not isinstance(target, FullGpu):
        raise ClaimNotUsable(f"device {target.name} is allocated as a share, but only whole GPUs are shared")
    memory = _gpu_memory(inventory, target.minor)
    consumed = _summed(shares, target.name, memory)
    return SharePlan(
        group=SHARE_GROUP,
        gpu=target.name,
        minor=target.minor,
        directory=str(mps_root / DAEMONS / target.name),
        consumed=consumed,
        memory_limit=memory_limit(consumed, memory),
        active_thread_percentage=thread_percentage(consumed),
    )


def _gpu_memory(inventory: Inventory, minor: int) -> int:
    return next(gpu.memory_bytes for gpu in inventory.gpus if gpu.minor == minor)


def _summed(shares: Sequence[PlannedDevice], gpu: str, memory: int) -> dict[str, int]:
    """All the claim's shares of the GPU together (two requests may each have one); unknown capacities refused."""
    capacities = shared_gpu_capacities(memory)
    consumed: dict[str, int] = dict.fromkeys(capacities, 0)
    for share in shares:
        unknown = sorted(set(share.consumed) - set(capacities))
        if unknown:
            raise ClaimNotUsable(
                f"share {share.share_id} of {gpu} consumes {', '.join(unknown)}, which a shared GPU does not have "
                f"(it has {', '.join(sorted(capacities))})"
            )
        for name, amount in share.consumed.items():
            consumed[name] += amount
    return consumed


def check_fits(plan: SharePlan, held: Iterable[tuple[str, SharePlan]], inventory: Inventory) -> None:
    """``ShareDoesNotFit`` when the claim's consumption does not fit beside the shares other claims hold
    (``held``: each other claim's label and plan)."""
    others = [(f"claim {who}", other.consumed) for who, other in held if other.minor == plan.minor]
    capacities = shared_gpu_capacities(_gpu_memory(inventory, plan.minor))
    problem = fit_problem(plan.gpu, capacities, others, plan.consumed)
    if problem:
        raise ShareDoesNotFit(problem)


def client_edits(plan: SharePlan) -> ContainerEdits:
    """What the claim's containers get: the GPU daemon's pipe and shm, and the client's own limits.

    The limits are by device index (0: the container sees only this GPU), which MPS honours where a UUID has been
    seen to be ignored."""
    env = [f"CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0={max(1, plan.memory_limit // _MIB)}M"]
    if plan.active_thread_percentage is not None:
        env.append(f"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE={plan.active_thread_percentage}")
    daemon = plan.daemon
    return mps_edits(daemon.pipe_dir, daemon.shm_dir) + ContainerEdits(env=tuple(env))
