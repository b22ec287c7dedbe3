"""Entry point: ``python -m services.discovery`` (flags and GPUDRA_* variables: see settings.py)."""

from libs.runtime import service_main
from services.discovery.service import lifespan
from services.discovery.settings import Settings


def main() -> None:
    service_main("discovery", Settings, lifespan)


if __name__ == "__main__":
    main()
