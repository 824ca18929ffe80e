"""Stopping a run (Ctrl-C, SIGTERM), and the local worker processes a stop must reach.

What a stop says and leaves (`stopped`: a run stopped midway keeps its
finished batches for a --resume; once its manifest says "complete", the run is
tidied up first and the message says it completed, or `unaccounted` says why
its counts fail); how a run that a stop or an error ended says so in its manifest
(`ended_unfinished`: "stopped", "failed"); Beam's errors that were a Ctrl-C
(`interrupted`); signals held while a step must finish (`_stops_held`); and a
multi-process DirectRunner's workers: started in a session of their own and importing this job's packages,
one Ctrl-C stopping them all, every one of them told to stop (killed by a stop while
it has not connected, and by the run's failure by another's end, connected or not;
said to be late when it has not connected `LATE_START_S` after its start); and the bundles of a DirectRunner's
threads or worker processes, whose every failure reaches the launcher, not printed
(`failed_bundles_answered`).
(How the commands themselves end on a stop is `pipeline.commands`'.)
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import importlib
import logging
import os
import signal
import site
import subprocess
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from pipeline import logs
from pipeline.commands import stop_cause
from pipeline.job import AuditJob
from pipeline.output_folder import tidy_finished
from pipeline.patching import one_for_overlapping_runs
from pipeline.runner import is_direct
from transforms import files, wording
from transforms.errors import error_reason
from transforms.manifest import MANIFEST_FILE
from transforms.sinks import COUNT_KEYS, counts_said, read_manifest, write_json

_LOG = logging.getLogger(__name__)
#: Seconds after its start that a worker process not yet connected to the launcher is
#: said to be late (once): a start is mostly TensorFlow's import (5-20 s, longer with
#: many workers on few cores), and one that hangs as it starts is waited for, forever.
LATE_START_S = 120.0

__all__ = [
    "JobCancelled",
    "ended_unfinished",
    "failed_bundles_answered",
    "interrupted",
    "its_files_closed",
    "stopped",
    "tidied",
    "unaccounted",
    "workers_apart_from_ctrl_c",
    "workers_import_this_job",
]


def _completed(job: AuditJob) -> dict[str, Any] | None:
    """This run's manifest when it says "complete" (its last stage wrote it, every file
    in place); None otherwise."""
    if job.lock is None:
        return None
    try:
        manifest = read_manifest(job.output)
    except Exception:  # none, or unreadable: nothing says the run completed
        return None
    if (
        isinstance(manifest, dict)
        and manifest.get("run_id") == job.lock.run_id
        and manifest.get("status") == "complete"
    ):
        return manifest
    return None


def stopped(job: AuditJob) -> KeyboardInterrupt | RuntimeError:
    """The KeyboardInterrupt a stop (Ctrl-C, SIGTERM) while the run ran raises. Once its
    manifest says "complete" (Beam stopping its workers, the launcher tidying up), the
    stop cuts nothing short: the tidy-up is finished first, and the message says the
    run completed (its `.tmp/` and schema file were left to a resume), and what a
    --resume would still do: retry its failed images, which its summary would name.
    A complete run whose counts fail the job's check (`unaccounted`) failed, stop or
    not: the RuntimeError `run` raises then, saying the stop came after."""
    manifest = _completed(job)
    if manifest is None:
        return KeyboardInterrupt(logs.INTERRUPTED)
    try:
        with _stops_held():  # a second Ctrl-C stops no more than the first
            tidy_finished(job)
    except KeyboardInterrupt:
        pass
    why = unaccounted(manifest)
    if why is not None:
        return RuntimeError(f"{why} (A stop came after the run ended: it cut nothing short.)")
    failed = int((manifest.get("counts") or {}).get("images_with_errors", 0))
    return KeyboardInterrupt(logs.interrupted_complete(job.output, failed))


class JobCancelled(RuntimeError):
    """A job cancelled on its runner (the Dataflow console, `gcloud dataflow jobs
    cancel`, a job service's cancel): a stop by a person, not a failure. Its message is
    the command's `error:` line (exit 1: no signal stopped this process); `reason`,
    the manifest's ("stopped", `ended_unfinished`). `job_named`: "Dataflow job <id>"."""

    def __init__(self, job_named: str) -> None:
        self.reason = f"cancelled on the service ({job_named})"
        super().__init__(f"{self.reason}; r{logs.RESUME[1:]}")


def ended_unfinished(job: AuditJob, error: BaseException) -> None:
    """Records in --output's manifest how this run ended without completing, `error`
    ending it: "stopped" by a stop (Ctrl-C, SIGTERM: `interrupted`; a job cancelled on
    its runner: `JobCancelled`), else "failed",
    with its end time and "reason" as the command's `error:` line words it
    (`transforms.manifest.ENDED_UNFINISHED`); a killed run's stays "running". Only over
    this run's own "running" manifest, while this process holds the folder: never over a
    complete one, another run's, nor that of a job that runs on without the launcher
    (handed the folder). A write that fails (a full disk) is a warning: the run's own
    error is what its caller says."""
    if job.lock is None or not job.lock.held_here():
        return
    try:
        manifest = read_manifest(job.output)
    except Exception:  # none, or unreadable: nothing of this run's to record in
        return
    if manifest.get("run_id") != job.lock.run_id or manifest.get("status") != "running":
        return
    status, reason = _how_it_ended(error)
    ended = {
        "status": status,
        "end_time": datetime.datetime.now(datetime.UTC).isoformat(),
        "reason": reason,
    }
    try:
        with _stops_held():  # a second Ctrl-C waits for the write
            write_json(files.join(job.output, MANIFEST_FILE), {**manifest, **ended})
    except Exception as e:  # noqa: BLE001 - whatever the file system raises: said, not raised
        _LOG.warning(
            "Could not record in %s that the run %s: %s",
            files.join(job.output, MANIFEST_FILE),
            status,
            error_reason(e),
        )


def its_files_closed(error: BaseException) -> None:
    """Closes the files a run that `error` failed or stopped left open, before its
    --output is released. Beam's writer of the results of a bundle that failed midway
    (a write cut short: a full disk) keeps its temp file in `<output>/.tmp/` open,
    referenced by the frames of `error`'s traceback (and, of a worker thread's bundle,
    by garbage not yet collected): it wrote its buffered bytes there when those were
    freed, after the lock was gone, whenever the caller dropped the error (a notebook
    keeps it). The variables of the error's frames, and of those it was raised from,
    are cleared (the traceback still says where it failed; the frames still running,
    this call's callers, are left as they are), then the garbage is collected (a few
    tenths of a second). A multi-process run's workers have ended by then: Beam waits
    for them as the run ends."""
    pending, seen = [error], set()
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        pending += [error.__cause__, error.__context__]
    with _stops_held():  # a second Ctrl-C waits for it
        gc.collect()


def _how_it_ended(error: BaseException) -> tuple[str, str]:
    """The status and reason `ended_unfinished` records of a run `error` ended."""
    if interrupted(error):
        return "stopped", stop_cause()
    if isinstance(error, JobCancelled):
        return "stopped", error.reason
    return "failed", logs.failure_reason(error)


def unaccounted(manifest: dict[str, Any]) -> str | None:
    """Why a complete run's manifest fails the job's count checks (an input neither in
    rows, errors nor skipped; rows that do not match the target mode), or None."""
    accounted, matching = (
        manifest.get(k) for k in ("all_inputs_accounted_for", "rows_match_target_mode")
    )
    if accounted and matching:
        return None
    counts = manifest.get("counts") or {}
    per_image = manifest.get("rows_per_image", 1)
    said = counts_said(counts, per_image) if set(COUNT_KEYS) <= set(counts) else "no counts."
    if accounted:  # every input is, but the rows are not as many as the target mode writes
        return f"The rows do not match the target mode: {said}"
    return f"Not every input is accounted for: {said}"


def tidied(job: AuditJob) -> dict[str, Any] | None:
    """`tidy_finished`, whose Ctrl-C says the run completed (`stopped`)."""
    try:
        return tidy_finished(job)
    except KeyboardInterrupt:
        raise stopped(job) from None


@contextlib.contextmanager
def workers_import_this_job(options: PipelineOptions) -> Iterator[None]:
    """Worker processes of a multi-process DirectRunner import this job's packages.

    Beam starts them as `python -m ...` in the launcher's folder, which Python puts
    first on their sys.path: run from a folder holding a `pipeline` or `transforms`
    package of its own (a project's; `./run_local.sh` and `ig-audit` may be run
    there), they imported that one and every bundle failed. While the run lasts,
    workers get PYTHONSAFEPATH (no working folder on sys.path) and, unless this job
    is installed in site-packages, its folder on PYTHONPATH (`_this_jobs_path`).
    """
    if not _is_multi_process(options):
        yield
        return
    with _this_jobs_path():
        yield


@one_for_overlapping_runs
def _this_jobs_path() -> Iterator[None]:
    """The environment of `workers_import_this_job`, set by the first of the runs
    that overlap, as it was before once the last has ended."""
    before = {name: os.environ.get(name) for name in ("PYTHONPATH", "PYTHONSAFEPATH")}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONSAFEPATH"] = "1"
    if root not in map(os.path.abspath, site.getsitepackages()):
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (root, before["PYTHONPATH"])))
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _is_multi_process(options: PipelineOptions) -> bool:
    """A local run whose workers are processes of their own (Beam starts them)."""
    direct = options.view_as(DirectOptions)
    return is_direct(options) and direct.direct_running_mode == "multi_processing"


