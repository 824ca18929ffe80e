"""Local parallelism: the DirectRunner with several worker processes gives the same rows."""

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import run
from pipeline.main import launch
from tests.conftest import cli_args, launched, printed_summary, write_image

# Columns that must match exactly; float columns are compared to a tolerance.
_EXACT = [
    "file_name",
    "label",
    "label_name",
    "predicted_class",
    "predicted_name",
    "target_class",
    "target_name",
    "steps",
    "method",
    "evaluations",
    "within_tolerance",
]
_CLOSE = ["target_score", "baseline_score", "attribution_sum", "completeness_delta"]


def _rows(output) -> pd.DataFrame:
    results = pd.read_parquet(output / "results")
    return results.sort_values(["image_id", "target_class"]).reset_index(drop=True)


def test_multi_process_run_gives_the_same_rows_as_one_worker(
    image_folder, quadratic_saved_model, tmp_path
):
    flags = cli_args(
        runner="DirectRunner",
        dataset=image_folder["root"],
        model=quadratic_saved_model,
        steps=6,
        target="top_k",
        top_k=2,
        batch_size=2,
    )
    one_worker = cli_args(output=tmp_path / "one", direct_num_workers=1)
    two_processes = cli_args(
        output=tmp_path / "two", direct_running_mode="multi_processing", direct_num_workers=2
    )
    one = run([*flags, *one_worker], save_main_session=False)
    two = run([*flags, *two_processes], save_main_session=False)

    counts = {
        "inputs": 5,
        "rows": 8,
        "errors": 1,
        "images_with_rows": 4,
        "images_with_errors": 1,
        "skipped_done_before": 0,
    }
    assert two["counts"] == one["counts"] == counts
    assert two["all_inputs_accounted_for"]
    a, b = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    two_per_image = [image_id for image_id in sorted(image_folder["pixels"]) for _ in range(2)]
    assert b.image_id.tolist() == a.image_id.tolist() == two_per_image
    pd.testing.assert_frame_equal(b[_EXACT], a[_EXACT])
    np.testing.assert_allclose(b[_CLOSE].to_numpy(), a[_CLOSE].to_numpy(), rtol=1e-5, atol=1e-6)
    for x, y in zip(a.itertuples(), b.itertuples(), strict=True):
        assert list(y.top_k_classes) == list(x.top_k_classes)
        np.testing.assert_allclose(y.top_k_probs, x.top_k_probs, rtol=1e-5)
        assert list(y.attribution_shape) == list(x.attribution_shape)
        np.testing.assert_allclose(y.attributions, x.attributions, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(y.path_scores, x.path_scores, rtol=1e-5, atol=1e-7)

    errors_one = pd.read_parquet(tmp_path / "one" / "errors")
    errors_two = pd.read_parquet(tmp_path / "two" / "errors")
    assert errors_two.to_dict("records") == errors_one.to_dict("records")
    assert errors_one.image_id.tolist() == ["broken.jpg"]


def test_a_run_on_two_threads_accounts_for_every_input_and_prints_no_pillow_warning(
    image_folder, linear_keras, tmp_path
):
    """The command line with --direct_running_mode multi_threading: the bundles of one
    process decode at once (their warning filters are the process's), and the launcher
    counts the job's progress as with one worker."""
    root = Path(image_folder["root"])
    rng = np.random.default_rng(5)
    for i in range(8):  # Pillow warns of each: 'Corrupt EXIF data'
        array = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
        write_image(root / f"exif{i}.jpg", array, format="JPEG", exif=b"Exif\0\0II*\0\x40\0\0\0")
    out = tmp_path / "out"
    flags = cli_args(dataset=root, model=linear_keras, output=out, steps=2, faithfulness="none")
    threads = cli_args(direct_running_mode="multi_threading", direct_num_workers=2)
    done = subprocess.run(
        launched([sys.executable, "-m", "pipeline", *flags, *threads]),
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Warning" not in done.stderr and "EXIF" not in done.stderr, done.stderr
    assert "progress: 13/13 images (100%)" in done.stderr, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["inputs"] == 13 and manifest["all_inputs_accounted_for"]
    assert len(pd.read_parquet(out / "results")) == 12  # the JPEG cut short: an error
    assert pd.read_parquet(out / "errors").image_id.tolist() == ["broken.jpg"]


_WORKER_LINE = (
    r"INFO pipeline\.progress: progress \(this worker\): (\d+) images? done, [\d.]+ images/s"
)


@pytest.fixture(scope="module")
def two_workers_run(tmp_path_factory, printing_saved_model) -> dict:
    """One `python -P -m pipeline` run on 2 worker processes, as `./run_local.sh` runs
    it, for the checks of several tests (a worker process's start-up is the cost of
    each run): of a TFDS split of 3 examples, from a folder holding packages named as
    the job's, auditing `printing_saved_model` (its calls print to file descriptor 1).
    Its `done` (CompletedProcess, exit 0), `output`, `counts` of its progress lines,
    each a worker's own, and `cwd`, the folder it ran from."""
    from tests import tfds_builders

    where = tmp_path_factory.mktemp("two_workers")
    # Beam starts the workers as `python -m ...` in the caller's folder, first on
    # their sys.path: they imported the project's `transforms`, not the job's.
    project = where / "project"
    for package in ("pipeline", "transforms"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text(f"raise ImportError('{package}')\n")
    data_dir = tfds_builders.prepared("tiny_shades/dark", where)
    args = cli_args(
        dataset="tiny_shades/dark",
        data_dir=data_dir,
        model=printing_saved_model,
        output=where / "out",
        steps=2,
        direct_running_mode="multi_processing",
        direct_num_workers=2,
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    done = subprocess.run(
        [sys.executable, "-P", "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=project,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stderr
    progress = [line for line in log.splitlines() if line.startswith("INFO pipeline.progress")]
    # Each worker counts only its own images: its line gives no job total, percent or ETA.
    assert progress and all(re.fullmatch(_WORKER_LINE, line) for line in progress), log
    counts = [int(re.fullmatch(_WORKER_LINE, line).group(1)) for line in progress]
    return {"done": done, "output": where / "out", "counts": counts, "cwd": project}


def test_two_workers_from_a_folder_of_same_named_packages_are_quiet_and_log_part_batches(
    two_workers_run,
):
    # `two_workers_run`: from that folder, of a TFDS split. The default --batch_size (8)
    # is more than the split's 3 examples: no worker ends a full RunInference batch,
    # and a worker cannot tell its last image, so each logs its count when its bundle
    # ends (a full batch's lines: `_stop_when_a_worker_progresses`'s, at --batch_size
    # 1). TFDS imports TensorFlow in a worker when it reads a shard, before the model
    # handler imports it quietly: each worker printed TensorFlow's banner.
    log = two_workers_run["done"].stderr
    assert max(two_workers_run["counts"]) <= 3  # a worker counts its share of the 3 inputs
    assert len(pd.read_parquet(two_workers_run["output"] / "results")) == 3
    # Beam's per-worker start-up warnings and TensorFlow's banner: --verbose only.
    noises = ("Worker: severity", "Discarding unparseable args", "oneDNN", "absl::", "cuda")
    for noise in noises:
        assert noise not in log, log[-3000:]


def test_a_models_prints_in_worker_processes_go_to_stderr_stdout_holds_the_summary_alone(
    two_workers_run, monkeypatch
):
    # A SavedModel's tf.print(..., output_stream=sys.stdout) is written by TensorFlow's
    # C++ to file descriptor 1, not through sys.stdout: worker processes, which inherit
    # the job's descriptor 1, wrote their 'batch of N' lines before the summary on the
    # job's stdout (the job's own process: tests/test_cli.py).
    done = two_workers_run["done"]
    monkeypatch.chdir(two_workers_run["cwd"])  # its printed commands say where it ran
    assert done.stdout == printed_summary(two_workers_run["output"])
    assert "batch of " in done.stderr


def test_worker_records_keep_the_jobs_own_lines_and_drop_beams():
    import logging
    import os

    from pipeline import logs

    root = os.path.dirname(os.path.dirname(os.path.abspath(logs.__file__)))

    def forwarded(severity: int, message: str, source: str) -> logging.LogRecord:
        # How Beam's local job service logs a worker's record (one line).
        text = (
            f'Worker: severity: X timestamp {{ seconds: 1 }} message: "{message}" '
            f'instruction_id: "bundle_1" log_location: "{source}" thread: "Thread-1" '
        )
        return logging.LogRecord("apache_beam", severity, "", 0, text, (), None)

    keep = logs._WorkerRecords()
    progress = forwarded(20, "progress: 1/3 images\\tdone", f"{root}/pipeline/progress.py:120")
    assert keep.filter(progress) and progress.getMessage() == "progress: 1/3 images\tdone"
    assert progress.name == "pipeline.progress"
    broken = forwarded(30, "cannot read 'a\\nb.png'", f"{root}/transforms/batch.py:9")
    assert keep.filter(broken) and broken.getMessage() == "cannot read 'a\nb.png'"
    assert broken.name == "transforms.batch"  # its logger's, not Beam's job service's
    ours = forwarded(
        30, "Some attribution maps do not fit float16", f"{root}/transforms/batch.py:9"
    )
    assert keep.filter(ours) and ours.getMessage() == "Some attribution maps do not fit float16"
    beam = "/venv/site-packages/apache_beam/transforms/core.py:1"  # not the job's transforms/
    assert not keep.filter(forwarded(30, "Discarding unparseable args", beam))
    assert not keep.filter(forwarded(20, "a chatty info line", f"{root}/transforms/batch.py:9"))
    assert keep.filter(forwarded(40, "a worker error", beam))
    # The job service's own records, no worker's: only from ERROR up, as Beam's.
    for level, kept in ((20, False), (30, False), (40, True)):
        record = logging.LogRecord("apache_beam", level, "", 0, "Job state: RUNNING", (), None)
        assert keep.filter(record) is kept
    # With --verbose, every record as Beam logs it, its message's escapes and its
    # traceback's turned back into what they stand for; that traceback once, not twice.
    shown = logs._WorkerRecordsReadable()
    failed = forwarded(40, 'OSError: x\\nTraceback:\\n  File \\"a.py\\"\\nOSError: x', beam)
    failed.msg += 'trace: "Traceback:\\n  File \\"a.py\\"\\nOSError: x\\n" '
    assert shown.filter(failed)
    assert 'message: "OSError: x\nTraceback:\n  File "a.py"\nOSError: x" instruction_id:' in (
        failed.getMessage()
    )
    assert "trace:" not in failed.getMessage() and "\\" not in failed.getMessage()
    own = forwarded(20, "a chatty info line", f"{root}/transforms/batch.py:9")
    text = own.getMessage()
    assert shown.filter(own) and own.getMessage() == text  # nothing to turn back


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_worker_processes_import_the_jobs_plugin_and_log_dofn_tracebacks_as_the_launcher(
    verbose,
):
    # The options a worker process reads as it starts, decoded as Beam's worker does: it
    # imports the job's plugin (its failed bundles answered, not printed: the run on two
    # workers of tests/test_output_folder.py's full-disk warning, its log under the
    # limit) and logs a failing DoFn's traceback at the launcher's level, which
    # `configure_logging` sets (--verbose: shown). The user's own plugins and log
    # levels are kept, theirs first; the options themselves are left as they were.
    from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions
    from apache_beam.runners.worker import sdk_worker_main
    from google.protobuf import json_format

    from pipeline import logs
    from pipeline.runner import local_runner

    options = PipelineOptions(
        [
            "--direct_running_mode=multi_processing",
            "--beam_plugins=their.plugin",
            '--sdk_harness_log_level_overrides={"their.logger": "DEBUG"}',
        ]
    )
    dofn = logging.getLogger(logs.DOFN_TRACEBACKS)
    before = dofn.level
    try:
        logs.configure_logging(verbose)
        runner = local_runner(options)
    finally:
        dofn.setLevel(before)
    encoded = runner._provision_info.provision_info.pipeline_options
    given = sdk_worker_main._load_pipeline_options(json_format.MessageToJson(encoded))
    assert given["beam_plugins"] == ["their.plugin", "pipeline.worker_plugin"]
    assert given["sdk_harness_log_level_overrides"] == {
        logs.DOFN_TRACEBACKS: "INFO" if verbose else "CRITICAL",
        "their.logger": "DEBUG",
    }
    assert options.view_as(SetupOptions).beam_plugins == ["their.plugin"]


# A worker's log handler (Beam's) whose launcher's log service goes away, the job's
# worker plugin imported first, as a worker does. It waits for the handler's fourth
# attempt to reach the service, then closes it.
_LOG_SERVICE_GOES_AWAY = """import threading
from concurrent import futures
import grpc
import pipeline.worker_plugin
from apache_beam.portability.api import beam_fn_api_pb2_grpc, endpoints_pb2
from apache_beam.runners.portability.local_job_service import BeamFnLoggingServicer
from apache_beam.runners.worker import log_handler

server = grpc.server(futures.ThreadPoolExecutor(2))
beam_fn_api_pb2_grpc.add_BeamFnLoggingServicer_to_server(BeamFnLoggingServicer(), server)
port = server.add_insecure_port("localhost:0")
server.start()
attempts, fourth = [], threading.Event()
connect = log_handler.FnApiLogRecordHandler.connect
def counted(self):
    attempts.append(1)
    if len(attempts) == 4:
        fourth.set()
    return connect(self)
log_handler.FnApiLogRecordHandler.connect = counted
handler = log_handler.FnApiLogRecordHandler(endpoints_pb2.ApiServiceDescriptor(url=f"localhost:{port}"))
server.stop(None).wait()
assert fourth.wait(60), attempts
handler.close()
"""


def test_a_worker_that_loses_the_launchers_log_service_says_so_once():
    # A two-worker run whose one worker was killed (SIGKILL, as out of memory): the
    # launcher closed its log service as the run failed, and the other worker, still
    # at its bundle for a minute, printed Beam's 5-line 'Logging client failed: ...
    # resetting' every half second, 77 times (33.6 of 34.8 kB of stderr), above the `error:`
    # line. Here Beam's own handler and log service, in a process of their own.
    done = subprocess.run(
        [sys.executable, "-c", _LOG_SERVICE_GOES_AWAY],
        env=_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("Logging client failed: ") == 1, done.stderr[-3000:]


# A process that ends holding a reference cycle whose object says when it is collected:
# only Python's last garbage collections, at exit, free it.
_ENDS_HOLDING_A_CYCLE = """import os
from transforms import attribution

class Noted:
    def __del__(self, write=os.write):
        write(1, b"collected at exit\\n")

attribution._end_worker_without_a_last_collection()
held = Noted()
held.itself = held
"""


@pytest.mark.parametrize("in_a_worker", [True, False], ids=["worker", "launcher"])
def test_a_worker_process_ends_without_pythons_last_garbage_collection(in_a_worker):
    # The model handler's `load_model` calls it in each process that loads the model.
    # A worker's end collected what TensorFlow and the model left (1-3 s), which the
    # launcher waits for at each run's end and stop; the launcher's own end, or a
    # notebook's, collects as before.
    env = {**_ENV, "CONTROL_API_SERVICE_DESCRIPTOR": "url: 'localhost:1'"}
    if not in_a_worker:
        del env["CONTROL_API_SERVICE_DESCRIPTOR"]
    done = subprocess.run(
        [sys.executable, "-c", _ENDS_HOLDING_A_CYCLE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == ("" if in_a_worker else "collected at exit\n"), done.stderr[-2000:]


def _worker_exits(code: int) -> None:
    """A thread that ends as Beam's `run_worker` does when its worker process ends."""

    def run() -> None:
        raise RuntimeError(f"Worker subprocess exited with return code {code}")

    thread = threading.Thread(target=run, name="run_worker")
    thread.start()
    thread.join()


def test_a_worker_that_ends_while_a_stop_stops_the_run_is_not_an_error(caplog):
    # A worker torn down by a Ctrl-C once died by SIGABRT ('FATAL: exception not
    # rethrown'), and the run, stopped as asked, logged 'ERROR pipeline: A worker
    # process ended: return code 134 (SIGABRT)' under its 'interrupted' line.
    from pipeline import logs

    saved = threading.excepthook
    try:
        logs._watch_threads(verbose=False)
        with caplog.at_level("ERROR", logger="pipeline"):
            _worker_exits(137)
            assert "A worker process ended: return code 137 (SIGKILL" in caplog.text
            caplog.clear()
            logs.stop_requested()
            _worker_exits(134)
        assert caplog.text == ""
        assert logs.worker_death().startswith("a worker process ended, return code 137 (SIGKILL")
        logs._watch_threads(verbose=False)  # a new run: its workers' ends are reported again
        with caplog.at_level("ERROR", logger="pipeline"):
            _worker_exits(134)
        assert "A worker process ended: return code 134 (SIGABRT)." in caplog.text
    finally:
        threading.excepthook = saved


@pytest.mark.parametrize("verbose", [False, True])
def test_a_command_line_run_notes_each_worker_end_once(verbose):
    # The command line installs its thread hook (`configure_logging`), and the run
    # watches its threads from Python too (`threads_watched`): with --verbose the run's
    # hook handed each exception on to the command line's, which noted the end again.
    from pipeline import logs

    reached: list[str] = []
    saved, default = threading.excepthook, threading.__excepthook__
    try:
        threading.__excepthook__ = lambda args: reached.append(str(args.exc_value))
        logs._watch_threads(verbose)
        with logs.threads_watched(verbose):
            _worker_exits(137)
        logs.worker_ended(1, connected=False)
    finally:
        threading.excepthook, threading.__excepthook__ = saved, default
    assert logs._ends == [
        "a worker process ended, return code 137 (SIGKILL, killed, as the system kills a "
        "process when memory runs out)",
        "a worker process ended before it connected to the launcher (it could not start), "
        "return code 1",
    ]
    assert reached == (["Worker subprocess exited with return code 137"] if verbose else [])


@pytest.mark.parametrize("connected_first", [True, False])
def test_the_first_worker_end_recorded_names_the_runs_failure(connected_first):
    # Two workers end at nearly the same time, both before the thread of the first
    # says that its end failed the run (`ends_follow_a_failure`): the one that ended
    # before it connected was named, even when the connected one had ended first.
    from pipeline import logs

    def connected() -> str:
        return logs.worker_ended(137, connected=True)

    def not_connected() -> str:
        return logs.worker_ended(1, connected=False, last_line="ImportError: no grpc")

    first, second = (connected, not_connected) if connected_first else (not_connected, connected)
    logs.forget_worker_ends()
    named = first()
    second()
    logs.ends_follow_a_failure()
    assert logs.worker_death() == named


def test_a_threads_error_once_a_workers_end_has_failed_the_run_is_not_logged(caplog):
    # A worker's untold end fails the run, and the launcher kills the run's other
    # workers (`stopping._end_the_others`) before that end reaches the thread hook:
    # their control streams broke, and Beam's thread reading one raised, logged above
    # the `error:` line as 'ERROR pipeline: In beam_control_read: RpcError ...'.
    from pipeline import logs

    failed, others_killed = threading.Event(), threading.Event()

    def worker_ends() -> None:  # Beam's `run_worker`, its end seen by `stopping`
        logs.ends_follow_a_failure()
        failed.set()
        others_killed.wait(30)
        raise RuntimeError("Worker subprocess exited with return code 137")

    def control_read_breaks() -> None:
        raise RuntimeError("<_MultiThreadedRendezvous of RPC that terminated with: ...>")

    saved = threading.excepthook
    try:
        logs._watch_threads(verbose=False)
        logs.forget_worker_ends()
        ends = threading.Thread(target=worker_ends, name="run_worker")
        reads = threading.Thread(target=control_read_breaks, name="beam_control_read")
        with caplog.at_level(logging.ERROR, logger="pipeline"):
            ends.start()
            assert failed.wait(30)
            reads.start()
            reads.join()
            others_killed.set()
            ends.join()
    finally:
        threading.excepthook = saved
    assert "In beam_control_read" not in caplog.text
    assert logs.worker_death().startswith("a worker process ended, return code 137")


def test_a_worker_end_the_thread_hook_saw_first_names_the_runs_failure():
    # Where only Beam's thread noted a connected worker's end (its hook), an end
    # before it connected, recorded after it, is not the one named.
    from pipeline import logs

    saved = threading.excepthook
    try:
        logs._watch_threads(verbose=False)
        _worker_exits(137)
        logs.worker_ended(1, connected=False, last_line="ImportError: no grpc")
    finally:
        threading.excepthook = saved
    assert logs.worker_death() == (
        "a worker process ended, return code 137 (SIGKILL, killed, as the system kills a "
        "process when memory runs out)"
    )


@pytest.mark.parametrize("verbose", [False, True])
def test_a_run_from_python_says_its_threads_errors_then_gives_the_callers_hook_back(
    verbose, caplog
):
    # As on the command line: a worker's end in one line, or with --verbose its
    # traceback, by the caller's own hook; that hook is back after the run, failed too.
    from pipeline import logs

    reached: list[str] = []

    def callers_hook(args: threading.ExceptHookArgs) -> None:
        reached.append(str(args.exc_value))

    saved = threading.excepthook
    threading.excepthook = callers_hook
    try:
        with pytest.raises(RuntimeError, match="the run failed"), logs.threads_watched(verbose):
            _worker_exits(137)
            raise RuntimeError("the run failed")
        after = threading.excepthook
    finally:
        threading.excepthook = saved
    assert after is callers_hook
    assert reached == (["Worker subprocess exited with return code 137"] if verbose else [])
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline"]
    assert said == (
        []
        if verbose
        else [
            "A worker process ended: return code 137 (SIGKILL, killed, as the system kills a "
            "process when memory runs out)."
        ]
    )


def _descendants(pid: int) -> list[int]:
    """The processes below `pid` (children, grandchildren, ...), from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError, IndexError):
            continue
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _running(pid: int) -> bool:
    """Whether process `pid` runs: not ended, nor a zombie whose parent has not reaped it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _command_line(pid: int) -> bytes:
    """Process `pid`'s command line, its arguments NUL-separated (b"" once it has ended)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read()
    except OSError:
        return b""


def _workers(pid: int) -> list[int]:
    """Beam's SDK worker processes of the job `pid`: the shells Beam starts them
    through, and their Pythons."""
    return [child for child in _descendants(pid) if b"sdk_worker_main" in _command_line(child)]


_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


@pytest.fixture
def twelve_images(image_folder) -> dict:
    """`image_folder` and 8 more images in it: 12 images and broken.jpg."""
    rng = np.random.default_rng(11)
    for i in range(8):
        array = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        write_image(Path(image_folder["root"]) / f"more{i}.png", array)
        image_folder["pixels"][f"more{i}.png"] = array
    return image_folder


def _slow_two_worker_args(image_folder, model, output) -> list[str]:
    """The flags of a two-process run of `image_folder` whose every image takes 1024
    one-point gradient calls (`_stop_when_a_worker_progresses`)."""
    return cli_args(
        dataset=image_folder["root"],
        model=model,
        output=output,
        steps=1024,
        tolerance=0,
        path_batch_size=1,
        batch_size=1,
        faithfulness="none",
        direct_running_mode="multi_processing",
        direct_num_workers=2,
    )


def _stop_when_a_worker_progresses(
    image_folder, model, output, stop, *, ctrl_c=False, **popen
) -> tuple[list, int, list]:
    """A two-process run of `twelve_images`, where `stop(job)` runs at a worker's first
    progress line: its command, exit status and stderr lines. Each worker has about 5
    images of 1024 one-point gradient calls left then, more calls than the one image
    of 4096 that 4 images left; the run waits for a first image, and the stop for the
    one under way, 4x shorter. `ctrl_c`: SIGINT at its default in the job
    (`launched`); `popen`: more arguments of its Popen."""
    command = [
        sys.executable,
        "-P",
        "-m",
        "pipeline",
        *_slow_two_worker_args(image_folder, model, output),
    ]
    started = launched(command, ctrl_c=True) if ctrl_c else command
    job = subprocess.Popen(started, stderr=subprocess.PIPE, text=True, env=_ENV, **popen)
    log = []
    for line in job.stderr:
        log.append(line)
        if "progress (this worker)" in line:
            stop(job)
            break
    try:  # before reading the rest: a launcher that hangs holds its stderr open
        status = job.wait(timeout=300)
    except subprocess.TimeoutExpired:
        job.kill()  # its workers end with it (their control connection closes)
        raise
    log += job.stderr.readlines()
    # A full batch's lines, each a worker's own: no job total, percent or ETA.
    progress = [line for line in log if line.startswith("INFO pipeline.progress")]
    assert progress and all(re.fullmatch(_WORKER_LINE, line.rstrip("\n")) for line in progress)
    return command, status, log


def test_a_killed_worker_process_fails_the_run_in_one_line_and_resume_completes_it(
    twelve_images, linear_keras, tmp_path
):
    # Real processes: one worker's Python is SIGKILLed (as the system kills a process
    # out of memory) once one image is done; its shell lives on to say so (137).
    def kill_a_worker(job):
        pythons = [w for w in _workers(job.pid) if not _command_line(w).startswith(b"/bin/sh")]
        os.kill(pythons[0], signal.SIGKILL)

    command, status, log = _stop_when_a_worker_progresses(
        twelve_images, linear_keras, tmp_path / "out", kill_a_worker
    )
    assert status == 1, "".join(log)[-3000:]
    # The other worker, whose part's rows could no longer be used, was killed with it:
    # it logged no more images done (it computed on to its part's end, 5 more lines, in
    # the runs where Beam waited for its part before the killed one's). Two lines at
    # most: each worker may have finished an image as the kill came.
    progress = [line for line in log if "progress (this worker)" in line]
    assert len(progress) <= 2, "".join(log)[-3000:]
    text = "".join(log)
    (error,) = [line for line in log if line.startswith("error:")]
    # 137 where Beam starts the worker through a shell, -9 where directly.
    assert re.fullmatch(
        r"error: the run failed: a worker process ended, return code (137|-9) \(SIGKILL, "
        r"killed, as the system kills a process when memory runs out\)\. Rerun with "
        r"--resume to continue: the rows of every batch it finished are kept\.\n",
        error,
    ), error
    assert "Traceback" not in text, text[-3000:]
    # Its manifest says it failed, in the words of the error line.
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["reason"].startswith("a worker process")
    assert error.startswith(f"error: the run failed: {manifest['reason']}. Rerun"), manifest
    # The resume on two workers too, the path's 1024 points in calls of 512, not 1:
    # the same rows (--path_batch_size changes none, so a resume may change it).
    at = command.index("--path_batch_size") + 1
    command[at : at + 1] = ["512"]
    _resume_here(command)
    rows = pd.read_parquet(tmp_path / "out" / "results", columns=["image_id"])
    assert sorted(rows.image_id) == sorted(i for i in twelve_images["pixels"])


# Two workers of one run, each through a shell: the first to start is Beam's real SDK
# worker, which connects to the launcher and waits for work (as one still at its part
# of a bundle: connected, not told to end); the other waits for the file READY, then
# ends untold (return code 3).
_ONE_CONNECTS_ONE_ENDS = """if mkdir {first} 2>/dev/null; then
  echo $$ > {pid}; exec {python} -m apache_beam.runners.worker.sdk_worker_main
fi
while [ ! -e {ready} ]; do sleep 0.05; done
exit 3"""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_worker_that_ends_untold_kills_its_runs_connected_workers_too(tmp_path):
    # In process, Beam's worker handlers of one run of two real worker processes.
    # Beam waited for the connected worker to end: one at its part of a bundle computed
    # on to the part's end (a minute), one waiting for work, forever.
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.portability import python_urns
    from apache_beam.portability.api import beam_runner_api_pb2
    from apache_beam.runners.portability.fn_api_runner import worker_handlers
    from apache_beam.runners.portability.fn_api_runner.fn_runner import ExtendedProvisionInfo

    from pipeline import logs, stopping

    places = {name: tmp_path / name for name in ("first", "pid", "ready")}
    command = _ONE_CONNECTS_ONE_ENDS.format(python=sys.executable, **places)
    environment = beam_runner_api_pb2.Environment(
        urn=python_urns.SUBPROCESS_SDK, payload=command.encode()
    )
    options = PipelineOptions(["--direct_running_mode=multi_processing"])
    manager = worker_handlers.WorkerHandlerManager({"env": environment}, ExtendedProvisionInfo())
    try:
        with stopping.workers_apart_from_ctrl_c(options):
            handlers = manager.get_worker_handlers("env", 2)
            for _ in range(1200):  # against a hang only: the worker imports Beam
                connected = [h for h in handlers if stopping._has_connected(h.control_conn)]
                if connected:
                    break
                time.sleep(0.05)
            (connected,) = connected
            (ending,) = [h for h in handlers if h is not connected]
            places["ready"].touch()
            ending.worker_thread.join()  # its end handled
            connected.worker_thread.join(timeout=60)  # against a hang only
            assert not connected.worker_thread.is_alive()  # killed: its process has ended
        assert logs.worker_death() == (
            "a worker process ended before it connected to the launcher (it could not "
            "start), return code 3"
        )  # the first end names the failure, not the one it killed
    finally:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            os.kill(int(places["pid"].read_text()), signal.SIGKILL)
        places["ready"].touch()
        manager.close_all()


# A `sitecustomize` that only Beam's worker processes act on (Beam gives them the
# launcher's address in CONTROL_API_SERVICE_DESCRIPTOR): their Python fails to import
# gRPC, as in an environment the workers cannot start in.
_WORKERS_CANNOT_START = """import os, sys
if "CONTROL_API_SERVICE_DESCRIPTOR" in os.environ:
    sys.modules["grpc"] = None
"""


def _with_sitecustomize(tmp_path, text: str, **env: str) -> dict:
    """The tests' environment, with a `sitecustomize` of `text` (and `env`)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(text)
    return {**_ENV, "PYTHONPATH": os.pathsep.join((_ENV["PYTHONPATH"], str(site))), **env}


def test_with_verbose_a_workers_traceback_is_shown_on_lines_of_its_own_once(caplog):
    # A worker's record of a failing DoFn, through Beam's own logging service (the
    # launcher's end of each worker's log stream), as Beam sends it: its message, the
    # error and its traceback; its `trace`, the traceback again. With --verbose it was
    # one line of about 3 kB, each line break a '\\n', the traceback twice.
    from apache_beam.portability.api import beam_fn_api_pb2
    from apache_beam.runners.portability.local_job_service import BeamFnLoggingServicer

    from pipeline import logs

    trace = 'Traceback (most recent call last):\n  File "sinks.py", line 9\nOSError: [Errno 27]\n'
    entry = beam_fn_api_pb2.LogEntry(
        severity=beam_fn_api_pb2.LogEntry.Severity.ERROR,
        message=f"OSError: [Errno 27] [while running 'Write']\n{trace}",
        trace=trace,
        log_location="/venv/site-packages/apache_beam/runners/worker/bundle_processor.py:1",
    )
    # What `configure_logging` sets, put back after: the loggers' levels and filters,
    # the root logger's handlers and theirs, the thread hook.
    job_service = "apache_beam.runners.portability.local_job_service"
    names = ("", *logs._NOISY, logs.DOFN_TRACEBACKS, job_service)
    root, hook = logging.getLogger(), threading.excepthook
    handlers = list(root.handlers)
    kept = [(each, each.level, list(each.filters)) for each in map(logging.getLogger, names)]
    kept += [(each, each.level, list(each.filters)) for each in handlers]
    try:
        logs.configure_logging(verbose=True)
        with caplog.at_level(logging.INFO):
            BeamFnLoggingServicer().Logging([beam_fn_api_pb2.LogEntry.List(log_entries=[entry])])
    finally:
        threading.excepthook, root.handlers[:] = hook, handlers
        for each, level, filters in kept:
            each.setLevel(level)
            each.filters[:] = filters
    (shown,) = caplog.messages
    assert shown.count(trace.strip()) == 1 and "\\n" not in shown, shown
    assert f"message: \"OSError: [Errno 27] [while running 'Write']\n{trace}\"" in shown, shown
    assert "trace:" not in shown and 'log_location: "/venv/site-packages/' in shown, shown


def test_worker_processes_that_cannot_start_fail_the_run_at_once_naming_why(
    image_folder, linear_keras, tmp_path
):
    # Workers that ended before they connected to the launcher left it waiting for
    # them, silent, forever (killed here after 90 s): Beam noticed only the end of a
    # worker connected to it. The run now fails as they end, with their last line.
    output = tmp_path / "out"
    command = _two_workers_command(image_folder, linear_keras, output)
    env = _with_sitecustomize(tmp_path, _WORKERS_CANNOT_START)
    try:
        job = subprocess.run(
            launched(command), stderr=subprocess.PIPE, text=True, env=env, timeout=90
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the launcher still waits after 90 s: {(e.stderr or b'')[-2000:]!r}")
    log = job.stderr.splitlines(keepends=True)
    text = "".join(log)
    assert job.returncode == 1, text[-3000:]
    assert [line for line in log if line.startswith("error:")] == [
        "error: the run failed: a worker process ended before it connected to the launcher "
        "(it could not start), return code 1; its last line: ModuleNotFoundError: import of grpc "
        "halted; None in sys.modules. Rerun with --resume to continue: the rows of every "
        "batch it finished are kept.\n"
    ], text[-3000:]
    # The workers' own traceback still reaches the launcher's stderr, above.
    assert "\n    import grpc\n" in text, text[-3000:]
    assert not (output / ".lock").exists()


# Of the two workers, the first to start hangs as it imports; the other cannot start.
_ONE_HANGS_ONE_CANNOT_START = """import os, sys, time
if "CONTROL_API_SERVICE_DESCRIPTOR" in os.environ:
    try:
        os.close(os.open(os.environ["HANG_MARK"], os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        sys.modules["grpc"] = None
    else:
        time.sleep(3600)
"""


def _processes_with(setting: str) -> list[int]:
    """The processes whose environment holds `setting` ('NAME=value'; this user's)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and setting.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
    return found


def test_a_run_failed_by_one_worker_while_another_hangs_as_it_starts_ends_at_once(
    image_folder, linear_keras, tmp_path
):
    # The worker that could not start failed its part of the bundle as it ended, and
    # the run waited for the hung one's part: silent, forever (the launcher is killed
    # here after 90 s). A worker not connected has done no work: once another's end
    # has failed the run, it is killed, and the error names the first end alone.
    output = tmp_path / "out"
    command = _two_workers_command(image_folder, linear_keras, output)
    mark = tmp_path / "hang_mark"
    env = _with_sitecustomize(tmp_path, _ONE_HANGS_ONE_CANNOT_START, HANG_MARK=str(mark))
    try:
        job = subprocess.run(
            launched(command), stderr=subprocess.PIPE, text=True, env=env, timeout=90
        )
    except subprocess.TimeoutExpired as e:
        for hung in _processes_with(f"HANG_MARK={mark}"):
            os.kill(hung, signal.SIGKILL)
        pytest.fail(f"the launcher still waits after 90 s: {(e.stderr or b'')[-2000:]!r}")
    text = job.stderr
    assert job.returncode == 1, text[-3000:]
    assert mark.exists()  # a worker hung
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: the run failed: a worker process ended before it connected to the launcher "
        "(it could not start), return code 1; its last line: ModuleNotFoundError: import of grpc "
        "halted; None in sys.modules. Rerun with --resume to continue: the rows of every "
        "batch it finished are kept."
    ], text[-3000:]
    assert _processes_with(f"HANG_MARK={mark}") == []  # the hung worker is gone
    # The first end is logged as it happens (the thread hook's one line); the hung
    # worker's, killed for it, is not.
    ends = [line for line in text.splitlines() if "A worker process ended" in line]
    assert ends == ["ERROR pipeline: A worker process ended: return code 1."], text[-3000:]


# Beam's thread that waits on a worker raises when it ends ("Worker subprocess exited
# with return code 1"): a run from Python says it in one line, as the command line
# does, and leaves nothing to the caller's thread hook, here pytest's (it warned).
_NO_THREAD_EXCEPTION_LEFT = pytest.mark.filterwarnings(
    "error::pytest.PytestUnhandledThreadExceptionWarning"
)


@pytest.mark.parametrize("call", [run, launch], ids=["run", "launch"])
def test_a_run_from_python_whose_workers_cannot_start_raises_naming_why(
    call, image_folder, linear_keras, tmp_path, monkeypatch, caplog
):
    # A caller of `pipeline.run` (a notebook's) got Beam's error of the channels it
    # closed, "RuntimeError: Channel closed prematurely.": only the command line said
    # why. The launcher is this process; its workers are real, started by Beam.
    # Beam's thread that waited on each worker raised as it ended, and the caller's
    # thread hook printed that traceback beside the error: now one line through the
    # "pipeline" logger, as on the command line, and the caller's own hook (here one
    # that records what reaches it, as a notebook's own would) is back after the run.
    reached: list[str] = []

    def callers_hook(args: threading.ExceptHookArgs) -> None:
        reached.append(f"{args.thread.name if args.thread else '?'}: {args.exc_value}")

    monkeypatch.setattr(threading, "excepthook", callers_hook)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    command = _two_workers_command(image_folder, linear_keras, tmp_path / "out")
    monkeypatch.setenv(
        "PYTHONPATH", _with_sitecustomize(tmp_path, _WORKERS_CANNOT_START)["PYTHONPATH"]
    )
    with pytest.raises(RuntimeError) as caught:
        call(command[4:], save_main_session=False)
    assert str(caught.value) == (
        "The run failed: a worker process ended before it connected to the launcher (it could "
        "not start), return code 1; its last line: ModuleNotFoundError: import of grpc halted; "
        "None in sys.modules. Rerun with --resume to continue: the rows of every batch it "
        "finished are kept."
    )
    assert threading.excepthook is callers_hook
    assert reached == []
    ends = [r.getMessage() for r in caplog.records if "A worker process ended" in r.getMessage()]
    assert ends == ["A worker process ended: return code 1."], caplog.text[-3000:]
    assert (root.handlers, root.level) == (handlers, level)  # the caller's logging as it was


@_NO_THREAD_EXCEPTION_LEFT
def test_a_run_from_python_whose_workers_are_killed_raises_naming_how_they_ended(
    twelve_images, linear_keras, tmp_path
):
    # As above, once they have connected and finished an image: SIGKILLed, as the
    # system kills a process out of memory. A thread here kills this run's workers.
    output = tmp_path / "out"
    args = _slow_two_worker_args(twelve_images, linear_keras, output)
    killed = []

    def kill_once_an_image_is_done() -> None:
        for _ in range(3000):  # five minutes at most
            if list((output / ".tmp" / "checkpoints").rglob("*.parquet")):
                break
            time.sleep(0.1)
        for worker in _workers(os.getpid()):
            os.kill(worker, signal.SIGKILL)
            killed.append(worker)

    killer = threading.Thread(target=kill_once_an_image_is_done, daemon=True)
    killer.start()
    with pytest.raises(RuntimeError) as caught:
        run(args, save_main_session=False)
    killer.join(timeout=60)
    assert killed
    assert re.fullmatch(
        r"The run failed: a worker process ended, return code (137|-9) \(SIGKILL, killed, as "
        r"the system kills a process when memory runs out\)\. Rerun with --resume to "
        r"continue: the rows of every batch it finished are kept\.",
        str(caught.value),
    ), str(caught.value)


# A `sitecustomize` whose workers hang as they start, as on an import that waits
# forever: each writes its pid in a file named so in HUNG_WORKERS, holding its
# parent's (the shell Beam starts it through), then sleeps.
_WORKERS_HANG = """import os, time
if "CONTROL_API_SERVICE_DESCRIPTOR" in os.environ:
    with open(os.path.join(os.environ["HUNG_WORKERS"], str(os.getpid())), "w") as f:
        f.write(str(os.getppid()))
    while True:
        time.sleep(60)
"""
_LATE = re.compile(
    r"(1 worker process has|2 worker processes have) not connected to the launcher 1 s after "
    r"(it|they) started; the run waits for (it|them) \(a start is mostly TensorFlow's import, "
    r"5-20 s\)\. One hung as it starts is waited for forever: Ctrl-C or SIGTERM stops the run, "
    r"and --resume continues it\."
)


@_NO_THREAD_EXCEPTION_LEFT
def test_workers_not_connected_long_after_they_started_are_said_to_be_late(
    image_folder, linear_keras, tmp_path, monkeypatch, caplog
):
    # Workers hung as they start were waited for, silent: nothing tells a hung start
    # from a slow one. A line says so once they are late (here 1 s, not 120), and
    # what stops the run. This process is the launcher; its thread kills the workers
    # once both are said to be late, which fails the run.
    from pipeline import stopping

    monkeypatch.setattr(stopping, "LATE_START_S", 1.0)
    hung = tmp_path / "hung"
    hung.mkdir()
    command = _two_workers_command(image_folder, linear_keras, tmp_path / "out")
    env = _with_sitecustomize(tmp_path, _WORKERS_HANG, HUNG_WORKERS=str(hung))
    for name in ("PYTHONPATH", "HUNG_WORKERS"):
        monkeypatch.setenv(name, env[name])
    said: list[str] = []

    def kill_once_both_are_late() -> None:
        for _ in range(1200):  # two minutes at most
            said[:] = [r.getMessage() for r in caplog.records if r.name == "pipeline.stopping"]
            if sum(int(line[0]) for line in said) >= 2:
                break
            time.sleep(0.1)
        for worker in _workers(os.getpid()):
            os.kill(worker, signal.SIGKILL)

    killer = threading.Thread(target=kill_once_both_are_late, daemon=True)
    killer.start()
    with caplog.at_level(logging.WARNING, logger="pipeline.stopping"):
        with pytest.raises(RuntimeError) as caught:
            run(command[4:], save_main_session=False)
    killer.join(timeout=60)
    assert len(list(hung.iterdir())) == 2  # both hung, not slow: each wrote its pid
    assert said and all(_LATE.fullmatch(line) for line in said), said
    assert sum(int(line[0]) for line in said) == 2, said  # each worker said once
    assert re.fullmatch(
        r"The run failed: a worker process ended before it connected to the launcher \(it "
        r"could not start\), return code (137|-9) \(SIGKILL, .*",
        str(caught.value),
    ), str(caught.value)


def _resume_here(command: list[str], *more: str) -> None:
    """The `--resume` of the stopped run of `command` (`python -P -m pipeline ...`),
    with `more` flags (later ones win), launched from this process: its worker
    processes, if it runs on some, are real, started by Beam as the command's are; the
    launcher's start-up (Beam and TensorFlow imported again) is saved."""
    manifest = run([*command[4:], "--resume", *more], save_main_session=False)
    assert manifest["status"] == "complete" and manifest["all_inputs_accounted_for"], manifest


def _sigterm(job) -> None:
    os.kill(job.pid, signal.SIGTERM)


def _ctrl_c_at_a_terminal(job) -> None:
    # A terminal sends it to its foreground process group: the job's, which it leads.
    os.killpg(job.pid, signal.SIGINT)


def _ignores_sigint(pid: int) -> bool:
    """Whether process `pid` ignores SIGINT (SIG_IGN: its SigIgn mask in /proc)."""
    with open(f"/proc/{pid}/status") as status:
        ignored = next(line for line in status if line.startswith("SigIgn:"))
    return bool(int(ignored.split()[1], 16) & 1 << (signal.SIGINT - 1))


def _ctrl_c_twice(job) -> None:
    # The second while the launcher stops its workers: it cut that short, a worker
    # went on and the launcher hung at exit until killed. The workers are paused
    # (SIGSTOP) across both, so that the stop lasts until the second has come (a
    # worker ends within a second of the first now); the second comes once the
    # launcher has taken the first (it ignores SIGINT from then on while it stops).
    workers = _workers(job.pid)
    for worker in workers:
        os.kill(worker, signal.SIGSTOP)
    try:
        _ctrl_c_at_a_terminal(job)
        deadline = time.monotonic() + 60
        while not _ignores_sigint(job.pid):
            assert job.poll() is None, "the launcher ended before the second Ctrl-C"
            assert time.monotonic() < deadline, "Ctrl-C not ignored while the workers stop"
            time.sleep(0.01)
        _ctrl_c_at_a_terminal(job)
    finally:
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.kill(worker, signal.SIGCONT)


_INTERRUPTED = "error: interrupted; rerun with --resume to continue.\n"
_TERMINATED = "error: stopped by SIGTERM; rerun with --resume to continue.\n"
# Once the manifest says "complete": the run is not cut short ({} is --output); its
# failed image (`image_folder`'s broken.jpg) is what a --resume would retry.
_COMPLETE = (
    "after the run completed; its results are in {} "
    "(1 image failed, its error in errors/: --resume retries it).\n"
)
_INTERRUPTED_COMPLETE = "error: interrupted " + _COMPLETE
_TERMINATED_COMPLETE = "error: stopped by SIGTERM " + _COMPLETE


@pytest.mark.parametrize(
    "stop, status, error",
    [
        (_sigterm, 143, _TERMINATED),
        (_ctrl_c_at_a_terminal, 130, _INTERRUPTED),
        (_ctrl_c_twice, 130, _INTERRUPTED),
    ],
)
def test_a_stop_ends_a_multi_process_run_and_its_workers_without_their_tracebacks(
    twelve_images, linear_keras, tmp_path, stop, status, error
):
    # Stopped by SIGTERM (`kill`, `timeout`, a scheduler), the launcher died at once
    # before: its workers, cut off, printed pages of gRPC tracebacks as they ended.
    # A Ctrl-C at a terminal reached each worker too: pages of KeyboardInterrupt and
    # gRPC tracebacks, 'A worker process ended: return code -2 (SIGINT)' lines.
    workers = []

    def stop_the_job(job):
        workers.extend(_workers(job.pid))
        stop(job)

    _, code, log = _stop_when_a_worker_progresses(
        twelve_images,
        linear_keras,
        tmp_path / "out",
        stop_the_job,
        ctrl_c=True,
        process_group=0,
    )
    assert code == status, "".join(log)[-3000:]
    text = "".join(log)
    assert [line for line in log if line.startswith("error:")] == [error], text[-3000:]
    # Its manifest says it was stopped, in the words of the error line.
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "stopped" and error.startswith(f"error: {manifest['reason']};")
    # Beam's and the workers' records, not TensorFlow's native start-up lines, which the
    # tests' TF_CPP_MIN_LOG_LEVEL 2 shows ("E0000 ... failed call to cuInit" where
    # a machine has no GPU driver).
    python = "".join(line for line in log if not re.match(r"[EWIF]\d{4} ", line))
    assert "Traceback" not in python and "ERROR" not in python, text[-3000:]
    deadline = time.monotonic() + 60  # the launcher stopped them; they may still be exiting
    while [w for w in workers if _running(w)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers and not [w for w in workers if _running(w)]


def _workers_started(job, output) -> bool:
    """Beam has started the run's worker processes (they take seconds to connect)."""
    return bool(_workers(job.pid))


def _run_complete(job, output) -> bool:
    """The run's last stage has written its manifest: the launcher stops its workers."""
    try:
        return json.loads((output / "manifest.json").read_text())["status"] == "complete"
    except (OSError, ValueError, KeyError):
        return False


def _two_workers_command(image_folder, model, output) -> list[str]:
    """The command line of a two-process run of `image_folder` into `output`."""
    args = cli_args(
        dataset=image_folder["root"],
        model=model,
        output=output,
        steps=2,
        direct_running_mode="multi_processing",
        direct_num_workers=2,
    )
    return [sys.executable, "-P", "-m", "pipeline", *args]


def _stoppable(command: list[str], env: dict) -> subprocess.Popen:
    """`command` started as at a terminal, in a process group it leads: stopped by
    `_sigterm` or `_ctrl_c_at_a_terminal`, its stderr piped."""
    return subprocess.Popen(
        launched(command, ctrl_c=True), stderr=subprocess.PIPE, text=True, env=env, process_group=0
    )


def _wait_for(moment, job, output) -> None:
    while not moment(job, output):
        assert job.poll() is None, "the run ended before the moment to stop it"
        time.sleep(0.01)


@pytest.mark.parametrize(
    "moment, settle, stop, status, error, resume",
    [
        (_workers_started, 0, _ctrl_c_at_a_terminal, 130, _INTERRUPTED, True),
        (_run_complete, 0.2, _ctrl_c_at_a_terminal, 130, _INTERRUPTED_COMPLETE, False),
        (_run_complete, 0.2, _sigterm, 143, _TERMINATED_COMPLETE, False),
    ],
    ids=["ctrl_c_as_workers_start", "ctrl_c_as_workers_stop", "sigterm_as_workers_stop"],
)
def test_a_stop_while_beam_starts_or_stops_the_workers_ends_the_run(
    image_folder, linear_keras, tmp_path, moment, settle, stop, status, error, resume
):
    # A Ctrl-C before a worker had connected to the launcher, or while the launcher
    # stopped its workers after the last stage, hung the launcher (Ctrl-C ignored by
    # then) with a worker left running: Beam waited for a worker it never told to
    # stop (a worker not connected yet is now killed by the stop: it has done no work).
    # The workers are paused (SIGSTOP) across the stop, so that it lands there.
    # That stop, after the manifest said "complete", also said to resume a complete run
    # and left its `.tmp/` and schema file: it now tidies up and says the run completed.
    output = tmp_path / "out"
    command = _two_workers_command(image_folder, linear_keras, output)
    job = _stoppable(command, _ENV)
    try:
        _wait_for(moment, job, output)
        time.sleep(settle)
        workers = _workers(job.pid)
        for worker in workers:
            os.kill(worker, signal.SIGSTOP)
        stop(job)
        time.sleep(1)
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):  # one not connected: killed by it
                os.kill(worker, signal.SIGCONT)
        code = job.wait(timeout=60)
        deadline = time.monotonic() + 10  # ended by the launcher; they may still be exiting
        while [w for w in workers if _running(w)] and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [w for w in workers if _running(w)]
    finally:  # a hung launcher: ended with its workers, before its stderr is read
        for pid in [*_descendants(job.pid), job.pid]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    log = job.stderr.readlines()
    text = "".join(log)
    assert code == status, text[-3000:]
    errors = [line for line in log if line.startswith("error:")]
    assert errors == [error.format(output)], text[-3000:]
    python = "".join(line for line in log if not re.match(r"[EWIF]\d{4} ", line))
    assert "Traceback" not in python and "ERROR" not in python, text[-3000:]
    assert workers and not left
    manifest = json.loads((output / "manifest.json").read_text())
    if moment is _run_complete:  # tidied up as after a run no stop reached
        assert not (output / ".tmp").exists() and not (output / ".lock").exists()
        assert not (output / "results" / "part-schema.parquet").exists()
        assert manifest["status"] == "complete"  # the stop came after: never overwritten
    else:
        assert (manifest["status"], manifest["reason"]) == ("stopped", "interrupted")
    if not resume:
        return
    # The stopped run's resume, in this process alone: resumes on two worker processes
    # are the killed-worker test's (its salvage of their checkpoints too).
    _resume_here(command, *cli_args(direct_running_mode="in_memory", direct_num_workers=1))
    rows = pd.read_parquet(output / "results", columns=["image_id"])
    assert sorted(rows.image_id) == sorted(image_folder["pixels"])


def test_a_second_sigterm_while_the_workers_stop_ends_the_launcher_at_once(
    image_folder, linear_keras, tmp_path
):
    # The first SIGTERM while the launcher closes its workers waits for them to end;
    # a second must not: a worker that never ends (paused here, SIGSTOP) would hold
    # the launcher, Ctrl-C ignored by then, with nothing left to end it but SIGKILL.
    output = tmp_path / "out"
    command = _two_workers_command(image_folder, linear_keras, output)
    job = subprocess.Popen(command, stderr=subprocess.DEVNULL, env=_ENV, process_group=0)
    workers = []
    try:
        _wait_for(_run_complete, job, output)
        time.sleep(0.2)
        workers = _workers(job.pid)
        for worker in workers:
            os.kill(worker, signal.SIGSTOP)
        _sigterm(job)
        time.sleep(1)
        assert job.poll() is None  # the first: held until every worker is closed
        _sigterm(job)
        code = job.wait(timeout=30)
    finally:  # the paused workers too, no longer the launcher's once it has ended
        for pid in [*workers, *_descendants(job.pid), job.pid]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    assert code == -signal.SIGTERM


@pytest.mark.parametrize(
    "stop, status, error",
    [(_sigterm, 143, _TERMINATED), (_ctrl_c_at_a_terminal, 130, _INTERRUPTED)],
    ids=["sigterm", "ctrl_c"],
)
def test_a_stop_ends_a_run_whose_workers_hang_as_they_start_and_kills_them(
    image_folder, linear_keras, tmp_path, stop, status, error
):
    # The stop waited for them to connect to tell them to end: the launcher was still
    # there 40 s after a SIGTERM, and a second SIGTERM left them running.
    hung = tmp_path / "hung"
    hung.mkdir()
    output = tmp_path / "out"
    command = _two_workers_command(image_folder, linear_keras, output)
    job = _stoppable(command, _with_sitecustomize(tmp_path, _WORKERS_HANG, HUNG_WORKERS=str(hung)))
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(list(hung.iterdir())) < 2:
            assert job.poll() is None and time.monotonic() < deadline, "no worker hung"
            time.sleep(0.1)
        pids = [int(p) for f in hung.iterdir() for p in (f.name, f.read_text())]
        stop(job)
        try:
            code = job.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the launcher still waits for its hung workers 60 s after the stop")
        deadline = time.monotonic() + 10  # killed by the launcher; they may still be exiting
        while [p for p in pids if _running(p)] and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [p for p in pids if _running(p)]
    finally:  # a hung launcher, and what it left
        for pid in [*pids, *_descendants(job.pid), job.pid]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    log = job.stderr.readlines()
    text = "".join(log)
    assert code == status, text[-3000:]
    assert [line for line in log if line.startswith("error:")] == [error], text[-3000:]
    python = "".join(line for line in log if not re.match(r"[EWIF]\d{4} ", line))
    assert "Traceback" not in python and "ERROR" not in python, text[-3000:]
    assert not left, f"still running: {left} of the workers and their shells {pids}"
    assert not (output / ".lock").exists()


@pytest.mark.parametrize(
    "renamed",
    [
        ("apache_beam.runners.portability.local_job_service", "SubprocessSdkWorker"),
        ("apache_beam.runners.portability.fn_api_runner.worker_handlers", "ControlConnection.push"),
    ],
)
def test_a_beam_whose_runner_differs_is_left_as_it_is(renamed, monkeypatch):
    # The check of Beam's runner looked at its control servicer only: a Beam without
    # one of the other names the patches replace ended every multi-process run as it
    # started, in an AttributeError.
    import importlib

    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    from pipeline import stopping

    module, name = renamed
    target = importlib.import_module(module)
    owner, _, attribute = name.rpartition(".")
    monkeypatch.delattr(getattr(target, owner) if owner else target, attribute)
    close = worker_handlers.ControlConnection.close
    options = PipelineOptions(["--direct_running_mode=multi_processing"])
    with stopping.workers_apart_from_ctrl_c(options):
        assert worker_handlers.ControlConnection.close is close  # not changed
