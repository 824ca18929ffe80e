"""Words the job's log lines, plots and report share."""

from __future__ import annotations

import math

__all__ = ["count", "infinite", "percent"]


def count(number: int, noun: str) -> str:
    """`number` and `noun`, plural unless one: "1 image", "8 images"."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def infinite(value: float) -> str | None:
    """'∞' or '−∞' for an infinite value (a float16 overflow's `attribution_error`), else None."""
    return None if math.isfinite(value) else ("∞" if value > 0 else "−∞")


def percent(value: float, digits: int = 1) -> str:
    """`value` as a percentage with `digits` decimals; '∞' where infinite, not 'inf%'."""
    return infinite(value) or f"{value:.{digits}%}"
