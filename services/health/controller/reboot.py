"""The reboot executor: a pluggable hook, chosen by the ``reboot_hook`` setting.

- ``simulated``: the simulated node "reboots": GPUs that fell off the bus come back (discovery's
  ``InjectFault gpu-back``) and every GPU is reset through the node's health service, which clears what a
  reboot clears. A fault the profile made sticky survives, as a broken board would, so the remediation
  ends in ``remediation-failed`` for a person.
- a command line: run with ``{node}`` and ``{mode}`` (``bare-metal`` or ``vm``) filled in; exit status 0
  means the reboot was asked for (a cloud API call, a bare-metal job...). The node is back only when the
  Node reports a boot id other than the one it had before the command ran; whatever the command does, the
  whole reboot must be over within the reboot timeout, or it failed.
- ``none``: every reboot fails at once, so the node waits in ``remediation-failed`` for a person.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Callable, Collection, Mapping
from typing import Literal, Protocol

from libs.bus import Bus, CommandError
from libs.events.catalogue.health import InjectFault, InjectFaultReply
from services.health.controller.gpu_reset import GpuResetter, RepairFailed

log = logging.getLogger(__name__)

Mode = Literal["bare-metal", "vm"]
OUTPUT_LIMIT = 400


class RebootHook(Protocol):
    """Reboots ``node``; returns a detail for the outcome, raises ``RepairFailed``."""

    async def reboot(self, node: str, mode: Mode) -> str: ...


class NoReboot:
    async def reboot(self, node: str, mode: Mode) -> str:
        raise RepairFailed(f"no reboot hook is configured (setting --reboot-hook); node {node} needs a person")


class BootIds(Protocol):
    """Each Node's reported boot id (``ClusterView``)."""

    @property
    def boot_ids(self) -> Mapping[str, str]: ...

    async def new_boot(self, node: str, before: str, timeout: float) -> str:
        """The boot id once it differs from ``before``; ``TimeoutError`` after ``timeout`` seconds."""
        ...


class CommandReboot:
    def __init__(self, template: str, timeout: float, boots: BootIds) -> None:
        self._template = template
        self._timeout = timeout
        self._boots = boots

    async def reboot(self, node: str, mode: Mode) -> str:
        deadline = asyncio.get_running_loop().time() + self._timeout
        before = self._boots.boot_ids.get(node, "")
        argv = [part.replace("{node}", node).replace("{mode}", mode) for part in shlex.split(self._template)]
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), self._timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RepairFailed(f"reboot hook for node {node} did not finish within {self._timeout:g}s") from None
        text = output.decode(errors="replace").strip()[-OUTPUT_LIMIT:]
        if process.returncode != 0:
            raise RepairFailed(f"reboot hook for node {node} exited with {process.returncode}: {text}")
        try:
            after = await self._boots.new_boot(node, before, deadline - asyncio.get_running_loop().time())
        except TimeoutError:
            was = f"boot id still {before}" if before else "no boot id reported"
            raise RepairFailed(
                f"node {node} did not come back within {self._timeout:g}s of the reboot request ({was})"
            ) from None
        done = f"reboot hook done, boot id {before or '(none)'} → {after}"
        return f"{done}: {text}" if text else done


GpuList = Callable[[str], tuple[Collection[str], Collection[str]]]
"""Node → (GPUs it publishes now, GPUs it had faults on): the ones in the second set only are lost."""


class SimulatedReboot:
    def __init__(self, bus: Bus, resetter: GpuResetter, gpus: GpuList, timeout: float) -> None:
        self._bus = bus
        self._resetter = resetter
        self._gpus = gpus
        self._timeout = timeout

    async def reboot(self, node: str, mode: Mode) -> str:
        published, faulted = self._gpus(node)
        lost = sorted(set(faulted) - set(published))
        for gpu in lost:
            await self._bring_back(node, gpu)
        gpus = sorted(set(published) | set(faulted))
        results = await asyncio.gather(
            *(self._resetter.reset(node, gpu, f"simulated {mode} reboot") for gpu in gpus), return_exceptions=True
        )
        failed = [str(r) for r in results if isinstance(r, BaseException)]
        if failed:
            raise RepairFailed(f"simulated reboot of node {node}: {'; '.join(failed)}")
        back = f", {', '.join(lost)} back on the bus" if lost else ""
        return f"simulated {mode} reboot: {len(gpus)} GPUs reset{back}"

    async def _bring_back(self, node: str, gpu: str) -> None:
        try:
            await self._bus.request(node, InjectFault(device=gpu, kind="gpu-back"), InjectFaultReply, timeout=10.0)
        except CommandError as exc:
            raise RepairFailed(f"simulated reboot of node {node}: {gpu} did not come back: {exc}") from None


def reboot_hook(
    setting: str, *, backend: str, bus: Bus, resetter: GpuResetter, gpus: GpuList, boots: BootIds, timeout: float
) -> RebootHook:
    choice = setting.strip() or "auto"
    if choice == "auto":
        choice = "simulated" if backend == "simulated" else "none"
    if choice == "none":
        return NoReboot()
    if choice == "simulated":
        return SimulatedReboot(bus, resetter, gpus, timeout)
    return CommandReboot(choice, timeout, boots)
