"""Recent remediations for ``gpudra health status``: what each device and node went through, with its steps and
how long each took, read back from the remediation events JetStream keeps.

The book in KV holds what is in force now; once an entity is healthy again, its remediation lives on only in
the events. ``remediations`` turns them into one record per remediation (a plain function over the events, in
stream order); ``read_history`` is the I/O at the edge.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import msgspec
from nats.js import api

from libs.bus import Bus
from libs.bus.topology import event_stream
from libs.events import Domain, decode, node_token
from libs.events.catalogue.remediation import RemediationStateChanged, RemediationStepCompleted

FINISHED = frozenset({"healthy", "drain-failed", "remediation-failed"})
"""States that end a remediation (the failed ones until a person acts)."""
READ_TIMEOUT = 2.0


class Step(msgspec.Struct, frozen=True, kw_only=True):
    step: str
    outcome: str
    duration_ms: float
    detail: str = ""


class PastRemediation(msgspec.Struct, frozen=True, kw_only=True):
    node: str
    entity: str
    """``node``, or the device name."""
    fault: str = ""
    started: dt.datetime
    ended: dt.datetime | None = None
    """None while it is still going on."""
    outcome: str = ""
    """The state it ended in (``healthy``, ``remediation-failed``...), empty while going on."""
    steps: list[Step] = msgspec.field(default_factory=list)


Event = RemediationStateChanged | RemediationStepCompleted
Timed = tuple[dt.datetime, Event]


def _entity(event: Event) -> str:
    return event.entity.device or ("node" if event.entity.kind == "node" else event.entity.id)


def remediations(events: Iterable[Timed]) -> list[PastRemediation]:
    """One record per remediation, oldest first: from leaving ``healthy`` until a finishing state."""
    going: dict[tuple[str, str], PastRemediation] = {}
    done: list[PastRemediation] = []
    for at, event in events:
        where = (event.node, _entity(event))
        current = going.get(where)
        if isinstance(event, RemediationStepCompleted):
            if current is not None:
                step = Step(step=event.step, outcome=event.outcome, duration_ms=event.duration_ms, detail=event.detail)
                going[where] = msgspec.structs.replace(current, steps=[*current.steps, step])
            continue
        if current is None and event.previous == "healthy" and event.state != "healthy":
            going[where] = PastRemediation(node=event.node, entity=where[1], fault=event.fault, started=at)
        elif current is not None and event.state in FINISHED:
            done.append(msgspec.structs.replace(current, ended=at, outcome=event.state))
            del going[where]
    return sorted([*done, *going.values()], key=lambda r: r.started)


async def read_history(bus: Bus, node: str | None, since: dt.timedelta) -> list[PastRemediation]:
    """The remediations of ``node`` (every node when None) whose events are younger than ``since``."""
    subject = f"gpudra.v1.{node_token(node) if node else '*'}.remediation.>"
    stream = event_stream(Domain.REMEDIATION)
    info = await bus.js.stream_info(stream, subjects_filter=subject)
    start = dt.datetime.now(dt.UTC) - since
    events: list[Timed] = []
    if not info.state.subjects:
        return []
    subscription = await bus.js.subscribe(
        subject,
        stream=stream,
        ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.BY_START_TIME,
        config=api.ConsumerConfig(opt_start_time=start),
    )
    try:
        while True:
            try:
                msg = await subscription.next_msg(timeout=READ_TIMEOUT)
            except TimeoutError:
                break
            envelope = decode(msg.headers, msg.data)
            if isinstance(envelope.data, RemediationStateChanged | RemediationStepCompleted):
                events.append((envelope.time, envelope.data))
            if msg.metadata.num_pending == 0:
                break
    finally:
        await subscription.unsubscribe()
    return remediations(events)
