"""Prometheus metrics of the bus, shared by every service (one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from libs.telemetry.metrics import by_labels

PUBLISHED = Counter("gpudra_bus_published_total", "events published", ["type"])
PUBLISH_DUPLICATES = Counter(
    "gpudra_bus_publish_duplicates_total", "publishes JetStream dropped as duplicates", ["type"]
)
CONSUMED = Counter(
    "gpudra_bus_consumed_total",
    "events taken from a durable consumer, by outcome (acked, retried, ignored, dead_lettered)",
    ["consumer", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "gpudra_bus_handler_duration_seconds",
    "time an event handler took",
    ["consumer"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REQUESTS = Counter("gpudra_bus_requests_total", "commands served, by endpoint and code", ["endpoint", "code"])
REFUSED = Counter(
    "gpudra_bus_permission_denied_total", "operations the NATS server refused for lack of permission (see the log)"
)
DEADLETTERS_DROPPED = Counter(
    "gpudra_bus_deadletters_dropped_total",
    "events dropped because their consumer's dead letters were at their limit (GPUDRA_DEADLETTER_MAX_*)",
    ["consumer"],
)

PUBLISHED_BY = by_labels(PUBLISHED)
REQUESTS_BY = by_labels(REQUESTS)
