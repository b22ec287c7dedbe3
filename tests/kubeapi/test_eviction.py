"""pods/{name}/eviction: deletes the pod, or fails as a PodDisruptionBudget would."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from tests.kubeapi.objects import pod, status_of
from tests.support.kubeapi import KubeApiServer


def eviction(name: str, **delete_options: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}}
    if delete_options:
        body["deleteOptions"] = delete_options
    return body


async def test_eviction_deletes_the_pod(kube_api: KubeApiServer, core: Any) -> None:
    kube_api.store.create(pod("p"))
    answer = await core.create_namespaced_pod_eviction("p", "default", eviction("p"))
    assert answer.kind == "Status"
    assert kube_api.store.get("pods", "p", "default") is None
    assert kube_api.store.writes("pods") == 1
    assert kube_api.store.requests[("create", "pods/eviction")] == 1
    assert kube_api.store.evictions == [eviction("p")]


async def test_blocked_eviction_answers_429_until_unblocked(kube_api: KubeApiServer, core: Any) -> None:
    kube_api.store.create(pod("p"))
    kube_api.store.block_eviction("default", "p")
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            await core.create_namespaced_pod_eviction("p", "default", eviction("p"))
        status = status_of(err.value)
        assert (err.value.status, status["reason"]) == (429, "TooManyRequests")
        assert status["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert kube_api.store.get("pods", "p", "default") is not None
    kube_api.store.clear_failures()
    await core.create_namespaced_pod_eviction("p", "default", eviction("p"))
    assert kube_api.store.get("pods", "p", "default") is None


async def test_eviction_failure_can_be_a_500_once(kube_api: KubeApiServer, core: Any) -> None:
    kube_api.store.create(pod("p"))
    kube_api.store.block_eviction("default", "p", code=500, times=1)
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_pod_eviction("p", "default", eviction("p"))
    assert err.value.status == 500
    await core.create_namespaced_pod_eviction("p", "default", eviction("p"))


async def test_eviction_of_a_missing_pod_is_404(core: Any) -> None:
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_pod_eviction("ghost", "default", eviction("ghost"))
    assert err.value.status == 404


async def test_eviction_honours_delete_preconditions(kube_api: KubeApiServer, core: Any) -> None:
    kube_api.store.create(pod("p"))
    body = eviction("p", preconditions={"uid": "someone-else"})
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_pod_eviction("p", "default", body)
    assert err.value.status == 409


async def test_eviction_body_is_validated(kube_api: KubeApiServer, core: Any) -> None:
    kube_api.store.create(pod("p"))
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_pod_eviction("p", "default", {**eviction("p"), "bogus": 1})
    assert err.value.status == 422


async def test_an_evictions_delete_options_are_validated_and_recorded(kube_api: KubeApiServer, core: Any) -> None:
    kube_api.store.create(pod("p"))
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_pod_eviction("p", "default", eviction("p", gracePeriodSeconds="soon"))
    assert err.value.status == 422
    assert kube_api.store.evictions == []
    await core.create_namespaced_pod_eviction("p", "default", eviction("p", gracePeriodSeconds=20))
    assert [e["deleteOptions"] for e in kube_api.store.evictions] == [{"gracePeriodSeconds": 20}]
