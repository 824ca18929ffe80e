"""Readable reasons from exceptions whose messages are pages long (TensorFlow's, Beam's)."""

from __future__ import annotations

import re

__all__ = ["error_reason"]

_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt): ")


def error_reason(error: BaseException) -> str:
    """The line of an exception's message that says what went wrong: its first,
    unless that is a header ("in user code:", "Graph execution error:"); then the
    last `SomeError: ...` line under it (the error raised inside a tf.function),
    else its last line that is not a location or a node reference."""
    lines = [line.strip() for line in str(error).strip().splitlines()]
    if not lines or not lines[0].endswith(":"):
        return lines[0] if lines else type(error).__name__
    raised = [line for line in lines[1:] if _RAISED.match(line)]
    if raised:
        return raised[-1]
    skip = ("[[", "File ", "<stack", "Detected at node", "[while running")
    reasons = [line for line in lines[1:] if line and not line.startswith(skip)]
    return reasons[-1] if reasons else lines[0]