class _WorkerProcess:
    """A worker process Beam started, whose stderr is copied on to the launcher's (it
    inherited it before), keeping its last line: what a worker that cannot start says
    last (`ModuleNotFoundError: No module named ...`)."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.started_at = time.monotonic()
        self._last = b""
        self._copier = threading.Thread(target=self._copy, name="worker_stderr", daemon=True)
        self._copier.start()

    def _copy(self) -> None:
        for line in self.process.stderr:
            if line.strip():
                self._last = line
            with contextlib.suppress(OSError):  # a launcher's stderr gone: drained all the same
                while line:
                    line = line[os.write(2, line) :]

    def last_line(self) -> str | None:
        """Its last line on stderr, once it has ended (the pipe closes with it, unless a
        process it started holds it: then its last line so far)."""
        self._copier.join(timeout=1)
        return self._last.decode(errors="replace").strip() or None

    def kill(self) -> None:
        """Kills it while it runs: its session's process group, Beam's shell and the
        Python it started (SIGKILL: one hung as it starts may not heed a SIGTERM)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.killpg(self.process.pid, signal.SIGKILL)


class _SubprocessInOwnSession:
    """`subprocess` as Beam's local job service sees it: its Popen starts a session
    of its own, without the terminal, with its stderr copied on (`_WorkerProcess`,
    in `started` by its WORKER_ID); the rest is the module's."""

    def __init__(self, started: dict[str | None, _WorkerProcess]) -> None:
        self._started = started

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    def Popen(self, *args: Any, **kwargs: Any) -> subprocess.Popen:  # noqa: N802 - subprocess's name
        kwargs = {"stderr": subprocess.PIPE, **kwargs}
        process = subprocess.Popen(*args, start_new_session=True, **kwargs)
        if process.stderr is not None:
            worker_id = (kwargs.get("env") or {}).get("WORKER_ID")
            self._started[worker_id] = _WorkerProcess(process)
        return process


