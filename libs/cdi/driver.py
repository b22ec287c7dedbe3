"""The NVIDIA driver's user-space files a GPU container needs, found once under a driver root, as CDI edits.

Device nodes alone do not make a CUDA container: it also needs the driver's libraries of the kernel module's
version (``libcuda``, ``libnvidia-ml``, the JIT compilers), its tools (``nvidia-smi``, the MPS daemons), the GSP
firmware and the sockets of the persistence and fabric manager daemons. The NVIDIA container toolkit's CDI specs
carry them, and so do the reference driver's; a spec without them depends on the runtime's legacy NVIDIA hook.
Each is bind-mounted read-only at the path it has in the driver root, so the container sees the host's layout;
``hostPath`` is under the root when that is not ``/`` (a driver container's ``/run/nvidia/driver``, a simulated
machine's directory).

Two paths name the root: where it is on the host, which every path written into a spec is under because the
container runtime reads specs on the host, and where this process reads it, which differs when the service runs
in a container that has the host's root mounted elsewhere (``/driver-root``). Files are looked for under the
second and named under the first.

When the toolkit's hook binary is there, two ``createContainer`` hooks finish the job as the toolkit's specs do:
``create-symlinks`` recreates the links the libraries are loaded by (the host's ``libcuda.so.1`` and the like,
and ``libcuda.so``, which JIT compilers link against), so an image without ``ldconfig`` still finds them;
``update-ldcache`` adds the library folders to the container's loader cache. The runtime runs hooks on the host,
so the hook's path is a host path. Neither hooks nor plain mounts raise the ``cdiVersion`` (``libs.cdi.version``).

``discover_driver`` only reads the file system (no NVML, no logging): the service runs it once at start and
reports what is missing, and tests run it over a driver root built in a temporary directory. ``locate`` is the
same search for one file, for code that loads the driver's NVML or runs its ``nvidia-smi`` (``libs.devices``).
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import msgspec

from libs.cdi.spec import ContainerEdits, Hook, Mount

# Compute and utility libraries (no graphics or video), each installed as ``<name>.so.<driver version>``.
LIBRARIES = (
    "libcuda",
    "libcudadebugger",
    "libnvidia-ml",
    "libnvidia-cfg",
    "libnvidia-ptxjitcompiler",
    "libnvidia-nvvm",
    "libnvidia-gpucomp",
    "libnvidia-allocator",
    "libnvidia-opencl",
    "libnvidia-pkcs11",
    "libnvidia-pkcs11-openssl3",
)
REQUIRED = ("libcuda", "libnvidia-ml")
"""Without these no CUDA or NVML program runs; the others depend on the driver's age and the workload."""
BINARIES = (
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
)
SOCKETS = ("/run/nvidia-persistenced/socket", "/run/nvidia-fabricmanager/socket")
# /usr first: on merged-/usr systems /lib64 is a link to usr/lib64, and the canonical path is the one to mount.
LIB_DIRS = ("/usr/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib64", "/usr/lib")
BIN_DIRS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin")
FIRMWARE_DIRS = ("/lib/firmware/nvidia", "/usr/lib/firmware/nvidia")
HOOK_DIRS = (*BIN_DIRS, "/usr/local/nvidia/toolkit")  # the last: where the GPU Operator installs the toolkit
HOOK_TOOLS = (("nvidia-cdi-hook",), ("nvidia-ctk", "hook"))
"""How each hook binary is called, the preferred first (``nvidia-ctk hook`` is the older spelling)."""
MOUNT_OPTIONS = ("ro", "nosuid", "nodev", "bind")
VERSION_FILE = "driver/nvidia/version"

_KERNEL_VERSION = re.compile(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)")
_LIBCUDA = re.compile(r"^libcuda\.so\.(\d+(?:\.\d+)+)$")
_MAX_LINK_HOPS = 8


class HookTool(msgspec.Struct, frozen=True, kw_only=True):
    """The toolkit's hook binary: its path on the host and the arguments every hook call starts with."""

    path: str
    argv: tuple[str, ...]


