"""How every service process starts, serves and stops: the same wiring, written once."""

from libs.runtime.service import Lifespan, service_main

__all__ = ["Lifespan", "service_main"]
