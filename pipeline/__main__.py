"""`python -m pipeline [flags]` (or `ig-audit [flags]`): run the audit and print where the results are.

Exit status: 0 when the run finished with rows; 1 when it failed while running or
no input gave a row; 2 for bad configuration (one `error:` line, before any work);
130 when interrupted (Ctrl-C); 143 when stopped by SIGTERM, as a Ctrl-C stops it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Sequence

from pipeline import logs
from pipeline.commands import (
    error_line,
    exit_with,
    interruption,
    others_to_stderr,
    sigterm_stops_as_ctrl_c,
    to_stdout,
)
from transforms.errors import for_want_of_space

__all__ = ["main", "main_exit"]

_LOG = logging.getLogger("pipeline")


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "ig-audit" if name == "ig-audit" else "python -m pipeline"


# Memory that ran out, as numpy, TensorFlow and C++ say it (the run's text or type);
# TensorFlow's ResourceExhaustedError, not a Google API's ResourceExhausted (429: a quota).
_NO_MEMORY = re.compile(r"MemoryError|OOM when allocating|ResourceExhaustedError|std::bad_alloc")


def _no_rows(manifest: dict, rows: int) -> str | None:
    """Why the output holds not one row (`rows`: `rows_in_output`) because every
    input failed, or there was none; None when it holds rows. A resumed run whose
    images left to do failed again still holds the rows done before (and those of
    images no longer in the dataset)."""
    if rows:
        return None
    counts = manifest["counts"]
    if not counts["inputs"]:
        return "no input: the dataset gave no image (check --dataset and --split)."
    failed = "the 1 input" if counts["inputs"] == 1 else f"all {counts['inputs']} inputs"
    return f"no input gave a row: {failed} failed (errors by stage above)."


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the job from the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        from pipeline.flags import help_text  # noqa: PLC0415 - no Beam, no TensorFlow

        to_stdout(lambda: print(help_text(_prog())))
        return 0
    verbose = "--verbose" in argv
    # Before anything imports TensorFlow: its C++ log level is read once.
    logs.quiet_environment(verbose)
    logs.configure_logging(verbose)
    with sigterm_stops_as_ctrl_c(), others_to_stderr():
        try:
            from pipeline import main as job  # noqa: PLC0415 - after the environment is set
        except KeyboardInterrupt:  # while Beam and TensorFlow load
            return interruption(logs.NOT_STARTED)
        return _run(argv, verbose, job.run)


def _run(argv: list[str], verbose: bool, run) -> int:
    """The run (`pipeline.main.run`) and what the command line says of it: its exit status."""
    from pipeline.options import ConfigError  # noqa: PLC0415
    from pipeline.stopping import JobCancelled  # noqa: PLC0415

    try:
        manifest = run(argv)
    except ConfigError as e:  # one line, whatever a library's message held
        error_line(" ".join(str(e).split()))
        return 2
    except JobCancelled as e:  # a stop on the job's runner, no signal here: exit 1
        error_line(str(e))
        return 1
    except KeyboardInterrupt as e:
        return interruption(str(e) or logs.INTERRUPTED)
    except Exception as e:  # any failure while running: exit 1, said plainly
        return _failed(e, verbose)
    if manifest is None:  # a Dataflow dry run or template, or --no_wait_until_finish
        from pipeline.main import no_results_here  # noqa: PLC0415

        said = no_results_here(argv)
        to_stdout(lambda: print(said))
        return 0
    return _finished(manifest)


def _failed(error: Exception, verbose: bool) -> int:
    """Says why the run failed while running, in one line; its exit status."""
    if verbose:
        _LOG.exception("The run failed.")
    reason = logs.failure_reason(error)
    if logs.worker_death() is not None:
        error_line(f"the run failed: {reason}. {logs.RESUME}")
        return 1
    detail = "" if verbose else " (rerun with --verbose for the traceback)"
    if for_want_of_space(error):
        detail += (
            ". A write failed for want of space (a full disk, a quota or a file-size "
            f"limit): free some, then r{logs.RESUME[1:]}"
        )
    elif _NO_MEMORY.search(f"{type(error).__name__}: {error}"):
        detail += (
            ". The job ran out of memory: rerun with --resume and a smaller --batch_size or "
            "--path_batch_size (the rows of every batch it finished are kept), or give it more."
        )
    error_line(f"the run failed: {reason}{detail}")
    return 1


def _finished(manifest: dict) -> int:
    """Prints a finished run's summary; its exit status (1 when it holds no row)."""
    from pipeline.summary import print_summary, rows_in_output  # noqa: PLC0415

    try:
        rows = rows_in_output(manifest)  # a resumed run's: read from results/ once
        to_stdout(lambda: print_summary(manifest, rows=rows))
    except KeyboardInterrupt:  # the run is complete: only its summary was cut short
        return interruption(
            "interrupted while printing the summary; the run finished, its results are "
            f"in {manifest['output']}."
        )
    except PermissionError as e:  # gs:// read access that ended while the run ran
        from transforms.files import read_access_fix  # noqa: PLC0415

        error_line(
            f"the run finished, its results are in {manifest['output']}, but its summary "
            f"cannot read them: {e}; {read_access_fix(e.filename or manifest['output'], e)}, "
            "then read them with python -m pipeline.report."
        )
        return 1
    why = _no_rows(manifest, rows)
    if why:
        error_line(why)
        return 1
    return 0


def main_exit() -> None:
    """The `ig-audit` console command: `main` with its status as the exit code."""
    exit_with(main())


if __name__ == "__main__":
    main_exit()
