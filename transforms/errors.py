"""Readable reasons from exceptions whose messages are pages long (TensorFlow's, Beam's)."""

from __future__ import annotations

import re

__all__ = ["error_reason", "for_want_of_space"]

# A write that failed for want of space (EFBIG, ENOSPC, EDQUOT), as Python or Beam says
# it: Beam passes it on in its text only (a BeamIOError's details, a step's failure).
_NO_SPACE = re.compile(r"\[Errno (?:27|28|122)\]|No space left on device|Disk quota exceeded")


def for_want_of_space(error: BaseException) -> bool:
    """Whether `error` is a write that failed for want of space: a full disk, a quota
    or a file-size limit."""
    return bool(_NO_SPACE.search(str(error)))


_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt): ")


def error_reason(error: BaseException) -> str:
    """The line of an exception's message that says what went wrong: its first,
    unless that is a header ("in user code:", "Graph execution error:"); then the
    last `SomeError: ...` line under it (the error raised inside a tf.function),
    else its last line that is not a location or a node reference. Under Keras's
    header of a layer that failed ("Exception encountered when calling Dense.call()."),
    the layer's own reason, named by the innermost layer: "Dense: ..."; a line "None"
    (a None made into the message) is none, and an error that says nothing, its type."""
    lines = [line.strip() for line in _ANSI.sub("", str(error)).strip().splitlines()]
    lines = [] if lines == ["None"] else lines
    layer, inner = _keras_layer_reason(lines)
    if layer and any(inner):
        return f"{layer}: {_reason(inner, lines[0])}"
    return _reason(lines, type(error).__name__)


# Keras 3's header and tf_keras's ('layer "dense" (type Dense).'), and the bold
# (ANSI) Keras 3 prints the reason in.
_KERAS_CALL = re.compile(r"Exception encountered when calling (.+?)\.")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _keras_layer_reason(lines: list[str]) -> tuple[str | None, list[str]]:
    """The innermost layer under Keras's nested headers, and the lines of its reason
    (up to "Arguments received by ..."); (None, lines) without a header."""
    layer = None
    while lines and (header := _KERAS_CALL.fullmatch(lines[0])):
        layer = header.group(1).removesuffix(".call()")
        lines = lines[1:]
        while lines and not lines[0]:
            lines = lines[1:]
    cut = next((i for i, line in enumerate(lines) if line.startswith("Arguments received")), None)
    return layer, lines[:cut]


def _reason(lines: list[str], fallback: str) -> str:
    """The telling line of a message's `lines` (see `error_reason`), else `fallback`."""
    if not lines or not lines[0].endswith(":"):
        return lines[0] if lines else fallback
    raised = [line for line in lines[1:] if _RAISED.match(line)]
    if raised:
        return raised[-1]
    skip = ("[[", "File ", "<stack", "Detected at node", "[while running")
    reasons = [line for line in lines[1:] if line not in ("", "None") and not line.startswith(skip)]
    return reasons[-1] if reasons else lines[0]
