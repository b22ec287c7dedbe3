"""What only the standalone store does: KV keys and revisions, sharing between processes, bus failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest

from libs.bus import Bus
from libs.bus.topology import KUBE_BUCKET
from libs.kube import NODES, RESOURCE_CLAIMS, RESOURCE_SLICES, KubeError, LocalKube, Unavailable
from libs.kube.local import object_key
from libs.natsserver import EmbeddedNats
from tests.kube.kube_support import claim, gpus, node, pool
from tests.support.nats_fixture import settings_for


@pytest.fixture
async def local(bus: Bus) -> LocalKube:
    return await LocalKube.open(bus.js)


@pytest.fixture
async def other_process(nats_server: EmbeddedNats) -> AsyncIterator[LocalKube]:
    """The same store through another connection, as the ``gpudra`` CLI or another service sees it."""
    other = await Bus.connect(settings_for(nats_server.url, node="node-b"), "cli")
    yield await LocalKube.open(other.js)
    await other.close()


async def test_the_resource_version_is_the_kv_revision(bus: Bus, local: LocalKube) -> None:
    created = await local.create(RESOURCE_SLICES, pool("node-a", [gpus(0)])[0])
    kv = await bus.kv(KUBE_BUCKET)
    entry = await kv.get(object_key(RESOURCE_SLICES, None, created["metadata"]["name"]))
    assert created["metadata"]["resourceVersion"] == str(entry.revision)
    assert entry.key == "resourceslices_resource_k8s_io._.node-a-gpu.gpudra.io-0"


async def test_another_process_sees_writes_and_watches_them(local: LocalKube, other_process: LocalKube) -> None:
    start = (await other_process.list(RESOURCE_CLAIMS)).resource_version
    created = await local.create(RESOURCE_CLAIMS, claim("train-0", "team-a"))
    assert await other_process.get(RESOURCE_CLAIMS, "train-0", "team-a") == created
    async with aclosing(other_process.watch(RESOURCE_CLAIMS, resource_version=start)) as events:
        async with asyncio.timeout(5):
            event = await anext(events)
    assert (event.type, event.object) == ("ADDED", created)


async def test_concurrent_unconditional_writers_all_land(local: LocalKube, other_process: LocalKube) -> None:
    await local.create(NODES, node("node-a"))
    writers = [
        kube.patch(NODES, "node-a", {"metadata": {"labels": {f"writer-{i}": "yes"}}})
        for i, kube in enumerate([local, other_process] * 4)
    ]
    await asyncio.gather(*writers)
    labels = (await local.get(NODES, "node-a"))["metadata"]["labels"]
    assert labels == {f"writer-{i}": "yes" for i in range(8)}


async def test_a_missing_bucket_says_how_to_create_it(bus: Bus) -> None:
    with pytest.raises(KubeError, match="does not exist: the bus has not been bootstrapped"):
        await LocalKube.open(bus.js, bucket="gpudra_nope")


async def test_a_closed_bus_is_unavailable(nats_server: EmbeddedNats) -> None:
    closing = await Bus.connect(settings_for(nats_server.url), "test")
    kube = await LocalKube.open(closing.js)
    await closing.close()
    with pytest.raises(Unavailable, match="standalone store"):
        await kube.get(NODES, "node-a")
