"""Quiet by default: TensorFlow's start-up noise and chatty loggers, unless --verbose."""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator

from pipeline.patching import one_for_overlapping_runs
from transforms import wording
from transforms.errors import error_reason
from transforms.quiet import import_tensorflow, quiet_environment

__all__ = [
    "DOFN_TRACEBACKS",
    "INTERRUPTED",
    "NOT_STARTED",
    "RESUME",
    "configure_logging",
    "drop_beam_memory_warning",
    "ends_follow_a_failure",
    "failure_reason",
    "forget_worker_ends",
    "import_tensorflow",
    "interrupted_complete",
    "quiet_environment",
    "threads_watched",
    "worker_death",
    "worker_ended",
]

# What the command line says of a Ctrl-C before the run claimed --output (while
# Beam and TensorFlow load, or during the launch checks): there is no run to resume.
NOT_STARTED = "interrupted before the run started; nothing was written. Run the command again."
# What a Ctrl-C while the run ran says (`run` raises KeyboardInterrupt with it): the
# rows of every batch it finished are checkpointed.
INTERRUPTED = "interrupted; rerun with --resume to continue."
# What follows a failure while the run ran that a resume gets past.
RESUME = "Rerun with --resume to continue: the rows of every batch it finished are kept."


def interrupted_complete(output: str, failed: int = 0) -> str:
    """What a Ctrl-C says once the run's last stage wrote its manifest "complete" (as
    Beam stops its workers, or the launcher tidies up): the run is not cut short; its
    `failed` images (their errors in errors/) are what a --resume would retry."""
    left = "nothing to resume"
    if failed:
        errors, it = ("its error", "it") if failed == 1 else ("their errors", "them")
        left = (
            f"{wording.count(failed, 'image')} failed, {errors} in errors/: --resume retries {it}"
        )
    return f"interrupted after the run completed; its results are in {output} ({left})."


# Loggers that are chatty at INFO: shown with --verbose only.
_NOISY = ("absl", "tensorflow", "apache_beam", "h5py", "matplotlib")
#: The logger Beam logs a failing DoFn's traceback on, in the process that runs the
#: bundle: the job's own `error:` line says why in one line, and --verbose shows the
#: traceback. Worker processes log it at the launcher's level (`pipeline.runner`).
DOFN_TRACEBACKS = "apache_beam.runners.common"


