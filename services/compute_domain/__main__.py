"""Entry point: ``python -m services.compute_domain`` (flags and GPUDRA_* variables: see settings.py)."""

from libs.runtime import service_main
from services.compute_domain.service import lifespan
from services.compute_domain.settings import Settings


def main() -> None:
    service_main("compute_domain", Settings, lifespan)


if __name__ == "__main__":
    main()
