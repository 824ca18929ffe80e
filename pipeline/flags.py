"""The project's flags, their defaults and `--help`: no Beam, no TensorFlow.

`pipeline.options` declares them to Beam (`AuditOptions`) and validates their
values; `python -m pipeline --help` needs only this module, so it prints at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pipeline.commands import CommandParser, user_path
from transforms.config import (
    ATTRIBUTION_DTYPES,
    ATTRIBUTION_MODES,
    BASELINES,
    DEFAULT_BATCH_SIZE,
    DEFAULT_COMPLETENESS_TOLERANCE,
    DEFAULT_MAX_STEPS,
    ESTIMATE_MARGIN,
    FAITHFULNESS_MODES,
    MAX_BATCH_SIZE,
    MAX_FAITHFULNESS_STEPS,
    MAX_IMAGE_SIZE,
    MAX_MAX_STEPS,
    MAX_STEPS,
    MIN_IMAGE_SIZE,
    SCORES,
    TARGETS,
    AttributionConfig,
)
from transforms.datasource import SAMPLE
from transforms.ig import METHODS

__all__ = [
    "DEFAULT_SPLIT",
    "REPORT_CLASSES",
    "REPORT_EXAMPLES",
    "REPORT_GALLERY",
    "REPORT_GALLERY_MAX",
    "FIXED_RULE_ADVISED_STEPS",
    "MAX_IMAGE_SIZE",
    "MIN_IMAGE_SIZE",
    "add_flags",
    "given_more_than_once",
    "help_text",
    "repeated_flag_warnings",
    "report_parser",
    "sanity_parser",
]

_DEFAULTS = AttributionConfig()
#: --split when not given (TFDS datasets only).
DEFAULT_SPLIT = "test"
#: Below this many points a fixed rule (--tolerance 0) gets a warning at launch.
FIXED_RULE_ADVISED_STEPS = 64

# What each choice of a flag does, for --help (the choices are transforms.config's).
_BASELINE_MEANINGS = {
    "black": "the range's low end",
    "white": "its high end",
    "grey": "its middle",
    "blur": "the image blurred",
    "noise": "uniform, --seed",
}
_TARGET_MEANINGS = {
    "predicted": "top-1",
    "label": "the dataset's; unlabelled images become errors",
    "top_k": "one row per each of the --top_k classes",
}
_SCORE_MEANINGS = {
    "raw": "the model's output, a logit for most models",
    "softmax": "the class probability",
}
_ATTRIBUTION_MEANINGS = {
    "full": "H x W x C",
    "pixel": "H x W, the channel sum",
    "none": "metadata only",
}


def _one_of(names: Sequence[str], meanings: dict[str, str]) -> str:
    """'a (what a does), b (...) or c (...)'."""
    said = [f"{n} ({meanings[n]})" if n in meanings else n for n in names]
    return f"{', '.join(said[:-1])} or {said[-1]}" if len(said) > 1 else said[0]


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Declares the project's flags on `parser` (Beam's `_add_argparse_args` hook calls it)."""
    for group in (
        _data_flags,
        _ig_flags,
        _refinement_flags,
        _model_flags,
        _output_flags,
        _execution_flags,
    ):
        group(parser.add_argument)


def _data_flags(add: Callable[..., Any]) -> None:
    """Where the images and the model come from, and where results go."""
    add(
        "--dataset",
        default=SAMPLE,
        help="TFDS name (imagenet_a; with a config: cifar10_corrupted/brightness_1), an image "
        "folder (local or gs://), or 'sample'.",
    )
    add("--split", default=DEFAULT_SPLIT, help="TFDS split spec, e.g. 'test' or 'test[:2%%]'.")
    add("--data_dir", default=None, help="TFDS data folder (default: TFDS's own).")
    add(
        "--no_download",
        action="store_true",
        help="Fail instead of downloading a TFDS dataset that is not prepared.",
    )
    add(
        "--model",
        default="efficientnet_lite0",
        help="efficientnet_lite0 (bundled), inception_v1, a TF Hub handle, a SavedModel "
        "folder or a .keras file.",
    )
    add("--output", default=None, help="Output folder, local or gs:// (required).")
    add(
        "--overwrite",
        action="store_true",
        help="Replace the results of an earlier run in --output instead of refusing.",
    )
    add(
        "--resume",
        action="store_true",
        help="Continue an earlier run with the same flags in --output: images whose rows "
        "are there already are skipped; the others (errors included) are processed.",
    )


