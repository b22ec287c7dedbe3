"""kill -9 at random moments of 100 cycles of GPUs for VMs: every function on exactly one driver, the checkpoint true.

Issue 15's crash test. claim_preparation runs as a real process on the simulated ``mixed-mig`` node with an
audio function in every GPU's IOMMU group and every GPU offered to VMs; three VM claims (two functions to move
each) and a container claim cycle at once through the kubelet's path while a killer SIGKILLs the service at
random moments, landing inside binds and unbinds. At the end, besides the audit every crash test makes
(checkpoint, CDI specs, events; ``claim_prep_crash_support.audit_state``), each GPU's group is where the claims
say: both functions on vfio-pci with ``/dev/vfio/<group>`` while its VM claim is prepared, else both on their
own drivers (nvidia, snd_hda_intel) with no override and no group node. The seed is printed;
``GPUDRA_CRASH_SEED=<seed>`` replays the same choices.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.bus import Bus
from libs.devices.pci import PciSysfs
from libs.devices.simulated import SimulatedBackend
from libs.devices.simulated.machine import pci_location
from libs.kube import KubeApi
from libs.natsserver import EmbeddedNats
from tests.claim_preparation.claim_prep_crash_support import (
    ClaimProgress,
    CrashClaim,
    random_run,
)
from tests.claim_preparation.claim_prep_support import NODE, service_settings
from tests.claim_preparation.test_claim_prep_passthrough import profile_yaml

CYCLES = 100
VM_MINORS = (4, 5, 7)
CLAIMS = (
    *(CrashClaim(f"vm-{minor}", (("gpu", f"gpu-{minor}-vfio"),)) for minor in VM_MINORS),
    CrashClaim("whole-6", (("gpu", "gpu-6"),)),
)


def audit_pci(pci: PciSysfs, progress: dict[str, ClaimProgress]) -> list[str]:
    """Each VM GPU's group against the client's belief: on vfio-pci exactly while its claim is prepared."""
    prepared = {p.claim.name for p in progress.values() if p.prepared}
    problems = []
    for minor in VM_MINORS:
        gpu = pci_location(minor)[0]
        functions = (gpu, gpu.removesuffix(".0") + ".1")
        on_vm = f"vm-{minor}" in prepared
        wanted = ("vfio-pci", "vfio-pci") if on_vm else ("nvidia", "snd_hda_intel")
        found = tuple(pci.driver_of(bdf) for bdf in functions)
        if found != wanted:
            problems.append(f"gpu-{minor}: functions on {found}, its claim prepared: {on_vm}")
        overrides = tuple(pci.override_of(bdf) for bdf in functions)
        if overrides != (("vfio-pci", "vfio-pci") if on_vm else (None, None)):
            problems.append(f"gpu-{minor}: overrides {overrides}, its claim prepared: {on_vm}")
        if pci.group_node(10 + minor).exists() != on_vm:
            problems.append(f"gpu-{minor}: /dev/vfio/{10 + minor} exists: {not on_vm}, its claim prepared: {on_vm}")
    return problems


@pytest.mark.slow
async def test_sigkill_at_random_moments_of_100_vm_cycles_leaves_every_function_on_one_driver(
    tmp_path: Path, nats_server: EmbeddedNats, bus: Bus, kube: KubeApi
) -> None:
    settings = service_settings(tmp_path, nats_server.url, profile=str(profile_yaml(tmp_path)), passthrough_gpus="all")
    done = await random_run(settings, bus, kube, CLAIMS, CYCLES)
    pci = (await SimulatedBackend.open(NODE, settings.simulated_state)).pci()
    problems = done.problems() + audit_pci(pci, done.run.progress)
    stats = done.stats
    assert not problems, f"seed {done.seed}: {stats.summary()}\n" + "\n".join(problems)
    assert stats.kills >= 10, stats.summary()
    assert stats.kills_inside_calls >= stats.kills // 2, stats.summary()
    assert stats.rollbacks["PrepareStarted"] + stats.rollbacks["UnprepareStarted"] >= 3, stats.summary()
