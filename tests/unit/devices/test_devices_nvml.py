"""A small NVML stand-in: the pynvml functions the NVML backend calls, over a model of a few GPUs.

There is no GPU here, so the tests patch these into the real pynvml module. The model keeps NVML's
behaviour where the backend depends on it: handles are pointers, errors are NVMLError codes, MIG devices
appear only after a GPU instance and a compute instance exist, placement queries take a NULL array first.
"""

import asyncio
import ctypes
import dataclasses
import logging
import queue
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from libs.devices.errors import BackendUnavailable, DeviceError, DeviceLost, InsufficientResources, NvmlError
from libs.devices.events import DeviceEvent, EccEvent, GpuLostEvent, RecoveryActionEvent, XidEvent
from libs.devices.model import MpsSettings, TimeSliceInterval
from libs.devices.nvml import NvmlBackend

MIB = 1024 * 1024


@dataclasses.dataclass
class FakeProfile:
    index: int
    id: int
    name: str
    slices: int
    placements: list[tuple[int, int]]
    memory_mib: int = 10240


H100_PROFILES = [
    FakeProfile(0, 19, "1g.10gb", 1, [(i, 1) for i in range(7)]),
    FakeProfile(9, 15, "1g.20gb", 1, [(0, 2), (2, 2), (4, 2), (6, 2)], 20480),
    FakeProfile(2, 9, "3g.40gb", 3, [(0, 4), (4, 4)], 40960),
    FakeProfile(4, 0, "7g.80gb", 7, [(0, 8)], 81920),
]


