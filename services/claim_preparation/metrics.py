"""Prometheus metrics of claim preparation, named like the reference driver's with gpudra's prefix.

``requests_total``/``request_duration_seconds``/``requests_inflight`` count kubelet calls (a call holds one or
more claims); the errors count failed claims by reason (the error type: ``DeviceBusy``, ``ConfigError``...),
which is what an operator alerts on; ``prepared_devices`` is what the checkpoint holds now.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from libs.telemetry.metrics import by_labels

_PREFIX = "gpudra_claims"
_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 45)

REQUESTS = Counter(f"{_PREFIX}_requests_total", "kubelet calls handled", ["operation"])
REQUEST_SECONDS = Histogram(
    f"{_PREFIX}_request_duration_seconds", "time to answer a kubelet call", ["operation"], buckets=_CALL_BUCKETS
)
INFLIGHT = Gauge(f"{_PREFIX}_requests_inflight", "kubelet calls being handled", ["operation"])
PHASE_SECONDS = Histogram(
    f"{_PREFIX}_phase_duration_seconds",
    "time per phase of one claim (lookup, config, wait, checkpoint, apply, cdi, announce)",
    ["operation", "phase"],
    buckets=(0.0005, 0.001, 0.0025, *_CALL_BUCKETS),
)
PREPARE_ERRORS = Counter(f"{_PREFIX}_node_prepare_errors_total", "claims that failed to prepare", ["reason"])
UNPREPARE_ERRORS = Counter(f"{_PREFIX}_node_unprepare_errors_total", "claims that failed to unprepare", ["reason"])
PREPARED_DEVICES = Gauge(f"{_PREFIX}_prepared_devices", "devices of prepared claims on this node", ["kind"])
LOCK_WAITS = Counter(f"{_PREFIX}_lock_waits_total", "times a claim waited for a GPU another claim was working on")
EVENTS_OWED = Gauge(f"{_PREFIX}_events_owed", "claim events the bus refused, kept and retried (see outbox.py)")

REQUESTS_BY = by_labels(REQUESTS)
REQUEST_SECONDS_BY = by_labels(REQUEST_SECONDS)
INFLIGHT_BY = by_labels(INFLIGHT)
PHASE_SECONDS_BY = by_labels(PHASE_SECONDS)
PREPARED_DEVICES_BY = by_labels(PREPARED_DEVICES)
