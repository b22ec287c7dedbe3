"""Driver discovery over a driver root built from real files, and the mounts and hooks it turns into."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from libs.cdi import ContainerEdits, Device, Hook, Mount, Spec, minimum_version
from libs.cdi.driver import (
    BIN_DIRS,
    LIB_DIRS,
    MOUNT_OPTIONS,
    REQUIRED,
    DriverFiles,
    HookTool,
    Link,
    discover_driver,
    driver_edits,
    hook_tool,
    locate,
    rooted,
)
from tests.claim_preparation.claim_prep_support import schema

VERSION = "550.54.15"
LIBS = "/usr/lib/x86_64-linux-gnu"
KERNEL_LINE = f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {VERSION}  Release Build  (dvs-builder@U16)\n"


def _file(root: Path, path: str, mode: int = 0o644) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.touch(mode)
    target.chmod(mode)


def _link(root: Path, path: str, target: str) -> None:
    (root / path.lstrip("/")).symlink_to(target)


def _proc(tmp_path: Path, text: str = KERNEL_LINE) -> Path:
    proc = tmp_path / "proc"
    (proc / "driver/nvidia").mkdir(parents=True)
    (proc / "driver/nvidia/version").write_text(text)
    return proc


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A driver root as a Debian host has it after ``ldconfig``, with an older driver's libcuda left behind."""
    root = tmp_path / "driver"
    for name in ("libcuda", "libnvidia-ml", "libnvidia-ptxjitcompiler", "libnvidia-nvvm", "libnvidia-gpucomp"):
        _file(root, f"{LIBS}/{name}.so.{VERSION}")
    _file(root, f"{LIBS}/libcuda.so.535.104.05")
    _link(root, f"{LIBS}/libcuda.so.1", f"libcuda.so.{VERSION}")
    _link(root, f"{LIBS}/libcuda.so", "libcuda.so.1")
    _link(root, f"{LIBS}/libnvidia-ml.so.1", f"libnvidia-ml.so.{VERSION}")
    _link(root, f"{LIBS}/libnvidia-nvvm.so.4", f"libnvidia-nvvm.so.{VERSION}")
    _link(root, f"{LIBS}/libnvidia-nvvm.so.3", "/elsewhere/libnvidia-nvvm.so")  # not a link within the folder
    _file(root, f"{LIBS}/libnvidia-ml.so.0")  # a plain file, not a link
    for name in ("nvidia-smi", "nvidia-cuda-mps-control"):
        _file(root, f"/usr/bin/{name}", 0o755)
    _file(root, "/usr/bin/nvidia-cdi-hook", 0o755)
    _file(root, f"/lib/firmware/nvidia/{VERSION}/gsp_ga10x.bin")
    _file(root, f"/lib/firmware/nvidia/{VERSION}/gsp_tu10x.bin")
    _file(root, f"/lib/firmware/nvidia/{VERSION}/README")
    _file(root, "/run/nvidia-persistenced/socket")
    return root


def test_discovery_finds_the_files_of_the_kernel_modules_version(tmp_path: Path, root: Path) -> None:
    files = discover_driver(str(root), proc_root=_proc(tmp_path))
    assert files == DriverFiles(
        root=str(root),
        version=VERSION,
        libraries=tuple(
            f"{LIBS}/{name}.so.{VERSION}"
            for name in ("libcuda", "libnvidia-ml", "libnvidia-ptxjitcompiler", "libnvidia-nvvm", "libnvidia-gpucomp")
        ),
        links=(
            Link(target="libcuda.so.1", path=f"{LIBS}/libcuda.so"),
            Link(target=f"libcuda.so.{VERSION}", path=f"{LIBS}/libcuda.so.1"),
            Link(target=f"libnvidia-ml.so.{VERSION}", path=f"{LIBS}/libnvidia-ml.so.1"),
            Link(target=f"libnvidia-nvvm.so.{VERSION}", path=f"{LIBS}/libnvidia-nvvm.so.4"),
        ),
        binaries=("/usr/bin/nvidia-smi", "/usr/bin/nvidia-cuda-mps-control"),
        firmware=(f"/lib/firmware/nvidia/{VERSION}/gsp_ga10x.bin", f"/lib/firmware/nvidia/{VERSION}/gsp_tu10x.bin"),
        sockets=("/run/nvidia-persistenced/socket",),
        hook=HookTool(path=f"{root}/usr/bin/nvidia-cdi-hook", argv=("nvidia-cdi-hook",)),
    )
    assert files.missing == ()


