"""The circuit breaker: share and absolute caps over a sliding window, held quarantines, a person's reset."""

from __future__ import annotations

import datetime as dt

import pytest

from services.health.remediation import Breaker, BreakerConfig, admit, limit, reset
from tests.health_rules.health_rules_support import NOW

CONFIG = BreakerConfig()


def quarantine(breaker: Breaker, nodes: list[str], gpu_nodes: int, *, step_seconds: int = 1) -> list[bool]:
    admitted = []
    for i, node in enumerate(nodes):
        result = admit(breaker, node, gpu_nodes, NOW + dt.timedelta(seconds=i * step_seconds), CONFIG)
        breaker = result.breaker
        admitted.append(result.admitted)
    return admitted


@pytest.mark.parametrize(("gpu_nodes", "expected"), [(1, 1), (3, 1), (4, 2), (10, 5), (99, 49), (1000, 50)], ids=str)
def test_limit_is_the_share_with_a_floor_of_one_and_the_absolute_cap(gpu_nodes: int, expected: int) -> None:
    assert limit(gpu_nodes, CONFIG) == expected


def test_the_share_trips_the_breaker_and_holds_the_quarantine_that_would_pass_it() -> None:
    assert quarantine(Breaker(), ["a", "b", "c", "d"], gpu_nodes=4) == [True, True, False, False]


def test_the_absolute_cap_trips_it_in_a_big_cluster() -> None:
    nodes = [f"n{i}" for i in range(60)]
    assert sum(quarantine(Breaker(), nodes, gpu_nodes=1000)) == 50


def test_the_same_node_counts_once() -> None:
    assert quarantine(Breaker(), ["a", "a", "a", "b"], gpu_nodes=4) == [True, True, True, True]


def test_the_window_slides() -> None:
    assert quarantine(Breaker(), ["a", "b", "c", "d"], gpu_nodes=4, step_seconds=200) == [True, True, True, True]


def test_tripping_publishes_once_and_an_open_breaker_holds_everything() -> None:
    first = admit(Breaker(), "a", 1, NOW, CONFIG)
    tripped = admit(first.breaker, "b", 1, NOW, CONFIG)
    assert tripped.event is not None
    assert (tripped.event.state, tripped.event.quarantined_nodes, tripped.event.window_seconds) == ("open", 1, 300)
    assert "would make 2 nodes within 0:05:00, over the limit of 1 (50% of 1 GPU nodes" in tripped.event.reason
    later = admit(tripped.breaker, "c", 1, NOW + dt.timedelta(hours=1), CONFIG)
    assert (later.admitted, later.event, later.breaker.state) == (False, None, "open")
    assert not admit(tripped.breaker, "a", 1, NOW, CONFIG).admitted, "even a node already counted"


def test_a_person_resets_it_with_an_empty_window() -> None:
    tripped = admit(admit(Breaker(), "a", 1, NOW, CONFIG).breaker, "b", 1, NOW, CONFIG).breaker
    closed, event = reset(tripped, "alice", CONFIG)
    assert (closed.state, closed.recent, event.state, event.reason) == ("closed", (), "closed", "reset by alice")
    assert admit(closed, "b", 1, NOW, CONFIG).admitted
