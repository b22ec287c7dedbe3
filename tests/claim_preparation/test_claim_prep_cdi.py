"""CDI specs: the lowest covering cdiVersion, the checks before writing, atomic files, the claim's spec shape."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from libs.cdi import (
    CdiError,
    ContainerEdits,
    Device,
    DeviceNode,
    Hook,
    Mount,
    Spec,
    SpecDir,
    claim_spec_name,
    decode,
    encode,
    minimum_version,
)
from libs.cdi.nvidia import NodePaths, mps_edits, numbered_mig_minor, parse_mig_minors
from libs.cdi.writer import spec_problems
from libs.devices.simulated import SimulatedBackend, load_profile
from libs.settings import SettingsError, load_settings
from services.claim_preparation.cdi import claim_spec, driver_files, node_paths, prepared_devices
from services.claim_preparation.devices import FullGpu, MigTarget
from services.claim_preparation.record import MpsPlan, PlannedDevice
from services.claim_preparation.settings import Settings
from tests.claim_preparation.claim_prep_support import PROFILE, schema

DRIVER = "gpu.gpudra.io"


def _spec(*, name: str = "dev0", kind: str = "example.com/gpu", **edits: Any) -> Spec:
    return Spec(cdi_version="0.3.0", kind=kind, devices=(Device(name=name, container_edits=ContainerEdits(**edits)),))


@pytest.mark.parametrize(
    ("spec", "version"),
    [
        (_spec(device_nodes=(DeviceNode(path="/dev/x"),)), "0.3.0"),
        (_spec(mounts=(Mount(host_path="/a", container_path="/b"),)), "0.3.0"),
        (_spec(mounts=(Mount(host_path="/a", container_path="/b", type="bind"),)), "0.4.0"),
        (_spec(hooks=(Hook(hook_name="createContainer", path="/usr/bin/nvidia-cdi-hook", args=("a",)),)), "0.3.0"),
        (_spec(device_nodes=(DeviceNode(path="/dev/x", host_path="/sim/dev/x"),)), "0.5.0"),
        (_spec(name="0dev"), "0.5.0"),
        (_spec(kind="example.com/gpu.v2"), "0.6.0"),
        (Spec(cdi_version="0.3.0", kind="example.com/gpu", devices=(), annotations={"a": "b"}), "0.6.0"),
        (_spec(additional_gids=(44,)), "0.7.0"),
        (_spec(name="0dev", additional_gids=(44,)), "0.7.0"),
    ],
)
def test_minimum_version_covers_exactly_the_fields_used(spec: Spec, version: str) -> None:
    assert minimum_version(spec) == version


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (_spec(kind="nokind"), "must be vendor/class"),
        (_spec(kind="-bad.com/gpu"), "vendor '-bad.com'"),
        (_spec(name="bad name"), "device name 'bad name'"),
        (_spec(name="0dev"), "cdiVersion 0.3.0 is below 0.5.0"),
        (Spec(cdi_version="9.9.9", kind="example.com/gpu", devices=()), "not one of"),
    ],
)
def test_unloadable_specs_are_refused_before_writing(tmp_path: Path, spec: Spec, problem: str) -> None:
    assert any(problem in p for p in spec_problems(spec))
    with pytest.raises(CdiError, match="CDI spec claim"):
        SpecDir(tmp_path).write("claim", spec)
    assert list(tmp_path.iterdir()) == []


def test_writes_are_whole_readable_by_the_runtime_and_leave_no_temporaries(tmp_path: Path) -> None:
    specs = SpecDir(tmp_path / "cdi")
    first = _spec(device_nodes=(DeviceNode(path="/dev/a"),))
    second = _spec(device_nodes=(DeviceNode(path="/dev/b"),))
    path = specs.write("vendor-claim_1", first)
    assert specs.write("vendor-claim_1", second) == path
    assert decode(path.read_bytes()) == second
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in (tmp_path / "cdi").iterdir()] == ["vendor-claim_1.json"]
    assert specs.names("vendor-claim_") == ["vendor-claim_1"]
    assert specs.remove("vendor-claim_1") is True
    assert specs.remove("vendor-claim_1") is False


def test_temporaries_of_an_interrupted_write_are_cleaned(tmp_path: Path) -> None:
    specs = SpecDir(tmp_path)
    specs.write("vendor-claim_1", _spec())
    (tmp_path / ".vendor-claim_2.json.tmp-123-abcd").write_text("{")
    assert specs.names() == ["vendor-claim_1"]
    assert specs.remove_temporaries() == 1
    assert sorted(os.listdir(tmp_path)) == ["vendor-claim_1.json"]


def test_spec_names_are_plain_file_names(tmp_path: Path) -> None:
    with pytest.raises(CdiError, match="not a plain file name"):
        SpecDir(tmp_path).file_for("../escape")


def test_mig_minors_table_and_numbering_agree() -> None:
    text = (
        "config 1\nmonitor 2\ngpu0/gi0/access 3\ngpu0/gi0/ci0/access 4\ngpu0/gi1/access 12\ngpu1/gi2/ci3/access 160\n"
    )
    table = parse_mig_minors(text)
    assert table == {(0, 0, None): 3, (0, 0, 0): 4, (0, 1, None): 12, (1, 2, 3): 160}
    for (gpu, gi, ci), minor in table.items():
        assert numbered_mig_minor(gpu, gi, ci) == minor


def test_node_paths_read_the_drivers_table(tmp_path: Path) -> None:
    table = tmp_path / "driver/nvidia-caps/mig-minors"
    table.parent.mkdir(parents=True)
    table.write_text("gpu2/gi5/access 999\n")
    paths = NodePaths.load("/", tmp_path)
    assert paths.mig_minor(2, 5, None) == 999
    assert paths.mig_minor(2, 5, 0) == numbered_mig_minor(2, 5, 0)  # not in the table: the driver's numbering


GPU = FullGpu(name="gpu-1", minor=1, uuid="GPU-1")
MIG = MigTarget(
    name="gpu-2-mig-1g10gb-19-3",
    parent_minor=2,
    parent_uuid="GPU-2",
    profile="1g.10gb",
    placement_start=3,
    dynamic=False,
    uuid="MIG-1",
    gi_id=5,
    ci_id=0,
)


def _devices() -> list[PlannedDevice]:
    return [
        PlannedDevice(request="a", pool="node-a", target=GPU, group="0"),
        PlannedDevice(request="b/sub", pool="node-a", target=MIG, group="default-mig"),
        PlannedDevice(request="c", pool="node-a", target=GPU, group="0"),  # the same device for another request
    ]


def test_claim_spec_on_a_gpu_node_has_the_reference_shape_and_validates() -> None:
    uid = "a1b2c3d4-0000-4000-8000-000000000000"
    spec = claim_spec(DRIVER, uid, _devices(), {}, NodePaths())
    schema().check(spec)
    assert spec.cdi_version == "0.3.0"  # no hostPath, names start with a letter
    assert spec.kind == "k8s.gpu.gpudra.io/claim"
    assert [d.name for d in spec.devices] == [f"{uid}-gpu-1", f"{uid}-gpu-2-mig-1g10gb-19-3"]
    gpu, mig = (tuple(n.path for n in d.container_edits.device_nodes) for d in spec.devices)
    assert gpu == ("/dev/nvidia1",)
    gi = numbered_mig_minor(2, 5, None)
    assert mig == ("/dev/nvidia2", f"/dev/nvidia-caps/nvidia-cap{gi}", f"/dev/nvidia-caps/nvidia-cap{gi + 1}")
    assert [n.path for n in spec.container_edits.device_nodes] == [
        "/dev/nvidiactl",
        "/dev/nvidia-uvm",
        "/dev/nvidia-uvm-tools",
    ]
    assert claim_spec_name(DRIVER, uid) == f"k8s.gpu.gpudra.io-claim_{uid}"


def test_a_uid_starting_with_a_digit_needs_0_5_0() -> None:
    spec = claim_spec(DRIVER, "1f00", _devices(), {}, NodePaths())
    assert spec.cdi_version == "0.5.0"
    schema().check(spec)


def test_mps_edits_go_to_the_groups_devices_only() -> None:
    plan = MpsPlan(group="0", directory="/run/mps/u/0", devices=("gpu-1",), minors=(1,))
    edits = mps_edits(plan.pipe_dir, plan.shm_dir)
    spec = claim_spec(DRIVER, "u1", _devices(), {"0": edits}, NodePaths(host_root="/sim"))
    schema().check(json.loads(encode(spec)))
    gpu, mig = spec.devices
    assert gpu.container_edits.env == ("CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps",)
    assert {m.container_path: m.host_path for m in gpu.container_edits.mounts} == {
        "/tmp/nvidia-mps": "/run/mps/u/0/pipe",
        "/dev/shm": "/run/mps/u/0/shm",
    }
    assert mig.container_edits.mounts == ()
    assert gpu.container_edits.device_nodes[0].host_path == "/sim/dev/nvidia1"
    assert spec.cdi_version == "0.5.0"


def test_prepared_devices_name_requests_as_the_kubelet_does() -> None:
    devices = prepared_devices(DRIVER, "u1", _devices())
    assert [(d.request_names, d.device) for d in devices] == [
        (["a"], "gpu-1"),
        (["b"], "gpu-2-mig-1g10gb-19-3"),
        (["c"], "gpu-1"),
    ]
    assert devices[1].cdi_device_ids == ["k8s.gpu.gpudra.io/claim=u1-gpu-2-mig-1g10gb-19-3"]


def test_the_schema_catches_what_it_should() -> None:
    validator = schema()
    assert validator.problems({"cdiVersion": "0.3.0", "kind": "a.b/c", "devices": [{"name": "x"}]}) == [
        "$.devices[0]: 'containerEdits' is a required property"
    ]


def test_a_spec_naming_missing_host_nodes_is_caught_on_real_nodes(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    for name in ("nvidia1", "nvidiactl", "nvidia-uvm"):
        (tmp_path / "dev" / name).touch()
    real = NodePaths(host_root=str(tmp_path), require_nodes=True)
    spec = claim_spec(DRIVER, "u1", _devices()[:1], {}, real)
    assert real.missing(spec) == [f"{tmp_path}/dev/nvidia-uvm-tools"]
    assert NodePaths(host_root=str(tmp_path)).missing(spec) == []  # stand-ins of a simulated node need not exist


async def test_a_simulated_nodes_spec_carries_its_stand_in_driver_as_a_gpu_nodes_would(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = tmp_path / "simulated"
    await SimulatedBackend.open("node-a", sim, PROFILE)
    version = load_profile(PROFILE).driver_version
    with caplog.at_level(logging.INFO):
        paths = node_paths(str(sim), driver_files(str(sim)), require_nodes=False)
    assert f"driver root {sim}: driver {version}" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    spec = claim_spec(DRIVER, "u1", _devices(), {}, paths)
    schema().check(spec)
    assert spec.cdi_version == "0.5.0"  # the stand-in device nodes' hostPath; mounts and hooks need nothing newer
    libs = "/usr/lib/x86_64-linux-gnu"
    mounts = spec.container_edits.mounts
    assert {m.container_path for m in mounts} >= {
        f"{libs}/libcuda.so.{version}",
        f"{libs}/libnvidia-ml.so.{version}",
        "/usr/bin/nvidia-smi",
        "/usr/bin/nvidia-cuda-mps-control",
        f"/lib/firmware/nvidia/{version}/gsp_ga10x.bin",
    }
    assert all(m.host_path == f"{sim}{m.container_path}" and "ro" in m.options for m in mounts)
    hook = f"{sim}/usr/bin/nvidia-cdi-hook"
    assert [(h.hook_name, h.path, h.args[1]) for h in spec.container_edits.hooks] == [
        ("createContainer", hook, "create-symlinks"),
        ("createContainer", hook, "update-ldcache"),
    ]
    assert f"libcuda.so.1::{libs}/libcuda.so" in spec.container_edits.hooks[0].args
    assert all(d.container_edits.mounts == () for d in spec.devices)  # the driver is spec-wide, once


async def test_a_driver_root_read_under_a_mount_is_named_at_its_host_path_in_specs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The DaemonSet's view: the host's / mounted at /driver-root; the runtime reads the spec on the host."""
    mounted = tmp_path / "driver-root"
    await SimulatedBackend.open("node-a", mounted, PROFILE)
    with caplog.at_level(logging.INFO):
        paths = node_paths("/", driver_files("/", driver_mount=str(mounted)), require_nodes=False)
    assert f"driver root / (read at {mounted}): driver {load_profile(PROFILE).driver_version}" in caplog.text
    spec = claim_spec(DRIVER, "u1", _devices(), {}, paths)
    mounts = spec.container_edits.mounts
    assert mounts
    assert all(m.host_path == m.container_path for m in mounts)
    assert {h.path for h in spec.container_edits.hooks} == {"/usr/bin/nvidia-cdi-hook"}


