"""The job's flags as Beam takes them (`AuditOptions`; Beam's own flags pass through),
checked before any work: names and types (`check_flags`), then each value on its own
(empty paths, `~`, `link/..`, URL schemes, bucket names, ranges). Their names,
defaults and help are in `pipeline.flags`."""

from __future__ import annotations

import argparse
import difflib
import logging
import numbers
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.flags import (
    DEFAULT_SPLIT,
    FIXED_RULE_ADVISED_STEPS,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    add_flags,
    given_more_than_once,
    help_text,
    repeated_flag_warnings,
)
from transforms import wording
from transforms.config import (
    DEFAULT_BATCH_SIZE,
    MAX_BATCH_SIZE,
    AttributionConfig,
    ConfigError,
)
from transforms.datasource import REMOTE_FOLDER_SCHEMES
from transforms.files import as_opened
from transforms.ig.rules import panel_rule

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SPLIT",
    "MAX_BATCH_SIZE",
    "AuditOptions",
    "ConfigError",
    "attribution_config",
    "check_flags",
    "check_plain_values",
    "check_schemes",
    "checked_flags",
    "command_as_typed",
    "expand_home",
    "help_text",
    "overridden_flags",
    "parse_input_range",
    "parse_path_batch_size",
    "paths_as_opened",
]

_LOG = logging.getLogger(__name__)
_DEFAULTS = AttributionConfig()
# A value that starts with '-' and a digit or a dot ('-1,1', '-.5'): argparse
# would take it for a flag, so `--input_range -1,1` is joined to `--input_range=-1,1`.
_NEGATIVE_VALUE = re.compile(r"^-[\d.]")
# Runners whose job server may declare flags of its own that Python does not know.
_PORTABLE_RUNNERS = ("portablerunner", "flinkrunner", "sparkrunner", "prismrunner")

#: Bound on --input_range: pixels, paths and gradients stay finite in float32.
_MAX_INPUT = 1e6
# The characters of a Cloud Storage bucket's name, starting and ending with a letter or digit.
_BUCKET_NAME = r"[a-z0-9]([-_.a-z0-9]*[a-z0-9])?"


def parse_input_range(text: str | None) -> tuple[float, float] | None:
    """'0,1' or '-1,1' -> (low, high), both finite; None stays None."""
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError as e:
        raise ConfigError(
            f"--input_range {text!r} must be two numbers 'low,high', e.g. "
            "--input_range 0,1 or --input_range -1,1."
        ) from e
    if not all(abs(v) <= _MAX_INPUT for v in (low, high)):  # NaN and inf included
        raise ConfigError(
            f"--input_range {text!r} must be finite numbers within +-{_MAX_INPUT:g} (pixels "
            "and their differences in float32), e.g. --input_range 0,1 or -1,1."
        )
    if not low < high:
        raise ConfigError(f"--input_range {text!r} needs low < high, e.g. --input_range 0,1.")
    return low, high


def parse_path_batch_size(text: str | int | None) -> int | None:
    """'auto' (or None) -> None, the device's choice; '16' -> 16."""
    if text is None or text == "auto":
        return None
    try:
        return int(text)
    except ValueError as e:
        raise ConfigError(
            f"--path_batch_size {text!r} must be a whole number of points, e.g. "
            "--path_batch_size 16, or auto (8 or 16 on CPUs, timed; 32 on GPUs)."
        ) from e


