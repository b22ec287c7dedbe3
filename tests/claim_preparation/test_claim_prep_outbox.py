"""The claim event outbox: an event the bus refuses is kept on disk and sent later; a clean restart repeats nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgspec
import pytest

from libs.bus import Bus
from libs.bus.topology import event_stream
from libs.events import Domain
from libs.events.catalogue import ClaimPrepared, ClaimRef, ClaimUnprepared
from libs.kube import KubeApi
from libs.natsserver import EmbeddedNats
from services.claim_preparation.outbox import FILE_NAME, Outbox, OutboxFile
from services.claim_preparation.record import UNPREPARE_STARTED, ClaimRecord
from services.claim_preparation.settings import Settings
from tests.claim_preparation.claim_prep_crash_support import ClaimEvent, claim_events
from tests.claim_preparation.claim_prep_support import (
    NODE,
    EventLog,
    prepare,
    serving,
    store_claim,
    unprepare,
    until_answering,
)


def outbox_file(settings: Settings) -> OutboxFile:
    return msgspec.json.decode((settings.checkpoint_path / FILE_NAME).read_bytes(), type=OutboxFile)


async def test_an_unprepare_while_the_bus_is_down_keeps_its_event_on_disk_until_it_can_be_sent(
    nats_server: EmbeddedNats, bus: Bus, kube: KubeApi, settings: Settings
) -> None:
    ref = await store_claim(kube, "offline-0", [("gpu", "gpu-2")])
    async with serving(nats_server.url, settings) as service:
        await until_answering(bus)
        assert (await prepare(bus, ref)).results[ref.uid].error == ""
        await nats_server.stop()
        outcome = await service.preparer.unprepare(ref)
        assert outcome.error is None  # the devices are released; only the event waits
        assert service.preparer.records == {}
        [kept] = outbox_file(settings).owed
        assert (kept.type, msgspec.json.decode(kept.data)["claim"]["uid"]) == (ClaimUnprepared.ce_type(), ref.uid)
        reloaded = Outbox(bus, settings.checkpoint_path)
        assert reloaded.load() == []
        assert [type(e) for e in reloaded.owed.values()] == [ClaimUnprepared]

        await nats_server.start()
        await service.preparer.parts.outbox.flush()
        assert service.preparer.parts.outbox.owed == {}
        assert outbox_file(settings).owed == []
    assert (await claim_events(bus.js)).count(ClaimEvent("ClaimUnprepared", ref.uid)) == 1


async def test_a_claims_events_are_stored_in_the_order_they_happened_when_an_earlier_one_was_refused(
    nats_server: EmbeddedNats, bus: Bus, tmp_path: Path
) -> None:
    """A failover refuses a ClaimPrepared; the ClaimUnprepared after it must not be stored first, or a consumer
    would take the released claim for prepared."""
    outbox = Outbox(bus, tmp_path)
    claim = ClaimRef(namespace="default", name="ordered-0", uid="ordered-0-uid")
    prepared_id, _ = outbox.expect()
    await nats_server.stop()
    assert not await outbox.send(ClaimPrepared(node=NODE, claim=claim, devices=[]), prepared_id)
    await nats_server.start()
    unprepared_id, _ = outbox.expect()
    assert await outbox.send(ClaimUnprepared(node=NODE, claim=claim), unprepared_id)
    assert outbox.owed == {}
    assert await claim_events(bus.js) == [
        ClaimEvent("ClaimPrepared", claim.uid),
        ClaimEvent("ClaimUnprepared", claim.uid),
    ]


async def test_an_unprepare_keeps_the_unconfirmed_claimprepared_before_its_record_stops_announcing_it(
    nats_server: EmbeddedNats, bus: Bus, kube: KubeApi, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start announces again only completed records: from the moment UnprepareStarted is durable, a crash would
    lose a ClaimPrepared JetStream never confirmed, unless the outbox file holds it by then."""
    ref = await store_claim(kube, "unconfirmed-0", [("gpu", "gpu-2")])
    async with serving(nats_server.url, settings) as service:
        await until_answering(bus)
        claims = await bus.js.stream_info(event_stream(Domain.CLAIMS))
        await bus.js.update_stream(dataclasses.replace(claims.config, sealed=True))  # every event is refused
        assert (await prepare(bus, ref)).results[ref.uid].error == ""
        prepared_id = service.preparer.records[ref.uid].event_id
        held_at_unprepare: list[set[str]] = []
        checkpoint = service.preparer.parts.checkpoint
        save = checkpoint.save

        def save_and_look(record: ClaimRecord) -> None:
            if record.state == UNPREPARE_STARTED:  # a kill -9 after this write leaves only the file
                held_at_unprepare.append({letter.id for letter in outbox_file(settings).owed})
            save(record)

        monkeypatch.setattr(checkpoint, "save", save_and_look)
        assert (await unprepare(bus, ref)).results[ref.uid].error == ""
    assert held_at_unprepare == [{prepared_id}]


async def test_a_restart_after_a_clean_stop_announces_nothing_again(
    nats_server: EmbeddedNats, bus: Bus, kube: KubeApi, settings: Settings, events: EventLog
) -> None:
    ref = await store_claim(kube, "steady-0", [("gpu", "gpu-1")])
    async with serving(nats_server.url, settings) as service:
        await until_answering(bus)
        assert (await prepare(bus, ref)).results[ref.uid].error == ""
        completed_at = service.preparer.records[ref.uid].completed_at
    assert completed_at is not None
    assert outbox_file(settings).watermark > completed_at
    await events.next("ClaimPrepared")
    async with serving(nats_server.url, settings) as service:
        await until_answering(bus)
        assert ref.uid in service.preparer.records
    await bus.nc.flush()
    assert events.queue.empty(), "a restart after a clean stop sent an event again"


async def test_an_idle_outbox_writes_nothing(bus: Bus, tmp_path: Path) -> None:
    outbox = Outbox(bus, tmp_path)
    await outbox.flush()
    event_id, _ = outbox.expect()
    outbox.cancel(event_id)
    await outbox.flush()
    assert not (tmp_path / FILE_NAME).exists()


async def test_a_start_that_announces_again_moves_the_watermark_so_the_next_one_does_not(
    nats_server: EmbeddedNats, bus: Bus, kube: KubeApi, settings: Settings, events: EventLog
) -> None:
    ref = await store_claim(kube, "again-0", [("gpu", "gpu-3")])
    async with serving(nats_server.url, settings) as service:
        await until_answering(bus)
        assert (await prepare(bus, ref)).results[ref.uid].error == ""
    await events.next("ClaimPrepared")
    (settings.checkpoint_path / FILE_NAME).unlink()  # as if killed before the watermark was written
    async with serving(nats_server.url, settings) as service:
        await until_answering(bus)
        assert (await events.next("ClaimPrepared"))["claim"]["uid"] == ref.uid  # sent again, same id
        completed_at = service.preparer.records[ref.uid].completed_at
    assert completed_at is not None
    assert outbox_file(settings).watermark > completed_at
    async with serving(nats_server.url, settings):
        await until_answering(bus)
    await bus.nc.flush()
    assert events.queue.empty(), "the second start announced the claim again"
    assert (await claim_events(bus.js)).count(ClaimEvent("ClaimPrepared", ref.uid, ("gpu-3",))) == 1
