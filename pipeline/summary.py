"""The end-of-run summary printed by `python -m pipeline`."""

from __future__ import annotations

import os
import sys
import unicodedata
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms import files, wording
from transforms.manifest import (
    REPORT_FILE,
    completeness_bound,
    estimate_bound,
    has_one_output,
    shows_targets,
)
from transforms.results import error_causes, read_errors
from transforms.sinks import results_files

__all__ = [
    "error_summary",
    "print_summary",
    "rows_in_output",
    "summary_table",
    "tolerance_summary",
]

_COLUMNS = [
    "image_id",
    "file_name",
    "label_name",
    "predicted_name",
    "top_k_classes",
    "top_k_probs",
    "target_class",
    "target_name",
    "target_score",
    "relative_delta",
    "attribution_error",
]

#: Rows per record batch the table is chosen from: a large run is never read whole.
_BATCH_ROWS = 8192


def _batches(output: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """`columns` of every row in `<output>/results`, a record batch at a time: the
    rows of a large run are never in memory together."""
    for path in results_files(output):
        with files.open_with_beam(path) as f:
            yield from pq.ParquetFile(f).iter_batches(_BATCH_ROWS, columns=columns)


def _first_images(output: str, limit: int) -> pa.Table:
    """`file_name` and `image_id` of the first `limit` images by file name, then id."""
    keys = ["file_name", "image_id"]
    order = [(key, "ascending") for key in keys]
    first = pa.table({key: pa.array([], pa.string()) for key in keys})
    for batch in _batches(output, keys):
        both = pa.concat_tables([first, pa.Table.from_batches([batch]).select(keys)])
        first = both.group_by(keys).aggregate([]).sort_by(order).slice(0, limit)
    return first


def _rows(output: str, limit: int) -> pd.DataFrame:
    """The rows of the first `limit` images, sorted by file, then by the target's rank
    among the predictions; `shared`: whether another image has the row's file name."""
    first = _first_images(output, limit)
    names = first.column("file_name")
    # The rows of the images shown, and of any other image of a file name they share.
    kept = [b.filter(pc.is_in(b.column("file_name"), names)) for b in _batches(output, _COLUMNS)]
    if not kept:
        return pd.DataFrame(columns=[*_COLUMNS, "shared"])
    frame = pa.concat_tables([pa.Table.from_batches([b]) for b in kept]).to_pandas()
    frame["shared"] = frame.groupby("file_name")["image_id"].transform("nunique") > 1
    frame = frame[frame["image_id"].isin(first.column("image_id").to_pylist())]
    rank = [
        list(classes).index(target) if target in set(classes) else len(classes)
        for classes, target in zip(frame["top_k_classes"], frame["target_class"], strict=True)
    ]
    return (
        frame.assign(_rank=rank)
        .sort_values(["file_name", "image_id", "_rank"], kind="stable")
        .reset_index(drop=True)
    )


#: Terminal columns a name may take in the table: a longer one is cut in its middle.
_WIDTH = 40


def _width(text: str) -> int:
    """Columns `text` takes on a terminal: two for a wide or full-width (CJK) character."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _cell(text: str) -> str:
    """A name as the table shows it: printable (`wording.printable`), and at most
    `_WIDTH` columns, its start and end kept (a 200-character file name made every
    line of the table as wide, and each row wrapped on a terminal), cut on whole
    escapes (`wording.shortened`)."""
    return wording.shortened(text, _WIDTH, keep="both", size=_width)


def _table_text(table: pd.DataFrame) -> str:
    """`table` as printed, its columns padded by the columns each character takes on
    a terminal (pandas' East Asian width: CJK characters take two), not by characters:
    a row naming 写真.png stuck out of its columns by one per such character."""
    with pd.option_context("display.unicode.east_asian_width", True):
        return table.to_string(index=False)


def summary_table(
    output: str, limit: int = 20, target: bool = False, one_output: bool = False
) -> pd.DataFrame:
    """file, label, prediction, confidence, (target,) completeness and per-pixel error
    of the first rows.

    Args:
      output: the run's --output folder.
      limit: rows shown at most.
      target: add the `target` column (the class attributed in each row), for
        runs with another target than the prediction (`--target top_k`, `label`).
      one_output: the run's model has one output (`has_one_output`): its `score`
        (`target_score`) replaces prediction and confidence, class 0 at probability 1.
    """
    frame = _rows(output, limit)
    # A file name that several images share (x.png in two class folders) is
    # shown as its image id, the name that tells them apart.
    shown = frame["file_name"].where(~frame["shared"], frame["image_id"])
    frame = frame.assign(file=shown).head(limit)
    table = {
        "file": frame["file"].map(_cell),
        "label": frame["label_name"].fillna("-").map(_cell),
    }
    if one_output:
        table["score"] = frame["target_score"].map(wording.score)
    else:
        table["prediction"] = frame["predicted_name"].map(_cell, na_action="ignore")
        table["confidence"] = frame["top_k_probs"].map(lambda p: wording.probability(p[0], 1))
    if target:
        names = frame["target_name"].fillna(frame["target_class"].astype(str))
        table["target"] = names.map(_cell)
    table["relative_delta"] = frame["relative_delta"].map(lambda d: wording.percent(d, 3))
    table["attribution_error"] = frame["attribution_error"].map(
        lambda e: "-" if pd.isna(e) else wording.percent(e, 2)
    )
    return pd.DataFrame(table)


def error_summary(output: str, reasons: int = 3) -> list[str]:
    """Lines of the run's errors by stage, each with its most frequent reasons (a
    reason longer than 160 characters as shown cut to them: `wording.shortened`)."""
    causes = error_causes(read_errors(output))
    lines = []
    for stage, group in causes.groupby("stage", sort=False):
        lines.append(f"  {stage}: {group['inputs'].sum()}")
        for cause in group.head(reasons).itertuples():
            reason = wording.shortened(cause.reason, 160)  # as shown, escapes whole
            example = wording.printable(cause.example)
            lines.append(f"    {cause.inputs} x {reason} (e.g. {example})")
        if len(group) > reasons:
            lines.append(f"    ... and {wording.count(len(group) - reasons, 'other reason')}")
    return lines


def tolerance_summary(output: str, config: dict[str, Any]) -> str | None:
    """The line counting the rows not within the run's tolerance (`within_tolerance`
    false), or None when every row is within it or the run judged none (--tolerance 0).
    Read as the table's rows are (`_batches`): a gs:// file refused names itself."""
    if not config.get("tolerance"):
        return None
    flagged = total = 0
    for batch in _batches(output, ["within_tolerance"]):
        flagged += pc.sum(pc.equal(batch.column(0), False)).as_py() or 0
        total += batch.num_rows
    if not flagged:
        return None
    completeness = completeness_bound(config)
    return (
        f"Not within the tolerance: {flagged} of {wording.count(total, 'row')} "
        f"(within_tolerance false: estimated per-pixel error above {estimate_bound(config):g} "
        f"or relative completeness error above {completeness:g}, "
        f"after refinement up to --max_steps {config.get('max_steps')})."
    )


