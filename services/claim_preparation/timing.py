"""Milliseconds per phase of one prepare or unprepare, for events, metrics and logs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseClock:
    """Adds up the time spent in each named phase; ``total`` runs from creation."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[name] = self._seconds.get(name, 0.0) + time.perf_counter() - began

    def seconds(self) -> dict[str, float]:
        return dict(self._seconds)

    def timings_ms(self) -> dict[str, float]:
        """Each phase and ``total``, in milliseconds rounded to microseconds."""
        spent = {name: round(seconds * 1000, 3) for name, seconds in self._seconds.items()}
        spent["total"] = round((time.perf_counter() - self._start) * 1000, 3)
        return spent