@contextlib.contextmanager
def workers_apart_from_ctrl_c(options: PipelineOptions) -> Iterator[None]:
    """Worker processes of a multi-process DirectRunner start in a session of their
    own, so a Ctrl-C at a terminal (SIGINT to its foreground process group) reaches
    the launcher alone, which stops them as on a SIGTERM. Each worker took it too
    and printed pages of KeyboardInterrupt and gRPC tracebacks as it died. (A new
    session, not only a process group: a background group of the terminal's would
    be stopped writing to it under `stty tostop`.)"""
    if not _is_multi_process(options):
        yield
        return
    with _one_ctrl_c_while_workers_stop(), _workers_watched():
        yield


@one_for_overlapping_runs
def _workers_watched() -> Iterator[None]:
    """The changes of Beam's runner that `workers_apart_from_ctrl_c` makes, one for
    the runs that overlap in threads of one process (`one_for_overlapping_runs`):
    what they note is by worker (Beam numbers them across the process) or by its
    control connection, and what one worker's end does to the others is to those of
    its own run alone (`_end_the_others`)."""
    from apache_beam.runners.portability import local_job_service  # noqa: PLC0415

    started: dict[str | None, _WorkerProcess] = {}
    told: set[Any] = set()  # the control connections of the workers Beam told to end
    handlers: dict[str, Any] = {}  # Beam's handler of each worker, by its WORKER_ID
    before = local_job_service.subprocess
    local_job_service.subprocess = _SubprocessInOwnSession(started)
    try:
        with (
            _every_worker_told_to_stop(told),
            _an_untold_end_fails_the_run(started, told, handlers),
            _a_stop_kills_the_unconnected(started),
            _a_late_start_is_said(started, handlers),
        ):
            yield
    finally:
        local_job_service.subprocess = before


