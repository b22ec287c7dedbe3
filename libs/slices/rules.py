"""The API server's ResourceSlice rules that the OpenAPI schema cannot express: names, sizes, limits.

kubernetes-validate checks shapes and types only; these functions check what the API server's own
validation would reject, so tests and benchmarks catch an invalid slice before a cluster does.
Each returns a list of problems (empty: valid), naming the slice and device.
"""

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from libs.slices.layout import consumed_counters
from libs.slices.limits import SliceLimits, limits_for

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")
_VALUE_KINDS = ("bool", "int", "string", "version")
_NODE_CHOICES = ("nodeName", "nodeSelector", "allNodes", "perDeviceNodeSelection")


def slice_problems(resource_slice: dict[str, Any], k8s_minor: int) -> list[str]:
    limits = limits_for(k8s_minor)
    name = resource_slice["metadata"]["name"]
    spec = resource_slice["spec"]
    problems = _slice_level(name, spec, limits)
    for device in spec.get("devices") or ():
        problems += [f"{name}: {device.get('name')}: {p}" for p in device_problems(device, limits)]
    for counter_set in spec.get("sharedCounters") or ():
        problems += [f"{name}: {p}" for p in _counter_set_problems(counter_set, limits)]
    return problems


def pool_problems(slices: Sequence[dict[str, Any]], k8s_minor: int) -> list[str]:
    """Rules across the slices of one pool: unique names, one generation, counter sets that exist."""
    problems = [p for s in slices for p in slice_problems(s, k8s_minor)]
    devices = Counter(d["name"] for s in slices for d in s["spec"].get("devices") or ())
    problems += [f"device {name} appears {n} times in the pool" for name, n in devices.items() if n > 1]
    sets = Counter(c["name"] for s in slices for c in s["spec"].get("sharedCounters") or ())
    problems += [f"counter set {name} appears {n} times in the pool" for name, n in sets.items() if n > 1]
    problems += _pool_consistency(slices)
    pool_wide = limits_for(k8s_minor).separate_counter_slices
    for s in slices:
        local = {c["name"] for c in s["spec"].get("sharedCounters") or ()}
        visible = set(sets) if pool_wide else local
        problems += [
            f"{s['metadata']['name']}: {d['name']} consumes from unknown counter set {use['counterSet']}"
            for d in s["spec"].get("devices") or ()
            for use in d.get("consumesCounters") or ()
            if use["counterSet"] not in visible
        ]
    return problems


def _pool_consistency(slices: Sequence[dict[str, Any]]) -> list[str]:
    pools = {(s["spec"]["pool"]["generation"], s["spec"]["pool"]["resourceSliceCount"]) for s in slices}
    if len(pools) > 1:
        return [f"slices of the pool disagree on generation/resourceSliceCount: {sorted(pools)}"]
    if pools and next(iter(pools))[1] != len(slices):
        return [f"resourceSliceCount says {next(iter(pools))[1]}, the pool has {len(slices)} slices"]
    return []


def _slice_level(name: str, spec: dict[str, Any], limits: SliceLimits) -> list[str]:
    problems = []
    if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        problems.append(f"{name}: slice name is not a DNS subdomain")
    if sum(1 for key in _NODE_CHOICES if spec.get(key) not in (None, False, "")) != 1:
        problems.append(f"{name}: needs exactly one of {', '.join(_NODE_CHOICES)}")
    devices = spec.get("devices") or []
    counter_sets = spec.get("sharedCounters") or []
    if limits.separate_counter_slices and devices and counter_sets:
        problems.append(f"{name}: a slice holds devices or sharedCounters, not both (Kubernetes 1.35+)")
    limit = limits.max_devices
    if any("taints" in d or "consumesCounters" in d for d in devices):
        limit = limits.max_devices_with_taints_or_counters
    if len(devices) > limit:
        problems.append(f"{name}: {len(devices)} devices, the limit is {limit}")
    if len(counter_sets) > limits.max_counter_sets_per_slice:
        problems.append(f"{name}: {len(counter_sets)} counter sets, the limit is {limits.max_counter_sets_per_slice}")
    total = sum(len(c["counters"]) for c in counter_sets)
    if total > limits.max_counters_per_slice:
        problems.append(f"{name}: {total} counters in its sets, the limit is {limits.max_counters_per_slice}")
    if consumed_counters(devices) > limits.max_consumed_counters_per_slice:
        problems.append(f"{name}: devices consume {consumed_counters(devices)} counters, the limit is 1024")
    return problems


