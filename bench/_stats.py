"""Percentiles as every benchmark here quotes them: the sample at rank q·n, the last one for q = 1."""

from __future__ import annotations

from collections.abc import Sequence


def pct(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
