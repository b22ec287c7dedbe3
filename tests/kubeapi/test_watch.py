"""Watches: event replay from a resourceVersion, filtering, 410 Expired, timeouts and bookmarks.

Writes happen before the watch starts and the watch replays them from a resourceVersion, so
no test depends on when the server registers a watch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.kubeapi.objects import node, pod
from tests.support.kubeapi import KubeApiServer

Event = tuple[str, str]


async def collect(func: Callable[..., Any], count: int, **kwargs: Any) -> list[Event]:
    """The first ``count`` events as (type, name); fewer if the 5 s server-side timeout ends the watch."""
    events: list[Event] = []
    async with watch.Watch() as stream:
        async for event in stream.stream(func, timeout_seconds=5, **kwargs):
            events.append((event["type"], event["raw_object"]["metadata"]["name"]))
            if len(events) == count:
                break
    return events


async def raw_watch_lines(kube_api: KubeApiServer, path: str, count: int, **params: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(kube_api.url + path, params=params) as resp:
        return [json.loads(await resp.content.readline()) for _ in range(count)]


async def test_watch_from_resource_version_replays_changes(kube_api: KubeApiServer, core: Any) -> None:
    await core.create_node(node("before"))
    start = (await core.list_node()).metadata.resource_version
    await core.create_node(node("node-1"))
    await core.patch_node("node-1", {"metadata": {"labels": {"a": "b"}}})
    await core.delete_node("node-1")
    events = await collect(core.list_node, 3, resource_version=start)
    assert events == [("ADDED", "node-1"), ("MODIFIED", "node-1"), ("DELETED", "node-1")]


async def test_watch_without_resource_version_lists_then_follows(kube_api: KubeApiServer, core: Any) -> None:
    for name in ("node-a", "node-b"):
        await core.create_node(node(name))
    events: list[Event] = []
    async with watch.Watch() as stream:
        async for event in stream.stream(core.list_node, timeout_seconds=5):
            events.append((event["type"], event["object"].metadata.name))
            if len(events) == 2:  # the initial state has been sent: the watch is live
                kube_api.store.create(node("node-c"))
            if len(events) == 3:
                break
    assert events == [("ADDED", "node-a"), ("ADDED", "node-b"), ("ADDED", "node-c")]


async def test_namespaced_field_selected_watch(core: Any) -> None:
    start = (await core.list_pod_for_all_namespaces()).metadata.resource_version
    await core.create_namespaced_pod("default", pod("elsewhere", node_name="node-2"))
    await core.create_namespaced_pod("other", pod("other-ns", node_name="node-1", namespace="other"))
    await core.create_namespaced_pod("default", pod("mine", node_name="node-1"))
    events = await collect(
        core.list_namespaced_pod, 1, namespace="default", field_selector="spec.nodeName=node-1", resource_version=start
    )
    assert events == [("ADDED", "mine")]


async def test_object_leaving_a_label_selection_is_deleted_for_the_watch(core: Any) -> None:
    start = (await core.list_node()).metadata.resource_version
    await core.create_node(node("node-1", role="gpu"))
    await core.patch_node("node-1", {"metadata": {"labels": {"role": "cpu"}}})
    await core.patch_node("node-1", {"metadata": {"labels": {"role": "gpu"}}})
    events = await collect(core.list_node, 3, label_selector="role=gpu", resource_version=start)
    assert events == [("ADDED", "node-1"), ("DELETED", "node-1"), ("ADDED", "node-1")]


async def test_watch_from_compacted_resource_version_is_410(kube_api: KubeApiServer, core: Any) -> None:
    start = (await core.list_node()).metadata.resource_version
    await core.create_node(node("node-1"))
    kube_api.store.compact()
    [event] = await raw_watch_lines(kube_api, "/api/v1/nodes", 1, watch="true", resourceVersion=start)
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")
    with pytest.raises(ApiException) as err:
        await collect(core.list_node, 1, resource_version=start)
    assert err.value.status == 410


async def test_history_limit_expires_old_resource_versions(kube_api: KubeApiServer, core: Any) -> None:
    kube_api.store.history_limit = 4
    start = str(kube_api.store.resource_version)
    for i in range(6):
        kube_api.store.create(node(f"node-{i}"))
    with pytest.raises(ApiException) as err:
        await collect(core.list_node, 1, resource_version=start)
    assert err.value.status == 410


async def test_timeout_ends_the_watch_with_a_bookmark(kube_api: KubeApiServer) -> None:
    params = {"watch": "1", "timeoutSeconds": "1", "allowWatchBookmarks": "true"}
    async with aiohttp.ClientSession() as session, session.get(kube_api.url + "/api/v1/nodes", params=params) as resp:
        lines = (await resp.read()).splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["BOOKMARK"]
    assert json.loads(lines[0])["object"]["metadata"]["resourceVersion"] == str(kube_api.store.resource_version)


async def test_send_initial_events_ends_with_a_marked_bookmark(kube_api: KubeApiServer) -> None:
    kube_api.store.create(node("node-1"))
    params = {
        "watch": "true",
        "sendInitialEvents": "true",
        "allowWatchBookmarks": "true",
        "resourceVersionMatch": "NotOlderThan",
    }
    added, bookmark = await raw_watch_lines(kube_api, "/api/v1/nodes", 2, **params)
    assert added["type"] == "ADDED"
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