def device_problems(device: dict[str, Any], limits: SliceLimits) -> list[str]:
    problems = []
    if not _DNS_LABEL.fullmatch(device["name"]) or len(device["name"]) > 63:
        problems.append("device name is not a DNS label")
    attributes = device.get("attributes") or {}
    capacity = device.get("capacity") or {}
    if len(attributes) + len(capacity) > limits.max_attributes_and_capacities:
        problems.append(f"{len(attributes) + len(capacity)} attributes and capacities, the limit is 32")
    problems += [p for key in [*attributes, *capacity] for p in _qualified_name_problems(key)]
    problems += [p for key, value in attributes.items() for p in _value_problems(key, value, limits)]
    problems += _taint_problems(device.get("taints") or [], limits)
    problems += _consumption_problems(device.get("consumesCounters") or [], limits)
    return problems


def _qualified_name_problems(key: str) -> list[str]:
    domain, _, identifier = key.rpartition("/")
    if domain and (len(domain) > 63 or not _DNS_SUBDOMAIN.fullmatch(domain)):
        return [f"{key}: the domain is not a DNS subdomain of at most 63 characters"]
    if len(identifier) > 32 or not _C_IDENTIFIER.fullmatch(identifier):
        return [f"{key}: the name is not a C identifier of at most 32 characters"]
    return []


def _value_problems(key: str, value: dict[str, Any], limits: SliceLimits) -> list[str]:
    kinds = [kind for kind in _VALUE_KINDS if kind in value]
    if len(kinds) != 1:
        return [f"{key}: needs exactly one of {', '.join(_VALUE_KINDS)}"]
    kind, item = kinds[0], value[kinds[0]]
    if kind in ("string", "version") and len(item) > limits.max_string_length:
        return [f"{key}: {kind} longer than {limits.max_string_length} characters"]
    if kind == "version" and not _SEMVER.fullmatch(item):
        return [f"{key}: {item!r} is not a semantic version"]
    return []


def _taint_problems(taints: list[dict[str, Any]], limits: SliceLimits) -> list[str]:
    effects = {"NoSchedule", "NoExecute"} | ({"None"} if limits.none_effect_allowed else set())
    problems = [
        f"taint {t['key']}: effect {t['effect']} is not one of {sorted(effects)}"
        for t in taints
        if t["effect"] not in effects
    ]
    if len(taints) > limits.max_taints_per_device:
        problems.append(f"{len(taints)} taints, the limit is {limits.max_taints_per_device}")
    return problems


def _consumption_problems(uses: list[dict[str, Any]], limits: SliceLimits) -> list[str]:
    problems = []
    if len(uses) > limits.max_consumptions_per_device:
        problems.append(f"{len(uses)} consumesCounters entries, the limit is {limits.max_consumptions_per_device}")
    if len({use["counterSet"] for use in uses}) != len(uses):
        problems.append("more than one consumesCounters entry for one counter set")
    total = sum(len(use["counters"]) for use in uses)
    if total > limits.max_counters_per_device:
        problems.append(f"consumes {total} counters, the limit is {limits.max_counters_per_device}")
    problems += [p for use in uses for name in use["counters"] for p in _counter_name_problems(name)]
    return problems


def _counter_set_problems(counter_set: dict[str, Any], limits: SliceLimits) -> list[str]:
    problems = _counter_name_problems(counter_set["name"])
    if len(counter_set["counters"]) > limits.max_counters_per_set:
        problems.append(f"counter set {counter_set['name']} has {len(counter_set['counters'])} counters")
    problems += [p for name in counter_set["counters"] for p in _counter_name_problems(name)]
    return problems


def _counter_name_problems(name: str) -> list[str]:
    if len(name) > 63 or not _DNS_LABEL.fullmatch(name):
        return [f"counter name {name} is not a DNS label"]
    return []