class _Shown:
    """A text argument of a log message, shown with every control character escaped, its
    line breaks too (a file name holding one broke the line in two); `%r` as before."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return wording.printable(str(self.value))

    def __repr__(self) -> str:
        return repr(self.value)


class _Printable(logging.Formatter):
    """Messages with their control characters escaped (`wording.printable`): a warning
    that quotes a folder named with a terminal escape (ESC[2J clears the screen) sent it
    to the terminal. The message's own line breaks and tabs are kept; in the job's own
    messages its text arguments' (names) are escaped too, while a library's (Beam's
    worker tracebacks with --verbose) keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        own = record.name.split(".")[0] in ("pipeline", "transforms")
        message = _with_names_shown(record) if own else record.message
        record.message = wording.printable(message, lines=True)
        return super().formatMessage(record)


def _with_names_shown(record: logging.LogRecord) -> str:
    """`record`'s message with its text and path arguments as `_Shown`."""
    args = record.args
    if not args:
        return record.message

    def shown(value: object) -> object:
        return _Shown(value) if isinstance(value, (str, os.PathLike)) else value

    if isinstance(args, dict):
        args = {key: shown(value) for key, value in args.items()}
    else:
        args = tuple(shown(value) for value in args)
    try:
        return str(record.msg) % args
    except (TypeError, ValueError):  # as logging formatted it, if not this way
        return record.message


def configure_logging(verbose: bool) -> None:
    """INFO logs of the job; chatty libraries at WARNING unless `verbose`."""
    handler = logging.StreamHandler()
    handler.setFormatter(_Printable("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])  # kept where one was set
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger(DOFN_TRACEBACKS).setLevel(logging.INFO if verbose else logging.CRITICAL)
    drop_beam_memory_warning()
    _set_filter(logging.getLogger(), _WithoutLibraryRootInfo, not verbose)
    _set_filter(logging.getLogger("tensorflow"), _WithoutTensorflowNotices, not verbose)
    _set_filter(logging.getLogger("absl"), _WithoutTfdsProbes, not verbose)
    job_service = logging.getLogger("apache_beam.runners.portability.local_job_service")
    _set_filter(job_service, _WorkerRecords, not verbose)
    _set_filter(job_service, _WorkerRecordsReadable, verbose)
    if not verbose:
        job_service.setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        _set_filter(handler, _BeamWithoutTraceback, not verbose)
    _watch_threads(verbose)


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
# The job's own sources, in this installation (the workers run the same one).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_JOB_SOURCES = tuple(
    os.path.join(_ROOT, package) + os.sep for package in ("pipeline", "transforms")
)
_PROGRESS_SOURCE = os.path.join(_ROOT, "pipeline", "progress.py") + ":"


class _WorkerRecords(logging.Filter):
    """Of the records a multi-process DirectRunner's workers send: the job's
    progress lines and its own warnings pass, as their own text, under the name of
    the job's logger that logged them; the rest (Beam's
    start-up warnings of each worker) only from ERROR up. --verbose shows them
    all, as Beam logs them."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = _FORWARDED.search(record.getMessage())
        if found is None:
            return record.levelno >= logging.ERROR
        message, source = found.groups()
        if source.startswith(_PROGRESS_SOURCE):
            record.levelno, record.levelname = logging.INFO, "INFO"
        elif not (source.startswith(_JOB_SOURCES) and record.levelno >= logging.WARNING):
            return record.levelno >= logging.ERROR  # Beam's own, per worker
        record.name = _job_module(source)
        record.msg, record.args = _unescaped(message), ()
        return True


def _job_module(source: str) -> str:
    """The job's module a worker's record came from, as its logger is named
    ('transforms.sinks' of '<root>/transforms/sinks.py:483'): its warnings were said by
    Beam's job service ('WARNING apache_beam.runners.portability.local_job_service:
    Could not write a checkpoint ...')."""
    path = source.rpartition(":")[0]
    return os.path.splitext(os.path.relpath(path, _ROOT))[0].replace(os.sep, ".")


# A worker record's text fields that may hold line breaks: its message, and the
# traceback of the exception it was logged with.
_TEXT_FIELD = re.compile(r'\b(message|trace): "((?:[^"\\]|\\.)*)" ?')


class _WorkerRecordsReadable(logging.Filter):
    """With --verbose, a worker's record as Beam logs it, its message's and traceback's
    escapes turned back into what they stand for: a failing DoFn's traceback was one
    line of thousands of characters, each of its line breaks a '\\n', and twice (its
    message holds it, and the record's `trace` again): the `trace` its message
    already holds is left out."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if _FORWARDED.search(text) is None:
            return True
        message = ""

        def readable(field: re.Match) -> str:
            nonlocal message
            value = _unescaped(field[2])
            if field[1] == "message":
                message = value
            elif value.strip() in message:
                return ""
            return f'{field[1]}: "{value}" '

        record.msg, record.args = _TEXT_FIELD.sub(readable, text), ()
        return True


def _unescaped(message: str) -> str:
    """A worker record's message as the worker logged it, from its text in the
    protobuf's text form (C escapes: '\\n', '\\'', '\\\\', octal bytes)."""
    from google.protobuf import text_encoding  # noqa: PLC0415 (with Beam, once it runs)

    return text_encoding.CUnescape(message).decode("utf-8", "backslashreplace")


class _WithoutBeamMemoryWarning(logging.Filter):
    """Drops RunInference's per-batch "Resource module is not available" warning.

    Beam 2.77 imports `resource` together with a module that needs PyTorch, so
    without PyTorch it repeats this (harmless) warning for every batch.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Resource module is not available")


# TensorFlow's notices about code the user did not write: a function TFDS's reader
# calls is deprecated ("CounterV2 ... is deprecated and will be removed"); a
# tf.function Keras makes anew on each eager call of a grouped convolution (ConvNeXt's,
# as the launch's probe calls the model) "triggered tf.function retracing".
_TENSORFLOW_NOTICES = ("is deprecated and will be removed", "triggered tf.function retracing")


class _WithoutTensorflowNotices(logging.Filter):
    """Drops TensorFlow's `_TENSORFLOW_NOTICES`: nothing a user of the job can act on.
    --verbose shows them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(notice in message for notice in _TENSORFLOW_NOTICES)


class _WithoutTfdsProbes(logging.Filter):
    """Drops TFDS's warnings about a version folder it looked for ("Variant folder
    <data_dir>/mnist/3.0.1 has no dataset_info.json", of a folder that may not even
    exist): the job's own error names that folder and what to do. --verbose shows them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Variant folder ")


