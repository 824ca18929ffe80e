"""Words the job's log lines, plots and report share."""

from __future__ import annotations

import decimal
import math

__all__ = ["count", "infinite", "percent"]


def count(number: int, noun: str) -> str:
    """`number` and `noun`, plural unless one: "1 image", "8 images"."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def infinite(value: float) -> str | None:
    """'∞' or '−∞' for an infinite value (a float16 overflow's `attribution_error`), else None."""
    return None if math.isfinite(value) else ("∞" if value > 0 else "−∞")


def percent(value: float, digits: int = 1) -> str:
    """`value` as a percentage with `digits` decimals; '∞' where infinite, not 'inf%'.

    A value that is not 0 but rounds to 0 at `digits` decimals keeps two significant
    digits ('0.000078%', not '0.000%'): an error that small is not none, and the
    worst of several such rows must be told apart.
    """
    text = infinite(value) or f"{value:.{digits}%}"
    if value and math.isfinite(value) and not float(text[:-1]):
        return f"{decimal.Decimal(f'{value * 100:.2g}'):f}%"
    return text