class AuditOptions(PipelineOptions):
    """The project's flags; README.md documents each (flags, defaults, what they change)."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        add_flags(parser)


def attribution_config(options: AuditOptions) -> AttributionConfig:
    """The validated algorithm settings of parsed options; warns on a coarse fixed
    rule and on refinement flags a fixed rule ignores."""
    config = _attribution_config(options)
    if config.tolerance == 0:
        _warn_fixed_rule(options, config)
    else:
        _warn_edgeless_panels(config)
    _warn_unused(options)
    return config


def _warn_edgeless_panels(config: AttributionConfig) -> None:
    """Warns that an adaptive rule whose panels lack a node at an edge (at both for
    gausslegendre and riemann_middle, at one for riemann_left and riemann_right) has a looser
    per-pixel estimate (docs/accuracy.md, "Rules without edge nodes")."""
    if panel_rule(config.method).edge_nodes:
        return
    _LOG.warning(
        "--method %s with --tolerance > 0: its panels lack a node at an edge, so "
        "attribution_error cannot see a jump in the gradients between a panel's edge and "
        "its nearest node and can understate the map's error (6-9x on rows of a small "
        "ReLU6 net whose gradients jump a few times: rows flagged within_tolerance were "
        "up to 1.7x --tolerance off). riemann_trapezoid (the default) and gausslobatto "
        "have edge nodes.",
        config.method,
    )


def _warn_unused(options: AuditOptions) -> None:
    """Warns of a flag that another flag's `none` turns off: no row changes with it."""
    for off, off_flag, flag in (
        (options.attributions, "--attributions", "attribution_dtype"),
        (options.faithfulness, "--faithfulness", "faithfulness_steps"),
    ):
        if off == "none" and getattr(options, flag) != getattr(_DEFAULTS, flag):
            _LOG.warning("%s none ignores --%s: no row changes with it.", off_flag, flag)


def _warn_fixed_rule(options: AuditOptions, config: AttributionConfig) -> None:
    ignored = [
        flag
        for flag, given in (
            ("--max_steps", options.max_steps is not None),
            (
                "--completeness_tolerance",
                options.completeness_tolerance is not None,
            ),
        )
        if given
    ]
    if ignored:
        _LOG.warning("--tolerance 0 (no refinement) ignores %s.", " and ".join(ignored))
    if config.steps < FIXED_RULE_ADVISED_STEPS:
        _LOG.warning(
            "--tolerance 0 with --steps %d: a fixed rule this coarse is several percent off "
            "per pixel on real photos (64 Gauss-Legendre points: 3-4 %%, and the error grows "
            "like 1/steps; each row's attribution_error estimates it). Use --steps %d or "
            "more, or a --tolerance.",
            config.steps,
            FIXED_RULE_ADVISED_STEPS,
        )


def _attribution_config(options: AuditOptions) -> AttributionConfig:
    config = _config_of_flags(options)
    for name in ("tolerance", "completeness_tolerance"):
        _check_fraction(name, getattr(config, name))
    return config


def _check_fraction(name: str, value: float) -> None:
    """A relative bound above 1 is a percent typed for a fraction (`--tolerance 2` for
    2 %): a map 100 % off is as far from the truth as a map of zeros, so it bounds nothing.
    Refused here, as typed, not in `AttributionConfig`: the sanity check rebuilds the
    config of a run an earlier version made at such a value."""
    if value > 1:
        raise ConfigError(
            f"--{name} {value:g} is above 1: it is a fraction, not a percent (0.02 is 2 %); "
            "pass a number from 0 to 1."
        )


def _config_of_flags(options: AuditOptions) -> AttributionConfig:
    return AttributionConfig(
        steps=options.steps,
        method=options.method,
        baselines=options.baseline,  # the config reads the flag's names
        target=options.target,
        score=options.score,
        top_k=options.top_k if options.top_k is not None else _DEFAULTS.top_k,
        tolerance=options.tolerance,
        completeness_tolerance=options.completeness_tolerance,  # None: from --tolerance
        max_steps=options.max_steps,  # None: the config's default for these --steps
        path_batch_size=parse_path_batch_size(options.path_batch_size),
        attributions=options.attributions,
        attribution_dtype=options.attribution_dtype,
        seed=options.seed,
        faithfulness=options.faithfulness,
        faithfulness_steps=options.faithfulness_steps,
    )