def _ig_flags(add: Callable[..., Any]) -> None:
    """How each map is computed: the rule and its points, baselines, targets and scores."""
    add(
        "--steps",
        type=int,
        default=_DEFAULTS.steps,
        help="Points on the path: gradient evaluations per image, target and baseline "
        "(with a --tolerance, the initial ones, rounded down to whole panels: 24 of 25 for "
        "gausslegendre, riemann_middle, riemann_left and riemann_right; refinement adds "
        "more). With --tolerance 0, "
        f"use {FIXED_RULE_ADVISED_STEPS} or more. At most {MAX_STEPS}.",
    )
    add("--method", default=_DEFAULTS.method, help=f"One of {', '.join(METHODS)}.")
    add(
        "--baseline",
        default=",".join(_DEFAULTS.baselines),
        help=f"The path's start: {_one_of(BASELINES, _BASELINE_MEANINGS)}; several, "
        "comma-separated, are averaged.",
    )
    add(
        "--target",
        default=_DEFAULTS.target,
        help=f"The class attributed: {_one_of(TARGETS, _TARGET_MEANINGS)}.",
    )
    add(
        "--score",
        default=_DEFAULTS.score,
        help=f"F: {_one_of(SCORES, _SCORE_MEANINGS)}.",
    )
    add(
        "--top_k",
        type=int,
        default=None,
        help=f"Predictions kept per image (default {_DEFAULTS.top_k}, or the model's "
        "classes if fewer).",
    )


def _refinement_flags(add: Callable[..., Any]) -> None:
    """The error bounds each row is refined to, or flagged above, and the cap on its points."""
    add(
        "--tolerance",
        type=float,
        default=_DEFAULTS.tolerance,
        help="Bound on each row's per-pixel relative error: its estimate "
        f"(attribution_error) is held within --tolerance / {ESTIMATE_MARGIN:g}, a margin for "
        "the estimate's own error; rows above that (or above --completeness_tolerance) "
        "are refined, then flagged (within_tolerance). A fraction from 0 to 1 (0.02 is 2 %%); "
        "0 turns refinement off.",
    )
    add(
        "--completeness_tolerance",
        type=float,
        default=None,
        help="Bound on each row's relative completeness delta (relative_delta) when "
        "--tolerance > 0: a sum, which cancels per-pixel errors, so it is tighter. A fraction, "
        f"at most 1; default {DEFAULT_COMPLETENESS_TOLERANCE:g}, or --tolerance where that is "
        "lower (it bounds completeness too).",
    )
    add(
        "--max_steps",
        type=int,
        default=None,
        help=f"Cap on gradient evaluations (distinct path points) per baseline when refining, "
        f"at most {MAX_MAX_STEPS}; default "
        f"max({DEFAULT_MAX_STEPS}, --steps).",
    )


def _model_flags(add: Callable[..., Any]) -> None:
    """Model plumbing and batching."""
    add(
        "--batch_size",
        type=int,
        default=None,
        help="Images per RunInference batch (full batches; their path points share "
        f"gradient calls), 1 to {MAX_BATCH_SIZE}; default {DEFAULT_BATCH_SIZE}.",
    )
    add(
        "--path_batch_size",
        default="auto",
        help="Path points per gradient call; bounds memory. auto = on CPUs 8 or 16, "
        "whichever the run's own calls time faster; 32 on GPUs.",
    )
    add(
        "--image_size",
        type=int,
        default=None,
        help=f"Model input side in pixels, {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}, of square "
        "images for a model that leaves its size open; default from the model's signature "
        "(its H x W, square or not: a model fixing its size takes no other), or the H x W a "
        "TF1 Hub module records or a .keras model's first Resizing takes, or 224 (with a "
        "warning) when it leaves the size open.",
    )
    add(
        "--input_range",
        default=None,
        help="Model pixel range 'low,high', e.g. 0,1 or -1,1 (both finite); default 0,1, or "
        "0,255 for a .keras model whose first layer to change pixel values (after "
        "augmentation or resizing) rescales 8-bit pixels (Rescaling, Normalization).",
    )
    add(
        "--label_offset",
        type=int,
        default=None,
        help="Output index of class 0; default 1 for 1001-output models, else 0.",
    )