def _rows_in(output: str) -> int:
    """Rows in `<output>/results`, from the Parquet footers."""
    total = 0
    for path in results_files(output):
        with files.open_with_beam(path) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def rows_in_output(manifest: dict[str, Any]) -> int:
    """Rows `<output>/results` holds at a run's end: the run's own, or, after a
    --resume, also the earlier runs' (of images done before, and of images no
    longer in the dataset, whose rows are kept), read from the files."""
    if not manifest.get("resumed"):
        return manifest["counts"]["rows"]
    return _rows_in(manifest["output"].rstrip("/") or manifest["output"])


def _shell_quoted(code: str) -> str:
    """`code` as one shell word: in double quotes when that needs no escape (the
    readable form), else as `wording.shell_word` gives it."""
    if not any(c in code for c in '"$`\\!'):
        return f'"{code}"'
    return wording.shell_word(code)


def _flag(name: str, value: str) -> list[str]:
    """A flag and its value as arguments; joined by `=` when the value starts with
    `-` (argparse would take `--input -x` for two flags)."""
    return [f"{name}={value}"] if value.startswith("-") else [name, value]


def _python() -> str:
    """The interpreter running this job, quoted for a shell: it has the packages."""
    return wording.shell_word(sys.executable or "python")


def _job_python() -> str:
    """The interpreter for a printed `-m pipeline...` command. Run from a folder that
    holds a `pipeline` or `transforms` of its own (a project's), `python -m` would
    import that one: the command then names this job's folder and leaves the
    working folder off sys.path (`-P`)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    here = os.getcwd()
    names = ("pipeline", "transforms", "pipeline.py", "transforms.py")
    shadowed = any(os.path.lexists(os.path.join(here, name)) for name in names)
    if not shadowed or os.path.realpath(here) == os.path.realpath(root):
        return _python()
    return f"PYTHONPATH={wording.shell_word(root)} {_python()} -P"


def _where_line(output: str, counts: dict[str, Any], rows: int) -> str:
    """Where the results, errors and manifest are, and the counts; the folder's name as
    the log lines show it (`wording.printable`: a newline in it broke the line)."""
    folder = wording.printable(output)
    earlier = counts.get("skipped_done_before", 0)
    before = f"; {earlier} of them done before, their rows kept" if earlier else ""
    new = f", {counts['rows']} of them from this run" if rows != counts["rows"] else ""
    return (
        f"Results in {folder}/results ({wording.count(rows, 'row')}{new}), errors in {folder}/errors "
        f"({counts['errors']}), manifest {folder}/manifest.json; "
        f"{wording.count(counts['inputs'], 'input')}{before}."
    )


def print_summary(manifest: dict[str, Any], limit: int = 20, rows: int | None = None) -> None:
    """Prints where the results are, a short table, errors by stage and how to read them;
    `rows`: `rows_in_output(manifest)`, when the caller has it."""
    # As typed, maybe with a trailing '/': 'gs://b/out//results' would name other objects.
    output = manifest["output"].rstrip("/") or manifest["output"]
    counts = manifest["counts"]
    rows = rows_in_output(manifest) if rows is None else rows
    print()
    print(_where_line(output, counts, rows))
    target = shows_targets(manifest.get("config", {}))
    one_output = has_one_output(manifest)
    if rows:
        print()
        print(_table_text(summary_table(output, limit, target=target, one_output=one_output)))
        if rows > limit:
            more = wording.count(rows - limit, "more row")
            print(f"  ... and {more} (read them with pandas below)")
        flagged = tolerance_summary(output, manifest.get("config", {}))
        if flagged:
            print()
            print(flagged)
    if counts["errors"]:
        print()
        print(f"Errors by stage ({counts['errors']}; all of them: transforms.results.read_errors):")
        print("\n".join(error_summary(output)))
    if not rows:
        return  # nothing to read or render: the command line says why next
    python = _python()
    print()
    print("Read them with pandas:")
    columns = [
        "file_name",
        "target_score" if one_output else "predicted_name",
        *(["target_name"] if target else []),
        "attribution_error",
    ]
    code = (
        f"import pandas as pd; print(pd.read_parquet({output + '/results'!r}, columns={columns!r}))"
    )
    print(f"  {python} -c {_shell_quoted(code)}")
    print("Render the audit report (one self-contained HTML page):")
    report = wording.shell_command(
        [*_flag("--input", output), *_flag("--output", f"{output}/{REPORT_FILE}")]
    )
    print(f"  {_job_python()} -m pipeline.report {report}")
