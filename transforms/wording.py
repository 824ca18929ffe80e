"""Words the job's log lines, plots and report share."""

from __future__ import annotations

__all__ = ["count"]


def count(number: int, noun: str) -> str:
    """`number` and `noun`, plural unless one: "1 image", "8 images"."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
