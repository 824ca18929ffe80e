"""One --output, several runs: real `python -m pipeline` processes, stopped and killed by pid."""

import contextlib
import errno
import html
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from pipeline import run
from pipeline.__main__ import main
from pipeline.report import build_report
from tests.conftest import (
    SIZE,
    cli_args,
    has_loaded,
    launched,
    make_image_folder,
    write_image,
)
from transforms.results import read_results
from transforms.schema import ERROR_SCHEMA

_REPO = Path(__file__).resolve().parents[1]


def _start_job(
    log: Path, *args: str, file_size_limit: int | None = None, site: Path | None = None
) -> subprocess.Popen:
    """`python -m pipeline *args` started (`launched`: its `file_size_limit` too), its
    output going to the file `log` (its `log`): an unread pipe fills up and blocks a
    chatty job. `site`: a folder on its PYTHONPATH too (a `sitecustomize` there)."""
    path = os.pathsep.join(str(folder) for folder in (_REPO, site) if folder is not None)
    env = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "pipeline", *args]
    with open(log, "w") as sink:
        process = subprocess.Popen(
            launched(command, ctrl_c=True, file_size_limit=file_size_limit),
            cwd=_REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    process.log = log
    return process


@pytest.fixture
def jobs(tmp_path):
    """Starts `python -m pipeline` processes (`_start_job`, each its own log file);
    kills any still running when the test ends."""
    started = []

    def start(
        *args: str, file_size_limit: int | None = None, site: Path | None = None
    ) -> subprocess.Popen:
        log = tmp_path / f"job{len(started)}.log"
        started.append(_start_job(log, *args, file_size_limit=file_size_limit, site=site))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()  # a stopped process dies of SIGKILL too
            process.wait()


def _command(flags: list[str], file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    """`python -m pipeline FLAGS` as typed, in a process of its own (`launched`, with its
    `file_size_limit`): the finished process, its output captured."""
    return subprocess.run(
        launched([sys.executable, "-m", "pipeline", *flags], file_size_limit=file_size_limit),
        cwd=_REPO,
        env={**os.environ, "PYTHONPATH": str(_REPO), "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if process.poll() is not None:
            pytest.fail(
                f"the job ended (exit {process.returncode}) before {what}: "
                f"{process.log.read_text()[-2000:]}"
            )
        time.sleep(0.01)
    process.kill()
    pytest.fail(f"no {what} within {timeout} s")


def _temp_parquet(output: Path) -> list[Path]:
    """Parquet files being written, wherever the sink keeps them."""
    return [p for p in output.rglob("*") if p.is_file() and "beam-temp" in str(p)]


def _eighty_images(root: Path) -> Path:
    """80 images and a broken file in `root` (the same each time)."""
    rng = np.random.default_rng(21)
    for i in range(80):  # a kill after the first batches leaves most of them to do
        write_image(root / f"{i:03d}.png", rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    (root / "broken.png").write_bytes(b"not a png")
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    return _eighty_images(tmp_path / "images")


def _flags_80(folder: Path, model: str, out: Path) -> list[str]:
    """The flags of the runs of `_eighty_images` that are stopped or killed here, into
    `out`: a checkpoint every 2 images; no map, no faithfulness curve (none is read)."""
    flags = cli_args(
        dataset=folder, model=model, output=out, steps=2, attributions="none", batch_size=2
    )
    return [*flags, "--faithfulness", "none"]


@pytest.fixture(scope="module")
def killed(tmp_path_factory, linear_keras):
    """A real `python -m pipeline` run of `_eighty_images` (`_flags_80`) SIGKILLed
    once 2 batches were checkpointed, made once a module (one TensorFlow start-up for
    the tests that read or go on from what it left): `killed["folder"]`, its images,
    `killed["flags"](out)`, its flags into `out`, and `killed["copy"](out)` puts a copy
    of its --output folder (its lock, of the dead `killed["pid"]`, too) in `out`, for a
    test to change."""
    where = tmp_path_factory.mktemp("killed")
    folder, out = _eighty_images(where / "images"), where / "out"
    first = _start_job(where / "job.log", *_flags_80(folder, linear_keras, out))
    try:
        checkpoints = out / ".tmp" / "checkpoints"
        _wait_for(lambda: len(list(checkpoints.rglob("*.parquet"))) >= 2, first, "2 checkpoints")
    finally:
        first.kill()
        first.wait(timeout=60)

    def copy(to: Path) -> None:
        shutil.copytree(out, to, symlinks=True)

    return {
        "folder": folder,
        "pid": first.pid,
        "flags": lambda to: _flags_80(folder, linear_keras, to),
        "copy": copy,
    }


def _all_stopped(pid: int) -> bool:
    """Whether every thread of process `pid` is stopped (by a signal): it writes nothing."""
    states = []
    for task in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            states.append(task.read_text().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(state == "T" for state in states)


def _files(folder: Path) -> dict[str, bytes]:
    """Each file under `folder` (by its path there) and its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _assert_resumed_80(out: Path, manifest: dict, kept: pd.DataFrame) -> Path:
    """A --resume of a run of the 80-image folder (one broken file) that ended unfinished
    with the rows `kept` checkpointed: those salvaged, not computed again, the rest
    computed, each image once (`manifest`: the resume's); the salvage's file."""
    counts = manifest["counts"]
    assert counts["skipped_done_before"] == len(kept)  # salvaged, not computed again
    assert counts["images_with_rows"] == 80 - len(kept) and counts["images_with_errors"] == 1
    rows = pd.read_parquet(out / "results")
    assert rows.image_id.is_unique and len(rows) == 80
    (salvaged,) = (out / "results").glob("part-salvaged*.parquet")
    assert sorted(pd.read_parquet(salvaged).image_id) == sorted(kept.image_id)
    return salvaged


def test_a_killed_run_keeps_the_rows_of_its_finished_batches(killed, tmp_path):
    # Beam's sink finalizes rows only when a run ends; the checkpoint files, written
    # as batches end, are what a --resume keeps of a killed run.
    out = tmp_path / "out"
    killed["copy"](out)
    flags, checkpoints = killed["flags"](out), out / ".tmp" / "checkpoints"
    # Nothing could say that it ended: its manifest is the one of a run still running.
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "running" and "end_time" not in manifest
    page = build_report(str(out), gallery=0)  # the folder as the killed run left it
    assert (
        "This run did not finish (status running): it was killed, or it is still running."
        in _as_read(page)
    )
    kept = pd.concat([pd.read_parquet(p) for p in checkpoints.rglob("*.parquet")])
    assert kept.image_id.is_unique and len(kept) >= 4
    # Nothing finalized, yet results/ reads with every column (the run's schema-only file).
    meta = pd.read_parquet(out / "results", columns=["file_name"])
    assert meta.empty and list(meta.columns) == ["file_name"]
    query = f"SELECT count(*), any_value(relative_delta) FROM '{out}/results/*.parquet'"
    assert duckdb.sql(query).fetchall() == [(0, None)]
    with pytest.warns(UserWarning, match="has not finished"):  # a real killed run's
        assert read_results(str(out)).empty
    # The page of the killed run says where its finished images are, and how to keep them.
    assert "result rows yet (they are written when a run ends)" in page
    assert (
        f"The rows of the {kept.image_id.nunique()} images it finished sit in its checkpoints"
        in page
    )

    # The dead run's lock is stale (its pid is gone): a resume takes it over and finishes
    # (through the command line's entry point, in this process: a TensorFlow start-up less).
    assert json.loads((out / ".lock").read_text())["pid"] == killed["pid"]
    assert main([*flags, "--resume"]) == 0
    salvaged = _assert_resumed_80(out, json.loads((out / "manifest.json").read_text()), kept)
    assert list(pd.read_parquet(out / "errors").image_id) == ["broken.png"]
    assert not (out / "results" / "part-schema.parquet").exists()  # the others give the schema
    assert not (out / ".lock").exists() and not _temp_parquet(out)  # released at the end
    # The page names the file holding the killed run's rows: the resume's salvage, not
    # `part-*` (every file of the folder), where the killed run wrote none.
    page = build_report(str(out), gallery=0)
    assert f'in <span class="mono">results/{salvaged.name}</span>' in page
    assert "results/part-*.parquet" not in page
    assert not checkpoints.exists() and not (out / ".tmp").exists()


def _page_text(output: Path) -> str:
    """The text of the report page of the run in `output`, as read (`_as_read`)."""
    return _as_read(build_report(str(output), gallery=0))


def _as_read(page: str) -> str:
    """The text of the report page `page`, as read (tags and entities gone)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def _checkpointed(output: Path) -> pd.DataFrame:
    """The rows in the checkpoints of the runs in `output` (`.tmp/checkpoints/`)."""
    found = sorted((output / ".tmp" / "checkpoints").rglob("*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in found]) if found else pd.DataFrame()


def test_a_run_that_fails_says_so_in_its_manifest_and_a_resume_keeps_its_rows(
    folder, linear_keras, tmp_path, jobs
):
    """A run that fails while its process can still write ended with its manifest
    "running", as a killed run's (it is "failed" now, with its end time and the error
    line's reason); a --resume salvages it as a killed run's. The failure is a real one:
    the results shard (80 rows, about 18 kB) cannot grow past the process's file-size
    limit, where each checkpoint (2 rows, about 11 kB), the lock and the manifest fit."""
    out = tmp_path / "out"
    flags = _flags_80(folder, linear_keras, out)
    first = jobs(*flags, file_size_limit=16_000)
    assert first.wait(timeout=300) == 1
    log = first.log.read_text()
    (line,) = [line for line in log.splitlines() if line.startswith("error:")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed", log[-3000:]
    assert "File too large" in manifest["reason"]
    assert line.startswith(f"error: the run failed: {manifest['reason']} (rerun with --verbose")
    assert manifest["start_time"] < manifest["end_time"] and "counts" not in manifest
    assert not (out / ".lock").exists()
    kept = _checkpointed(out)
    assert kept.image_id.is_unique and len(kept) >= 2
    page = _page_text(out)
    assert (
        f"This run did not finish (status failed): it failed: {manifest['reason']}. "
        "Its manifest has no counts"
    ) in page
    assert "it was killed" not in page and "Rerun it with --resume to finish it." in page
    assert "it has no result rows (they are written when a run ends)" in page  # no "yet"

    assert main([*flags, "--resume"]) == 0  # in this process: a TensorFlow start-up less
    resumed = json.loads((out / "manifest.json").read_text())
    _assert_resumed_80(out, resumed, kept)
    (earlier,) = resumed["earlier_runs"]
    assert (earlier["status"], earlier["reason"]) == ("failed", manifest["reason"])


# A Ctrl-C, and SIGTERM (`kill`, `timeout`, a scheduler's stop), which the job takes
# as a Ctrl-C: the same clean-up and message (it died without a word), exit 143.
_STOPS = [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "stopped by SIGTERM")]


def _assert_holds_its_output(first: subprocess.Popen, flags: list[str], capsys, jobs) -> None:
    """The run of `first` (`flags`), under way, holds its --output: held still (stopped,
    not dead), another run's, a --resume's and an --overwrite's refusals name it, and
    leave its files as they were. It is left stopped."""
    out = Path(flags[flags.index("--output") + 1])
    lock = out / ".lock"
    # The lock comes first, then the run's manifest: both there, the run is under way.
    _wait_for(lambda: (out / "manifest.json").exists(), first, "manifest")
    os.kill(first.pid, signal.SIGSTOP)
    _wait_for(lambda: _all_stopped(first.pid), first, "the job stopped")
    held = json.loads(lock.read_text())
    assert (held["pid"], held["host"]) == (first.pid, socket.gethostname())
    assert held["run_id"] and held["start_time"]
    before = _files(out)
    other = jobs(*flags)
    other.wait(timeout=180)
    output = other.log.read_text()
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert other.returncode == 2, output[-2000:]
    assert len(lines) == 1 and "is in use by run " + held["run_id"] in lines[0]
    assert f"pid {first.pid}" in lines[0]
    # --resume and --overwrite (the two that mixed or deleted rows) through the same
    # command-line entry point, in this process to save two TensorFlow start-ups.
    for extra in ("--resume", "--overwrite"):
        capsys.readouterr()
        assert main([*flags, extra]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("error:") and "is in use by run " + held["run_id"] in line
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["run_id"] == held["run_id"]
    assert _files(out) == before  # the stopped run's files, as the three refusals found them


@pytest.mark.parametrize("stop, status, said", _STOPS)
def test_a_live_run_holds_its_output_and_a_stop_says_how_to_go_on_and_a_resume_completes_it(
    stop, status, said, folder, linear_keras, tmp_path, capsys, jobs
):
    """A run under way holds its --output (checked once, in the Ctrl-C's case: how the
    run is stopped later changes nothing before); stopped, it says how to go on, and a
    --resume completes it. (Its lock once it is dead, stale, taken over by a --resume:
    test_a_killed_run_keeps_the_rows_of_its_finished_batches.)"""
    out = tmp_path / "out"
    flags = _flags_80(folder, linear_keras, out)
    first = jobs(*flags)
    if stop == signal.SIGINT:
        _assert_holds_its_output(first, flags, capsys, jobs)
        os.kill(first.pid, signal.SIGCONT)
    checkpoints = out / ".tmp" / "checkpoints"
    _wait_for(lambda: list(checkpoints.rglob("*.parquet")), first, "a checkpoint")
    os.kill(first.pid, stop)
    assert first.wait(timeout=120) == status
    log = first.log.read_text()
    lines = [line for line in log.splitlines() if line.startswith("error:")]
    assert lines == [f"error: {said}; rerun with --resume to continue."], log[-3000:]
    assert "Traceback" not in log and not (out / ".lock").exists()
    # Its manifest says it was stopped, and how (it said "running", as a killed run's).
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["status"], manifest["reason"]) == ("stopped", said)
    assert manifest["start_time"] < manifest["end_time"] and "counts" not in manifest
    assert f"This run did not finish (status stopped): it was {said}. " in _page_text(out)
    kept = _checkpointed(out)
    assert main([*flags, "--resume"]) == 0  # in this process: a TensorFlow start-up less
    rows, errors = pd.read_parquet(out / "results"), pd.read_parquet(out / "errors")
    assert rows.image_id.is_unique and len(rows) == 80 and list(errors.image_id) == ["broken.png"]
    resumed = json.loads((out / "manifest.json").read_text())
    assert resumed["counts"]["skipped_done_before"] == kept.image_id.nunique() >= 2


def test_a_ctrl_c_while_a_run_from_python_runs_is_a_keyboard_interrupt(
    image_folder, linear_keras, tmp_path, monkeypatch
):
    """A notebook's interrupt (SIGINT) lands in the DoFn the in-process DirectRunner
    runs: Beam re-raised it as RuntimeError('KeyboardInterrupt [while running ...]'),
    which an `except KeyboardInterrupt` of the notebook's did not catch."""
    import transforms.attribution as attribution

    real, calls = attribution.attribute_batch, []

    def ctrl_c_at_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    out = tmp_path / "out"
    flags = [*job_flags(image_folder, linear_keras, out), "--batch_size", "1"]
    monkeypatch.setattr(attribution, "attribute_batch", ctrl_c_at_the_second_batch)
    # As in a notebook: tests run as a background job start with SIGINT ignored.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt) as interrupted:
            run(flags, save_main_session=False)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
    assert str(interrupted.value) == "interrupted; rerun with --resume to continue."
    monkeypatch.undo()
    assert not (out / ".lock").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["status"], manifest["reason"]) == ("stopped", "interrupted")
    resumed = run([*flags, "--resume"], save_main_session=False)
    assert resumed["counts"]["skipped_done_before"] >= 1
    assert sorted(pd.read_parquet(out / "results").image_id) == sorted(image_folder["pixels"])


@pytest.mark.parametrize(
    "entry, broken", [("run", True), ("launch", True), ("run", False)], ids=["run", "launch", "ok"]
)
def test_a_ctrl_c_once_the_run_completed_tidies_it_and_says_it_completed(
    entry, broken, image_folder, linear_keras, tmp_path, monkeypatch
):
    """A stop after the last stage wrote the manifest "complete" (here as the launcher
    tidies up) said 'interrupted; rerun with --resume to continue.' of a complete run,
    and left its `.tmp/` and `results/part-schema.parquet` to a later --resume; from
    `launch` (a library caller's), as from `run`. It then said "nothing to resume" of
    a run with a failed image too, which a --resume retries (the summary that says it
    failed is not printed)."""
    import pipeline.main as job
    from pipeline import output_folder

    real, calls = output_folder._drop_checkpoints, []

    def ctrl_c_as_the_tidy_up_starts(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    out = tmp_path / "out"
    if not broken:
        (Path(image_folder["root"]) / "broken.jpg").unlink()
    monkeypatch.setattr(output_folder, "_drop_checkpoints", ctrl_c_as_the_tidy_up_starts)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt) as interrupted:
            getattr(job, entry)(job_flags(image_folder, linear_keras, out), save_main_session=False)
    finally:
        signal.signal(signal.SIGINT, before)
    left = "1 image failed, its error in errors/: --resume retries it" if broken else ""
    assert str(interrupted.value) == (
        f"interrupted after the run completed; its results are in {out} "
        f"({left or 'nothing to resume'})."
    )
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert not (out / ".tmp").exists() and not (out / ".lock").exists()
    assert [f.name for f in (out / "results").iterdir()] == ["part-00000-of-00001.parquet"]
    assert len(pd.read_parquet(out / "results")) == 4


# `python -c` of the job, stopped by the signal named by argv[1] ("none": not stopped)
# as its tidy-up starts, once its manifest says "complete"; with argv[2] "lose-a-count",
# one image's count is lost (a fault the job's check catches: `all_inputs_accounted_for`
# false). The job's flags follow.
_STOPPED_AT_TIDY_UP = """
import os, signal, sys
import pipeline.main as job
import pipeline.output_folder as output_folder
from pipeline.__main__ import main_exit

count, counted = job._images_with, []
def one_image_uncounted(outcome):
    counted.append(outcome)
    return count(outcome) if len(counted) > 1 else []
if sys.argv[2] == "lose-a-count":
    job._images_with = one_image_uncounted
stop, drop = getattr(signal, sys.argv[1], None), output_folder._drop_checkpoints
stopped = []
def stop_as_the_tidy_up_starts(*args):
    if stop is not None and not stopped:  # once: the stop's clean-up tidies again
        stopped.append(stop)
        os.kill(os.getpid(), stop)
    return drop(*args)
output_folder._drop_checkpoints = stop_as_the_tidy_up_starts
sys.argv = ["pipeline", *sys.argv[3:]]
main_exit()
"""


def _stopped_at_tidy_up(stop: str, count: str, flags: list[str]) -> subprocess.CompletedProcess:
    """`_STOPPED_AT_TIDY_UP` run to its end: a real process, its stderr captured."""
    return subprocess.run(
        launched([sys.executable, "-c", _STOPPED_AT_TIDY_UP, stop, count, *flags], ctrl_c=True),
        cwd=_REPO,
        env={**os.environ, "PYTHONPATH": str(_REPO), "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _lost_a_count_unstopped(flags: list[str], capsys, caplog, monkeypatch) -> tuple[int, str]:
    """`_STOPPED_AT_TIDY_UP`'s "none" and "lose-a-count" run through the command line's
    `main` in this process (no stop: no process of its own is needed, and a TensorFlow
    start-up less): its exit status and its stderr, with the log records' text (where
    the command's root handler writes them; here pytest's handlers hold them)."""
    import pipeline.main as job

    count, counted = job._images_with, []

    def one_image_uncounted(outcome):
        counted.append(outcome)
        return count(outcome) if len(counted) > 1 else []

    monkeypatch.setattr(job, "_images_with", one_image_uncounted)
    capsys.readouterr()
    caplog.clear()
    caplog.set_level(logging.INFO)
    status = main(flags)
    return status, capsys.readouterr().err + caplog.text


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM", "none"])
def test_a_stop_after_a_run_that_lost_an_input_says_it_failed_as_without_the_stop(
    stop, image_folder, linear_keras, tmp_path, capsys, caplog, monkeypatch
):
    """A run whose manifest says "complete" but not every input accounted for fails
    (exit 1, the count said). A Ctrl-C or SIGTERM once that manifest was written cuts
    nothing short, yet it said 'interrupted after the run completed; its results are
    in out (nothing to resume).' and exited 130 (143): a failed run called complete.
    The stops are real signals to a real process; "none" is the same run unstopped."""
    out = tmp_path / "out"
    flags = [*job_flags(image_folder, linear_keras, out), "--faithfulness", "none"]
    if stop == "none":
        status, stderr = _lost_a_count_unstopped(flags, capsys, caplog, monkeypatch)
    else:
        done = _stopped_at_tidy_up(stop, "lose-a-count", flags)
        status, stderr = done.returncode, done.stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert status == 1, stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(
        "error: the run failed: RuntimeError: Not every input is accounted for: of 5 inputs, "
        "4 are accounted for (3 images with rows, 1 with errors, 0 skipped as done by an "
        "earlier run); 4 rows written, where 3 are expected (1 row per image with rows); "
        "1 error recorded."
    ), stderr[-3000:]
    assert ("cut nothing short" in lines[0]) is (stop != "none")
    assert "completed" not in lines[0] and "Traceback" not in stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and not manifest["all_inputs_accounted_for"]
    assert not (out / ".tmp").exists() and not (out / ".lock").exists()  # tidied, as without


def test_a_resume_killed_once_complete_leaves_temp_files_the_next_run_deletes_unread(
    image_folder, linear_keras, tmp_path
):
    """SIGKILL once the manifest says "complete", before the tidy-up: `.tmp/` keeps the
    killed resume's checkpoint and done ids, results/ its schema-only file, the folder
    its lock. Readers take the run as complete; the next --resume or --overwrite
    deletes them, salvaging nothing (every checkpointed row is in results/)."""
    out, loose = tmp_path / "out", Path(image_folder["root"]) / "loose.png"
    flags = [*job_flags(image_folder, linear_keras, out), "--faithfulness", "none"]
    kept = loose.read_bytes()
    loose.unlink()
    run(flags, save_main_session=False)
    loose.write_bytes(kept)  # left to the resume, with broken.jpg: its pipeline runs
    killed = _stopped_at_tidy_up("SIGKILL", "count-all", [*flags, "--resume"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["images_with_rows"] == 1
    left = sorted(p.name for p in (out / ".tmp").rglob("*") if p.is_file())
    assert len(left) == 2 and "done_before.json.gz" in left, left
    assert (out / ".lock").exists() and (out / "results" / "part-schema.parquet").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "has not finished": it completed
        assert sorted(read_results(str(out)).image_id) == sorted(image_folder["pixels"])
    replaced = tmp_path / "replaced"
    shutil.copytree(out, replaced)
    for folder, extra in ((out, "--resume"), (replaced, "--overwrite")):
        again = run([*_with_output(flags, folder), extra], save_main_session=False)
        assert again["status"] == "complete", extra
        names = sorted(p.name for p in (folder / "results").iterdir())
        assert not [n for n in names if "salvaged" in n or n == "part-schema.parquet"], names
        assert not (folder / ".tmp").exists() and not (folder / ".lock").exists(), extra
        rows = pd.read_parquet(folder / "results")
        assert rows.image_id.is_unique and sorted(rows.image_id) == sorted(image_folder["pixels"])


def _with_output(flags: list[str], output: Path) -> list[str]:
    at = flags.index("--output")
    return [*flags[: at + 1], str(output), *flags[at + 2 :]]


@pytest.mark.parametrize("stop, status, said", _STOPS)
def test_a_stop_before_the_run_started_says_nothing_was_written(
    stop, status, said, folder, linear_keras, tmp_path, jobs
):
    # While TensorFlow loads, seconds before --output is claimed (a Ctrl-C there is
    # often inside a string `exec`: see pipeline.commands.exit_with).
    out = tmp_path / "out"
    first = jobs(*cli_args(dataset=folder, model=linear_keras, output=out, steps=2))
    _wait_for(lambda: has_loaded(first.pid, "tensorflow"), first, "TensorFlow's libraries")
    os.kill(first.pid, stop)
    assert first.wait(timeout=60) == status
    log = first.log.read_text()
    lines = [line for line in log.splitlines() if line.startswith("error:")]
    assert lines == [
        f"error: {said} before the run started; nothing was written. Run the command again."
    ], log[-3000:]
    assert "Traceback" not in log and not out.exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, linear_keras):
    """`image_folder`'s images and a complete run of `job_flags` over them, made once
    a module: `finished["folder"]` is that image folder, `finished["copy"](out)` puts
    a copy of the run in `out`, for a test to change or go on from."""
    where = tmp_path_factory.mktemp("finished")
    folder = make_image_folder(where / "images")
    run(job_flags(folder, linear_keras, where / "out"), save_main_session=False)

    def copy(out: Path) -> None:
        shutil.copytree(where / "out", out)

    return {"folder": folder, "copy": copy}


def test_the_page_of_a_run_killed_after_its_rows_were_finalized_counts_no_image_twice(
    finished, tmp_path
):
    """Killed between the sink's finalize and the launcher's tidying: its rows are in
    results/ and in its checkpoints, which must not be counted as more images."""
    out = tmp_path / "out"
    finished["copy"](out)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    rows = pd.read_parquet(out / "results")
    checkpoint = out / ".tmp" / "checkpoints" / manifest["run_id"]
    checkpoint.mkdir(parents=True)
    (part,) = (out / "results").glob("*.parquet")
    shutil.copy(part, checkpoint / "batch-0.parquet")  # the same rows, checkpointed
    page = build_report(str(out), gallery=0)
    assert "the rows shown are those it wrote before it stopped" in page
    assert "sit in its checkpoints" not in page
    extra = rows.iloc[:1].assign(image_id="later.png")  # one image not finalized
    extra.to_parquet(checkpoint / "batch-1.parquet")
    page = build_report(str(out), gallery=0)
    assert "The rows of 1 more images it finished sit in its checkpoints" in page


def test_the_page_of_a_killed_run_without_a_run_id_counts_no_checkpoint(finished, tmp_path):
    """A manifest without a run id (a version before checkpoints) has none of its own:
    the page counted every run's in .tmp/ as the images it finished, which a --resume
    does not keep."""
    out = tmp_path / "out"
    finished["copy"](out)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["run_id"]
    (out / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    rows = pd.read_parquet(out / "results")
    (out / ".tmp" / "checkpoints" / "0123456789ab").mkdir(parents=True)
    rows.iloc[:1].assign(image_id="theirs.png").to_parquet(
        out / ".tmp" / "checkpoints" / "0123456789ab" / "batch-0.parquet"
    )
    page = build_report(str(out), gallery=0)
    assert "the rows shown are those it wrote before it stopped" in page
    assert "sit in its checkpoints" not in page


@pytest.mark.parametrize("own", [True, False], ids=["run-id", "no-run-id"])
def test_the_page_and_a_resume_take_the_same_checkpoints_of_a_killed_run(own, finished, tmp_path):
    """Which checkpoints a run has is decided once (`run_checkpoints`): its run id's,
    none without one (a version before checkpoints). The page counts the images a
    --resume salvages; here one of its own and one of another run (a template's job
    that lost the folder), which the page counted as this run's."""
    from transforms.schema import results_schema
    from transforms.sinks import salvage_checkpoints

    out = tmp_path / "out"
    finished["copy"](out)
    manifest = json.loads((out / "manifest.json").read_text())
    mine = manifest["run_id"] if own else manifest.pop("run_id")
    (out / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    rows = pd.read_parquet(out / "results")
    for run_id, image_id in ((mine, "later.png"), ("0123456789ab", "theirs.png")):
        (out / ".tmp" / "checkpoints" / run_id).mkdir(parents=True)
        rows.iloc[:1].assign(image_id=image_id).to_parquet(
            out / ".tmp" / "checkpoints" / run_id / "batch-0.parquet"
        )
    page = build_report(str(out), gallery=0)
    salvaged = salvage_checkpoints(  # as --resume calls it, with the manifest's run id
        str(out),
        frozenset(rows.image_id),
        results_schema(),
        str(out / "results" / "part-salvaged.parquet"),
        manifest.get("run_id"),
    )
    assert salvaged == ({"later.png"} if own else set())
    said = "The rows of 1 more images it finished sit in its checkpoints"
    assert (said in page) == own and ("sit in its checkpoints" in page) == own


def test_a_resume_keeps_each_checkpointed_image_once(image_folder, linear_keras, tmp_path):
    import shutil

    import pyarrow.parquet as pq

    out = tmp_path / "out"
    flags = cli_args(
        dataset=image_folder["root"], model=linear_keras, output=out, steps=2, target="top_k"
    )
    flags += ["--top_k", "2"]
    run(flags, save_main_session=False)
    (part,) = (out / "results").glob("*.parquet")
    full = pq.read_table(part)
    # As if killed after its checkpoints of one image were written twice (a retried
    # bundle), and with one image's rows finalized: the other images were lost.
    own = out / ".tmp" / "checkpoints" / json.loads((out / "manifest.json").read_text())["run_id"]
    own.mkdir(parents=True)
    for name in ("a", "b"):
        shutil.copy(part, own / f"{name}.parquet")
    finalized = full.filter(
        pq.ParquetFile(part).read().column("image_id").to_numpy() == "loose.png"
    )
    part.unlink()
    pq.write_table(finalized, out / "results" / "part-0.parquet")

    manifest = run([*flags, "--resume"], save_main_session=False)
    assert manifest["counts"]["skipped_done_before"] == 4 and manifest["counts"]["rows"] == 0
    rows = pd.read_parquet(out / "results")
    assert len(rows) == full.num_rows == 8  # 4 images, 2 targets each, none twice
    assert not rows.duplicated(["image_id", "target_class"]).any()


def test_a_resume_redoes_the_images_of_an_unreadable_checkpoint(
    finished, linear_keras, tmp_path, caplog
):
    """A checkpoint cut short (a kill while its disk filled) is skipped with a warning:
    its images are redone, the readable checkpoint's kept, each image's row once."""
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    flags = job_flags(finished["folder"], linear_keras, out)
    finished["copy"](out)
    (part,) = (out / "results").glob("*.parquet")
    full = pq.read_table(part).sort_by("image_id")
    folder = (
        out / ".tmp" / "checkpoints" / json.loads((out / "manifest.json").read_text())["run_id"]
    )
    folder.mkdir(parents=True)
    pq.write_table(full.slice(0, 2), folder / "a.parquet")
    pq.write_table(full.slice(2), folder / "b.parquet")
    cut = (folder / "b.parquet").read_bytes()
    (folder / "b.parquet").write_bytes(cut[: len(cut) // 2])
    part.unlink()

    with caplog.at_level(logging.WARNING, logger="transforms.sinks"):
        manifest = run([*flags, "--resume"], save_main_session=False)
    assert f"Skipping the unreadable checkpoint {folder / 'b.parquet'}" in caplog.text
    assert manifest["counts"]["skipped_done_before"] == 2 and manifest["counts"]["rows"] == 2
    rows = pd.read_parquet(out / "results")
    assert sorted(rows.image_id) == sorted(full.column("image_id").to_pylist())
    assert not (out / ".tmp").exists()


def test_a_resume_writes_the_checkpointed_rows_in_whole_row_groups(
    finished, linear_keras, tmp_path
):
    # A checkpoint holds one batch (8 rows by default): the salvaged file held one
    # row group per checkpoint, a killed 4,500-image run's 563 groups, whose
    # metadata pandas read 5x slower than the sink's groups of 64 rows.
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    flags = job_flags(finished["folder"], linear_keras, out)
    finished["copy"](out)
    (part,) = (out / "results").glob("*.parquet")
    full = pq.read_table(part)
    own = out / ".tmp" / "checkpoints" / json.loads((out / "manifest.json").read_text())["run_id"]
    own.mkdir(parents=True)
    for i in range(full.num_rows):  # as if killed after batches of one image each
        pq.write_table(full.slice(i, 1), own / f"{i}.parquet")
    part.unlink()

    manifest = run([*flags, "--resume"], save_main_session=False)
    assert manifest["counts"]["skipped_done_before"] == full.num_rows == 4
    (salvaged,) = (out / "results").glob("part-salvaged*.parquet")
    assert pq.ParquetFile(salvaged).metadata.num_row_groups == 1
    assert sorted(pd.read_parquet(out / "results").image_id) == sorted(
        full.column("image_id").to_pylist()
    )


def test_a_checkpoint_that_cannot_be_written_is_a_warning_not_a_failure(tmp_path, caplog):
    from benchmarks.storage import synthetic_rows
    from transforms.attribution import ImageOutcome
    from transforms.schema import results_schema
    from transforms.sinks import _Checkpoint

    blocked = tmp_path / "a_file"  # the checkpoint folder would have to be inside a file
    blocked.write_text("x")
    checkpoint = _Checkpoint(str(blocked), "run", results_schema("float32"), every=2)
    checkpoint.start_bundle()
    for row in synthetic_rows(3, SIZE, "full", "float32"):
        checkpoint.process(ImageOutcome(row["image_id"], [row], []))
    checkpoint.finish_bundle()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2  # a batch of 2 rows, then the bundle's last row
    assert warnings[0].startswith("Could not write a checkpoint of 2 rows (")
    assert "Not a directory" in warnings[0] and warnings[0].endswith("the run goes on.")


def job_flags(image_folder, linear_keras, out) -> list[str]:
    return cli_args(dataset=image_folder["root"], model=linear_keras, output=out, steps=2)


def test_launch_of_a_finished_local_run_drops_its_checkpoints(image_folder, linear_keras, tmp_path):
    from pipeline.main import launch

    out = tmp_path / "out"
    job, result = launch(job_flags(image_folder, linear_keras, out), save_main_session=False)
    assert result.state == "DONE" and len(pd.read_parquet(out / "results")) == 4
    assert not (out / ".tmp").exists()
    # A resume with nothing left to do leaves no empty results file either.
    before = sorted(f.name for f in (out / "results").iterdir())
    launch([*job_flags(image_folder, linear_keras, out), "--resume"], save_main_session=False)
    assert sorted(f.name for f in (out / "results").iterdir()) == before


def _launched(entry: str, flags: list[str]):
    """`launch`'s or `run`'s job and what it left: (the folder's lock, its manifest,
    run's return) read back once the job completed (a job that runs on: waited for)."""
    from pipeline.main import launch

    out = Path(flags[flags.index("--output") + 1])
    if entry == "launch":
        job, result = launch(flags)
        lock = (out / ".lock").read_text() if (out / ".lock").exists() else None
        result.wait_until_finish()
        returned = None
    else:
        returned = run(flags)
        lock = (out / ".lock").read_text() if (out / ".lock").exists() else None
        for _ in range(600):  # a job that runs on in this process: till its manifest says so
            if json.loads((out / "manifest.json").read_text())["status"] == "complete":
                break
            time.sleep(0.2)
    manifest = json.loads((out / "manifest.json").read_text())
    return (json.loads(lock) if lock else None), manifest, returned


@pytest.mark.parametrize("entry", ["launch", "run"])
def test_no_wait_until_finish_on_a_local_run_tidies_and_frees_the_folder(
    entry, image_folder, linear_keras, tmp_path
):
    """The DirectRunner's job ends inside the launch: --no_wait_until_finish leaves
    nothing running, and `launch` and `run` both tidy the folder up and release it."""
    out = tmp_path / "out"
    lock, manifest, returned = _launched(
        entry, [*job_flags(image_folder, linear_keras, out), "--no_wait_until_finish"]
    )
    assert lock is None and manifest["status"] == "complete"
    assert returned == (manifest if entry == "run" else None)
    assert not (out / ".tmp").exists() and len(pd.read_parquet(out / "results")) == 4


# Beam's PortableRunner with its job server embedded in this process (no network): a
# runner whose launch returns while its job runs (its workers: threads of this process).
PORTABLE = [
    "--runner",
    "PortableRunner",
    "--job_endpoint",
    "embed",
    "--environment_type",
    "LOOPBACK",
]


@pytest.mark.parametrize("entry", ["launch", "run"])
def test_a_job_of_another_runner_that_runs_on_keeps_the_launchers_lock(
    entry, image_folder, linear_keras, tmp_path, caplog
):
    """A job that goes on without the launcher (`launch`; `run` with
    --no_wait_until_finish) on a runner other than Dataflow: both leave the lock
    with this process (its pid, no job id: not handed over), as such a job (an
    embedded job server's) ends with the process."""
    out = tmp_path / "out"
    flags = [*job_flags(image_folder, linear_keras, out), *PORTABLE, "--no_wait_until_finish"]
    with caplog.at_level(logging.INFO, logger="pipeline.main"):
        lock, manifest, returned = _launched(entry, flags)
    assert lock["pid"] == os.getpid() and lock["job_id"] is None and "template" not in lock
    assert lock["run_id"] == manifest["run_id"] and manifest["status"] == "complete"
    assert returned is None
    if entry == "run":
        assert (
            "No results to read yet (--no_wait_until_finish: the job goes on without this "
            f"process); they go to {out}."
        ) in caplog.messages
    (out / ".lock").unlink()  # this process lives on: nothing else releases it


@contextlib.contextmanager
def _job_service(tmp_path):
    """Beam's local job service and a worker pool for its jobs' EXTERNAL environment,
    each a process of its own (its own process group, killed at the end with the SDK
    workers it started): a job service apart from the launcher, as a Flink or Spark
    cluster's, with no network. Yields the flags that submit a job to it and the worker
    pool's process (stopped, a job waits for its workers; continued, it runs)."""

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("localhost", 0))
            return s.getsockname()[1]

    env = {
        **os.environ,
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",  # its `python`
        "PYTHONPATH": str(_REPO),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    servers, ports = [], {"job": free_port(), "pool": free_port()}
    try:
        for name, module in (
            ("job", "apache_beam.runners.portability.local_job_service_main"),
            ("pool", "apache_beam.runners.worker.worker_pool_main"),
        ):
            port_flag = "--port" if name == "job" else "--service_port"
            with open(tmp_path / f"{name}-server.log", "w") as log:
                servers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", module, port_flag, str(ports[name])],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        for server, port in zip(servers, ports.values(), strict=True):
            while True:  # till it listens (a server that ended fails the test)
                assert server.poll() is None, (tmp_path / "job-server.log").read_text()
                with socket.socket() as s:
                    if s.connect_ex(("localhost", port)) == 0:
                        break
                time.sleep(0.1)
        yield (
            [
                *("--runner", "PortableRunner", "--job_endpoint", f"localhost:{ports['job']}"),
                *("--environment_type", "EXTERNAL", "--environment_config"),
                f"localhost:{ports['pool']}",
            ],
            servers[1],
        )
    finally:
        for server in servers:
            os.killpg(server.pid, signal.SIGKILL)  # a stopped process dies of it too
            server.wait()


def test_a_job_of_a_job_service_apart_from_its_launcher_holds_the_folder(
    linear_keras, tmp_path, capsys, jobs
):
    """A job on a job service running elsewhere (Flink's, Spark's; here Beam's local job
    service and worker pool, real processes) runs on after its launcher exits
    (--no_wait_until_finish): the lock kept the launcher's pid, so once it exited, an
    --overwrite or --resume took the folder while the job wrote. The job is held still
    (its worker pool stopped) while two runs try the folder, then runs to its end."""
    rng = np.random.default_rng(7)
    root, out = tmp_path / "images", tmp_path / "out"
    for name in ("a.png", "b.png", "c.png"):
        write_image(root / name, rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    flags = cli_args(
        dataset=root, model=linear_keras, output=out, steps=4, tolerance=0, faithfulness="none"
    )
    with _job_service(tmp_path) as (portable, pool):
        os.kill(pool.pid, signal.SIGSTOP)
        flags += [*portable, "--no_wait_until_finish"]
        first = jobs(*flags)
        assert first.wait(timeout=180) == 0, first.log.read_text()[-2000:]
        held = json.loads((out / ".lock").read_text())
        assert (
            f"{out} is held for PortableRunner job {held['job_id']} until it completes (if "
            f"it fails or is cancelled, delete {out}/.lock)."
        ) in first.log.read_text()
        endpoint = portable[portable.index("--job_endpoint") + 1]
        assert (
            "No results to show here: --no_wait_until_finish leaves the job running on the "
            f"job service at {endpoint}; it holds {out} until it completes (see the log)."
        ) in first.log.read_text()
        # The two runs that took the folder, refused through the command-line entry
        # point in this process (two TensorFlow start-ups less; a refusal by a process
        # of its own: _assert_holds_its_output).
        for again in ("--overwrite", "--resume"):
            capsys.readouterr()
            assert main([*flags, again]) == 2, again
            err = capsys.readouterr().err
            lines = [line for line in err.splitlines() if line.startswith("error:")]
            assert len(lines) == 1, err[-2000:]
            assert f"is in use by run {held['run_id']}, job job-" in lines[0]
            assert f"(if that job failed or was cancelled, delete {out}/.lock)" in lines[0]
        os.kill(pool.pid, signal.SIGCONT)
        for _ in range(1800):  # the job's end: a few seconds (a job that failed: 3 min)
            if json.loads((out / "manifest.json").read_text())["status"] == "complete":
                break
            time.sleep(0.1)
        else:
            pytest.fail((tmp_path / "job-server.log").read_text()[-3000:])
    from pipeline import output_lock

    output_lock.check_free(str(out))  # the job completed: the folder is free
    rows = pd.read_parquet(out / "results", columns=["image_id"])
    assert sorted(rows.image_id) == ["a.png", "b.png", "c.png"]


def test_a_resume_with_every_input_done_completes_without_running_the_model(
    linear_keras, tmp_path, capsys, caplog, monkeypatch
):
    """A --resume of a run whose every input has rows ran the whole pipeline (the model
    loaded in its worker, its gradient functions traced; a job launch on Dataflow) to
    write a manifest of skipped inputs; it now writes that manifest at once, the same.
    It still wrote the done ids' file for the pipeline's workers (a million ids: 3 MB,
    on gs:// too), then deleted it unread."""
    import pipeline.main as job_main

    real_write, written = job_main.write_done_ids, []

    def write_done_ids(*args, **kwargs):  # the real write, its files noted
        written.append(real_write(*args, **kwargs))
        return written[-1]

    monkeypatch.setattr(job_main, "write_done_ids", write_done_ids)
    rng = np.random.default_rng(5)
    root, out = tmp_path / "images", tmp_path / "out"
    for name in ("a.png", "b.png", "c.png"):
        write_image(root / name, rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    flags = cli_args(dataset=root, model=linear_keras, output=out, steps=2)
    first = run(flags, save_main_session=False)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    capsys.readouterr()
    with caplog.at_level(logging.INFO):
        assert main([*flags, "--resume"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["run_id"] != first["run_id"]
    counts = {key: 0 for key in first["counts"]}
    assert manifest["counts"] == {**counts, "inputs": 3, "skipped_done_before": 3}
    assert manifest["all_inputs_accounted_for"] and manifest["rows_match_target_mode"]
    assert manifest["resumed"] and manifest["results_prefix"].startswith("part-resume")
    assert [run["run_id"] for run in manifest["earlier_runs"]] == [first["run_id"]]
    assert manifest["end_time"] >= manifest["start_time"]
    # The same files: the earlier rows, an errors file of no record, nothing in .tmp/.
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == files
    assert pd.read_parquet(out / "errors").empty
    assert list(pd.read_parquet(out / "errors").columns) == ERROR_SCHEMA.names
    said = capsys.readouterr().out
    assert "(3 rows, 0 of them from this run)" in said
    assert "3 inputs; 3 of them done before, their rows kept." in said
    logged = [r.getMessage() for r in caplog.records]
    assert "Resuming: 3 images have rows already; skipped." in logged
    assert "Every input has rows already: nothing left to do." in logged
    # Nor the pipeline's worker: the model never ran, and no file of ids was written for it.
    assert not [m for m in logged if m.startswith("Loaded")], logged
    assert [path for path in written if path is not None] == []
    # A file added since is done, the others skipped.
    write_image(root / "d.png", rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    grown = run([*flags, "--resume"], save_main_session=False)
    assert grown["counts"]["skipped_done_before"] == 3 and grown["counts"]["images_with_rows"] == 1
    assert len([path for path in written if path is not None]) == 1  # for its pipeline
    assert sorted(pd.read_parquet(out / "results").file_name) == [
        "a.png",
        "b.png",
        "c.png",
        "d.png",
    ]


def test_a_resume_of_the_whole_sample_completes_at_once(linear_keras, tmp_path, caplog):
    # The bundled sample's ids are known at launch too, without reading its images.
    flags = cli_args(dataset="sample", model=linear_keras, output=tmp_path / "out", steps=2)
    first = run(flags, save_main_session=False)
    assert first["counts"]["images_with_rows"] == 8
    with caplog.at_level(logging.INFO):
        manifest = run([*flags, "--resume"], save_main_session=False)
    assert manifest["counts"]["inputs"] == manifest["counts"]["skipped_done_before"] == 8
    assert manifest["all_inputs_accounted_for"] and manifest["status"] == "complete"
    assert "Every input has rows already: nothing left to do." in caplog.messages


def test_a_stale_lock_of_a_dead_process_is_taken_over(image_folder, linear_keras, tmp_path):
    out = tmp_path / "out"
    stale = _stale_lock(out)
    args = cli_args(dataset=image_folder["root"], model=linear_keras, output=out)
    manifest = run([*args, "--steps", "2"], save_main_session=False)
    assert manifest["status"] == "complete" and manifest["run_id"] != "deadbeef"
    assert not (out / ".lock").exists()
    # A lock of another host cannot be checked: it is refused, naming the file to delete.
    (out / ".lock").write_text(json.dumps({**stale, "host": "elsewhere"}))
    with pytest.raises(ValueError, match=r"in use by run deadbeef \(host elsewhere"):
        run([*args, "--overwrite"], save_main_session=False)


def test_an_unreadable_lock_is_refused_naming_the_file_to_delete(
    image_folder, linear_keras, tmp_path
):
    """A .lock that is not a lock of this job (empty, cut short, other fields) may be a
    live run's being written: refused, never taken over, with the file to delete."""
    out = tmp_path / "out"
    out.mkdir()
    args = cli_args(dataset=image_folder["root"], model=linear_keras, output=out, steps=2)
    said = (
        f"--output '{out}' is in use by another run (its lock file is unreadable); wait for "
        f"it to end or choose another folder (if that run is dead, delete {out / '.lock'})."
    )
    for content in ("", "{not json", '{"owner": "me"}'):
        (out / ".lock").write_text(content)
        with pytest.raises(ValueError) as refused:
            run(args, save_main_session=False)
        assert str(refused.value) == said, content
        assert sorted(p.name for p in out.iterdir()) == [".lock"], content
        (out / ".lock").unlink()  # as said: the folder then reads as a killed run
    # Each refusal left the folder as it found it: once its lock is deleted, the same
    # empty folder, which a run takes.
    assert run(args, save_main_session=False)["status"] == "complete"


def test_a_launcher_killed_while_taking_the_lock_leaves_no_file_behind(
    image_folder, linear_keras, tmp_path
):
    # A real launcher, SIGKILLed after writing its lock's temp file, before linking it.
    out = tmp_path / "out"
    out.mkdir()
    code = (
        "import os, signal, sys; from pipeline import output_lock; "
        "os.link = lambda *a: os.kill(os.getpid(), signal.SIGKILL); "
        "output_lock.acquire(sys.argv[1])"
    )
    killed = subprocess.run([sys.executable, "-c", code, str(out)], cwd=_REPO)
    assert killed.returncode == -signal.SIGKILL
    (left,) = out.glob(".lock.*")
    # A live launcher's temp file (racing for the lock) is its own to remove: kept.
    from pipeline.output_lock import _process_identity

    mine = {"run_id": "0123456789ab", "pid": os.getpid(), "process": _process_identity(os.getpid())}
    live = {**json.loads(left.read_text()), **mine}
    (out / ".lock.0123456789ab").write_text(json.dumps(live))
    args = cli_args(dataset=image_folder["root"], model=linear_keras, output=out, steps=2)
    assert run(args, save_main_session=False)["status"] == "complete"
    assert sorted(p.name for p in out.iterdir()) == [
        ".lock.0123456789ab",
        "errors",
        "manifest.json",
        "results",
    ]


def _stale_lock(out: Path, **fields) -> dict:
    """A lock of this host written long ago by `pid` (default: a process that ended)."""
    out.mkdir(exist_ok=True)
    if "pid" not in fields:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        fields["pid"] = dead.pid
    lock = {
        "run_id": "deadbeef",
        "host": socket.gethostname(),
        "start_time": "2020-01-01T00:00:00+00:00",
        **fields,
    }
    (out / ".lock").write_text(json.dumps(lock))
    return lock


def test_two_launchers_cannot_both_take_over_one_stale_lock(tmp_path, monkeypatch):
    from pipeline import output_lock

    out = tmp_path / "out"
    _stale_lock(out)
    real = output_lock._live_holder
    second: list = []

    def another_launcher_in_between(path):
        # A has read the stale lock; B now takes it over before A goes on.
        found = real(path)
        if not second:
            monkeypatch.setattr(output_lock, "_live_holder", real)
            second.append(output_lock.acquire(str(out)))
            monkeypatch.setattr(output_lock, "_live_holder", another_launcher_in_between)
        return found

    monkeypatch.setattr(output_lock, "_live_holder", another_launcher_in_between)
    with pytest.raises(output_lock.OutputInUseError) as refused:
        output_lock.acquire(str(out))
    held = json.loads((out / ".lock").read_text())
    assert held["run_id"] == second[0].run_id  # B's lock, intact: A did not delete it
    assert f"in use by run {second[0].run_id}" in str(refused.value)


def test_a_lock_whose_pid_now_runs_another_process_is_stale(tmp_path):
    from pipeline import output_lock

    out = tmp_path / "out"
    # This very pid, written by another process (of another boot: a restarted container).
    _stale_lock(out, pid=os.getpid(), process="another-boot-id:12345")
    output_lock.check_free(str(out))
    lock = output_lock.acquire(str(out))
    assert lock.run_id != "deadbeef" and lock.pid == os.getpid()
    # The pid's own process is named by boot and start tick, not the wall clock
    # (a clock step cannot make a live run's lock look stale): refused, even here.
    assert lock.process == json.loads((out / ".lock").read_text())["process"]
    assert lock.process.endswith(":" + open("/proc/self/stat").read().rsplit(")")[1].split()[19])
    with pytest.raises(output_lock.OutputInUseError, match=f"in use by run {lock.run_id}"):
        output_lock.acquire(str(out))
    lock.release()
    assert not (out / ".lock").exists()


def test_a_lock_of_a_killed_launcher_its_parent_has_not_reaped_is_stale(tmp_path):
    # A launcher that ended while its parent (a notebook, a supervisor) has not waited
    # for it is a zombie: its pid still answers os.kill, but no run lives there.
    from pipeline import output_lock

    out = tmp_path / "out"
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        stat = Path(f"/proc/{zombie.pid}/stat")
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":  # not poll(): it reaps
            time.sleep(0.01)
        _stale_lock(out, pid=zombie.pid)
        output_lock.check_free(str(out))
        lock = output_lock.acquire(str(out))
        assert lock.run_id != "deadbeef"
        lock.release()
    finally:
        zombie.wait()


def _hold_and_hand_over(out: Path, job_id: str) -> dict:
    """A launcher process that takes the lock, hands it to a remote job, and exits."""
    code = (
        "import sys; from pipeline import output_lock; "
        "output_lock.acquire(sys.argv[1]).hand_over(sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", code, str(out), job_id], check=True)
    return json.loads((out / ".lock").read_text())


def test_a_lock_handed_to_a_remote_job_holds_until_its_run_completes(tmp_path, caplog):
    from pipeline import output_lock

    out = tmp_path / "out"
    out.mkdir()
    held = _hold_and_hand_over(out, "2026-12-02_job")
    assert held["job_id"] == "2026-12-02_job"  # its launcher has exited: the job holds it
    refusal = (
        rf"in use by run {held['run_id']}, job 2026-12-02_job .* which has not completed; "
        rf".*if that job failed or was cancelled, delete {out}/.lock"
    )
    with pytest.raises(output_lock.OutputInUseError, match=refusal):
        output_lock.check_free(str(out))
    # The job's manifest while it runs, then another run's: still held.
    for run_id, status in ((held["run_id"], "running"), ("other", "complete")):
        (out / "manifest.json").write_text(json.dumps({"run_id": run_id, "status": status}))
        with pytest.raises(output_lock.OutputInUseError, match=refusal):
            output_lock.acquire(str(out))
    # The job wrote its final manifest: the folder is free, and taken over quietly.
    (out / "manifest.json").write_text(json.dumps({"run_id": held["run_id"], "status": "complete"}))
    with caplog.at_level("INFO", logger="pipeline.output_lock"):
        lock = output_lock.acquire(str(out))
    assert lock.job_id is None and "its job 2026-12-02_job completed" in caplog.text
    assert "WARNING" not in caplog.text


def test_ctrl_c_while_waiting_for_a_dataflow_job_leaves_it_the_folder(tmp_path):
    """Dataflow cannot run here: `result` stands in for the service's job handle
    (its id, and a wait that Ctrl-C interrupts); the lock and the launcher's
    wait and release are the real ones."""
    import types

    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import main as pipeline_main
    from pipeline import output_lock

    out = tmp_path / "out"
    out.mkdir()

    class WaitInterrupted:
        def job_id(self):
            return "2026-12-02_job"

        def wait_until_finish(self):
            raise KeyboardInterrupt

    options = PipelineOptions(["--runner", "DataflowRunner", "--region", "europe-west4"])
    job = types.SimpleNamespace(output=str(out), lock=output_lock.acquire(str(out)))
    job.model_handoff = None
    with pytest.raises(KeyboardInterrupt) as interrupted:
        pipeline_main._wait(job, options, WaitInterrupted())
    pipeline_main._release(job)  # what run() does next
    assert json.loads((out / ".lock").read_text())["job_id"] == "2026-12-02_job"
    assert str(interrupted.value) == (
        f"interrupted; Dataflow job 2026-12-02_job keeps running and holds {out} until it "
        "completes. To stop it: gcloud dataflow jobs cancel 2026-12-02_job --region "
        f"europe-west4, then delete {out}/.lock."
    )


@pytest.mark.parametrize(
    "flags, where",
    [
        (
            ["--runner", "PortableRunner", "--job_endpoint", "jobs:8099"],
            "the job service at jobs:8099",
        ),
        (
            ["--runner", "FlinkRunner", "--flink_master", "flink:8081"],
            "the Flink cluster at flink:8081",
        ),
        (
            ["--runner", "SparkRunner", "--spark_submit_uber_jar"]
            + ["--spark_rest_url", "http://spark:6066"],
            "the Spark cluster at http://spark:6066",
        ),
    ],
)
def test_a_job_left_running_apart_from_the_launcher_is_said_to_run_where_it_runs(flags, where):
    """The line `python -m pipeline --no_wait_until_finish` printed spoke of Dataflow on
    every runner ("a Dataflow dry run or template builds the job without running it"),
    and a Ctrl-C's said a Flink cluster's job ran on "its job service", which the
    launcher had started and stopped. Each names where the job runs on (no job is
    started here: the lines are made from the options)."""
    import types

    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import main as pipeline_main

    docker = ["--environment_type", "DOCKER", "--no_wait_until_finish"]
    options = PipelineOptions([*flags, *docker])
    job = types.SimpleNamespace(output="/o", lock=None)
    result = types.SimpleNamespace(_job_id="job-1")
    runner = flags[1]
    assert pipeline_main._left_running(job, options, result) == (
        f"interrupted; {runner} job job-1 keeps running on {where} and holds /o until it "
        "completes. To stop it, cancel it there, then delete /o/.lock."
    )
    said = pipeline_main.no_results_here([*flags, *docker, "--output", "/o"])
    assert said == (
        f"No results to show here: --no_wait_until_finish leaves the job running on {where}; "
        "it holds /o until it completes (see the log)."
    )


def test_a_dataflow_job_or_template_not_run_here_keeps_its_dataflow_words():
    from pipeline import main as pipeline_main

    for extra in (
        ["--no_wait_until_finish"],
        ["--dry_run=True"],
        ["--template_location", "gs://b/t"],
    ):
        said = pipeline_main.no_results_here(["--runner", "DataflowRunner", *extra])
        assert said == (
            "No results to show here: a Dataflow dry run or template builds the job without "
            "running it, and --no_wait_until_finish leaves it running (see the log)."
        )


class _JobServiceOutOfReach:
    """A job service (Flink's, Spark's) as a launcher that lost it sees it: every call fails."""

    def GetState(self, request):  # noqa: N802 - the Job API's name
        raise ConnectionError(f"cannot reach the job service to get job {request.job_id}")


def _portable_wait_ending(error: BaseException, environment: str):
    """Beam's result of a job submitted to a job service apart from this process, whose
    wait ends with `error` (a Ctrl-C, the service's stream broken), and its options.
    Beam's result and wait are real; the service, unreachable here, fails."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.portable_runner import PipelineResult

    def states():
        raise error
        yield

    flags = ["--runner", "PortableRunner", "--job_endpoint", "localhost:8099"]
    options = PipelineOptions([*flags, "--environment_type", environment])
    return options, PipelineResult(_JobServiceOutOfReach(), "job-1", iter(()), states())


@pytest.mark.parametrize("environment", ["DOCKER", "LOOPBACK"])
def test_ctrl_c_while_waiting_for_a_job_of_a_job_service_apart_leaves_it_the_folder(
    environment, tmp_path
):
    """A Ctrl-C during `run`'s wait for a job on a job service apart from the launcher
    said that the job keeps running, but released the folder; a LOOPBACK job's workers
    are this process: it ends with it, and the message said it kept running."""
    import types

    from pipeline import logs, output_lock
    from pipeline import main as pipeline_main

    out = tmp_path / "out"
    out.mkdir()
    options, result = _portable_wait_ending(KeyboardInterrupt(), environment)
    job = types.SimpleNamespace(output=str(out), lock=output_lock.acquire(str(out)))
    job.model_handoff = None
    with pytest.raises(KeyboardInterrupt) as interrupted:
        pipeline_main._wait(job, options, result)
    pipeline_main._release(job)  # what run() does next
    if environment == "LOOPBACK":
        assert not (out / ".lock").exists() and str(interrupted.value) == logs.INTERRUPTED
        return
    assert json.loads((out / ".lock").read_text())["job_id"] == "job-1"
    assert str(interrupted.value) == (
        "interrupted; PortableRunner job job-1 keeps running on the job service at "
        f"localhost:8099 and holds {out} until it completes. To stop it, cancel it there, "
        f"then delete {out}/.lock."
    )


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_wait_that_loses_a_job_of_a_job_service_apart_leaves_it_the_folder(tmp_path, caplog):
    """`run`'s wait for a job on a job service apart from the launcher failed (the
    service's stream broke) and the job's state could not be read: the folder was
    released though the job may run on and write."""
    import types

    from pipeline import main as pipeline_main
    from pipeline import output_lock

    out = tmp_path / "out"
    out.mkdir()
    options, result = _portable_wait_ending(ConnectionError("stream broken"), "DOCKER")
    job = types.SimpleNamespace(output=str(out), lock=output_lock.acquire(str(out)))
    job.model_handoff = None
    with pytest.raises(ConnectionError, match="stream broken"):
        pipeline_main._completed_manifest(job, options, result)
    assert json.loads((out / ".lock").read_text())["job_id"] == "job-1"
    assert (
        f"Lost track of PortableRunner job job-1, which may still run: {out} is held "
        f"for it until it completes (if it failed or was cancelled, delete {out}/.lock)."
    ) in caplog.messages


class _DataflowOutOfReach:
    """The Dataflow service as a launcher that lost its network sees it: every call fails."""

    def get_job(self, job_id):
        raise ConnectionError(f"cannot reach dataflow.googleapis.com to get job {job_id}")


class _QuickLooks:
    """`time` as Beam's Dataflow runner module sees it, each sleep at most 50 ms: its
    wait looks at its poll thread every 5 s (here the thread dies at its first poll)."""

    def __getattr__(self, name: str):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, 0.05))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_wait_that_loses_a_running_dataflow_job_leaves_it_the_folder(
    tmp_path, caplog, monkeypatch
):
    """`run` deleted --output's lock when its wait for a Dataflow job failed with anything
    but Ctrl-C, though the job ran on and wrote: a --resume or --overwrite could take the
    folder from under it. Beam's wait fails so when its polls of the service fail (its
    poll thread dies; the job's last state read, RUNNING, is not final). Beam's result and
    wait, the launcher's and the lock are real; the service, unreachable here, fails."""
    import types

    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.dataflow import dataflow_runner
    from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult
    from google.cloud import dataflow as dataflow_api

    from pipeline import main as pipeline_main
    from pipeline import output_lock

    out = tmp_path / "out"
    out.mkdir()
    running = dataflow_api.Job(
        id="2026-12-06_job", current_state=dataflow_api.JobState.JOB_STATE_RUNNING
    )
    monkeypatch.setattr(dataflow_runner, "time", _QuickLooks())
    runner = types.SimpleNamespace(dataflow_client=_DataflowOutOfReach())
    options = PipelineOptions(["--runner", "DataflowRunner", "--region", "europe-west4"])
    result = DataflowPipelineResult(running, runner, options)
    job = types.SimpleNamespace(output=str(out), lock=output_lock.acquire(str(out)))
    job.model_handoff = None
    running = {"run_id": job.lock.run_id, "status": "running"}
    (out / "manifest.json").write_text(json.dumps(running))  # the job's, as it starts
    with pytest.raises(AssertionError, match="did not reach to a terminal state"):
        pipeline_main._completed_manifest(job, options, result)
    assert json.loads((out / ".lock").read_text())["job_id"] == "2026-12-06_job"
    # The job may run on: its manifest is left to it ("failed" would refuse its writes).
    assert json.loads((out / "manifest.json").read_text()) == running
    with pytest.raises(output_lock.OutputInUseError, match="job 2026-12-06_job"):
        output_lock.check_free(str(out))
    assert (
        f"Lost track of Dataflow job 2026-12-06_job, which may still run: {out} is held "
        f"for it until it completes (if it failed or was cancelled, delete {out}/.lock)."
    ) in caplog.messages


@pytest.mark.parametrize("entry", ["launch", "run"])
def test_a_dataflow_job_whose_state_is_out_of_reach_after_its_launch_keeps_the_folder(
    entry, tmp_path, caplog
):
    """A Dataflow job submitted, then its state asked of the service (`launch`; `run`
    with --no_wait_until_finish), which was out of reach: the error escaped with the
    lock neither handed over nor released, the launcher's pid in it; once the launcher
    exited, the folder read as a dead run's, free, while the job wrote. A job whose state
    cannot be read may run on: it is handed the folder. Beam's result is real; the
    service (unreachable here) and the submit before it are not run."""
    import types

    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult
    from google.cloud import dataflow as dataflow_api

    from pipeline import main as pipeline_main
    from pipeline import output_lock

    out = tmp_path / "out"
    out.mkdir()
    pending = dataflow_api.Job(id="2026-12-06_job")  # as created: no state read yet
    runner = types.SimpleNamespace(dataflow_client=_DataflowOutOfReach())
    flags = ["--runner", "DataflowRunner", "--region", "europe-west4", "--no_wait_until_finish"]
    options = PipelineOptions(flags)
    result = DataflowPipelineResult(pending, runner, options)
    job = types.SimpleNamespace(output=str(out), lock=output_lock.acquire(str(out)))
    job.model_handoff = None
    with caplog.at_level(logging.INFO, logger="pipeline.main"):
        if entry == "launch":  # `launch` after `_start`
            pipeline_main._leave_output(job, options, result, pipeline_main._known_state(result))
        else:
            assert pipeline_main._outcome(job, options, result) is None
    assert json.loads((out / ".lock").read_text())["job_id"] == "2026-12-06_job"
    if entry == "run":
        assert (
            "No results to read yet (--no_wait_until_finish: the job goes on without this "
            f"process); they go to {out}."
        ) in caplog.messages


def test_a_wait_for_a_dataflow_job_that_failed_releases_the_folder(tmp_path):
    """The other side of the test above: a job the service says failed has ended
    (Beam's wait raises its DataflowRuntimeException), and its folder is free again."""
    import types

    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult
    from google.cloud import dataflow as dataflow_api

    from pipeline import main as pipeline_main
    from pipeline import output_lock

    out = tmp_path / "out"
    out.mkdir()
    failed = dataflow_api.Job(
        id="2026-12-06_job", current_state=dataflow_api.JobState.JOB_STATE_FAILED
    )
    # The job's error, as Beam's runner keeps it from the service's messages.
    runner = types.SimpleNamespace(
        dataflow_client=_DataflowOutOfReach(), last_error_msg="Workflow failed."
    )
    options = PipelineOptions(["--runner", "DataflowRunner", "--region", "europe-west4"])
    job = types.SimpleNamespace(output=str(out), lock=output_lock.acquire(str(out)))
    job.model_handoff = None
    running = {"run_id": job.lock.run_id, "status": "running"}
    (out / "manifest.json").write_text(json.dumps(running))  # the job's, as it starts
    with pytest.raises(Exception, match="Dataflow pipeline failed. State: FAILED"):
        pipeline_main._completed_manifest(job, options, DataflowPipelineResult(failed, runner))
    assert not (out / ".lock").exists()
    # It has ended: its manifest says it failed, and why.
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["end_time"]
    assert manifest["reason"] == "DataflowRuntimeException: Workflow failed."


def test_a_dataflow_job_that_failed_without_an_error_message_names_its_logs(tmp_path):
    """Beam's wait for a Dataflow job the service says failed, where the service gave
    no error message (its runner's `last_error_msg` None), raises 'Dataflow pipeline
    failed. State: FAILED, Error:\nNone': the `error:` line and the manifest said
    'DataflowRuntimeException: None'. They name the job, its state and where its logs
    are. Beam's result, exception and wait are real; the service is out of reach."""
    import types

    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.dataflow.dataflow_runner import (
        DataflowPipelineResult,
        DataflowRuntimeException,
    )
    from google.cloud import dataflow as dataflow_api

    from pipeline import logs
    from pipeline import main as pipeline_main

    out = tmp_path / "out"
    failed = dataflow_api.Job(
        id="2026-12-06_job", current_state=dataflow_api.JobState.JOB_STATE_FAILED
    )
    runner = types.SimpleNamespace(dataflow_client=_DataflowOutOfReach(), last_error_msg=None)
    options = PipelineOptions(
        ["--runner", "DataflowRunner", "--region", "europe-west4", "--project", "my-proj"]
    )
    job = _running_job(out)
    with pytest.raises(DataflowRuntimeException) as raised:
        pipeline_main._completed_manifest(job, options, DataflowPipelineResult(failed, runner))
    reason = (
        "DataflowRuntimeException: Dataflow job 2026-12-06_job ended in state FAILED and the "
        "service gave no error message; its logs: https://console.cloud.google.com/dataflow/"
        "jobs/europe-west4/2026-12-06_job?project=my-proj"
    )
    assert logs.failure_reason(raised.value) == reason  # the error: line's
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["status"], manifest["reason"]) == ("failed", reason)
    assert not (out / ".lock").exists()


def _running_job(out):
    """A job of the launcher's holding `out` (its real lock), whose manifest says running."""
    import types

    from pipeline import output_lock

    out.mkdir()
    job = types.SimpleNamespace(output=str(out), lock=output_lock.acquire(str(out)))
    job.model_handoff = None
    (out / "manifest.json").write_text(json.dumps({"run_id": job.lock.run_id, "status": "running"}))
    return job


_CANCELLED = (
    "cancelled on the service (Dataflow job 2026-12-06_job); rerun with --resume to "
    "continue: the rows of every batch it finished are kept."
)


def test_a_job_that_ends_cancelled_says_so_in_its_manifest_and_frees_the_folder(tmp_path):
    """A wait that returns CANCELLED (a job cancelled on its runner, already over as the
    wait began): a person stopped it there, so `run` raises JobCancelled saying so, and
    the run's manifest says "stopped", "cancelled on the service", where it said
    "failed", "RuntimeError: The job ended in state CANCELLED". `result` stands in for a
    runner's job handle; the lock, the launcher's wait, manifest and release are real."""
    import types

    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import main as pipeline_main
    from pipeline.stopping import JobCancelled

    out = tmp_path / "out"
    job = _running_job(out)
    cancelled = types.SimpleNamespace(
        wait_until_finish=lambda: "CANCELLED", state="CANCELLED", job_id=lambda: "2026-12-06_job"
    )
    options = PipelineOptions(["--runner", "DataflowRunner", "--region", "europe-west4"])
    with pytest.raises(JobCancelled) as ended:
        pipeline_main._completed_manifest(job, options, cancelled)
    assert str(ended.value) == _CANCELLED
    manifest = json.loads((out / "manifest.json").read_text())
    reason = "cancelled on the service (Dataflow job 2026-12-06_job)"
    assert (manifest["status"], manifest["reason"]) == ("stopped", reason)
    assert not (out / ".lock").exists()


def test_a_cancelled_job_of_no_known_id_is_not_named_by_a_placeholder(tmp_path):
    """A Dataflow job whose result gives no id (Beam's job handle without one), cancelled:
    its reason read "cancelled on the service (Dataflow job <job id>)", a placeholder as
    if a word were left out; it says the id is unknown and where the job is listed. A
    Ctrl-C's message gave `gcloud dataflow jobs cancel <job id>` to paste. `result`
    stands in for a runner's job handle; the lock, manifest and release are real."""
    import types

    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import main as pipeline_main
    from pipeline.stopping import JobCancelled

    out = tmp_path / "out"
    job = _running_job(out)
    no_id = types.SimpleNamespace(
        wait_until_finish=lambda: "CANCELLED", state="CANCELLED", job_id=lambda: None
    )
    options = PipelineOptions(["--runner", "DataflowRunner", "--region", "europe-west4"])
    reason = (
        "cancelled on the service (Dataflow job of unknown id: see the Dataflow jobs page "
        "of the Cloud console)"
    )
    with pytest.raises(JobCancelled) as ended:
        pipeline_main._completed_manifest(job, options, no_id)
    assert str(ended.value).startswith(f"{reason}; rerun with --resume")
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["status"], manifest["reason"]) == ("stopped", reason)
    held = types.SimpleNamespace(output="/o", lock=None)
    assert pipeline_main._left_running(held, options, no_id) == (
        "interrupted; Dataflow job of unknown id keeps running and holds /o until it "
        "completes. To stop it, cancel it on the Dataflow jobs page of the Cloud console, "
        "then delete /o/.lock."
    )


class _DataflowSaysCancelled:
    """The Dataflow service of a job a person cancelled (console, gcloud): it says
    CANCELLED, with no message."""

    def get_job(self, job_id):
        from google.cloud import dataflow as dataflow_api

        return dataflow_api.Job(id=job_id, current_state=dataflow_api.JobState.JOB_STATE_CANCELLED)

    def list_messages(self, job_id, page_token=None, start_time=None):
        return [], None


def test_a_dataflow_job_cancelled_while_waited_for_is_stopped(tmp_path, monkeypatch, capsys):
    """A Dataflow job cancelled while the launcher waits: Beam's wait raises
    'Dataflow pipeline failed. State: CANCELLED, Error:\nNone', which `run` raised and
    the manifest recorded as failed ('DataflowRuntimeException: None'). It is a stop by
    a person: JobCancelled, the manifest "stopped", the folder released (the job is
    over), and the command's one error: line says so, exit 1 (no signal stopped it).
    Beam's result and wait are real; the service's answers are the cancelled job's."""
    import types

    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.dataflow import dataflow_runner
    from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult
    from google.cloud import dataflow as dataflow_api

    from pipeline import __main__ as command
    from pipeline import main as pipeline_main
    from pipeline.stopping import JobCancelled

    monkeypatch.setattr(dataflow_runner, "time", _QuickLooks())
    running = dataflow_api.Job(
        id="2026-12-06_job", current_state=dataflow_api.JobState.JOB_STATE_RUNNING
    )
    runner = types.SimpleNamespace(dataflow_client=_DataflowSaysCancelled())
    options = PipelineOptions(["--runner", "DataflowRunner", "--region", "europe-west4"])
    result = DataflowPipelineResult(running, runner, options)
    out = tmp_path / "out"
    job = _running_job(out)
    with pytest.raises(JobCancelled) as ended:
        pipeline_main._completed_manifest(job, options, result)
    assert str(ended.value) == _CANCELLED
    assert "State: CANCELLED" in str(ended.value.__cause__)  # Beam's own, kept as the cause
    manifest = json.loads((out / "manifest.json").read_text())
    reason = "cancelled on the service (Dataflow job 2026-12-06_job)"
    assert (manifest["status"], manifest["reason"]) == ("stopped", reason)
    assert not (out / ".lock").exists()

    def run(argv):
        raise ended.value

    capsys.readouterr()
    assert command._run([], False, run) == 1
    assert capsys.readouterr().err == f"error: {_CANCELLED}\n"


def _race_for_the_lock(output: str, start, results, done) -> None:
    from pipeline import output_lock

    start.wait()
    try:
        output_lock.acquire(output)
        results.put("held")
    except output_lock.OutputInUseError:
        results.put("refused")
    except Exception as e:  # noqa: BLE001 - the race's other outcome, counted
        results.put(f"crashed: {e}")
    done.wait()  # a holder stays alive (its lock live) until every process has tried


def test_processes_racing_for_one_stale_lock_leave_one_holder(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")  # real processes, started fast
    for trial in range(8):
        out = tmp_path / f"out{trial}"
        _stale_lock(out)
        start, done, results = context.Barrier(6), context.Barrier(6), context.Queue()
        racers = [
            context.Process(target=_race_for_the_lock, args=(str(out), start, results, done))
            for _ in range(6)
        ]
        for racer in racers:
            racer.start()
        outcomes = sorted(results.get(timeout=60) for _ in racers)
        for racer in racers:
            racer.join(timeout=60)
        assert outcomes == ["held"] + ["refused"] * 5, (trial, outcomes)


def test_a_folder_that_cannot_be_flocked_still_has_its_stale_lock_taken_over(
    tmp_path, monkeypatch, caplog
):
    import errno
    import fcntl

    from pipeline import output_lock

    def nfs_flock(fd, operation):  # NFS emulates flock with write locks: EBADF on a folder
        raise OSError(errno.EBADF, "Bad file descriptor")

    out = tmp_path / "out"
    _stale_lock(out)
    monkeypatch.setattr(fcntl, "flock", nfs_flock)
    lock = output_lock.acquire(str(out))
    assert json.loads((out / ".lock").read_text())["run_id"] == lock.run_id
    assert "Cannot flock" in caplog.text and "unserialized" in caplog.text


def test_an_output_whose_lock_cannot_be_written_says_what_to_do(
    image_folder, linear_keras, tmp_path, monkeypatch
):
    import errno

    from pipeline import output_lock

    def read_only(output):  # the lock is the first file a run writes in --output
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(output_lock, "acquire", read_only)
    out = tmp_path / "out"
    message = f"--output '{out}' is not writable: .*Read-only file system; choose a folder"
    with pytest.raises(ValueError, match=message):
        run(job_flags(image_folder, linear_keras, out), save_main_session=False)


def test_a_lock_taken_over_meanwhile_is_never_handed_to_the_old_runs_job(tmp_path):
    from pipeline import output_lock

    out = tmp_path / "out"
    out.mkdir()
    first = output_lock.acquire(str(out))
    (out / ".lock").unlink()  # as if taken over by another launcher
    second = output_lock.acquire(str(out))
    first.hand_over("old-job")
    held = json.loads((out / ".lock").read_text())
    assert held["run_id"] == second.run_id and held["job_id"] is None


def test_a_run_deletes_only_its_own_partial_files_in_dot_tmp(image_folder, linear_keras, tmp_path):
    out = tmp_path / "out"
    mine = [
        out / ".tmp" / "beam-temp-part-1a2b" / "x.parquet",
        out / ".tmp" / "checkpoints" / "r1" / "y",
        out / ".tmp" / f"{'0123abcd' * 4}.partial",  # a file killed while written
    ]
    theirs = [
        out / ".tmp" / "notes" / "todo.txt",
        out / ".tmp" / "keep.png",
        out / ".tmp" / "draft.partial",
    ]
    for path in mine + theirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    run(job_flags(image_folder, linear_keras, out), save_main_session=False)
    assert len(pd.read_parquet(out / "results")) == 4
    assert not any(path.exists() for path in mine)
    assert all(path.read_text() == "x" for path in theirs)


# `python -c` of the report command (its flags follow), SIGKILLed once its page is
# whole in its hidden partial file, before the rename that puts it in place.
_REPORT_KILLED_AS_IT_WRITES = """
import os, signal, sys
from pipeline.report import main
replace = os.replace
def killed_at_the_page(src, dst):
    if os.path.basename(dst) == "report.html":
        os.kill(os.getpid(), signal.SIGKILL)
    return replace(src, dst)
os.replace = killed_at_the_page
main(sys.argv[1:])
"""


def _listing(folder: Path) -> list[str]:
    """Every file and folder in `folder`, as paths relative to it."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_a_later_run_deletes_the_page_a_killed_report_left_half_written(
    finished, linear_keras, tmp_path
):
    # A report killed as it wrote its page left `.report.html.<hex>.partial` (the whole
    # page, 460 KB for 80 images) in --output: no --resume, --overwrite or report ever
    # deleted it. A later run leaves the folder as a clean run does.
    out = tmp_path / "out"
    finished["copy"](out)
    clean = _listing(out)
    command = [sys.executable, "-c", _REPORT_KILLED_AS_IT_WRITES, "--input", str(out)]
    killed = subprocess.run(
        launched(command),
        cwd=_REPO,
        env={**os.environ, "PYTHONPATH": str(_REPO), "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [p.name for p in out.glob(".report.html.*.partial")], _listing(out)
    replaced = tmp_path / "replaced"
    shutil.copytree(out, replaced)
    for folder, extra in ((out, "--resume"), (replaced, "--overwrite")):
        run([*job_flags(finished["folder"], linear_keras, folder), extra], save_main_session=False)
        assert _listing(folder) == clean, extra


def test_a_resume_over_an_unreadable_results_file_names_it(finished, linear_keras, tmp_path):
    out = tmp_path / "out"
    finished["copy"](out)
    (part,) = (out / "results").glob("*.parquet")
    part.write_bytes(part.read_bytes()[:100])  # truncated, as by a full disk
    with pytest.raises(ValueError) as refused:
        run(
            [*job_flags(finished["folder"], linear_keras, out), "--resume"], save_main_session=False
        )
    message = str(refused.value)
    assert message.startswith(f"--resume: cannot read {str(part)!r} of the earlier run (")
    assert message.endswith(
        "move that file away to redo its images, or start over with --overwrite."
    )


def test_a_run_that_ends_between_the_launch_check_and_the_lock_is_kept(
    image_folder, linear_keras, tmp_path
):
    # Two launchers on one empty folder both pass the launch check; one runs to its
    # end while the other still loads its model. Taking the lock, the other finds
    # that run's files: it refuses, as at launch, and leaves them as they were.
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import main as job_main
    from pipeline.options import AuditOptions
    from transforms.config import ConfigError

    output = tmp_path / "out"
    args = cli_args(
        runner="DirectRunner",
        dataset=image_folder["root"],
        model=linear_keras,
        output=output,
        attributions="none",
        faithfulness="none",
    )
    options = PipelineOptions(args)
    late = job_main._prepare(options, options.view_as(AuditOptions))  # the folder is free
    first = run(args, save_main_session=False)
    files = sorted(p.relative_to(output) for p in output.rglob("*"))
    rows = read_results(str(output))
    with pytest.raises(
        ConfigError,
        match=r"already holds a run \(written by another launch after this one's checks\)\. Pass "
        r"--overwrite to replace it, --resume to continue it, or choose another folder\.$",
    ):
        job_main._claim_output(late, resume=False, overwrite=False)
    assert json.loads((output / "manifest.json").read_text()) == first
    assert sorted(p.relative_to(output) for p in output.rglob("*")) == files  # no .lock left
    pd.testing.assert_frame_equal(read_results(str(output)), rows)


@pytest.mark.parametrize(
    "counts, base, accounted, rows_match",
    [
        ({"inputs": 5, "images_with_rows": 3, "images_with_errors": 1, "rows": 6}, 2, False, True),
        ({"inputs": 4, "images_with_rows": 3, "images_with_errors": 1, "rows": 5}, 2, True, False),
        ({"inputs": 5, "images_with_rows": 3, "skipped_done_before": 2, "rows": 6}, 2, True, True),
        # An image counted twice, and more rows than its targets: neither accounted for.
        ({"inputs": 3, "images_with_rows": 3, "images_with_errors": 1, "rows": 7}, 2, False, False),
        # A base without rows_per_image: one row an image.
        ({"inputs": 2, "images_with_rows": 2, "rows": 2}, None, True, True),
    ],
)
def test_the_manifest_says_when_inputs_or_rows_are_not_accounted_for(
    counts, base, accounted, rows_match, tmp_path
):
    from transforms.manifest import read_manifest
    from transforms.sinks import _Manifest

    base = {} if base is None else {"rows_per_image": base}
    (written,) = _Manifest(str(tmp_path), base).process(counts)
    manifest = read_manifest(str(tmp_path))  # as written to manifest.json
    assert manifest == written and manifest["status"] == "complete"
    assert manifest["all_inputs_accounted_for"] is accounted
    assert manifest["rows_match_target_mode"] is rows_match


def test_the_manifest_step_retried_after_it_wrote_accepts_its_own_complete_manifest(tmp_path):
    """A runner retries a step whose worker was lost before it committed (Dataflow): the
    manifest step, retried after it wrote its run's "complete" manifest, found the
    folder 'completed already' and failed the finished job on every retry (found by a
    review of the finalize check). It writes the same manifest again; a folder that
    another run took, or that its own run left "replacing", is still refused."""
    from transforms.manifest import read_manifest
    from transforms.sinks import _Manifest, write_json

    counts = {"inputs": 2, "images_with_rows": 2, "rows": 2}
    step = _Manifest(str(tmp_path), {"run_id": "r1", "status": "running"})
    write_json(str(tmp_path / "manifest.json"), {"run_id": "r1", "status": "running"})
    (first,) = step.process(counts)
    (again,) = step.process(counts)  # the retry
    assert read_manifest(str(tmp_path)) == again
    assert {k: v for k, v in again.items() if k != "end_time"} == {
        k: v for k, v in first.items() if k != "end_time"
    }
    for taken in ({"run_id": "r2", "status": "running"}, {"run_id": "r1", "status": "replacing"}):
        write_json(str(tmp_path / "manifest.json"), taken)
        with pytest.raises(RuntimeError, match="This job puts none of its files in place"):
            list(step.process(counts))
        assert read_manifest(str(tmp_path)) == taken


@pytest.mark.parametrize("check", ["all_inputs_accounted_for", "rows_match_target_mode"])
def test_run_raises_when_either_count_check_of_the_manifest_fails(
    check, image_folder, linear_keras, tmp_path, monkeypatch
):
    # A fault that loses an input or a row: the finished run's manifest says so in
    # one of its two checks, and run() raises, whichever it is, with the manifest's
    # counts as words (they were the dict's repr: "{'inputs': 2, ...}").
    from pipeline import stopping

    tidy = stopping.tidy_finished  # as the run's end calls it (`stopping.tidied`)
    monkeypatch.setattr(stopping, "tidy_finished", lambda job: {**tidy(job), check: False})
    args = cli_args(
        dataset=image_folder["root"],
        model=linear_keras,
        output=tmp_path / "out",
        attributions="none",
        faithfulness="none",
    )
    with pytest.raises(RuntimeError) as failed:
        run(args, save_main_session=False)
    counts = (  # the sentence of the manifest's error line (`counts_said`), one home
        "of 5 inputs, 5 are accounted for (4 images with rows, 1 with errors, 0 skipped as "
        "done by an earlier run); 4 rows written, where 4 are expected (1 row per image with "
        "rows); 1 error recorded."
    )
    if check == "all_inputs_accounted_for":
        assert str(failed.value) == f"Not every input is accounted for: {counts}"
    else:  # every input is: the rows are what is wrong (was 'Not every input ...')
        assert str(failed.value) == f"The rows do not match the target mode: {counts}"


def test_an_overwrite_stopped_while_deleting_leaves_no_complete_manifest(
    finished, linear_keras, tmp_path, monkeypatch
):
    """--overwrite deletes the earlier run file by file: stopped midway (Ctrl-C,
    a kill), its manifest must not still call the rows left a complete run."""
    import pipeline.main as main_module

    out = tmp_path / "out"
    finished["copy"](out)
    image_folder = finished["folder"]
    real_delete = main_module.FileSystems.delete

    def delete_one_then_stop(paths):
        real_delete(paths[:1])
        raise KeyboardInterrupt

    monkeypatch.setattr(main_module.FileSystems, "delete", delete_one_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run([*job_flags(image_folder, linear_keras, out), "--overwrite"], save_main_session=False)
    monkeypatch.undo()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] != "complete"
    assert "model" in manifest and "config" in manifest  # still a run --overwrite replaces
    from pipeline.report import run_state

    assert run_state(manifest, rows=len(pd.read_parquet(out / "results"))) == "unfinished"
    again = run(
        [*job_flags(image_folder, linear_keras, out), "--overwrite"], save_main_session=False
    )
    assert again["status"] == "complete" and len(pd.read_parquet(out / "results")) == 4


def test_a_json_write_cut_short_leaves_the_earlier_file_and_no_partial_one(tmp_path):
    # write_json (manifests, sanity.json) left its "<name>.tmp" behind when a full disk
    # or a quota stopped the write (here a file-size limit, RLIMIT_FSIZE).
    path = tmp_path / "manifest.json"
    path.write_text('{"status": "complete"}')
    script = (
        "import resource, signal, sys\n"
        "from transforms.sinks import write_json\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
        "write_json(sys.argv[1], {'names': ['x' * 100] * 50})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "File too large" in done.stderr, done.stderr[-2000:]
    assert path.read_text() == '{"status": "complete"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def _add_done_rows(out: Path, count: int) -> set[str]:
    """Adds a results file of `count` more images (a real row, under other ids), as
    if an earlier run had done them; returns every id with rows in `out`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (part, *_) = sorted((out / "results").glob("part-*.parquet"))
    row = pq.read_table(part).slice(0, 1)
    ids = [f"n{k % 1000:08d}/n{k % 1000:08d}_{k}.JPEG" for k in range(count)]
    table = row.take(pa.array(np.zeros(count, np.int64)))
    column = table.schema.get_field_index("image_id")
    table = table.set_column(column, "image_id", pa.array(ids, pa.string()))
    pq.write_table(table, out / "results" / "part-earlier.parquet")
    return set(pd.read_parquet(out / "results", columns=["image_id"]).image_id)


def _graph_bytes(flags: list[str]):
    """The size of the graph a run builds (what Dataflow is sent), the run's job, and
    the done-ids file each of its DoFns that skips done images reads, by DoFn."""
    import apache_beam as beam
    from apache_beam.pipeline import PipelineVisitor

    from pipeline.main import build_pipeline, prepare

    job, options = prepare(flags)
    job.lock.release()
    p = beam.Pipeline(options=options)
    build_pipeline(p, job)
    held = {}

    class DoneFiles(PipelineVisitor):
        def visit_transform(self, node):
            fn = getattr(node.transform, "fn", None)
            if hasattr(fn, "_done_file"):
                held[type(fn).__name__] = fn._done_file

    p.visit(DoneFiles())
    return len(p.to_runner_api().SerializeToString()), job, held


def test_a_resumes_graph_holds_no_done_id(image_folder, linear_keras, tmp_path):
    """The done ids were pickled into the graph twice (the split, the folder's read):
    a million made it 14 MB, over Dataflow's 10 MB; its workers now load them from a
    file in the run's checkpoint folder, the same whatever their number."""
    from transforms.done_ids import load_done_ids

    flags = cli_args(dataset=image_folder["root"], model=linear_keras, steps=2)
    flags += ["--attributions", "none", "--faithfulness", "none"]
    first = tmp_path / "a" / "out"
    run([*flags, "--output", str(first)], save_main_session=False)
    shutil.copytree(first, tmp_path / "b" / "out")
    sizes, jobs, done = {}, {}, {}
    for folder, count in (("a", 10), ("b", 10_000)):
        out = tmp_path / folder / "out"
        done[count] = _add_done_rows(out, count)
        sizes[count], jobs[count], held = _graph_bytes([*flags, "--output", str(out), "--resume"])
        # The folder's read leaves the done images' files unread, as the split skips them.
        assert held == {"_ReadFile": jobs[count].done_file, "_SplitDone": jobs[count].done_file}
    # 10,000 ids added 94 KB; what differs now is compressed noise (run ids, times).
    assert abs(sizes[10_000] - sizes[10]) < 512, sizes
    for count, job in jobs.items():
        assert Path(job.done_file).parent.parent == Path(job.output) / ".tmp" / "checkpoints"
        assert load_done_ids(job.done_file) == done[count]
    # A run that resumes nothing writes no file.
    _, job, _ = _graph_bytes([*flags, "--output", str(first), "--overwrite"])
    assert job.done_file is None
    assert not [f for f in (first / ".tmp").rglob("*") if f.is_file()]  # the resume's: gone


def _ids(paths) -> set[str]:
    return {i for path in paths for i in pd.read_parquet(path, columns=["image_id"]).image_id}


def test_a_killed_resume_then_another_resume_skip_exactly_the_done_images(killed, tmp_path, jobs):
    from transforms.done_ids import DONE_IDS_FILE, load_done_ids

    out = tmp_path / "out"
    killed["copy"](out)  # a run killed once it checkpointed
    flags, checkpoints = killed["flags"](out), out / ".tmp" / "checkpoints"
    killed_id = json.loads((out / ".lock").read_text())["run_id"]

    second = jobs(*flags, "--resume")

    def own_checkpoints() -> list[Path]:  # the resume's, once it has taken the lock
        run_id = json.loads((out / "manifest.json").read_text())["run_id"]
        return list((checkpoints / run_id).glob("*.parquet")) if run_id != killed_id else []

    own = _wait_for(own_checkpoints, second, "a checkpoint of the resume")
    # Its workers skip the ids of its file: the killed run's salvaged rows, in results/.
    done_file = own[0].parent / DONE_IDS_FILE
    salvaged = _ids((out / "results").glob("*.parquet"))
    assert load_done_ids(str(done_file)) == salvaged and len(salvaged) >= 2
    os.kill(second.pid, signal.SIGKILL)
    second.wait(timeout=60)
    done = salvaged | _ids(own[0].parent.glob("*.parquet"))

    manifest = run([*flags, "--resume"], save_main_session=False)
    counts = manifest["counts"]
    assert counts["skipped_done_before"] == len(done) and counts["images_with_errors"] == 1
    assert counts["images_with_rows"] == 80 - len(done)
    new = (out / "results").glob(f"{manifest['results_prefix']}-*.parquet")
    assert _ids(new) == _ids((out / "results").glob("*.parquet")) - done  # the rest, once
    rows = pd.read_parquet(out / "results")
    assert rows.image_id.is_unique and len(rows) == 80
    assert not (out / ".tmp").exists()  # the ids files too, the killed resume's and its own


def _template_job(image_folder, linear_keras, out, *extra: str):
    """What a Dataflow template's job runs, run here: the graph the launcher built as it
    claimed --output (its run id, its manifest), run later without the launcher, as
    often as the template is run. Dataflow cannot run here: the DirectRunner runs it."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.main import build_pipeline, prepare

    job, options = prepare([*job_flags(image_folder, linear_keras, out), *extra])

    def run_job(workers: int | None = None) -> None:
        """`workers`: DirectRunner threads, each a bundle and so a shard of each write
        (Dataflow picks its shard counts); None, the job's own options."""
        threads = {"direct_num_workers": workers, "direct_running_mode": "multi_threading"}
        p = beam.Pipeline(options=PipelineOptions([], **threads) if workers else options)
        build_pipeline(p, job)
        p.run().wait_until_finish()

    return job, run_job


def _finished_folder(out: Path) -> tuple[dict, list[str], int]:
    """What a finished run's folder holds: its manifest, its result shards' names and
    its rows' count (a job that must not touch the folder leaves all three as they were)."""
    shards = sorted(p.name for p in (out / "results").iterdir())
    return (
        json.loads((out / "manifest.json").read_text()),
        shards,
        len(pd.read_parquet(out / "results")),
    )


def test_a_template_job_run_twice_writes_its_rows_once(image_folder, linear_keras, tmp_path):
    """A template's job wrote its shards again when the template ran a second time
    (no launcher, no lock): with another shard count, every row twice. Its file
    writes now refuse to finalize once the folder's manifest is not its unfinished run."""
    out = tmp_path / "out"
    job, run_job = _template_job(image_folder, linear_keras, out)
    job.lock.release()  # the launcher's part ends once the template is built
    run_job()
    first = _finished_folder(out)
    assert first[0]["status"] == "complete" and first[2] == 4
    with pytest.raises(Exception, match=rf"run {job.lock.run_id} completed already"):
        run_job()
    assert _finished_folder(out) == first


def test_a_template_job_rerun_after_one_that_died_before_its_manifest_writes_its_rows_once(
    image_folder, linear_keras, tmp_path
):
    """A template's job that put its shards in place and died before its manifest step
    leaves the folder its run's, "running": the next run of the template passes the
    check and finalizes too. Beam replaces only the shards of its own count, so with
    another (results-00000-of-00001, then -of-00004) every row was there twice."""
    out = tmp_path / "out"
    job, run_job = _template_job(image_folder, linear_keras, out)
    job.lock.release()
    built = (out / "manifest.json").read_text()
    run_job(workers=1)
    (out / "manifest.json").write_text(built)  # as the job that died left it
    run_job(workers=4)
    rows = read_results(str(out))
    assert sorted(rows.image_id) == sorted(image_folder["pixels"])
    shards = sorted(p.name for p in (out / "results").glob("part-0*.parquet"))
    assert shards and all(name.endswith("-of-00004.parquet") for name in shards), shards
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["rows"] == len(rows)


def test_a_template_job_never_finalizes_over_a_run_that_took_the_folder(
    image_folder, linear_keras, tmp_path
):
    """An --overwrite between a template's build and its job: the job's rows went
    into the other run's results/, and its manifest replaced the other run's."""
    out = tmp_path / "out"
    job, run_job = _template_job(image_folder, linear_keras, out)
    job.lock.release()
    other = run([*job_flags(image_folder, linear_keras, out), "--overwrite"])
    kept = _finished_folder(out)
    assert kept[0] == other and kept[2] == 4
    with pytest.raises(
        Exception, match=rf"holds run {other['run_id']} \(complete\), not this job's"
    ):
        run_job()
    assert _finished_folder(out) == kept


def test_a_template_build_keeps_the_folder_for_the_templates_job(
    image_folder, linear_keras, tmp_path
):
    """A template's build released --output: until its job ran, the folder read as a
    killed run, a --resume went on from it and an --overwrite replaced it, and the
    template's job clashed with either. The build now leaves the lock to that job.
    Beam writes the template to GCS, which is not reachable here: the launcher's claim
    and what it does once the template is written (`_leave_to_template`) are real."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import main as pipeline_main
    from pipeline import output_lock

    out = tmp_path / "out"
    job, run_job = _template_job(image_folder, linear_keras, out)
    built = ["--runner", "DataflowRunner", "--template_location", "gs://b/templates/audit"]
    pipeline_main._leave_to_template(job, PipelineOptions(built))
    held = (
        rf"held for the job of the Dataflow template gs://b/templates/audit \(run "
        rf"{job.lock.run_id}, built .*\), which has not completed; run the template, or "
        rf"choose another folder \(if it will not run, .* delete {out}/.lock\)"
    )
    for extra in ([], ["--resume"], ["--overwrite"]):
        with pytest.raises(ValueError, match=held):
            run([*job_flags(image_folder, linear_keras, out), *extra])
    run_job()  # the template's job: its complete manifest frees the folder
    output_lock.check_free(str(out))
    again = run([*job_flags(image_folder, linear_keras, out), "--overwrite"])
    assert again["status"] == "complete" and len(pd.read_parquet(out / "results")) == 4


def test_a_resume_salvages_no_checkpoint_of_a_job_that_lost_the_folder(
    image_folder, linear_keras, tmp_path
):
    """A template's job that runs into a folder another run took fails before its
    files go in place, but it checkpointed its rows as it ran: a --resume of the
    folder's run salvaged them, another dataset's images, into that run's results."""
    out = tmp_path / "out"
    job, run_job = _template_job(image_folder, linear_keras, out)
    job.lock.release()  # the lock deleted, as the refusal says to if the job will not run
    rng = np.random.default_rng(5)
    other = tmp_path / "other"
    for name in ("a.png", "b.png"):
        write_image(other / name, rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8))
    flags = cli_args(dataset=other, model=linear_keras, output=out, steps=2)
    run([*flags, "--overwrite"])
    with pytest.raises(Exception, match="not this job's"):
        run_job()
    assert list((out / ".tmp" / "checkpoints" / job.lock.run_id).glob("*.parquet"))
    run([*flags, "--resume"])
    ids = set(pd.read_parquet(out / "results", columns=["image_id"]).image_id)
    assert ids == {"a.png", "b.png"}


def test_a_resume_of_a_killed_run_without_a_run_id_takes_no_other_runs_rows(
    killed, linear_keras, tmp_path
):
    """A manifest without a run id (versions before the lock, which came before
    checkpoints) names no run's checkpoints: a --resume salvaged every run's in
    .tmp/, here those of a template's job that lost the folder to the killed run,
    another dataset's images, into the killed run's results."""
    out = tmp_path / "out"
    theirs = make_image_folder(tmp_path / "theirs")
    template, run_template = _template_job(theirs, linear_keras, out)
    template.lock.release()  # the lock deleted, as the refusal says to if the job will not run
    # The killed run took the folder (its --overwrite deleted the template's manifest).
    shutil.rmtree(out)
    killed["copy"](out)
    flags, checkpoints = killed["flags"](out), out / ".tmp" / "checkpoints"
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["run_id"]  # as an older version wrote it
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(Exception, match="not this job's"):
        run_template()
    assert list((checkpoints / template.lock.run_id).glob("*.parquet"))

    run([*flags, "--resume"], save_main_session=False)
    rows, errors = pd.read_parquet(out / "results"), pd.read_parquet(out / "errors")
    inputs = {p.name for p in killed["folder"].iterdir()}
    assert set(rows.image_id) | set(errors.image_id) == inputs
    assert rows.image_id.is_unique and len(rows) + len(errors) == len(inputs) == 81


def test_a_folder_held_for_a_templates_job_reads_as_waiting_for_it(
    image_folder, linear_keras, tmp_path, capsys
):
    """Between a template's build and its job the read-back, the report and the sanity
    check called the folder 'still running, or killed' and said to finish it with
    --resume, which the lock now refuses: each names the template's job and the lock."""
    import re

    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import main as pipeline_main
    from pipeline import sanity

    out = tmp_path / "out"
    job, _ = _template_job(image_folder, linear_keras, out)
    built = ["--runner", "DataflowRunner", "--template_location", "gs://b/templates/audit"]
    pipeline_main._leave_to_template(job, PipelineOptions(built))
    waits = "waits for the job of the Dataflow template gs://b/templates/audit"
    freed = f"if the template will not run, or its job failed or was cancelled, delete {out}/.lock"
    with pytest.warns(UserWarning, match="has not finished") as said:
        assert read_results(str(out)).empty
    message = str(said[0].message)
    assert waits in message and freed in message and "--resume" not in message, message
    page = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", build_report(str(out), gallery=0)))
    assert f"This run has not finished (status running): the folder {waits}" in page
    assert "delete " + f"{out}/.lock to free the folder" in page and "--resume" not in page
    assert sanity.main(["--input", str(out)]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert waits in error and freed in error and "--resume" not in error, error
    (out / ".lock").unlink()  # as said: the folder then reads as a killed run
    with pytest.warns(UserWarning, match="still running, or killed"):
        read_results(str(out))


def test_a_template_job_whose_folder_lost_its_manifest_puts_nothing_in_place(
    image_folder, linear_keras, tmp_path
):
    """A manifest.json deleted (or unreadable) after the build: nothing says the folder
    is still the job's run, so its files stay in .tmp/ and no manifest is written."""
    out = tmp_path / "out"
    job, run_job = _template_job(image_folder, linear_keras, out)
    job.lock.release()
    (out / "manifest.json").unlink()
    with pytest.raises(Exception, match=rf"holds no manifest of run {job.lock.run_id}"):
        run_job()
    assert not (out / "manifest.json").exists()
    assert pd.read_parquet(out / "results").empty  # the build's schema file alone


def test_a_template_job_over_its_run_left_replacing_says_so_not_completed(
    image_folder, linear_keras, tmp_path
):
    """An --overwrite killed as it deleted the folder's files leaves the manifest of the
    run it replaced, status "replacing": the template job of that run was told its run
    "completed already"."""
    out = tmp_path / "out"
    job, run_job = _template_job(image_folder, linear_keras, out)
    job.lock.release()
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "status": "replacing"}))
    with pytest.raises(Exception, match=rf"holds run {job.lock.run_id} \(replacing\), not "):
        run_job()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda m: {"model": m["model"]}, id="model-but-no-config"),
        pytest.param(lambda m: {"model": "resnet50", "config": "train.yaml"}, id="another-tools"),
        pytest.param(lambda m: {**m, "config": None}, id="config-null"),
    ],
)
def test_a_manifest_without_a_model_and_config_object_is_no_run_to_replace_or_resume(
    edit, finished, linear_keras, tmp_path, capsys
):
    # Another tool's manifest.json naming a "model" and a "config" (strings) was taken
    # for a run of this job: --overwrite deleted it and report.html, --resume failed
    # with "AttributeError: 'str' object has no attribute 'get'" (exit 1).
    out = tmp_path / "out"
    finished["copy"](out)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(edit(manifest)))
    (out / "report.html").write_text("<p>the other tool's page</p>")
    before = _tree(out)
    flags = job_flags(finished["folder"], linear_keras, out)
    capsys.readouterr()
    assert main([*flags, "--overwrite"]) == 2
    (line,) = [s for s in capsys.readouterr().err.splitlines() if s.startswith("error:")]
    assert line == (
        f"error: --output '{out}' holds errors, manifest.json, report.html, results but no "
        "manifest.json of a run of this job, and --overwrite deletes only such a run. Move "
        "those files, or choose another folder."
    )
    assert main([*flags, "--resume"]) == 2
    (line,) = [s for s in capsys.readouterr().err.splitlines() if s.startswith("error:")]
    assert line == (
        f"error: --resume: the manifest.json in --output '{out}' is not one this job wrote "
        "(no model and config objects in it), so the earlier run's settings are unknown; "
        "restore it, or choose another --output."
    )
    assert _tree(out) == before  # nothing deleted, no lock left


@pytest.mark.parametrize(
    "manifest, reason",
    [
        (b"{not JSON", "{manifest}: not JSON (Expecting property name"),
        (b'{"model": "m.keras", "config": "c.json"}', "no model and config objects in it"),
    ],
)
def test_a_resume_of_a_manifest_this_job_did_not_write_is_refused_before_the_model_loads(
    manifest, reason, finished, unloadable_keras, tmp_path
):
    # A --resume read the earlier run's manifest only once the model had loaded, under
    # the folder's lock, though no setting of the model is needed to find it is no run
    # of this job's. In a real process now: its one error: line before the model loads
    # (a model that cannot load would have said its own), nothing changed.
    out = tmp_path / "out"
    finished["copy"](out)
    (out / "manifest.json").write_bytes(manifest)
    before = _tree(out), sorted(out.rglob("*"))
    flags = [*job_flags(finished["folder"], unloadable_keras, out), "--resume"]
    done = _command(flags)
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = _error_lines(done.stderr)
    assert line.startswith(
        f"error: --resume: the manifest.json in --output '{out}' is not one this job wrote "
        f"({reason.format(manifest=repr(str(out / 'manifest.json')))}"
    ), done.stderr[-3000:]
    assert line.endswith(
        "so the earlier run's settings are unknown; restore it, or choose another --output."
    )
    assert (_tree(out), sorted(out.rglob("*"))) == before


def test_a_resume_with_other_settings_no_model_sets_is_refused_before_the_model_loads(
    finished, unloadable_keras, tmp_path
):
    # Every setting of a --resume was compared with the earlier run's once the model had
    # loaded (seconds to minutes for a large one), --steps and --baseline too, which no
    # model sets. In a real process now: refused at launch, its one error: line as it
    # was (a model that cannot load would have said its own), the folder as it was and
    # free. --input_range, which a model may set, and --model, compared once it loads,
    # are not named.
    out = tmp_path / "out"
    finished["copy"](out)
    flags = cli_args(dataset=finished["folder"]["root"], model=unloadable_keras, output=out)
    flags += ["--steps=3", "--baseline=white", "--input_range=-1,1", "--resume"]
    before = _tree(out), sorted(out.rglob("*"))
    done = _command(flags)
    assert done.returncode == 2, done.stderr[-3000:]
    assert _error_lines(done.stderr) == [
        f"error: --resume: the earlier run in '{out}' differs in --baseline (earlier run: "
        "['black'], this run: ['white']); --steps (earlier run: 2, this run: 3). Resume with "
        "the same flags, or start over with --overwrite."
    ], done.stderr[-3000:]
    assert "Auditing" not in done.stderr and "Traceback" not in done.stderr
    assert (_tree(out), sorted(out.rglob("*"))) == before  # nothing changed, no lock left


def test_a_resume_with_the_default_top_k_of_a_run_with_another_is_refused_before_the_model_loads(
    finished, unloadable_keras, tmp_path
):
    # --top_k's default was compared only once the model had loaded: the model may shrink
    # it to its classes. The earlier run's manifest records its model's (1000 outputs,
    # label offset 0), which a resume's must have, so the default's 5 is known before the
    # load. In a real process: refused at launch, its one error: line as under the lock.
    out = tmp_path / "out"
    finished["copy"](out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["config"]["top_k"], manifest["model"]["num_outputs"]) == (5, 1000)
    manifest["config"]["top_k"] = 3  # as a run made with --top_k 3 records it
    (out / "manifest.json").write_text(json.dumps(manifest))
    before = _tree(out), sorted(out.rglob("*"))
    flags = cli_args(dataset=finished["folder"]["root"], model=unloadable_keras, output=out)
    done = _command([*flags, "--steps=2", "--resume"])
    assert done.returncode == 2, done.stderr[-3000:]
    assert _error_lines(done.stderr) == [
        f"error: --resume: the earlier run in '{out}' differs in --top_k (earlier run: 3, "
        "this run: 5). Resume with the same flags, or start over with --overwrite."
    ], done.stderr[-3000:]
    assert "Auditing" not in done.stderr and "Traceback" not in done.stderr
    assert (_tree(out), sorted(out.rglob("*"))) == before  # nothing changed, no lock left


def test_a_resume_with_nothing_left_writes_what_its_pipeline_would(
    linear_keras, tmp_path, monkeypatch
):
    """A gs:// folder's ids are unknown at launch: its --resume with every input done
    runs the pipeline, which skips them all. A local folder's completes at once
    (`pipeline.resume.skip_all`): the same manifest, files and rows, whichever way."""
    import pipeline.main as job_main

    rng = np.random.default_rng(8)
    root = tmp_path / "images"
    for name in ("a.png", "b.png", "n02123045/c.png"):
        write_image(root / name, rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    first = tmp_path / "first"
    run(cli_args(dataset=root, model=linear_keras, output=first, steps=2), save_main_session=False)
    found = {}
    for way in ("at once", "pipeline"):
        out = tmp_path / way.replace(" ", "_")
        shutil.copytree(first, out)
        if way == "pipeline":  # as for a gs:// folder: inputs not known at launch
            monkeypatch.setattr(job_main, "nothing_left", lambda job: None)
        flags = cli_args(dataset=root, model=linear_keras, output=out, steps=2)
        manifest = run([*flags, "--resume"], save_main_session=False)
        for key in ("run_id", "start_time", "end_time", "output", "command", "results_prefix"):
            manifest.pop(key)
        files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
        rows = pd.read_parquet(out / "results").sort_values("image_id", ignore_index=True)
        found[way] = manifest, files, rows, pd.read_parquet(out / "errors")
    (manifest, files, rows, errors), (*piped, piped_rows, piped_errors) = found.values()
    assert manifest["counts"]["skipped_done_before"] == manifest["counts"]["inputs"] == 3
    assert [manifest, files] == piped
    pd.testing.assert_frame_equal(rows, piped_rows)
    pd.testing.assert_frame_equal(errors, piped_errors)
    assert errors.empty and len(rows) == 3


def test_an_overwrite_stopped_before_its_last_delete_leaves_a_run_it_replaces(
    finished, linear_keras, tmp_path, monkeypatch
):
    # The manifest went before report.html: stopped between the two, the folder held a
    # report.html and no manifest, and every later --overwrite refused it as "no
    # manifest.json of a run of this job" until the user deleted the page by hand.
    import pipeline.main as main_module

    out = tmp_path / "out"
    finished["copy"](out)
    (out / "report.html").write_text("<p>the run's page</p>")
    flags = [*job_flags(finished["folder"], linear_keras, out), "--overwrite"]
    real_delete, calls = main_module.FileSystems.delete, []

    def delete_all_but_the_last_then_stop(paths):  # the first delete; later ones (the lock's) whole
        calls.append(paths)
        real_delete(paths[:-1] if len(calls) == 1 else paths)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(main_module.FileSystems, "delete", delete_all_but_the_last_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(flags, save_main_session=False)
    monkeypatch.undo()
    assert json.loads((out / "manifest.json").read_text())["status"] == "replacing"
    again = run(flags, save_main_session=False)
    assert again["status"] == "complete" and len(pd.read_parquet(out / "results")) == 4
    assert not (out / "report.html").exists()


# A run's folders in --output, and what the job keeps in each, as its refusals name them.
_RUN_FOLDERS_SAID = [
    (".tmp", "partial files"),
    ("results", "result rows"),
    ("errors", "error records"),
]


@pytest.mark.parametrize("again", [None, "--overwrite", "--resume"])
@pytest.mark.parametrize("name, what", _RUN_FOLDERS_SAID)
def test_a_file_named_as_a_run_folder_is_refused_before_the_run(
    name, what, again, finished, linear_keras, tmp_path, capsys
):
    # A user's file named .tmp, results or errors where the run writes that folder: the
    # run failed only once Beam's sinks wrote there (at its very end for results/:
    # "Encountered exceptions in finalize_write: Not a directory", exit 1), an
    # --overwrite having deleted the earlier run (or part of it) by then.
    out = tmp_path / "out"
    if again is None:
        out.mkdir()
    else:
        finished["copy"](out)
        shutil.rmtree(out / name, ignore_errors=True)  # a finished run keeps no .tmp/
    (out / name).write_text("mine")
    before = _tree(out)
    flags = job_flags(finished["folder"], linear_keras, out)
    capsys.readouterr()
    assert main([*flags, *filter(None, [again])]) == 2
    (line,) = [s for s in capsys.readouterr().err.splitlines() if s.startswith("error:")]
    assert line == (
        f"error: --output '{out}' holds a file named {name}, where the job keeps its {what} "
        "(a folder): move it, or choose another folder."
    )
    assert _tree(out) == before


@pytest.mark.parametrize("name, what", _RUN_FOLDERS_SAID)
def test_a_link_to_nothing_named_as_a_run_folder_is_refused_as_what_it_is(
    name, what, finished, linear_keras, tmp_path, capsys
):
    # It was refused at launch as "a file named results", which the user looked for
    # in vain: `ls` shows a link (a moved or unmounted folder). Found by running the
    # job on an --output whose results, errors and .tmp were each a dangling link.
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(tmp_path / "moved")
    flags = job_flags(finished["folder"], linear_keras, out)
    capsys.readouterr()
    assert main(flags) == 2
    (line,) = [s for s in capsys.readouterr().err.splitlines() if s.startswith("error:")]
    assert line == (
        f"error: --output '{out}' holds a symbolic link named {name} to "
        f"{str(tmp_path / 'moved')!r}, which does not exist, where the job keeps its {what} "
        "(a folder): create it, delete the link, or choose another folder."
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("again", ["--overwrite", "--resume"])
def test_a_folder_named_report_html_is_no_page_of_the_run_to_delete(
    again, finished, linear_keras, tmp_path
):
    # --overwrite and --resume delete the run's report.html; Beam's delete of a path
    # that is a folder deletes the folder with everything in it: a user's folder of
    # that name went, their files with it.
    out = tmp_path / "out"
    finished["copy"](out)
    mine = out / "report.html" / "drafts" / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    manifest = run(
        [*job_flags(finished["folder"], linear_keras, out), again], save_main_session=False
    )
    assert manifest["status"] == "complete" and manifest["all_inputs_accounted_for"]
    assert len(pd.read_parquet(out / "results")) == 4
    assert mine.read_text() == "mine"


@contextlib.contextmanager
def _chattr(path: Path, letter: str):
    """`path` flagged for real (`chattr +letter`) while in the block: "i", immutable (no
    file can be made in or deleted from such a folder, nor such a file deleted); "a",
    append-only (files can be made in such a folder, none deleted from it): not even
    by root, whom permissions do not stop. Skips the test where the flag cannot be set
    (no CAP_LINUX_IMMUTABLE, as a user other than root; a file system without it)."""
    if shutil.which("chattr") is None:
        pytest.skip("no chattr to flag a file")
    made = subprocess.run(["chattr", f"+{letter}", str(path)], capture_output=True, text=True)
    if made.returncode:
        pytest.skip(f"cannot flag {path} +{letter}: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", f"-{letter}", str(path)], check=True)


def _immutable(path: Path) -> contextlib.AbstractContextManager:
    """`path` made immutable for real while in the block (`_chattr`)."""
    return _chattr(path, "i")


@contextlib.contextmanager
def _unwritable(folder: Path):
    """No file can be made in `folder` while in the block, for real: read-only, or, for
    root, immutable (`_immutable`)."""
    if os.geteuid() == 0:
        with _immutable(folder):
            yield
        return
    folder.chmod(0o555)
    try:
        yield
    finally:
        folder.chmod(0o755)


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("name, what", _RUN_FOLDERS_SAID)
def test_a_run_folder_no_file_can_be_made_in_is_refused_before_the_run(
    name, what, finished, linear_keras, tmp_path, jobs
):
    # An --output whose results/ no file could be made in (read-only; immutable, which
    # stops root too) ran every image, then failed at its very end as Beam's sink moved
    # its rows there ("Encountered exceptions in finalize_write: ... Operation not
    # permitted", exit 1); so did one whose errors/ or .tmp/ was so. Refused at launch
    # now, before the model loads, and the same command runs once the folder is fixed.
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    flags = job_flags(finished["folder"], linear_keras, out)
    with _unwritable(out / name):
        first = jobs(*flags)
        assert first.wait(timeout=300) == 2
    log = first.log.read_text()
    (line,) = _error_lines(log)
    assert line.startswith(
        f"error: --output '{out}': no file can be made in its {name} folder, where the job "
        f"keeps its {what} ("
    ), log[-3000:]
    assert line.endswith("): make it writable, or choose another folder.")
    assert "Auditing" not in log  # no run began
    assert sorted(p.name for p in out.iterdir()) == [name]  # no lock, no manifest
    assert main(flags) == 0  # fixed, the same command (in this process: a start-up less)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["all_inputs_accounted_for"] and manifest["counts"]["inputs"] == 5
    assert sorted(pd.read_parquet(out / "results").image_id) == sorted(finished["folder"]["pixels"])


def _assert_complete_with_schema_warning(out: Path, warnings: list[str], blocked: Path) -> None:
    """The run in `out` completed (4 rows, the folder free), having said once that it could
    not write its schema file `blocked`, a folder."""
    (warning,) = warnings
    assert warning.startswith(f"Could not write {blocked} (") and "Is a directory" in warning
    assert warning.endswith("; the run goes on.") and not (out / ".lock").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["all_inputs_accounted_for"]
    assert len(pd.read_parquet(out / "results")) == 4 and blocked.is_dir()


def test_a_schema_file_results_cannot_take_is_a_warning_and_the_run_goes_on(
    finished, linear_keras, tmp_path, capsys, caplog
):
    # The schema-only file a run writes in results/ as it claims the folder, refused
    # for real: a folder of the user's where it goes, which no write replaces (root's
    # neither). It is a convenience (results/ reads with every column before the rows
    # are in place), so the run says so and goes on: it completes, and so does a
    # --resume of it; the user's folder is kept. Both through the command line's entry
    # point in this process (the launcher writes the file: a TensorFlow start-up less;
    # a warning's line as a process prints it: test_a_failed_run_whose_manifest_cannot_
    # say_so_warns_and_leaves_it_running).
    out = tmp_path / "out"
    blocked = out / "results" / "part-schema.parquet"
    blocked.mkdir(parents=True)
    flags = job_flags(finished["folder"], linear_keras, out)
    for again in ([], ["--resume"]):
        capsys.readouterr()
        caplog.clear()
        assert main([*flags, *again]) == 0, again
        assert not _error_lines(capsys.readouterr().err)
        warnings = [  # those a process prints as "WARNING transforms.sinks: " lines
            r.getMessage()
            for r in caplog.records
            if (r.levelname, r.name) == ("WARNING", "transforms.sinks")
        ]
        _assert_complete_with_schema_warning(out, warnings, blocked)
    resumed = json.loads((out / "manifest.json").read_text())
    assert resumed["counts"]["skipped_done_before"] == 4


def _immutable_as_the_model_loads(path: Path, flagged: contextlib.ExitStack, monkeypatch) -> None:
    """`path` made immutable (`_immutable`, until `flagged` closes) as a launch in this
    process loads its model, once: after the launch's checks of --output, which refuse
    a file that cannot be deleted, so that the delete under the folder's lock meets it,
    as it meets a flag set since the checks."""
    import pipeline.main as job

    resolve = job.resolve_model_spec

    def flagged_then_resolved(*args, **kwargs):
        if not flagged_then_resolved.done:
            flagged.enter_context(_immutable(path))
            flagged_then_resolved.done = True
        return resolve(*args, **kwargs)

    flagged_then_resolved.done = False
    monkeypatch.setattr(job, "resolve_model_spec", flagged_then_resolved)


def test_a_resume_whose_earlier_error_records_cannot_be_deleted_says_so_and_frees_the_folder(
    finished, linear_keras, tmp_path, capsys, monkeypatch
):
    # A --resume deletes the earlier run's error records (it retries their images) once
    # its own manifest, "running", is written. That delete failing for real (an
    # immutable file: root's delete fails too; made so as the model loads, after the
    # launch's checks, which refuse it before: test_a_readying_that_could_not_delete_is_
    # refused_before_the_model_loads) ends the run before it started: one error: line
    # naming --output and the fix (exit 2, before any image), its manifest "failed" with
    # the reason, the folder free again; fixed, the same command completes.
    # Through the command line's entry point in this process (a TensorFlow start-up less;
    # a readying that failed, by a process of its own: test_a_folder_that_cannot_be_
    # readied_for_want_of_space_is_told_to_free_some).
    out = tmp_path / "out"
    finished["copy"](out)
    earlier = json.loads((out / "manifest.json").read_text())
    (record,) = (out / "errors").glob("*.parquet")
    flags = [*job_flags(finished["folder"], linear_keras, out), "--resume"]
    with contextlib.ExitStack() as flagged:
        _immutable_as_the_model_loads(record, flagged, monkeypatch)
        capsys.readouterr()
        assert main(flags) == 2
        err = capsys.readouterr().err
        (line,) = _error_lines(err)
        assert line.startswith(
            f"error: --output '{out}': cannot write there while readying it for this run "
            f"(Delete operation failed with exceptions {{'{record}': "
        ), err[-3000:]
        assert line.endswith("; fix the folder (its permissions), then run the same command again.")
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "failed" and manifest["run_id"] != earlier["run_id"]
        assert manifest["reason"].startswith("BeamIOError: Delete operation failed")
        assert manifest["start_time"] < manifest["end_time"] and "counts" not in manifest
        assert [run["status"] for run in manifest["earlier_runs"]] == ["complete"]
        assert not (out / ".lock").exists() and record.exists()
        capsys.readouterr()  # run again unfixed: refused at launch for the cause, not as in use
        assert main(flags) == 2
        (again,) = _error_lines(capsys.readouterr().err)
        assert again.startswith(f"error: --output '{out}': --resume deletes '{record}', which ")
    assert main(flags) == 0
    resumed = json.loads((out / "manifest.json").read_text())
    assert resumed["status"] == "complete" and resumed["all_inputs_accounted_for"]
    # The run refused at launch wrote nothing: no "failed" run of its own.
    assert [run["status"] for run in resumed["earlier_runs"]] == ["complete", "failed"]
    assert resumed["counts"]["skipped_done_before"] == 4
    assert len(pd.read_parquet(out / "results")) == 4
    assert list(pd.read_parquet(out / "errors").file_name) == ["broken.jpg"]


def test_an_overwrite_that_cannot_delete_the_earlier_run_says_so_and_frees_the_folder(
    finished, linear_keras, tmp_path, capsys, monkeypatch
):
    # An --overwrite marks the earlier run "replacing", then deletes its files; one that
    # cannot be deleted for real (an immutable file: root's delete fails too; made so as
    # the model loads, after the launch's checks, which refuse it before) ends it
    # before it started, exit 2, one error: line naming --output and the fix; the
    # folder holds a run the next --overwrite replaces, free again: fixed, it completes.
    out = tmp_path / "out"
    finished["copy"](out)
    (rows,) = (out / "results").glob("*.parquet")
    flags = [*job_flags(finished["folder"], linear_keras, out), "--overwrite"]
    with contextlib.ExitStack() as flagged:
        _immutable_as_the_model_loads(rows, flagged, monkeypatch)
        capsys.readouterr()
        assert main(flags) == 2  # in this process: a TensorFlow start-up less
        (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(
        f"error: --output '{out}': cannot write there while readying it for this run "
        f"(Delete operation failed with exceptions {{'{rows}': "
    )
    assert line.endswith("; fix the folder (its permissions), then run the same command again.")
    assert json.loads((out / "manifest.json").read_text())["status"] == "replacing"
    assert not (out / ".lock").exists()
    assert main(flags) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["all_inputs_accounted_for"] and manifest["earlier_runs"] == []
    assert len(pd.read_parquet(out / "results")) == 4


@pytest.mark.parametrize(
    "flag, blocked, letter, doing",
    [
        ("--overwrite", "results/part-00000-of-00001.parquet", "i", "--overwrite"),
        ("--resume", "errors/*.parquet", "i", "--resume"),
        ("--overwrite", "errors", "a", "the job"),
        (None, "results", "a", "the job"),  # a fresh run: its schema file, at its end
    ],
)
def test_a_readying_that_could_not_delete_is_refused_before_the_model_loads(
    flag, blocked, letter, doing, finished, unloadable_keras, tmp_path
):
    # An --overwrite deletes the earlier run's files, a --resume its error records (it
    # retries them), under the folder's lock once the model has loaded: a file that
    # cannot be deleted (immutable; a folder append-only: root's delete fails too) was
    # found only then, after a model load of seconds to minutes, and the earlier run
    # was left "replacing", or a "failed" manifest over it; a fresh run in an empty
    # append-only results/ did every image, then failed deleting its schema file. Refused
    # at launch now, in a real process, without deleting anything: exit 2, its one
    # error: line (a model that cannot load would have said its own), the folder as it
    # was and free (no probe left in an append-only folder).
    out = tmp_path / "out"
    if flag is None:
        (out / blocked).mkdir(parents=True)
    else:
        finished["copy"](out)
    (path,) = out.glob(blocked)
    flags = [*job_flags(finished["folder"], unloadable_keras, out), *filter(None, [flag])]
    before = _tree(out), sorted(out.rglob("*"))
    with _chattr(path, letter):
        done = _command(flags)
        after = _tree(out), sorted(out.rglob("*"))
    assert done.returncode == 2, done.stderr[-3000:]
    what, word = ("", "immutable") if letter == "i" else ("files in ", "append-only")
    whom = "it" if letter == "i" else "a file in it"
    assert _error_lines(done.stderr) == [
        f"error: --output '{out}': {doing} deletes {what}'{path}', which is {word} (no one "
        f"may delete {whom}, root neither); clear the flag (chattr -{letter} {path}), or "
        "choose another folder."
    ], done.stderr[-3000:]
    assert "Auditing" not in done.stderr and "Traceback" not in done.stderr
    assert after == before  # nothing deleted, no lock left, no probe


def test_a_folder_that_cannot_be_readied_for_want_of_space_is_told_to_free_some(
    finished, linear_keras, tmp_path
):
    # A write that fails for want of space as the run readies --output (its manifest, for
    # real: a file-size limit its lock fits in, not its manifest: EFBIG, as a full disk or
    # quota) is told to free some space; one that fails otherwise (an immutable file, the
    # tests above) to fix the folder: it said "free some space or fix the folder" to both.
    # Its stderr is a pipe: a log file would be cut at the limit.
    out = tmp_path / "out"
    flags = job_flags(finished["folder"], linear_keras, out)
    done = _command(flags, file_size_limit=600)
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = _error_lines(done.stderr)
    assert line == (
        f"error: --output '{out}': cannot write there while readying it for this run "
        "([Errno 27] File too large); free some space, then run the same command again."
    )
    assert not (out / ".lock").exists() and "Traceback" not in done.stderr
    assert main(flags) == 0  # space freed (no limit here), the same command completes
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["all_inputs_accounted_for"]
    assert len(pd.read_parquet(out / "results")) == 4


def _manifest_sizes(flags: list[str], monkeypatch) -> tuple[int, int]:
    """The size of the "running" manifest a `python -m pipeline` process of `flags`
    writes as it readies --output, and at most that of the "failed" one it writes as it
    ends for want of space: each written for real (`write_json`), by the launch that
    readies the folder (`prepare`) and `ended_unfinished`, in this process, its arguments
    and working folder set as the process's (a manifest records its command and folder).
    The error here, a bare EFBIG, words a shorter reason than the run's (Beam's wrapping,
    the step it failed in)."""
    import pipeline.__main__ as entry
    from pipeline.main import _release, prepare
    from pipeline.stopping import ended_unfinished

    out = Path(flags[flags.index("--output") + 1])
    with monkeypatch.context() as m:
        m.chdir(_REPO)
        m.setattr(sys, "argv", [entry.__file__, *flags])  # as `python -m pipeline` sets it
        job, _ = prepare(flags)
    try:
        running = len((out / "manifest.json").read_bytes())
        ended_unfinished(job, OSError(errno.EFBIG, os.strerror(errno.EFBIG)))
    finally:
        _release(job)
    failed = json.loads((out / "manifest.json").read_text())
    assert failed["status"] == "failed" and "File too large" in failed["reason"]
    return running, len((out / "manifest.json").read_bytes())


# A `sitecustomize` by which each of Beam's worker processes, told to end, exits with
# return code 134, as one that aborts at its exit ('terminate called after throwing an
# instance of ...', SIGABRT: seen in 1 of 3 runs with --verbose).
_WORKERS_ABORT_AT_EXIT = """import atexit, os
if "CONTROL_API_SERVICE_DESCRIPTOR" in os.environ:
    atexit.register(os._exit, 134)
"""


def test_a_failed_run_whose_manifest_cannot_say_so_warns_and_leaves_it_running(
    finished, linear_keras, tmp_path, jobs, monkeypatch
):
    # docs/reliability.md: a run that failed as its manifest could not be written
    # either (a full disk) keeps "running", with a warning. Made for real: a file-size
    # limit (EFBIG, the real write path failing as on a full disk or quota) that the
    # "running" manifest fits in, not the "failed" one (its end time and reason more)
    # nor the rows. Their sizes: the two written for a folder of the same name's length,
    # in this process (`_manifest_sizes`: a TensorFlow start-up less). On two worker
    # processes, its log a file under the same limit (about 2.3 kB): each worker printed
    # its failed bundle's traceback there, and Beam logged it twice more (25 kB in all),
    # which filled the log: the `error:` line and the warning were lost. Each worker,
    # told to end once the run failed, aborts at its exit here (`_WORKERS_ABORT_AT_EXIT`):
    # that abort was named the run's failure ('a worker process ended, return code 134
    # (SIGABRT)') in place of the write's. Each process printed TensorFlow's 'E0000 ...
    # failed call to cuInit' where no GPU driver is (TF_CPP_MIN_LOG_LEVEL 2, a common
    # export, shows ERROR lines).
    def flags(name: str) -> list[str]:
        return [
            *job_flags(finished["folder"], linear_keras, tmp_path / name),
            *cli_args(direct_running_mode="multi_processing", direct_num_workers=2),
        ]

    running, whole = _manifest_sizes(flags("out1"), monkeypatch)
    assert whole - running > 90  # its end time (50 bytes) and reason: room for a limit between
    out = tmp_path / "out2"
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_WORKERS_ABORT_AT_EXIT)
    second = jobs(*flags("out2"), file_size_limit=(running + whole) // 2, site=site)
    assert second.wait(timeout=300) == 1
    log = second.log.read_text()
    (line,) = _error_lines(log)
    assert line.startswith("error: the run failed: ") and "[Errno 27] File too large" in line
    assert "A write failed for want of space" in line and "rerun with --resume" in line
    assert "Traceback" not in log and "Error processing instruction" not in log, log
    # The job's own lines alone (a worker's progress, if it ends a batch first; the
    # results' schema file, if its write fails first).
    said = {line.split(":")[0] for line in log.splitlines() if not line.startswith("error:")}
    own = {"INFO pipeline.resolve", "INFO pipeline.main", "WARNING pipeline.stopping"}
    assert own <= said <= own | {"INFO pipeline.progress", "WARNING transforms.sinks"}, log
    assert (
        f"WARNING pipeline.stopping: Could not record in {out / 'manifest.json'} that the run "
        "failed: [Errno 27] File too large"
    ) in log.splitlines()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "running" and "reason" not in manifest
    assert len((out / "manifest.json").read_bytes()) == running  # the size said
    assert not (out / ".lock").exists() and not (out / "manifest.json.tmp").exists()
    # The folder is free: a --resume takes it (as a killed run's) and completes the run.
    resumed = run(
        [
            *flags("out2"),
            "--resume",
            *cli_args(direct_running_mode="in_memory", direct_num_workers=1),
        ],
        save_main_session=False,
    )
    assert resumed["all_inputs_accounted_for"] and len(pd.read_parquet(out / "results")) == 4
    (earlier,) = resumed["earlier_runs"]
    assert (earlier["run_id"], earlier["status"]) == (manifest["run_id"], "running")


# A library caller (a notebook) whose runs failed for want of space: it keeps each
# run's error (`sys.last_value`), frees some space (the file-size limit raised) and
# drops the error later. argv[1] is a JSON list of the runs, each [its --output, its
# flags], one after the other in this process. Prints a JSON line a run once it has
# failed: the error's text, whether --output is still locked, the files under it this
# process still has open, its worker processes still running, and whether any file
# there changed when the error was dropped.
_FAILED_RUN_KEPT = """
import gc, json, os, resource, signal, sys
from pipeline import run

def files(out):
    found = {}
    for folder, _, names in os.walk(out):
        for name in names:
            stat = os.stat(os.path.join(folder, name))
            found[os.path.relpath(os.path.join(folder, name), out)] = [stat.st_size, stat.st_mtime_ns]
    return found

def open_here(out):
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the listing's own descriptor, closed
            pass
    return [t for t in targets if t.startswith(out + os.sep)]

def children():
    mine, found = str(os.getpid()), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[1].decode() == mine and fields[0] not in (b"Z", b"X"):
            found.append(int(pid))
    return found

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
for out, flags in json.loads(sys.argv[1]):
    resource.setrlimit(resource.RLIMIT_FSIZE, (4500, resource.RLIM_INFINITY))
    error = None
    try:
        run(flags, save_main_session=False)
    except Exception as e:
        error = e
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    said = {"error": str(error), "locked": os.path.exists(os.path.join(out, ".lock")),
            "open": open_here(out), "workers": children()}
    before = files(out)
    del error
    gc.collect()
    after = files(out)
    said["changed"] = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    print(json.dumps(said), flush=True)
"""

# The runs of _FAILED_RUN_KEPT: Beam's DirectRunner in this process, and with two
# worker processes.
_MODES = {
    "in_process": [],
    "two_processes": ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"],
}


def test_a_failed_run_leaves_nothing_writing_in_its_output_once_it_frees_it(
    image_folder, linear_keras, tmp_path
):
    """Once a failed run has freed its --output (the lock gone), nothing of that run
    writes there: a next --resume or --overwrite may start at once. Beam's result
    writer of the bundle that failed (a write cut short by a file-size limit, as on a
    full disk) kept its temp file open under `.tmp/`, referenced by the error the
    caller got, and wrote its buffered bytes there whenever the error was dropped,
    after the lock was gone. A multi-process run's workers have ended by then. Each
    mode's run, one after the other in one process (a Python start-up less)."""
    runs = [
        [str(tmp_path / mode), [*job_flags(image_folder, linear_keras, tmp_path / mode), *extra]]
        for mode, extra in _MODES.items()
    ]
    env = {**os.environ, "PYTHONPATH": str(_REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-c", _FAILED_RUN_KEPT, json.dumps(runs)],
        cwd=_REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[Errno 27] File too large" in done.stderr  # the runs failed as meant
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(_MODES), done.stdout[-3000:]
    for mode, said in zip(_MODES, lines, strict=True):
        assert "[Errno 27] File too large" in said["error"], (mode, said)  # failed as meant
        assert not said["locked"] and said["workers"] == [], mode
        assert said["changed"] == [], mode  # the error dropped: no late write
        assert said["open"] == [], mode
