"""Entry point: ``python -m services.admission`` (flags and GPUDRA_* variables: see settings.py)."""

from libs.runtime import server_main
from services.admission.service import running
from services.admission.settings import Settings


def main() -> None:
    server_main("admission", Settings, running)


if __name__ == "__main__":
    main()