@dataclasses.dataclass
class FakeInstance:
    gi_id: int
    profile: FakeProfile
    start: int
    size: int
    ci_ids: list[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class FakeGpu:
    index: int
    minor: int
    bus: int
    mig: bool = False
    lost_on: str | None = None
    instances: list[FakeInstance] = dataclasses.field(default_factory=list)
    fabric: tuple[str, int] | None = None
    compute_pids: list[int] = dataclasses.field(default_factory=list)

    @property
    def uuid(self) -> str:
        return f"GPU-{uuid.UUID(int=self.index + 1)}"


def nvml_error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


def pointer(address: int) -> Any:
    return ctypes.cast(ctypes.c_void_p(address), pynvml.c_nvmlDevice_t)


def address(handle: Any) -> int:
    return ctypes.cast(handle, ctypes.c_void_p).value or 0


class FakeNvml:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, gpus: list[FakeGpu]) -> None:
        self.gpus = gpus
        self.events: queue.Queue[Any] = queue.Queue()
        self.compute_modes: dict[int, int] = {}
        self.registered: list[int] = []
        self.cc_state: pynvml.c_nvmlConfComputeSystemState_t | None = None
        """None: a driver without the confidential-computing call."""
        for name in dir(self):
            if name.startswith("nvml"):
                monkeypatch.setattr(pynvml, name, getattr(self, name))

    # Handles: GPU n is 0x1000 + n; MIG device (n, slot) is 0x100000 + n * 0x100 + slot.

    def gpu_handle(self, gpu: FakeGpu) -> Any:
        return pointer(0x1000 + gpu.index)

    def _gpu(self, handle: Any, call: str) -> FakeGpu:
        gpu = self.gpus[address(handle) - 0x1000]
        if gpu.lost_on == call:
            raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
        return gpu

    def _mig(self, handle: Any) -> tuple[FakeGpu, FakeInstance]:
        gpu_index, slot = divmod(address(handle) - 0x100000, 0x100)
        gpu = self.gpus[gpu_index]
        return gpu, gpu.instances[slot]

    def nvmlInit(self) -> None:
        return None

    def nvmlShutdown(self) -> None:
        return None

    def nvmlSystemGetDriverVersion(self) -> str:
        return "570.133.20"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12080

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        return [SimpleNamespace(pid=pid) for pid in self._gpu(handle, "processes").compute_pids]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> list[Any]:
        raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)  # a datacenter GPU without graphics

    def nvmlSystemGetConfComputeState(self) -> Any:
        if self.cc_state is None:
            raise nvml_error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        return self.cc_state

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        return self.gpu_handle(self.gpus[index])

    def nvmlDeviceGetMinorNumber(self, handle: Any) -> int:
        return self._gpu(handle, "minor").minor

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        if address(handle) >= 0x100000:
            gpu, instance = self._mig(handle)
            return f"MIG-{uuid.UUID(int=(gpu.index + 1) * 1000 + instance.gi_id)}"
        return self._gpu(handle, "uuid").uuid

    def nvmlDeviceGetName(self, handle: Any) -> str:
        self._gpu(handle, "name")
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetBrand(self, handle: Any) -> int:
        return int(pynvml.NVML_BRAND_NVIDIA)

    def nvmlDeviceGetArchitecture(self, handle: Any) -> int:
        return int(pynvml.NVML_DEVICE_ARCH_HOPPER)

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        return 9, 0

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        self._gpu(handle, "memory")
        return SimpleNamespace(total=81559 * MIB)

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        return SimpleNamespace(busId=f"00000000:{self._gpu(handle, 'pci').bus:02X}:00.0".encode())

    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:
        gpu = self._gpu(handle, "mig")
        return [int(gpu.mig), int(gpu.mig)]

    def nvmlDeviceGetAddressingMode(self, handle: Any) -> int:
        raise nvml_error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

    def nvmlDeviceGetGpuFabricInfoV(self, handle: Any, info_ref: Any) -> int:
        gpu = self._gpu(handle, "fabric")
        if gpu.fabric is None:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        info = info_ref._obj
        info.clusterUuid[:] = list(uuid.UUID(gpu.fabric[0]).bytes)
        info.cliqueId = gpu.fabric[1]
        info.state = pynvml.NVML_GPU_FABRIC_STATE_COMPLETED
        info.status = pynvml.NVML_SUCCESS
        return int(pynvml.NVML_SUCCESS)

    # MIG

    def _profile(self, gpu: FakeGpu, *, index: int | None = None, profile_id: int | None = None) -> FakeProfile:
        if not gpu.mig:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        for profile in H100_PROFILES:
            if index in (None, profile.index) and profile_id in (None, profile.id):
                return profile
        raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: Any, index: int) -> Any:
        p = self._profile(self._gpu(handle, "profiles"), index=index)
        return SimpleNamespace(
            id=p.id, name=f"MIG {p.name}".encode(), sliceCount=p.slices, instanceCount=len(p.placements),
            multiprocessorCount=16 * p.slices, copyEngineCount=p.slices, decoderCount=p.slices,
            encoderCount=0, jpegCount=p.slices, ofaCount=int(p.slices == 7), memorySizeMB=p.memory_mib,
        )  # fmt: skip

    def nvmlDeviceGetGpuInstancePossiblePlacements(self, handle: Any, profile_id: int, array: Any, count: Any) -> int:
        placements = self._profile(self._gpu(handle, "placements"), profile_id=profile_id).placements
        if array is not None:
            for i, (start, size) in enumerate(placements):
                array[i].start, array[i].size = start, size
        count._obj.value = len(placements)
        return int(pynvml.NVML_SUCCESS)

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, slot: int) -> Any:
        gpu = self._gpu(handle, "mig-handle")
        if slot >= len(gpu.instances) or not gpu.instances[slot].ci_ids:
            raise nvml_error(pynvml.NVML_ERROR_NOT_FOUND)
        return pointer(0x100000 + gpu.index * 0x100 + slot)

    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int:
        return self._mig(handle)[1].gi_id

    def nvmlDeviceGetComputeInstanceId(self, handle: Any) -> int:
        return self._mig(handle)[1].ci_ids[0]

    def nvmlDeviceGetGpuInstanceById(self, handle: Any, gi_id: int) -> Any:
        gpu = self._gpu(handle, "gi-by-id")
        for instance in gpu.instances:
            if instance.gi_id == gi_id:
                return (gpu, instance)
        raise nvml_error(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlGpuInstanceGetInfo(self, gi: Any) -> Any:
        _, instance = gi
        placement = SimpleNamespace(start=instance.start, size=instance.size)
        return SimpleNamespace(id=instance.gi_id, profileId=instance.profile.id, placement=placement)

    def nvmlDeviceCreateGpuInstanceWithPlacement(self, handle: Any, profile_id: int, placement_ref: Any) -> Any:
        gpu = self._gpu(handle, "create")
        placement = placement_ref._obj
        start, end = placement.start, placement.start + placement.size
        if any(i.start < end and start < i.start + i.size for i in gpu.instances):
            raise nvml_error(pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES)
        gi_id = max((i.gi_id for i in gpu.instances), default=0) + 1
        instance = FakeInstance(gi_id, self._profile(gpu, profile_id=profile_id), placement.start, placement.size)
        gpu.instances.append(instance)
        return (gpu, instance)

    def nvmlGpuInstanceGetComputeInstanceProfileInfo(self, gi: Any, profile: int, engines: int) -> Any:
        return SimpleNamespace(id=profile)

    def nvmlGpuInstanceCreateComputeInstance(self, gi: Any, profile_id: int) -> Any:
        _, instance = gi
        instance.ci_ids.append(0)
        return (gi, 0)

    def nvmlComputeInstanceGetInfo(self, ci: Any) -> Any:
        return SimpleNamespace(id=ci[1])

    def nvmlGpuInstanceGetComputeInstanceById(self, gi: Any, ci_id: int) -> Any:
        if ci_id not in gi[1].ci_ids:
            raise nvml_error(pynvml.NVML_ERROR_NOT_FOUND)
        return (gi, ci_id)

    def nvmlComputeInstanceDestroy(self, ci: Any) -> int:
        ci[0][1].ci_ids.remove(ci[1])
        return int(pynvml.NVML_SUCCESS)

    def nvmlGpuInstanceDestroy(self, gi: Any) -> int:
        gpu, instance = gi
        gpu.instances.remove(instance)
        return int(pynvml.NVML_SUCCESS)

    # Health counters and settings

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, kind: int, counter: int) -> int:
        return 2 if kind == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED else 0

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: Any) -> int:
        raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetRemappedRows(self, handle: Any) -> tuple[int, int, int, int]:
        return 0, 1, 1, 0

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        return 71

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        return int(pynvml.nvmlClocksEventReasonHwThermalSlowdown)

    def nvmlDeviceGetNvLinkState(self, handle: Any, link: int) -> int:
        if link >= 4:
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return 0 if link == 2 else 1

    def nvmlDeviceGetPcieReplayCounter(self, handle: Any) -> int:
        return 3

    def nvmlDeviceSetComputeMode(self, handle: Any, mode: int) -> None:
        self.compute_modes[self._gpu(handle, "compute-mode").minor] = mode

    # Events

    def nvmlEventSetCreate(self) -> str:
        return "event-set"

    def nvmlDeviceGetSupportedEventTypes(self, handle: Any) -> int:
        return 0xFFFF

    def nvmlDeviceRegisterEvents(self, handle: Any, types: int, event_set: str) -> None:
        self.registered.append(self._gpu(handle, "register").minor)

    def nvmlEventSetWait(self, event_set: str, timeout_ms: int) -> Any:
        try:
            return self.events.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            raise nvml_error(pynvml.NVML_ERROR_TIMEOUT) from None

    def nvmlEventSetFree(self, event_set: str) -> None:
        return None

    def emit(self, gpu: FakeGpu, kind: int, data: int, gi: int = 0xFFFFFFFF, ci: int = 0xFFFFFFFF) -> None:
        event = SimpleNamespace(
            device=self.gpu_handle(gpu), eventType=kind, eventData=data, gpuInstanceId=gi, computeInstanceId=ci
        )
        self.events.put(event)


