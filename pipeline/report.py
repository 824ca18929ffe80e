"""`python -m pipeline.report --input OUTPUT --output OUTPUT/report.html`: one self-contained audit page.

The page is a Jinja2 template, `pipeline/templates/report.html.j2` (shipped as package
data), filled with plain data prepared here. Auto-escaping is on for every value, so a
file name such as `<script>.png` is shown as text, never run: escaping is the default,
not a discipline of each section. The page holds everything inline (CSS and PNG figures
as base64 data URIs), so it can be mailed or attached to a ticket and opened offline.
It reads only metadata columns for the whole run and the arrays of the few rows it
shows, so it works the same for 10 rows and for millions.

Sections: run summary, the most confident misclassifications with heat maps,
completeness, per-pixel accuracy (`attribution_error`), the rows with the worst
completeness (with their path curves), faithfulness (deletion / insertion AUCs against
a random ranking), the model-randomisation sanity check (when it was run), per-class
accuracy, a gallery, the error records and how to query the output. Columns that a run
did not record (older runs, `--faithfulness none`) give a note instead of a section.
"""

from __future__ import annotations

if __name__ == "__main__":  # before the imports below: a Ctrl-C in them is a stop too
    from pipeline.commands import run_module
    from pipeline.flags import report_parser

    run_module("pipeline.report", report_parser)

import argparse
import base64
import dataclasses
import datetime
import functools
import glob
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jinja2
import markupsafe
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from matplotlib.figure import Figure

from pipeline.commands import error_line, run_read_failure, to_stdout
from pipeline.flags import REPORT_CLASSES, REPORT_EXAMPLES, REPORT_GALLERY, report_parser
from transforms import files, plots, results
from transforms.baselines import make_baselines
from transforms.config import baseline_names
from transforms.errors import error_reason
from transforms.ig.rules import METHODS, has_spread
from transforms.images import scale_to_range
from transforms.manifest import (
    LOCK_FILE,
    REPORT_FILE,
    SANITY_DIR,
    SANITY_JSON,
    SHARD_PREFIX,
    absolute_path,
    awaited_template,
    completeness_bound,
    estimate_bound,
    faithfulness_pixels,
    faithfulness_ties,
    has_one_output,
    how_it_ended,
    run_checkpoints,
    shows_targets,
    typed_flag,
    typed_path,
    unfinished_status,
)
from transforms.results import UnreadableResults
from transforms.wording import (
    count,
    infinite,
    percent,
    printable,
    probability,
    shell_command,
    shell_word,
)

__all__ = ["UnreadableResults", "build_report", "main", "read_sanity", "write_report"]

_LOG = logging.getLogger(__name__)
# The page's character set (its <meta charset>): a command on it keeps a name's
# printable characters, whatever the terminal that built it can write.
_PAGE_ENCODING = "utf-8"

# The columns the page needs for every row: no lists (top-k, path), no attributions;
# the top-1 probability is computed in Arrow (`confidence`).
_COLUMNS = [
    "image_id",
    "file_name",
    "label",
    "label_name",
    "predicted_class",
    "predicted_name",
    "target_class",
    "target_name",
    "target_score",
    "baseline_score",
    "attribution_sum",
    "relative_delta",
    "steps",
    "evaluations",
    "within_tolerance",
    "score",
]
_FAITHFULNESS = ["deletion_auc", "insertion_auc", "deletion_auc_random", "insertion_auc_random"]
# Recorded by newer runs only: the page shows them when the run has them.
_OPTIONAL = ["attribution_error", *_FAITHFULNESS]
# Rows shown when none exceeds the tolerance: a few for reference, not the whole run.
_REFERENCE_ROWS = 3
# The manifest's counts in words, in the order the job lists them (`sinks.COUNT_KEYS`);
# the page keeps each key as its title, where docs/output.md and queries name it.
_COUNT_WORDS = {
    "inputs": "inputs",
    "skipped_done_before": "skipped (done by an earlier run)",
    "images_with_rows": "images with result rows",
    "images_with_errors": "images that failed",
    "rows": "result rows",
    "errors": "errors",
}
# Sections in page order: (anchor, navigation title).
_SECTIONS = (
    ("summary", "Summary"),
    ("misclassified", "Misclassifications"),
    ("completeness", "Completeness"),
    ("accuracy", "Per-pixel accuracy"),
    ("worst-completeness", "Worst completeness"),
    ("faithfulness", "Faithfulness"),
    ("sanity", "Sanity check"),
    ("per-class", "Per-class accuracy"),
    ("gallery", "Gallery"),
    ("errors", "Errors"),
    ("querying", "Querying"),
)


def _text(value: Any) -> Any:
    """The value itself (escaped by the template), or an en dash for None and NaN."""
    return "–" if results.is_missing(value) else value


def _pct(value: Any, digits: int = 1) -> str:
    if results.is_missing(value):
        return "–"
    number = float(value)
    return percent(number, digits)


def _prob(value: Any) -> str:
    """A model's probability as `_pct`, but never rounded to certainty or to nothing
    ('99.96%', not '100.0%'; a float32 1 '>99.99%', 0 '<0.01%': `wording.probability`);
    a small one keeps its digits ('0.004%')."""
    if results.is_missing(value) or 0 < float(value) < 0.5:
        return _pct(value)
    return probability(float(value), 1)


def _share(value: Any) -> str:
    """A fraction the run was held to (a tolerance, a bound) as a percentage, as the
    errors beside it are shown, to 6 significant digits: 0.005 is '0.5%', 0.003 / 1.25
    '0.24%'."""
    return "–" if results.is_missing(value) else f"{float(value) * 100:.6g}%"


def _num(value: Any, digits: int = 4) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(_text(value))
    if math.isnan(number):
        return "–"
    return infinite(number) or f"{number:.{digits}g}"


def _auc(value: Any) -> str:
    """An AUC (0 to 1) as `_num` to 3 significant digits, but, like a probability
    (`_prob`), never rounded to a perfect 1 that it is not: 0.99954 is '0.9995'
    (up to 6 digits)."""
    digits = 3
    while digits < 6 and _num(value, digits) == "1" and float(value) != 1:
        digits += 1
    return _num(value, digits)


def _shown(value: Any) -> Any:
    """What the page shows of a `{{ value }}` (the environment's `finalize`, before
    auto-escaping): text with its control and format characters as escapes, as the
    terminal shows it (`wording.printable`), so that a name holding a right-to-left
    override ('cat\\u202eexe.png') or a newline reads as it is called, and does not
    reorder the page around it; the commands to paste hold no such character
    (`wording.shell_command`), so they are shown as they paste. Markup (a macro's
    output, or `lines`') as it is."""
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup):
        return printable(value)
    return value


def _lines(text: str) -> markupsafe.Markup:
    """Text of several lines (the query example) as `_shown`, its line breaks kept."""
    return markupsafe.escape(printable(text, lines=True))


