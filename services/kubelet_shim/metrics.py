"""Prometheus metrics of the kubelet's face: what the kubelet asked and how it went."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from libs.telemetry.metrics import by_labels

KUBELET_CALLS = Histogram(
    "gpudra_kubelet_call_duration_seconds",
    "time to answer a kubelet DRA call, by method and API version",
    ["method", "version"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40),
)
KUBELET_CLAIMS = Counter(
    "gpudra_kubelet_claims_total",
    "claims answered to the kubelet, by method and outcome (ok, failed)",
    ["method", "outcome"],
)
HEALTH_STREAMS = Gauge("gpudra_kubelet_health_streams", "open NodeWatchResources streams")

KUBELET_CALLS_BY = by_labels(KUBELET_CALLS)
KUBELET_CLAIMS_BY = by_labels(KUBELET_CLAIMS)
