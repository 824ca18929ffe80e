"""Noise kept off the terminal: TensorFlow imported without its start-up lines
(launcher and worker processes), and warnings ignored while a block runs, safely
in threads.

Framework-free until called: `pipeline.logs` uses it on the launcher, and the
model handler in each worker process (a multi-process DirectRunner's workers
print TensorFlow's start-up lines otherwise).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator

__all__ = ["ignoring_warnings", "import_tensorflow", "quiet_environment"]

# One import at a time: a second thread past the check while the first had stderr at
# /dev/null saved /dev/null as the real stderr and put it back last.
_IMPORTING = threading.Lock()
# The filters `ignoring_warnings` installed, each with how many blocks (in any thread)
# are inside it, under their lock.
_IGNORING = threading.Lock()
_IGNORED: dict[tuple[type[Warning], str, str], list] = {}


def quiet_environment(verbose: bool) -> None:
    """Sets TensorFlow's C++ log level before TensorFlow is imported.

    Level 3 hides the INFO/WARNING/ERROR lines TensorFlow logs at start-up on a
    CPU machine (`E0000 ... failed call to cuInit`); a value the user exported
    is kept. Child processes (multi-process DirectRunner workers) inherit it.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """Silences the process's file descriptor 2 (C++ writes there, below Python)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. captured)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, fd)
        os.close(saved)


@contextlib.contextmanager
def _quiet_while_importing(verbose: bool) -> Iterator[None]:
    """`quiet_environment` while TensorFlow loads (its C++ log level is read then),
    left unset after in a process that did not set it: a notebook that called
    `pipeline.run` kept TF_CPP_MIN_LOG_LEVEL=3, which hid TensorFlow's errors in
    every process it started later. The command line sets it for its whole process
    (`pipeline.__main__`), so that worker processes inherit it."""
    had = "TF_CPP_MIN_LOG_LEVEL" in os.environ
    quiet_environment(verbose)
    try:
        yield
    finally:
        if not had:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)


def import_tensorflow(verbose: bool) -> None:
    """Imports TensorFlow once; unless `verbose`, without its start-up lines.

    TensorFlow's native libraries print "Could not find cuda drivers" (twice)
    and an absl banner to stderr while loading, whatever TF_CPP_MIN_LOG_LEVEL
    says; they are hidden here, as is its first look for devices on a machine
    without a GPU driver (`_platforms_found`). An import error is still raised as
    usual.
    """
    with _IMPORTING:
        if "tensorflow" in sys.modules:
            return
        with _quiet_while_importing(verbose):
            if verbose:
                import tensorflow  # noqa: PLC0415

                return
            with _stderr_to_devnull():
                import tensorflow  # noqa: PLC0415

                _platforms_found(tensorflow)


# Where Linux lists the loaded NVIDIA kernel driver: present on a machine with a GPU
# TensorFlow could use, whether or not CUDA starts there.
_NVIDIA_DRIVER = "/proc/driver/nvidia"


def _platforms_found(tf) -> None:
    """TensorFlow's first look for devices, on a machine without an NVIDIA driver,
    here while its import's lines are hidden. There, CUDA cannot start: that look
    logs "E0000 ... failed call to cuInit: ... UNKNOWN ERROR (303)" at ERROR, which
    TF_CPP_MIN_LOG_LEVEL 2 (a common export) lets through, once in the launcher and
    once in each worker process, as the model first loads (after the import).
    Where the driver is present, the look is left to the model's first use: a CUDA
    that fails there is a real error, shown as TensorFlow logs it."""
    if not os.path.exists(_NVIDIA_DRIVER):
        tf.config.list_physical_devices("GPU")


@contextlib.contextmanager
def ignoring_warnings(
    category: type[Warning] = Warning, module: str = "", message: str = ""
) -> Iterator[None]:
    """Warnings of `category` from modules matching `module` (a regex), whose message
    matches `message` (a regex), ignored while the block runs: one "ignore" filter at
    the front of the process's filters, as `warnings.catch_warnings` with
    `filterwarnings` would put it, but safe in threads (Beam runs bundles in threads
    of one process). `catch_warnings` swaps the filters for a copy and puts back the
    list it saved: a thread leaving dropped the filter another thread's block still
    needed, or put back for good a copy holding another's. Here the filter goes in
    with the first block in and out with the last, and no other filter is touched.
    (While one thread's block runs, such warnings of other threads are ignored too:
    the filters are the process's.)"""
    key = (category, module, message)
    with _IGNORING:
        held = _IGNORED.setdefault(key, [_ignore_filter(*key), 0])
        if held[1] == 0 or not any(f is held[0] for f in warnings.filters):
            # An "ignore" filter makes no shown warning stale: no registry to reset.
            warnings.filters.insert(0, held[0])
        held[1] += 1
    try:
        yield
    finally:
        with _IGNORING:
            held[1] -= 1
            if held[1] == 0:
                del _IGNORED[key]
                _remove(held[0])


def _ignore_filter(category: type[Warning], module: str, message: str) -> tuple:
    """The filter `warnings.filterwarnings("ignore", ...)` makes of these arguments,
    a tuple of its own (removed by identity: a user's equal filter stays)."""
    return (
        "ignore",
        re.compile(message, re.I) if message else None,
        category,
        re.compile(module) if module else None,
        0,
    )


def _remove(item: tuple) -> None:
    """Takes the filter `item` (this very tuple) out of the process's filters."""
    filters = warnings.filters
    for i, present in enumerate(filters):
        if present is item:
            del filters[i]
            return