CLUSTER = "6c1f6a52-3d0e-4b8a-9a57-1d2f0c9e7b31"


def sysfs_tree(root: Path, bus_ids: list[str]) -> Path:
    """GPUs behind root port 0000:00:01.0 of root complex pci0000:00, NUMA node 1."""
    for bus_id in bus_ids:
        device = root / "devices/pci0000:00/0000:00:01.0" / bus_id
        device.mkdir(parents=True)
        (device / "numa_node").write_text("1\n")
        link = root / "bus/pci/devices" / bus_id
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(device)
    return root


@pytest.fixture
def gpus() -> list[FakeGpu]:
    return [
        FakeGpu(index=0, minor=2, bus=0x07, fabric=(CLUSTER, 4)),
        FakeGpu(index=1, minor=0, bus=0x0F, mig=True),
        FakeGpu(index=2, minor=1, bus=0x47),
    ]


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch, gpus: list[FakeGpu]) -> FakeNvml:
    return FakeNvml(monkeypatch, gpus)


@pytest.fixture
async def backend(nvml: FakeNvml, tmp_path: Path) -> AsyncIterator[NvmlBackend]:
    sysfs = sysfs_tree(tmp_path / "sys", ["0000:07:00.0", "0000:0f:00.0"])
    backend = await NvmlBackend.open(
        "node-a", sysfs_root=sysfs, nvidia_smi=str(tmp_path / "nvidia-smi"), event_wait_ms=20
    )
    yield backend
    await backend.close()


