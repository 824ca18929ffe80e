"""Reading an audit's output back: result rows, attribution arrays, filters, input images.

Everything here works on a finished run's output folder (local or gs://); none of it
imports Apache Beam for a local folder (`transforms.files`), so a notebook starts fast:

    from transforms import results
    meta = results.read_results("output/sample")              # metadata, no arrays
    row = results.read_row("output/sample", "chelsea.png")    # one row, with arrays
    heat = results.attributions_of(row)                       # float32 [224, 224, 3]

Metadata reads are projections: they never touch the `attributions` column,
so they stay fast however many and however large the attribution arrays are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import numbers
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from transforms import baselines as baselines_lib
from transforms import datasource, files, images, wording
from transforms.manifest import (
    ERRORS_DIR,
    LOCK_FILE,
    MANIFEST_FILE,
    RESULTS_DIR,
    awaited_template,
    enclosing_run,
    how_it_ended,
    image_shape,
    read_manifest,
    unfinished_status,
)
from transforms.schema import ERROR_SCHEMA, METADATA_COLUMNS, results_schema
from transforms.sign_test import binomial_tail, median_interval

__all__ = [
    "UnreadableResults",
    "is_missing",
    "ARRAY_COLUMNS",
    "AUC_RESOLUTION",
    "SIGNIFICANCE",
    "ChanceTest",
    "METADATA_COLUMNS",
    "Filters",
    "ImageNotFound",
    "ImageUnavailable",
    "MixedRunsWarning",
    "UnfinishedRunWarning",
    "above_tolerance",
    "attributions_of",
    "cell",
    "baseline_image",
    "baseline_images",
    "chance_losses",
    "chance_test",
    "confusions",
    "error_causes",
    "for_class",
    "input_images",
    "judged",
    "leads",
    "load_input_image",
    "measured_nothing",
    "misclassified",
    "no_better_than_chance",
    "not_measurable",
    "one_row_per_image",
    "path_of",
    "per_class_accuracy",
    "read_errors",
    "read_manifest",
    "read_results",
    "read_row",
    "read_table",
    "result_columns",
]

_LOG = logging.getLogger(__name__)

# A row's faithfulness AUCs: the map's and its random control's, deletion and insertion.
_AUCS = ("deletion_auc", "deletion_auc_random", "insertion_auc", "insertion_auc_random")

# The two faithfulness checks.
_CHECKS = ("deletion", "insertion")

#: How far below 1 an AUC may lie and still measure nothing (`measured_nothing`): four
#: relative steps of a float32 probability (2 ** -23 each, 1.2e-7; 4.8e-7 in all). A
#: curve is the model's probability over p(x); a float32 softmax rounds it by about a
#: step (exp, sum, division) and the stored curves are float32. An AUC's shortfall from
#: 1 is its curve's mean shortfall, so two AUCs both within this of 1 differ by less:
#: rounding, not their rankings, orders them (a model at p(x) = 1 - 1e-6 moved its
#: curves by 0 to 3 steps); curves that move by about 1e-3 (p(x) = 0.99) left AUCs
#: 4e-5 or more below 1, judged (tests/test_faithfulness_pipeline.py measures both).
AUC_RESOLUTION: float = 4 * float(np.finfo(np.float32).eps)

#: The level below which `chance_test`'s p-value calls a run's maps better than chance
#: on a check (`ChanceTest.better_than_chance`): the convention, one-sided.
SIGNIFICANCE: float = 0.05

#: The one large column; everything else is metadata (`METADATA_COLUMNS`).
ARRAY_COLUMNS: tuple[str, ...] = ("attributions",)

#: Row filters: a pyarrow expression (`pc.field("label") == 281`) or pandas-style
#: tuples (or lists) in disjunctive normal form (`[("relative_delta", ">", 0.01)]`),
#: or one such term alone.
Filters = (
    pc.Expression
    | tuple[str, str, Any]
    | Sequence[tuple[str, str, Any]]
    | Sequence[Sequence[tuple[str, str, Any]]]
)


class ImageUnavailable(LookupError):
    """The input image of a row cannot be re-loaded; the message says why, and `short`
    in a few words (a figure's panel)."""

    short = "image not available"


class ImageNotFound(ImageUnavailable):
    """The input image of a row is not where the run read it (deleted, or its folder
    moved or renamed since)."""

    short = "image not found where the run read it"


class UnfinishedRunWarning(UserWarning):
    """A read of a run that has not finished: results/ holds none of its rows yet."""


class MixedRunsWarning(UserWarning):
    """A read of a results/ folder holding a row more than once (the same image and
    target): a results file copied or restored after the run, another run's too."""


def _parquet_files(folder: str) -> list[str]:
    """The `*.parquet` files directly in `folder` (local or gs://), sorted; [] if none."""
    try:
        return files.list_folder(folder, ".parquet")
    except (files.RemoteUnreachable, PermissionError):
        raise  # no network, or no access: not a folder of another run
    except Exception as e:  # OSError; remote, Beam's BeamIOError with per-pattern causes.
        raise FileNotFoundError(
            f"Cannot list {folder!r}: {e}. Pass the --output folder of a finished run."
        ) from e


def _not_a_run(output: str, folder: str) -> str:
    """The error of a folder that holds no run, naming the run a path inside one is in
    (`<run>/results`, one of its files: the pandas one-liner's path)."""
    message = f"{output!r} holds no {folder}/*.parquet and no {MANIFEST_FILE}"
    parent = enclosing_run(output)
    if parent is not None:
        return f"{message}; it is inside the run {parent!r}: pass that folder."
    return f"{message}; pass the --output folder of a finished run."


def _dataset(output: str) -> ds.Dataset:
    """The Parquet files of `<output>/results` as one dataset (an empty one if none)."""
    parquet = _parquet_files(files.join(output, RESULTS_DIR))
    if not parquet:
        if not files.exists(files.join(output, MANIFEST_FILE)):
            raise FileNotFoundError(_not_a_run(output, RESULTS_DIR))
        dtype = read_manifest(output).get("config", {}).get("attribution_dtype", "float32")
        return ds.dataset([], schema=results_schema(dtype))
    return _parquet_dataset(parquet)


def _parquet_dataset(paths: Sequence[str]) -> ds.Dataset:
    """Parquet files, local or remote (gs://: pyarrow takes a file system plus bare paths).

    Raises:
      PermissionError: a remote file the credentials may not read, as `files.open_read`
        says it (Arrow's own, its `__cause__`, is Google's whole status and names none).
    """
    if not files.is_remote(paths[0]):
        return ds.dataset(list(paths), format="parquet")
    filesystem, _ = pafs.FileSystem.from_uri(paths[0])
    bare = [pafs.FileSystem.from_uri(p)[1] for p in paths]
    with _refusal_named(paths):
        return ds.dataset(bare, format="parquet", filesystem=filesystem)


@contextlib.contextmanager
def _refusal_named(paths: Sequence[str] | ds.Dataset) -> Iterator[None]:
    """Arrow's PermissionError reading remote `paths` (a dataset's files) in the block,
    Google's whole status and no file named, as `files.open_read` raises it for the
    first of them it may not open (`_first_refused`), Arrow's its `__cause__`; Arrow's
    as it is when it opens them all."""
    try:
        yield
    except PermissionError as e:
        if isinstance(paths, ds.Dataset):
            remote = isinstance(getattr(paths, "filesystem", None), pafs.GcsFileSystem)
            paths = [f"gs://{f}" for f in getattr(paths, "files", ())] if remote else []
        if e.filename is not None or not paths or not files.is_remote(paths[0]):
            raise
        refused = _first_refused(paths)
        if refused is not None:
            raise refused from e
        raise


#: Remote files `_first_refused` opens at a time.
_OPENS_AT_ONCE = 16


def _first_refused(paths: Sequence[str]) -> PermissionError | None:
    """The PermissionError of the first of remote `paths` `files.open_read` may not
    open; None when it opens them all. Opened on a failure only, _OPENS_AT_ONCE at a
    time, none after the first refused: one request each (a refusal is mostly of the
    bucket, the first file's), so the worst case, a refusal Beam's client is not given
    (Arrow's credentials differ) or of the last file, is len(paths) requests: 20 s for
    1000 files against tests/gcs_stub (43 s one at a time), mostly Beam's set-up of
    each open (its PipelineOptions, CPU that threads share), on a read that failed."""

    def refusal(path: str) -> PermissionError | None:
        try:
            files.open_read(path).close()
        except PermissionError as refused:
            return refused
        return None

    with futures.ThreadPoolExecutor(_OPENS_AT_ONCE, "open-results") as pool:
        for refused in pool.map(refusal, paths):
            if refused is not None:
                pool.shutdown(wait=False, cancel_futures=True)
                return refused
    return None


#: The operators of pandas-style filter terms (as `pq.filters_to_expression`).
_OPERATORS = ("==", "=", "!=", "<", ">", "<=", ">=", "in", "not in")


def _predicate(term: tuple[str, str, Any], schema: pa.Schema) -> pc.Expression:
    """One (column, op, value) term; `in` lists are typed by the column, so `[]` works."""
    if len(term) != 3:
        raise ValueError(f"filters: {term!r} is not a (column, operator, value) term.")
    column, op, value = term
    if column not in schema.names and column in results_schema().names:
        _check_held([column], schema.names)  # a run of a version before the column
    if column not in schema.names:
        raise ValueError(
            f"filters: unknown column {column!r}; the columns are: {', '.join(schema.names)}."
        )
    if op not in _OPERATORS:
        raise ValueError(f"filters: operator {op!r} is not one of: {', '.join(_OPERATORS)}.")
    if op in ("in", "not in"):
        found = pc.field(column).isin(_values(column, op, value, schema.field(column).type))
        return ~found if op == "not in" else found
    _comparable(column, op, value, schema.field(column).type)
    return pq.filters_to_expression([term])


def _comparable(column: str, op: str, value: Any, kind: pa.DataType) -> None:
    """Refuses a value the column cannot be compared with (`("label", "==", "281")`):
    Arrow would only when reading, with no kernel for (int64, string)."""
    try:
        pc.equal(pa.array([], type=kind), value)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ValueError(
            f"filters: ({column!r}, {op!r}, {value!r}) compares the {kind} column with "
            f"{type(value).__name__} {value!r}; pass a value of the column's type ({err})."
        ) from None


def _values(column: str, op: str, value: Any, kind: pa.DataType) -> pa.Array:
    """The list of an `in` / `not in` term as an array of the column's type."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(
            f"filters: {op!r} takes a list of values, e.g. ({column!r}, {op!r}, [...]); "
            f"got {value!r}."
        )
    try:
        return pa.array(list(value), type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as err:
        raise ValueError(
            f"filters: the values of ({column!r}, {op!r}, ...) are not all {kind}: {err}"
        ) from None


def _expression(filters: Filters | None, schema: pa.Schema) -> pc.Expression | None:
    """A pyarrow expression from pandas-style filters (DNF), as `pq.filters_to_expression`
    but with typed `in` lists (an empty list gives no rows instead of an ArrowTypeError)."""
    if filters is None or isinstance(filters, pc.Expression):
        return filters
    if isinstance(filters, str):  # not its letters as a term
        raise ValueError(
            f"filters: {filters!r} is a string; pass (column, operator, value) terms, "
            'e.g. [("label", "==", 281)], or a pyarrow expression (pc.field("label") == 281).'
        )
    filters = list(filters)
    if not filters:
        return None
    if isinstance(filters[0], str):  # one term, not in a list: ("label", "==", 281)
        filters = [filters]
    # As pyarrow tells them apart: terms (tuples or lists) start with a column name.
    first = filters[0]
    flat = isinstance(first, Sequence) and len(first) > 0 and isinstance(first[0], str)
    groups = [filters] if flat else [list(g) for g in filters]
    expression = None
    for group in groups:
        conjunction = None
        for term in group:
            predicate = _predicate(tuple(term), schema)
            conjunction = predicate if conjunction is None else conjunction & predicate
        if conjunction is None:
            raise ValueError("filters: an empty group of conditions.")
        expression = conjunction if expression is None else expression | conjunction
    return expression


class UnreadableResults(ValueError):
    """`<output>/results/` (or `errors/`: `folder`) holds a file that is not this job's
    Parquet (damaged or foreign)."""

    def __init__(self, message: str, folder: str = RESULTS_DIR) -> None:
        super().__init__(message)
        self.folder = folder

    @classmethod
    def damaged(cls, error: pa.ArrowException, folder: str = RESULTS_DIR) -> UnreadableResults:
        """Of a file in `folder` pyarrow cannot read (`error` names it)."""
        reason = str(error).rstrip(".")  # the sentence the caller's text ends
        return cls(f"a file in {folder}/ is not readable Parquet: {reason}", folder)


def result_columns(output: str) -> tuple[str, ...]:
    """The columns a run's result files hold, in schema order.

    Runs written by other versions of the job may hold more or fewer columns than
    `METADATA_COLUMNS` (e.g. no `attribution_error` before it was added); readers
    that show optional columns ask here first instead of failing on a missing one.
    """
    return tuple(_dataset(output).schema.names)


def _column_names(columns: str | Iterable[str]) -> list[str]:
    """`columns` as a list: one name (not its characters), or any iterable of names (a
    generator too) with each name once, in its first place."""
    if isinstance(columns, str):
        return [columns]
    names: list[str] = []
    for name in columns:  # not dict.fromkeys: an unhashable name is an unknown column
        if name not in names:
            names.append(name)
    return names


def read_table(
    output: str,
    columns: Iterable[str] | None = None,
    *,
    with_arrays: bool = False,
    filters: Filters | None = None,
) -> pa.Table:
    """Result rows as a pyarrow Table, in file order; arguments, errors and warning as
    for `read_results`.

    For large runs: compute in Arrow (`pyarrow.compute`) before converting to pandas.
    """
    _warn_if_unfinished(output)
    return _table(output, columns, with_arrays, filters)


def _table(
    output: str, columns: Iterable[str] | None, with_arrays: bool, filters: Filters | None
) -> pa.Table:
    """`read_table` without its warning."""
    dataset = _dataset(output)
    with _refusal_named(dataset):
        return _table_of(output, dataset, columns, with_arrays, filters)


def _table_of(
    output: str,
    dataset: ds.Dataset,
    columns: Iterable[str] | None,
    with_arrays: bool,
    filters: Filters | None,
) -> pa.Table:
    """`_table` of the run's `dataset`."""
    held = dataset.schema.names
    # By default the metadata columns the run holds: a version of the job before a
    # column (attribution_error, the faithfulness AUCs) wrote none of it.
    columns = (
        [c for c in METADATA_COLUMNS if c in held] if columns is None else _column_names(columns)
    )
    if with_arrays:  # the arrays and the shape `attributions_of` gives them
        columns = list(dict.fromkeys([*columns, "attribution_shape", *ARRAY_COLUMNS]))
    _check_held(columns, held)
    expression = _expression(filters, dataset.schema)
    if expression is not None and any(c in ARRAY_COLUMNS for c in columns):
        dataset = _groups_keeping(dataset, expression)
    table = dataset.to_table(columns=list(columns), filter=expression)
    _warn_if_mixed(output, table)
    return table


def _warn_if_mixed(output: str, table: pa.Table) -> None:
    """A warning where `table` holds an image and target in more than one row: the job
    writes each once (its sinks finalize atomically, a --resume skips the images done),
    so a results file was copied or restored after the run (the report's banner)."""
    if not {"image_id", "target_class"} <= set(table.column_names):
        return
    if len(pc.unique(table["image_id"])) == table.num_rows:  # an image a row: a third the cost
        return
    keys = table.group_by(["image_id", "target_class"]).aggregate([([], "count_all")])
    repeated = keys.filter(pc.field("count_all") > 1)
    if repeated.num_rows == 0:
        return
    warnings.warn(
        f"{output!r}: results/ holds {wording.count(repeated.num_rows, 'row')} more than once "
        f"(the same image and target, e.g. {repeated['image_id'][0].as_py()!r}): a results "
        "file was copied or restored after the run, and this read holds each copy. Move the "
        "extra file out of results/: each run has its own --output folder.",
        MixedRunsWarning,
        stacklevel=_caller_level(),
    )


def _caller_level() -> int:
    """The `stacklevel` of a warning at the first caller outside this module, whichever
    of its public functions it was called through."""
    frame, level = inspect.currentframe().f_back, 1
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    return level


def _groups_keeping(dataset: ds.Dataset, expression: pc.Expression) -> ds.Dataset:
    """The row groups of `dataset` that hold a row `expression` keeps, in file order.

    pyarrow decodes every column it is asked for in a row group before it filters
    the group's rows, and a group's statistics seldom exclude an image (its rows are
    in the workers' order): a filtered read of the arrays decoded the arrays of
    nearly every row. Finding the groups first reads the filter's columns alone.
    """
    if not isinstance(dataset, ds.FileSystemDataset):
        return dataset
    groups = [g for f in dataset.get_fragments() for g in f.split_by_row_group(expression)]
    grouped = ds.FileSystemDataset(groups, dataset.schema, dataset.format, dataset.filesystem)
    keeping = {
        (tagged.fragment.path, tuple(g.id for g in tagged.fragment.row_groups))
        for tagged in grouped.scanner(columns=[], filter=expression).scan_batches()
        if tagged.record_batch.num_rows
    }
    kept = [g for g in groups if (g.path, tuple(r.id for r in g.row_groups)) in keeping]
    return ds.FileSystemDataset(kept, dataset.schema, dataset.format, dataset.filesystem)


def _check_held(columns: Sequence[str], held: Sequence[str]) -> None:
    """Refuses columns the run's files lack: a column of this version's schema is named
    as one an older version did not write, any other as unknown."""
    absent = [c for c in columns if c not in held]
    if not absent:
        return
    later = [c for c in absent if c in results_schema().names]
    if later:
        raise ValueError(
            f"This run's results have no {', '.join(map(repr, later))}: an older version of "
            f"the job wrote them, before {'that column' if len(later) == 1 else 'those columns'} "
            "existed (result_columns(output) lists the columns they hold); rerun the audit "
            "with this version to have them."
        )
    raise ValueError(f"Unknown result columns {absent}; the columns are: {', '.join(held)}.")


def read_results(
    output: str,
    columns: Iterable[str] | None = None,
    *,
    with_arrays: bool = False,
    filters: Filters | None = None,
) -> pd.DataFrame:
    """Result rows of a run as a DataFrame, sorted by `image_id`.

    Args:
      output: the run's `--output` folder (holding `results/` and `manifest.json`).
      columns: columns to read (a list or any iterable of names, each read once, or
        one name); default the metadata columns (`METADATA_COLUMNS`) the run's files
        hold: an older version of the job wrote no `attribution_error` or faithfulness
        columns.
      with_arrays: also read `attributions` (each a flat float16/float32 ndarray;
        use `attributions_of(row)` for its [H, W, C] or [H, W] shape), and
        `attribution_shape` if `columns` leaves it out.
      filters: rows to keep, pushed down to Parquet (skips row groups by their
        statistics), e.g. `[("predicted_class", "!=", 281)]` or a pyarrow expression.

    Returns:
      One row per image and target. `label` is int64, or float64 with NaN for
      unlabelled images where the rows hold some (as with `pd.read_parquet`); list
      columns hold NumPy arrays.

    Raises:
      FileNotFoundError: `output` holds no run of this job (no manifest.json).
      ValueError: an unknown column name (in `columns` or `filters`) or operator, a
        column the run's files lack (written by an older version of the job), or
        a filter value the column cannot be compared with.
      transforms.files.RemoteUnreachable: (a ConnectionError) a gs:// `output` whose
        storage does not answer (offline), said within seconds.

    Warns:
      UnfinishedRunWarning: (a UserWarning) the run has not finished (killed, still
        running, or a Dataflow template's, waiting for its job): results/ holds none of
        its own rows yet, only those of a run it resumes.
      MixedRunsWarning: (a UserWarning) results/ holds a row more than once (the same
        image_id and target_class, when both are read): a results file copied in.
    """
    _warn_if_unfinished(output)
    return _frame(output, columns, with_arrays, filters)


def _frame(
    output: str, columns: Iterable[str] | None, with_arrays: bool, filters: Filters | None
) -> pd.DataFrame:
    """`read_results` without its warning."""
    named = None if columns is None else _column_names(columns)
    # The sort key is read even where `columns` leaves it out (then dropped): file
    # order depends on how the run's workers sharded the rows.
    key_only = named is not None and "image_id" not in named
    read = [*named, "image_id"] if key_only else named
    frame = _table(output, read, with_arrays, filters).to_pandas()
    frame = frame.sort_values("image_id", kind="stable").reset_index(drop=True)
    return frame.drop(columns="image_id") if key_only else frame


def _warn_if_unfinished(output: str) -> None:
    """A warning when `output`'s manifest says its run has not finished: its rows are
    checkpointed in .tmp until it ends, so results/ reads as an empty or partial run."""
    try:
        manifest = read_manifest(output)
        status = unfinished_status(manifest)
    except files.RemoteUnreachable:
        raise  # said once, here, rather than again by the read it warns of
    except (OSError, ValueError, AttributeError):
        return  # no manifest, or not one of this job: `_dataset` decides
    if status is None:
        return
    warnings.warn(
        f"The run in {output!r} has not finished (its manifest says {status!r}: "
        f"{_unfinished_state(output, manifest, status)}",
        UnfinishedRunWarning,
        stacklevel=3,
    )


def _unfinished_state(output: str, manifest: dict[str, Any], status: str) -> str:
    """What `_warn_if_unfinished` says of a run in `output` that has not finished."""
    if status == "replacing":  # an --overwrite deleting the run it replaces
        return (
            "an --overwrite is deleting its files): results/ holds what is left of them. Read "
            "it when the new run has ended; a killed one ends with the same command again."
        )
    ended = how_it_ended(manifest)
    if ended is not None:  # failed or stopped: a --resume continues it, as a killed one
        return (
            f"{ended}): results/ holds none of its rows, only those of a run it resumes, if "
            "any. --resume finishes it, keeping the rows of every batch it finished."
        )
    template = awaited_template(output, manifest)
    if template is not None:  # built, its job not run or not ended: --resume is refused
        lock = files.join(output, LOCK_FILE)
        return (
            f"the folder waits for the job of the Dataflow template {template}): results/ "
            "holds none of its rows yet. Read it when that job has ended (if the template "
            f"will not run, or its job failed or was cancelled, delete {lock})."
        )
    return (
        "still running, or killed): results/ holds none of its rows yet, only those of a "
        "run it resumes, if any. Read it when the run has ended; a killed run ends with "
        "--resume."
    )


def _one_row(row: Any, function: str) -> Any:
    """A one-row DataFrame (`df[df.file_name == "x.png"]`) as its row; other values as
    they are. A DataFrame of several rows (or none) is refused, naming `function`."""
    if not isinstance(row, pd.DataFrame):
        return row
    if len(row) != 1:
        raise ValueError(
            f"{function} takes one row, got a DataFrame of {len(row)} rows; "
            "pass df.iloc[i] (or iterate: for _, row in df.iterrows())."
        )
    return row.iloc[0]


def _image_and_target(image: Any, target_class: int | None) -> tuple[str, int | None, bool]:
    """`read_row`'s `image` as an image_id or file name, the target it implies (a
    metadata row, `meta.iloc[i]`, a one-row frame, `itertuples()`, a dict, names its
    own target), and whether it is only a row's file name (a row without image_id)."""
    if isinstance(image, str):
        return image, target_class, False
    image = _one_row(image, "read_row")
    # A row read without its image_id (`columns=["file_name", ...]`) names its file.
    image_id = cell(image, "image_id", None)
    file_only = image_id is None
    image_id = cell(image, "file_name", None) if file_only else image_id
    if image_id is None:
        raise TypeError(
            f"read_row takes an image_id, a file name or a result row (meta.iloc[i], with "
            f"its image_id or file_name), not {type(image).__name__} {image!r:.60}; for "
            "the i-th row of a frame pass frame.iloc[i]."
        )
    if target_class is None:
        try:
            target_class = int(cell(image, "target_class"))
        except (KeyError, AttributeError, TypeError):
            pass
    return str(image_id), target_class, file_only


def _class_index(target_class: Any) -> int | None:
    """`read_row`'s `target_class` as an int (NumPy's, or a float such as a label read
    as float64, too); a value that is no class index is refused, naming it."""
    if target_class is None:
        return None
    whole = isinstance(target_class, numbers.Real) and float(target_class).is_integer()
    if isinstance(target_class, bool) or not whole:
        raise TypeError(
            f"target_class must be a class index (an integer, e.g. 281), got "
            f"{type(target_class).__name__} {target_class!r}."
        )
    return int(target_class)


def _no_row_message(output: str, image: str) -> str:
    """Why `image` has no result row: the run's error record of it, where it has one."""
    message = f"No result row for {image!r} in {output!r} (matched by image_id or file_name)"
    try:
        errors = read_errors(output)
    except FileNotFoundError:
        return message + "."
    failed = errors[(errors.image_id == image) | (errors.file_name == image)]
    if failed.empty:
        return message + "."
    record = failed.iloc[0]
    return (
        f"{message}: {record.image_id!r} failed at stage {record.stage!r}: {record.error} "
        "(read_errors lists every failed input)."
    )


def read_row(output: str, image: Any, target_class: int | None = None) -> pd.Series:
    """One result row with its arrays, found by `image_id` or `file_name`.

    Only the row group holding the chosen row has its attributions read: a file name
    that names several images, or a target the image lacks, is refused before any.

    Args:
      output: the run's `--output` folder.
      image: an `image_id` (e.g. `sample/n02123045/chelsea.png`), a file name
        (`chelsea.png`) that names a single image, or a metadata row of
        `read_results` (`meta.iloc[i]`, a one-row frame, a named tuple, a dict):
        that row, with its arrays (its image_id, or its file_name in a frame read
        without image_id, which must then name a single image, and its target_class).
      target_class: with several rows per image (`--target top_k`), the target to
        pick; default the row's own for a row, else the row attributing the
        predicted class, else the first.

    Raises:
      KeyError: no such image (or target: the message lists the image's targets);
        for an input the run could not process, the message gives its error record.
      ValueError: the file name matches several images (use the `image_id`), or
        `image` is a DataFrame of several rows.
      TypeError: `image` is neither a string nor a row (e.g. a row number), or
        `target_class` is not a class index (`"281"`).
    """
    image, target_class, file_only = _image_and_target(image, _class_index(target_class))
    image_filter = pc.field("file_name") == image
    if not file_only:  # a row's file name alone is not the image_id of another image
        image_filter |= pc.field("image_id") == image
    _warn_if_unfinished(output)  # at the caller's line, not this one
    # Which row, from the metadata alone: its arrays are then read, and only its.
    keys = _frame(output, ["image_id", "target_class", "predicted_class"], False, image_filter)
    image_id, target = _chosen_row(output, keys, image, file_only, target_class)
    row_filter = (pc.field("image_id") == image_id) & (pc.field("target_class") == target)
    with warnings.catch_warnings():  # said by the read of the keys: once
        warnings.simplefilter("ignore", MixedRunsWarning)
        return _frame(output, None, True, row_filter).iloc[0]


def _chosen_row(
    output: str, rows: pd.DataFrame, image: str, file_only: bool, target_class: int | None
) -> tuple[str, int]:
    """`read_row`'s (image_id, target_class) among the `rows` its `image` matches."""
    if rows.empty:
        raise KeyError(_no_row_message(output, image))
    if not file_only and (rows.image_id == image).any():
        rows = rows[rows.image_id == image]
    ids = rows.image_id.unique()
    if len(ids) > 1:
        raise ValueError(
            f"{image!r} names {len(ids)} images: {', '.join(ids[:10])}. Pass the image_id."
        )
    if target_class is not None:
        targets = ", ".join(map(str, sorted(rows.target_class)))
        rows = rows[rows.target_class == target_class]
        if rows.empty:
            raise KeyError(
                f"{image!r} has no row with target_class {target_class}; its rows' "
                f"targets: {targets}."
            )
    predicted = rows[rows.target_class == rows.predicted_class]
    row = (predicted if len(predicted) else rows).iloc[0]
    return str(row.image_id), int(row.target_class)


def read_errors(output: str) -> pd.DataFrame:
    """The run's error records: image_id, file_name, stage, error (an empty frame if none).

    Raises:
      FileNotFoundError: `output` holds neither error files nor a manifest: not a run.
      UnreadableResults: a file in errors/ is not readable Parquet.
    """
    parquet = _parquet_files(files.join(output, ERRORS_DIR))
    if not parquet:
        if not files.exists(files.join(output, MANIFEST_FILE)):
            raise FileNotFoundError(_not_a_run(output, ERRORS_DIR))
        return ERROR_SCHEMA.empty_table().to_pandas()
    try:
        dataset = _parquet_dataset(parquet)
        with _refusal_named(dataset):
            return dataset.to_table().to_pandas()
    except pa.ArrowInvalid as e:
        raise UnreadableResults.damaged(e, ERRORS_DIR) from e


_REQUIRED = object()


def cell(row: Any, name: str, default: Any = _REQUIRED) -> Any:
    """A row's cell: of a `pd.Series` (`df.iloc[i]`), a dict or a named tuple
    (`df.itertuples()`). Without such a column, `default` if given, else KeyError
    (Series, dict) or AttributeError (named tuple)."""
    if isinstance(row, Mapping | pd.Series):
        if name in row:
            return row[name]
        if default is _REQUIRED:
            raise KeyError(name)
        return default
    if default is _REQUIRED:
        return getattr(row, name)
    return getattr(row, name, default)


def is_missing(value: Any) -> bool:
    """Whether a cell is empty: None (a null list or string) or a NaN scalar."""
    return value is None or (np.isscalar(value) and bool(pd.isna(value)))


def attributions_of(row: Any) -> np.ndarray:
    """A row's attributions in their stored shape.

    Args:
      row: a result row read with arrays: a `pd.Series` (`df.iloc[i]`,
        `read_row`), a named tuple (`df.itertuples()`), a dict, or a DataFrame
        holding exactly one row.

    Returns:
      float16 or float32 (as stored, `--attribution_dtype`), shape
      `attribution_shape`: [H, W, C] for `--attributions full`, [H, W] for
      `pixel` (the channel sum). Values are in units of the score (`score`
      column): they sum to about `target_score - baseline_score`.

    Raises:
      ValueError: the row was read without arrays, or the run stored none; a
        DataFrame of several rows (pass one: `df.iloc[i]`).
    """
    row = _one_row(row, "attributions_of")
    absent = object()
    values, shape = (cell(row, c, absent) for c in ("attributions", "attribution_shape"))
    if values is absent or shape is absent:
        column = "attributions" if values is absent else "attribution_shape"
        raise ValueError(
            f"This row has no {column!r} column; read it with read_results(..., "
            "with_arrays=True) or read_row(...)."
        )
    if is_missing(values) or is_missing(shape):
        raise ValueError(
            f"Row {cell(row, 'image_id', '?')!r} stores no attributions (the run used "
            "--attributions none)."
        )
    shape = tuple(int(s) for s in shape)
    values = np.asarray(values)
    if values.size != int(np.prod(shape)):
        raise ValueError(f"{values.size} attribution values do not fit shape {list(shape)}.")
    return values.reshape(shape)


def path_of(row: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """The path curve of a row: (alphas, F(alpha)), float32 [P] each, sorted by alpha.

    F is the target's score (`score` column) on the straight path from the
    baseline (alpha 0) to the image (alpha 1); with several baselines, the first
    one's path (`baseline_score` is their mean). None when the run did not store it.
    """
    alphas, scores = cell(row, "path_alphas"), cell(row, "path_scores")
    if is_missing(alphas) or is_missing(scores):
        return None
    alphas = np.asarray(alphas, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    order = np.argsort(alphas, kind="stable")
    return alphas[order], scores[order]


def _require(frame: pd.DataFrame, columns: Sequence[str], function: str) -> None:
    """A clear error for a frame read without columns `function` needs."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{function} needs the columns {', '.join(columns)}; this frame has no "
            f"{', '.join(missing)} (read them: read_results(output) reads every metadata column)."
        )


def one_row_per_image(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per image: the row attributing the predicted class where there is one.

    With `--target top_k` (or `label`) an image has several rows or a row per
    target; per-image statistics (accuracy) must count each image once.
    """
    _require(frame, ("image_id",), "one_row_per_image")
    if frame.empty:
        return frame
    if not {"target_class", "predicted_class"} <= set(frame.columns):  # any row will do
        return frame.drop_duplicates("image_id")
    preferred = (frame["target_class"] != frame["predicted_class"]).astype(int)
    order = frame.assign(_rank=preferred).sort_values(["image_id", "_rank"], kind="stable")
    return order.drop_duplicates("image_id").drop(columns="_rank")


def misclassified(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of labelled images whose top-1 prediction is not the label.

    Every row of such an image: with `--target top_k`, its k rows. To count images,
    take `one_row_per_image` first (or `per_class_accuracy`).
    """
    _require(frame, ("label", "predicted_class"), "misclassified")
    labelled = frame["label"].notna()
    return frame[labelled & (frame["predicted_class"] != frame["label"])]


def above_tolerance(
    frame: pd.DataFrame, tolerance: float, completeness_tolerance: float | None = None
) -> pd.DataFrame:
    """Rows whose map may be off by more than `tolerance` (e.g. 0.01): the estimated
    per-pixel error `attribution_error` exceeds it, or the relative completeness
    delta `relative_delta` exceeds `completeness_tolerance` (None: `tolerance`).
    Completeness alone, a sum, can hide per-pixel errors. With the run's bound on
    `attribution_error` (`transforms.manifest.estimate_bound` of its manifest's
    "config": --tolerance over the estimate's margin, not --tolerance itself) and
    its --completeness_tolerance, these are the rows `within_tolerance` flags
    (those of --tolerance 0 included)."""
    _require(frame, ("relative_delta",), "above_tolerance")
    bound = tolerance if completeness_tolerance is None else completeness_tolerance
    above = frame["relative_delta"] > bound
    if "attribution_error" in frame:
        above |= frame["attribution_error"].astype(float) > tolerance
    return frame[above]


def measured_nothing(frame: pd.DataFrame, check: str) -> pd.Series:
    """Per row, whether its `check` ("deletion" or "insertion") measured nothing: its
    two AUCs both 1 or within `AUC_RESOLUTION` of it, where both curves stay at the
    image's own probability throughout but for float32 rounding (a saturated model
    whose blurred image already scores p(x)): any ranking ties there."""
    floor = 1.0 - AUC_RESOLUTION
    return (frame[f"{check}_auc"] >= floor) & (frame[f"{check}_auc_random"] >= floor)


def _valued(frame: pd.DataFrame, check: str) -> pd.Series:
    """Per row, whether its `check` has both AUCs (not null)."""
    return frame[f"{check}_auc"].notna() & frame[f"{check}_auc_random"].notna()


def judged(frame: pd.DataFrame, check: str) -> pd.Series:
    """Per row, whether its `check` ("deletion" or "insertion") is a trial of that
    check: it has its two AUCs and measured something (not `measured_nothing`). Every
    count of a check is over these rows alone: those where the map beats its control
    (the report's table, its medians and figure) and those where it loses or ties
    (`chance_losses`), so that the two add up to them. A check that measured nothing,
    or with a null AUC (a model's NaN on a curve), is out of that check's counts.

    Returns:
      bool Series, indexed as `frame`.
    """
    _require(frame, (f"{check}_auc", f"{check}_auc_random"), "judged")
    return _valued(frame, check) & ~measured_nothing(frame, check)


def not_measurable(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows whose map the faithfulness checks cannot measure: both checks measured
    nothing (`measured_nothing` for deletion and for insertion), whatever the map.
    Every curve stayed at the image's own probability, so neither check can tell the
    map from its random control: an image equal to its baseline (a black image, the
    black baseline: its map is exactly 0), an image that deletion to the first baseline
    and blurring leave as it is (a black image with the black and white baselines,
    whose map is not 0), or a model its pixels do not move (a saturated one). These
    rows are neither counted against their map (`no_better_than_chance`) nor for it.
    A row with a null check (a model's NaN on a curve) is not one of these.
    """
    _require(frame, _AUCS, "not_measurable")
    blind = measured_nothing(frame, "deletion") & measured_nothing(frame, "insertion")
    return frame[blind]


def leads(frame: pd.DataFrame, check: str) -> pd.Series:
    """Per row, how far its map's `check` ("deletion" or "insertion") AUC is ahead of
    its random control's: control - map for deletion (lower is better), map - control
    for insertion; positive where the map beats its control, 0 where they tie, NaN
    where either AUC is null. Over every row: `judged` says which are trials.

    Returns:
      float Series, indexed as `frame`, in [-1, 1].
    """
    _require(frame, (f"{check}_auc", f"{check}_auc_random"), "leads")
    lead = frame[f"{check}_auc_random"] - frame[f"{check}_auc"]
    return (-lead if check == "insertion" else lead).astype(float)


def chance_losses(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per row, whether its deletion and its insertion check count against its map.

    A check counts where the map's AUC loses to its random control or ties with it
    (deletion AUC >= control, insertion AUC <= control: `leads` <= 0), if it is a
    trial of that check (`judged`). A check that measured nothing
    (`measured_nothing`: any ranking ties there) never counts, whichever way rounding
    put its AUCs: where both did, the row is `not_measurable`. Null AUCs
    (`--faithfulness none`, a model's NaN on a curve) never count.

    Returns:
      bool Series (deletion, insertion), indexed as `frame`.
    """
    _require(frame, _AUCS, "chance_losses")
    deletion, insertion = ((leads(frame, c) <= 0) & judged(frame, c) for c in _CHECKS)
    return deletion, insertion


@dataclasses.dataclass(frozen=True)
class ChanceTest:
    """Whether a run's maps beat their random controls on one check more often than
    chance would (`chance_test`).

    Attributes:
      check: "deletion" or "insertion".
      rows: the rows that are a trial of the check (`judged`).
      images: the images tested: one row each (an image's targets share one control).
      beats: of those, the images whose row beats its control (`leads` > 0).
      p_value: the exact one-sided sign test's, P(X >= beats) for X ~ Binomial(images,
        1/2): the chance that maps no better than a random ranking would do as well.
        1 where no image was tested.
      median_lead: the median of those rows' `leads` (positive: the map ahead); None
        where no image was tested.
      interval: a distribution-free 95 % interval of that median (order statistics,
        `sign_test.median_interval`); None under 6 images.
    """

    check: str
    rows: int
    images: int
    beats: int
    p_value: float
    median_lead: float | None
    interval: tuple[float, float] | None

    @property
    def better_than_chance(self) -> bool:
        """Whether the p-value is below `SIGNIFICANCE`: the maps rank the pixels better
        than random rankings on this check (not that they depend on the model)."""
        return self.images > 0 and self.p_value < SIGNIFICANCE


def chance_test(frame: pd.DataFrame, check: str) -> ChanceTest:
    """An exact one-sided sign test of whether the maps beat their random controls on
    `check` ("deletion" or "insertion") in more rows than chance would.

    Under the null, a map ranks pixels no better than a random ranking: each row is at
    most as likely to beat its control as to lose to it (a map of noise is exactly as
    likely: the two orders are exchangeable). A tie (a map of one value has its
    control's curves) counts as not beating, as in `chance_losses`: that keeps the test
    valid, if conservative, where maps tie. Only the trials of the check count
    (`judged`). The rows must be independent: an image's targets (`--target top_k`)
    share one random control, so each image counts once, by the row
    `one_row_per_image` keeps of its trials (its predicted class's where it has one).
    """
    _require(frame, ("image_id", f"{check}_auc", f"{check}_auc_random"), "chance_test")
    trials = frame[judged(frame, check)]
    tested = leads(one_row_per_image(trials), check)
    beats = int((tested > 0).sum())
    return ChanceTest(
        check=check,
        rows=len(trials),
        images=len(tested),
        beats=beats,
        p_value=binomial_tail(beats, len(tested)),
        median_lead=float(tested.median()) if len(tested) else None,
        interval=median_interval(tested.tolist()),
    )


def no_better_than_chance(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows whose map does no better than its random control (the report's count):
    on deletion or insertion it loses to the control or ties with it, a check whose
    two AUCs are both 1 (it measured nothing, `measured_nothing`) left out
    (`chance_losses`); a row whose two checks are so is `not_measurable`, not one of
    these.
    """
    _require(frame, _AUCS, "no_better_than_chance")
    deletion, insertion = chance_losses(frame)
    return frame[deletion | insertion]


def for_class(frame: pd.DataFrame, label: int | str, column: str = "label") -> pd.DataFrame:
    """Rows of one class, by index (`281`) or name (`"tabby cat"`).

    `column` is `label` (the dataset's label), `predicted` or `target`.
    """
    prefix = {"label": "label", "predicted": "predicted", "target": "target"}.get(column)
    if prefix is None:
        raise ValueError(f"column {column!r} must be one of: label, predicted, target.")
    index_col = "label" if prefix == "label" else f"{prefix}_class"
    if isinstance(label, str):
        return frame[frame[f"{prefix}_name"] == label]
    return frame[frame[index_col] == label]


def per_class_accuracy(frame: pd.DataFrame) -> pd.DataFrame:
    """Top-1 accuracy per labelled class, counting each image once.

    Returns:
      Indexed by `label` (int), sorted by accuracy then class: `label_name`,
      `images`, `correct`, `accuracy` (0-1), `top_confusion` (the most frequent
      wrong prediction's name, or None) and `top_confusion_count`.
    """
    columns = [
        "label_name",
        "images",
        "correct",
        "accuracy",
        "top_confusion",
        "top_confusion_count",
    ]
    needed = ("image_id", "label", "label_name", "predicted_class", "predicted_name")
    _require(frame, needed, "per_class_accuracy")
    images_ = one_row_per_image(frame)
    images_ = images_[images_["label"].notna()]
    if images_.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="label", dtype="int64"))
    images_ = images_.assign(
        label=images_["label"].astype("int64"),
        correct=images_["predicted_class"] == images_["label"].astype("int64"),
    )
    grouped = images_.groupby("label")
    table = pd.DataFrame(
        {
            "label_name": grouped["label_name"].first(),
            "images": grouped.size(),
            "correct": grouped["correct"].sum().astype("int64"),
        }
    )
    table["accuracy"] = table["correct"] / table["images"]
    confusion = _wrong_counts(images_).rename("n").reset_index()
    confusion = confusion.sort_values(
        ["label", "n", "predicted_name"], ascending=[True, False, True]
    )
    top = confusion.drop_duplicates("label").set_index("label")
    table["top_confusion"] = top["predicted_name"].reindex(table.index).astype(object)
    table["top_confusion"] = table["top_confusion"].where(table["top_confusion"].notna(), None)
    table["top_confusion_count"] = top["n"].reindex(table.index).fillna(0).astype("int64")
    table = table.reset_index().sort_values(["accuracy", "label"]).set_index("label")
    return table[columns]


def confusions(frame: pd.DataFrame) -> pd.Series:
    """How many images of each labelled class were predicted as each other class, each
    image counted once (`one_row_per_image`), as `per_class_accuracy` counts them.

    Returns:
      Counts (int) indexed by (`label`, `predicted_name`), wrong predictions only.
    """
    _require(frame, ("image_id", "label", "predicted_class", "predicted_name"), "confusions")
    images_ = one_row_per_image(frame)
    images_ = images_[images_["label"].notna()]
    label = images_["label"].astype("int64")
    return _wrong_counts(images_.assign(label=label, correct=images_["predicted_class"] == label))


def _wrong_counts(images_: pd.DataFrame) -> pd.Series:
    """Counts of (label, predicted_name) over the images (one row each, int `label`,
    bool `correct`) that were predicted wrong."""
    return images_[~images_["correct"]].groupby(["label", "predicted_name"]).size()


def _manifest(manifest_or_output: Mapping[str, Any] | str) -> Mapping[str, Any]:
    if isinstance(manifest_or_output, str | os.PathLike):
        return read_manifest(str(manifest_or_output))
    return manifest_or_output


def _inside_folder(image_id: str) -> str:
    """The path within its image folder of the file a folder run's `image_id` names.
    Rows are data anyone may have written: an id leaving the folder (absolute, or with a
    `..` part) would read any file of this machine into a figure or the report."""
    relative = datasource.relative_path(image_id)
    if os.path.isabs(relative) or ".." in relative.split("/") or files.is_remote(relative):
        raise ImageUnavailable(
            f"{image_id!r} is not a path inside the run's image folder (absolute, or with "
            "'..'): the job gives no such image_id, and a file outside the folder is not read."
        )
    return relative


def _os_name(path: str) -> str:
    """A local path as this process names files: the ids and the manifest hold UTF-8
    text, which a Python reading names as ASCII (a C locale with PYTHONUTF8=0) could
    not encode ("'ascii' codec can't encode character"); the same text elsewhere."""
    if files.is_remote(path):
        return path
    return os.fsdecode(path.encode("utf-8", "surrogateescape"))


def _source_path(manifest: Mapping[str, Any], image_id: str, image_root: str | None) -> str:
    if image_root is not None:
        return _os_name(files.join(image_root, _inside_folder(image_id)))
    source = datasource.source_of_manifest(manifest)
    if isinstance(source, datasource.SampleSource):
        paths = {f.image_id: f.path for f in datasource.sample_files()}
        if image_id not in paths:
            named = [i for i in paths if i.rsplit("/", 1)[-1] == image_id]
            hint = f"; did you mean {named[0]!r}? (pass a row's image_id)" if named else "."
            raise ImageUnavailable(f"{image_id!r} is not an image_id of the bundled sample{hint}")
        return paths[image_id]
    if isinstance(source, datasource.TfdsSource):
        raise ImageUnavailable(
            f"images of the TFDS dataset {source.name!r} are not re-loaded (it would mean "
            "scanning the dataset)."
        )
    if source.remote or os.path.isdir(_os_name(source.root)):
        return _os_name(files.join(source.root, _inside_folder(image_id)))
    raise ImageNotFound(
        f"the image folder {source.root!r} of this run is not reachable from here; "
        "pass image_root= where it is now (--image_root on the command line)."
    )


def load_input_image(
    manifest_or_output: Mapping[str, Any] | str,
    image_id: str,
    image_root: str | None = None,
) -> np.ndarray:
    """Re-loads the image a row was computed on, exactly as the model saw it.

    The image is read from the run's dataset (a folder or the bundled sample),
    decoded, resized with padding to the model's input size (`manifest.model.
    image_size`, and `image_width` for a non-square one), as the pipeline's
    preprocessing does.

    Args:
      manifest_or_output: the run's manifest (`read_manifest(output)`) or output folder.
      image_id: the row's `image_id`.
      image_root: where the run's image folder is now, if it moved.

    Returns:
      uint8 [H, W, 3] RGB, H x W = the model's input size, before scaling to the
      model's input range.

    Raises:
      ImageUnavailable: a TFDS dataset (not re-loaded), or the file is gone or
        unreadable; the message says which.
    """
    manifest = _manifest(manifest_or_output)
    size = image_shape(manifest["model"])
    path = _source_path(manifest, image_id, image_root)
    try:
        data = files.read_input_file(path)  # never a FIFO or device, at most 1 GiB
        pixels = images.decode_image(data, max_side_hint=max(size))
    except images.ImageError as e:
        raise ImageUnavailable(f"{path} cannot be decoded: {e}") from e
    except FileNotFoundError as e:
        raise ImageNotFound(
            f"{path} cannot be read: {e} (deleted or moved since the run? or is {image_id!r} "
            "only a file name, not a row's image_id, the path within the run's folder?)"
        ) from e
    except Exception as e:  # any other I/O failure: moved, no permission
        raise ImageUnavailable(f"{path} cannot be read: {e}") from e
    return images.resize_with_pad(pixels, size)


def input_images(
    manifest_or_output: Mapping[str, Any] | str,
    image_ids: Iterable[str],
    image_root: str | None = None,
) -> dict[str, np.ndarray]:
    """`load_input_image` for many ids; ids whose image is unavailable are left out (logged)."""
    manifest = _manifest(manifest_or_output)
    loaded = {}
    for image_id in dict.fromkeys(image_ids):
        try:
            loaded[image_id] = load_input_image(manifest, image_id, image_root)
        except ImageUnavailable as e:
            _LOG.info("No input image for %s: %s", image_id, e)
    return loaded


def baseline_images(
    manifest_or_output: Mapping[str, Any] | str, image: np.ndarray, image_id: str
) -> np.ndarray:
    """The run's baselines x' for an image, for display.

    Args:
      manifest_or_output: the run's manifest or output folder (baselines, seed, input range).
      image: uint8 [H, W, 3], from `load_input_image`.
      image_id: the row's `image_id` (seeds the `noise` baseline, as in the run).

    Returns:
      float32 [B, H, W, 3] in [0, 1], one per baseline in `manifest.config.baselines`.
    """
    manifest = _manifest(manifest_or_output)
    names = manifest["config"]["baselines"]
    return np.stack([baseline_image(manifest, image, image_id, name) for name in names])


def baseline_image(
    manifest_or_output: Mapping[str, Any] | str,
    image: np.ndarray | None,
    image_id: str,
    name: str,
) -> np.ndarray | None:
    """The baseline `name` of a row's image, for display: as the run made it, from the
    image (uint8 [H, W, 3], `load_input_image`'s) or, where the image could not be
    re-read (None), from the model's input shape alone: float32 [H, W, 3] in [0, 1].
    None for a baseline made from the image's pixels (blur) without the image."""
    manifest = _manifest(manifest_or_output)
    if image is None:
        if name in baselines_lib.FROM_IMAGE:
            return None
        image = np.zeros((*image_shape(manifest["model"]), 3), np.uint8)  # its shape alone
    low, high = (float(v) for v in manifest["model"]["input_range"])
    scaled = images.scale_to_range(image, (low, high))
    seed = int(manifest["config"].get("seed", 0))
    (ref,) = baselines_lib.make_baselines(scaled, (name,), (low, high), image_id, seed)
    return np.clip((ref - low) / (high - low), 0.0, 1.0).astype(np.float32)


# A number standing alone (`852`, `1.5`), not part of a name (`float16`, `n02123045`).
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?!\w|\.\d)")


def error_causes(errors: pd.DataFrame) -> pd.DataFrame:
    """Error records (`read_errors`) -> one row per stage and cause: `stage`,
    `inputs`, `reason` and an `example` file name, the first by name (its image_id
    where several inputs share that name: `x/loop`, not `loop`); the stages with the
    most errors first, and in each its most frequent causes. A cause is a reason
    without its file's name and numbers, shown as N where its records' numbers differ."""
    errors = errors.assign(
        reason=[_reason(*row) for row in errors[["error", "image_id"]].itertuples(False)],
        example=_unambiguous_names(errors),
    )
    errors["cause"] = errors["reason"].map(_cause)
    causes = errors.groupby(["stage", "cause"], sort=False).agg(
        inputs=("reason", "size"),
        distinct=("reason", "nunique"),
        shown=("reason", "first"),
        example=("example", "min"),  # the same whatever order the files were read in
    )
    causes = causes.reset_index()
    causes["reason"] = causes["shown"].where(causes["distinct"] == 1, causes["cause"])
    causes["stage_inputs"] = causes.groupby("stage")["inputs"].transform("sum")
    order = ["stage_inputs", "stage", "inputs"]
    causes = causes.sort_values(order, ascending=[False, True, False], kind="stable")
    return causes[["stage", "inputs", "reason", "example"]].reset_index(drop=True)


def _unambiguous_names(frame: pd.DataFrame) -> pd.Series:
    """Each record's `file_name`, or its `image_id` where other inputs share that
    name (`loop` in two folders), as the end-of-run table of rows shows them."""
    shared = frame.groupby("file_name", dropna=False)["image_id"].transform("nunique") > 1
    return frame["file_name"].where(~shared & frame["file_name"].notna(), frame["image_id"])


def _reason(error: str, image_id: str) -> str:
    """An error's reason without its own input's name, as what that input is
    (`No such file: '/x/<file>'`, `Permission denied: '/x/<folder>'`:
    `datasource.input_kind`), so that one cause over many inputs is counted once. A
    name of 3 characters or fewer could stand inside any word: it is taken out only
    where it ends the path an OS error quotes (`'/x/ab'`)."""
    shown = f"<{datasource.input_kind(error)}>"
    if len(image_id) > 3:
        return error.replace(image_id, shown)
    return re.sub(f"/{re.escape(image_id)}(?=['\"])", f"/{shown}", error)


def _cause(reason: str) -> str:
    """A reason with its numbers as N (`not an image Pillow can read (N bytes)`), so
    that one cause whose message holds each file's size or count is counted once."""
    return _NUMBER.sub("N", reason)
