"""Entry point: ``python -m services.health`` (flags and GPUDRA_* variables: see settings.py).

A start-up error (no NVML, a broken profile, a wrong fault catalogue or drain policy, no usable Kubernetes
API) ends the process with one log line saying what to change and an exit code of its own (see service.py).
"""

import logging
import sys

from libs.runtime import service_main
from services.health.service import StartupError, lifespan
from services.health.settings import Settings

log = logging.getLogger("services.health")


def main() -> None:
    try:
        service_main("health", Settings, lifespan)
    except StartupError as exc:
        log.error("cannot start: %s", exc, extra={"exit_code": exc.exit_code})
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
