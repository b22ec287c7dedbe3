"""The node's outbox: actions the rules asked for and nobody has finished yet, saved with the book.

The book and its outbox are written in one compare-and-set, so an action is never lost between deciding
and doing: whatever is in the outbox after a crash is done by whoever picks the node up. Quick actions
(taints, the Node, events) are idempotent and leave the outbox once done. Work (drain, reset, reboot,
verify) leaves it when the book no longer wants it, which is what an outcome, a cancel or a person's reset
does; a GPU reset or reboot is marked ``started`` before it is sent, so a restart verifies it instead of
sending it again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import msgspec

from libs.events.catalogue.health import FaultClassified
from libs.events.catalogue.remediation import RemediationStateChanged
from services.health.remediation import (
    Action,
    CancelDrain,
    Cordon,
    EscalateToNode,
    EvictPods,
    MarkNode,
    NodeBook,
    Publish,
    RebootNode,
    ResetDevice,
    SetDeviceTaints,
    TaintNode,
    Uncordon,
    UntaintNode,
    VerifyHealth,
    Work,
    record_of,
)

_ACTIONS: dict[str, type[Action]] = {
    cls.__name__: cls
    for cls in (
        SetDeviceTaints,
        TaintNode,
        UntaintNode,
        Cordon,
        Uncordon,
        MarkNode,
        EvictPods,
        CancelDrain,
        ResetDevice,
        RebootNode,
        VerifyHealth,
        EscalateToNode,
    )
}
_EVENTS: dict[str, type[FaultClassified | RemediationStateChanged]] = {
    cls.__name__: cls for cls in (FaultClassified, RemediationStateChanged)
}
_PUBLISH = "Publish:"

LONG_WORK: tuple[type[Work], ...] = (EvictPods, ResetDevice, RebootNode, VerifyHealth)
"""Work that runs beside the node's lane and reports an outcome; everything else is done in the lane."""
ONCE_ONLY: tuple[type[Work], ...] = (ResetDevice, RebootNode)
"""Work that must never be sent twice: a restart verifies it instead."""


class Pending(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    """Unique within the node: ``<step>.<index>``; published events derive their ids from it."""
    kind: str
    body: msgspec.Raw
    owner: str
    """The replica that does it, and its incarnation (``replica/incarnation``)."""
    started: bool = False
    detected: dt.datetime | None = None
    """When the fault that led to it was detected (for the detect → quarantine metric)."""

    def action(self) -> Action:
        if self.kind.startswith(_PUBLISH):
            event = msgspec.json.decode(self.body, type=_EVENTS[self.kind.removeprefix(_PUBLISH)])
            return Publish(node=event.node, event=event)
        return msgspec.json.decode(self.body, type=_ACTIONS[self.kind])

    @property
    def long(self) -> bool:
        return self.kind in {cls.__name__ for cls in LONG_WORK}

    @property
    def once_only(self) -> bool:
        return self.kind in {cls.__name__ for cls in ONCE_ONLY}


def pending(actions: Iterable[Action], *, step: int, owner: str, detected: dt.datetime | None = None) -> list[Pending]:
    """Outbox entries for the actions that change something (dry-run and held ones are only logged)."""
    entries = []
    for index, action in enumerate(actions):
        if not _kept(action):
            continue
        if isinstance(action, Publish):
            kind, body = _PUBLISH + type(action.event).__name__, msgspec.json.encode(action.event)
        else:
            kind, body = type(action).__name__, msgspec.json.encode(action)
        entries.append(Pending(id=f"{step}.{index}", kind=kind, body=msgspec.Raw(body), owner=owner, detected=detected))
    return entries


def _kept(action: Action) -> bool:
    """Dry-run work is kept (the executor answers it with success, so the path runs on); held actions, dry-run
    quick actions and escalations (done inside the step) are not."""
    if isinstance(action, EscalateToNode) or action.disposition == "held":
        return False
    return action.disposition == "perform" or isinstance(action, LONG_WORK)


def wanted(book: NodeBook, entry: Pending) -> bool:
    """Whether the book still wants this entry; work whose record moved on (an outcome came, a cancel, a
    person's reset) is dropped, and so the task doing it is stopped."""
    if not entry.long:
        return True
    work = entry.action()
    return isinstance(work, Work) and still_wanted(book, work)


def still_wanted(book: NodeBook, work: Work) -> bool:
    record = record_of(book, work.device)
    if record is None or record.awaiting_node or record.cycle != work.cycle:
        return False
    match work:
        case EvictPods():
            return record.state == "draining"
        case ResetDevice() | RebootNode():
            return record.state == "remediating" and record.attempt == work.attempt
        case VerifyHealth():
            return record.state == "verifying"
    return False


def prune(outbox: Iterable[Pending], book: NodeBook) -> tuple[Pending, ...]:
    return tuple(entry for entry in outbox if wanted(book, entry))
