"""Entry point: ``python -m services.health`` (flags and GPUDRA_* variables: see settings.py).

A start-up error (no NVML, a broken profile, a wrong fault catalogue or drain policy, no usable Kubernetes
API) ends the process with one log line saying what to change and an exit code of its own (see libs/runtime/startup.py).
"""

from libs.runtime import service_main
from services.health.service import lifespan
from services.health.settings import Settings


def main() -> None:
    service_main("health", Settings, lifespan)


if __name__ == "__main__":
    main()