def test_edits_mount_each_file_read_only_at_its_path_from_under_the_root(tmp_path: Path, root: Path) -> None:
    edits = driver_edits(discover_driver(str(root), proc_root=_proc(tmp_path)))
    mounts = {m.container_path: m for m in edits.mounts}
    assert mounts[f"{LIBS}/libcuda.so.{VERSION}"] == Mount(
        host_path=f"{root}{LIBS}/libcuda.so.{VERSION}",
        container_path=f"{LIBS}/libcuda.so.{VERSION}",
        options=MOUNT_OPTIONS,
    )
    assert MOUNT_OPTIONS == ("ro", "nosuid", "nodev", "bind")
    assert all(m.host_path == f"{root}{m.container_path}" and not m.type for m in edits.mounts)
    assert set(mounts) >= {"/usr/bin/nvidia-smi", "/run/nvidia-persistenced/socket"}
    hook = f"{root}/usr/bin/nvidia-cdi-hook"
    assert edits.hooks == (
        Hook(
            hook_name="createContainer",
            path=hook,
            args=(
                "nvidia-cdi-hook",
                "create-symlinks",
                *("--link", f"libcuda.so.1::{LIBS}/libcuda.so"),
                *("--link", f"libcuda.so.{VERSION}::{LIBS}/libcuda.so.1"),
                *("--link", f"libnvidia-ml.so.{VERSION}::{LIBS}/libnvidia-ml.so.1"),
                *("--link", f"libnvidia-nvvm.so.{VERSION}::{LIBS}/libnvidia-nvvm.so.4"),
            ),
        ),
        Hook(hook_name="createContainer", path=hook, args=("nvidia-cdi-hook", "update-ldcache", "--folder", LIBS)),
    )


def test_on_the_hosts_own_root_host_and_container_paths_are_the_same(tmp_path: Path, root: Path) -> None:
    files = discover_driver(str(root), proc_root=_proc(tmp_path))
    edits = driver_edits(DriverFiles(root="/", version=files.version, libraries=files.libraries))
    assert [(m.host_path, m.container_path) for m in edits.mounts] == [(p, p) for p in files.libraries]
    assert edits.hooks == ()  # no hook binary


def test_without_a_proc_file_the_newest_libcuda_in_the_root_gives_the_version(tmp_path: Path, root: Path) -> None:
    assert discover_driver(str(root), proc_root=tmp_path / "no-proc").version == VERSION
    older = _proc(tmp_path, "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023")
    files = discover_driver(str(root), proc_root=older)
    assert files.version == "535.104.05"
    assert files.libraries == (f"{LIBS}/libcuda.so.535.104.05",)
    assert files.missing == ("libnvidia-ml",)


def test_a_kernel_module_the_root_has_no_libraries_of_does_not_hide_them(tmp_path: Path, root: Path) -> None:
    """A simulated root under a GPU node's /proc: the kernel's version is not the stand-ins'."""
    other = _proc(tmp_path, "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.1.2  Mon Jan 1 2025")
    assert discover_driver(str(root), proc_root=other).version == VERSION