@contextlib.contextmanager
def _one_ctrl_c_while_workers_stop() -> Iterator[None]:
    """A Ctrl-C stops the run once; later ones are ignored while Beam stops the worker
    processes (a few seconds). A second Ctrl-C cut that short: a worker went on, its
    thread unjoined, and the launcher hung at exit (SIGINT ignored by then) until
    killed. Left as it is where SIGINT is not Python's KeyboardInterrupt (a notebook's
    own handler, an ignored SIGINT) or cannot be set (outside the main thread)."""
    in_main = threading.current_thread() is threading.main_thread()
    if not in_main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def once(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        logs.stop_requested()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, once)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# What the patches read or replace in Beam (2.77): module, then dotted names in it.
_BEAM_NAMES = {
    "apache_beam.runners.portability.fn_api_runner.worker_handlers": (
        "BeamFnControlServicer.UNSTARTED_STATE",
        "BeamFnControlServicer._DONE_MARKER",
        "ControlConnection.close",
        "ControlConnection.push",
        "WorkerHandlerManager.close_all",
        "SubprocessSdkWorkerHandler.start_worker",
        "SubprocessSdkWorkerHandler.stop_worker",
    ),
    "apache_beam.runners.portability.local_job_service": ("SubprocessSdkWorker.run",),
}


def _runner_as_known() -> bool:
    """Beam's FnApiRunner is the one this module changes (2.77's), every name the
    patches use there: a Beam whose runner differs (setup.py allows 2.x from 2.77) is
    left as it is."""
    for module, names in _BEAM_NAMES.items():
        found = importlib.import_module(module)
        for name in names:
            owner, attribute = name.split(".")
            if not hasattr(getattr(found, owner, None), attribute):
                return False
    return True