async def test_without_a_hook_binary_specs_get_no_hooks_and_the_log_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = tmp_path / "simulated"
    await SimulatedBackend.open("node-a", sim, PROFILE)
    (sim / "usr/bin/nvidia-cdi-hook").unlink()
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    paths = node_paths(str(sim), driver_files(str(sim)), require_nodes=False)
    spec = claim_spec(DRIVER, "u1", _devices(), {}, paths)
    assert spec.container_edits.hooks == ()
    assert spec.container_edits.mounts
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"driver root {sim}: no nvidia-cdi-hook or nvidia-ctk" in warning


def test_a_gpu_node_without_the_driver_libraries_warns_and_still_gets_its_device_nodes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "driver-root"
    empty.mkdir()
    paths = node_paths("/", driver_files(str(empty)), require_nodes=True)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"driver root {empty}: " in warning
    assert "libcuda.so." in warning
    assert "GPUDRA_DRIVER_ROOT" in warning
    spec = claim_spec(DRIVER, "u1", _devices(), {}, paths)
    assert spec.container_edits.mounts == ()
    assert spec.container_edits.hooks == ()
    assert [n.path for n in spec.container_edits.device_nodes] == [
        "/dev/nvidiactl",
        "/dev/nvidia-uvm",
        "/dev/nvidia-uvm-tools",
    ]
    assert spec.devices[0].container_edits.device_nodes == (DeviceNode(path="/dev/nvidia1"),)


