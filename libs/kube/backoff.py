"""Jittered exponential backoff, as a pure function of the attempt number and a random draw."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """``base * 2**attempt`` capped at ``cap``, then scaled by a draw in [0.5, 1): retries of many nodes after
    one API server hiccup spread out instead of arriving together."""

    base: float = 0.1
    cap: float = 5.0

    def delay(self, attempt: int, draw: float) -> float:
        """``attempt`` counts from 0; ``draw`` is uniform in [0, 1)."""
        return min(self.cap, self.base * 2.0 ** max(0, attempt)) * (0.5 + draw / 2)