@contextlib.contextmanager
def _every_worker_told_to_stop(told: set[Any]) -> Iterator[None]:
    """While the run lasts, Beam (2.77) stops every worker process of a stopped or
    finished run, whatever the moment of a Ctrl-C or SIGTERM. Its FnApiRunner closes
    each worker's control connection, which tells the worker to end, then waits for
    the worker to end:
    - a connection the worker had not opened yet (a stop while the workers import,
      the run's first seconds) was closed without a word; the worker opened it
      later and waited for work, the launcher for the worker, forever. Its worker
      now ends as it opens it (a stop kills it first: `_a_stop_kills_the_unconnected`);
    - a stop while it closed them (from the last stage on) broke off that loop:
      the workers after were never told, and the launcher, its `error:` line
      printed, waited for them at exit, forever. The stop now comes once they are
      all closed.
    Either way Ctrl-C was ignored by then, and a worker left running. Each connection
    closed goes in `told` first: its worker's end is no failure."""
    from apache_beam.runners.portability.fn_api_runner import worker_handlers  # noqa: PLC0415

    servicer = worker_handlers.BeamFnControlServicer
    if not _runner_as_known():
        yield
        return
    connection, manager = worker_handlers.ControlConnection, worker_handlers.WorkerHandlerManager
    close, close_all = connection.close, manager.close_all

    def close_even_unopened(self) -> None:
        told.add(self)
        # Read first when the worker connects (one that connects meanwhile is sent a
        # second, never read).
        if getattr(self, "_state", None) == servicer.UNSTARTED_STATE:
            self.push(servicer._DONE_MARKER)  # noqa: SLF001 - checked for above
        close(self)

    def close_all_then_stop(self) -> None:
        with _stops_held():
            close_all(self)

    connection.close, manager.close_all = close_even_unopened, close_all_then_stop
    try:
        yield
    finally:
        connection.close, manager.close_all = close, close_all


@contextlib.contextmanager
def _an_untold_end_fails_the_run(
    started: dict[str | None, _WorkerProcess], told: set[Any], handlers: dict[str, Any]
) -> Iterator[None]:
    """A worker process that ends before Beam told it to (`told`) fails the run at once.
    Beam (2.77) noticed only the end of a worker connected to it (its streams broke):
    one that ended before it connected (its Python could not start: a module that fails
    to import, a bad environment; killed as it started) left the launcher waiting for
    its bundle's outputs, silent, forever. Its end now closes its connections, which
    fails the bundle, `logs.worker_ended` notes how it ended, with its last line, and
    the run's other workers are killed (`_end_the_others`).
    `handlers`: filled with Beam's handler of each worker it starts."""
    if not _runner_as_known():  # nor are the connections Beam closes noted in `told`
        yield
        return
    from apache_beam.runners.portability import local_job_service  # noqa: PLC0415
    from apache_beam.runners.portability.fn_api_runner import worker_handlers  # noqa: PLC0415

    worker, handler = (
        local_job_service.SubprocessSdkWorker,
        worker_handlers.SubprocessSdkWorkerHandler,
    )
    run, start, push = worker.run, handler.start_worker, worker_handlers.ControlConnection.push
    ended: dict[Any, Exception] = {}  # the connections of workers that ended untold

    def start_known(self) -> None:
        handlers[self.worker_id] = self
        start(self)

    def run_watched(self) -> None:
        try:
            run(self)
        finally:  # in its thread, before Beam's error of it (the run's `logs` hook)
            known = handlers.get(getattr(self, "_worker_id", None))
            if known is not None and known.control_conn in told:
                logs.worker_was_told_to_end()
            elif known is not None:
                _fail_its_bundles(known, started.get(known.worker_id), ended)
                _end_the_others(known, handlers, started)

    def push_unless_ended(self, request):
        future = push(self, request)
        if future is not None and self in ended:  # a bundle sent to a worker gone
            future.abort(ended[self])
        return future

    worker.run, handler.start_worker = run_watched, start_known
    worker_handlers.ControlConnection.push = push_unless_ended
    try:
        yield
    finally:
        worker.run, handler.start_worker = run, start
        worker_handlers.ControlConnection.push = push


def _fail_its_bundles(handler: Any, process: _WorkerProcess | None, ended: dict) -> None:
    """The bundles of `handler`'s worker, which ended untold, fail: what it was sent and
    what it will be (its control connection, in `ended`), and the outputs awaited of it
    (its data channel, closed: 'Channel closed prematurely')."""
    connection = handler.control_conn
    connected = _has_connected(connection)
    code = process.process.returncode if process is not None else None
    last = process.last_line() if process is not None and not connected else None
    error = RuntimeError(logs.worker_ended(code, connected, last))
    ended[connection] = error
    for future in list(getattr(connection, "_futures_by_id", {}).values()):
        future.abort(error)
    handler.data_conn._closed = True  # noqa: SLF001 - what its reads check, every second


