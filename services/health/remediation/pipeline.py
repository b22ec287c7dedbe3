"""From a health event to the input of the state machine: deduplicate, classify, escalate.

``assess`` returns the book with its dedup memory and escalation history updated and the input for
``step``, or no input for a duplicate. The circuit breaker sits between the two, in the wiring, because it
is cluster-wide: ask it when ``needs_admission`` says the fault would start a quarantine.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from libs.events.catalogue.health import HealthEvent
from services.health.catalogue import Catalogue, classify
from services.health.remediation.book import NodeBook
from services.health.remediation.dedup import deduplicate, event_time
from services.health.remediation.escalation import escalate
from services.health.remediation.inputs import FaultDetected, HealthyObserved


def assess(
    book: NodeBook, event: HealthEvent, catalogue: Catalogue, now: dt.datetime, event_id: str = ""
) -> tuple[NodeBook, FaultDetected | HealthyObserved | None]:
    """Raises ``MalformedHealthEvent`` for an event the catalogue cannot read (route it to dead letters)."""
    if event.node != book.node:
        raise ValueError(f"health event from node {event.node} offered to the book of node {book.node}")
    dedup, duplicate = deduplicate(book.dedup, event, now, catalogue.dedup_window)
    book = msgspec.structs.replace(book, dedup=dedup)
    if duplicate:
        return book, None
    if event.healthy:
        return book, HealthyObserved(entity=event.entity, check=event.check, codes=tuple(event.error_codes))
    fault, history = escalate(classify(event, catalogue), book.history, event_time(event, now), catalogue.escalation)
    ids = (event_id,) if event_id else ()
    return msgspec.structs.replace(book, history=history), FaultDetected(fault=fault, source_event_ids=ids)