def test_the_library_folders_and_links_come_from_where_the_root_has_them(tmp_path: Path) -> None:
    root = tmp_path / "driver"
    _file(root, f"/usr/lib64/libcuda.so.{VERSION}")
    _file(root, f"/usr/lib/aarch64-linux-gnu/libnvidia-ml.so.{VERSION}")
    _file(root, "/usr/local/nvidia/toolkit/nvidia-cdi-hook", 0o755)
    files = discover_driver(str(root), proc_root=_proc(tmp_path))
    assert files.libraries == (
        f"/usr/lib64/libcuda.so.{VERSION}",
        f"/usr/lib/aarch64-linux-gnu/libnvidia-ml.so.{VERSION}",
    )
    assert files.links == (  # the host has no links: libcuda's are made anyway
        Link(target=f"libcuda.so.{VERSION}", path="/usr/lib64/libcuda.so.1"),
        Link(target="libcuda.so.1", path="/usr/lib64/libcuda.so"),
    )
    ldcache = driver_edits(files).hooks[-1].args
    assert ldcache == (
        "nvidia-cdi-hook",
        "update-ldcache",
        "--folder",
        "/usr/lib64",
        "--folder",
        "/usr/lib/aarch64-linux-gnu",
    )


def test_no_hook_binary_means_no_hooks(tmp_path: Path, root: Path) -> None:
    (root / "usr/bin/nvidia-cdi-hook").unlink()
    bin_dir = tmp_path / "bin"
    _file(bin_dir, "/nvidia-cdi-hook", 0o644)  # not executable: not a hook
    files = discover_driver(str(root), proc_root=_proc(tmp_path), search_path=f"{bin_dir}{os.pathsep}relative/bin")
    assert files.hook is None
    edits = driver_edits(files)
    assert edits.hooks == ()
    assert len(edits.mounts) == len(files.libraries + files.binaries + files.firmware + files.sockets)


def test_nvidia_ctk_on_path_is_the_fallback_and_keeps_its_host_path(tmp_path: Path, root: Path) -> None:
    (root / "usr/bin/nvidia-cdi-hook").unlink()
    bin_dir = tmp_path / "bin"
    _file(bin_dir, "/nvidia-ctk", 0o755)
    files = discover_driver(str(root), proc_root=_proc(tmp_path), search_path=str(bin_dir))
    assert files.hook == HookTool(path=f"{bin_dir}/nvidia-ctk", argv=("nvidia-ctk", "hook"))
    assert [h.args[:3] for h in driver_edits(files).hooks] == [
        ("nvidia-ctk", "hook", "create-symlinks"),
        ("nvidia-ctk", "hook", "update-ldcache"),
    ]


@pytest.mark.parametrize("host_root", ["/", "/run/nvidia/driver"])
def test_a_root_read_under_a_mount_is_found_there_and_named_at_its_host_path(
    tmp_path: Path, root: Path, host_root: str
) -> None:
    """A service in a container sees the host's root at ``/driver-root``; the runtime on the host reads the spec."""
    proc = _proc(tmp_path)
    here = discover_driver(str(root), proc_root=proc)
    mounted = discover_driver(host_root, mount=str(root), proc_root=proc)
    hook = rooted(host_root, "/usr/bin/nvidia-cdi-hook")
    assert mounted == msgspec.structs.replace(here, root=host_root, hook=HookTool(path=hook, argv=("nvidia-cdi-hook",)))
    assert mounted.libraries
    edits = driver_edits(mounted)
    assert {m.host_path for m in edits.mounts} == {
        rooted(host_root, p) for p in mounted.libraries + mounted.binaries + mounted.firmware + mounted.sockets
    }
    assert not any(m.host_path.startswith(str(root)) for m in edits.mounts)
    assert {h.path for h in edits.hooks} == {hook}


