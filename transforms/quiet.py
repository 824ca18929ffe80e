"""TensorFlow imported without its start-up noise (launcher and worker processes).

Framework-free until called: `pipeline.logs` uses it on the launcher, and the
model handler in each worker process (a multi-process DirectRunner's workers
print TensorFlow's start-up lines otherwise).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

__all__ = ["import_tensorflow", "quiet_environment"]

# One import at a time: a second thread past the check while the first had stderr at
# /dev/null saved /dev/null as the real stderr and put it back last.
_IMPORTING = threading.Lock()


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
    says; they are hidden here. An import error is still raised as usual.
    """
    with _IMPORTING:
        if "tensorflow" in sys.modules:
            return
        with _quiet_while_importing(verbose):
            if verbose:
                import tensorflow  # noqa: PLC0415

                return
            with _stderr_to_devnull():
                import tensorflow  # noqa: F401, PLC0415