async def test_gpus_are_read_with_every_field(backend: NvmlBackend) -> None:
    inventory = await backend.inventory()
    assert (inventory.backend, inventory.driver_version, inventory.cuda_driver_version) == (
        "nvml",
        "570.133.20",
        "12.8",
    )
    first = inventory.gpus[0]
    assert (first.name, first.index, first.product_name, first.architecture) == (
        "gpu-2",
        0,
        "NVIDIA H100 80GB HBM3",
        "Hopper",
    )
    assert (first.brand, first.cuda_compute_capability, first.memory_bytes) == ("Nvidia", "9.0", 81559 * 2**20)
    assert (first.pci_bus_id, first.pcie_root, first.numa_node) == ("0000:07:00.0", "pci0000:00", 1)
    assert first.fabric is not None
    assert first.fabric.clique == f"{CLUSTER}.4"
    assert first.addressing_mode is None
    assert not first.mig_enabled
    third = inventory.gpus[2]
    assert (third.pcie_root, third.numa_node, third.fabric) == (None, None, None)


@pytest.mark.parametrize(
    ("feature", "devtools", "mode"),
    [
        (None, None, None),  # an older driver lacks the call
        (pynvml.NVML_CC_SYSTEM_FEATURE_DISABLED, pynvml.NVML_CC_SYSTEM_DEVTOOLS_MODE_OFF, "off"),
        (pynvml.NVML_CC_SYSTEM_FEATURE_ENABLED, pynvml.NVML_CC_SYSTEM_DEVTOOLS_MODE_OFF, "on"),
        (pynvml.NVML_CC_SYSTEM_FEATURE_ENABLED, pynvml.NVML_CC_SYSTEM_DEVTOOLS_MODE_ON, "devtools"),
    ],
)
async def test_the_confidential_computing_mode_is_the_drivers(
    backend: NvmlBackend, nvml: FakeNvml, feature: int | None, devtools: int | None, mode: str | None
) -> None:
    if feature is not None:
        nvml.cc_state = pynvml.c_nvmlConfComputeSystemState_t(environment=0, ccFeature=feature, devToolsMode=devtools)
    assert (await backend.inventory()).confidential_computing == mode


async def test_the_gpus_processes_are_the_drivers_compute_processes(backend: NvmlBackend, gpus: list[FakeGpu]) -> None:
    gpus[0].compute_pids = [311, 42, 311]
    assert await backend.processes(2) == (42, 311)
    assert await backend.processes(0) == ()


