"""Child processes that do not outlive their parent, even when the parent is killed with SIGKILL.

A parent that exits cleanly stops its children; one that is killed cannot. So each child asks the kernel, between
fork and exec, to be sent SIGKILL when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``), and exits at once
if the parent is already gone by then. Elsewhere the hook does nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def dies_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess``/``asyncio.create_subprocess_exec`` (None where not supported)."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def bind() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl: nobody will signal us
            os._exit(1)

    return bind
