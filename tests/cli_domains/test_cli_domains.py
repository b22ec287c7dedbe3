"""``gpudra domain create|get|list|delete``, ``gpudra claim create --domain`` and ``gpudra kubelet`` choosing the
compute-domain driver, run as commands against a real nats-server and its standalone store (``LocalKube``).

The store checks no CRD schema, so the refusals here are the CLI's own; the channel claim is read back with the
node's own reader (``read_channel_claim``), so a claim the node could not prepare fails here.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import kubernetes_validate
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.claims import COMPUTE_DOMAINS, UsageError, allocation, parse_domain_ref
from cli.domains import domain_object
from cli.kubelet import AmbiguousDriver, claim_driver
from cli.main import parse, parser
from cli.shares import whole_devices
from libs.bus import Bus
from libs.events.catalogue import ClaimRef
from libs.kube import RESOURCE_CLAIMS, KubeApi, LocalKube, NotFound
from libs.kube.local import object_key
from libs.kube.port import WatchEvent
from libs.kube.resources import check_object
from libs.kube.slice_publisher import SlicePublisher
from libs.natsserver import EmbeddedNats
from services.compute_domain.api import CHANNEL_CLASS, DRIVER, FINALIZER, MAX_NODES_PER_CLIQUE, decode_domain
from services.compute_domain.controller import domains as controller
from services.compute_domain.node.channels import read_channel_claim
from services.compute_domain.node.slots import slots_slice
from tests.fuzz.strategies import argv_text, mostly, odd_names
from tests.support.nats_fixture import operator_args

CLIQUE = "6c1f6a52-3d0e-4b8a-9a57-1d2f0c9e7b31.1"
WAIT = 10.0


async def cli(*argv: str) -> int:
    """The command as ``gpudra`` runs it (its own event loop, in a thread), exit code back."""
    args = parser().parse_args(list(argv))
    code: int = await asyncio.to_thread(args.run, args)
    return code


@pytest.fixture
async def kube(bus: Bus) -> KubeApi:
    return await LocalKube.open(bus.js)


@pytest.fixture
def url(nats_server: EmbeddedNats) -> list[str]:
    return operator_args(nats_server.url)


async def publish_slots(kube: KubeApi, node: str, slots: int) -> None:
    """The node's channel pool as compute_domain publishes it."""
    await SlicePublisher(kube, node, driver=DRIVER, synthetic_owner=True).publish(
        slots_slice(node, DRIVER, slots, CLIQUE)
    )


async def set_status(kube: KubeApi, name: str, status: dict[str, Any], namespace: str = "default") -> None:
    """Write the status as the controller would (status subresource, current resourceVersion)."""
    obj = await kube.get(COMPUTE_DOMAINS, name, namespace)
    await kube.update_status(COMPUTE_DOMAINS, {**obj, "status": status})


def condition(status: str, reason: str, message: str) -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": reason, "message": message, "lastTransitionTime": "T"}


def member(name: str, index: int, status: str = "Ready") -> dict[str, Any]:
    return {"name": name, "ipAddress": f"10.0.0.{index + 1}", "cliqueID": CLIQUE, "index": index, "status": status}


# --- domains ----------------------------------------------------------------------------------------------


def test_the_cli_writes_the_resource_the_controller_follows() -> None:
    assert COMPUTE_DOMAINS == controller.COMPUTE_DOMAINS


