"""The two commands: one kubelet call's claims handled concurrently and answered per claim.

Claims of one call are independent: each gets its own result (an error string never fails the call), and
they run in parallel, meeting only on the GPUs they share (see locks.py). Each claim's event goes out from the
preparer before the answer (see outbox.py), so whoever reacts to ``ClaimPrepared`` sees it no later than the
kubelet learns of it; a refused publish is retried and does not fail a claim whose devices are ready.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager

from opentelemetry.trace import SpanKind

from libs.events.catalogue import (
    ClaimPrepareResult,
    ClaimRef,
    ClaimUnprepareResult,
    PrepareClaims,
    PrepareClaimsReply,
    UnprepareClaims,
    UnprepareClaimsReply,
)
from libs.telemetry.tracing import span
from services.claim_preparation import metrics
from services.claim_preparation.preparer import Operation, Outcome, Preparer


def unique(claims: Sequence[ClaimRef]) -> list[ClaimRef]:
    """One claim per UID, first occurrence kept: the answer has one entry per UID anyway."""
    seen: dict[str, ClaimRef] = {}
    for claim in claims:
        seen.setdefault(claim.uid, claim)
    return list(seen.values())


@contextmanager
def measured(operation: Operation) -> Iterator[None]:
    metrics.REQUESTS_BY(operation).inc()
    inflight = metrics.INFLIGHT_BY(operation)
    inflight.inc()
    began = time.perf_counter()
    try:
        yield
    finally:
        inflight.dec()
        metrics.REQUEST_SECONDS_BY(operation).observe(time.perf_counter() - began)


def record_outcome(operation: Operation, outcome: Outcome) -> None:
    for phase, ms in outcome.timings_ms.items():
        if phase != "total":
            metrics.PHASE_SECONDS_BY(operation, phase).observe(ms / 1000)
    if outcome.error is not None:
        errors = metrics.PREPARE_ERRORS if operation == "prepare" else metrics.UNPREPARE_ERRORS
        errors.labels(outcome.error.reason).inc()


class ClaimCommands:
    def __init__(self, preparer: Preparer) -> None:
        self._preparer = preparer

    async def prepare(self, command: PrepareClaims) -> PrepareClaimsReply:
        outcomes = await self._handle("prepare", command.claims, self._preparer.prepare)
        return PrepareClaimsReply(
            results={o.claim.uid: ClaimPrepareResult(devices=list(o.devices), error=o.message) for o in outcomes}
        )

    async def unprepare(self, command: UnprepareClaims) -> UnprepareClaimsReply:
        outcomes = await self._handle("unprepare", command.claims, self._preparer.unprepare)
        return UnprepareClaimsReply(results={o.claim.uid: ClaimUnprepareResult(error=o.message) for o in outcomes})

    async def _handle(
        self, operation: Operation, claims: Sequence[ClaimRef], work: Callable[[ClaimRef], Awaitable[Outcome]]
    ) -> list[Outcome]:
        with measured(operation):
            return await asyncio.gather(*(self._one(operation, claim, work) for claim in unique(claims)))

    async def _one(
        self, operation: Operation, claim: ClaimRef, work: Callable[[ClaimRef], Awaitable[Outcome]]
    ) -> Outcome:
        attributes = {"gpudra.claim.uid": claim.uid, "gpudra.claim": f"{claim.namespace}/{claim.name}"}
        with span(f"{operation} claim", SpanKind.INTERNAL, attributes) as current:
            outcome = await work(claim)
            if outcome.error is not None:
                current.set_attribute("gpudra.claim.error", outcome.error.reason)
        record_outcome(operation, outcome)
        return outcome
