"""The quarantine circuit breaker: when too many nodes are quarantined within a sliding window, something
is more likely wrong with the monitors or the catalogue than with that many machines, so new quarantines
stop until a person looks and resets it.

A node counts once per window, whether a device or the whole node was quarantined. The limit is the smaller
of ``max_share`` of the cluster's GPU nodes (at least one) and ``max_nodes``; the quarantine that would go
past it trips the breaker and is held, and so is every new one while it is open.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Literal

import msgspec

from libs.events import CLUSTER
from libs.events.catalogue.remediation import CircuitBreakerChanged


class BreakerConfig(msgspec.Struct, frozen=True, kw_only=True):
    window: dt.timedelta = dt.timedelta(minutes=5)
    max_share: float = 0.5
    max_nodes: int = 50


class Quarantine(msgspec.Struct, frozen=True, kw_only=True):
    node: str
    at: dt.datetime


class Breaker(msgspec.Struct, frozen=True, kw_only=True):
    """Cluster-wide; the controller keeps it in the ``gpudra_remediation`` KV bucket next to the books."""

    state: Literal["closed", "open"] = "closed"
    recent: tuple[Quarantine, ...] = ()
    reason: str = ""


class Admission(msgspec.Struct, frozen=True, kw_only=True):
    breaker: Breaker
    admitted: bool
    event: CircuitBreakerChanged | None = None
    """Set when this call tripped the breaker (publish it)."""


def limit(gpu_nodes: int, config: BreakerConfig) -> int:
    """How many nodes may be quarantined within one window."""
    return min(config.max_nodes, max(1, math.floor(config.max_share * gpu_nodes)))


def admit(breaker: Breaker, node: str, gpu_nodes: int, now: dt.datetime, config: BreakerConfig) -> Admission:
    """Whether a new quarantine on ``node`` may go ahead (``gpu_nodes``: GPU nodes in the cluster now)."""
    recent = tuple(q for q in breaker.recent if now - q.at < config.window)
    breaker = msgspec.structs.replace(breaker, recent=recent)
    if breaker.state == "open":
        return Admission(breaker=breaker, admitted=False)
    if any(q.node == node for q in recent):
        return Admission(breaker=breaker, admitted=True)
    allowed = limit(gpu_nodes, config)
    if len(recent) + 1 <= allowed:
        counted = msgspec.structs.replace(breaker, recent=(*recent, Quarantine(node=node, at=now)))
        return Admission(breaker=counted, admitted=True)
    reason = (
        f"quarantining {node} would make {len(recent) + 1} nodes within {config.window}, over the limit of "
        f"{allowed} ({config.max_share:.0%} of {gpu_nodes} GPU nodes, at most {config.max_nodes})"
    )
    tripped = msgspec.structs.replace(breaker, state="open", reason=reason)
    return Admission(breaker=tripped, admitted=False, event=_changed(tripped, config))


def reset(breaker: Breaker, by: str, config: BreakerConfig) -> tuple[Breaker, CircuitBreakerChanged]:
    """A person closes the breaker; the window starts empty, so the nodes that tripped it do not trip it again."""
    closed = Breaker(state="closed", reason=f"reset by {by}")
    return closed, _changed(closed, config, quarantined=len(breaker.recent))


def _changed(breaker: Breaker, config: BreakerConfig, quarantined: int | None = None) -> CircuitBreakerChanged:
    return CircuitBreakerChanged(
        node=CLUSTER,
        state=breaker.state,
        reason=breaker.reason,
        quarantined_nodes=len(breaker.recent) if quarantined is None else quarantined,
        window_seconds=int(config.window.total_seconds()),
    )