def _output_flags(add: Callable[..., Any]) -> None:
    """What each row stores, the map and the faithfulness checks; --seed, of their control
    and of the noise baseline."""
    add(
        "--attributions",
        default=_DEFAULTS.attributions,
        help=f"The map stored per row: {_one_of(ATTRIBUTION_MODES, _ATTRIBUTION_MEANINGS)}.",
    )
    add(
        "--attribution_dtype",
        default=_DEFAULTS.attribution_dtype,
        help=f"One of {', '.join(ATTRIBUTION_DTYPES)}: float16 halves the storage; its "
        "rounding counts in attribution_error.",
    )
    add(
        "--faithfulness",
        default=_DEFAULTS.faithfulness,
        help="Per-row deletion and insertion curves of the map and of a random ranking "
        f"(one of {', '.join(FAITHFULNESS_MODES)}; none turns them off).",
    )
    add(
        "--faithfulness_steps",
        type=int,
        default=_DEFAULTS.faithfulness_steps,
        help=f"K, steps per deletion or insertion curve, 2 to {MAX_FAITHFULNESS_STEPS} and at most "
        "the model input's pixels; each row costs 4 (K - 1) + 2 forward passes.",
    )
    add(
        "--seed",
        type=int,
        default=_DEFAULTS.seed,
        help="Seed of the noise baseline and of the faithfulness control's ranking.",
    )


def _execution_flags(add: Callable[..., Any]) -> None:
    """How the model runs (XLA), the names its classes are given, and logging."""
    add(
        "--jit_compile",
        default="auto",
        choices=("auto", "on", "off"),
        help="XLA compilation: auto = on GPUs only.",
    )
    add(
        "--class_names",
        default=None,
        help="File of class names for a custom model: one per line, a JSON list, or a "
        "JSON {index: name} object; as many as the model has classes (outputs minus "
        "--label_offset). Default: ImageNet's for 1000-class models, the TFDS "
        "dataset's own, else none.",
    )
    add(
        "--verbose",
        action="store_true",
        help="Show TensorFlow's start-up messages and INFO logs of Beam and TensorFlow.",
    )


# argparse actions whose flag given again replaces its value (store_true and
# store_false are store_const); the others (append, Beam's lists) accumulate. argparse
# names its action classes only privately.
_LAST_ONE_COUNTS = (argparse._StoreAction, argparse._StoreConstAction)  # noqa: SLF001


def given_more_than_once(
    argv: Sequence[str], actions: Mapping[str, argparse.Action]
) -> dict[str, list[str]]:
    """The flags `argv` gives more than once where the last one counts, each under the
    name first typed, with the values given in order: a flag that stores its value
    (`--steps 8 --steps=12`, by any of its names in `actions`, argparse's map of
    option strings) or an unknown one (by name; its value where joined by '=');
    not one that accumulates (`--experiments a --experiments b`). A switch's value
    is its name."""
    given: dict[object, tuple[str, list[str]]] = {}
    for i, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        name, joined, value = arg.partition("=")
        action = actions.get(name)
        if action is not None and not isinstance(action, _LAST_ONE_COUNTS):
            continue
        if action is not None and action.nargs == 0:
            value = name
        elif not joined and action is not None:
            value = argv[i + 1] if i + 1 < len(argv) else ""
        key = action.dest if action is not None else name
        given.setdefault(key, (name, []))[1].append(value)
    return {name: values for name, values in given.values() if len(values) > 1}


def repeated_flag_warnings(
    argv: Sequence[str], actions: Mapping[str, argparse.Action]
) -> list[str]:
    """What a command that gives a known flag more than once with different values is
    warned of: argparse keeps the last silently, so `--steps 16 --steps 32` ran with
    32 and nothing said the 16 was dropped. The same value again loses nothing. Several
    --baseline names are averaged given in one, so that is said with the comma form."""
    said = []
    for flag, values in given_more_than_once(argv, actions).items():
        if flag not in actions or len({_compared(flag, v) for v in values}) == 1:
            continue
        text = f"{flag} given {len(values)} times ({', then '.join(values)}): the last counts"
        if actions[flag].dest == "baseline":
            names = dict.fromkeys(n.strip() for value in values for n in value.split(","))
            said.append(
                f"{text}, as for any flag; to average several baselines, give them in one, "
                f"comma-separated: --baseline {','.join(names)}."
            )
        else:  # a switch's value is its name (--no_use_public_ips), said alone
            used = values[-1] if actions[flag].nargs == 0 else f"{flag} {values[-1]}"
            said.append(f"{text}: {used} is used; give each flag once.")
    return said