class Link(msgspec.Struct, frozen=True, kw_only=True):
    """A symlink to create in the container: ``path`` pointing at ``target`` (a name in the same folder)."""

    target: str
    path: str


class DriverFiles(msgspec.Struct, frozen=True, kw_only=True):
    """What a driver root offers containers; paths are the ones inside the root (and in the container)."""

    root: str
    version: str = ""
    libraries: tuple[str, ...] = ()
    links: tuple[Link, ...] = ()
    binaries: tuple[str, ...] = ()
    firmware: tuple[str, ...] = ()
    sockets: tuple[str, ...] = ()
    hook: HookTool | None = None

    @property
    def missing(self) -> tuple[str, ...]:
        """The ``REQUIRED`` libraries that were not found (all of them when no driver version was)."""
        found = {posixpath.basename(path) for path in self.libraries}
        return tuple(name for name in REQUIRED if f"{name}.so.{self.version}" not in found)


def rooted(root: str, path: str) -> str:
    """Where ``path`` of a root is on the host: itself when the root is ``/``."""
    return path if root in ("", "/") else root.rstrip("/") + path


def discover_driver(
    root: str, *, mount: str = "", proc_root: Path | str = "/proc", search_path: str = "", hook: str = ""
) -> DriverFiles:
    """The driver files of the host's ``root``, read where this process sees it: ``mount``, or ``root`` itself.

    ``search_path`` (a ``PATH`` value) is searched for the hook after the root, but only when the root is read
    at its own path: a process that sees the host's root under a mount runs in a container, and its ``PATH``
    names the container's files, which the runtime on the host cannot run. ``hook``, a host path the operator
    gives (``hook_tool``), replaces the search: a toolkit installed outside the driver root is found no other way
    from inside a container. The version is the kernel module's
    (``<proc_root>/driver/nvidia/version``) when the root has its libraries, else the newest
    ``libcuda.so.<version>`` in the root: a simulated root has no kernel module of its own.
    """
    seen = mount or root
    tool = hook_tool(hook) if hook else _hook_tool(root, seen, search_path if seen == root else "")
    version = driver_version(seen, proc_root=proc_root)
    if not version:
        return DriverFiles(root=root, hook=tool)
    libraries = tuple(found for name in LIBRARIES if (found := _first(seen, LIB_DIRS, f"{name}.so.{version}")))
    return DriverFiles(
        root=root,
        version=version,
        libraries=libraries,
        links=tuple(_links(seen, libraries)),
        binaries=tuple(found for name in BINARIES if (found := _first(seen, BIN_DIRS, name))),
        firmware=_firmware(seen, version),
        sockets=tuple(path for path in SOCKETS if os.path.exists(rooted(seen, path))),
        hook=tool,
    )


def driver_version(seen: str, *, proc_root: Path | str = "/proc") -> str:
    """The version ``discover_driver`` would find for the root this process reads at ``seen`` ("": no driver)."""
    return _version(seen, _read(Path(proc_root) / VERSION_FILE))


def locate(root: str, directories: Iterable[str], name: str) -> str | None:
    """Where this process reaches ``name`` in the first of the root's ``directories`` that has it."""
    found = _first(root, directories, name)
    return rooted(root, found) if found else None


def driver_edits(files: DriverFiles) -> ContainerEdits:
    """Read-only bind mounts of every file found, and the hooks when there is a hook binary and a library."""
    paths = (*files.libraries, *files.binaries, *files.firmware, *files.sockets)
    mounts = tuple(Mount(host_path=rooted(files.root, p), container_path=p, options=MOUNT_OPTIONS) for p in paths)
    return ContainerEdits(mounts=mounts, hooks=_hooks(files))


def _hooks(files: DriverFiles) -> tuple[Hook, ...]:
    if files.hook is None or not files.libraries:
        return ()
    links = [arg for link in files.links for arg in ("--link", f"{link.target}::{link.path}")]
    folders = dict.fromkeys(posixpath.dirname(path) for path in files.libraries)
    calls = [["create-symlinks", *links]] if links else []
    calls.append(["update-ldcache", *(arg for folder in folders for arg in ("--folder", folder))])
    tool = files.hook
    return tuple(Hook(hook_name="createContainer", path=tool.path, args=(*tool.argv, *call)) for call in calls)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _names(root: str, directory: str) -> list[str]:
    try:
        return sorted(os.listdir(rooted(root, directory)))
    except OSError:
        return []


