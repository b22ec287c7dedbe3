"""Entry point: ``python -m services.discovery`` (flags and GPUDRA_* variables: see settings.py).

A start-up error (no NVML, a broken profile, no usable Kubernetes API) ends the process with one log line
saying what to change and an exit code of its own (see libs/runtime/startup.py), never a traceback.
"""

from libs.runtime import service_main
from services.discovery.service import lifespan
from services.discovery.settings import Settings


def main() -> None:
    service_main("discovery", Settings, lifespan)


if __name__ == "__main__":
    main()