def batch_size(options: AuditOptions) -> int:
    """--batch_size, validated: 1 to MAX_BATCH_SIZE; DEFAULT_BATCH_SIZE when not given."""
    value = DEFAULT_BATCH_SIZE if options.batch_size is None else options.batch_size
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise ConfigError(
            f"--batch_size must be between 1 and {MAX_BATCH_SIZE}, got {value}; "
            f"the default is {DEFAULT_BATCH_SIZE}."
        )
    return value


_OUTPUT_MEANING = "the folder for results/, errors/ and manifest.json, e.g. --output ./output/mine."
# Path flags given empty or blank (an unset "$NAMES", "$OUT "): what to do instead. An
# empty --class_names was taken for none, silently; an empty --data_dir was the current
# folder; a blank --output was a folder named by its spaces in the working folder.
_EMPTY_PATH_FIXES = {
    "output": f"pass {_OUTPUT_MEANING}",
    "class_names": "pass a file of class names, or leave --class_names out (names: "
    "ImageNet's for 1000-class models, the TFDS dataset's own, else class indices).",
    "data_dir": "pass a TFDS data folder, or leave --data_dir out (TFDS's own).",
}


def check_plain_values(audit: AuditOptions) -> None:
    """--output given, optional paths not empty, --image_size in range: checks that
    read no other flag."""
    if audit.output is None:
        raise ConfigError(f"--output is required: {_OUTPUT_MEANING}")
    for flag, fix in _EMPTY_PATH_FIXES.items():
        value = getattr(audit, flag)
        if value is not None and not value.strip():
            raise ConfigError(f"--{flag} is empty; {fix}")
    if audit.image_size is not None and not MIN_IMAGE_SIZE <= audit.image_size <= MAX_IMAGE_SIZE:
        raise ConfigError(
            f"--image_size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE}, got "
            f"{audit.image_size}."
        )


def expand_home(audit: AuditOptions) -> None:
    """`~` in a path flag is the home folder, as a shell would make it: a quoted
    `'~/x'` or `--output=~/x` reaches the job unexpanded (a folder named `~` was
    written, and the summary read the home folder's)."""
    for flag in ("output", "dataset", "model", "data_dir", "class_names"):
        value = getattr(audit, flag)
        if isinstance(value, str) and value.startswith("~"):
            setattr(audit, flag, os.path.expanduser(value))


def paths_as_opened(audit: AuditOptions) -> None:
    """A local path flag of `link/../x` is the file the system opens for it, the
    sibling of the link's target (`as_opened`; --dataset's in `source_for`): for
    --output the launch's checks looked at an `x` beside the link, and Beam's sinks
    wrote their temporary files there, then failed to move them into `link/../x`;
    TensorFlow's file functions, which read --model, drop `link/..` the same way."""
    for flag in ("output", "model", "class_names", "data_dir"):
        value = getattr(audit, flag)
        if isinstance(value, str):
            setattr(audit, flag, as_opened(value))


def check_schemes(audit: AuditOptions) -> None:
    """--output and --dataset are local paths or gs:// folders: the one remote file
    system installed (a path with another scheme, s3://, was taken for a local folder
    named 's3:' by some checks and for a remote one by others); and every gs:// path
    names a valid bucket."""
    for flag in ("output", "dataset"):
        value = getattr(audit, flag)
        if (
            isinstance(value, str)
            and "://" in value
            and not value.startswith(REMOTE_FOLDER_SCHEMES)
        ):
            raise ConfigError(
                f"--{flag} {value!r}: only local paths and {', '.join(REMOTE_FOLDER_SCHEMES)} "
                "folders are supported; copy the files to one of those."
            )
    for flag in ("output", "dataset", "data_dir", "model", "class_names"):
        _check_bucket(flag, getattr(audit, flag))