def _version(root: str, kernel_text: str) -> str:
    match = _KERNEL_VERSION.search(kernel_text)
    kernel = match.group(1) if match else ""
    installed = {m.group(1) for d in LIB_DIRS for name in _names(root, d) if (m := _LIBCUDA.match(name))}
    if kernel and (kernel in installed or not installed):
        return kernel
    return max(installed, key=lambda v: tuple(int(part) for part in v.split(".")), default="")


def _first(root: str, directories: Iterable[str], name: str) -> str | None:
    """The path of the first regular file ``name`` in ``directories`` of the root."""
    return next((f"{d}/{name}" for d in directories if os.path.isfile(rooted(root, f"{d}/{name}"))), None)


def _links(root: str, libraries: Iterable[str]) -> Iterator[Link]:
    """The host's links to each library in its folder (``libcuda.so.1`` -> ``libcuda.so.<version>``), and
    ``libcuda.so`` -> ``libcuda.so.1`` -> ``libcuda.so.<version>`` where the host lacks them."""
    for library in libraries:
        folder, file = posixpath.split(library)
        stem = file.split(".so.", 1)[0]
        found = [
            Link(target=os.readlink(rooted(root, f"{folder}/{name}")), path=f"{folder}/{name}")
            for name in _names(root, folder)
            if name.startswith(f"{stem}.so") and name != file and _leads_to(Path(rooted(root, folder)), name, file)
        ]
        yield from found
        if stem == "libcuda":
            have = {link.path for link in found}
            for target, name in ((file, "libcuda.so.1"), ("libcuda.so.1", "libcuda.so")):
                if f"{folder}/{name}" not in have:
                    yield Link(target=target, path=f"{folder}/{name}")


def _leads_to(folder: Path, name: str, file: str) -> bool:
    """Whether ``name`` is a symlink that reaches ``file`` through links within ``folder``."""
    for _ in range(_MAX_LINK_HOPS):
        if not (folder / name).is_symlink():
            return False
        name = os.readlink(folder / name)
        if "/" in name:
            return False
        if name == file:
            return True
    return False


def _firmware(root: str, version: str) -> tuple[str, ...]:
    for directory in FIRMWARE_DIRS:
        folder = f"{directory}/{version}"
        names = _names(root, folder)
        found = tuple(f"{folder}/{name}" for name in names if name.startswith("gsp") and name.endswith(".bin"))
        if found:
            return found
    return ()


def hook_tool(path: str) -> HookTool:
    """The hook binary at the host ``path`` an operator named; its file name says how it is called.

    Raises ``ValueError`` for a relative path (the runtime runs hooks without this process's working directory)
    or a name that is neither tool."""
    if not posixpath.isabs(path):
        raise ValueError(f"CDI hook path {path!r} is not absolute; name the binary as the host sees it")
    name = posixpath.basename(path)
    argv = next((argv for argv in HOOK_TOOLS if argv[0] == name), None)
    if argv is None:
        tools = " or ".join(argv[0] for argv in HOOK_TOOLS)
        raise ValueError(f"CDI hook path {path!r} names {name!r}, which is not {tools}")
    return HookTool(path=path, argv=argv)


def _hook_tool(root: str, seen: str, search_path: str) -> HookTool | None:
    """The first hook binary in the root's bin folders (checked where ``seen``, named on the host), else on
    ``search_path``."""
    for argv in HOOK_TOOLS:
        candidates = [(rooted(seen, f"{d}/{argv[0]}"), rooted(root, f"{d}/{argv[0]}")) for d in HOOK_DIRS]
        on_path = [os.path.join(d, argv[0]) for d in search_path.split(os.pathsep) if os.path.isabs(d)]
        candidates += [(p, p) for p in on_path]
        path = next((host for p, host in candidates if os.path.isfile(p) and os.access(p, os.X_OK)), None)
        if path:
            return HookTool(path=path, argv=argv)
    return None
