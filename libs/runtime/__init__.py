"""How every service process starts, serves and stops: the same wiring, written once."""

from libs.runtime.service import Lifespan, Server, server_main, service_main

__all__ = ["Lifespan", "Server", "server_main", "service_main"]
