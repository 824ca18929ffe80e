"""The argument parser of the commands that read a run (`pipeline.report`, `pipeline.sanity`),
their printing to a stdout whose reader may have stopped reading (`| head`), and how
every command, the job's too, is stopped (Ctrl-C, SIGTERM) and ends its process
(`exit_with`).

A command's stdout holds what it means to print (`to_stdout`) and nothing else: while
it works (`others_to_stderr`), what libraries write there goes to stderr.

Their flag errors read as the job's (`pipeline.options`): one `error:` line and
exit 2, no usage block; a flag cut short is refused, never taken as an
abbreviation; an unknown flag is named, with the closest known one, before a
required flag it may have misspelt is said to be missing.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import difflib
import importlib
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn, TextIO

from pipeline import logs
from transforms import wording

__all__ = [
    "CommandParser",
    "error_line",
    "exit_with",
    "interruption",
    "others_to_stderr",
    "run_module",
    "run_read_failure",
    "sigterm_stops_as_ctrl_c",
    "stop_cause",
    "to_stdout",
    "user_path",
]


def error_line(message: str) -> None:
    """Prints `message` to stderr as the command's one `error:` line. Its control and
    format characters are escaped (`wording.printable`): a path a library's or the
    OS's message quotes as it is, with a newline, a terminal escape or a right-to-left
    override in its name, is shown as written, on that one line, and cannot move,
    clear or reorder the terminal."""
    print(f"error: {wording.printable(message)}", file=sys.stderr)


def run_read_failure(flag: str, folder: str, error: Exception) -> tuple[int, str] | None:
    """The exit status and `error:` line of a command whose `flag` names the run
    `folder` it could not read because of `error`: 2 for a folder that holds no
    readable run (no manifest, a damaged one, a damaged file in results/) or one this
    user or these credentials may not read (PermissionError), 1 for
    gs:// storage that does not answer (no network: not a bad flag); None for an
    error that is not about reading the run."""
    import pyarrow as pa  # noqa: PLC0415 - on failure only

    from transforms import files, manifest, results  # noqa: PLC0415

    if isinstance(error, files.RemoteUnreachable):
        return 1, str(error)
    if isinstance(error, FileNotFoundError):
        return 2, manifest.missing_run_message(flag, folder, error)
    if isinstance(error, (manifest.UnreadableManifest, manifest.ManifestNotAFile)):
        return 2, manifest.unreadable_manifest_message(flag, folder, error)
    if isinstance(error, PermissionError):  # its file, or a gs:// object (files.open_read)
        fix = files.read_access_fix(folder, error)
        return 2, f"cannot read {flag} {folder!r}: {error}; {fix}, then run this again."
    if isinstance(error, pa.ArrowInvalid):
        error = results.UnreadableResults.damaged(error)  # a file after the first listed
    if isinstance(error, results.UnreadableResults):
        return 2, (
            f"cannot read the {error.folder} of {flag} {folder!r}: {error}. Move the file "
            f"out of {error.folder}/ (or rerun the audit) and run this again."
        )
    return None


def user_path(text: str) -> str:
    """A path flag's value (argparse's `type`) with a leading `~` as the home folder, as
    the job takes its own path flags: quoted, or after '=' (`--input=~/out`), the shell
    leaves it, and `~/out` was read as a folder named `~`."""
    return os.path.expanduser(text) if text.startswith("~") else text


def to_stdout(write: Callable[[], None]) -> None:
    """Runs `write`, which prints to stdout; a reader that stopped reading (`| head`) has
    the lines it wanted, and is no failure of the command (whose status stands). A
    process without a stdout (`>&-`: sys.stdout is None) prints nothing. A character
    that stdout's encoding cannot write (a file named `café.png` under
    PYTHONIOENCODING=ascii, or a C locale without Python's UTF-8 mode) is escaped
    (`caf\\xe9.png`), as Python does on stderr: it was a UnicodeEncodeError after the
    work was done. A command to paste holds no such character: `wording.shell_word`
    writes it as its bytes (`$'caf\\xc3\\xa9'`), which paste as the name."""
    stream = _RESULTS[-1] if _RESULTS else sys.stdout
    if stream is None:
        return
    if hasattr(stream, "reconfigure"):  # a TextIOWrapper; not a notebook's stream
        stream.reconfigure(errors="backslashreplace")
    others, sys.stdout = sys.stdout, stream
    try:
        write()
        stream.flush()
    except BrokenPipeError:
        # Python's advice: stdout to devnull, or the flush at exit fails again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    finally:
        sys.stdout = others


# The command's own stdout while `others_to_stderr` holds it, for `to_stdout`.
_RESULTS: list[TextIO] = []


@contextlib.contextmanager
def others_to_stderr() -> Iterator[None]:
    """While the block runs, what anything but `to_stdout` writes to stdout goes to
    stderr, as it is: Python's prints (sys.stdout: TFDS's "Downloading and preparing
    dataset ..." and "Dataset ... downloaded and prepared ...", once in the summary
    piped to a file) and writes below Python (file descriptor 1: a model's
    `tf.print(..., output_stream=sys.stdout)`, C++'s std::cout, once a line per batch
    amid the summary; worker processes inherit it). Without a stdout (`>&-`), or with
    one that is no file (a test's capture), only Python's are moved."""
    out, err = sys.stdout, sys.stderr
    if out is None or err is None:
        yield
        return
    saved = _descriptor_1_to_stderr(out, err)
    own = out if saved is None else _text_stream(saved, out)
    _RESULTS.append(own)
    sys.stdout = err
    try:
        yield
    finally:
        _RESULTS.remove(own)
        sys.stdout = out
        if saved is not None:
            _descriptor_1_back(own, err)


def _descriptor_1_back(own: TextIO, err: TextIO) -> None:
    """Points file descriptor 1 back at stdout's file (`own`'s, which is closed)."""
    for stream in (err, own):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os.dup2(own.fileno(), 1)  # devnull, if `to_stdout` found its reader gone
    with contextlib.suppress(OSError, ValueError):
        own.close()


def _descriptor_1_to_stderr(out: TextIO, err: TextIO) -> int | None:
    """Points file descriptor 1 at stderr's file when `out` writes to it; a descriptor
    of stdout's own file, or None (`out` writes elsewhere, or stderr has no file)."""
    try:
        if out.fileno() != 1:
            return None
        err_fd = err.fileno()
        out.flush()
    except (AttributeError, OSError, ValueError):
        return None
    saved = os.dup(1)
    os.dup2(err_fd, 1)
    return saved


