"""The circuit breaker, shared by every replica through its KV entry.

Asking costs nothing when the answer changes nothing (the node is already counted in the window). New
quarantines are counted with a compare-and-set write, so two replicas can never both take the last place
under the limit; the questions that arrive while a write is under way are answered together by the next one,
so a thousand nodes failing at once cost a handful of writes, not a thousand in a row. A refusal is always
checked against the stored breaker, so a reset done by another replica is seen at once. The event that says
the breaker tripped (or was reset) is published by whoever wrote the change.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from libs.events.catalogue.remediation import CircuitBreakerChanged
from services.health.controller import metrics
from services.health.controller.books import BreakerStore, StaleEntry
from services.health.remediation import Admission, Breaker, BreakerConfig, admit, reset

log = logging.getLogger(__name__)

ATTEMPTS = 20
Announce = Callable[[CircuitBreakerChanged, str], Awaitable[None]]
"""Publishes a breaker event with the given event id."""


@dataclass
class _Question:
    node: str
    gpu_nodes: int
    now: dt.datetime
    answer: asyncio.Future[bool]


class BreakerGate:
    def __init__(self, store: BreakerStore, config: BreakerConfig, announce: Announce) -> None:
        self._store = store
        self._config = config
        self._announce = announce
        self._lock = asyncio.Lock()
        self._cached: tuple[Breaker, int] | None = None
        self._questions: list[_Question] = []
        self._rounds: set[asyncio.Task[None]] = set()

    async def admit(self, node: str, gpu_nodes: int, now: dt.datetime) -> bool:
        """Whether a new quarantine on ``node`` may go ahead."""
        question = _Question(node, gpu_nodes, now, asyncio.get_running_loop().create_future())
        self._questions.append(question)
        if len(self._questions) == 1:  # the first since the last round took them: start the next round
            task = asyncio.create_task(self._answer_all())
            self._rounds.add(task)
            task.add_done_callback(self._rounds.discard)
        return await question.answer

    async def _answer_all(self) -> None:
        async with self._lock:
            questions, self._questions = self._questions, []
            try:
                answers = await self._decide(questions)
            except Exception as exc:
                for question in questions:
                    question.answer.set_exception(exc)
                return
            for question, admitted in zip(questions, answers, strict=True):
                question.answer.set_result(admitted)

    async def _decide(self, questions: list[_Question]) -> list[bool]:
        for _ in range(ATTEMPTS):
            from_cache = self._cached is not None
            breaker, revision = self._cached or await self._store.load()
            admissions = _admit_all(breaker, questions, self._config)
            after = admissions[-1].breaker
            if after == breaker:
                if from_cache and not all(a.admitted for a in admissions):
                    self._cached = None  # a refusal is checked against the stored breaker
                    continue
                self._cached = (breaker, revision)
                return [a.admitted for a in admissions]
            try:
                revision = await self._store.save(after, revision)
            except StaleEntry:
                self._cached = None
                continue
            self._cached = (after, revision)
            await self._tripped(admissions, revision)
            return [a.admitted for a in admissions]
        raise StaleEntry(f"circuit breaker: {ATTEMPTS} conflicting writes in a row")

    async def _tripped(self, admissions: list[Admission], revision: int) -> None:
        metrics.BREAKER_OPEN.set(admissions[-1].breaker.state == "open")
        event = next((a.event for a in admissions if a.event is not None), None)
        if event is None:
            return
        metrics.BREAKER_TRIPS.inc()
        log.error("circuit breaker tripped: %s", event.reason)
        await self._announce(event, f"breaker-{revision}")

    async def reset(self, by: str) -> Breaker:
        """A person closes the breaker (and empties its window)."""
        async with self._lock:
            for _ in range(ATTEMPTS):
                breaker, revision = await self._store.load()
                closed, event = reset(breaker, by, self._config)
                try:
                    revision = await self._store.save(closed, revision)
                except StaleEntry:
                    continue
                self._cached = (closed, revision)
                metrics.BREAKER_OPEN.set(0)
                log.warning("circuit breaker reset", extra={"by": by, "quarantined_nodes": event.quarantined_nodes})
                await self._announce(event, f"breaker-{revision}")
                return closed
        raise StaleEntry(f"circuit breaker: {ATTEMPTS} conflicting writes in a row")

    async def current(self) -> Breaker:
        breaker, revision = await self._store.load()
        self._cached = (breaker, revision)
        return breaker


def _admit_all(breaker: Breaker, questions: list[_Question], config: BreakerConfig) -> list[Admission]:
    """Each question in turn, each seeing the breaker as the ones before it left it."""
    admissions = []
    for question in questions:
        admission = admit(breaker, question.node, question.gpu_nodes, question.now, config)
        breaker = admission.breaker
        admissions.append(admission)
    return admissions
