"""Child processes that do not outlive their parent, even when the parent is killed with SIGKILL.

A parent that exits cleanly stops its children; one that is killed cannot. So a child is started through a
small trampoline (``python -m libs.lifetime PARENT_PID PROGRAM ARGS...``) that asks the kernel to send it
SIGKILL when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``, which survives ``exec``), exits if the parent
is already gone, and then becomes the program. A trampoline rather than a ``preexec_fn``: code run between fork
and exec in a parent with threads (the metrics server, gRPC) can deadlock or crash the child. Elsewhere than
Linux the program is started directly.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def bound_to_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` to start instead, so that the program dies with this process."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-m", "libs.lifetime", str(os.getpid()), *argv]