class _WithoutLibraryRootInfo(logging.Filter):
    """Drops the INFO records a chatty library (`_NOISY`) logs on the root logger
    rather than its own (Beam's `logging.info`: "Runner defaulting to pickling
    library: cloudpickle." at a Dataflow launch), which its loggers' level cannot
    quiet. --verbose shows them, with the rest of Beam's INFO logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "root" or record.levelno >= logging.WARNING:
            return True
        folders = os.path.normpath(record.pathname).split(os.sep)
        installed = [
            package
            for where, package in zip(folders, folders[1:], strict=False)
            if where in ("site-packages", "dist-packages")
        ]
        return not set(installed) & set(_NOISY)


class _BeamWithoutTraceback(logging.Filter):
    """Beam's own error records in one line, without the traceback (of a runner
    thread that lost a worker process: pages of gRPC frames); --verbose shows it.
    On the root logger's handlers, which every logger's records reach."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("apache_beam") and record.exc_info:
            record.msg = f"{record.getMessage()} ({_one_line(record.exc_info[1])})"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def _one_line(error: BaseException | None) -> str:
    """'Type: the first line of its message', or 'Type' (gRPC's errors often say nothing)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


# How Beam's local job service says that a worker process of a multi-process
# DirectRunner ended (its `run_worker` thread raises it).
_WORKER_EXIT = re.compile(r"Worker subprocess exited with return code (-?\d+)")
# The worker ends of the run, as `worker_ended` says them, in the order they were
# recorded: the first names the run's failure (`worker_death`).
_ends: list[str] = []
_stopping = threading.Event()
# `ends_follow_a_failure`: the thread of Beam's that waited on the worker whose end
# failed the run (its own end is still reported; those after it are not).
_failed_by: list[threading.Thread] = []
# `worker_was_told_to_end`: the threads of Beam's that waited on a worker the launcher
# had told to end.
_told_to_end: list[threading.Thread] = []


def stop_requested() -> None:
    """A Ctrl-C or SIGTERM is stopping the run: the worker processes that end from
    now on are stopped, whatever their return code (one torn down mid-call can die
    by SIGABRT), not a failure to report."""
    _stopping.set()


def stop_is_requested() -> bool:
    """Whether a Ctrl-C or SIGTERM is stopping the run (`stop_requested`)."""
    return _stopping.is_set()


def ends_follow_a_failure() -> None:
    """A worker's end has failed the run: the workers that end from now on (those the
    launcher kills for it) end because of it, not a failure to report or
    to name in its place. Called in the thread of Beam's that waited on that worker,
    whose exception the thread hook still reports."""
    if not _failed_by:
        _failed_by.append(threading.current_thread())


def worker_was_told_to_end() -> None:
    """The worker process this thread of Beam's waited on had been told to end (the run
    finished, failed or was stopped): its end is no failure, to report or to name,
    whatever its return code. One that aborted as it exited ('terminate called after
    throwing an instance of ...', return code 134) was named the run's failure, in
    place of the bundle's error that had failed it. Called in that thread, before
    Beam's error of the end reaches the thread hook."""
    _told_to_end.append(threading.current_thread())


def _follows_the_failure(thread: threading.Thread | None) -> bool:
    """Whether a worker's end, seen in `thread`, came after the end that failed the run."""
    return bool(_failed_by) and thread is not _failed_by[0]


def forget_worker_ends() -> None:
    """A new run: the worker ends and the stop of an earlier run in this process
    (a notebook's, a test's) are not this one's (`worker_death`)."""
    _ends.clear()
    _stopping.clear()
    _failed_by.clear()
    _told_to_end.clear()


def _watch_threads(verbose: bool) -> None:
    """Notes worker processes that end during the run (`worker_death`). Without
    --verbose, a thread's uncaught exception is one line, and once a worker has
    ended (or its end has failed the run, before the hook sees it: the launcher kills
    the run's other workers then), those of the threads it leaves behind (gRPC
    errors) none; nor, once a
    stop is requested (`stop_requested`), the ends of the workers it stops, nor the
    ends that follow the one that failed the run (`ends_follow_a_failure`)."""
    forget_worker_ends()
    threading.excepthook = _thread_hook(verbose, threading.__excepthook__)


@one_for_overlapping_runs
def threads_watched(verbose: bool) -> Iterator[None]:
    """While a run from Python (`pipeline.run`, a notebook's) lasts, its threads'
    uncaught exceptions are said as on the command line (`_watch_threads`): Beam's
    thread that waited on a worker process that ended raised, and the caller's hook
    printed its traceback beside the run's error. With `verbose`, they reach the
    caller's hook, as before. The caller's hook is back in place after the run,
    whatever it is; its logging is left as it is. Runs that overlap in threads of one
    process share the first one's hook, its `verbose` (a thread's exception does not
    say whose run it is), and the caller's is back once the last has ended
    (`pipeline.patching`)."""
    callers = threading.excepthook
    # The command line's own (`configure_logging`) is replaced, not wrapped: wrapped, with
    # `verbose` each worker's end reached it too, and was noted twice.
    threading.excepthook = _thread_hook(verbose, getattr(callers, "shown_by", callers))
    try:
        yield
    finally:
        threading.excepthook = callers


def _thread_hook(
    verbose: bool, shown_by: Callable[[threading.ExceptHookArgs], object]
) -> Callable[[threading.ExceptHookArgs], None]:
    """The thread hook of `_watch_threads`: notes a worker's end; with `verbose`,
    hands each exception to `shown_by` (its traceback)."""
    log = logging.getLogger("pipeline")

    def hook(args: threading.ExceptHookArgs) -> None:
        found = _WORKER_EXIT.search(str(args.exc_value))
        told = args.thread in _told_to_end
        if found and not told:
            worker_ended(int(found[1]), connected=True)
        if verbose:
            shown_by(args)
        elif found and not (told or _stopping.is_set() or _follows_the_failure(args.thread)):
            log.error("A worker process ended: %s.", _ended_how(int(found[1])))
        elif not (found or _ends or _failed_by):  # after a worker's end, its echoes
            thread = args.thread.name if args.thread else "a thread"
            log.error("In %s: %s", thread, _one_line(args.exc_value))

    hook.shown_by = shown_by  # what `threads_watched` hands exceptions to in its place
    return hook


def worker_ended(code: int | None, connected: bool, last_line: str | None = None) -> str:
    """What fails the run when a worker process ends before it was told to
    (`pipeline.stopping`): 'a worker process ended, return code 137 (...)'. One that
    ended before it connected to the launcher could not start: that is said, with the
    last line it wrote to stderr (`last_line`) unless a signal ended it (then the
    line is not its own: the shell's 'Killed'). Either end is noted for `worker_death`
    (a connected one of unknown code is left to the thread hook, which sees its code),
    unless it follows the run's failure (`ends_follow_a_failure`): it is called in the
    thread of Beam's that waited on that worker."""
    how = "an unknown return code" if code is None else _ended_how(code)
    if connected:
        text = f"a worker process ended, {how}"
    else:
        said = f"; its last line: {last_line}" if last_line and _signal(code) is None else ""
        text = (
            "a worker process ended before it connected to the launcher (it could not start), "
            f"{how}{said}"
        )
    known = code is not None or not connected
    if known and not _follows_the_failure(threading.current_thread()):
        _ends.append(text)
    return text


def worker_death() -> str | None:
    """Why the run failed, if a worker process ended during it, or None: the first end
    recorded (`worker_ended`), connected or not ('a worker process ended, return code
    137 (SIGKILL, killed, as the system kills a process when memory runs out)')."""
    return _ends[0] if _ends else None


def failure_reason(error: BaseException) -> str:
    """Why the run failed, as the command's `error: the run failed: ...` line says it
    (without its advice): how a worker process ended (`worker_death`), else the error's
    type and telling line, with the Beam step it failed in (Beam's messages are pages
    long): `OSError: [Errno 27] File too large [while running 'WriteResults/...']`;
    one that says nothing (`MemoryError()`), its type once, and so one whose telling
    line names it (a run on threads: Beam's RuntimeError of its worker's traceback)."""
    death = worker_death()
    if death is not None:
        return death
    first = error_reason(error)
    if first == type(error).__name__:  # no message (or 'None'): `error_reason`'s fallback
        return first
    step = re.search(r"\[while running '[^']*'\]", str(error))
    if step and step.group(0) not in first:
        first = f"{first} {step.group(0)}"
    named = f"{type(error).__name__}: "
    return first if first.startswith(named) else named + first


def _signal(code: int | None) -> str | None:
    """The signal a return code says ended the process (128 + N and -N are signal N), or None."""
    if code is None:
        return None
    try:
        return signal.Signals(-code if code < 0 else code - 128).name
    except ValueError:  # an exit status
        return None


def _ended_how(code: int) -> str:
    """'return code 137 (SIGKILL, killed, as the system kills a process when memory runs out)'."""
    name = _signal(code)
    if name is None:
        return f"return code {code}"
    killed = (
        ", killed, as the system kills a process when memory runs out" if name == "SIGKILL" else ""
    )
    return f"return code {code} ({name}{killed})"
