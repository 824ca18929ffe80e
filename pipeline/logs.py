"""Quiet by default: TensorFlow's start-up noise and chatty loggers, unless --verbose."""

from __future__ import annotations

import logging
import os
import re

from transforms.quiet import import_tensorflow, quiet_environment

__all__ = [
    "NOT_STARTED",
    "configure_logging",
    "drop_beam_memory_warning",
    "import_tensorflow",
    "quiet_environment",
]

# What the command line says of a Ctrl-C before the run claimed --output (while
# Beam and TensorFlow load, or during the launch checks): there is no run to resume.
NOT_STARTED = "interrupted before the run started; nothing was written. Run the command again."


# Loggers that are chatty at INFO: shown with --verbose only.
_NOISY = ("absl", "tensorflow", "apache_beam", "h5py", "matplotlib")


def configure_logging(verbose: bool) -> None:
    """INFO logs of the job; chatty libraries at WARNING unless `verbose`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    # Beam logs a failing DoFn's traceback there; the job's own `error:` line says
    # why in one line, and --verbose shows the traceback.
    logging.getLogger("apache_beam.runners.common").setLevel(
        logging.INFO if verbose else logging.CRITICAL
    )
    drop_beam_memory_warning()
    _set_filter(logging.getLogger("tensorflow"), _WithoutDeprecations, not verbose)
    job_service = logging.getLogger("apache_beam.runners.portability.local_job_service")
    _set_filter(job_service, _WorkerRecords, not verbose)
    if not verbose:
        job_service.setLevel(logging.INFO)


def drop_beam_memory_warning() -> None:
    """Drops RunInference's per-batch memory warning (`_WithoutBeamMemoryWarning`)
    on the root logger, where Beam logs it: for the command line and for a run
    started from Python (`pipeline.run`), whose logging the job does not set up."""
    _set_filter(logging.getLogger(), _WithoutBeamMemoryWarning, True)


def _set_filter(target: logging.Filterer, kind: type[logging.Filter], on: bool) -> None:
    """One filter of `kind` on `target` if `on`, none if not: a second run in the
    same process (tests, notebooks) neither stacks them nor keeps a quiet run's."""
    for old in [f for f in target.filters if isinstance(f, kind)]:
        target.removeFilter(old)
    if on:
        target.addFilter(kind())


# How Beam's local job service logs a record of a multi-process DirectRunner's
# worker: one line, 'Worker: severity: INFO timestamp {...} message: "..."
# ... log_location: "/path/file.py:123" ...' (the protobuf's text form).
_FORWARDED = re.compile(r'message: "((?:[^"\\]|\\.)*)".*?log_location: "([^"]*)"', re.S)
_ESCAPES = re.compile(r"\\(.)")
_ESCAPED = {"n": "\n", "t": "\t", "r": "\r"}
# The job's own sources, in this installation (the workers run the same one).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_JOB_SOURCES = tuple(
    os.path.join(_ROOT, package) + os.sep for package in ("pipeline", "transforms")
)
_PROGRESS_SOURCE = os.path.join(_ROOT, "pipeline", "progress.py") + ":"


class _WorkerRecords(logging.Filter):
    """Of the records a multi-process DirectRunner's workers send: the job's
    progress lines and its own warnings pass, as their own text; the rest (Beam's
    start-up warnings of each worker) only from ERROR up. --verbose shows them
    all, as Beam logs them."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = _FORWARDED.search(record.getMessage())
        if found is None:
            return record.levelno >= logging.ERROR
        message, source = found.groups()
        if source.startswith(_PROGRESS_SOURCE):
            record.name, record.levelno, record.levelname = (
                "pipeline.progress",
                logging.INFO,
                "INFO",
            )
        elif not (source.startswith(_JOB_SOURCES) and record.levelno >= logging.WARNING):
            return record.levelno >= logging.ERROR  # Beam's own, per worker
        record.msg = _ESCAPES.sub(lambda m: _ESCAPED.get(m[1], m[1]), message)
        record.args = ()
        return True


class _WithoutBeamMemoryWarning(logging.Filter):
    """Drops RunInference's per-batch "Resource module is not available" warning.

    Beam 2.77 imports `resource` together with a module that needs PyTorch, so
    without PyTorch it repeats this (harmless) warning for every batch.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Resource module is not available")


class _WithoutDeprecations(logging.Filter):
    """Drops TensorFlow's notices that a function it calls itself is deprecated
    (TFDS's reader: "CounterV2 ... is deprecated and will be removed"): nothing a
    user of the job can act on. --verbose shows them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is deprecated and will be removed" not in record.getMessage()