def _compared(flag: str, value: str) -> object:
    """A flag's value as compared with its others: --baseline's names, spaces aside."""
    if flag == "--baseline":
        return tuple(n.strip() for n in value.split(","))
    return value


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each flag's default: a switch's as "off", none where it is None (the
    help says it in words, as README's flag table does)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is False:
            return f"{text} (default: off)"
        hidden = action.default is None or action.default == argparse.SUPPRESS
        if not hidden and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def help_text(prog: str = "python -m pipeline") -> str:
    """The `--help` text: every project flag with its help and default."""
    parser = argparse.ArgumentParser(
        prog=prog,
        formatter_class=_HelpFormatter,
        description="Integrated Gradients audit of an image classifier over a whole dataset, "
        "written to Parquet (see README.md).",
        epilog="Beam's own flags pass through, e.g. --runner (default DirectRunner), "
        "--direct_num_workers,\n--direct_running_mode, --project, --region, --temp_location, "
        "--setup_file, --sdk_container_image.\nOn Dataflow: --runner DataflowRunner --project "
        "--region --temp_location gs://..., and\n--setup_file ./setup.py (CPU) or "
        "--sdk_container_image (the Dockerfile's worker image, GPUs);\nadd --dry_run=True "
        "--no_auth to build the job offline without submitting it (README.md,\n'Scale: "
        "Dataflow, GPUs, parallel local runs').\nUnknown or misspelt flags are refused before "
        "any work. Exit status: 0 done, 1 failed while\nrunning (or no input gave a row), "
        "2 bad configuration,\n130 interrupted (Ctrl-C; --resume continues), 143 stopped by SIGTERM "
        "(as by Ctrl-C).\n\nExample: "
        f"{prog} --dataset sample --model efficientnet_lite0 --output ./output/sample",
    )
    add_flags(parser)
    return parser.format_help()


#: pipeline.report's page sizes when none are given (build_report's and the command line's):
#: cards per section, gallery images, per-class table rows.
REPORT_EXAMPLES, REPORT_GALLERY, REPORT_CLASSES = 12, 16, 100
#: --gallery's bound for --help: `transforms.plots.GRID_MAX_ROWS`, which is not imported
#: here (matplotlib would slow --help).
REPORT_GALLERY_MAX = 100


def _add_image_root(parser: argparse.ArgumentParser) -> None:
    """--image_root, of both commands that read a run back (the report, the sanity check)."""
    parser.add_argument(
        "--image_root",
        type=user_path,
        default=None,
        help="Where the run's image folder is now, if it moved.",
    )


def report_parser() -> argparse.ArgumentParser:
    """`python -m pipeline.report`'s flags (parsed before its imports: `commands.run_module`)."""
    parser = CommandParser(
        prog="python -m pipeline.report",
        description="Render a self-contained HTML audit page from an ig-audit output folder.",
    )
    parser.add_argument("--input", type=user_path, required=True, help="The run's --output folder.")
    parser.add_argument(
        "--output",
        type=user_path,
        help="The HTML file to write (default: report.html in the --input folder, where "
        "--overwrite of that run removes it).",
    )
    parser.add_argument(
        "--examples",
        type=int,
        default=REPORT_EXAMPLES,
        help="Cards per section (misclassifications, worst rows, no better than chance, not "
        "measurable); "
        f"default {REPORT_EXAMPLES}.",
    )
    parser.add_argument(
        "--gallery",
        type=int,
        default=REPORT_GALLERY,
        help=f"Images in the gallery, 0 (none) to {REPORT_GALLERY_MAX}; default {REPORT_GALLERY}.",
    )
    parser.add_argument(
        "--classes",
        type=int,
        default=REPORT_CLASSES,
        help=f"Rows of the per-class table; default {REPORT_CLASSES}.",
    )
    _add_image_root(parser)
    return parser


def sanity_parser() -> argparse.ArgumentParser:
    """`python -m pipeline.sanity`'s flags (parsed before its imports: `commands.run_module`)."""
    parser = CommandParser(
        prog="python -m pipeline.sanity",
        description="Model-randomisation sanity check of a finished run (Adebayo et al., 2018).",
    )
    parser.add_argument(
        "--input", type=user_path, required=True, help="A finished run's --output folder."
    )
    parser.add_argument(
        "--images",
        type=int,
        default=8,
        help="Images to check (first by id), each with all its rows (targets); default 8 "
        "(the sign test needs 5 for p < 0.05).",
    )
    parser.add_argument(
        "--stages",
        default="6",
        help="Number of cascading stages, or comma-separated layer names; default 6.",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="Seed of the random weights; default 0."
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="IG steps per row at every stage, fixed (no refinement to the run's "
        "tolerance): the maps' similarity is a coarser question than their accuracy; "
        "default: the run's settings.",
    )
    _add_image_root(parser)
    return parser