def _end_the_others(
    ended: Any, handlers: dict[str, Any], started: dict[str | None, _WorkerProcess]
) -> None:
    """Once a worker's untold end (`ended`, its handler) has failed the run, the run's
    other workers are killed (SIGKILL, `_WorkerProcess.kill`): their parts of its
    bundles can no longer be used. Beam (2.77) waited for each to end: one still at
    its part computed on to the part's end (46 s after the kill, measured: two
    workers, one killed), the `error:` line printed after it; one not connected yet (still
    starting, or hung as it starts) was waited for to connect, forever, silent, for
    one that hangs. A checkpoint cut short stays a `.partial` file, which a --resume
    never reads as rows (`transforms.sinks.write_parquet_file`). Those of another
    run, overlapping in this process (their gRPC server is another: Beam makes one a
    run), are left to it."""
    logs.ends_follow_a_failure()
    server = getattr(ended, "_grpc_server", None)
    for handler in list(handlers.values()):
        process = started.get(handler.worker_id)
        same_run = getattr(handler, "_grpc_server", None) is server
        if handler is not ended and same_run and process is not None:
            process.kill()


def _kill_if_unconnected(handler: Any, process: _WorkerProcess | None) -> None:
    """Kills `handler`'s worker process (`process`) if it has not connected to the
    launcher: it has done no work, and Beam waits for it to connect, maybe forever."""
    if process is not None and not _has_connected(handler.control_conn):
        process.kill()


@contextlib.contextmanager
def _a_late_start_is_said(
    started: dict[str | None, _WorkerProcess], handlers: dict[str, Any]
) -> Iterator[None]:
    """While the run lasts, a worker process not connected `LATE_START_S` after its
    start is said to be late, once, with what stops the run: nothing tells a hung
    start from a slow one, and the run waited for it, silent."""
    done = threading.Event()
    watcher = threading.Thread(
        target=_say_late_starts, args=(started, handlers, done), name="late_starts", daemon=True
    )
    watcher.start()
    try:
        yield
    finally:
        done.set()


def _say_late_starts(
    started: dict[str | None, _WorkerProcess], handlers: dict[str, Any], done: threading.Event
) -> None:
    """Each second until `done`: one line for the workers late since the last (`_is_late`)."""
    said: set[str] = set()
    while not done.wait(1.0):
        late = [
            worker_id
            for worker_id, handler in list(handlers.items())
            if worker_id not in said and _is_late(started.get(worker_id), handler)
        ]
        if late:
            said.update(late)
            one = len(late) == 1
            _LOG.warning(
                "%s %s not connected to the launcher %g s after %s started; the run waits "
                "for %s (a start is mostly TensorFlow's import, 5-20 s). One hung as it "
                "starts is waited for forever: Ctrl-C or SIGTERM stops the run, and "
                "--resume continues it.",
                wording.count(len(late), "worker process", "worker processes"),
                "has" if one else "have",
                LATE_START_S,
                "it" if one else "they",
                "it" if one else "them",
            )


def _is_late(process: _WorkerProcess | None, handler: Any) -> bool:
    """Whether a worker process runs, not connected, `LATE_START_S` after its start."""
    return (
        process is not None
        and process.process.poll() is None
        and not _has_connected(handler.control_conn)
        and time.monotonic() - process.started_at >= LATE_START_S
    )


def _has_connected(connection: Any) -> bool:
    """Whether the worker of a control connection of Beam's has connected to the launcher
    (its input is set then, `set_input`, and stays set once closed; a Beam without it:
    taken as connected, the worker told to end as Beam tells it)."""
    return getattr(connection, "_input", True) is not None