async def test_create_get_list_and_delete_round_trip(
    kube: KubeApi, url: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("domain", "create", "train", "--nodes", "2", "-o", "json", *url) == 0
    created = json.loads(capsys.readouterr().out)
    domain = decode_domain(created)  # what the controller will read
    assert (domain.spec.num_nodes, domain.spec.channel.resource_claim_template.name) == (2, "train-channel")
    assert domain.spec.channel.allocation_mode == "Single"
    assert created == await kube.get(COMPUTE_DOMAINS, "train", "default")

    assert await cli("domain", "create", "infer", "-n", "ml", "--nodes", "1", "--channels", "all", *url) == 0
    assert "computedomain ml/infer created" in capsys.readouterr().out
    other = decode_domain(await kube.get(COMPUTE_DOMAINS, "infer", "ml"))
    assert other.spec.channel.allocation_mode == "All"

    assert await cli("domain", "get", "train", *url) == 0
    shown = capsys.readouterr().out
    assert f"computedomain default/train (uid {domain.metadata.uid})" in shown
    assert "status:   NotReady" in shown
    assert "no status yet (is the compute_domain controller running?)" in shown
    assert await cli("domain", "get", "train", "-o", "json", *url) == 0
    assert json.loads(capsys.readouterr().out)["metadata"]["uid"] == domain.metadata.uid

    assert await cli("domain", "list", *url) == 0  # the default namespace only
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "NODES", "READY", "STATUS", "REASON"]
    assert [line.split() for line in lines[1:]] == [["default", "train", "2", "0", "NotReady", "-"]]
    assert await cli("domain", "list", "-A", *url) == 0
    assert [line.split()[:2] for line in capsys.readouterr().out.splitlines()[1:]] == [
        ["default", "train"],
        ["ml", "infer"],
    ]
    assert await cli("domain", "list", "-n", "ml", "-o", "json", *url) == 0
    assert [obj["metadata"]["name"] for obj in json.loads(capsys.readouterr().out)] == ["infer"]

    assert await cli("domain", "delete", "train", *url) == 0  # no controller, no finalizer: gone at once
    assert capsys.readouterr().out.strip() == "computedomain default/train deleted"
    with pytest.raises(NotFound):
        await kube.get(COMPUTE_DOMAINS, "train", "default")
    for verb in ("get", "delete"):
        assert await cli("domain", verb, "train", *url) == 2
        assert "no ComputeDomain default/train in the standalone store" in capsys.readouterr().err


