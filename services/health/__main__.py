"""Entry point: ``python -m services.health`` (flags and GPUDRA_* variables: see settings.py)."""

from libs.runtime import service_main
from services.health.service import lifespan
from services.health.settings import Settings


def main() -> None:
    service_main("health", Settings, lifespan)


if __name__ == "__main__":
    main()
