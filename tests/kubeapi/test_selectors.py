"""Label and field selectors on list, and pagination."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from tests.kubeapi.objects import node, pod, resource_slice
from tests.support.kubeapi import KubeApiServer


@pytest.fixture
def cluster(kube_api: KubeApiServer) -> None:
    """Two nodes with pods and slices from two drivers."""
    store = kube_api.store
    store.create(node("node-1", zone="a", gpu="true"))
    store.create(node("node-2", zone="b"))
    store.create(node("node-3", zone="c", gpu="false"))
    store.create(pod("p1", node_name="node-1", app="train"))
    store.create(pod("p2", node_name="node-2", app="serve"))
    store.create(pod("pending", app="train"))
    store.create(resource_slice("n1-gpu", "node-1"))
    store.create(resource_slice("n1-nic", "node-1", driver="nic.example.com"))
    store.create(resource_slice("n2-gpu", "node-2"))


@pytest.mark.usefixtures("cluster")
async def test_pod_field_selectors(core: Any) -> None:

    async def names(selector: str) -> list[str]:
        return [p.metadata.name for p in (await core.list_namespaced_pod("default", field_selector=selector)).items]

    assert await names("spec.nodeName=node-1") == ["p1"]
    assert await names("spec.nodeName=") == ["pending"]
    assert await names("spec.nodeName!=node-1,metadata.name!=pending") == ["p2"]
    assert await names("metadata.name==p2") == ["p2"]


@pytest.mark.usefixtures("cluster")
async def test_resource_slice_field_selectors(res: Any) -> None:
    by_node = await res.list_resource_slice(field_selector="spec.nodeName=node-1")
    by_both = await res.list_resource_slice(field_selector="spec.nodeName=node-1,spec.driver=gpu.example.com")
    assert [s.metadata.name for s in by_node.items] == ["n1-gpu", "n1-nic"]
    assert [s.metadata.name for s in by_both.items] == ["n1-gpu"]


@pytest.mark.usefixtures("cluster")
async def test_unsupported_field_selector_is_400(core: Any) -> None:
    with pytest.raises(ApiException) as err:
        await core.list_node(field_selector="spec.providerID=x")
    assert err.value.status == 400


@pytest.mark.usefixtures("cluster")
async def test_label_selectors(core: Any) -> None:

    async def names(selector: str) -> list[str]:
        return [n.metadata.name for n in (await core.list_node(label_selector=selector)).items]

    assert await names("zone=a") == ["node-1"]
    assert await names("zone!=a") == ["node-2", "node-3"]
    assert await names("zone in (a, c),gpu") == ["node-1", "node-3"]
    assert await names("zone notin (a),!gpu") == ["node-2"]
    assert await names("gpu=true,zone=b") == []


@pytest.mark.usefixtures("cluster")
async def test_malformed_label_selector_is_400(core: Any) -> None:
    with pytest.raises(ApiException) as err:
        await core.list_node(label_selector="zone in a")
    assert err.value.status == 400


@pytest.mark.usefixtures("cluster")
async def test_limit_and_continue_page_through_a_list(core: Any) -> None:
    first = await core.list_node(limit=2)
    rest = await core.list_node(limit=2, _continue=first.metadata._continue)
    assert [n.metadata.name for n in first.items] == ["node-1", "node-2"]
    assert first.metadata.remaining_item_count == 1
    assert [n.metadata.name for n in rest.items] == ["node-3"]
    assert rest.metadata._continue is None
