"""An operator's DeviceTaintRules (Kubernetes 1.36, resource.k8s.io/v1beta2): read so gpudra's word on a device agrees.

The rules are matched as the API defines them (each selector field left out matches all; no selector matches
nothing; an unknown effect counts as None); a drain counts their NoExecute taints; and, over HTTP against the
test API server serving 1.36 with the gate on, a rule blocking a device turns its health Unhealthy naming the
rule, and deleting it turns it back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import kubernetes_validate
import msgspec
import pytest

from libs.bus import Bus
from libs.events.catalogue.health import DeviceHealthChanged
from libs.natsserver import EmbeddedNats
from libs.slices import DeviceTaint
from services.health.controller import Controller
from services.health.controller.taint_rules import read_rule, taints_on, with_rule_taints
from services.health.controller.taints_store import device_health
from services.health.remediation import DeviceToleration, DrainPolicy, Pod, plan_drain
from tests.health_controller.health_controller_support import (
    Feed,
    add_node,
    controller_process,
    controller_settings,
    light_node,
)
from tests.support.kubeapi import KubeApiServer
from tests.support.kubeapi.resources import DEVICE_TAINT_RULES

DRIVER = "gpu.gpudra.io"
NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)


def rule(name: str, selector: dict[str, str] | None, effect: str = "NoExecute", **taint: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"taint": {"key": "example.com/maintenance", "value": "planned", "effect": effect, **taint}}
    if selector is not None:
        spec["deviceSelector"] = selector
    return {
        "apiVersion": "resource.k8s.io/v1beta2",
        "kind": "DeviceTaintRule",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("selector", "selected"),
    [
        ({"driver": DRIVER, "pool": "node-a", "device": "gpu-3"}, {("node-a", "gpu-3")}),
        ({"pool": "node-a"}, {("node-a", "gpu-0"), ("node-a", "gpu-3")}),
        ({"device": "gpu-3"}, {("node-a", "gpu-3"), ("node-b", "gpu-3")}),
        ({}, {("node-a", "gpu-0"), ("node-a", "gpu-3"), ("node-b", "gpu-3")}),  # the empty selector: every device
        (None, set()),  # no selector: none
        ({"driver": "nic.example.com"}, set()),
    ],
)
def test_a_rule_selects_devices_as_the_api_says(
    selector: dict[str, str] | None, selected: set[tuple[str, str]]
) -> None:
    obj = rule("r", selector)
    kubernetes_validate.validate(obj, "1.36.0", strict=True)
    devices = {"node-a": ["gpu-0", "gpu-3"], "node-b": ["gpu-3"]}
    found = {(node, d) for node, names in devices.items() for d in taints_on([read_rule(obj)], DRIVER, node, names)}
    assert found == selected


def test_an_unknown_effect_counts_as_none_and_a_rule_that_does_not_decode_is_refused() -> None:
    assert read_rule(rule("r", {}, effect="NoAdmit")).taint.effect == "None"
    with pytest.raises(msgspec.ValidationError):
        read_rule({"metadata": {"name": "r"}, "spec": {"taint": {"effect": "NoExecute"}}})


def test_health_names_the_rule_that_blocks_a_device_and_a_none_effect_blocks_nothing() -> None:
    maintenance = read_rule(rule("gpu-3-maintenance", {"device": "gpu-3"}))
    ruled = taints_on([maintenance], DRIVER, "node-a", ["gpu-3"])["gpu-3"]
    event = device_health("node-a", "gpu-3", (), "", ruled)
    assert (event.health, event.reason) == (
        "Unhealthy",
        "taints example.com/maintenance=planned:NoExecute; by DeviceTaintRule gpu-3-maintenance",
    )
    noted = taints_on([read_rule(rule("note", {"device": "gpu-3"}, effect="None"))], DRIVER, "node-a", ["gpu-3"])
    assert device_health("node-a", "gpu-3", (), "", noted["gpu-3"]).health == "Healthy"


def test_a_drain_counts_a_rules_noexecute_taint_beside_gpudras_own() -> None:
    own = {"gpu-1": [DeviceTaint(key="gpu.gpudra.io/xid", value="48", effect="NoExecute")]}
    ruled = taints_on([read_rule(rule("maintenance", {"device": "gpu-1"}))], DRIVER, "node-a", ["gpu-1"])
    taints = with_rule_taints(own, ruled)
    only_xid = DeviceToleration(key="gpu.gpudra.io/xid", operator="Exists")
    both = DeviceToleration(operator="Exists")
    pods = [
        Pod(namespace="ml", name="tolerates-xid", devices=("gpu-1",), tolerations={"gpu-1": (only_xid,)}),
        Pod(namespace="ml", name="tolerates-all", devices=("gpu-1",), tolerations={"gpu-1": (both,)}),
    ]
    plan = plan_drain(pods, ["gpu-1"], DrainPolicy(), started=NOW, now=NOW, taints=taints)
    assert [e.name for e in plan.evict] == ["tolerates-xid"]
    assert [w.name for w in plan.wait] == ["tolerates-all"]


@asynccontextmanager
async def controller_with(
    nats: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> AsyncIterator[tuple[Controller, Feed]]:
    async with AsyncExitStack() as stack:
        add_node(kube_api, "node-a")
        await stack.enter_async_context(light_node(nats.url, tmp_path, "node-a"))
        feed = await Feed.subscribe(bus)
        controller = await stack.enter_async_context(controller_process(controller_settings(nats.url, kube_api)))
        yield controller, feed


async def test_a_rule_blocking_a_device_makes_it_unhealthy_until_it_is_deleted(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    kube_api.version = "v1.36.0"
    kube_api.registry.add(DEVICE_TAINT_RULES)
    async with controller_with(nats_server, bus, kube_api, tmp_path) as (controller, feed):
        assert controller.taint_rules.served
        kube_api.store.create(rule("gpu-3-maintenance", {"driver": DRIVER, "pool": "node-a", "device": "gpu-3"}))

        def on_gpu_3(event: DeviceHealthChanged) -> bool:
            return event.node == "node-a" and event.device == "gpu-3"

        sick = await feed.expect(DeviceHealthChanged, on_gpu_3)
        assert sick.health == "Unhealthy"
        assert "by DeviceTaintRule gpu-3-maintenance" in sick.reason
        assert list(controller.taint_rules.taints("node-a")) == ["gpu-3"]
        kube_api.store.delete("devicetaintrules.resource.k8s.io", "gpu-3-maintenance")
        well = await feed.expect(DeviceHealthChanged, on_gpu_3)
        assert well.health == "Healthy"
        assert controller.taint_rules.taints("node-a") == {}


async def test_where_the_api_is_not_served_nothing_is_followed(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    async with controller_with(nats_server, bus, kube_api, tmp_path) as (controller, _):
        assert not controller.taint_rules.served
        assert controller.taint_rules.taints("node-a") == {}