def _text_stream(fd: int, like: TextIO) -> TextIO:
    """A text stream writing to `fd` (it owns it) as `like` writes."""
    lines = getattr(like, "line_buffering", False)  # a terminal's
    return open(  # closed by `_descriptor_1_back`
        fd, "w", buffering=1 if lines else -1, encoding=like.encoding, errors=like.errors
    )


def exit_with(status: int) -> NoReturn:
    """Ends a command run as `python -m ...` with `status`, without the interpreter's
    teardown: the process's other threads are joined as at Python's exit (daemon
    ones excepted; an executor's idle ones told to end), its atexit functions run
    and its streams are flushed, as at a normal exit; then it ends (`_end_now`).
    It raises no SystemExit for a caller to catch: the last step of a command
    (`python -m`, the `ig-audit` script), in its main thread. From Python, call the
    command's `main`, which returns the status, or `pipeline.main.run`.

    The teardown is what is skipped, and with it three ways a finished command
    lost its status: (1) a library's C++ thread (Arrow's, gRPC's, TensorFlow's)
    that calls into Python while the interpreter finalizes is ended by
    `pthread_exit`, which aborts through its C++ frames: a complete run once died
    by SIGABRT after its last line ("terminate called without an active
    exception"; apache/arrow#34314). (2) A KeyboardInterrupt that left a string
    `exec` is marked unhandled even when the command caught it (a Ctrl-C while
    Beam and TensorFlow import lands in one often), and at exit the mark ended
    the process by SIGINT whatever its status, 130 as 0. (3) A Ctrl-C during the
    teardown, with SIGINT back at its default action, ended a finished run by
    SIGINT. The teardown also cleared the millions of objects the imports of
    TensorFlow, Keras and Beam made: 1.2-1.7 s after the last line (measured by
    benchmarks/teardown.py).

    A Ctrl-C from here on is ignored: nothing is left to stop but the exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Python's own first step of its exit: the threads' atexit functions (an open
    # ThreadPoolExecutor's tell its idle threads to end), then the non-daemon threads
    # joined. Joined without the first, an executor's threads hung the command.
    threading._shutdown()  # noqa: SLF001 - no public way; what Py_FinalizeEx calls
    atexit._run_exitfuncs()  # noqa: SLF001 - the only way to run them before os._exit
    _end_now(status)


_TERMINATED: list[int] = []  # the SIGTERM this process received, if any


@contextlib.contextmanager
def sigterm_stops_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (`kill`, `timeout`, a scheduler's stop) stops a command as a Ctrl-C does:
    a KeyboardInterrupt, so the same clean-up (a multi-process run's workers too) and
    message (`interruption`). Once: a second SIGTERM ends the process at once.
    Python's own handler comes back after, as it does outside the main thread,
    where signals cannot be set."""
    _TERMINATED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        _TERMINATED.append(signum)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        logs.stop_requested()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_cause() -> str:
    """What stopped the command, as its `error:` line says it (`interruption`): "stopped
    by SIGTERM" after a SIGTERM, else "interrupted" (Ctrl-C, a notebook's interrupt)."""
    return "stopped by SIGTERM" if _TERMINATED else "interrupted"


