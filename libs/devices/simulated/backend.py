"""The simulated device backend: the DeviceBackend interface over a state directory, plus fault injection.

A first-class backend (CI, demos, scale simulation), not a test double: every process that opens the same
state directory drives the same simulated machine, and the machine survives restarts.
"""

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TypeVar, cast

import msgspec

from libs.devices.errors import DeviceNotFound, StateError
from libs.devices.events import DeviceEvent
from libs.devices.model import HealthCounters, Inventory, MigDevice, MpsSettings, TimeSliceInterval
from libs.devices.pci import VFIO_PCI, PciSysfs, VmGpus
from libs.devices.simulated import driver_root, faults, ops, pci
from libs.devices.simulated.eventlog import EventFollower
from libs.devices.simulated.machine import MachineProfile
from libs.devices.simulated.profiles import load_profile
from libs.devices.simulated.state import Change, Failed, SimState, StateStore, Step

T = TypeVar("T")

DEFAULT_POLL_INTERVAL = 0.02


class SimulatedBackend:
    def __init__(self, node: str, store: StateStore, poll_interval: float) -> None:
        self._node = node
        self._store = store
        self._pci = pci.SimulatedPciSysfs(store.state_dir, node=node)
        self._poll_interval = poll_interval
        self._inventory: tuple[SimState, frozenset[int], Inventory] | None = None
        self._vm_gpus = VmGpus()
        self._queued: list[tuple[Step, asyncio.Future[object]]] = []
        self._applying: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        node: str,
        state_dir: Path | str,
        profile: str | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> "SimulatedBackend":
        """Creates the machine from `profile` on first use; later opens may omit the profile.

        The machine's stand-in driver install and its PCI functions in sysfs are laid out on every open, so a state
        directory from before they existed gets them too.
        """
        backend = cls(node, StateStore(Path(state_dir)), poll_interval)
        wanted = load_profile(profile) if profile is not None else None
        adopted = await asyncio.to_thread(backend._store.transact, lambda state: backend._adopt(state, wanted))
        await asyncio.to_thread(driver_root.lay_out, Path(state_dir), adopted.profile.driver_version)
        audio = adopted.profile.audio_functions
        await asyncio.to_thread(pci.lay_out, Path(state_dir), adopted.gpus, audio_functions=audio)
        return backend

    def _adopt(self, state: SimState | None, wanted: MachineProfile | None) -> tuple[Change, SimState]:
        where = str(self._store.state_dir)
        if state is None:
            if wanted is None:
                raise StateError(where, "no simulated machine here yet; give a profile (e.g. dgx-h100) to create one")
            created = ops.initial_state(self._node, wanted)
            return Change(created), created
        if state.node != self._node:
            raise StateError(where, f"it simulates node {state.node}, not {self._node}; use one state dir per node")
        if wanted is not None and wanted != state.profile:
            raise StateError(
                where,
                f"it was created with profile {state.profile.name!r}, not {wanted.name!r}; "
                "use the same profile or a fresh state dir",
            )
        return Change(None), state

    @property
    def name(self) -> str:
        return "simulated"

    @property
    def node(self) -> str:
        return self._node

    async def inventory(self) -> Inventory:
        """As NVML lists it: a GPU a VM holds (its IOMMU group on vfio-pci) is not the driver's, so not listed,
        unless this process saw it before (``VmGpus``)."""
        state = await self._state()
        groups = self._pci.vm_groups()
        cached = self._inventory
        if cached is None or cached[0] is not state or cached[1] != groups:  # the store returns the same state
            listed = ops.inventory_of(state)  # object until the file changes
            driver = tuple(gpu for gpu in listed.gpus if gpu.iommu_group not in groups)
            gpus = self._vm_gpus.merge(driver, self._pci)
            self._inventory = cached = (state, groups, msgspec.structs.replace(listed, gpus=gpus))
        return cached[2]

    async def create_mig_device(self, parent_minor: int, profile_name: str, placement_start: int) -> MigDevice:
        def step(state: SimState) -> tuple[Change, MigDevice]:
            state, device = ops.add_mig_device(state, parent_minor, profile_name, placement_start)
            return Change(state), device

        return await self._transact(step)

    async def destroy_mig_device(self, device: MigDevice) -> None:
        await self._transact(lambda state: (Change(ops.remove_mig_device(state, device)), None))

    async def set_time_slice(self, minor: int, interval: TimeSliceInterval) -> None:
        await self._transact(lambda state: (Change(ops.set_time_slice(state, minor, interval)), None))

    async def start_mps(self, minor: int, settings: MpsSettings) -> None:
        await self._transact(lambda state: (Change(ops.set_mps(state, minor, settings)), None))

    async def stop_mps(self, minor: int) -> None:
        await self._transact(lambda state: (Change(ops.set_mps(state, minor, None)), None))

    async def reset_gpu(self, minor: int) -> None:
        await self._transact(lambda state: (Change(ops.reset_gpu(state, minor)), None))

    async def processes(self, minor: int) -> tuple[int, ...]:
        gpu = ops.find_gpu(await self._state(), minor)
        return await asyncio.to_thread(self._pci.users, gpu.pci_bus_id)

    async def read_counters(self, minor: int) -> HealthCounters:
        """As NVML reads them: a GPU whose function is on vfio-pci (a VM's) is not the driver's, so not NVML's."""
        state = await self._state()
        gpu = next((g for g in state.gpus if g.minor == minor), None)
        if gpu is not None and self._pci.driver_of(gpu.pci_bus_id) == VFIO_PCI:
            raise DeviceNotFound(self._node, gpu.name)
        return ops.read_counters(state, minor)

    def events(self) -> AsyncIterator[DeviceEvent]:
        return EventFollower(self._store.events_path, self._poll_interval)

    def pci(self) -> PciSysfs:
        """The machine's sysfs and /dev/vfio under its state directory, with a simulated kernel behind writes."""
        return self._pci

    async def close(self) -> None:
        """Nothing to release: the machine lives in the state directory, not in this object."""

    # Fault injection: what the health service must detect. `sticky=None` takes the profile's default.

    async def inject_xid(self, device: int | str, xid: int) -> None:
        await self._fault(lambda state: faults.inject_xid(state, device, xid))

    async def inject_ecc(
        self, minor: int, *, double_bit: bool = False, count: int = 1, sticky: bool | None = None
    ) -> None:
        await self._fault(
            lambda s: faults.inject_ecc(s, minor, double_bit=double_bit, count=count, sticky=self._sticky(s, sticky))
        )

    async def inject_gpu_lost(self, minor: int, *, sticky: bool | None = None) -> None:
        await self._fault(lambda s: faults.set_lost(s, minor, lost=True, sticky=self._sticky(s, sticky)))

    async def restore_gpu(self, minor: int) -> None:
        await self._fault(lambda s: faults.set_lost(s, minor, lost=False, sticky=False))

    async def inject_nvlink_down(self, minor: int, link: int, *, sticky: bool | None = None) -> None:
        await self._fault(lambda s: faults.set_nvlink(s, minor, link, up=False, sticky=self._sticky(s, sticky)))

    async def restore_nvlink(self, minor: int, link: int) -> None:
        await self._fault(lambda s: faults.set_nvlink(s, minor, link, up=True, sticky=False))

    async def inject_thermal(
        self, minor: int, temperature_c: int = 95, *, slowdown: bool = True, sticky: bool | None = None
    ) -> None:
        await self.inject_counters(minor, sticky=sticky, temperature_c=temperature_c, thermal_slowdown=slowdown)

    async def inject_counters(self, minor: int, *, sticky: bool | None = None, **changes: object) -> None:
        """Sets any HealthCounters field: retired pages, row remapping, PCIe replays, temperature."""
        await self._fault(lambda s: faults.set_counters(s, minor, changes, sticky=self._sticky(s, sticky)))

    async def inject_recovery_action(self, minor: int, action: int) -> None:
        await self._fault(lambda state: faults.recovery_action(state, minor, action))

    async def clear_faults(self, minor: int) -> None:
        await self._fault(lambda state: faults.clear_faults(state, minor))

    # PCI faults: what passthrough to a VM must survive. Marker files, so any process may set or clear them.

    async def hold_unbind(self, bdf: str) -> None:
        """Every unbind of the PCI function ``bdf`` blocks until ``release_unbind``: a driver stuck in its remove."""
        await asyncio.to_thread(self._pci.hold_unbind, bdf)

    async def release_unbind(self, bdf: str) -> None:
        await asyncio.to_thread(self._pci.release_unbind, bdf)

    async def mark_in_use(self, minor: int, pids: Sequence[int] = (1,)) -> None:
        """Processes hold the GPU: ``processes`` lists them, and its unbind from nvidia blocks until ``mark_idle``."""
        gpu = ops.find_gpu(await self._state(), minor)
        await asyncio.to_thread(self._pci.mark_in_use, gpu.pci_bus_id, pids)

    async def mark_idle(self, minor: int) -> None:
        gpu = ops.find_gpu(await self._state(), minor)
        await asyncio.to_thread(self._pci.mark_idle, gpu.pci_bus_id)

    @staticmethod
    def _sticky(state: SimState, sticky: bool | None) -> bool:
        return state.profile.sticky_faults if sticky is None else sticky

    async def _fault(self, inject: Callable[[SimState], faults.Outcome]) -> None:
        def step(state: SimState) -> tuple[Change, None]:
            new_state, events = inject(state)
            return Change(new_state if new_state is not state else None, events), None

        await self._transact(step)

    async def _transact(self, step: Callable[[SimState], tuple[Change, T]]) -> T:
        """Queue ``step`` and wait for its outcome. Steps queued while a batch is being applied go together in the
        next one, with one write: like a driver, the machine does not make independent operations (MIG devices
        of one claim, claims on different GPUs) wait for each other's disk write."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[object] = loop.create_future()
        self._queued.append((lambda state: step(self._require(state)), done))
        if self._applying is None or self._applying.get_loop() is not loop:  # (a test may change loops)
            self._applying = asyncio.create_task(self._apply_queued())
        return cast(T, await done)

    async def _apply_queued(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                try:
                    outcomes = await asyncio.to_thread(self._store.transact_all, [step for step, _ in batch])
                except Exception as error:  # the lock or the write failed: every step of the batch did
                    outcomes = [Failed(error)] * len(batch)
                loop = asyncio.get_running_loop()
                for (_, done), outcome in zip(batch, outcomes, strict=True):
                    if done.done() or done.get_loop() is not loop:  # cancelled, or its loop is gone
                        continue
                    if isinstance(outcome, Failed):
                        done.set_exception(outcome.error)
                    else:
                        done.set_result(outcome)
        finally:
            self._applying = None

    async def _state(self) -> SimState:
        return self._store.unchanged() or self._require(await asyncio.to_thread(self._store.read))

    def _require(self, state: SimState | None) -> SimState:
        if state is None:
            raise StateError(str(self._store.state_dir), "the simulated machine was removed while in use")
        return state
