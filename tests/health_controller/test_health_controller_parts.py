"""The controller's parts one at a time: the outbox, the live view, the Node patch, the lanes, the books'
compare-and-set, the lease, the drain's view of pods and claims, the reboot hooks and the settings."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from libs.bus import Bus
from libs.bus.election import Election
from libs.bus.topology import LEASE_BUCKET, REMEDIATION_LEASE_PREFIX
from libs.events.catalogue.health import EntityRef, HealthEvent
from libs.kube import NODES, ClusterKube
from services.health.catalogue import default_catalogue
from services.health.controller.books import BookStore, BreakerStore, StaleEntry, Versioned, fresh, node_key
from services.health.controller.cluster_view import ClusterView
from services.health.controller.config import read_drain_policy
from services.health.controller.gpu_reset import RepairFailed
from services.health.controller.kube_actions import Drainer, NodeActions, NodePatch, parent_gpu
from services.health.controller.lanes import Lanes
from services.health.controller.live import LiveView, blocking, observe
from services.health.controller.outbox import pending, prune
from services.health.controller.reboot import CommandReboot, NoReboot, SimulatedReboot, reboot_hook
from services.health.remediation import (
    Breaker,
    Cordon,
    DeviceToleration,
    DrainPolicy,
    DrainSucceeded,
    EvictPods,
    FaultDetected,
    InventoryObserved,
    MarkNode,
    NodeTaint,
    Publish,
    RemediationConfig,
    SetDeviceTaints,
    TaintNode,
    UntaintNode,
    assess,
    new_book,
    step,
)
from tests.health_controller.health_controller_support import add_node, add_pod
from tests.support.kubeapi import KubeApiServer

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
GPU1 = EntityRef(kind="gpu", id="GPU-1", device="gpu-1")
TAINT = NodeTaint(key="gpu.gpudra.io/gpu-error", value="fatal", effect="NoSchedule")


def xid(code: str, *, healthy: bool = False, entity: EntityRef = GPU1) -> HealthEvent:
    return HealthEvent(
        node="n", check="xid", component="gpu", entity=entity, error_codes=[code], healthy=healthy, detected_at=NOW
    )


def draining_book() -> tuple[object, list[object]]:
    book = new_book("n")
    book, _ = step(book, InventoryObserved(devices=("gpu-0", "gpu-1")), NOW, RemediationConfig())
    book, decided = assess(book, xid("48"), default_catalogue(), NOW)
    assert decided is not None
    return step(book, decided, NOW, RemediationConfig())  # type: ignore[return-value]


# --- outbox ------------------------------------------------------------------------------------------


def test_the_outbox_keeps_what_must_be_done_and_drops_work_the_book_no_longer_wants() -> None:
    book, actions = draining_book()
    entries = pending(actions, step=1, owner="ctl/1")  # type: ignore[arg-type]
    assert [e.kind for e in entries] == [
        "Publish:FaultClassified",
        "SetDeviceTaints",
        "MarkNode",
        "Publish:RemediationStateChanged",
        "Publish:RemediationStateChanged",
        "EvictPods",
    ]
    assert [e.action() for e in entries] == actions
    assert isinstance(entries[0].action(), Publish)
    assert prune(entries, book) == tuple(entries)  # type: ignore[arg-type]
    drained, _ = step(book, DrainSucceeded(device="gpu-1", cycle=1), NOW, RemediationConfig())  # type: ignore[arg-type]
    assert [e.kind for e in prune(entries, drained)] == [e.kind for e in entries[:-1]]


def test_dry_run_keeps_only_work_and_held_keeps_nothing() -> None:
    quick = SetDeviceTaints(node="n", device="gpu-1", taints=(), disposition="dry-run")
    work = EvictPods(node="n", device="gpu-1", cycle=1, disposition="dry-run")
    held = Cordon(node="n", disposition="held")
    assert [e.kind for e in pending([quick, work, held], step=1, owner="o")] == ["EvictPods"]


# --- live view -----------------------------------------------------------------------------------------


def test_the_live_view_follows_faults_and_their_clearing_and_judges_a_repair() -> None:
    fault = FaultDetected(fault=assess(new_book("n"), xid("48"), default_catalogue(), NOW)[1].fault)  # type: ignore[union-attr]
    view = observe(LiveView(), xid("48"), fault, NOW)
    assert [c.describe() for c in view.active] == ["gpu-1 xid/48"]
    later = NOW + dt.timedelta(seconds=5)
    assert blocking(view, {"gpu-1"}, repaired_at=later) == []  # a one-off report from before the repair
    assert len(blocking(view, {"gpu-1"}, repaired_at=NOW)) == 1  # ... or reported again after it
    assert blocking(view, {"gpu-0"}, repaired_at=NOW) == []
    assert observe(view, xid("48", healthy=True), None, later).active == ()


# --- the Node -------------------------------------------------------------------------------------------


async def test_a_missing_standalone_node_is_created_already_cordoned_in_one_write(kube_api: KubeApiServer) -> None:
    """Created and then cordoned, the Node would be seen uncordoned once after gpudra cordoned it: an uncordon
    by hand, which cancels the remediation (the first one of a fresh standalone system was cancelled so)."""
    kube = await ClusterKube.connect(kube_api.url)
    try:
        listed = await kube.list(NODES)
        seen: list[bool] = []
        events = kube.watch(NODES, resource_version=listed.resource_version)
        actions = [
            Cordon(node="n"),
            TaintNode(node="n", taint=TAINT),
            MarkNode(node="n", labels={"a": "b"}, annotations={}),
        ]
        await NodeActions(kube, create_missing=True).apply("n", actions)
        async with asyncio.timeout(5), contextlib.aclosing(events):
            async for kind, obj in events:
                seen.append(bool(obj["spec"].get("unschedulable")))
                if kind == "ADDED":
                    break
        created = await kube.get(NODES, "n")
    finally:
        await kube.close()
    assert seen == [True]
    assert created["metadata"]["labels"] == {"a": "b"}
    assert created["spec"]["taints"] == [{"key": TAINT.key, "value": TAINT.value, "effect": TAINT.effect}]


def test_a_node_patch_adds_and_removes_only_gpudras_taint() -> None:
    node: dict[str, Any] = {
        "metadata": {"resourceVersion": "7"},
        "spec": {"taints": [{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]},
    }
    added = NodePatch(
        [Cordon(node="n"), TaintNode(node="n", taint=TAINT), MarkNode(node="n", labels={"a": "b"}, annotations={})]
    )
    assert added.body(node) == {
        "metadata": {"labels": {"a": "b"}, "resourceVersion": "7"},
        "spec": {
            "unschedulable": True,
            "taints": [
                {"key": "dedicated", "value": "ml", "effect": "NoSchedule"},
                {"key": "gpu.gpudra.io/gpu-error", "value": "fatal", "effect": "NoSchedule"},
            ],
        },
    }
    node["spec"]["taints"].append({"key": "gpu.gpudra.io/gpu-error", "value": "fatal", "effect": "NoSchedule"})
    removed = NodePatch([UntaintNode(node="n", taint=TAINT)])
    assert removed.body(node)["spec"]["taints"] == [{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]
    assert NodePatch([Cordon(node="n"), TaintNode(node="n", taint=TAINT), UntaintNode(node="n", taint=TAINT)]).body(
        {"metadata": {"resourceVersion": "1"}, "spec": {}}
    ) == {"metadata": {"resourceVersion": "1"}, "spec": {"unschedulable": True, "taints": None}}


def test_mig_devices_belong_to_their_gpu() -> None:
    assert parent_gpu("gpu-3-mig-1g10gb-19-0") == "gpu-3"
    assert parent_gpu("gpu-3") == "gpu-3"


async def test_a_drain_sees_which_pods_hold_which_of_the_nodes_gpus(kube_api: KubeApiServer) -> None:
    add_pod(kube_api, "node-a", "train", device="gpu-1")
    add_pod(kube_api, "node-a", "slice", device="gpu-2-mig-1g10gb-19-0")
    add_pod(kube_api, "node-a", "web")
    add_pod(kube_api, "node-b", "elsewhere", device="gpu-1")
    kube = await ClusterKube.connect(kube_api.url)
    try:
        pods = await Drainer(kube, DrainPolicy()).pods("node-a", with_devices=True)
    finally:
        await kube.close()
    assert {p.name: p.devices for p in pods} == {
        "train": ("gpu-1",),
        "slice": ("gpu-2", "gpu-2-mig-1g10gb-19-0"),
        "web": (),
    }


async def test_a_drain_reads_what_each_pods_claims_tolerate_on_its_gpus(kube_api: KubeApiServer) -> None:
    waits = {"key": "gpu.gpudra.io/xid", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
    add_pod(kube_api, "node-a", "inference", device="gpu-3-mig-1g10gb-19-0", tolerations=[waits])
    add_pod(kube_api, "node-a", "train", device="gpu-1", tolerations=[{"key": "x", "operator": "Bogus"}])
    kube = await ClusterKube.connect(kube_api.url)
    try:
        pods = {p.name: p for p in await Drainer(kube, DrainPolicy()).pods("node-a", with_devices=True)}
    finally:
        await kube.close()
    expected = DeviceToleration(key="gpu.gpudra.io/xid", operator="Exists", effect="NoExecute", toleration_seconds=300)
    assert pods["inference"].tolerations == {"gpu-3": (expected,), "gpu-3-mig-1g10gb-19-0": (expected,)}
    assert pods["train"].tolerations == {}  # one it cannot read is left out: the drain errs on its side
    assert pods["train"].devices == ("gpu-1",)


# --- lanes, books, lease --------------------------------------------------------------------------------


async def test_lanes_keep_each_nodes_order_batch_what_piles_up_and_run_nodes_side_by_side() -> None:
    seen: list[tuple[str, list[int]]] = []
    gate, a_running, b_ran = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def run(node: str, items: list[int]) -> None:
        seen.append((node, items))
        if node == "b":
            b_ran.set()
        if node == "a" and items == [1]:
            a_running.set()
            await gate.wait()

    lanes = Lanes[int](run, workers=4)
    lanes.submit("a", 1)
    async with asyncio.timeout(5):
        await a_running.wait()
    for item in (2, 3, 4):
        lanes.submit("a", item)
    lanes.submit("b", 1)
    async with asyncio.timeout(5):  # b is not held up by a, which waits on the gate all along
        await b_ran.wait()
    assert seen == [("a", [1]), ("b", [1])]
    gate.set()
    await lanes.wait_idle()
    assert seen[-1] == ("a", [2, 3, 4])


async def test_book_writes_are_compare_and_set(bus: Bus) -> None:
    store = await BookStore.open(bus)
    first = await store.load("node-a")
    assert first.revision == 0
    revision = await store.save("node-a", first.stored, first.revision)
    with pytest.raises(StaleEntry):
        await store.save("node-a", fresh("node-a").stored, first.revision)
    assert (await store.load("node-a")).revision == revision
    assert await store.nodes() == ["node-a"]


async def test_all_books_are_read_at_once_by_node_name(bus: Bus) -> None:
    store = await BookStore.open(bus)
    assert await store.all() == []
    revisions = {node: await store.save(node, fresh(node).stored, 0) for node in ("node-c", "node-b", "gpu-1.example")}
    revisions["node-c"] = await store.kv.put(node_key("node-c"), b"not a book")  # read as a fresh book
    await store.kv.delete(node_key("node-b"))
    await BreakerStore(store.kv).save(Breaker(), 0)
    assert await store.all() == [
        ("gpu-1.example", Versioned(fresh("gpu-1.example").stored, revisions["gpu-1.example"])),
        ("node-c", Versioned(fresh("node-c").stored, revisions["node-c"])),
    ]


PREFIX = REMEDIATION_LEASE_PREFIX


async def test_one_replica_leads_and_another_takes_over_when_it_leaves(bus: Bus) -> None:
    kv = await bus.kv(LEASE_BUCKET)
    changes: list[tuple[str, bool]] = []
    one = Election(
        kv,
        PREFIX,
        replica="ctl-1",
        incarnation="i1",
        renew_seconds=60.0,
        on_change=lambda leader: changes.append(("ctl-1", leader)),
    )
    two = Election(
        kv,
        PREFIX,
        replica="ctl-2",
        incarnation="i2",
        renew_seconds=60.0,
        on_change=lambda leader: changes.append(("ctl-2", leader)),
    )
    await one.start()
    await two.start()
    assert (one.is_leader, two.is_leader) == (True, False)
    assert await two.alive() == {"ctl-1": "i1", "ctl-2": "i2"}
    orphaned = two.orphaned(await two.alive())
    assert (orphaned("ctl-1/i1"), orphaned("ctl-1/i0"), orphaned("ctl-9/x")) == (False, True, True)
    await one.stop()
    await two._round()  # the renewal the loop would do
    assert two.is_leader
    restarted = Election(
        kv, PREFIX, replica="ctl-2", incarnation="i3", renew_seconds=60.0, on_change=lambda leader: None
    )
    await restarted.start()  # the same replica, started again, takes its own lease back at once
    assert restarted.is_leader
    for election in (two, restarted):
        await election.stop()


# --- reboot hooks and settings ------------------------------------------------------------------------


@asynccontextmanager
async def node_view(bus: Bus, kube_api: KubeApiServer) -> AsyncIterator[ClusterView]:
    kube = await ClusterKube.connect(kube_api.url)
    view = ClusterView(bus, kube)
    await view.start()
    try:
        yield view
    finally:
        await view.stop()
        await kube.close()


# A reboot as the kubelet shows it: the Node's status reports a new boot id.
REBOOT_SCRIPT = """
import json, sys, urllib.request
url, node, mode = sys.argv[1:]
patch = json.dumps({"status": {"nodeInfo": {"bootID": "boot-2"}}}).encode()
headers = {"Content-Type": "application/merge-patch+json"}
urllib.request.urlopen(urllib.request.Request(f"{url}/api/v1/nodes/{node}/status", patch, headers, method="PATCH"))
print(f"rebooting {node} {mode}")
"""


async def test_a_command_reboot_is_over_once_the_node_reports_a_new_boot_id(
    bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    add_node(kube_api, "n1", boot_id="boot-1")
    script = tmp_path / "reboot.py"
    script.write_text(REBOOT_SCRIPT)
    async with node_view(bus, kube_api) as view:
        hook = CommandReboot(f"{sys.executable} {script} {kube_api.url} {{node}} {{mode}}", 5, view)
        detail = await hook.reboot("n1", "vm")
    assert detail == "reboot hook done, boot id boot-1 → boot-2: rebooting n1 vm"


async def test_a_command_reboot_fails_without_a_new_boot_id_a_zero_exit_or_in_time(
    bus: Bus, kube_api: KubeApiServer
) -> None:
    add_node(kube_api, "n1", boot_id="boot-1")
    add_node(kube_api, "n2")
    async with node_view(bus, kube_api) as view:
        with pytest.raises(RepairFailed, match=r"n1 did not come back within 0.2s .*\(boot id still boot-1\)"):
            await CommandReboot("echo asked", 0.2, view).reboot("n1", "bare-metal")
        with pytest.raises(RepairFailed, match=r"n2 did not come back .*\(no boot id reported\)"):
            await CommandReboot("true", 0.2, view).reboot("n2", "bare-metal")
        with pytest.raises(RepairFailed, match="exited with 3"):
            await CommandReboot("sh -c 'exit 3'", 5, view).reboot("n1", "bare-metal")
        with pytest.raises(RepairFailed, match="did not finish within"):
            await CommandReboot("sleep 5", 0.1, view).reboot("n1", "bare-metal")
    with pytest.raises(RepairFailed, match="no reboot hook"):
        await NoReboot().reboot("n1", "bare-metal")


def test_the_reboot_hook_setting_picks_the_hook(bus: Bus) -> None:
    def pick(setting: str, backend: str = "nvml") -> type:
        hook = reboot_hook(
            setting,
            backend=backend,
            bus=bus,
            resetter=None,  # type: ignore[arg-type]
            gpus=lambda n: ((), ()),
            boots=None,  # type: ignore[arg-type]
            timeout=1,
        )
        return type(hook)

    assert pick("auto", "simulated") is SimulatedReboot
    assert pick("auto") is NoReboot
    assert pick("none", "simulated") is NoReboot
    assert pick("/usr/local/bin/reboot-node {node}") is CommandReboot


def test_a_drain_policy_file_reads_durations_and_modes(tmp_path: Path) -> None:
    path = tmp_path / "drain.yaml"
    path.write_text(
        "rules:\n"
        "  - mode: AllowCompletion\n    namespaces: [batch]\n"
        "  - mode: DeleteAfterTimeout\n    pod_labels: {app: trainer}\n    timeout: 30m\n"
        "default: {mode: Immediate, grace: 10}\n"
    )
    policy = read_drain_policy(str(path))
    assert [r.mode for r in policy.rules] == ["AllowCompletion", "DeleteAfterTimeout"]
    assert policy.rules[1].timeout == dt.timedelta(minutes=30)
    assert policy.default.grace == dt.timedelta(seconds=10)
    assert msgspec.structs.asdict(read_drain_policy("")) == msgspec.structs.asdict(DrainPolicy())
