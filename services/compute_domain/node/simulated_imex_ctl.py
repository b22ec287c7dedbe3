"""``python -m services.compute_domain.node.simulated_imex_ctl -c CFG -q``: a stand-in ``nvidia-imex-ctl -q``.

Prints ``READY`` and exits 0 when the simulated daemon of that config is running and serving, as the real
query does for a ready IMEX; anything else is a message and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import msgspec

from services.compute_domain.node.simulated_imex import SimulatedStatus, status_path


def query(config: Path) -> str | None:
    """None when the daemon is ready, else why not."""
    try:
        status = msgspec.json.decode(status_path(config).read_bytes(), type=SimulatedStatus)
    except (OSError, msgspec.DecodeError) as exc:
        return f"cannot connect to the IMEX daemon: {exc}"
    try:
        os.kill(status.pid, 0)
    except ProcessLookupError:
        return f"cannot connect to the IMEX daemon: process {status.pid} is gone"
    except PermissionError:
        pass  # it exists, owned by another user
    return None if status.ready else "IMEX daemon is not ready"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="simulated_imex_ctl")
    parser.add_argument("-c", dest="config", type=Path, required=True)
    parser.add_argument("-q", dest="query", action="store_true", required=True)
    problem = query(parser.parse_args(argv).config)
    print(problem or "READY")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
