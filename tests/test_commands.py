"""The commands that read a run (`pipeline.report`, `pipeline.sanity`): their flag
errors read as the job's (`pipeline.commands.CommandParser`); and how every command,
the job's too, ends its process on a Ctrl-C (`pipeline.commands.exit_with`)."""

import inspect
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import report, sanity
from pipeline.logs import NOT_STARTED
from tests.conftest import cli_args, launched

_REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command, args, expected",
    [
        (report, ["--outptu", "r.html"], "error: unknown flag --outptu; did you mean --output?"),
        (report, ["--output", "r.html", "--gallery", "abc"], "error: argument --gallery: invalid"),
        (report, ["--output", "r.html", "--out", "x.html"], "error: unknown flag --out; did you"),
        (sanity, ["--images", "two"], "error: argument --images: invalid int"),
        (sanity, ["--imag", "2"], "error: unknown flag --imag; did you mean --images?"),
        # Flags are lower-case: one typed in capitals got no suggestion at all.
        (report, ["--GALLERY", "3"], "error: unknown flag --GALLERY; did you mean --gallery?"),
        (sanity, ["--Images", "2"], "error: unknown flag --Images; did you mean --images?"),
    ],
)
def test_flag_errors_are_one_error_line_as_the_jobs_are(command, args, expected, tmp_path, capsys):
    # Like `python -m pipeline`: exit 2, one `error:` line naming the flag, no usage
    # block; a flag cut short (--out, --imag) or misspelt is refused, never guessed.
    with pytest.raises(SystemExit) as exit_:
        command.main(["--input", str(tmp_path), *args])
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(expected) and line.endswith("(see --help).")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    "command, args, expected",
    [
        (
            report,
            ["--input", "x", "--outptu", "r"],
            "unknown flag --outptu; did you mean --output?",
        ),
        (sanity, ["--inptu", "x"], "unknown flag --inptu; did you mean --input?"),
        (sanity, [], "the following arguments are required: --input"),
        (report, ["--output", "r"], "the following arguments are required: --input"),
    ],
)
def test_an_unknown_flag_is_named_before_the_required_one_it_misspells(
    command, args, expected, capsys
):
    with pytest.raises(SystemExit):
        command.main(args)
    assert capsys.readouterr().err == f"error: {expected} (see --help).\n"


@pytest.mark.parametrize(
    "command, usage",
    [
        (report, "python -m pipeline.report [-h] --input INPUT [--output OUTPUT] [--examples"),
        (sanity, "python -m pipeline.sanity [-h] --input INPUT [--images"),
    ],
)
def test_help_shows_the_required_flags_as_required(command, usage, capsys):
    with pytest.raises(SystemExit) as exit_:
        command.main(["--help"])
    assert exit_.value.code == 0
    first = " ".join(capsys.readouterr().out.split("\n\n")[0].split())
    assert first.startswith(f"usage: {usage}")


# A Ctrl-C that lands while a string `exec` runs (dataclasses and namedtuples build
# their methods so, many times while Beam and TensorFlow import).
_CTRL_C_IN_AN_EXEC = "exec('raise KeyboardInterrupt')"


class _CtrlCWhileBeamImports:
    """An import hook: a Ctrl-C in Beam's import, inside one of its string `exec`s."""

    def find_spec(self, name, path=None, target=None):
        if name == "apache_beam":
            exec(_CTRL_C_IN_AN_EXEC)