def _check_bucket(flag: str, value: Any) -> None:
    """A gs:// path with no bucket (`gs://$BUCKET/audits` with BUCKET unset) or one Cloud
    Storage never names so (upper case, spaces): a dry run built a job on it."""
    if not (isinstance(value, str) and value.startswith("gs://")):
        return
    bucket = value[len("gs://") :].split("/")[0]
    if not re.fullmatch(_BUCKET_NAME, bucket):
        unset = " (is a variable such as $BUCKET unset?)" if not bucket else ""
        raise ConfigError(
            f"--{flag} {value!r} names no valid Cloud Storage bucket ({bucket!r}){unset}; "
            "pass gs://<bucket>/<path>, the bucket's name in lower-case letters, digits, "
            "'-', '_' or '.'."
        )


def command_as_typed(argv: Sequence[str]) -> tuple[str, ...]:
    """The command line of this run as typed: the process's own when `argv` is its
    arguments, else (`run(argv)` from Python) the equivalent `python -m pipeline`."""
    if list(argv) == sys.argv[1:] and sys.argv[0]:
        return tuple(sys.argv)
    return ("python", "-m", "pipeline", *argv)


def checked_flags(argv: Sequence[str] | None) -> list[str]:
    """`check_flags` of `argv`, or of this process's arguments when None, which a
    refusal then names: in a notebook they are its kernel's (`-f kernel.json`)."""
    if argv is not None:
        return check_flags(argv)
    try:
        return check_flags(sys.argv[1:])
    except ConfigError as e:
        raise ConfigError(
            f"{e} (read from this process's arguments, sys.argv[1:] = {sys.argv[1:]}, as "
            "no argv was given; from Python pass the flags: run(['--output', 'out', ...]))"
        ) from e


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are ConfigErrors instead of `sys.exit(2)`."""

    def error(self, message: str):  # argparse's hook
        raise ConfigError(f"{message} (see --help).")


_FRACTION_FLAGS = ("--tolerance", "--completeness_tolerance")


def _percent_for_fraction(argv: Sequence[str]) -> str | None:
    """A fraction flag (--tolerance) given as a percent, `2%` (`--tolerance 2%`,
    `--tolerance=2%`): argparse said only 'invalid float value'. Read from `argv`
    itself, not from argparse's message, whose words are its own (another Python
    version's, or translated). The message names the fraction to pass instead."""
    for i, arg in enumerate(argv):
        if arg == "--":  # the flags end there
            return None
        flag, joined, value = arg.partition("=")
        if flag not in _FRACTION_FLAGS or (not joined and i + 1 == len(argv)):
            continue
        value = value if joined else argv[i + 1]  # `--tolerance -2%` is joined already
        try:
            fraction = float(value[:-1]) / 100 if value.endswith("%") else None
        except ValueError:  # 'x%': argparse's 'invalid float value' says enough
            continue
        if fraction is not None:
            return _percent_message(flag, value[:-1], fraction)
    return None


def _percent_message(flag: str, typed: str, fraction: float) -> str:
    if not 0 <= fraction <= 1:  # 150%, -2%, nan%: that fraction is refused in turn
        return (
            f"{flag} '{typed}%' is a percent, and outside 0 % to 100 %: pass a fraction "
            "from 0 to 1 (0.02 is 2 %)."
        )
    return f"{flag} '{typed}%' is a percent; pass it as a fraction: {flag} {fraction:g}."


def _option_classes() -> list[type[PipelineOptions]]:
    """Every PipelineOptions subclass, Beam's and the project's, each once by name."""
    found: dict[str, type[PipelineOptions]] = {}
    todo = list(PipelineOptions.__subclasses__())
    while todo:
        cls = todo.pop(0)
        found.setdefault(str(cls), cls)
        todo.extend(cls.__subclasses__())
    return list(found.values())


def _full_parser() -> _Parser:
    parser = _Parser(allow_abbrev=False, add_help=False)
    for cls in _option_classes():
        cls._add_argparse_args(parser)  # Beam's own registration hook
    return parser