async def test_mig_profiles_and_placements_come_from_nvml(backend: NvmlBackend) -> None:
    inventory = await backend.inventory()
    profiles = inventory.mig_profiles["NVIDIA H100 80GB HBM3"]
    assert [(p.name, p.gi_profile_id, p.nvml_profile_index) for p in profiles] == [
        ("1g.10gb", 19, 0),
        ("3g.40gb", 9, 2),
        ("7g.80gb", 0, 4),
        ("1g.20gb", 15, 9),
    ]
    assert [(pl.start, pl.size) for pl in profiles[1].placements] == [(0, 4), (4, 4)]
    assert profiles[0].memory_bytes == 10240 * 2**20


async def test_mig_devices_are_created_found_and_destroyed(backend: NvmlBackend, nvml: FakeNvml) -> None:
    device = await backend.create_mig_device(0, "3g.40gb", 4)
    assert device.name == "gpu-0-mig-3g40gb-9-4"
    assert (device.gi_id, device.ci_id, device.uuid[:4]) == (1, 0, "MIG-")
    found = (await backend.inventory()).mig_devices
    assert found == (device,)
    with pytest.raises(InsufficientResources, match="gpu-0-mig-1g10gb-19-5"):
        await backend.create_mig_device(0, "1g.10gb", 5)
    await backend.destroy_mig_device(device)
    await backend.destroy_mig_device(device)
    assert nvml.gpus[1].instances == []


async def test_destroy_leaves_an_instance_that_took_over_the_id(backend: NvmlBackend, nvml: FakeNvml) -> None:
    old = await backend.create_mig_device(0, "7g.80gb", 0)
    await backend.destroy_mig_device(old)
    await backend.create_mig_device(0, "1g.10gb", 0)
    await backend.destroy_mig_device(old)
    assert [i.profile.name for i in nvml.gpus[1].instances] == ["1g.10gb"]


async def test_a_gpu_lost_mid_discovery_is_skipped_and_logged(
    backend: NvmlBackend, gpus: list[FakeGpu], caplog: pytest.LogCaptureFixture
) -> None:
    gpus[2].lost_on = "memory"
    with caplog.at_level(logging.WARNING):
        inventory = await backend.inventory()
    assert [g.name for g in inventory.gpus] == ["gpu-2", "gpu-0"]
    skipped = [r for r in caplog.records if "lost during discovery" in r.getMessage()]
    assert [getattr(r, "device", None) for r in skipped] == ["gpu-1"]


async def test_a_gpu_lost_during_an_operation_is_a_typed_error(backend: NvmlBackend, gpus: list[FakeGpu]) -> None:
    await backend.inventory()
    gpus[1].lost_on = "create"
    with pytest.raises(DeviceLost, match="node node-a: gpu-0: the GPU is lost"):
        await backend.create_mig_device(0, "1g.10gb", 0)


