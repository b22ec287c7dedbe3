"""Drain policy: which pods to evict, wait for or delete, and which to leave alone."""

from __future__ import annotations

import datetime as dt

from libs.slices import DeviceTaint
from services.health.remediation import DeviceToleration, DrainPolicy, DrainRule, Pod, plan_drain
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


XID_48 = DeviceTaint(key="gpu.gpudra.io/xid", value="48", effect="NoExecute", time_added="2026-12-05T08:00:00Z")
ADDED = dt.datetime(2026, 12, 5, 8, 0, tzinfo=dt.UTC)


def tolerating(name: str, *tolerations: DeviceToleration) -> Pod:
    return Pod(namespace="serving", name=name, devices=("gpu-1",), tolerations={"gpu-1": tolerations})


def test_a_pod_whose_claim_tolerates_a_noexecute_taint_stays_until_its_seconds_run_out() -> None:
    pods = [
        tolerating("forever", DeviceToleration(key="gpu.gpudra.io/xid", operator="Exists")),
        tolerating("ten-minutes", DeviceToleration(key="gpu.gpudra.io/xid", value="48", toleration_seconds=600)),
        tolerating("other-xid", DeviceToleration(key="gpu.gpudra.io/xid", value="79")),
        tolerating("noschedule-only", DeviceToleration(operator="Exists", effect="NoSchedule")),
        tolerating("everything", DeviceToleration(operator="Exists")),
    ]
    taints = {"gpu-1": [XID_48]}
    now = ADDED + dt.timedelta(minutes=5)
    plan = plan_drain(pods, ["gpu-1"], POLICY, started=ADDED, now=now, taints=taints)
    assert plan.wait == (
        Waiting(namespace="serving", name="forever", mode="TaintTolerated"),
        Waiting(namespace="serving", name="ten-minutes", mode="TaintTolerated", until=ADDED + dt.timedelta(minutes=10)),
        Waiting(namespace="serving", name="everything", mode="TaintTolerated"),
    )
    assert [e.name for e in plan.evict] == ["other-xid", "noschedule-only"]
    later = plan_drain(pods, ["gpu-1"], POLICY, started=ADDED, now=ADDED + dt.timedelta(minutes=10), taints=taints)
    assert [e.name for e in later.evict] == ["ten-minutes", "other-xid", "noschedule-only"]


def test_a_noschedule_taint_evicts_even_the_pods_that_tolerate_it() -> None:
    """NoSchedule only keeps new claims off the device; the reset still needs the GPU to itself."""
    pod = tolerating("tolerant", DeviceToleration(operator="Exists"))
    taints = {"gpu-1": [DeviceTaint(key="gpu.gpudra.io/xid", value="48", effect="NoSchedule")]}
    plan = plan_drain([pod], ["gpu-1"], POLICY, started=NOW, now=NOW, taints=taints)
    assert [e.name for e in plan.evict] == ["tolerant"]
