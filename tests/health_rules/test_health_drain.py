"""Drain policy: which pods to evict, wait for or delete, and which to leave alone."""

from __future__ import annotations

import datetime as dt

from services.health.remediation import DrainPolicy, DrainRule, Pod, plan_drain
from services.health.remediation.drain import Eviction, PodRef, Skipped, Waiting
from tests.health_rules.health_rules_support import NOW

POLICY = DrainPolicy(
    rules=[
        DrainRule(mode="AllowCompletion", pod_labels={"training": "long"}),
        DrainRule(mode="DeleteAfterTimeout", namespaces=["batch"], timeout=dt.timedelta(minutes=30)),
        DrainRule(mode="Immediate", namespaces=["serving"], grace=dt.timedelta(seconds=10)),
    ]
)
PODS = [
    Pod(namespace="serving", name="api", devices=("gpu-1",)),
    Pod(namespace="batch", name="job", devices=("gpu-2",)),
    Pod(namespace="batch", name="trainer", labels={"training": "long"}, devices=("gpu-1",)),
    Pod(namespace="web", name="cpu-only"),
    Pod(namespace="kube-system", name="coredns"),
    Pod(namespace="gpudra", name="health", owner_kinds=("DaemonSet",), devices=("gpu-1",)),
    Pod(namespace="default", name="static", owner_kinds=("Node",)),
    Pod(namespace="serving", name="done", devices=("gpu-1",), finished=True),
]


def test_a_full_drain_applies_the_first_matching_rule_and_skips_what_belongs_to_the_node() -> None:
    plan = plan_drain(PODS, (), POLICY, started=NOW, now=NOW)
    assert plan.evict == (
        Eviction(namespace="serving", name="api", grace_seconds=10),
        Eviction(namespace="web", name="cpu-only", grace_seconds=60),
    )
    assert plan.wait == (
        Waiting(namespace="batch", name="job", mode="DeleteAfterTimeout", until=NOW + dt.timedelta(minutes=30)),
        Waiting(namespace="batch", name="trainer", mode="AllowCompletion"),
    )
    assert plan.skipped == (
        Skipped(namespace="kube-system", name="coredns", reason="system namespace kube-system"),
        Skipped(namespace="gpudra", name="health", reason="DaemonSet pod"),
        Skipped(namespace="default", name="static", reason="static pod"),
    )
    assert not plan.done


def test_a_partial_drain_only_touches_pods_using_the_device() -> None:
    plan = plan_drain(PODS, ["gpu-1"], POLICY, started=NOW, now=NOW)
    assert [p.name for p in plan.evict] == ["api"]
    assert [p.name for p in plan.wait] == ["trainer"]
    assert [p.name for p in plan.skipped] == ["health"]


def test_delete_after_timeout_deletes_once_the_timeout_passed() -> None:
    plan = plan_drain(PODS, ["gpu-2"], POLICY, started=NOW, now=NOW + dt.timedelta(minutes=30))
    assert plan.delete == (PodRef(namespace="batch", name="job"),)
    assert plan.wait == ()


def test_the_default_policy_evicts_immediately_with_60_seconds_grace() -> None:
    plan = plan_drain([Pod(namespace="x", name="p", devices=("gpu-0",))], (), DrainPolicy(), started=NOW, now=NOW)
    assert plan.evict == (Eviction(namespace="x", name="p", grace_seconds=60),)


def test_a_drain_with_nothing_left_is_done() -> None:
    remaining = [p for p in PODS if p.namespace in ("kube-system",) or p.finished]
    assert plan_drain(remaining, (), POLICY, started=NOW, now=NOW).done
