"""Entry point: ``python -m services.auth_callout`` (flags and GPUDRA_* variables: see settings.py)."""

from libs.runtime import service_main
from services.auth_callout.service import lifespan
from services.auth_callout.settings import Settings


def main() -> None:
    service_main("auth_callout", Settings, lifespan)


if __name__ == "__main__":
    main()
