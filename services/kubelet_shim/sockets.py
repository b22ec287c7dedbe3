"""Unix socket files of the shim: claimed at start, owner-only, removed at a clean stop.

gRPC binds the socket itself and, before binding, unlinks whatever socket sits at the path, even one a
live process still serves. So the shim decides first: a socket nobody answers on is stale (a killed shim
left it) and is replaced; a socket someone answers on belongs to another running plugin and is left
alone, with an error naming it; anything that is not a socket is never deleted.

The kubelet treats the registration socket's existence as "plugin present", so removal at stop is what
deregisters the driver; a shim killed with -9 leaves its sockets, and the next start replaces them.

A unix socket address holds at most 107 bytes, and a standalone state directory can be deeper than that
allows. Such a socket is bound through its directory (``/proc/self/fd/<dir fd>/<name>``); only a socket
that clients find by listing its directory may be that long, as ``gpudra kubelet`` finds the
registration socket. The DRA socket is dialled by the path we advertise, so it must fit.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc.aio

log = logging.getLogger(__name__)

# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
OWNER_ONLY = 0o600
_PROBE_TIMEOUT = 1.0


class SocketError(RuntimeError):
    """A socket path cannot be used; the message names the path and what to do."""


def fits(path: Path | str) -> bool:
    return len(os.fsencode(path)) <= MAX_SOCKET_PATH


class Address:
    """A name for a socket path that fits in a unix socket address, valid while ``close`` is not called."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._dir_fd: int | None = None
        self.name = str(path)
        if fits(path):
            return
        self._dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        self.name = f"/proc/self/fd/{self._dir_fd}/{path.name}"
        if not fits(self.name) or not os.path.isdir(os.path.dirname(self.name)):
            self.close()
            raise SocketError(
                f"socket path {path} is {len(os.fsencode(path))} bytes, over the {MAX_SOCKET_PATH} a unix socket "
                "allows; choose a shorter --kubelet-dir, --registration-dir or --plugin-dir"
            )

    def close(self) -> None:
        fd, self._dir_fd = self._dir_fd, None
        if fd is not None:
            os.close(fd)


class BoundSocket:
    """A socket file this process created; ``remove`` deletes it only while it is still that file."""

    def __init__(self, address: Address) -> None:
        self.path = address.path
        self._address = address
        st = self.path.stat()
        self._identity = (st.st_dev, st.st_ino)

    def is_ours(self) -> bool:
        """False once the file is gone or another process has put its own socket at the path."""
        try:
            st = self.path.stat()
        except OSError:
            return False
        return stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self._identity

    def remove(self) -> None:
        if self.is_ours():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            log.info("socket removed", extra={"socket": str(self.path)})

    def close(self) -> None:
        """Call after the server stopped (gRPC unlinks by the address it bound, on the way out)."""
        self._address.close()


def is_live(address: Address | Path) -> bool:
    """Whether a process accepts connections on the unix socket."""
    name = address.name if isinstance(address, Address) else str(address)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(_PROBE_TIMEOUT)
        try:
            probe.connect(name)
        except OSError:
            return False
    return True


def clear_path(address: Address) -> None:
    """Make the path free for a new socket: replace a stale socket, refuse anything else."""
    path = address.path
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketError(f"{path} exists and is not a socket; remove it if it is not needed")
    if is_live(address):
        raise SocketError(
            f"{path} is served by another running process (a second kubelet_shim for this driver?); "
            "stop it, or give this one a --pod-uid for rolling-update socket names"
        )
    path.unlink()
    log.warning("replaced a stale socket left by a stopped process", extra={"socket": str(path)})


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _address(path: Path, dialled: bool) -> Address:
    if dialled and not fits(path):
        raise SocketError(
            f"socket path {path} is {len(os.fsencode(path))} bytes; the kubelet dials it and a unix socket "
            f"address holds at most {MAX_SOCKET_PATH}: choose a shorter --kubelet-dir or --plugin-dir"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as exc:
        raise SocketError(f"cannot create {path.parent}: {os.strerror(exc.errno or errno.EIO)}") from None
    address = Address(path)
    if address.name != str(path):
        log.warning(
            "socket path is too long to dial; bound through its directory (a kubelet needs a shorter path)",
            extra={"socket": str(path)},
        )
    return address


def bind(server: grpc.aio.Server, path: Path, *, dialled: bool) -> BoundSocket:
    """Bind ``server`` to a unix socket at ``path`` that only this user can open (mode 0600).

    ``dialled``: clients connect by this very path (it must fit a socket address). The umask covers the
    moment gRPC creates the file; the chmod makes sure whatever the umask did.
    """
    address = _address(path, dialled)
    try:
        clear_path(address)
        with _umask(0o177):
            server.add_insecure_port(f"unix://{address.name}")
        os.chmod(path, OWNER_ONLY)
        return BoundSocket(address)
    except BaseException as exc:
        address.close()
        raise _explained(exc, path) from None


def _explained(exc: BaseException, path: Path) -> BaseException:
    if isinstance(exc, SocketError):
        return exc
    if isinstance(exc, RuntimeError):  # what gRPC raises when it cannot bind
        return SocketError(f"cannot bind {path}: {exc}")
    if isinstance(exc, OSError):
        return SocketError(f"cannot set up {path}: {os.strerror(exc.errno or errno.EIO)}")
    return exc
