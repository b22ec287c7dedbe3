"""What only the cluster adapter does: configuration, error answers, paging, watch reconnects and 410."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest

from libs.bus import Bus
from libs.kube import (
    NODES,
    PODS,
    ClusterKube,
    Expired,
    Forbidden,
    KubeConfigError,
    KubeError,
    KubeSettings,
    LocalKube,
    NotFound,
    TooManyRequests,
    Unavailable,
    open_kube,
)
from tests.kube.kube_support import Backend, cluster_backend, node, pod, until
from tests.support.kubeapi import KubeApiServer


@pytest.fixture
async def cluster(kube_api: KubeApiServer) -> AsyncIterator[Backend]:
    made = await cluster_backend(kube_api, watch_timeout=1, page_size=2)
    yield made
    await made.kube.close()


async def test_eviction_a_disruption_budget_forbids_is_too_many_requests(
    kube_api: KubeApiServer, cluster: Backend
) -> None:
    kube_api.store.create(pod("train", "node-a", "team-a"))
    kube_api.store.block_eviction("team-a", "train")
    with pytest.raises(TooManyRequests, match=r"eviction of Pod team-a/train: .*disruption budget"):
        await cluster.kube.evict("train", "team-a")
    assert kube_api.store.get("pods", "train", "team-a") is not None


async def test_an_evictions_grace_period_goes_in_its_delete_options(kube_api: KubeApiServer, cluster: Backend) -> None:
    for name in ("train", "serve"):
        kube_api.store.create(pod(name, "node-a", "team-a"))
    await cluster.kube.evict("train", "team-a", grace_period_seconds=45)
    await cluster.kube.evict("serve", "team-a")
    assert kube_api.store.evictions == [
        {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": "train", "namespace": "team-a"},
            "deleteOptions": {"gracePeriodSeconds": 45},
        },
        {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "serve", "namespace": "team-a"}},
    ]


@pytest.mark.parametrize(("code", "error"), [(503, Unavailable), (500, Unavailable), (403, Forbidden)])
async def test_server_errors_become_typed_errors(
    kube_api: KubeApiServer, cluster: Backend, code: int, error: type[KubeError]
) -> None:
    kube_api.store.fail("get", "nodes", code=code, message="boom")
    with pytest.raises(error, match="Node node-a: boom"):
        await cluster.kube.get(NODES, "node-a")


async def test_an_unreachable_server_is_unavailable(kube_api: KubeApiServer) -> None:
    kube = await ClusterKube.connect("http://127.0.0.1:9", request_timeout=2)
    try:
        with pytest.raises(Unavailable, match="did not answer"):
            await kube.get(NODES, "node-a")
    finally:
        await kube.close()


async def test_list_follows_continue_tokens(kube_api: KubeApiServer, cluster: Backend) -> None:
    for name in ("node-a", "node-b", "node-c", "node-d", "node-e"):
        kube_api.store.create(node(name))
    listed = await cluster.kube.list(NODES)
    assert [n["metadata"]["name"] for n in listed.items] == ["node-a", "node-b", "node-c", "node-d", "node-e"]
    assert kube_api.store.requests[("list", "nodes")] == 3


async def test_watch_reconnects_after_the_server_ends_it(kube_api: KubeApiServer, cluster: Backend) -> None:
    start = str(kube_api.store.resource_version)
    kube_api.store.create(node("node-a"))
    async with aclosing(cluster.kube.watch(NODES, resource_version=start)) as events, asyncio.timeout(5):
        assert (await anext(events)).object["metadata"]["name"] == "node-a"
        following = asyncio.ensure_future(anext(events))  # keeps the watch reading while we wait
        await until(lambda: kube_api.store.requests[("watch", "nodes")] >= 2)  # the 1 s server timeout, then anew
        kube_api.store.create(node("node-b"))
        event = await following
    assert (event.type, event.object["metadata"]["name"]) == ("ADDED", "node-b")  # node-a was not replayed


async def test_a_failed_watch_request_is_retried(kube_api: KubeApiServer, cluster: Backend) -> None:
    start = str(kube_api.store.resource_version)
    kube_api.store.create(node("node-a"))
    kube_api.store.fail("watch", "nodes", code=503, times=2)
    async with aclosing(cluster.kube.watch(NODES, resource_version=start)) as events, asyncio.timeout(5):
        event = await anext(events)
    assert (event.type, event.object["metadata"]["name"]) == ("ADDED", "node-a")
    assert kube_api.store.requests[("watch", "nodes")] == 3


async def test_a_watch_from_a_compacted_version_is_expired(kube_api: KubeApiServer, cluster: Backend) -> None:
    start = str(kube_api.store.resource_version)
    kube_api.store.create(node("node-a"))
    kube_api.store.compact()
    with pytest.raises(Expired):
        async with aclosing(cluster.kube.watch(NODES, resource_version=start)) as events, asyncio.timeout(5):
            await anext(events)


async def test_connect_with_a_kubeconfig_file(kube_api: KubeApiServer, tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(kube_api.kubeconfig()))  # JSON is YAML
    kube_api.store.create(node("node-a"))
    kube = await ClusterKube.connect(str(path))
    try:
        assert (await kube.get(NODES, "node-a"))["metadata"]["name"] == "node-a"
    finally:
        await kube.close()


async def test_outside_a_pod_without_kubeconfig_the_error_names_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeConfigError, match=r"GPUDRA_KUBECONFIG.*GPUDRA_KUBE_MODE=local"):
        await ClusterKube.connect("")


async def test_open_kube_picks_the_adapter_from_the_settings(kube_api: KubeApiServer, bus: Bus) -> None:
    cluster = await open_kube(KubeSettings(kube_mode="auto", kubeconfig=kube_api.url), None, environ={})
    local = await open_kube(KubeSettings(kube_mode="auto"), bus.js, environ={})
    try:
        assert isinstance(cluster, ClusterKube)
        assert isinstance(local, LocalKube)
        with pytest.raises(NotFound):
            await cluster.get(PODS, "missing", "default")
        with pytest.raises(NotFound):
            await local.get(PODS, "missing", "default")
    finally:
        await cluster.close()
        await local.close()
    with pytest.raises(KubeError, match="needs the NATS bus"):
        await open_kube(KubeSettings(kube_mode="local"), None)
