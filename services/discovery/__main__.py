"""Entry point: ``python -m services.discovery`` (flags and GPUDRA_* variables: see settings.py).

A start-up error (no NVML, a broken profile, no usable Kubernetes API) ends the process with one log line
saying what to change and an exit code of its own (see startup.py), never a traceback.
"""

import logging
import sys

from libs.runtime import service_main
from services.discovery.service import lifespan
from services.discovery.settings import Settings
from services.discovery.startup import StartupError

log = logging.getLogger("services.discovery")


def main() -> None:
    try:
        service_main("discovery", Settings, lifespan)
    except StartupError as exc:
        log.error("cannot start: %s", exc, extra={"exit_code": exc.exit_code})
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