def _run_module_after(setup: str, module: str, args: list[str], cwd) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS`, in a process where `setup` ran first (from a module run
    with `-m` as well: CPython's exit differs under `-c`)."""
    driver = "\n".join(
        [
            "import runpy, sys",
            setup,
            f"sys.argv = [{module!r}, *{args!r}]",
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)",
        ]
    )
    (Path(cwd) / "driver.py").write_text(driver)
    return subprocess.run(
        launched([sys.executable, "-m", "driver"], ctrl_c=True),
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), str(_REPO)])},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_ctrl_c_while_beam_imports_exits_130_saying_nothing_was_written(tmp_path):
    # CPython marks a KeyboardInterrupt that leaves a string `exec` as unhandled even
    # when it is caught: without care, the process then ends by SIGINT (a parent sees
    # returncode -2; a shell 130), whatever status the command returned.
    hook = inspect.getsource(_CtrlCWhileBeamImports)
    setup = f"_CTRL_C_IN_AN_EXEC = {_CTRL_C_IN_AN_EXEC!r}\n{hook}\nsys.meta_path.insert(0, _CtrlCWhileBeamImports())"
    done = _run_module_after(setup, "pipeline", ["--output", str(tmp_path / "out")], tmp_path)
    assert done.returncode == 130, done.stderr[-2000:]
    assert done.stderr.splitlines()[-1] == f"error: {NOT_STARTED}"
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


_ENDS_AFTER_ITS_LAST_LINE = """
import atexit, builtins, os, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pipeline.commands import exit_with

class Finalized:
    def __del__(self, write=os.write):
        write(2, b"finalized\\n")

builtins.kept = Finalized()  # cleared as the interpreter tears down
atexit.register(lambda: sys.stdout.write(" atexit ran"))
threading.Thread(target=lambda: (time.sleep(0.2), sys.stdout.write(" thread done"))).start()
pool = ThreadPoolExecutor(2)  # left open: its idle threads end with the process
sys.stdout.write(pool.submit(lambda: "no line end").result())  # buffered: a pipe's stdout
exit_with(3)
"""


def test_a_command_ends_with_its_status_without_the_interpreters_teardown(tmp_path):
    # A finished run once died by SIGABRT after its last line ("terminate called without
    # an active exception", returncode -6; seen once in a test run on a loaded machine):
    # a library's C++ thread (Arrow's, gRPC's, TensorFlow's) that calls into Python as
    # the interpreter finalizes is ended by pthread_exit, which aborts through its C++
    # frames (apache/arrow#34314, #45017). No teardown, no such thread: the command's
    # own threads finish (an executor's idle ones are told to end, as at Python's own
    # exit: joined without that, they hung the command), its atexit functions run and
    # its streams are flushed first.
    script = tmp_path / "ends.py"
    script.write_text(_ENDS_AFTER_ITS_LAST_LINE)
    done = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "PYTHONPATH": str(_REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout == "no line end thread done atexit ran"
    assert "finalized" not in done.stderr


def _ctrl_c_as_the_process_ends():
    """A Ctrl-C as the process ends, its command returned: an atexit function's."""
    open("ctrl_c_sent", "w").close()  # noqa: SIM115 - a mark, closed at once
    os.kill(os.getpid(), signal.SIGINT)


def test_a_ctrl_c_while_a_finished_run_ends_keeps_its_exit_status(
    image_folder, linear_keras, tmp_path
):
    # The summary printed, CPython tore TensorFlow and Beam down for a second or two
    # with SIGINT at its default action: a Ctrl-C then ended the complete run by
    # SIGINT (a parent's returncode -2, a shell's 130). No teardown now, but the
    # process's atexit functions still run.
    ending = inspect.getsource(_ctrl_c_as_the_process_ends)
    setup = f"import atexit, os, signal\n{ending}\natexit.register(_ctrl_c_as_the_process_ends)"
    args = cli_args(dataset=image_folder["root"], model=linear_keras, output=tmp_path / "out")
    done = _run_module_after(setup, "pipeline", [*args, "--steps", "2"], tmp_path)
    assert (tmp_path / "ctrl_c_sent").exists()  # the Ctrl-C came as the process ended
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Results in" in done.stdout and "Traceback" not in done.stderr


def test_a_ctrl_c_while_the_summary_prints_says_the_run_finished(
    image_folder, linear_keras, tmp_path
):
    # The run is complete when its summary prints (seconds on gs://, reading results/'s
    # footers): a Ctrl-C there was a KeyboardInterrupt traceback.
    setup = "\n".join(
        [
            "import os, signal",
            "import pipeline.summary as summary",
            "printed = summary.print_summary",
            "def print_summary(*args, **kwargs):",
            "    os.kill(os.getpid(), signal.SIGINT)",
            "    printed(*args, **kwargs)",
            "summary.print_summary = print_summary",
        ]
    )
    out = tmp_path / "out"
    args = cli_args(dataset=image_folder["root"], model=linear_keras, output=out, steps=2)
    done = _run_module_after(setup, "pipeline", args, tmp_path)
    assert done.returncode == 130, done.stderr[-2000:]
    assert done.stderr.splitlines()[-1] == (
        f"error: interrupted while printing the summary; the run finished, its results are "
        f"in {out}."
    )
    assert "Traceback" not in done.stderr
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


class _SignalWhileImporting:
    """An import hook: the signal `signum` arrives as the process first imports `module`."""

    def __init__(self, module, signum):
        self.module, self.signum, self.sent = module, signum, False

    def find_spec(self, name, path=None, target=None):
        if name == self.module and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize(
    "signum, status, said",
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "stopped by SIGTERM")],
)
@pytest.mark.parametrize("module", ["pipeline.report", "pipeline.sanity"])
def test_a_stop_while_a_command_imports_is_one_error_line(module, signum, status, said, tmp_path):
    # A Ctrl-C in the first second of `python -m pipeline.report` (its module's imports)
    # was a KeyboardInterrupt traceback and a death by SIGINT; a SIGTERM at any time
    # ended the command without a word. Both now stop it as they stop the job.
    hook = inspect.getsource(_SignalWhileImporting)
    setup = "\n".join(
        [
            "import os",
            hook,
            # matplotlib: among the report's and the sanity check's own imports
            f"sys.meta_path.insert(0, _SignalWhileImporting('matplotlib', {int(signum)}))",
        ]
    )
    args = ["--input", str(tmp_path / "run"), "--output", str(tmp_path / "r.html")]
    done = _run_module_after(
        setup, module, args if module.endswith("report") else args[:2], tmp_path
    )
    assert done.returncode == status, done.stderr[-2000:]
    assert done.stderr.splitlines() == [f"error: {said}; run the command again."]
    assert not (tmp_path / "r.html").exists()


# A run folder named with a right-to-left override, a terminal reset (ESC c) and a
# newline: each command's error quotes its manifest.json's path as the JSON library's
# message and the job's carry it (raw, until escaped where the line is printed).
_NAMED_BADLY = "run\u202egnp.\x1bc\nx"


def _badly_named_run(tmp_path: Path) -> Path:
    run = tmp_path / _NAMED_BADLY
    run.mkdir()
    (run / "manifest.json").write_text("{edited")  # no JSON: its message names the file
    return run


def _escaped_error_line(stderr: str) -> str:
    """The one `error:` line of `stderr`, its last, with nothing raw a terminal obeys."""
    (line,) = [x for x in stderr.splitlines() if x.startswith("error:")]
    assert line.isprintable() and stderr.endswith(f"{line}\n"), repr(stderr[-500:])
    assert "\\u202e" in line and "\\x1bc" in line, line
    return line


@pytest.mark.parametrize("module", ["pipeline.report", "pipeline"])
def test_a_commands_error_line_escapes_what_a_terminal_must_not_get_raw(
    module, image_folder, linear_keras, tmp_path, monkeypatch, capsys
):
    # Each command's `main`, as `python -m <module>` calls it, in this process: < 2 s,
    # where a fresh process spent 6-11 s importing TensorFlow and Beam.
    from pipeline.__main__ import main  # noqa: PLC0415

    run = _badly_named_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    if module == "pipeline":
        args = cli_args(dataset=image_folder["root"], model=linear_keras, output=run)
        assert main([*args, "--resume"]) == 2
    else:
        assert report.main(["--input", str(run), "--output", "r.html"]) == 2
    line = _escaped_error_line(capsys.readouterr().err)
    # The whole reason, after the path: --resume's took the first line of the manifest's
    # message, which ended at the newline in the unquoted path.
    assert "manifest.json': not JSON (Expecting property name" in line, line


def test_the_sanity_checks_error_line_escapes_what_a_terminal_must_not_get_raw(tmp_path, capsys):
    # In this process (its `main`, as `python -m pipeline.sanity` calls it): < 1 s, where
    # a fresh process spent 10 s importing TensorFlow and Beam.
    run = _badly_named_run(tmp_path)
    assert sanity.main(["--input", str(run), "--images", "1"]) == 2
    line = _escaped_error_line(capsys.readouterr().err)
    assert "\\n" in line  # the newline too, where the message quotes the whole path