@contextlib.contextmanager
def _a_stop_kills_the_unconnected(started: dict[str | None, _WorkerProcess]) -> Iterator[None]:
    """A stop (Ctrl-C, SIGTERM) kills the worker processes that have not connected to
    the launcher. Beam (2.77) waits for each worker it closes to end, and one that
    starts but never connects (hung as it imports) was never told to: the stop waited
    for it, forever, Ctrl-C ignored by then; a second SIGTERM ended the launcher and
    left that worker running, its shell and its Python. A worker not connected has
    done no work: the stop no longer waits for it to start either. Workers connected,
    and the workers of a run that ends without a stop, are told to end as before."""
    if not _runner_as_known():
        yield
        return
    from apache_beam.runners.portability.fn_api_runner import worker_handlers  # noqa: PLC0415

    handler = worker_handlers.SubprocessSdkWorkerHandler
    stop = handler.stop_worker

    def stop_unconnected_too(self) -> None:
        if logs.stop_is_requested():
            _kill_if_unconnected(self, started.get(self.worker_id))
        stop(self)

    handler.stop_worker = stop_unconnected_too
    try:
        yield
    finally:
        handler.stop_worker = stop


@one_for_overlapping_runs
def failed_bundles_answered() -> Iterator[None]:
    """While the run lasts, a bundle that fails in an SDK worker of this process (a
    DirectRunner's --direct_running_mode multi_threading; in a worker process of
    multi_processing, for its life: `pipeline.worker_plugin`) is answered to the runner
    as failed, its traceback the answer's error, and not printed. Beam (2.77) printed the
    traceback to stderr before it answered: a stderr that could not be written (a log
    file on a full disk or past a file-size limit: EFBIG, SIGXFSZ being ignored by
    Python; a pipe whose reader has gone) raised there, in its thread, the answer was
    never sent, and the launcher waited for it, silent, forever, --output locked. A
    worker process's print (and its log of it) did not hang the run, but filled the
    launcher's stderr, which copies it, with pages of tracebacks. The run now fails as
    in one thread: its one `error:` line (--verbose: with the traceback), its manifest
    "failed", the folder freed. Left as it is on a Beam whose worker differs."""
    from apache_beam.portability.api import beam_fn_api_pb2  # noqa: PLC0415
    from apache_beam.runners.worker import sdk_worker  # noqa: PLC0415

    harness = sdk_worker.SdkHarness
    execute = getattr(harness, "_execute", None)
    if execute is None:
        yield
        return

    def execute_answered(self, task, request) -> None:
        def answered():
            try:
                return task()
            except BaseException:  # noqa: BLE001 - all, as Beam's own `except:` there
                return beam_fn_api_pb2.InstructionResponse(
                    instruction_id=request.instruction_id, error=traceback.format_exc()
                )

        execute(self, answered, request)

    harness._execute = execute_answered  # noqa: SLF001 - checked for above
    try:
        yield
    finally:
        harness._execute = execute  # noqa: SLF001


@contextlib.contextmanager
def _stops_held() -> Iterator[None]:
    """A Ctrl-C or SIGTERM (their Python handlers) waits for the block's end, then
    stops the process as it would have; a second SIGTERM still ends it at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    handlers = {s: handler for s, handler in handlers.items() if callable(handler)}
    held: list[int] = []

    def hold(signum, frame):
        if signum == signal.SIGTERM and signum in held:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        held.append(signum)

    for signum in handlers:
        signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    if held:  # not when the block raised: a stop already under way goes on
        handlers[held[0]](held[0], None)


def interrupted(error: BaseException) -> bool:
    """A Ctrl-C while the runner ran: Beam re-raises it from its worker as another
    error (a RuntimeError 'KeyboardInterrupt [while running ...]'), which `run` and
    `launch` raise as the KeyboardInterrupt it was."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, KeyboardInterrupt) or "KeyboardInterrupt" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False