def interruption(message: str) -> int:
    """Says why the command stopped (`message`: what a Ctrl-C would say, "interrupted;
    ..."); its exit status: 130, or 143 when a SIGTERM stopped it."""
    message = re.sub(r"^interrupted", stop_cause(), message)
    error_line(message)
    return 143 if _TERMINATED else 130


def run_module(name: str, parser: Callable[[], argparse.ArgumentParser]) -> NoReturn:
    """`python -m NAME` of a command that reads a run (`pipeline.report`,
    `pipeline.sanity`), called before that module's own imports: parses the command
    line with `parser` (so `--help` and a bad flag answer at once, not after seconds
    of Beam's and TensorFlow's imports), then imports NAME and runs its `main`,
    whose status is the exit status. A Ctrl-C, or a SIGTERM, while it imports or
    runs is one `error:` line and exit 130 (143): it was a KeyboardInterrupt
    traceback and a death by SIGINT, or a death without a word."""
    with sigterm_stops_as_ctrl_c():
        try:
            parser().parse_args()
            with others_to_stderr():
                status = importlib.import_module(name).main()
        except KeyboardInterrupt:
            _end_now(interruption("interrupted; run the command again."))
    exit_with(status)


def _end_now(status: int) -> NoReturn:
    """Ends the process with `status` and without the interpreter's teardown, where
    TensorFlow's, Arrow's and gRPC's threads may still run (`exit_with`): a sanity
    check stopped by SIGTERM once died by SIGABRT instead (a gRPC poller thread found
    its epoll descriptor closed). The streams are flushed first."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    os._exit(status)


class CommandParser(argparse.ArgumentParser):
    """`add_argument(..., required=True)` flags are checked after unknown ones."""

    def __init__(self, **kwargs):
        super().__init__(allow_abbrev=False, **kwargs)
        self._required: list[argparse.Action] = []

    def add_argument(self, *args, **kwargs):
        required = kwargs.pop("required", False)
        action = super().add_argument(*args, **kwargs)
        if required:
            self._required.append(action)
        return action

    def format_usage(self) -> str:
        return self._with_required(super().format_usage)

    def format_help(self) -> str:
        return self._with_required(super().format_help)

    def _with_required(self, format_text):
        """The usage shows the required flags as required (argparse is not told)."""
        for action in self._required:
            action.required = True
        try:
            return format_text()
        finally:
            for action in self._required:
                action.required = False

    def error(self, message: str):  # argparse's hook
        unknown = re.match(r"unrecognized arguments: (--[^\s=]+)", message)
        if unknown:
            flags = [o for a in self._actions for o in a.option_strings]
            # Flags are lower-case: --GALLERY is --gallery in capitals.
            close = difflib.get_close_matches(unknown[1].lower(), flags, n=1, cutoff=0.6)
            message = f"unknown flag {unknown[1]}" + (
                f"; did you mean {close[0]}?" if close else ""
            )
        error_line(f"{message} (see --help).")
        sys.exit(2)

    def parse_args(self, args: Sequence[str] | None = None, namespace=None):
        parsed = super().parse_args(args, namespace)
        missing = [a.option_strings[0] for a in self._required if getattr(parsed, a.dest) is None]
        if missing:
            self.error(f"the following arguments are required: {', '.join(missing)}")
        return parsed
