"""The NVML device backend: real NVIDIA GPUs through nvidia-ml-py (module `pynvml`).

Every NVML call runs in a worker thread (MIG creation takes seconds; event waits block), and handles are
cached from the last discovery by minor number. Settings NVML has no call for (time slices, GPU reset)
go through nvidia-smi, as the reference driver does. NVML and nvidia-smi come from the driver root where it has
them (``libs.devices.nvml.library``).
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import msgspec
import pynvml

from libs.devices.errors import BackendUnavailable, DeviceError, DeviceLost, DeviceNotFound, UnknownMigProfile
from libs.devices.events import DeviceEvent
from libs.devices.model import Gpu, HealthCounters, Inventory, MigDevice, MpsSettings, TimeSliceInterval
from libs.devices.names import gpu_device_name
from libs.devices.nvml import counters, mig
from libs.devices.nvml.calls import Caller
from libs.devices.nvml.discovery import Discovery, discover
from libs.devices.nvml.events import EventWatcher
from libs.devices.nvml.library import NvmlLibrary, load_nvml
from libs.devices.pci import PciSysfs, VmGpus

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class NvmlBackend:
    def __init__(
        self, node: str, sysfs_root: Path, library: NvmlLibrary, event_wait_ms: int, dev_root: Path = Path("/dev")
    ) -> None:
        self._node = node
        self._sysfs_root = sysfs_root
        self._pci = PciSysfs(sysfs_root, dev_root, node=node)
        self._vm_gpus = VmGpus()
        self._nvidia_smi, self._nvidia_smi_env = library.smi_command()
        self._event_wait_ms = event_wait_ms
        self._discovery: Discovery | None = None
        self._watcher: EventWatcher | None = None

    @classmethod
    async def open(
        cls,
        node: str,
        *,
        driver_root: str = "/",
        sysfs_root: Path = Path("/sys"),
        dev_root: Path = Path("/dev"),
        nvidia_smi: str = "",
        event_wait_ms: int = 500,
    ) -> "NvmlBackend":
        """Raises BackendUnavailable where NVML cannot start (no driver, no library). `driver_root` is where this
        process sees the driver's files; `nvidia_smi`, when given, replaces the one found there. `event_wait_ms`
        is how long one NVML event wait blocks, so also how long close() may take. `sysfs_root` and `dev_root` are
        the host's /sys and /dev as this process sees them: passthrough binds GPUs there and finds /dev/vfio."""
        library = await asyncio.to_thread(load_nvml, driver_root)
        try:
            await asyncio.to_thread(pynvml.nvmlInit)
        except pynvml.NVMLError as error:
            raise BackendUnavailable(
                node,
                "nvml",
                f"NVML cannot start ({error})",
                "install the NVIDIA driver (in a container: mount the host's driver root and set "
                "--driver-root-mount / GPUDRA_DRIVER_ROOT_MOUNT), or use `--backend simulated` on a machine "
                "without NVIDIA GPUs",
            ) from error
        if nvidia_smi:
            library = msgspec.structs.replace(library, nvidia_smi=nvidia_smi)
        return cls(node, sysfs_root, library, event_wait_ms, dev_root)

    @property
    def name(self) -> str:
        return "nvml"

    @property
    def node(self) -> str:
        return self._node

    async def inventory(self) -> Inventory:
        """NVML's listing, with the GPUs a VM holds that this process saw before (``VmGpus``)."""
        listed = (await self._discover()).inventory
        gpus = self._vm_gpus.merge(listed.gpus, self._pci)
        return listed if gpus == listed.gpus else msgspec.structs.replace(listed, gpus=gpus)

    async def create_mig_device(self, parent_minor: int, profile_name: str, placement_start: int) -> MigDevice:
        gpu, handle = await self._gpu(parent_minor)
        profiles = (self._discovery or await self._discover()).inventory.profiles_for(gpu)
        profile = next((p for p in profiles if p.name == profile_name), None)
        if profile is None:
            raise UnknownMigProfile(self._node, gpu.name, profile_name, [p.name for p in profiles])
        return await self._run(gpu.minor, mig.create, self._node, gpu, handle, profile, placement_start)

    async def destroy_mig_device(self, device: MigDevice) -> None:
        _, handle = await self._gpu(device.parent_minor)
        await self._run(device.parent_minor, mig.destroy, self._node, handle, device)

    async def set_time_slice(self, minor: int, interval: TimeSliceInterval) -> None:
        gpu, _ = await self._gpu(minor)
        await self._nvidia_smi_run(
            gpu, "compute-policy", "-i", gpu.uuid, f"--set-timeslice={interval.nvidia_smi_value}"
        )

    async def start_mps(self, minor: int, settings: MpsSettings) -> None:
        await self._set_compute_mode(minor, pynvml.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS)

    async def stop_mps(self, minor: int) -> None:
        await self._set_compute_mode(minor, pynvml.NVML_COMPUTEMODE_DEFAULT)

    async def reset_gpu(self, minor: int) -> None:
        gpu, _ = await self._gpu(minor)
        await self._nvidia_smi_run(gpu, "--gpu-reset", "-i", gpu.uuid)
        self._discovery = None

    async def processes(self, minor: int) -> tuple[int, ...]:
        gpu, handle = await self._gpu(minor)
        return await self._run(minor, counters.process_ids, Caller(self._node, gpu.name), handle)

    async def read_counters(self, minor: int) -> HealthCounters:
        gpu, handle = await self._gpu(minor)
        return await self._run(minor, counters.read_counters, Caller(self._node, gpu.name), handle, minor)

    def events(self) -> AsyncIterator[DeviceEvent]:
        if self._watcher is None:
            self._watcher = EventWatcher(self._node, self._handles, self._event_wait_ms)
        return self._watcher.subscribe()

    def pci(self) -> PciSysfs:
        return self._pci

    def _handles(self) -> dict[int, Any]:
        """Called from the watcher's thread: the cached handles, or a fresh discovery's."""
        discovery = self._discovery or discover(self._node, self._sysfs_root)
        return discovery.handles

    async def close(self) -> None:
        if self._watcher is not None:
            await self._watcher.stop()
        await asyncio.to_thread(pynvml.nvmlShutdown)

    async def _set_compute_mode(self, minor: int, mode: int) -> None:
        gpu, handle = await self._gpu(minor)
        await self._run(minor, Caller(self._node, gpu.name), pynvml.nvmlDeviceSetComputeMode, handle, mode)

    async def _discover(self) -> Discovery:
        self._discovery = await asyncio.to_thread(discover, self._node, self._sysfs_root)
        return self._discovery

    async def _gpu(self, minor: int) -> tuple[Gpu, Any]:
        """The GPU and its handle from the cached discovery; rediscovers once when the minor is unknown."""
        discovery = self._discovery or await self._discover()
        if minor not in discovery.handles:
            discovery = await self._discover()
        gpu = next((g for g in discovery.inventory.gpus if g.minor == minor), None)
        if gpu is None:
            raise DeviceNotFound(self._node, gpu_device_name(minor))
        return gpu, discovery.handles[minor]

    async def _run(self, minor: int, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Runs NVML work in a thread; a lost GPU drops the cached discovery so the next call re-reads."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except DeviceLost:
            self._discovery = None
            logger.warning("GPU lost during an operation", extra={"node": self._node, "device": f"gpu-{minor}"})
            raise

    async def _nvidia_smi_run(self, gpu: Gpu, *args: str) -> None:
        command = f"nvidia-smi {' '.join(args)}"
        try:
            process = await asyncio.create_subprocess_exec(
                self._nvidia_smi,
                *args,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=self._nvidia_smi_env,
            )
        except FileNotFoundError:
            raise DeviceError(self._node, gpu.name, f"{command}: {self._nvidia_smi} not found") from None
        output, _ = await process.communicate()
        if process.returncode != 0:
            message = output.decode(errors="replace").strip()
            raise DeviceError(self._node, gpu.name, f"{command} failed: {message}")