async def test_the_status_the_controller_writes_is_shown(
    kube: KubeApi, url: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("domain", "create", "train", "--nodes", "3", *url) == 0
    await set_status(
        kube,
        "train",
        {
            "status": "NotReady",
            "conditions": [condition("False", "NodeNotReady", "gb-1: IMEX daemon (pid 42) was killed by SIGKILL")],
            "nodes": [member("gb-0", 0), member("gb-1", 1, "NotReady")],
        },
    )
    capsys.readouterr()
    assert await cli("domain", "get", "train", *url) == 0
    shown = capsys.readouterr().out
    assert "reason:   NodeNotReady: gb-1: IMEX daemon (pid 42) was killed by SIGKILL" in shown
    assert "nodes:    1 of 3 ready, 2 joined" in shown
    table = shown.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == ["NODE", "INDEX", "CLIQUE", "STATUS", "IP"]
    assert table[2].split() == ["gb-1", "1", CLIQUE, "NotReady", "10.0.0.2"]
    assert await cli("domain", "list", *url) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["default", "train", "3", "1", "NotReady", "NodeNotReady"]


async def test_a_finalizer_holds_a_deleted_domain_and_the_cli_says_so(
    kube: KubeApi, url: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("domain", "create", "train", "--nodes", "1", *url) == 0
    await kube.patch(COMPUTE_DOMAINS, "train", {"metadata": {"finalizers": [FINALIZER]}}, "default")  # the controller's
    capsys.readouterr()
    assert await cli("domain", "delete", "train", "-o", "json", *url) == 0
    marked = json.loads(capsys.readouterr().out)
    assert marked["metadata"]["deletionTimestamp"]
    assert await cli("domain", "delete", "train", *url) == 0
    assert capsys.readouterr().out.strip() == (
        "computedomain default/train: deletion pending, held by the controller's finalizer "
        f"{FINALIZER} until it has deleted the claim template"
    )
    assert await cli("domain", "list", *url) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[4] == "Deleting"
    assert await cli("domain", "get", "train", *url) == 0
    assert "deleting: since" in capsys.readouterr().out
    await kube.patch(COMPUTE_DOMAINS, "train", {"metadata": {"finalizers": None}}, "default")  # the controller lets go
    with pytest.raises(NotFound):
        await kube.get(COMPUTE_DOMAINS, "train", "default")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["Train", "--nodes", "1"], "the name 'Train' must be a DNS label"),
        (["a.b", "--nodes", "1"], "the name 'a.b' must be a DNS label"),
        (["x" * 64, "--nodes", "1"], "must be a DNS label"),
        (["train", "--nodes", "0"], "--nodes 0: a domain needs at least one node"),
        (["train", "--nodes", "-3"], "--nodes -3: a domain needs at least one node"),
        (["train", "--nodes", "1", "-n", "ML"], "--namespace 'ML' must be a DNS label"),
        (["train", "--nodes", "1", "--claim-template", "a_b"], "--claim-template 'a_b' must be a DNS subdomain"),
        (["train", "--nodes", str(2**63)], f"--nodes {2**63}: the API's integers are 64-bit"),
    ],
)
async def test_what_the_api_server_would_refuse_is_refused(
    kube: KubeApi, url: list[str], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert await cli("domain", "create", *argv, *url) == 2
    assert message in capsys.readouterr().err
    assert (await kube.list(COMPUTE_DOMAINS)).items == []


async def test_an_existing_domain_is_not_replaced_and_an_oversized_one_is_warned_about(
    kube: KubeApi, url: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("domain", "create", "train", "--nodes", "2", *url) == 0
    before = await kube.get(COMPUTE_DOMAINS, "train", "default")
    assert await cli("domain", "create", "train", "--nodes", "4", *url) == 1
    assert "ComputeDomain default/train already exists (its spec cannot change: delete it first)" in (
        capsys.readouterr().err
    )
    assert await kube.get(COMPUTE_DOMAINS, "train", "default") == before
    assert await cli("domain", "create", "big", "--nodes", str(MAX_NODES_PER_CLIQUE + 1), *url) == 0
    assert f"at most {MAX_NODES_PER_CLIQUE} nodes" in capsys.readouterr().err


def test_a_domain_object_is_what_the_crd_describes() -> None:
    obj = domain_object("train", "ml", 4, "all", "")
    assert obj["spec"] == {
        "numNodes": 4,
        "channel": {"resourceClaimTemplate": {"name": "train-channel"}, "allocationMode": "All"},
    }


# --- waiting for Ready --------------------------------------------------------------------------------------


@pytest.fixture
def watching(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set once a domain watch of the command has handed over its first event (the watch is established)."""
    started = threading.Event()
    original = LocalKube.watch

    async def watch(self: LocalKube, *args: Any, **kwargs: Any) -> AsyncGenerator[WatchEvent, None]:
        async for event in original(self, *args, **kwargs):
            yield event
            started.set()

    monkeypatch.setattr(LocalKube, "watch", watch)
    return started


async def test_wait_ready_returns_when_the_status_becomes_ready(
    kube: KubeApi, url: list[str], watching: threading.Event, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("domain", "create", "train", "--nodes", "2", *url) == 0
    await set_status(kube, "train", {"status": "NotReady", "conditions": [condition("False", "WaitingForNodes", "")]})
    capsys.readouterr()
    waiting = asyncio.create_task(cli("domain", "get", "train", "--wait-ready", str(WAIT), *url))
    assert await asyncio.to_thread(watching.wait, WAIT)
    assert not waiting.done()
    await set_status(kube, "train", {"status": "NotReady", "nodes": [member("gb-0", 0)]})  # not yet
    await set_status(
        kube,
        "train",
        {
            "status": "Ready",
            "conditions": [condition("True", "AllNodesReady", "")],
            "nodes": [member("gb-0", 0), member("gb-1", 1)],
        },
    )
    assert await asyncio.wait_for(waiting, WAIT) == 0
    shown = capsys.readouterr().out
    assert "status:   Ready" in shown
    assert "nodes:    2 of 2 ready, 2 joined" in shown


async def test_wait_ready_times_out_with_the_last_reason(
    kube: KubeApi, url: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("domain", "create", "train", "--nodes", "2", *url) == 0
    await set_status(
        kube,
        "train",
        {"status": "NotReady", "conditions": [condition("False", "WaitingForNodes", "1 of 2 nodes joined")]},
    )
    capsys.readouterr()
    assert await cli("domain", "get", "train", "--wait-ready", "0.5", *url) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        "ComputeDomain default/train is not Ready after 0.5 s: NotReady, WaitingForNodes: 1 of 2 nodes joined"
        in captured.err
    )
    assert await cli("domain", "get", "train", "--wait-ready", "-1", *url) == 2


async def test_the_deadline_holds_when_the_watch_swallows_its_cancellation(
    kube: KubeApi, url: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """nats-py swallows a cancellation that lands in its flush: a watch parked there must not outlive the wait."""
    assert await cli("domain", "create", "train", "--nodes", "2", *url) == 0
    swallowed = threading.Event()
    original = LocalKube.watch

    async def stubborn(self: LocalKube, *args: Any, **kwargs: Any) -> AsyncGenerator[WatchEvent, None]:
        async for event in original(self, *args, **kwargs):
            yield event
            break
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()  # the first one, as nats-py does; the run's own teardown cancels again
        await asyncio.Event().wait()

    monkeypatch.setattr(LocalKube, "watch", stubborn)
    capsys.readouterr()
    assert await asyncio.wait_for(cli("domain", "get", "train", "--wait-ready", "0.3", *url), WAIT) == 1
    assert swallowed.is_set()
    assert "is not Ready after 0.3 s" in capsys.readouterr().err


async def test_wait_ready_ends_when_the_domain_is_deleted(
    kube: KubeApi, url: list[str], watching: threading.Event, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("domain", "create", "train", "--nodes", "2", *url) == 0
    waiting = asyncio.create_task(cli("domain", "get", "train", "--wait-ready", str(WAIT), *url))
    assert await asyncio.to_thread(watching.wait, WAIT)
    await kube.delete(COMPUTE_DOMAINS, "train", "default")
    assert await asyncio.wait_for(waiting, WAIT) == 1
    assert "ComputeDomain default/train was deleted before it was Ready" in capsys.readouterr().err


# --- channel claims -----------------------------------------------------------------------------------------


@pytest.fixture
async def domain_uid(kube: KubeApi, url: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Domain default/train (Single), and two channel slots published on gb-1."""
    await publish_slots(kube, "gb-1", 2)
    assert await cli("domain", "create", "train", "--nodes", "2", "-o", "json", *url) == 0
    uid: str = json.loads(capsys.readouterr().out)["metadata"]["uid"]
    return uid


async def create_channel_claim(
    capsys: pytest.CaptureFixture[str], url: list[str], name: str, *extra: str
) -> dict[str, Any]:
    assert await cli("claim", "create", name, "--domain", "train", "--node", "gb-1", "-o", "json", *extra, *url) == 0
    claim: dict[str, Any] = json.loads(capsys.readouterr().out)
    return claim


async def test_a_channel_claim_is_the_templates_claim_on_a_free_slot(
    kube: KubeApi, url: list[str], domain_uid: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = await create_channel_claim(capsys, url, "c1")
    assert first == await kube.get(RESOURCE_CLAIMS, "c1", "default")
    devices = first["spec"]["devices"]
    assert devices["requests"] == [{"name": "channel", "exactly": {"deviceClassName": CHANNEL_CLASS}}]
    config = {"apiVersion": "resource.gpudra.io/v1beta1", "kind": "ComputeDomainChannelConfig"}
    assert devices["config"] == [
        {
            "requests": ["channel"],
            "opaque": {"driver": DRIVER, "parameters": {**config, "domainID": domain_uid, "allocationMode": "Single"}},
        }
    ]
    results = first["status"]["allocation"]["devices"]["results"]
    assert results == [{"request": "channel", "driver": DRIVER, "pool": "gb-1", "device": "slot-0"}]
    kubernetes_validate.validate(first, "1.34.0", strict=True)
    ref = ClaimRef(namespace="default", name="c1", uid=first["metadata"]["uid"])
    read = read_channel_claim(first, ref, driver=DRIVER, node="gb-1")  # what the node will prepare
    assert (read.domain_uid, read.mode, read.slot) == (domain_uid, "Single", "slot-0")

    second = await create_channel_claim(capsys, url, "c2")
    assert second["status"]["allocation"]["devices"]["results"][0]["device"] == "slot-1"

    assert await cli("claim", "create", "c3", "--domain", "train", "--node", "gb-1", *url) == 2
    assert "node gb-1 has no free channel slot: all 2 are held (slot-0 by default/c1, slot-1 by default/c2)" in (
        capsys.readouterr().err
    )
    assert await cli("claim", "create", "c3", "--domain", "train", "--node", "gb-2", *url) == 2
    assert f"node gb-2 publishes no {DRIVER} ResourceSlice" in capsys.readouterr().err
    with pytest.raises(NotFound):
        await kube.get(RESOURCE_CLAIMS, "c3", "default")

    assert await cli("claim", "delete", "c1", *url) == 0
    capsys.readouterr()
    assert await cli("claim", "create", "c3", "--domain", "train", "--node", "gb-1", *url) == 0
    assert capsys.readouterr().out.strip().endswith("allocated slot-0 on gb-1, domain default/train")
    assert await cli("claim", "list", *url) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(None, 4)[4] for line in lines[1:]] == [
        "slot-1 on gb-1, domain default/train",
        "slot-0 on gb-1, domain default/train",
    ]


async def test_a_domain_in_another_namespace_is_named_with_a_warning(
    kube: KubeApi, url: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    await publish_slots(kube, "gb-1", 1)
    assert await cli("domain", "create", "infer", "-n", "ml", "--nodes", "1", "--channels", "all", *url) == 0
    uid = (await kube.get(COMPUTE_DOMAINS, "infer", "ml"))["metadata"]["uid"]
    capsys.readouterr()
    assert await cli("claim", "create", "c", "--domain", "ml/infer", "--node", "gb-1", "-o", "json", *url) == 0
    captured = capsys.readouterr()
    assert "warning: ComputeDomain ml/infer is in namespace ml, the claim in default" in captured.err
    claim = json.loads(captured.out)
    assert claim["metadata"]["namespace"] == "default"
    assert claim["spec"]["devices"]["config"][0]["opaque"]["parameters"]["domainID"] == uid
    assert claim["spec"]["devices"]["config"][0]["opaque"]["parameters"]["allocationMode"] == "All"
    assert await cli("claim", "create", "quiet", "-n", "ml", "--domain", "infer", "--node", "gb-1", *url) == 2
    err = capsys.readouterr().err
    assert "warning" not in err  # same namespace: no warning; the one slot is taken
    assert "no free channel slot" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--domain", "ghost"], "no ComputeDomain default/ghost in the standalone store"),
        (["--domain", "ml/ghost"], "no ComputeDomain ml/ghost in the standalone store"),
        (["--domain", "a/b/c"], "--domain 'a/b/c': give NAME or NAMESPACE/NAME"),
        (["--domain", "/train"], "--domain '/train': give NAME or NAMESPACE/NAME"),
        (["--domain", "train", "--driver", "gpu.gpudra.io"], "--driver is for GPU claims"),
    ],
)
@pytest.mark.usefixtures("domain_uid")
async def test_a_domain_that_cannot_be_used_is_refused(
    kube: KubeApi, url: list[str], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert await cli("claim", "create", "c", "--node", "gb-1", *argv, *url) == 2
    assert message in capsys.readouterr().err
    assert (await kube.list(RESOURCE_CLAIMS)).items == []


def test_domain_and_device_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(["claim", "create", "c", "--domain", "train", "--device", "gpu-0"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["claim", "create", "c"])


# --- the kubelet's driver -----------------------------------------------------------------------------------


def test_the_kubelet_calls_the_driver_the_allocation_names() -> None:
    channel = {"status": {"allocation": {"devices": {"results": [{"driver": DRIVER, "device": "slot-0"}]}}}}
    gpu = {
        "status": {
            "allocation": allocation(
                whole_devices([("gpu", "gpu-0")], node="gb-1", driver="gpu.gpudra.io"), None, "gb-1", "gpu.gpudra.io"
            )
        }
    }
    assert claim_driver(channel) == DRIVER
    assert claim_driver(gpu) == "gpu.gpudra.io"
    assert claim_driver({"metadata": {}}) == ""  # not allocated: the system's GPU driver, as before
    both = {"status": {"allocation": {"devices": {"results": [*results(gpu), *results(channel)]}}}}
    with pytest.raises(AmbiguousDriver, match=f"gpu.gpudra.io, {DRIVER}: pass --driver"):
        claim_driver(both)


def results(claim: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = claim["status"]["allocation"]["devices"]["results"]
    return found


async def test_kubelet_prepare_of_a_channel_claim_dials_the_compute_domain_driver(
    url: list[str], domain_uid: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No shim serves the compute-domain driver here: the registration error names the driver it looked for."""
    await create_channel_claim(capsys, url, "c1")
    registry = tmp_path / "plugins_registry"
    registry.mkdir()
    kubelet = ["--registry-dir", str(registry), *url]
    assert await cli("kubelet", "prepare", "c1", "--node", "gb-1", *kubelet) == 1
    assert f"no registration socket for DRA driver '{DRIVER}'" in capsys.readouterr().err
    assert await cli("kubelet", "unprepare", "c1", "--driver", "gpu.gpudra.io", *kubelet) == 1
    assert "no registration socket for DRA driver 'gpu.gpudra.io'" in capsys.readouterr().err


# --- any words ----------------------------------------------------------------------------------------------

words = argv_text | odd_names | st.sampled_from(["train", "a.b", "-1", "--", "ml/train", "/train", "a/b/c"])
names = mostly(st.sampled_from(["train", "default", "ml", "t-1"]), words)


def clean_key(namespace: str, name: str) -> bool:
    """The store's key of the domain: tokens the server takes, no wildcard or extra token hidden in them."""
    key = object_key(COMPUTE_DOMAINS, namespace, name)
    return all(token and token.isprintable() and not set(token) & set(" *>") for token in key.split("."))


@settings(max_examples=200, deadline=None)
@given(
    name=names,
    namespace=names,
    nodes=st.integers(),
    template=st.just("") | names,
    channels=st.sampled_from(["single", "all"]),
)
def test_any_domain_arguments_give_a_domain_the_controller_reads_or_a_usage_error(
    name: str, namespace: str, nodes: int, template: str, channels: str
) -> None:
    try:
        obj = domain_object(name, namespace, nodes, channels, template)
    except UsageError:
        return
    check_object(COMPUTE_DOMAINS, obj)
    assert clean_key(namespace, name)
    decode_domain({**obj, "metadata": {**obj["metadata"], "uid": "u"}})
    msgspec.json.encode(obj)


@settings(max_examples=200, deadline=None)
@given(text=names, namespace=st.sampled_from(["default", "ml"]))
def test_any_domain_reference_names_a_storable_key_or_is_refused(text: str, namespace: str) -> None:
    try:
        domain_namespace, name = parse_domain_ref(text, namespace)
    except UsageError:
        return
    assert clean_key(domain_namespace, name)
