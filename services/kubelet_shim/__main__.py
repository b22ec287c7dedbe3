"""Entry point: ``python -m services.kubelet_shim`` (flags and GPUDRA_* variables: see settings.py)."""

from libs.runtime import service_main
from services.kubelet_shim.service import lifespan
from services.kubelet_shim.settings import Settings


def main() -> None:
    service_main("kubelet_shim", Settings, lifespan)


if __name__ == "__main__":
    main()