def test_path_is_not_searched_for_the_hook_when_the_root_is_read_under_a_mount(tmp_path: Path, root: Path) -> None:
    """The service's ``PATH`` names the container's files, which the runtime on the host cannot run."""
    (root / "usr/bin/nvidia-cdi-hook").unlink()
    bin_dir = tmp_path / "bin"
    _file(bin_dir, "/nvidia-cdi-hook", 0o755)
    proc = _proc(tmp_path)
    assert discover_driver("/", mount=str(root), proc_root=proc, search_path=str(bin_dir)).hook is None
    on_host = discover_driver(str(root), mount=str(root), proc_root=proc, search_path=str(bin_dir))
    assert on_host.hook == HookTool(path=f"{bin_dir}/nvidia-cdi-hook", argv=("nvidia-cdi-hook",))


@pytest.mark.parametrize(
    ("path", "argv"),
    [
        ("/usr/local/nvidia/toolkit/nvidia-cdi-hook", ("nvidia-cdi-hook",)),
        ("/opt/toolkit/nvidia-ctk", ("nvidia-ctk", "hook")),
    ],
)
def test_a_hook_path_the_operator_names_replaces_the_search(
    tmp_path: Path, root: Path, path: str, argv: tuple[str, ...]
) -> None:
    """The GPU Operator's toolkit is outside the driver root, where a service in a container cannot look for it:
    the host path is taken as given, and its name says how it is called."""
    files = discover_driver("/run/nvidia/driver", mount=str(root), proc_root=_proc(tmp_path), hook=path)
    assert files.hook == HookTool(path=path, argv=argv)
    assert {(h.path, h.args[: len(argv) + 1]) for h in driver_edits(files).hooks} == {
        (path, (*argv, "create-symlinks")),
        (path, (*argv, "update-ldcache")),
    }


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("toolkit/nvidia-cdi-hook", "is not absolute"),
        ("/usr/bin/nvidia-container-runtime-hook", "which is not nvidia-cdi-hook or nvidia-ctk"),
    ],
)
def test_a_hook_path_that_cannot_be_called_is_refused_by_name(path: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as raised:
        hook_tool(path)
    assert repr(path) in str(raised.value)


def test_locate_gives_the_first_folder_that_has_the_file_as_this_process_reaches_it(root: Path) -> None:
    _file(root, "/usr/lib/libnvidia-ml.so.1")  # a later folder in the search list
    assert locate(str(root), LIB_DIRS, "libnvidia-ml.so.1") == f"{root}{LIBS}/libnvidia-ml.so.1"  # a link
    assert locate(str(root), BIN_DIRS, "nvidia-smi") == f"{root}/usr/bin/nvidia-smi"
    assert locate(str(root), BIN_DIRS, "nvidia-imex") is None
    assert locate(str(root), LIB_DIRS, "libnvidia-nvvm.so.3") is None  # a link that leads nowhere


def test_an_empty_root_has_nothing_and_misses_what_every_program_needs(tmp_path: Path) -> None:
    files = discover_driver(str(tmp_path), proc_root=tmp_path)
    assert files == DriverFiles(root=str(tmp_path))
    assert files.missing == REQUIRED
    assert driver_edits(files) == ContainerEdits()


def test_mounts_and_hooks_need_no_newer_cdi_version_and_the_spec_validates(tmp_path: Path, root: Path) -> None:
    """Per the CDI project's version rules only a mount's ``type`` (0.4.0) would; the edits set none."""
    edits = driver_edits(discover_driver(str(root), proc_root=_proc(tmp_path)))
    assert edits.hooks
    assert edits.mounts
    spec = Spec(cdi_version="0.3.0", kind="example.com/gpu", devices=(Device(name="gpu0", container_edits=edits),))
    assert minimum_version(spec) == "0.3.0"
    schema().check(spec)
    typed = ContainerEdits(mounts=(Mount(host_path="/a", container_path="/a", options=MOUNT_OPTIONS, type="bind"),))
    assert (
        minimum_version(Spec(cdi_version="0.3.0", kind="example.com/gpu", devices=(), container_edits=typed)) == "0.4.0"
    )
