"""Prometheus metrics of the remediation controller: what it decided, what it did, how fast, and its safety
switches (breaker, dry-run, leadership)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

EVENTS = Counter(
    "gpudra_remediation_health_events_total",
    "health events taken in, by outcome (decided, duplicate, stale, dead_lettered, retried)",
    ["outcome"],
)
VERDICTS = Counter(
    "gpudra_remediation_verdicts_total",
    "faults classified, by disposition (acted, recorded, held, dry-run) and action",
    ["disposition", "action"],
)
TRANSITIONS = Counter(
    "gpudra_remediation_transitions_total", "state machine transitions, by scope and new state", ["scope", "state"]
)
ACTIONS = Counter(
    "gpudra_remediation_actions_total",
    "actions performed, by kind and outcome (done, failed, dry-run, held)",
    ["action", "outcome"],
)
WORK_SECONDS = Histogram(
    "gpudra_remediation_work_seconds",
    "duration of drains, GPU resets, reboots and verifications, by kind and outcome",
    ["work", "outcome"],
    buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
)
QUARANTINE_SECONDS = Histogram(
    "gpudra_remediation_quarantine_seconds",
    "from the fault's detection on the node to its quarantine done (device taint written, node cordoned)",
    ["scope"],
    buckets=_LATENCY,
)
ENTITIES = Gauge(
    "gpudra_remediation_entities",
    "nodes and devices not healthy, by scope and state, as this replica last wrote their books",
    ["scope", "state"],
)
BOOK_WRITES = Counter(
    "gpudra_remediation_book_writes_total", "writes of node books, by outcome (ok, conflict)", ["outcome"]
)
BATCH_SIZE = Histogram(
    "gpudra_remediation_batch_events",
    "health events decided together for one node (one book write)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
BREAKER_OPEN = Gauge("gpudra_remediation_breaker_open", "1 while the circuit breaker halts new quarantines")
BREAKER_TRIPS = Counter("gpudra_remediation_breaker_trips_total", "times the circuit breaker tripped")
DRY_RUN = Gauge("gpudra_remediation_dry_run", "1 when the controller runs in dry-run mode")
LEADER = Gauge("gpudra_remediation_leader", "1 while this replica holds the controller lease")
ADOPTED = Counter("gpudra_remediation_adopted_total", "outbox entries taken over from a dead or restarted replica")
EVICTIONS = Counter("gpudra_remediation_evictions_total", "pods evicted or deleted by drains, by outcome", ["outcome"])
