"""kill -9 at random moments of 200 prepare/unprepare cycles: the kubelet retries, and the node stays consistent.

claim_preparation runs as a real process (simulated GPUs, standalone store on a real nats-server, CDI and
checkpoint directories in the test's temp dir); the kubelet_shim runs in the test's process and the
kubelet-like gRPC client calls it. Ten claims cycle at once: whole GPUs, static MIG devices, dynamic MIG devices
created and destroyed on GPU 3, time-slicing and MPS. A killer sends SIGKILL after a random number of answered
calls plus a random delay on the scale of the observed call latency (so kills land inside prepares and
unprepares, before, during and after each phase), and now and then while the restarted service is still
loading its checkpoint. The seed is printed; ``GPUDRA_CRASH_SEED=<seed>`` replays the same choices (the timing
of a loaded machine still varies).

At the end (see ``claim_prep_crash_support.audit``): every claim the client believes prepared has one
PrepareCompleted record, its CDI spec and its MIG device (the one the record names); nothing else has a record,
a spec, a MIG device, a sharing setting or an MPS directory; and the claim events in JetStream account for
every transition the client saw, at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import random
import signal
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from libs.bus import Bus
from libs.devices.model import MpsSettings, TimeSliceInterval
from libs.kube import KubeApi
from libs.natsserver import EmbeddedNats
from services.claim_preparation.checkpoint import CheckpointStore
from tests.claim_preparation.claim_prep_crash_support import (
    CLAIMS,
    ClaimEvent,
    CrashRun,
    NodeSnapshot,
    audit,
    claim_events,
    findings,
    kubelet_and_service,
    random_run,
    read_until,
    snapshot,
    start_stalling_service,
    store_claims,
)
from tests.claim_preparation.claim_prep_support import (
    DRIVER,
    prepare,
    service_settings,
    serving,
    store_claim,
    unprepare,
    until_answering,
)

CYCLES = 200


@pytest.mark.slow
async def test_sigkill_at_random_moments_of_200_cycles_leaves_each_claim_prepared_once_or_not_at_all(
    tmp_path: Path, nats_server: EmbeddedNats, bus: Bus, kube: KubeApi
) -> None:
    done = await random_run(service_settings(tmp_path, nats_server.url), bus, kube, CLAIMS, CYCLES)
    stats = done.stats
    assert not done.problems(), f"seed {done.seed}: {stats.summary()}\n" + "\n".join(done.problems())
    # The test means something only if the kills landed where they can do harm.
    assert stats.kills >= 20, stats.summary()
    assert stats.kills_inside_calls >= stats.kills // 2, stats.summary()
    assert stats.rollbacks["PrepareStarted"] + stats.rollbacks["UnprepareStarted"] >= 3, stats.summary()


# --- the audit can fail: each kind of inconsistency, planted in a consistent node ------------------------------


def _claim(run: CrashRun, name: str) -> str:
    return next(uid for uid, p in run.progress.items() if p.claim.name == name)


@pytest.fixture
async def clean_run(
    tmp_path: Path, nats_server: EmbeddedNats, bus: Bus, kube: KubeApi
) -> tuple[CrashRun, NodeSnapshot]:
    """Two cycles of every claim without kills, then three of them prepared (time-slicing, static MIG with MPS,
    dynamic MIG with MPS): a consistent node to plant inconsistencies in."""
    settings = service_settings(tmp_path, nats_server.url)
    claims = await store_claims(kube, CLAIMS)
    keep = {uid for uid, (claim, _) in claims.items() if claim.name in {"sliced-5", "static-mps-1", "dyn-mps-3g-4"}}
    async with kubelet_and_service(settings, bus) as (client, runner):
        run = CrashRun(runner=runner, client=client, settings=settings, claims=claims, rng=random.Random(0), kill=False)
        stats = await run.run(dict.fromkeys(claims, 2), keep)
        node = await snapshot(settings, bus.js)
    assert findings(stats) == []
    return run, node


Plant = Callable[[CrashRun, NodeSnapshot], str]
"""Plants one inconsistency in a copy of a consistent node; returns what the audit must say."""


def lost_record(run: CrashRun, node: NodeSnapshot) -> str:
    del node.records[_claim(run, "sliced-5")]
    return "claim sliced-5 is prepared for the client but has no checkpoint record"


def half_done_record(run: CrashRun, node: NodeSnapshot) -> str:
    uid = _claim(run, "sliced-5")
    node.records[uid] = node.records[uid].with_state("PrepareStarted")
    return "claim sliced-5: its checkpoint record is PrepareStarted, not PrepareCompleted"


def record_of_unprepared(run: CrashRun, node: NodeSnapshot) -> str:
    uid = _claim(run, "whole-4")
    node.records[uid] = msgspec.structs.replace(node.records[_claim(run, "sliced-5")], uid=uid)
    return "checkpoint holds claim whole-4 (PrepareCompleted) that the client believes unprepared"


def record_of_other_devices(run: CrashRun, node: NodeSnapshot) -> str:
    uid = _claim(run, "sliced-5")
    node.records[uid] = msgspec.structs.replace(
        node.records[uid], devices=node.records[_claim(run, "static-mps-1")].devices
    )
    return "claim sliced-5: the checkpoint names devices ['gpu-1-mig-3g40gb-9-0']"


def device_in_two_records(run: CrashRun, node: NodeSnapshot) -> str:
    record_of_unprepared(run, node)
    return "device gpu-5 is in 2 checkpoint records"


def answer_unlike_checkpoint(run: CrashRun, node: NodeSnapshot) -> str:
    run.progress[_claim(run, "sliced-5")].answers = {(("gpu-5", ("k8s.gpu.gpudra.io/claim=other-gpu-5",)),)}
    return "claim sliced-5: answered"


def torn_checkpoint_file(run: CrashRun, node: NodeSnapshot) -> str:
    node.checkpoint_leftovers.append(".x.json.tmp-1234")
    return "checkpoint directory holds leftover .x.json.tmp-1234"


def orphan_spec(run: CrashRun, node: NodeSnapshot) -> str:
    uid = _claim(run, "whole-4")
    node.specs[f"k8s.{DRIVER}-claim_{uid}.json"] = {f"{uid}-gpu-4"}
    return f"CDI file k8s.{DRIVER}-claim_{uid}.json belongs to no prepared claim"


def spec_without_record(run: CrashRun, node: NodeSnapshot) -> str:
    uid = _claim(run, "sliced-5")
    del node.records[uid]
    return f"CDI file k8s.{DRIVER}-claim_{uid}.json has no checkpoint record"


def spec_of_other_devices(run: CrashRun, node: NodeSnapshot) -> str:
    uid = _claim(run, "sliced-5")
    node.specs[f"k8s.{DRIVER}-claim_{uid}.json"] = {f"{uid}-gpu-6"}
    return f"CDI file k8s.{DRIVER}-claim_{uid}.json holds devices ['{uid}-gpu-6']"


def lost_spec(run: CrashRun, node: NodeSnapshot) -> str:
    del node.specs[f"k8s.{DRIVER}-claim_{_claim(run, 'static-mps-1')}.json"]
    return "claim static-mps-1 is prepared for the client but has no CDI spec"


def leftover_mig(run: CrashRun, node: NodeSnapshot) -> str:
    device = next(d for d in node.mig_devices if d.name == "gpu-3-mig-3g40gb-9-4")
    node.mig_devices.append(
        msgspec.structs.replace(device, placement=msgspec.structs.replace(device.placement, start=0))
    )
    return "MIG device gpu-3-mig-3g40gb-9-0 is left over: no prepared claim uses it"


def doubled_mig(run: CrashRun, node: NodeSnapshot) -> str:
    node.mig_devices.append(next(d for d in node.mig_devices if d.name == "gpu-3-mig-3g40gb-9-4"))
    return "MIG device gpu-3-mig-3g40gb-9-4 exists 2 times"


def lost_mig(run: CrashRun, node: NodeSnapshot) -> str:
    node.mig_devices = [d for d in node.mig_devices if d.name != "gpu-3-mig-3g40gb-9-4"]
    return "claim dyn-mps-3g-4 is prepared for the client but MIG device gpu-3-mig-3g40gb-9-4 does not exist"


def recreated_mig(run: CrashRun, node: NodeSnapshot) -> str:
    node.mig_devices = [
        msgspec.structs.replace(d, uuid="MIG-other") if d.name == "gpu-3-mig-3g40gb-9-4" else d
        for d in node.mig_devices
    ]
    return "MIG device gpu-3-mig-3g40gb-9-4 (MIG-other) does not match its claim's checkpoint record"


def destroyed_static_mig(run: CrashRun, node: NodeSnapshot) -> str:
    node.mig_devices = [d for d in node.mig_devices if d.name != "gpu-2-mig-4g40gb-5-0"]
    return "static MIG device gpu-2-mig-4g40gb-5-0 was destroyed"


def leftover_time_slice(run: CrashRun, node: NodeSnapshot) -> str:
    node.sims[4] = msgspec.structs.replace(node.sims[4], time_slice=TimeSliceInterval.SHORT)
    return "gpu-4 time slice is Short, prepared claims want it on: False"


def leftover_mps(run: CrashRun, node: NodeSnapshot) -> str:
    node.sims[6] = msgspec.structs.replace(node.sims[6], mps=MpsSettings(pipe_directory="/x"))
    return "gpu-6 MPS is on, prepared claims want it on: False"


def leftover_mps_dir(run: CrashRun, node: NodeSnapshot) -> str:
    node.mps_dirs.append(f"{_claim(run, 'mps-6')}/0")
    return f"MPS directory {_claim(run, 'mps-6')}/0 has no prepared claim"


def lost_mps_dir(run: CrashRun, node: NodeSnapshot) -> str:
    uid = _claim(run, "static-mps-1")
    node.mps_dirs = [d for d in node.mps_dirs if not d.startswith(uid)]
    return f"MPS directory {uid}/0 of a prepared claim is missing"


def event_of_unknown_claim(run: CrashRun, node: NodeSnapshot) -> str:
    node.events.append(ClaimEvent("ClaimUnprepared", "no-such-uid"))
    return "ClaimUnprepared for unknown claim uid no-such-uid"


def lost_prepared_event(run: CrashRun, node: NodeSnapshot) -> str:
    uid = _claim(run, "whole-4")
    first = next(i for i, e in enumerate(node.events) if e == ClaimEvent("ClaimPrepared", uid, ("gpu-4",)))
    del node.events[first]
    return "claim whole-4: 1 ClaimPrepared events for 2 prepared transitions the client saw"


def lost_unprepared_event(run: CrashRun, node: NodeSnapshot) -> str:
    uid = _claim(run, "dyn-1g-0")
    node.events = [e for e in node.events if e != ClaimEvent("ClaimUnprepared", uid)]
    return "claim dyn-1g-0: 0 ClaimUnprepared events for 2 unprepared transitions the client saw"


def stale_last_event(run: CrashRun, node: NodeSnapshot) -> str:
    uid = _claim(run, "sliced-5")
    node.events.append(ClaimEvent("ClaimUnprepared", uid))
    return "claim sliced-5: its last event is ClaimUnprepared, the node has it ClaimPrepared"


def wrong_event_devices(run: CrashRun, node: NodeSnapshot) -> str:
    node.events.append(ClaimEvent("ClaimPrepared", _claim(run, "sliced-5"), ("gpu-6",)))
    return "ClaimPrepared of sliced-5 names devices ['gpu-6']"


def two_answers(run: CrashRun, node: NodeSnapshot) -> str:
    progress = run.progress[_claim(run, "whole-4")]
    progress.answers.add((("gpu-5", ()),))
    return "claim whole-4 got 2 different prepare answers"


PLANTS: list[Plant] = [
    lost_record,
    half_done_record,
    record_of_unprepared,
    record_of_other_devices,
    device_in_two_records,
    answer_unlike_checkpoint,
    two_answers,
    torn_checkpoint_file,
    orphan_spec,
    spec_without_record,
    spec_of_other_devices,
    lost_spec,
    leftover_mig,
    doubled_mig,
    lost_mig,
    recreated_mig,
    destroyed_static_mig,
    leftover_time_slice,
    leftover_mps,
    leftover_mps_dir,
    lost_mps_dir,
    event_of_unknown_claim,
    lost_prepared_event,
    lost_unprepared_event,
    stale_last_event,
    wrong_event_devices,
]


async def test_the_audit_finds_each_kind_of_inconsistency(clean_run: tuple[CrashRun, NodeSnapshot]) -> None:
    run, node = clean_run
    assert audit(node, run.progress) == []
    assert {p.claim.name for p in run.progress.values() if p.prepared} == {"sliced-5", "static-mps-1", "dyn-mps-3g-4"}
    for plant in PLANTS:
        planted_run = copy.copy(run)
        planted_run.progress = copy.deepcopy(run.progress)
        planted = dataclasses.replace(
            node, **{f.name: copy.deepcopy(getattr(node, f.name)) for f in dataclasses.fields(node)}
        )
        expected = plant(planted_run, planted)
        found = audit(planted, planted_run.progress)
        assert any(expected in problem for problem in found), f"{plant.__name__}: {expected!r} not in {found}"


def test_the_claims_cover_what_must_be_undone() -> None:
    """Whole GPUs, static and dynamic MIG, time-slicing and MPS: every kind of state a crash can leave."""
    kinds = {
        "dynamic MIG": any(c.dynamic_mig for c in CLAIMS),
        "static MIG": any("-mig-" in d and not d.startswith("gpu-3") for c in CLAIMS for d in c.device_names),
        "two GPUs": any(len(c.devices) > 1 for c in CLAIMS),
        "time-slicing": any("TimeSlicing" in str(c.configs) for c in CLAIMS),
        "MPS": any("MPS" in str(c.configs) for c in CLAIMS if c.dynamic_mig),
    }
    assert all(kinds.values()), kinds
    devices = [d for c in CLAIMS for d in c.device_names]
    assert len(devices) == len(set(devices))  # one claim per device: every claim can be prepared at any time


# --- the bug the crash cycles found, pinned down ---------------------------------------------------------------


@pytest.mark.parametrize("event", ["ClaimPrepared", "ClaimUnprepared"])
async def test_an_event_owed_when_the_service_is_killed_is_still_published(
    event: str, tmp_path: Path, nats_server: EmbeddedNats, bus: Bus, kube: KubeApi
) -> None:
    """docs/events.md promises at-least-once delivery, and handlers.py that whoever reacts to ``ClaimPrepared``
    sees it no later than the kubelet learns of the claim. The service is killed after the checkpoint says the
    claim is prepared (being unprepared, its devices released) and before the event is out; the restarted
    service sends it, once."""
    ref = await store_claim(kube, "owed-0", [("gpu", "gpu-4")])
    settings = service_settings(tmp_path, nats_server.url)
    if event == "ClaimUnprepared":
        async with serving(nats_server.url, settings):
            await until_answering(bus)
            assert (await prepare(bus, ref)).results[ref.uid].error == ""
    child = await start_stalling_service(nats_server.url, tmp_path, event)
    ask = prepare if event == "ClaimPrepared" else unprepare
    try:
        await until_answering(bus)
        call = asyncio.create_task(ask(bus, ref))
        await read_until(child, f"AT {event}")
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await call
    record = CheckpointStore(settings.checkpoint_path).load().records
    assert [r.state for r in record] == ["PrepareCompleted" if event == "ClaimPrepared" else "UnprepareStarted"]
    async with serving(nats_server.url, settings):  # the kubelet retries against the restarted service
        await until_answering(bus)
        assert all(r.error == "" for r in (await ask(bus, ref)).results.values())
    devices = ("gpu-4",) if event == "ClaimPrepared" else ()
    assert (await claim_events(bus.js)).count(ClaimEvent(event, ref.uid, devices)) == 1
