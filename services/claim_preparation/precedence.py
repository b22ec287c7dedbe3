"""Which opaque config applies to which allocated device, pure.

The reference driver's rules, kept exactly so claims behave the same:

- only this driver's entries count, and every one must decode (a broken entry is an error even if it
  applies to nothing: it is a mistake the user wants to hear about);
- class configs come before claim configs, each list in its own order, and a later entry wins;
- the defaults (``GpuConfig``, ``MigDeviceConfig`` with no sharing) have the lowest precedence;
- an entry that names a device's request must fit the device (``GpuConfig`` for a full GPU,
  ``MigDeviceConfig`` for a MIG device), else it is an error; an entry naming no request applies to every
  device it fits and skips the others.

Devices that get the same entry form a group: one sharing setting (one MPS daemon) covers the group.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from libs.claims.allocation import AllocatedClaim, AllocationResult, ConfigEntry
from libs.claims.configapi import (
    DEFAULT_GPU_CONFIG,
    DEFAULT_MIG_CONFIG,
    DecodeProblem,
    DeviceConfig,
    GpuConfig,
    MigDeviceConfig,
    decode_parameters,
)
from services.claim_preparation.devices import FullGpu, Target
from services.claim_preparation.errors import ConfigError

DEFAULT_GPU_GROUP = "default-gpu"
DEFAULT_MIG_GROUP = "default-mig"


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    group: str
    requests: tuple[str, ...]
    config: DeviceConfig
    entry: ConfigEntry | None = None

    def describe(self) -> str:
        return self.entry.describe() if self.entry else "the default config"


class Choice(msgspec.Struct, frozen=True, kw_only=True):
    group: str
    config: DeviceConfig


def decoded_candidates(claim: AllocatedClaim) -> list[Candidate]:
    """The claim's entries decoded, lowest precedence first, after the defaults."""
    ordered = sorted(claim.configs, key=lambda entry: entry.source != "FromClass")
    candidates = [
        Candidate(group=DEFAULT_GPU_GROUP, requests=(), config=DEFAULT_GPU_CONFIG),
        Candidate(group=DEFAULT_MIG_GROUP, requests=(), config=DEFAULT_MIG_CONFIG),
    ]
    for entry in ordered:
        try:
            config = decode_parameters(entry.parameters)
        except DecodeProblem as exc:
            raise ConfigError(f"{entry.describe()}: {exc}") from None
        candidates.append(Candidate(group=str(entry.index), requests=entry.requests, config=config, entry=entry))
    return candidates


def fits(config: DeviceConfig, target: Target) -> bool:
    if isinstance(config, GpuConfig):
        return isinstance(target, FullGpu)
    return isinstance(config, MigDeviceConfig) and not isinstance(target, FullGpu)


def check_unconfigured(candidates: Sequence[Candidate], result: AllocationResult, target: Target) -> None:
    """A GPU for a VM takes no opaque config (its driver is the VM's): an entry naming its request is an error."""
    for candidate in candidates:
        if candidate.entry is not None and candidate.requests and candidate.entry.applies_to(result):
            raise ConfigError(
                f"{candidate.describe()}: request {result.request} gets {target.name}, a GPU for a VM, which takes "
                "no config"
            )


def choose(candidates: Sequence[Candidate], result: AllocationResult, target: Target) -> Choice:
    """The highest-precedence candidate for one device, or ``ConfigError`` when one named for it does not fit."""
    for candidate in reversed(candidates):
        if candidate.entry is not None and candidate.requests:
            if not candidate.entry.applies_to(result):
                continue
            if not fits(candidate.config, target):
                kind = "a full GPU" if isinstance(target, FullGpu) else "a MIG device"
                raise ConfigError(
                    f"{candidate.describe()}: a {type(candidate.config).__name__} cannot apply to request "
                    f"{result.request}, whose device {target.name} is {kind}"
                )
            return Choice(group=candidate.group, config=candidate.config)
        if fits(candidate.config, target):
            return Choice(group=candidate.group, config=candidate.config)
    raise AssertionError("the defaults fit every device")  # pragma: no cover
