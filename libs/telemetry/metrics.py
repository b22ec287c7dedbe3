"""A Prometheus endpoint per process, on a port of its own choosing when asked for port 0, with its probes.

The probes share the metrics port so a deployment opens one port per service, and they answer from the
server's own thread: a stuck event loop cannot keep the liveness probe from saying so.
"""

from __future__ import annotations

import functools
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from socketserver import BaseRequestHandler, ThreadingMixIn
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app

Check = Callable[[], str | None]
"""A probe: None while all is well, else why not (the body of its 503)."""

M = TypeVar("M", Counter, Gauge, Histogram)


def by_labels(metric: M) -> Callable[..., M]:
    """``metric.labels``, remembered per label values.

    prometheus_client checks the values and looks the child up under a lock on every call, a few microseconds
    each; a prepare calls it a dozen times. Only for labels with a small, fixed set of values."""
    return functools.cache(metric.labels)


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow scrape never holds up a probe; daemon threads never delay exit."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseRequestHandler]) -> None:
        # An IPv6 host ("::") needs an IPv6 socket; the class default is IPv4.
        self.address_family = socket.getaddrinfo(*address, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        super().__init__(address, handler)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes come every few seconds: a log line each would bury the service's own."""


def _app(checks: Mapping[str, Check]) -> WSGIApplication:
    metrics: WSGIApplication = make_wsgi_app()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        check = checks.get(environ.get("PATH_INFO", ""))
        if check is None:
            return metrics(environ, start_response)
        failure = check()
        body = f"{failure or 'ok'}\n".encode()
        status = "200 OK" if failure is None else "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def start_metrics_server(host: str, port: int, checks: Mapping[str, Check] | None = None) -> int | None:
    """Serve ``/metrics`` and a path per check; return the bound port (so it can be advertised), None when -1."""
    if port < 0:
        return None
    server = make_server(host, port, _app(checks or {}), _Server, _QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True).start()
    return int(server.server_port)
