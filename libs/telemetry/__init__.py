"""Traces, metrics and logs, set up the same way in every process."""

from libs.telemetry.logs import configure_logging
from libs.telemetry.metrics import start_metrics_server
from libs.telemetry.tracing import configure_tracing, tracer

__all__ = ["configure_logging", "configure_tracing", "start_metrics_server", "tracer"]