async def test_other_nvml_errors_name_the_device_and_call(
    backend: NvmlBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(handle: object, kind: int) -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetTemperature", denied)
    with pytest.raises(NvmlError, match=r"gpu-1: denied failed: Insufficient Permissions \(NVML error 4\)"):
        await backend.read_counters(1)


async def test_health_counters(backend: NvmlBackend) -> None:
    counters = await backend.read_counters(2)
    assert (counters.minor, counters.ecc_volatile_corrected, counters.ecc_aggregate_uncorrected) == (2, 2, 0)
    assert (counters.row_remap_pending, counters.row_remap_failed, counters.retired_pages_pending) == (
        True,
        False,
        False,
    )
    assert (counters.temperature_c, counters.thermal_slowdown, counters.pcie_replays) == (71, True, 3)
    assert counters.nvlink_up == (True, True, False, True)


async def test_mps_switches_the_compute_mode(backend: NvmlBackend, nvml: FakeNvml) -> None:
    await backend.start_mps(1, MpsSettings(pipe_directory="/run/mps"))
    assert nvml.compute_modes[1] == pynvml.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS
    await backend.stop_mps(1)
    assert nvml.compute_modes[1] == pynvml.NVML_COMPUTEMODE_DEFAULT


async def test_nvml_events_become_typed_events(backend: NvmlBackend, nvml: FakeNvml, gpus: list[FakeGpu]) -> None:
    await backend.inventory()
    events = backend.events()
    nvml.emit(gpus[1], pynvml.nvmlEventTypeXidCriticalError, 43, gi=2, ci=0)
    nvml.emit(gpus[0], pynvml.nvmlEventTypeDoubleBitEccError, 0)
    nvml.emit(gpus[2], 0x4000, 0)
    nvml.emit(gpus[2], 0x8000, 1)
    received: list[DeviceEvent] = [await asyncio.wait_for(anext(events), 5) for _ in range(4)]
    xid, ecc, lost, action = received
    assert isinstance(xid, XidEvent)
    assert (xid.minor, xid.xid, xid.gpu_instance_id, xid.compute_instance_id) == (
        0,
        43,
        2,
        0,
    )
    assert isinstance(ecc, EccEvent)
    assert ecc.double_bit
    assert ecc.minor == 2
    assert ecc.uuid == gpus[0].uuid
    assert isinstance(lost, GpuLostEvent)
    assert lost.minor == 1
    assert isinstance(action, RecoveryActionEvent)
    assert action.action == 1
    assert sorted(nvml.registered) == [0, 1, 2]


async def test_nvidia_smi_failures_are_reported(backend: NvmlBackend, tmp_path: Path) -> None:
    script = tmp_path / "nvidia-smi"
    script.write_text("#!/bin/sh\necho 'Unable to reset this GPU: in use' >&2\nexit 3\n")
    script.chmod(0o755)
    with pytest.raises(DeviceError, match=r"gpu-1: nvidia-smi --gpu-reset -i GPU-\S+ failed: Unable to reset"):
        await backend.reset_gpu(1)


async def test_a_missing_nvidia_smi_is_named(backend: NvmlBackend, tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match=r"gpu-0: nvidia-smi compute-policy .* not found"):
        await backend.set_time_slice(0, TimeSliceInterval.SHORT)


async def test_missing_nvml_suggests_the_simulated_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", missing)
    with pytest.raises(BackendUnavailable) as caught:
        await NvmlBackend.open("node-a")
    assert "node node-a: nvml backend: NVML cannot start (NVML Shared Library Not Found)" in str(caught.value)
    assert "--backend simulated" in str(caught.value)


async def test_the_driver_roots_nvidia_smi_runs_with_the_roots_nvml_preloaded(
    nvml: FakeNvml, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a container the host's nvidia-smi, run from the mounted root, would not find NVML by name."""
    root = tmp_path / "driver-root"
    (root / "usr/lib64").mkdir(parents=True)
    (root / "usr/lib64/libnvidia-ml.so.1").write_bytes(b"")
    (root / "usr/bin").mkdir(parents=True)
    seen = tmp_path / "ld_preload"
    (root / "usr/bin/nvidia-smi").write_text(f'#!/bin/sh\nprintf %s "$LD_PRELOAD" > {seen}\n')
    (root / "usr/bin/nvidia-smi").chmod(0o755)
    preloaded: list[str] = []
    monkeypatch.setattr(ctypes, "CDLL", lambda path, mode=0: preloaded.append(path))
    sysfs = sysfs_tree(tmp_path / "sys", ["0000:07:00.0"])
    backend = await NvmlBackend.open("node-a", driver_root=str(root), sysfs_root=sysfs, event_wait_ms=20)
    try:
        await backend.set_time_slice(2, TimeSliceInterval.SHORT)
    finally:
        await backend.close()
    assert preloaded == [f"{root}/usr/lib64/libnvidia-ml.so.1"]
    assert seen.read_text() == f"{root}/usr/lib64/libnvidia-ml.so.1"