@functools.cache
def _environment() -> jinja2.Environment:
    """The template environment, built on first use (no work at import)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt name fails the report, not the reader
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_shown,
    )
    env.filters.update(
        text=_text,
        pct=_pct,
        prob=_prob,
        num=_num,
        auc=_auc,
        share=_share,
        count=count,
        lines=_lines,
    )
    return env


@dataclasses.dataclass(frozen=True)
class _Picture:
    """An embedded PNG (`src`, a data URI) or, when there is none, the `note` saying why."""

    src: str | None = None
    alt: str = ""
    note: str | None = None
    wide: bool = False


def _png(figure: Figure, alt: str, dpi: int = 100, wide: bool = False) -> _Picture:
    data = base64.b64encode(plots.figure_png(figure, dpi=dpi)).decode("ascii")
    return _Picture(src=f"data:image/png;base64,{data}", alt=alt, wide=wide)


def _read_table(output: str, columns: Sequence[str], **kwargs: Any) -> pa.Table:
    """`results.read_table` without its warnings of a run that has not finished and of
    rows held more than once: the page says so (`run_state`, `_counted_once`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", results.UnfinishedRunWarning)
        warnings.simplefilter("ignore", results.MixedRunsWarning)
        return results.read_table(output, columns, **kwargs)


def _metadata(output: str, available: Sequence[str]) -> pd.DataFrame:
    """Every row's `_COLUMNS`, the `_OPTIONAL` ones the run has, and `confidence`."""
    optional = [c for c in _OPTIONAL if c in available]
    table = _read_table(output, [*_COLUMNS, *optional, "top_k_probs"])
    confidence = (
        pc.list_element(table["top_k_probs"], 0) if len(table) else pa.array([], pa.float32())
    )
    table = table.drop_columns(["top_k_probs"]).append_column("confidence", confidence)
    return table.to_pandas().sort_values("image_id", kind="stable").reset_index(drop=True)


def _counted_once(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rows with each (image_id, target_class) once, and how many of them
    `results/` holds more than once. The job writes each once (its sinks finalize
    atomically, --resume skips done images), so a repeat is a results file copied
    or restored after the run: counted twice, it would skew every number."""
    keys = ["image_id", "target_class"]
    repeated = frame[frame.duplicated(keys, keep=False)].drop_duplicates(keys)
    return frame.drop_duplicates(keys).reset_index(drop=True), len(repeated)


def _duration(manifest: Mapping[str, Any]) -> str:
    try:
        start = datetime.datetime.fromisoformat(manifest["start_time"])
        end = datetime.datetime.fromisoformat(manifest["end_time"])
    except (KeyError, TypeError, ValueError):
        return "–"
    seconds = (end - start).total_seconds()
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


class _Pictures:
    """Input images and array columns of the rows the page shows, read once."""

    def __init__(
        self,
        output: str,
        manifest: Mapping[str, Any],
        image_root: str | None,
        columns: Sequence[str],
    ) -> None:
        self._output = output
        self._manifest = manifest
        self._image_root = image_root
        self._columns = list(columns)
        self._rows: dict[tuple[str, int], pd.Series] = {}
        self._images: dict[str, np.ndarray | None] = {}
        self._missing: dict[str, str] = {}  # why an image was not re-read, in a few words
        self._drawn: dict[tuple[Any, ...], _Picture] = {}
        self.notes: dict[str, None] = {}  # why some photos are missing, in order

    def load(self, keys: Iterable[tuple[str, int]]) -> None:
        keys = [k for k in dict.fromkeys(keys) if k not in self._rows]
        if not keys:
            return
        ids = sorted({image_id for image_id, _ in keys})
        frame = _read_table(
            self._output, self._columns, filters=pc.field("image_id").isin(ids)
        ).to_pandas()
        wanted = set(keys)
        for _, row in frame.iterrows():
            key = (row["image_id"], int(row["target_class"]))
            if key in wanted:
                self._rows[key] = row
        for image_id in ids:
            if image_id not in self._images:
                self._images[image_id] = self._load_image(image_id)

    def _load_image(self, image_id: str) -> np.ndarray | None:
        try:
            return results.load_input_image(self._manifest, image_id, self._image_root)
        except results.ImageUnavailable as e:
            self.notes[str(e)] = None
            self._missing[image_id] = e.short
            return None

    def row(self, image_id: str, target_class: int) -> pd.Series | None:
        return self._rows.get((image_id, int(target_class)))

    def image(self, image_id: str) -> np.ndarray | None:
        return self._images.get(image_id)

    def missing(self, image_id: str) -> str | None:
        """Why the image was not re-read, in a few words (`ImageUnavailable.short`)."""
        return self._missing.get(image_id)

    def images(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in self._images.items() if v is not None}

    def drawn(self, key: tuple[Any, ...], draw: Callable[[], _Picture]) -> _Picture:
        """`draw()`, once a page per `key`: the worst rows of one error are often those
        of the other and those the faithfulness checks flag, whose cards show the same
        heat map and path curve (each took a figure drawn again)."""
        if key not in self._drawn:
            self._drawn[key] = draw()
        return self._drawn[key]

    def equals_baselines(self, image_id: str) -> bool | None:
        """Whether the image, as the model saw it, equals every baseline of the run:
        x - x' is 0 at every pixel, so its map is 0 whatever the model. None: the
        image was not re-read (a TFDS run, a moved folder)."""
        config = self._manifest["config"]
        return self._equals(image_id, tuple(_baseline_names(config)))

    def unchanged_by_checks(self, image_id: str) -> bool | None:
        """Whether the image equals the deletion reference (the run's first baseline)
        and its blurred copy (insertion's start): neither check can change it. None:
        the image was not re-read."""
        first = _baseline_names(self._manifest["config"])[0]
        return self._equals(image_id, (first, "blur"))

    def _equals(self, image_id: str, names: tuple[str, ...]) -> bool | None:
        """Whether the image, as the model saw it, equals each of the baselines
        `names`; None when it was not re-read."""
        image = self.image(image_id)
        if image is None:
            return None
        low, high = (float(v) for v in self._manifest["model"]["input_range"])
        x = scale_to_range(image, (low, high))
        seed = int(self._manifest["config"].get("seed", 0))
        refs = make_baselines(x, names, (low, high), image_id, seed)
        return bool((refs == x[None]).all())


def _worst(frame: pd.DataFrame, column: str, tolerance: float | None, limit: int) -> pd.DataFrame:
    """The rows to show for an error column, worst first.

    With a tolerance: the rows above it, or, when none is, only `_REFERENCE_ROWS`
    for reference (listing every good row would bury the verdict). Without: the worst.
    """
    if column not in frame or frame.empty:
        return frame.head(0)
    ordered = frame.sort_values([column, "image_id"], ascending=[False, True])
    if not tolerance:
        return ordered.head(limit)
    above = ordered[ordered[column] > tolerance]
    return above.head(limit) if len(above) else ordered.head(min(limit, _REFERENCE_ROWS))


def _no_better_than_chance(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows whose IG ranking does no better than the random one, furthest behind first.

    Deletion: a faithful map drops the score faster, so a lower AUC is better;
    insertion: it restores the score faster, so a higher AUC is better. A check that
    measured nothing (both AUCs 1, `results.measured_nothing`) never counts
    (`results.chance_losses`; a row whose two checks are so is
    `results.not_measurable`); rows without values (`--faithfulness none`) are never
    flagged.
    """
    if not set(_FAITHFULNESS) <= set(frame.columns) or frame.empty:
        return frame.head(0)
    loses_deletion, loses_insertion = results.chance_losses(frame)
    leads = [results.leads(frame, c) for c in _CHECKS]
    margin = -pd.concat(leads, axis=1).min(axis=1)  # how far behind its control, at worst
    flagged = frame.assign(
        _margin=margin,
        _loses_deletion=loses_deletion,
        _loses_insertion=loses_insertion,
    )[loses_deletion | loses_insertion]
    return flagged.sort_values(["_margin", "image_id"], ascending=[False, True])


def _chance_tests(frame: pd.DataFrame) -> dict[str, results.ChanceTest]:
    """Per check, `results.chance_test` of the rows; none without the columns."""
    if not set(_FAITHFULNESS) <= set(frame.columns) or frame.empty:
        return {}
    return {c: results.chance_test(frame, c) for c in _CHECKS}


def _beat_chance(tests: Mapping[str, results.ChanceTest]) -> bool:
    """Whether the maps beat their controls more often than chance on every check that
    had a trial, and had one: a run whose maps all beat their controls is shown as
    good only then (4 rows of noise maps all beat a check's controls one time in 16)."""
    tested = [t for t in tests.values() if t.images]
    return bool(tested) and all(t.better_than_chance for t in tested)


def _not_measurable(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows whose two checks both measured nothing (`results.not_measurable`), by image
    id; none without the columns that say so."""
    if not set(_FAITHFULNESS) <= set(frame.columns) or frame.empty:
        return frame.head(0)
    return results.not_measurable(frame).sort_values(["image_id", "target_class"])


@dataclasses.dataclass(frozen=True)
class _Selection:
    """The run's rows and the few the page shows, chosen once.

    Attributes:
      frame: every row (`_metadata`).
      per_image: one row per image (`results.one_row_per_image`).
      labelled: `per_image` rows with a label.
      wrong: misclassified images, most confident first.
      worst: rows shown for completeness (see `_worst`).
      worst_pixel: rows shown for the per-pixel error (empty if not recorded).
      chance: every row whose map does no better than a random ranking.
      tests: per check, the sign test of whether the maps beat their controls more
        often than chance (`results.chance_test`); empty without faithfulness values.
      unmeasurable: every row whose two checks both measured nothing.
      gallery: evenly spread images for the gallery; `gallery_step` apart by image id.
      tolerance: the run's bound on the estimated per-pixel error
        `attribution_error`: `--tolerance` over the estimate's margin (runs made
        before the margin: `--tolerance`); None when 0 (refinement off).
      completeness_tolerance: the run's bound on `relative_delta`
        (`--completeness_tolerance`; runs without it used `--tolerance`).
      baselines: how many baselines each row's values are averaged over.
      one_output: the model has one output and no classes (`has_one_output`): `wrong`
        is empty, and the page shows no accuracy.
    """

    frame: pd.DataFrame
    per_image: pd.DataFrame
    labelled: pd.DataFrame
    wrong: pd.DataFrame
    worst: pd.DataFrame
    worst_pixel: pd.DataFrame
    chance: pd.DataFrame
    tests: Mapping[str, results.ChanceTest]
    unmeasurable: pd.DataFrame
    gallery: pd.DataFrame
    gallery_step: int
    tolerance: float | None
    completeness_tolerance: float | None
    baselines: int
    one_output: bool

    @classmethod
    def of(
        cls,
        frame: pd.DataFrame,
        config: Mapping[str, Any],
        examples: int,
        gallery: int,
        one_output: bool = False,
    ) -> _Selection:
        completeness = completeness_bound(config)
        tolerance = estimate_bound(config) if config.get("tolerance") else None
        per_image = results.one_row_per_image(frame)
        labelled = per_image[per_image["label"].notna()]
        wrong = results.misclassified(labelled.head(0) if one_output else labelled)
        wrong = wrong.sort_values(["confidence", "image_id"], ascending=[False, True])
        step = max(1, math.ceil(len(per_image) / gallery)) if gallery > 0 else 1
        spread = per_image.iloc[::step].head(gallery) if gallery > 0 else per_image.head(0)
        return cls(
            frame,
            per_image,
            labelled,
            wrong,
            _worst(frame, "relative_delta", completeness, examples),
            _worst(frame, "attribution_error", tolerance, examples),
            _no_better_than_chance(frame),
            _chance_tests(frame),
            _not_measurable(frame),
            spread,
            step,
            tolerance,
            completeness,
            _baseline_count(config),
            one_output,
        )

    def shown_keys(self, examples: int) -> list[tuple[str, int]]:
        """(image_id, target_class) of every row whose arrays the page draws."""
        parts = (
            self.wrong.head(examples),
            self.worst,
            self.worst_pixel,
            self.chance.head(examples),
            self.unmeasurable.head(examples),
            self.gallery,
        )
        keys = [(m["image_id"], int(m["target_class"])) for p in parts for _, m in p.iterrows()]
        # The true label's row of a misclassified image, where the run attributed it too.
        return keys + [
            (m["image_id"], int(m["label"])) for _, m in self.wrong.head(examples).iterrows()
        ]


def _heat_map(
    pictures: _Pictures,
    image_id: str,
    target_class: int,
    panels: Sequence[str],
    panel_size: float = 2.2,
    title: str | None = None,
) -> _Picture:
    """The row's heat map, or a note saying why there is none."""
    key = ("heat map", image_id, int(target_class), tuple(panels), panel_size, title)
    draw = functools.partial(
        _draw_heat_map, pictures, image_id, target_class, panels, panel_size, title
    )
    return pictures.drawn(key, draw)


def _draw_heat_map(
    pictures: _Pictures,
    image_id: str,
    target_class: int,
    panels: Sequence[str],
    panel_size: float,
    title: str | None,
) -> _Picture:
    row = pictures.row(image_id, target_class)
    if row is None:
        return _Picture(note="Row not found when reading arrays.")
    try:
        attributions = results.attributions_of(row)
    except ValueError:  # --attributions none: the photo alone, as the gallery shows it
        return _photo(pictures.image(image_id), row, panel_size, title)
    figure = plots.attribution_figure(
        attributions,
        pictures.image(image_id),
        panels=panels,
        panel_size=panel_size,
        title=title,
        image_note=pictures.missing(image_id),
    )
    return _png(figure, alt=f"heat map of {row['file_name']} for {row['target_name']}")


def _photo(
    image: np.ndarray | None, row: pd.Series, panel_size: float, title: str | None
) -> _Picture:
    """A row's photo where the run stored no map; the note alone without a photo either."""
    note = "No attributions stored (the run used --attributions none)."
    if image is None:
        return _Picture(note=note)
    figure = plots.attribution_figure(
        np.zeros(image.shape[:2], np.float32),
        image,
        panels=("image",),
        panel_size=max(panel_size, 3.4),  # room for the title and the note under it
        title=title,
        note="no map stored (--attributions none)",
    )
    return _png(figure, alt=f"photo of {row['file_name']} (no attributions stored)")


def _flag_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(_flag_value(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _effective_command(manifest: Mapping[str, Any]) -> str:
    """The run's command line with the values it ran with, from the manifest.

    The command as typed can give a flag twice (`run_local.sh`'s defaults, then the
    user's); the manifest holds the values that won, so each flag appears once.
    """
    model, config = manifest.get("model", {}), manifest.get("config", {})
    renamed = {"baselines": "baseline"}
    where = manifest.get("working_folder")
    local_model = model.get("kind") in ("keras", "saved_model")
    flags = [
        ("dataset", manifest.get("dataset")),
        ("split", manifest.get("split")),
        (
            "model",
            absolute_path(model.get("reference"), where) if local_model else model.get("reference"),
        ),
        ("output", absolute_path(manifest.get("output"), where)),
    ]
    flags += [(renamed.get(k, k), v) for k, v in config.items() if k not in _NOT_FLAGS]
    flags += [
        # A non-square model fixes its size: --image_size (a square's) would be refused.
        ("image_size", None if model.get("image_width") else model.get("image_size")),
        ("input_range", model.get("input_range")),
        ("label_offset", model.get("label_offset")),
        ("batch_size", manifest.get("batch_size")),
    ]
    # Files the manifest names by their content (class names) or not at all
    # (TFDS's data folder): their paths as typed.
    typed = manifest.get("command", [])
    flags += [(name, typed_path(manifest, name)) for name in _TYPED_ONLY]
    # XLA changes the floats at rounding; a manifest before it was recorded: as typed.
    flags.append(("jit_compile", manifest.get("jit_compile") or typed_flag(typed, "jit_compile")))
    parts = ["python", "-m", "pipeline"]
    for name, value in flags:
        if value is None or value is False:
            continue
        parts += [f"--{name}"] if value is True else [f"--{name}", _flag_value(value)]
    return shell_command(parts, _PAGE_ENCODING)


_TYPED_ONLY = ("class_names", "data_dir")
# Settings in the manifest's "config" that no flag sets: store_path (the library's),
# estimate_bound (derived from --tolerance), faithfulness_pixels and faithfulness_ties
# (the job's version).
_NOT_FLAGS = frozenset({"store_path", "estimate_bound", "faithfulness_pixels", "faithfulness_ties"})


def _repeated(command: list[str]) -> list[str]:
    """The flags the command gives twice where the last one counts (`--name v` or
    `--name=v`; not Beam's flags that accumulate, like `--experiments`)."""
    names = [a.split("=", 1)[0] for a in map(str, command) if a.startswith("--")]
    if len(names) == len(set(names)):
        return []  # the common case, without importing Beam's flags
    from pipeline.options import overridden_flags  # noqa: PLC0415  (Beam: seconds to import)

    return overridden_flags(command)


def _typed(command: list[str]) -> str:
    """The command as typed, `python -m pipeline` for the module's own path."""
    args = [str(a) for a in command]
    if args and args[0].replace("\\", "/").split("/")[-2:] == ["pipeline", "__main__.py"]:
        args = ["python", "-m", "pipeline", *args[1:]]
    return shell_command(args, _PAGE_ENCODING)


# Every key the summary shows; an older manifest without one shows a dash.
_MODEL_KEYS = tuple(
    "reference kind location identity image_size image_width input_range num_outputs "
    "label_offset".split()
)
_CONFIG_KEYS = tuple(
    "target score top_k method steps max_steps baselines tolerance estimate_bound "
    "completeness_tolerance attributions "
    "attribution_dtype store_path".split()
)


def _checkpointed(output: str, shown: set[str], run_id: str | None) -> int:
    """Images whose rows a run that did not finish holds in its checkpoint files,
    which --resume keeps, and that are not among the rows `shown` already (a run
    killed after its sink finalized has both); an unreadable file counts none.
    Only those of `transforms.manifest.run_checkpoints(output, run_id)` (the
    manifest's run id), as --resume salvages only those: none for no run id."""
    folder = run_checkpoints(output, run_id)
    if folder is None:
        return 0
    if files.is_remote(output):  # refused: a PermissionError naming the folder
        found = files.match([files.join(folder, "*.parquet")])[0].metadata_list
        paths = [m.path for m in found]
    else:
        paths = glob.glob(os.path.join(glob.escape(folder), "*.parquet"))
    ids: set[str] = set()
    for path in sorted(paths):
        try:
            with files.open_read(path) as f:
                ids.update(pq.read_table(f, columns=["image_id"]).column(0).to_pylist())
        except Exception:  # noqa: BLE001 - a half-written file: its images are redone
            continue
    return len(ids - shown)


def _resumed(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """What an unfinished --resume's rows are besides its own: its earlier runs' files,
    kept in results/ (`runs`: how many), the rows of one among them that did not finish
    (killed, failed or stopped: `recovered`) salvaged from its checkpoints when this run started
    (`pipeline.resume.resume_state`). None: not a --resume."""
    runs = [r for r in manifest.get("earlier_runs") or () if isinstance(r, Mapping)]
    if not runs:
        return None
    killed = any((r.get("counts") or {}).get("rows") is None for r in runs)
    return {"runs": len(runs), "recovered": killed}


def run_state(manifest: Mapping[str, Any], rows: int, images: int | None = None) -> str:
    """What the page says of the run as a whole, decided here once.

    'unfinished': its manifest was never completed (killed, or still running),
    so it has no counts; 'no-inputs': its dataset gave no image; 'missing':
    `results/` holds rows of fewer images than the manifest says have rows (a
    results file was deleted or moved since); 'all-failed': inputs and not one
    result row; 'rows': anything else. `rows`, `images`: the result rows read
    back and their distinct images (None: not checked).
    """
    if unfinished_status(manifest) is not None:
        return "unfinished"
    if not (manifest.get("counts") or {}).get("inputs"):
        return "no-inputs"
    if images is not None and images < _images_with_rows(manifest):
        return "missing"
    return "all-failed" if rows == 0 else "rows"


def _images_with_rows(manifest: Mapping[str, Any]) -> int:
    """Images whose rows a complete run's results/ must hold: this run's and those
    an earlier run left (a --resume skipped them); more if the folder lost images."""
    counts = manifest.get("counts") or {}
    return int(counts.get("images_with_rows") or 0) + int(counts.get("skipped_done_before") or 0)


def _earlier_run(run: Mapping[str, Any], next_prefix: str | None) -> dict[str, Any]:
    """How a run that this one resumed made its rows (an entry of the manifest's
    `earlier_runs`): its times, rows, files and the settings that may differ between
    runs. `next_prefix`: the `results_prefix` of the run that resumed it."""
    rows = (run.get("counts") or {}).get("rows")
    settings = {
        "batch_size": run.get("batch_size"),
        "path_batch_size": run.get("path_batch_size") or "auto",  # the config's null
        "jit_compile": run.get("jit_compile"),
    }
    return {
        "start_time": run.get("start_time"),
        "end_time": run.get("end_time"),
        # A run that did not finish (killed: "running"; "failed", "stopped") has no
        # counts: the next run salvaged its rows.
        "rows": "rows not counted (it did not finish)" if rows is None else count(rows, "row"),
        "files": _earlier_files(run.get("results_prefix"), next_prefix, finished=rows is not None),
        "settings": ", ".join(
            f"{k} {_flag_value(v)}" for k, v in settings.items() if v is not None
        ),
    }


def _earlier_files(prefix: str | None, next_prefix: str | None, finished: bool) -> str:
    """Where an earlier run's rows are: its own shards (`part-00000-of-00001.parquet`,
    `part-resume<time>-...`), or for a killed run, whose shards were never written,
    the file the run that resumed it salvaged its checkpoints into
    (`part-salvaged<time>.parquet`, that run's time). `part-*` named every file."""
    own = f"results/{prefix or SHARD_PREFIX}-*.parquet"
    if prefix in (None, SHARD_PREFIX):
        own = f"results/{SHARD_PREFIX}-[0-9]*.parquet"  # a first run's shards only
    resumed = f"{SHARD_PREFIX}-resume"
    if finished or not (next_prefix or "").startswith(resumed):
        return own
    return f"results/{SHARD_PREFIX}-salvaged{next_prefix[len(resumed) :]}.parquet"


def _summary(manifest: Mapping[str, Any], state: str, per_pixel: bool) -> dict[str, Any]:
    """The run's settings, identity and whether every input is accounted for
    (`per_pixel`: its rows hold attribution_error, which its --tolerance bounded)."""
    counts = manifest.get("counts") or {}
    if state in ("unfinished", "missing"):
        accounted = state  # no counts to check, or rows the counts promise are gone
    elif not manifest.get("all_inputs_accounted_for"):
        accounted = "no"
    elif state == "all-failed":
        accounted = "all-failed"  # accounted for as errors, but nothing was audited
    else:
        accounted = "yes"
    versions = [(k, v) for k, v in manifest.get("versions", {}).items() if v]
    typed = _typed(manifest.get("command", []))
    model, config = manifest.get("model", {}), manifest.get("config", {})
    return {
        "model": {k: model.get(k) for k in _MODEL_KEYS},
        "config": {k: config.get(k) for k in _CONFIG_KEYS} | _tolerances(config),
        "per_pixel": per_pixel,
        "counts": counts,
        "count_words": _count_words(counts),
        "dataset": manifest.get("dataset"),
        "split": manifest.get("split"),
        "status": manifest.get("status"),
        "start_time": manifest.get("start_time"),
        "end_time": manifest.get("end_time"),
        "duration": _duration(manifest),
        "earlier": _earlier(manifest),
        "output": manifest.get("output"),
        "accounted": accounted,
        "versions": versions,
        "command": _effective_command(manifest),
        "typed": typed,
        "repeated": _repeated(manifest.get("command", [])),
    }


def _count_words(counts: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """The manifest's `counts` as (key, words, value), known keys first in the job's
    order, then any other (a later version's) with its underscores as spaces."""
    keys = [k for k in _COUNT_WORDS if k in counts] + [k for k in counts if k not in _COUNT_WORDS]
    return [(k, _COUNT_WORDS.get(k, k.replace("_", " ")), counts[k]) for k in keys]


def _earlier(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The runs this one resumed (`_earlier_run`), oldest first, each with the prefix
    of the run that resumed it (the next one, or this one)."""
    runs = list(manifest.get("earlier_runs") or ())
    after = [run.get("results_prefix") for run in runs[1:]] + [manifest.get("results_prefix")]
    return [_earlier_run(run, next_prefix) for run, next_prefix in zip(runs, after, strict=False)]


def _tolerances(config: Mapping[str, Any]) -> dict[str, Any]:
    """The bound on relative_delta: a run of a version before --completeness_tolerance
    had --tolerance bound it (with attribution_error, or alone before that column)."""
    return {"completeness_tolerance": completeness_bound(config)}


def _tiles(manifest: Mapping[str, Any], chosen: _Selection, state: str) -> list[dict[str, Any]]:
    """The headline numbers: (value, label, tone) with tone good, bad or neutral."""
    counts, frame = manifest.get("counts") or {}, chosen.frame
    unknown = state == "unfinished"  # no counts: what is not known is not shown as 0
    inputs = "?" if unknown else counts.get("inputs", len(chosen.per_image))
    errors = "?" if unknown else counts.get("errors", 0)
    tiles = [
        (inputs, "inputs", "bad" if unknown else ""),
        (len(frame), "result rows", "" if state == "rows" else "bad"),
        (errors, "errors", "bad" if unknown or errors else "good"),
        *_accuracy_tiles(chosen),
        (
            _pct(frame["relative_delta"].median() if len(frame) else None, 2),
            "median relative completeness error",
            "",
        ),
    ]
    if "attribution_error" in frame and frame["attribution_error"].notna().any():
        tiles.append((_pct(frame["attribution_error"].median(), 2), "median per-pixel error", ""))
    if len(frame) and chosen.tolerance:  # with --tolerance 0 no row is judged
        flagged = int(frame["within_tolerance"].eq(False).sum())
        tiles.append((flagged, "rows not within tolerance", "bad" if flagged else "good"))
    if _faithfulness_measured(frame):
        chance = len(chosen.chance)
        # The sign test decides: 0 is good only where it says the maps beat chance (not
        # of no trial, `results.judged`, nor of a few rows that noise maps can all win
        # by luck); rows that lose are bad only where it does not (good maps lose to a
        # random ranking in some rows: 1 of 20 is no alarm).
        beat = _beat_chance(chosen.tests)
        tone = ("" if beat else "bad") if chance else ("good" if beat else "")
        tiles.append((chance, "rows no better than chance", tone))
        if len(chosen.unmeasurable):  # both checks measured nothing: neither good nor bad
            tiles.append((len(chosen.unmeasurable), "rows not measurable", ""))
    return [{"value": v, "label": _tile_label(v, t), "tone": k} for v, t, k in tiles]


def _accuracy_tiles(chosen: _Selection) -> list[tuple[Any, str, str]]:
    """The tiles of top-1 accuracy and misclassified images; of a model of one output,
    which has no classes, one that says so instead."""
    if chosen.one_output:
        return [("–", "no accuracy: the model has one output and no classes", "")]
    labelled, wrong = len(chosen.labelled), len(chosen.wrong)
    return [
        (
            _pct(1 - wrong / labelled if labelled else None),
            f"top-1 accuracy ({labelled} of {len(chosen.per_image)} images labelled)",
            "",
        ),
        # Without a labelled image none can be misclassified: a dash, not a green 0 (all right).
        (
            wrong if labelled else "–",
            "misclassified images",
            ("bad" if wrong else "good") if labelled else "",
        ),
    ]


#: The tiles' labels of a count of one.
_SINGULAR = {
    "inputs": "input",
    "result rows": "result row",
    "errors": "error",
    "misclassified images": "misclassified image",
    "rows not within tolerance": "row not within tolerance",
    "rows no better than chance": "row no better than chance",
    "rows not measurable": "row not measurable",
}


def _tile_label(value: Any, label: str) -> str:
    """`label` of a tile, singular under a count of 1 ("1 error", not "1 errors")."""
    return _SINGULAR.get(label, label) if isinstance(value, int) and value == 1 else label


def _label_rank(row: Mapping[str, Any]) -> str:
    """Where the true label sits in the top-k, e.g. '#3 (4.1%)' or 'not in top 5'."""
    if results.is_missing(row["label"]):
        return "–"
    classes = [int(c) for c in row["top_k_classes"]]
    label = int(row["label"])
    if label in classes:
        rank = classes.index(label)
        return f"#{rank + 1} ({_prob(float(row['top_k_probs'][rank]))})"
    return f"not in top {len(classes)}"


def _top_k(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The top-k predictions; the true label is marked, a wrong top-1 in red."""
    truth = None if results.is_missing(row["label"]) else int(row["label"])
    items = []
    for rank, (cls, name, prob) in enumerate(
        zip(row["top_k_classes"], row["top_k_names"], row["top_k_probs"], strict=False)
    ):
        css = "truth" if int(cls) == truth else ("pred" if rank == 0 and truth is not None else "")
        items.append(
            {"name": name, "prob": _prob(float(prob)), "css": css, "is_label": css == "truth"}
        )
    return items


def _evidence(pictures: _Pictures, meta: Mapping[str, Any]) -> list[_Picture]:
    """Heat maps of a misclassified image: for the attributed class and, if the run
    attributed it too (`--target top_k`), for the true label."""
    label, target = int(meta["label"]), int(meta["target_class"])
    role = (
        "the prediction"
        if target == meta["predicted_class"]
        else "the label"
        if target == label
        else "class"
    )
    panels = ("image", "mask", "overlay")
    maps = [
        _heat_map(
            pictures,
            meta["image_id"],
            target,
            panels,
            title=f"Attributed to {role}: {printable(meta['target_name'])}",
        )
    ]
    if target != label and pictures.row(meta["image_id"], label) is not None:
        maps.append(
            _heat_map(
                pictures,
                meta["image_id"],
                label,
                panels,
                title=f"Attributed to the label: {printable(meta['label_name'])}",
            )
        )
    return maps


def _misclassified(
    chosen: _Selection, pictures: _Pictures, limit: int, errors: int, state: str, target: str
) -> dict[str, Any]:
    """The most confident misclassifications, or why there are none to show; `target`:
    the run's --target, which says whose map the cards show."""
    labelled, wrong = chosen.labelled, chosen.wrong
    if chosen.frame.empty:
        empty = state  # no rows: 'all-failed', 'no-inputs', 'missing' or 'unfinished'
    elif chosen.one_output:
        empty = "one-output"
    elif labelled.empty:
        empty = "unlabelled-with-errors" if errors else "unlabelled"
    else:
        empty = "all-right" if wrong.empty else None
    cards = []
    for _, meta in wrong.head(limit).iterrows():
        row = pictures.row(meta["image_id"], meta["target_class"])  # with the top-k lists
        cards.append(
            {
                "meta": meta.to_dict(),
                "maps": _evidence(pictures, meta),
                "rank": _label_rank(row) if row is not None else "–",
                "top_k": _top_k(row) if row is not None else [],
            }
        )
    rate = len(wrong) / len(labelled) if len(labelled) else None
    return {
        "wrong": len(wrong),
        "labelled": len(labelled),
        "rate": rate,
        "empty": empty,
        "errors": errors,
        "cards": cards,
        "target": target,
    }


def _distribution(values: pd.Series) -> dict[str, Any] | None:
    """Median, 95th percentile and worst of the values that are not NaN (an infinite
    one is a value, the worst: a float16 overflow); None when every value is NaN."""
    known = values.to_numpy(dtype=np.float64)
    known = np.sort(known[~np.isnan(known)])
    if known.size == 0:
        return None
    return {
        "median": _percentile(known, 50),
        "p95": _percentile(known, 95),
        "max": known[-1],
        "count": int(known.size),
        "missing": int(len(values) - known.size),
        "infinite": int(np.isinf(known).sum()),
    }


def _percentile(ordered: np.ndarray, q: float) -> float:
    """numpy's linear percentile of sorted values, infinite where it reaches an
    infinite value (numpy gives NaN there: inf times a zero weight)."""
    position = (ordered.size - 1) * q / 100
    low, high = ordered[math.floor(position)], ordered[math.ceil(position)]
    return float(high if math.isinf(high) else low + (high - low) * (position % 1))


def _above(frame: pd.DataFrame, column: str, tolerance: float | None) -> int | None:
    return int((frame[column] > tolerance).sum()) if tolerance else None


def _completeness(chosen: _Selection, config: Mapping[str, Any]) -> dict[str, Any]:
    frame, tolerance = chosen.frame, chosen.completeness_tolerance
    refined = int((frame["steps"] > int(config.get("steps", 0) or 0)).sum())
    figure = None  # no rows: a note, as the other sections say it
    if len(frame):
        deltas = frame["relative_delta"].to_numpy(np.float64)
        figure = _png(
            plots.completeness_figure(deltas, tolerance), "completeness histogram", wide=True
        )
    return {
        "stats": _distribution(frame["relative_delta"]),
        "refined": refined,
        "rows": len(frame),
        "above": _above(frame, "relative_delta", tolerance),
        "tolerance": tolerance,
        "figure": figure,
        "score": config.get("score"),  # what F is: raw or softmax
        "flagged": _not_within(frame, chosen.tolerance, config.get("max_steps")),
    }


def _not_within(
    frame: pd.DataFrame, tolerance: float | None, max_steps: Any
) -> dict[str, Any] | None:
    """The rows whose `within_tolerance` is false, and how many of them refinement
    stopped at the --max_steps cap (`steps`, the most points of any baseline, at it),
    which a rerun can raise; None without rows or a tolerance (none was judged)."""
    if frame.empty or not tolerance:
        return None
    flagged = frame[frame["within_tolerance"].eq(False)]
    capped = None
    if isinstance(max_steps, int) and not isinstance(max_steps, bool):
        capped = int((flagged["steps"] >= max_steps).sum())
    # A run before attribution_error judged its rows by their sums alone.
    per_pixel = "attribution_error" in frame and bool(frame["attribution_error"].notna().any())
    return {
        "count": len(flagged),
        "max_steps": max_steps,
        "capped": capped,
        "sum_only": not per_pixel,
    }


def _baseline_names(config: Mapping[str, Any]) -> list[str]:
    """The baselines a run's rows average over (a list, or a comma-separated text)."""
    return list(baseline_names(config.get("baselines") or ["black"]))


def _baseline_count(config: Mapping[str, Any]) -> int:
    return len(_baseline_names(config))


def _deleted_to(config: Mapping[str, Any]) -> str:
    """What the deletion check sets pixels to: the first baseline, which is not the
    map's whole reference when the map averages several."""
    names = _baseline_names(config)
    if len(names) == 1:
        return "the baseline"
    count = ("two", "three", "four", "five")[len(names) - 2] if len(names) <= 5 else len(names)
    return f"the {names[0]} baseline, the first of the {count} averaged"


def _fact(key: str, value: str, bad: bool = False) -> dict[str, Any]:
    """One line of a row card's numbers; `bad` ones are shown in red."""
    return {"key": key, "value": value, "bad": bool(bad)}


def _path_curve(row: pd.Series) -> _Picture:
    return _png(plots.path_figure(row, width=3.4, height=2.3), alt="path curve")


def _error_card(pictures: _Pictures, meta: pd.Series, chosen: _Selection) -> dict[str, Any]:
    """A row's heat map, path curve and error numbers, those over their tolerance in red."""
    row = pictures.row(meta["image_id"], meta["target_class"])
    figures = [
        _heat_map(pictures, meta["image_id"], meta["target_class"], ("image", "overlay"), 1.9)
    ]
    if row is not None and results.path_of(row) is not None:
        key = ("path curve", meta["image_id"], int(meta["target_class"]))
        figures.append(pictures.drawn(key, functools.partial(_path_curve, row)))

    def error(key: str, column: str, tolerance: float | None) -> dict[str, Any]:
        value = meta.get(column)
        return _fact(
            key, _pct(value, 2), tolerance and not results.is_missing(value) and value > tolerance
        )

    facts = [error("relative completeness error", "relative_delta", chosen.completeness_tolerance)]
    if "attribution_error" in meta:
        key = "per-pixel error (estimated)"
        if facts[0]["bad"]:  # the sum is off: the estimate may be low (docs/accuracy.md)
            key = "per-pixel error (estimated; may be low: the sum is off)"
        facts.append(error(key, "attribution_error", chosen.tolerance))
    within = meta["within_tolerance"]
    if results.is_missing(within):  # --tolerance 0: nothing to be within
        verdict, flagged = "not checked (--tolerance 0)", False
    else:
        verdict, flagged = ("yes", False) if within else ("no", True)
    facts += [
        _fact("F(x), image", _num(meta["target_score"])),
        _fact(
            "F(x′), mean over the baselines" if chosen.baselines > 1 else "F(x′), baseline",
            _num(meta["baseline_score"]),
        ),
        _fact("Σ attributions", _num(meta["attribution_sum"])),
        _fact(
            "path points per baseline" if chosen.baselines > 1 else "path points",
            f"{_text(meta['steps'])} ({_text(meta['evaluations'])} gradients)",
        ),
        _fact("within tolerance", verdict, flagged),
    ]
    card = {"meta": meta.to_dict(), "figures": figures, "facts": facts}
    return card | ({"target": _score_target(meta)} if chosen.one_output else {})


def _score_target(meta: pd.Series) -> str:
    """What a row card of a model of one output attributes, for its heading: the
    output's name where --class_names gave one, else "score" (its index, '0', reads
    as a class the model does not have)."""
    name = meta["target_name"]
    unnamed = results.is_missing(name) or str(name) == str(int(meta["target_class"]))
    return "score" if unnamed else str(name)


def _worst_completeness(chosen: _Selection, pictures: _Pictures) -> dict[str, Any]:
    frame, tolerance = chosen.frame, chosen.completeness_tolerance
    return {
        "rows": len(frame),
        "tolerance": tolerance,
        "above": _above(frame, "relative_delta", tolerance),
        "cards": [_error_card(pictures, m, chosen) for _, m in chosen.worst.iterrows()],
    }


def _not_recorded(frame: pd.DataFrame, config: Mapping[str, Any]) -> dict[str, Any]:
    """Why a run's rows have no `attribution_error` value: a fixed rule (--tolerance 0)
    of too few nodes to estimate it from (null by design: one node, or two of a rule
    exact for linear functions), or a run made before the job estimated it."""
    steps, method = int(config.get("steps") or 0), str(config.get("method"))
    spread = has_spread(method, steps) if method in METHODS else steps > 1
    no_spread = 0 < steps and not spread
    fixed = "attribution_error" in frame and config.get("tolerance") == 0 and no_spread
    return {
        "state": "not-recorded",
        "reason": "fixed-rule" if fixed else "older-run",
        "method": config.get("method"),
        "steps": steps,
    }


def _accuracy(chosen: _Selection, pictures: _Pictures, config: Mapping[str, Any]) -> dict[str, Any]:
    """The per-pixel error estimate beside completeness, or why it is not shown."""
    frame, tolerance = chosen.frame, chosen.tolerance
    if frame.empty:
        return {"state": "no-rows"}
    stats = _distribution(frame["attribution_error"]) if "attribution_error" in frame else None
    if stats is None:
        return _not_recorded(frame, config)
    errors = frame["attribution_error"]
    # Within the tolerance in the sum, above it per pixel: what completeness alone hides.
    hidden = (
        int(
            (
                (frame["relative_delta"] <= chosen.completeness_tolerance) & (errors > tolerance)
            ).sum()
        )
        if tolerance
        else None
    )
    figure = plots.attribution_error_figure(errors.to_numpy(np.float64), tolerance)
    return {
        "state": "recorded",
        "stats": stats,
        "rows": len(frame),
        "tolerance": tolerance,
        "above": _above(frame, "attribution_error", tolerance),
        "sum_only": hidden,
        # Rows whose sum is off: their estimate can understate the per-pixel error.
        "lower_bounds": _above(frame, "relative_delta", chosen.completeness_tolerance),
        "figure": _png(figure, "per-pixel error histogram", wide=True),
        "cards": [_error_card(pictures, m, chosen) for _, m in chosen.worst_pixel.iterrows()],
    }


def _apart(value: Any, control: Any, digits: int = 3) -> str:
    """'value (control)' with `digits` significant digits, more (up to 6) where those
    show two different numbers alike: a row flagged for 0.99250 against 0.99315
    would read '0.993 (0.993)', a tie to the eye."""
    while digits < 6 and value != control and _num(value, digits) == _num(control, digits):
        digits += 1
    return f"{_num(value, digits)} ({_num(control, digits)})"


def _chance_card(pictures: _Pictures, meta: pd.Series) -> dict[str, Any]:
    """A row that does no better than chance: heat map, curves, AUCs (the failing ones red)."""
    row = pictures.row(meta["image_id"], meta["target_class"])
    curves = plots.faithfulness_curves_figure(row if row is not None else meta)
    facts = [_check_fact(meta, c, bool(meta[f"_loses_{c}"])) for c in _CHECKS]
    heat = _heat_map(pictures, meta["image_id"], meta["target_class"], ("image", "overlay"), 1.9)
    figures = [heat, _png(curves, alt="deletion and insertion curves")]
    return {"meta": meta.to_dict(), "figures": figures, "facts": facts}


def _check_fact(meta: pd.Series, check: str, loses: bool) -> dict[str, Any]:
    """A flagged row's AUCs of one check, red where they count against its map; a check
    that measured nothing (no trial, `results.judged`) says so: "1 (1)" reads as a tie."""
    value = _apart(meta[f"{check}_auc"], meta[f"{check}_auc_random"])
    frame = meta.to_frame().T  # one row, as `results.judged` reads rows
    if bool(results.measured_nothing(frame, check).iloc[0]):
        value = f"{value}: measured nothing, not counted"
    return _fact(f"{check} AUC (random)", value, loses)


def _unmeasurable_card(pictures: _Pictures, meta: pd.Series) -> dict[str, Any]:
    """A row whose two checks both measured nothing: heat map, curves, AUCs, why."""
    row = pictures.row(meta["image_id"], meta["target_class"])
    curves = plots.faithfulness_curves_figure(row if row is not None else meta)
    facts = [
        _fact("deletion AUC (random)", _apart(meta["deletion_auc"], meta["deletion_auc_random"])),
        _fact(
            "insertion AUC (random)", _apart(meta["insertion_auc"], meta["insertion_auc_random"])
        ),
        _fact("why not measurable", _why_unmeasurable(pictures, meta["image_id"])),
    ]
    heat = _heat_map(pictures, meta["image_id"], meta["target_class"], ("image", "overlay"), 1.9)
    figures = [heat, _png(curves, alt="deletion and insertion curves")]
    return {"meta": meta.to_dict(), "figures": figures, "facts": facts}


def _why_unmeasurable(pictures: _Pictures, image_id: str) -> str:
    """Why neither of a row's checks measured anything, as far as its image tells."""
    if pictures.equals_baselines(image_id):
        return (
            "its image equals its baseline: its map is 0 (x − x′ is 0 at every pixel), "
            "exact IG, and deleting or inserting its pixels changes nothing"
        )
    unchanged = pictures.unchanged_by_checks(image_id)
    if unchanged:
        return (
            "its image equals its first baseline and its blurred copy: deleting or "
            "inserting its pixels changes nothing, whatever its map (from its other "
            "baselines)"
        )
    model = (
        "its pixels do not move the model's probability (a saturated model, say): neither "
        "curve left the image's own probability, whatever its map"
    )
    if unchanged is None:
        return (
            f"{model}; or its image equals its first baseline and its blurred copy "
            "(the image was not re-read)"
        )
    return model


#: The two faithfulness checks, as `results.judged` and `results.measured_nothing` name them.
_CHECKS = ("deletion", "insertion")

#: A panel of the AUC figure whose check is a trial in no row (`results.judged`).
_NO_TRIAL = "no row where this check measured something (the notes say why)"


def _faithfulness_measured(frame: pd.DataFrame) -> bool:
    """Whether the rows hold faithfulness AUCs: any of the four (with --faithfulness
    none all are null; a model's NaN on one curve nulls that curve's alone)."""
    columns = set(_FAITHFULNESS) <= set(frame.columns)
    return columns and bool(frame[_FAITHFULNESS].notna().any(axis=None))


def _faithfulness(chosen: _Selection, pictures: _Pictures, limit: int) -> dict[str, Any]:
    """IG's deletion / insertion AUCs against the random control, or why they are absent."""
    frame = chosen.frame
    if frame.empty:
        return {"state": "no-rows"}
    if not set(_FAITHFULNESS) <= set(frame.columns):
        return {"state": "not-recorded"}
    if not _faithfulness_measured(frame):
        return {"state": "off"}
    # A row with one curve's AUCs null (the model's NaN at a point of it) is measured on
    # the other, and may be flagged on it: only rows with none are left out.
    measured = frame.dropna(subset=_FAITHFULNESS, how="all")
    # The rows neither check measured are apart: in no median, count or figure.
    judged = measured[~measured.index.isin(chosen.unmeasurable.index)]
    # Of the rows judged: one check blind, never two (those are `chosen.unmeasurable`).
    blind = {c: results.measured_nothing(judged, c) for c in _CHECKS}
    trials = {c: results.judged(judged, c) for c in _CHECKS}
    aucs = _trial_aucs(judged, trials)
    figure = None  # no row measured: the page shows no table or figure
    if len(judged):
        drawn = plots.faithfulness_figure(aucs, empty=_NO_TRIAL)
        figure = _png(drawn, "deletion and insertion AUC distributions", wide=True)
    return {
        "state": "recorded",
        "rows": len(judged),
        "trial_rows": int((trials["deletion"] | trials["insertion"]).sum()),
        "measured": len(measured),
        **_auc_table(aucs, trials, blind),
        "missing": len(frame) - len(measured),
        "chance": len(chosen.chance),
        "tests": {c: _chance_line(t) for c, t in chosen.tests.items()},
        "per_image": any(t.images < t.rows for t in chosen.tests.values()),
        "significance": results.SIGNIFICANCE,
        "resolution": results.AUC_RESOLUTION,
        "blind": int((blind["deletion"] | blind["insertion"]).sum()),
        "figure": figure,
        "cards": [_chance_card(pictures, m) for _, m in chosen.chance.head(limit).iterrows()],
        "unmeasurable": len(chosen.unmeasurable),
        "unmeasurable_cards": [
            _unmeasurable_card(pictures, m) for _, m in chosen.unmeasurable.head(limit).iterrows()
        ],
    }


def _trial_aucs(judged: pd.DataFrame, trials: Mapping[str, pd.Series]) -> pd.DataFrame:
    """The four AUCs of the rows, each check's null where it is no trial of that check
    (`results.judged`): out of its medians, its figure and its count of rows."""
    return pd.DataFrame(
        {
            f"{c}_auc{suffix}": judged[f"{c}_auc{suffix}"].where(trials[c])
            for c in _CHECKS
            for suffix in ("", "_random")
        },
        index=judged.index,
    )[_FAITHFULNESS]


def _auc_table(
    aucs: pd.DataFrame, trials: Mapping[str, pd.Series], blind: Mapping[str, pd.Series]
) -> dict[str, Any]:
    """The table's medians and, per check, over how many rows (`trials`) and in how
    many of them IG beats its control (`beats`); and why the other rows are out of
    that check's line: a null AUC (`null`) or a check that measured nothing (`blind`).

    Args:
      aucs: the AUCs of the rows the checks can measure (`_trial_aucs`).
      trials, blind: per check, bool Series of those rows (`results.judged`,
        `results.measured_nothing`).
    """
    medians = {c: float(aucs[c].median()) for c in _FAITHFULNESS}
    # IG beats its control in every trial it does not lose or tie, as the read-back
    # API counts those: "X of N" leaves N - X rows no better than chance on that check.
    losses = dict(zip(_CHECKS, results.chance_losses(aucs), strict=True))
    return {
        "medians": medians,
        "trials": {c: int(trials[c].sum()) for c in _CHECKS},
        "beats": {c: int((trials[c] & ~losses[c]).sum()) for c in _CHECKS},
        "blind_in": {c: int(blind[c].sum()) for c in _CHECKS},
        "null": {c: int((~trials[c] & ~blind[c]).sum()) for c in _CHECKS},
    }


def _p_value(p: float) -> str:
    """A p-value to 2 significant digits, one below 0.0001 as such."""
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.2g}"


def _chance_line(test: results.ChanceTest) -> dict[str, Any]:
    """The table's cells of a check's sign test (`results.chance_test`): whether the maps
    beat their controls more often than chance, with the p-value, and the median lead
    over the control with its interval. An image of several rows counts once."""
    if not test.images:
        return {"verdict": "–", "lead": "–"}
    unit = "image" if test.images < test.rows else "row"
    p = _p_value(test.p_value)
    verdict = (
        f"yes, {p}"
        if test.better_than_chance
        else f"not distinguishable from chance at {count(test.images, unit)} ({p})"
    )
    lead = _num(test.median_lead, 3)
    if test.interval is not None:
        lead += f" ({_num(test.interval[0], 3)} to {_num(test.interval[1], 3)})"
    return {"verdict": verdict, "lead": lead}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def read_sanity(output: str) -> dict[str, Any] | None:
    """The model-randomisation sanity check of a run (Adebayo et al., 2018), if it was run.

    Reads `<output>/sanity/sanity.json`, written by the sanity-check mode:
    `{"stages": [{"layer": name, "spearman_median": x, "ssim_median": y}, ...],
    "verdict": "...", "changed": true | false | null, "images": n, "rows": r,
    "image_ids": [...]}` (a version before "rows" wrote the rows as "images"), stages in the
    order the layers were randomised (top down, cascading), so the last is the
    most destroyed model.

    The reader is tolerant, because the page must render whatever version of the
    check wrote the file: every key is optional, unknown keys are ignored, a stage
    that is not an object is skipped, and a value that is not a finite number
    becomes None. A file that cannot be read or parsed gives `{"error": reason}`
    so that the page says so instead of failing.

    Returns:
      None when there is no such file; else a dict with `stages` (list of
      `{"layer": str, "spearman_median": float | None, "ssim_median": float | None,
      "further", "decision", "first"}`: per measure the stage's images further than the
      input alone, `k of n images`, and the check's decision on the stage as it
      recorded it, None for a stage without sign tests; `first`: the first it says
      changed, `_sanity_stage_tests`),
      `verdict` (str or None, as written), `rows` and `images` (the rows checked and
      their distinct images; int or None), `changed`
      (True: the maps change when the model is destroyed, so they depend on what
      it learned; False: they do not, so they are not explanations of the model;
      None: undecided, or not recorded), `judged` (the sign tests of the last stage
      against the input alone, x - x', that the check decided by: `{"layer",
      "layers", "measures": [{"name", "further", "p_further", "closer", "p_closer",
      "median", "alone"}]}`, the counts and p-values as the page shows them; None for
      a file of a version before them, which judged the medians), `rule` and `advice`
      (the check's decision rule in a sentence, and what may decide an undecided
      check; str or None, as written) and `error` (None, or why the file is
      unusable). `changed` is the check's own decision as it recorded it (see
      `pipeline.sanity.maps_changed`), never judged again here, so that the page
      and the check's verdict cannot disagree.
    """
    path = files.join(output, SANITY_DIR, SANITY_JSON)
    if not files.exists(path):
        return None
    try:
        data = _sanity_json(path)
    except (OSError, ValueError) as e:
        _LOG.warning("Cannot read the sanity check %s: %s", path, e)
        return _unusable_sanity(str(e))
    return _sanity_fields(data)


def _sanity_json(path: str) -> dict[str, Any]:
    """The JSON object in the file at `path`; an OSError where it cannot be read, a
    ValueError where it is not JSON (UnicodeDecodeError and JSONDecodeError are) or
    not an object."""
    with files.open_read(path) as f:
        data = json.loads(f.read().decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data


def _unusable_sanity(reason: str) -> dict[str, Any]:
    """`read_sanity`'s answer for a file it cannot use, and why: nothing else known."""
    return {
        "stages": [],
        "verdict": None,
        "rows": None,
        "images": None,
        "changed": None,
        "judged": None,
        "rule": None,
        "advice": None,
        "error": reason,
    }


def _sanity_fields(data: dict[str, Any]) -> dict[str, Any]:
    """`read_sanity`'s answer for a sanity file's object `data`, each key as tolerant
    as `read_sanity` says."""
    rows, images = _sanity_counts(data)
    changed = data.get("changed")
    return {
        "stages": _sanity_stages(data.get("stages")),
        "verdict": _written(data.get("verdict")),
        "rows": rows,
        "images": images,
        "changed": changed if isinstance(changed, bool) else None,
        "judged": _sanity_judged(data),
        "rule": _written(data.get("rule")),
        "advice": _written(data.get("advice")),
        "error": None,
    }


def _written(value: Any) -> str | None:
    """A sanity file's text as written (a string of any other value), None where absent."""
    return None if value is None else str(value)


# The measures of a sanity file's sign tests, as the page names them.
_SANITY_MEASURES = {"spearman": "Spearman", "ssim": "SSIM"}


def _sanity_judged(data: dict[str, Any]) -> dict[str, Any] | None:
    """The sign tests that decided a sanity file's verdict: its last stage's
    `reference_test` per measure, against the input alone's medians (`reference`).
    None for a file of a version before them, which judged the medians alone."""
    stages = data.get("stages")
    stages = [s for s in stages if isinstance(s, dict)] if isinstance(stages, list) else []
    reference = data.get("reference")
    tests = stages[-1].get("reference_test") if stages else None
    if not isinstance(reference, dict) or not isinstance(tests, dict):
        return None
    last = stages[-1]
    measures = [
        _sanity_measure(name, tests[key], last.get(f"{key}_median"), reference.get(f"{key}_median"))
        for key, name in _SANITY_MEASURES.items()
        if isinstance(tests.get(key), dict)
    ]
    layers = _number(last.get("layers_randomised"))
    return {
        "layer": str(last.get("layer", "?")),
        "layers": None if layers is None else int(layers),
        "measures": measures,
        "unscored": _sanity_unscored(last.get("unscored"), tests),
    }


def _sanity_unscored(unscored: Any, tests: dict[str, Any]) -> list[dict[str, Any]]:
    """Per measure, the images its sign test (of `tests`) leaves out, having no value,
    with why (a stage's `unscored`, `pipeline.sanity._unscored`): [{"name", "count",
    "groups": [(its image ids, in order, reason)] per reason, "total": `n images`
    checked, None where the test does not say}]; none for a file of a version before it."""
    said = []
    for key, name in _SANITY_MEASURES.items():
        entries = unscored.get(key) if isinstance(unscored, dict) else None
        entries = [u for u in entries if isinstance(u, dict)] if isinstance(entries, list) else []
        if not entries:
            continue
        test = tests.get(key) if isinstance(tests.get(key), dict) else {}
        counted = _number(test.get("images"))
        total = None if counted is None else count(int(counted) + len(entries), "image")
        reasons: dict[str, list[str]] = {}
        for u in entries:
            reasons.setdefault(str(u.get("reason", "?")), []).append(str(u.get("image_id", "?")))
        groups = [(", ".join(ids), reason) for reason, ids in reasons.items()]
        said.append({"name": name, "count": len(entries), "groups": groups, "total": total})
    return said


def _sanity_measure(name: str, test: dict[str, Any], median: Any, alone: Any) -> dict[str, Any]:
    """A line of the sanity section's sign tests (`pipeline.sanity.reference_test`'s
    `test`): the images whose randomised maps are further from the intact ones than the
    input alone, those that are not, each with its p-value, and the medians of the
    randomised maps' and the input alone's similarity with the intact maps."""
    further, closer = _sanity_images(test)
    p_below, p_not_below = _number(test.get("p_below")), _number(test.get("p_not_below"))
    return {
        "name": name,
        "further": further,
        "p_further": "–" if p_below is None else _p_value(p_below),
        "closer": closer,
        "p_closer": "–" if p_not_below is None else _p_value(p_not_below),
        "median": _number(median),
        "alone": _number(alone),
    }


def _sanity_images(test: Any) -> tuple[str, str]:
    """`k of n images` further from the intact maps than the input alone and as close
    or closer, of a sign test (`pipeline.sanity.reference_test`'s); dashes where it
    does not say."""
    test = test if isinstance(test, dict) else {}
    images, below = _number(test.get("images")), _number(test.get("below"))
    if images is None or below is None or not 0 <= below <= images:
        return "–", "–"
    n = count(int(images), "image")
    return f"{int(below)} of {n}", f"{int(images - below)} of {n}"


def _sanity_counts(data: dict[str, Any]) -> tuple[int | None, int | None]:
    """The rows a sanity file's check computed and their distinct images (None where
    it does not say): its `image_ids` (one per row) where it has them; else its "rows"
    and "images", or, of a version before "rows", its "images", which counted rows."""
    ids = data.get("image_ids")
    if isinstance(ids, list):
        return len(ids), len(set(map(str, ids)))
    rows = _number(data.get("rows", data.get("images")))
    images = _number(data.get("images")) if "rows" in data else None
    return (None if rows is None else int(rows)), (None if images is None else int(images))


def _sanity_stages(raw: Any) -> list[dict[str, Any]]:
    """The stages of a sanity file: objects only, numbers or None, and where the file
    has its sign tests, per stage, the images further than the input alone per measure
    and the check's decision on it, the first it says changed marked (see `read_sanity`)."""
    stages = [
        {
            "layer": str(stage.get("layer", "?")),
            "spearman_median": _number(stage.get("spearman_median")),
            "ssim_median": _number(stage.get("ssim_median")),
            **_sanity_stage_tests(stage),
        }
        for stage in (raw if isinstance(raw, list) else [])
        if isinstance(stage, dict)
    ]
    first = next((stage for stage in stages if stage["decision"] == _CHANGED), None)
    if first is not None:
        first["first"] = True
    return stages


# The check's decision on a stage (`pipeline.sanity.maps_changed`), as the page words it.
_CHANGED = "changed"
_DECISIONS = {True: _CHANGED, False: "as close or closer", None: "undecided"}


def _sanity_stage_tests(stage: dict[str, Any]) -> dict[str, Any]:
    """A stage's `further` (per measure, `k of n images` further from the intact maps
    than the input alone), `decision` (its own `changed` as recorded; of a file before
    it, its `similar`: as close or closer, or not, which is changed or undecided) and
    `first` (False; `_sanity_stages` marks the first changed); `further` and `decision`
    None for a stage without sign tests, whose `similar` compared the medians with a
    threshold."""
    tests = stage.get("reference_test")
    if not isinstance(tests, dict):
        return {"further": None, "decision": None, "first": False}
    changed, similar = stage.get("changed", ...), stage.get("similar")
    if changed is None or isinstance(changed, bool):
        decision = _DECISIONS[changed]
    elif isinstance(similar, bool):
        decision = _DECISIONS[False] if similar else "changed or undecided"
    else:
        decision = None
    further = [_sanity_images(tests.get(key))[0] for key in _SANITY_MEASURES]
    return {"further": further, "decision": decision, "first": False}


def _per_class(chosen: _Selection, limit: int) -> dict[str, Any]:
    """The classes' accuracy, worst first; none of a model of one output (no classes)."""
    per_image = chosen.per_image
    if chosen.one_output:
        return {"rows": [], "total": 0, "limit": limit, "one_output": True}
    table = results.per_class_accuracy(per_image)
    ties = _confusion_ties(per_image)
    rows = [
        {"label": label, **r.to_dict(), "tied": int(ties.get(label, 0))}
        for label, r in table.head(limit).iterrows()
    ]
    return {"rows": rows, "total": len(table), "limit": limit, "one_output": False}


def _confusion_ties(per_image: pd.DataFrame) -> pd.Series:
    """Per label (int), how many other wrong predictions are as frequent as its
    `top_confusion`, which `results.per_class_accuracy` picks among them by name."""
    counts = results.confusions(per_image)
    if counts.empty:
        return pd.Series(dtype="int64")
    most = counts.groupby(level=0).transform("max")
    return (counts == most).groupby(level=0).sum() - 1


def _gallery(chosen: _Selection, pictures: _Pictures) -> dict[str, Any] | None:
    if chosen.gallery.empty:
        return None
    rows = [pictures.row(m["image_id"], m["target_class"]) for _, m in chosen.gallery.iterrows()]
    rows = pd.DataFrame([r for r in rows if r is not None])
    if rows.empty:
        return None
    photos = pictures.images()
    one_output = chosen.one_output  # captioned by score, none red
    figure = plots.grid_figure(rows, photos, columns=4, panel_size=2.6, one_output=one_output)
    with_photo = int(rows["image_id"].isin(list(photos)).sum())
    with_map = sum(1 for _, r in rows.iterrows() if _has_map(r))
    return {
        "count": len(rows),
        # What the panels show, as `plots.grid_figure` draws them.
        "shows": (
            ("overlays" if with_photo else "maps")
            if with_map
            else ("photos" if with_photo else "nothing")
        ),
        "partly": 0 < with_photo < len(rows) and with_map > 0,
        "step": chosen.gallery_step,
        "one_output": chosen.one_output,  # no captions marked misclassified
        "figure": _png(figure, "gallery", dpi=90, wide=True),
    }


def _has_map(row: pd.Series) -> bool:
    try:
        results.attributions_of(row)
    except ValueError:  # --attributions none
        return False
    return True


def _errors(errors: pd.DataFrame, limit: int, state: str) -> dict[str, Any]:
    """The errors by stage, their causes (all of them counted, the `limit` most
    frequent shown) and the first `limit` records by `image_id`."""
    by_stage = errors.groupby("stage").size().sort_values(ascending=False)
    rows = errors.sort_values("image_id").head(limit)
    causes = results.error_causes(errors)
    return {
        "state": state,
        "count": len(errors),
        "by_stage": list(by_stage.items()),
        "causes": causes.head(limit).to_dict("records"),
        "more_causes": max(len(causes) - limit, 0),
        "limit": limit,
        "rows": rows.to_dict("records"),
    }


def _querying(output: str, config: Mapping[str, Any], rows: int) -> str:
    """The page's query example; the heat map only where the run stored maps and
    has `rows` to draw them of."""
    target = ', "target_name"' if shows_targets(config) else ""
    output = output.rstrip("/") or output  # 'gs://b/out//results' names other objects
    # As Python string literals: a backslash or a quote in the path is escaped.
    folder, results_folder = (
        json.dumps(p, ensure_ascii=False) for p in (output, f"{output}/results")
    )
    query = (
        "import pandas as pd\n"
        f'meta = pd.read_parquet({results_folder}, columns=["file_name", "label_name", '
        f'"predicted_name"{target}, "relative_delta", "attribution_error"])'
    )
    if config.get("attributions") == "none":
        return query + "\n\n# --attributions none: the run stored no maps to draw."
    if not rows:
        return query + "\n\n# The run has no result rows: no heat map to draw."
    return (
        f"{query}\n\nfrom transforms.plots import audit_figure\n"
        f'audit_figure({folder}, "<file name or image_id>").savefig("heat_map.png")'
    )


def _sections(
    output: str,
    manifest: Mapping[str, Any],
    chosen: _Selection,
    pictures: _Pictures,
    examples: int,
    classes: int,
    state: str,
) -> dict[str, Any]:
    """Each section's data by anchor; None for a section the page leaves out."""
    errors = results.read_errors(output)
    config = manifest.get("config", {})
    return {
        "summary": _summary(manifest, state, "attribution_error" in chosen.frame),
        "misclassified": _misclassified(
            chosen, pictures, examples, len(errors), state, config.get("target", "predicted")
        ),
        "completeness": _completeness(chosen, config),
        "accuracy": _accuracy(chosen, pictures, config),
        "worst-completeness": _worst_completeness(chosen, pictures),
        "faithfulness": {
            "deleted_to": _deleted_to(config),
            "mode": config.get("faithfulness"),  # --faithfulness; None before it was recorded
            "padding_ranked": faithfulness_pixels(config) == "all",
            "ties_row_major": faithfulness_ties(config) == "row_major",
        }
        | _faithfulness(chosen, pictures, examples),
        "sanity": read_sanity(output),
        "per-class": _per_class(chosen, classes),
        "gallery": _gallery(chosen, pictures),
        "errors": _errors(errors, 50, state),
        "querying": _querying(output, config, len(chosen.frame)),
    }


def _result_columns(output: str) -> tuple[str, ...]:
    """The columns of the run's result files, checked to be a run's: every column
    the page needs for all rows (a foreign Parquet file can lead the listing)."""
    try:
        available = results.result_columns(output)
    except pa.ArrowException as e:
        raise UnreadableResults.damaged(e) from e
    missing = [c for c in (*_COLUMNS, "top_k_probs") if c not in available]
    if missing:
        raise UnreadableResults(
            f"results/ holds a Parquet file without the columns {', '.join(missing)} "
            f"(it has: {', '.join(available)}): a file this job did not write"
        )
    return available


def build_report(
    output: str,
    *,
    examples: int = REPORT_EXAMPLES,
    gallery: int = REPORT_GALLERY,
    classes: int = REPORT_CLASSES,
    image_root: str | None = None,
) -> str:
    """The HTML page of a run.

    Args:
      output: the run's `--output` folder.
      examples: cards per section (misclassifications, worst rows, no better than chance,
        not measurable).
      gallery: images in the gallery (0: none), at most `plots.GRID_MAX_ROWS`.
      classes: classes listed in the per-class table (worst first).
      image_root: where the run's image folder is now, if it moved.

    Raises:
      ValueError: `gallery` above `plots.GRID_MAX_ROWS`, before anything is read.
    """
    if gallery > plots.GRID_MAX_ROWS:
        raise ValueError(_gallery_limit(gallery))
    manifest = results.read_manifest(output)
    available = _result_columns(output)
    config = manifest.get("config", {})
    frame, repeated = _counted_once(_metadata(output, available))
    chosen = _Selection.of(frame, config, examples, gallery, has_one_output(manifest))
    pictures = _Pictures(output, manifest, image_root, available)
    pictures.load(chosen.shown_keys(examples))
    images = chosen.frame["image_id"].nunique()
    state = run_state(manifest, len(chosen.frame), images)
    sections = _sections(output, manifest, chosen, pictures, examples, classes, state)
    return _page(output, manifest, chosen, pictures, sections, state, repeated)


def _page(
    output: str,
    manifest: Mapping[str, Any],
    chosen: _Selection,
    pictures: _Pictures,
    sections: Mapping[str, Any],
    state: str,
    repeated: int,
) -> str:
    """The HTML of the page: `build_report`'s parts of the run rendered in its template."""
    images = chosen.frame["image_id"].nunique()
    template = awaited_template(output, manifest)  # --resume refused: no checkpoint counts
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=_page_title(manifest),
            output=output,
            tiles=_tiles(manifest, chosen, state),
            state=state,
            repeated=repeated,
            status=manifest.get("status"),
            ended=how_it_ended(manifest),  # failed or stopped; None: killed or running
            template=template,
            lock=files.join(output, LOCK_FILE),
            rows=len(chosen.frame),
            resumed=_resumed(manifest),
            images={"held": images, "expected": _images_with_rows(manifest)},
            checkpointed=(
                _checkpointed(output, set(chosen.frame["image_id"]), manifest.get("run_id"))
                if state == "unfinished" and template is None
                else 0
            ),
            photo_notes=list(pictures.notes)[:3],
            nav=[(a, t) for a, t in _SECTIONS if sections[a] is not None],
            s=sections,
            generated=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        )
    )


def _page_title(manifest: Mapping[str, Any]) -> str:
    model = manifest.get("model", {}).get("reference", "?")
    return f"IG audit: {manifest.get('dataset')} with {model}"


def _gallery_limit(gallery: int) -> str:
    """Why a gallery of `gallery` images is refused: its grid would take minutes."""
    return f"gallery must be at most {plots.GRID_MAX_ROWS} (one panel per image), got {gallery}."


def write_report(output: str, path: str, **kwargs: Any) -> str:
    """Builds the page of the run in `output` and writes it to `path` (local or gs://)."""
    _write(build_report(output, **kwargs), path)
    return path


def _write(page: str, path: str) -> None:
    files.write_whole(path, page.encode(_PAGE_ENCODING), mime_type="text/html")


def _flag_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the flags as given, before the page is built; None: nothing."""
    for flag in ("examples", "gallery", "classes"):
        if getattr(args, flag) < 0:
            return f"--{flag} must be >= 0, got {getattr(args, flag)}."
    if args.gallery > plots.GRID_MAX_ROWS:
        return f"--{_gallery_limit(args.gallery)}"
    root = args.image_root
    if root is not None and not files.is_remote(root) and not os.path.isdir(root):
        # Else every picture of the page was a note that its image was not found.
        return (
            f"--image_root {root!r} is not a folder; pass the folder the run's "
            "images are in now (or leave it out to use the run's --dataset)."
        )
    if args.output is None:
        return _default_output_problem(args.input)
    return _output_problem(args.output)


def _default_output_problem(input_folder: str) -> str | None:
    """A local --input whose report.html, where the page goes without --output, is a
    folder: its write failed once the page was built, naming an --output not given
    and a hidden '.partial' file."""
    page = files.join(input_folder, REPORT_FILE)
    if files.links_into_no_folder(page):
        return (
            f"--input {input_folder!r} holds a symbolic link named {REPORT_FILE} to "
            f"{os.readlink(page)!r}, whose folder does not exist, where the page is written "
            "without --output; create that folder, or pass --output with another file (e.g. "
            f"--output {shell_word(files.join(input_folder, 'audit.html'))})."
        )
    if files.is_remote(page) or not os.path.isdir(page):
        return None
    return (
        f"--input {input_folder!r} holds a folder named {REPORT_FILE}, where the page is "
        f"written without --output; move that folder, or pass --output with another file "
        f"(e.g. --output {shell_word(files.join(input_folder, 'audit.html'))})."
    )


def _output_problem(output: str | None) -> str | None:
    """An --output that names a folder, not the page's file: one ending in '/' was
    written as a file of the folder's name, and an existing folder (or '', the
    current one) failed once the page was built, naming a hidden temporary file."""
    if output == "":
        return (
            "--output is empty; pass the HTML file to write, or leave --output out to "
            "write report.html in the --input folder."
        )
    if output is None:
        return None
    if output.endswith("/"):
        why = "ends in '/', a folder's name"
    elif not files.is_remote(output) and os.path.isdir(output):
        why = "is a folder"
    else:
        return _page_link(output) or _through_a_dangling_link(output) or _under_a_file(output)
    example = files.join(output.rstrip("/") or "/", REPORT_FILE)
    return f"--output {output!r} {why}; pass the HTML file to write, e.g. --output {shell_word(example)}."


def _page_link(output: str) -> str | None:
    """An --output that is a link into no folder (`transforms.files.links_into_no_folder`):
    the page's write made that folder. Refused before the page is built."""
    if not files.links_into_no_folder(output):
        return None
    return (
        f"--output {output!r} is a symbolic link to {os.readlink(output)!r}, whose folder "
        "does not exist; create that folder or pass another --output."
    )


def _through_a_dangling_link(output: str) -> str | None:
    """A local --output whose folders pass through a symbolic link that leads nowhere
    (its target gone: an unmounted disk, a moved folder; a loop): the page's folder
    cannot be made there, or was made at the link's target, found only once the page
    was built. Refused as the job refuses such an --output."""
    if files.is_remote(output):
        return None
    above = files.dangling_link_on(os.path.dirname(os.path.abspath(output)))
    if above is None:
        return None
    shown = above if os.path.isabs(output) else os.path.relpath(above)
    return (
        f"--output {output!r} lies under {shown!r}, a symbolic link to "
        f"{os.readlink(above)!r}, which does not exist; create it or pass another "
        "--output."
    )


def _under_a_file(output: str) -> str | None:
    """A local --output whose nearest existing folder on its path is a file: the
    folders to make there cannot be (it failed once the page was built)."""
    if files.is_remote(output):
        return None
    above = os.path.dirname(os.path.abspath(output))
    while not os.path.exists(above) and os.path.dirname(above) != above:
        above = os.path.dirname(above)
    if os.path.isdir(above):
        return None
    shown = above if os.path.isabs(output) else os.path.relpath(above)
    return (
        f"--output {output!r} lies under {shown!r}, a file, not a folder; pass the HTML "
        "file to write in a folder."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code (2 for a bad --input or an --output
    that cannot be written, 1 for a gs:// --input whose storage cannot be reached)."""
    args = report_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    problem = _flag_problem(args)
    if problem is not None:
        error_line(problem)
        return 2
    if args.output is None:
        args.output = files.join(args.input, REPORT_FILE)
    try:
        page = build_report(
            args.input,
            examples=args.examples,
            gallery=args.gallery,
            classes=args.classes,
            image_root=args.image_root,
        )
    except Exception as e:
        failure = run_read_failure("--input", args.input, e)
        if failure is None:
            raise
        error_line(failure[1])
        return failure[0]
    try:
        _write(page, args.output)
    except OSError as e:  # a folder, a read-only place, a parent that is a file
        reason = f"{type(e).__name__}: {error_reason(e)}"
        error_line(f"cannot write the report to --output {args.output!r} ({reason}).")
        return 2
    to_stdout(
        lambda: print(f"Report of {printable(args.input)} written to {printable(args.output)}")
    )
    return 0
