"""What a run changes in Beam for its length, when runs overlap in threads of one process."""

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability import local_job_service
from apache_beam.runners.portability.fn_api_runner import worker_handlers
from apache_beam.runners.worker import sdk_worker
from apache_beam.transforms import core, userstate

from pipeline import logs, stopping
from pipeline.beam_reuse import (
    dofn_specs_kept,
    function_arguments_kept,
    in_process_state_cache_off,
)
from pipeline.patching import one_for_overlapping_runs

_MULTI_PROCESS = PipelineOptions(["--direct_running_mode=multi_processing"])
_WAIT_S = 60  # against a hang only: each wait is for a step the other thread takes at once


def _changed_by_a_run():
    """Each run-scoped change of Beam (or of the environment its workers start in):
    its context as a run enters it, and what it changes, read."""
    handlers = worker_handlers
    return {
        "dofn_specs_kept": (dofn_specs_kept, lambda: userstate.get_dofn_specs),
        "function_arguments_kept": (
            function_arguments_kept,
            lambda: core.get_function_args_defaults,
        ),
        "in_process_state_cache_off": (
            in_process_state_cache_off,
            lambda: handlers.STATE_CACHE_SIZE_MB,
        ),
        "failed_bundles_answered": (
            stopping.failed_bundles_answered,
            lambda: sdk_worker.SdkHarness._execute,  # noqa: SLF001 - what it replaces
        ),
        "workers_apart_from_ctrl_c": (
            lambda: stopping.workers_apart_from_ctrl_c(_MULTI_PROCESS),
            lambda: (
                local_job_service.subprocess,
                local_job_service.SubprocessSdkWorker.run,
                handlers.ControlConnection.close,
                handlers.ControlConnection.push,
                handlers.WorkerHandlerManager.close_all,
                handlers.SubprocessSdkWorkerHandler.start_worker,
                handlers.SubprocessSdkWorkerHandler.stop_worker,
            ),
        ),
        "threads_watched": (lambda: logs.threads_watched(False), lambda: threading.excepthook),
        "workers_import_this_job": (
            lambda: stopping.workers_import_this_job(_MULTI_PROCESS),
            lambda: (os.environ.get("PYTHONPATH"), os.environ.get("PYTHONSAFEPATH")),
        ),
    }


def _overlapping(context, read):
    """Runs A and B, each in a thread of its own, in `context`: A enters, B enters, A
    leaves, B leaves. What `read` says in A, and in B once A has left."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen, errors = {}, []

    def run(enter_after, inside):
        try:
            assert enter_after is None or enter_after.wait(_WAIT_S)
            with context():
                inside()
        except BaseException as e:  # noqa: BLE001 - raised in the test's thread below
            errors.append(e)
            for event in (a_in, b_in, a_out):
                event.set()

    def in_a():
        seen["a"] = read()
        a_in.set()
        assert b_in.wait(_WAIT_S)

    def in_b():
        b_in.set()
        assert a_out.wait(_WAIT_S)
        seen["b"] = read()

    a = threading.Thread(target=lambda: (run(None, in_a), a_out.set()))
    b = threading.Thread(target=run, args=(a_in, in_b))
    for thread in (a, b):
        thread.start()
    for thread in (a, b):
        thread.join()
    if errors:
        raise errors[0]
    return seen


@pytest.mark.parametrize("changed", list(_changed_by_a_run()))
def test_runs_that_overlap_keep_beams_change_while_either_lasts_and_leave_beams_own(
    changed, beams_own_dofn_specs, monkeypatch
):
    # A run put back, as it ended, what it had found as it began: run B, which began
    # inside run A, found A's change, and put it back after A had put Beam's own back
    # (B's remaining part without the change): A's change stayed for the life of the
    # process, its run's state with it.
    monkeypatch.delenv("PYTHONSAFEPATH", raising=False)
    context, read = _changed_by_a_run()[changed]
    beams = read()
    seen = _overlapping(context, read)
    assert seen["a"] != beams  # the change is made ...
    assert seen["b"] == seen["a"]  # ... and stays while B lasts, A gone
    assert read() == beams  # Beam's own once both have ended


def test_the_kept_dofn_specs_answer_in_a_run_that_outlasts_the_one_that_began_first(
    beams_own_dofn_specs,
):
    import apache_beam as beam

    class Plain(beam.DoFn):
        def process(self, element):
            yield element

    def answer():
        kept, plain = userstate.get_dofn_specs, Plain()
        return kept is not beams_own_dofn_specs, kept(plain), kept(plain)

    seen = _overlapping(dofn_specs_kept, answer)
    assert seen["a"] == seen["b"] == (True, (set(), set()), (set(), set()))


def test_one_for_overlapping_runs_enters_once_and_leaves_once_in_any_order():
    entered = []

    @one_for_overlapping_runs
    def counted(made_by="a"):
        entered.append("in")
        try:
            yield made_by
        finally:
            entered.append("out")

    with counted("first") as first:
        with counted("second") as second:  # nested in one thread: the first one's, held
            assert first == second == "first"
        assert entered == ["in"]
    assert entered == ["in", "out"]
    seen = _overlapping(counted, lambda: list(entered))
    assert seen == {"a": ["in", "out", "in"], "b": ["in", "out", "in"]}
    assert entered == ["in", "out", "in", "out"]
    with pytest.raises(KeyError):  # an error inside a block is the block's own ...
        with counted():
            raise KeyError("x")
    with counted():  # ... and the change is made again by the next
        assert entered[-1] == "in"
    assert entered[-1] == "out"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_worker_that_ends_untold_ends_the_unconnected_of_its_own_run_alone(tmp_path):
    # Beam's worker handlers of two runs in one process (a manager, and its gRPC
    # server, each): run A's worker starts and waits (not connected, as one that
    # imports TensorFlow), run B's ends as it starts. B's end fails B, and kills B's
    # workers not connected yet: it killed A's too, failing a run that had done nothing
    # wrong.
    from apache_beam.portability import python_urns
    from apache_beam.portability.api import beam_runner_api_pb2
    from apache_beam.runners.portability.fn_api_runner.fn_runner import ExtendedProvisionInfo

    def a_run_with_one_worker(command):
        environment = beam_runner_api_pb2.Environment(
            urn=python_urns.SUBPROCESS_SDK, payload=command.encode()
        )
        manager = worker_handlers.WorkerHandlerManager(
            {"env": environment}, ExtendedProvisionInfo()
        )
        return manager, manager.get_worker_handlers("env", 1)[0]

    pid_file = tmp_path / "a_pid"
    runs = []
    try:
        with stopping.workers_apart_from_ctrl_c(_MULTI_PROCESS):
            runs.append(a_run_with_one_worker(f"echo $$ > {pid_file}; exec sleep 600"))
            while not (pid_file.exists() and pid_file.read_text().strip()):
                time.sleep(0.01)  # A's worker has started: its shell writes its pid first
            pid = int(pid_file.read_text())
            with stopping.workers_apart_from_ctrl_c(_MULTI_PROCESS):
                runs.append(a_run_with_one_worker("exit 3"))
                runs[1][1].worker_thread.join()  # B's worker has ended, its end handled
                stat = Path("/proc") / str(pid) / "stat"
                state = stat.read_text().split(") ")[1][0] if stat.exists() else "gone"
                assert state in ("R", "S", "D"), state  # A's worker runs on: not killed
    finally:
        if pid_file.exists() and pid_file.read_text().strip():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
        for manager, _ in runs:
            manager.close_all()