@pytest.mark.parametrize(
    ("values", "root"),
    [
        ({}, "/"),
        ({"backend": "simulated", "simulated_dir": "/var/lib/gpudra/simulated"}, "/var/lib/gpudra/simulated"),
        ({"backend": "simulated", "simulated_dir": "/sim", "dev_root": "/dev-root"}, "/sim"),
        ({"driver_root": "/run/nvidia/driver"}, "/run/nvidia/driver"),
    ],
)
def test_the_driver_root_is_the_hosts_for_nvml_and_the_simulated_machines_otherwise(
    values: dict[str, str], root: str
) -> None:
    assert Settings(node_name="node-a", **values).driver_root_path == root  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "seen"),
    [
        ({}, "/"),
        ({"driver_root_mount": "/driver-root"}, "/driver-root"),
        ({"driver_root": "/run/nvidia/driver"}, "/run/nvidia/driver"),
        ({"backend": "simulated", "simulated_dir": "/sim"}, "/sim"),
    ],
)
def test_the_driver_root_is_read_where_it_is_mounted_else_where_it_is(values: dict[str, str], seen: str) -> None:
    assert Settings(node_name="node-a", **values).driver_root_seen == seen  # type: ignore[arg-type]


async def test_a_named_hook_binary_is_what_specs_call_and_the_start_up_line_names_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The GPU Operator's layout: the driver in a driver container, the toolkit on the host outside it."""
    hook = "/usr/local/nvidia/toolkit/nvidia-cdi-hook"
    mounted = tmp_path / "driver-root"
    await SimulatedBackend.open("node-a", mounted, PROFILE)
    settings = load_settings(
        Settings,
        [],
        {
            "GPUDRA_NODE_NAME": "node-a",
            "GPUDRA_DRIVER_ROOT": "/run/nvidia/driver",
            "GPUDRA_DRIVER_ROOT_MOUNT": str(mounted),
            "GPUDRA_CDI_HOOK_PATH": hook,
        },
    )
    with caplog.at_level(logging.INFO):
        files = driver_files(
            settings.driver_root_path, driver_mount=settings.driver_root_mount, hook=settings.cdi_hook_path
        )
    assert files.hook is not None
    assert files.hook.path == hook
    assert f"hook {hook}" in caplog.text
    paths = node_paths("/", files, require_nodes=False)
    assert {h.path for h in paths.driver.hooks} == {hook}


@pytest.mark.parametrize("value", ["toolkit/nvidia-cdi-hook", "/usr/bin/nvidia-container-runtime-hook"])
def test_a_hook_path_that_names_no_hook_binary_is_refused_at_start(value: str) -> None:
    with pytest.raises(SettingsError, match="--cdi-hook-path / GPUDRA_CDI_HOOK_PATH"):
        load_settings(Settings, [], {"GPUDRA_NODE_NAME": "node-a", "GPUDRA_CDI_HOOK_PATH": value})
