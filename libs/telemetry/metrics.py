"""A Prometheus endpoint per process, on a port of its own choosing when asked for port 0."""

from __future__ import annotations

from prometheus_client import start_http_server


def start_metrics_server(host: str, port: int) -> int | None:
    """Serve ``/metrics``; return the bound port (so it can be advertised), or None when disabled (-1)."""
    if port < 0:
        return None
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)