def _join_negative_values(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """`--flag -1,1` -> `--flag=-1,1` for flags that take a value, so argparse keeps it."""
    takes_value = {
        option
        for action in parser._actions  # noqa: SLF001 - argparse has no public list
        if action.nargs != 0
        for option in action.option_strings
    }
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in takes_value and i + 1 < len(argv) and _NEGATIVE_VALUE.match(argv[i + 1]):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
        else:
            out.append(arg)
            i += 1
    return out


def _unknown_flag_message(arg: str, parser: argparse.ArgumentParser) -> str:
    name = arg.split("=", 1)[0]
    if name in ("-h", "--help"):  # the command line prints the help before the run
        return (
            f"{name} is the command line's (python -m pipeline --help); from Python, "
            "print(pipeline.options.help_text()) lists the flags."
        )
    project = [f"--{a.dest}" for a in _project_actions()]
    known = [o for a in parser._actions for o in a.option_strings]  # noqa: SLF001 - as above
    typed = name.lower()  # flags are lower-case: --STEPS is --steps in capitals
    # A flag cut short (--tol) means a project flag it begins, not the closest
    # spelling (--top_k); else a Beam flag it begins (--direct_num, not --resume).
    begun = [flag for flag in known if flag.startswith(typed)] if len(typed) > 3 else []
    prefixed = [flag for flag in begun if flag in project] or begun
    match = (
        difflib.get_close_matches(typed, prefixed, n=1, cutoff=0)
        or difflib.get_close_matches(typed, project, n=1, cutoff=0.6)
        or difflib.get_close_matches(typed, known, n=1, cutoff=0.75)
    )
    hint = f"did you mean {match[0]}?" if match else "python -m pipeline --help lists the flags."
    return f"unknown flag {name}; {hint}"


def _project_actions() -> list[argparse.Action]:
    parser = argparse.ArgumentParser(add_help=False)
    AuditOptions._add_argparse_args(parser)  # noqa: SLF001 - Beam's hook: the project's flags
    return [a for a in parser._actions if a.option_strings]  # noqa: SLF001


def _as_strings(argv: Sequence[Any]) -> list[str]:
    """argv from Python (`pipeline.run([...])`) as the command line's strings: a path
    or a number (Python's or NumPy's: `np.int64(4)` is '4') is its text; one string
    of the whole command line is refused (it was read as flags of one character
    each, 'unknown flag -')."""
    if isinstance(argv, str | bytes):
        raise TypeError(
            "argv must be a list of flags and values, e.g. ['--output', 'out', '--steps', "
            f"'16'], not one string; shlex.split({argv!r}) splits a command line."
        )
    out = []
    for arg in argv:
        if isinstance(arg, os.PathLike):
            arg = os.fspath(arg)
        elif isinstance(arg, numbers.Real) and not isinstance(arg, bool):  # NumPy's too
            arg = str(int(arg)) if isinstance(arg, numbers.Integral) else str(arg)
        if not isinstance(arg, str):
            raise TypeError(
                f"argv holds {arg!r} ({type(arg).__name__}); give flags and values as "
                "strings, paths or numbers, e.g. ['--steps', '16', '--overwrite']."
            )
        out.append(arg)
    return out


def _check_utf8(argv: list[str]) -> None:
    """Refuses a value that is not UTF-8 text: Beam encodes every flag as UTF-8, and failed
    with "can't encode character '\\udce9'" once --output was claimed."""
    for i, arg in enumerate(argv):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ConfigError(_not_utf8_message(argv, i)) from e


def _not_utf8_message(argv: list[str], i: int) -> str:
    """Why `argv[i]` is not UTF-8 text. Python keeps the command line's bytes it cannot
    decode as surrogates: a name in Latin-1 bytes (`caf\\xe9`), or any name but ASCII
    where it decodes the command line as ASCII (a C locale with PYTHONUTF8=0)."""
    arg = argv[i]
    flag, value = arg.split("=", 1) if arg.startswith("--") and "=" in arg else ("", arg)
    flag = flag or (argv[i - 1] if i and argv[i - 1].startswith("--") else "argument")
    fix = (
        "Beam passes every flag on as UTF-8; rename it, or link it under a UTF-8 name and "
        "pass the link."
    )
    encoding = sys.getfilesystemencoding()
    try:
        raw = value.encode(encoding, "surrogateescape")
    except UnicodeEncodeError:  # surrogates of Python's own, not of the command line
        return f"{flag} {value!r} is not UTF-8 text: {fix}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        shown = raw.decode("utf-8", "backslashreplace")
        return f"{flag} '{shown}' is not UTF-8 text (byte {raw[e.start]:#x}): {fix}"
    return (
        f"{flag} {text!r} reached Python as {encoding} text, not UTF-8 (a C locale with "
        "PYTHONUTF8=0): Beam passes every flag on as UTF-8; run with PYTHONUTF8=1, or in a "
        "UTF-8 locale (LC_ALL=C.UTF-8)."
    )


def check_flags(argv: Sequence[str]) -> list[str]:
    """Validates flag names and value types of `argv` before any work.

    Returns argv as strings (paths and numbers as their text), negative values
    attached to their flags (`--input_range=-1,1`); warns of a flag given more than
    once with other values (`pipeline.flags.repeated_flag_warnings`: the last counts).
    Flags that neither the project nor Beam declares are refused with the closest
    known flag; on portable runners (Flink, Spark, Prism, a job server), whose job
    server may take flags of its own, only likely misspellings of known flags are.

    Raises:
      ConfigError: an unknown flag, a stray argument, a `--` (argparse ends the
        flags there) or a value of the wrong type.
      TypeError: argv is one string, or holds an item that is not a string, a
        path or a number.
    """
    parser = _full_parser()
    argv = _join_negative_values(_as_strings(argv), parser)
    _check_utf8(argv)
    percent = _percent_for_fraction(argv)
    if percent is not None:
        raise ConfigError(percent)
    known, unknown = parser.parse_known_args(argv)
    runner = str(getattr(known, "runner", None) or "").rsplit(".", 1)[-1].lower()
    passed_flag = False  # the previous argument was an unknown flag passed on
    for i, arg in enumerate(unknown):
        if arg == "--":
            raise ConfigError(_end_of_flags_message(unknown[i + 1 :]))
        if not arg.startswith("-"):
            if passed_flag:
                passed_flag = False
                continue
            raise ConfigError(
                f"unexpected argument {arg!r}: flags take the form --name value "
                "(see python -m pipeline --help)."
            )
        message = _unknown_flag_message(arg, parser)
        if runner in _PORTABLE_RUNNERS and "did you mean" not in message:
            _LOG.warning("%s; passing it to the %s job server.", message, runner)
            passed_flag = "=" not in arg
            continue
        raise ConfigError(message)
    for warning in repeated_flag_warnings(argv, parser._option_string_actions):  # noqa: SLF001
        _LOG.warning("%s", warning)
    return argv


def _end_of_flags_message(rest: Sequence[str]) -> str:
    """A '--' in argv: argparse ends the flags there, and Beam dropped what followed
    it (`-- --steps 8` ran with the default --steps)."""
    said = (
        f"{wording.shell_command(rest)} after it would be ignored"
        if rest
        else "nothing follows it here"
    )
    return f"'--' ends the flags: {said}; drop the '--'."


def overridden_flags(command: Sequence[str]) -> list[str]:
    """The flags `command` gives more than once where the last one counts
    (`pipeline.flags.given_more_than_once`, of the project's and Beam's flags)."""
    actions = _full_parser()._option_string_actions  # noqa: SLF001 - argparse has no public map
    return list(given_more_than_once([str(a) for a in command], actions))
