"""Entry point: ``python -m services.claim_preparation`` (flags and GPUDRA_* variables: see settings.py)."""

from libs.runtime import service_main
from services.claim_preparation.service import lifespan
from services.claim_preparation.settings import Settings


def main() -> None:
    service_main("claim_preparation", Settings, lifespan)


if __name__ == "__main__":
    main()
