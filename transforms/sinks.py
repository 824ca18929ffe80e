"""Writing results, errors and the run manifest (read back by `transforms.manifest`)."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import filebasedsink, parquetio
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from transforms import files
from transforms.errors import error_reason
from transforms.manifest import (
    CHECKPOINT_DIR,
    ERRORS_DIR,
    MANIFEST_FILE,
    RESULTS_DIR,
    SHARD_PREFIX,
    TEMP_DIR,
    checkpoints_root,
    read_manifest,
    run_checkpoints,
)
from transforms.schema import ERROR_SCHEMA, rows_to_table
from transforms.wording import count

__all__ = [
    "BEAM_TEMP",
    "BYTES_PER_GROUP",
    "CHECKPOINT_DIR",
    "TEMP_DIR",
    "COUNT_KEYS",
    "ROWS_PER_GROUP",
    "SCHEMA_FILE",
    "SumCounts",
    "WriteCheckpoints",
    "WriteErrors",
    "WriteManifest",
    "WriteResults",
    "check_still_this_run",
    "checkpoint_folder",
    "counts_said",
    "is_partial_file",
    "json_temp",
    "parquet_writer",
    "read_manifest",
    "results_files",
    "row_bytes",
    "salvage_checkpoints",
    "write_schema_file",
    "write_json",
    "write_manifest",
    "write_no_errors",
    "write_parquet_file",
    "writer_options",
]

_LOG = logging.getLogger(__name__)
COUNT_KEYS = (
    "inputs",
    "skipped_done_before",
    "images_with_rows",
    "images_with_errors",
    "rows",
    "errors",
)
# A Parquet row group holds rows up to BYTES_PER_GROUP (as `row_bytes` counts them):
# 64 full float32 224 x 224 x 3 maps, what a worker holds in memory at once; smaller
# rows (float16, pixel, none) fill larger groups, at most ROWS_PER_GROUP rows. Groups
# of 64 rows whatever their size made a million rows of --attributions none carry a
# 53 MB footer: reading three columns took 6.5 s and 1.4 GB, where 0.1 s do.
ROWS_PER_GROUP = 16384
BYTES_PER_GROUP = 64 * (1024 + 224 * 224 * 3 * 4)
_FLOAT_ARRAYS = ("attributions", "path_alphas", "path_scores", "deletion_curve", "insertion_curve")
#: In `results/`: the zero-row file of every column a run writes first
#: (`write_schema_file`); named like the sink's `part-*` files.
SCHEMA_FILE = f"{SHARD_PREFIX}-schema.parquet"
#: How the sinks name their temp folders in TEMP_DIR, as Beam's own do.
BEAM_TEMP = "beam-temp-"


def writer_options(schema: pa.Schema) -> dict[str, Any]:
    """Parquet writer options of the results (benchmarks/storage.py measures them).

    Float arrays get no dictionary (their values almost never repeat: the
    attempt only adds a page, and decoding float16 dictionaries is slow) and
    float32 ones BYTE_STREAM_SPLIT encoding, which zstd compresses better
    (DuckDB cannot read it for float16). Other columns keep the defaults.
    """
    leaves = []
    for field in schema:
        # Leaf paths as ParquetWriter(use_compliant_nested_type=False) names them.
        leaves.append(f"{field.name}.list.item" if pa.types.is_list(field.type) else field.name)
    arrays = [leaf for leaf in leaves if leaf.split(".")[0] in _FLOAT_ARRAYS]
    split = [
        leaf
        for leaf, field in zip(leaves, schema, strict=True)
        if leaf in arrays and pa.types.is_float32(field.type.value_type)
    ]
    return {
        "use_dictionary": [leaf for leaf in leaves if leaf not in arrays],
        "use_byte_stream_split": split,
    }


class _ParquetSink(parquetio._ParquetSink):  # noqa: SLF001 - WriteToParquet takes no temp folder
    """Beam's Parquet sink (temp files, atomic finalize) with `writer_options`.

    Beam puts its temp folder (`beam-temp-*`) beside the final files, that is
    inside `results/`: a killed run left partial Parquet files there, and
    `pd.read_parquet("<output>/results")` then failed. They go to `temp_root`.
    """

    def __init__(
        self, path_prefix: str, schema: pa.Schema, temp_root: str, claim: tuple[str, str] | None
    ):
        super().__init__(
            path_prefix,
            schema,
            codec="zstd",
            use_deprecated_int96_timestamps=False,
            use_compliant_nested_type=False,
            file_name_suffix=".parquet",
            num_shards=0,
            shard_name_template=None,
            mime_type="application/x-parquet",
            triggering_frequency=None,
        )
        self._temp_root = temp_root
        self._claim = claim  # (output, run id): the run whose folder the files go to

    def initialize_write(self):
        # The final folder is no longer made as the temp folder's parent:
        # finalize renames into it, so it must exist.
        folder = FileSystems.split(self.file_path_prefix.get())[0]
        if not FileSystems.exists(folder):
            try:
                FileSystems.mkdirs(folder)
            except OSError:
                pass  # made meanwhile by the other sink's initialize_write
        return super().initialize_write()

    def pre_finalize(self, init_result, writer_results):
        # Before Beam deletes same-named files and renames this job's into place.
        if self._claim is not None:
            check_still_this_run(*self._claim)
            _delete_earlier_shards(self.file_path_prefix.get())
        return super().pre_finalize(init_result, writer_results)

    def _create_temp_dir(self, file_path_prefix: str) -> str:
        name = FileSystems.split(file_path_prefix)[1]
        return FileSystems.join(self._temp_root, f"{BEAM_TEMP}{name}-{uuid.uuid1().hex}")

    def open(self, temp_path):
        self._file_handle = filebasedsink.FileBasedSink.open(self, temp_path)
        return parquet_writer(self._file_handle, self._schema)


def _delete_earlier_shards(path_prefix: str) -> None:
    """Deletes the shards `<path_prefix>-NNNNN-of-MMMMM.parquet` of every count, called
    once the folder is known to be this unfinished run's (`check_still_this_run`).

    Only an earlier job of this run made them: a run's results/ and errors/ start
    empty, a resume's prefix is its own. Beam deletes those of this job's count
    alone, so a Dataflow template's job run again after one that put its shards in
    place and died before its manifest step kept both jobs' rows when Dataflow
    picked another count (-of-00003, then -of-00005): every row twice.
    """
    folder, name = FileSystems.split(path_prefix)
    shard = re.compile(re.escape(name) + r"-\d{5,}-of-\d{5,}\.parquet")
    listed = files.match([FileSystems.join(folder, "*")])[0].metadata_list
    earlier = [m.path for m in listed if shard.fullmatch(FileSystems.split(m.path)[1])]
    if earlier:
        _LOG.warning(
            "Deleting %d shards an earlier job of this run put in %s: this job's replace them.",
            len(earlier),
            folder,
        )
        FileSystems.delete(earlier)


def parquet_writer(handle, schema: pa.Schema) -> pq.ParquetWriter:
    """The one Parquet writer set-up of every results file (the sink's, checkpoints,
    salvaged rows): zstd, Beam's nested type names, `writer_options`."""
    return pq.ParquetWriter(
        handle,
        schema,
        compression="zstd",
        use_compliant_nested_type=False,
        **writer_options(schema),
    )


def row_bytes(row: dict[str, Any]) -> int:
    """A result row's size as row groups count it: its arrays' bytes (attributions,
    path and faithfulness curves: a 4,096-point path takes 33 KB), and 1 KB for the
    rest (the scalar metadata)."""
    arrays = (value.nbytes for value in row.values() if isinstance(value, np.ndarray))
    return 1024 + sum(arrays)


class _GroupRows(beam.DoFn):
    """Buffers a bundle's rows into groups of bounded size: one Parquet row group each."""

    def __init__(self, max_rows: int, max_bytes: int):
        self._max_rows = max_rows
        self._max_bytes = max_bytes

    def start_bundle(self):
        self._rows, self._bytes = [], 0

    def process(self, row: dict[str, Any]):
        self._rows.append(row)
        self._bytes += row_bytes(row)
        if len(self._rows) >= self._max_rows or self._bytes >= self._max_bytes:
            yield self._rows
            self._rows, self._bytes = [], 0

    def finish_bundle(self):
        if self._rows:
            yield WindowedValue(self._rows, GlobalWindow().max_timestamp(), [GlobalWindow()])
        self._rows, self._bytes = [], 0


def check_still_this_run(output: str, run_id: str, complete_ok: bool = False) -> None:
    """Refuses to put run `run_id`'s files in place unless `output`'s manifest is still
    that run's, unfinished: a Dataflow template's job runs with the run id its launcher
    claimed the folder with, as often as the template is run, and with no lock; a second
    run of it, or another run that took the folder meanwhile (an --overwrite), had its
    rows replaced or doubled. `complete_ok`: that run's "complete" manifest passes too
    (the manifest step retried after it wrote it; the sinks, before it, refused a
    second run of a template).

    Raises:
      RuntimeError: the folder holds another run, or this one completed already.
    """
    try:
        manifest = read_manifest(output)
    except Exception as e:  # noqa: BLE001 - deleted or unreadable: not this run's folder now
        holds = f"no manifest of run {run_id} ({error_reason(e)})"
    else:
        other, status = manifest.get("run_id"), manifest.get("status")
        if other == run_id and (status == "running" or (complete_ok and status == "complete")):
            return
        if other != run_id:
            holds = f"run {other} ({status}), not this job's run {run_id}"
        elif status == "complete":
            holds = f"run {run_id} completed already"
        else:  # "replacing": an --overwrite, killed as it deleted this run's files
            holds = f"run {run_id} ({status}), not running"
    raise RuntimeError(
        f"--output {output} holds {holds}: a Dataflow template's job run a second time, "
        "or another run took the folder meanwhile. This job puts none of its files in "
        f"place (they stay in {TEMP_DIR}/, which the next run there deletes); run a "
        "template once per --output, into a folder no other run uses."
    )


def _write_parquet(
    records,
    output: str,
    folder: str,
    prefix: str,
    schema: pa.Schema,
    to_table,
    run_id: str | None,
):
    """Records -> `<output>/<folder>/<prefix>-*.parquet`, temp files in `<output>/.tmp/`;
    with `run_id`, put in place only while `output` is still that run's
    (`check_still_this_run`)."""
    # Absolute for a local folder: Beam's finalize step matches the temp files
    # by an absolute glob, and a relative path (`./output/sample`) never matches it.
    temp = FileSystems.join(output, TEMP_DIR)
    temp = temp if files.is_remote(temp) else os.path.abspath(temp)
    claim = (output, run_id) if run_id is not None else None
    sink = _ParquetSink(FileSystems.join(output, folder, prefix), schema, temp, claim)
    return (
        records
        | "GroupRows" >> beam.ParDo(_GroupRows(ROWS_PER_GROUP, BYTES_PER_GROUP))
        | "RowsToArrow" >> beam.Map(to_table, schema=schema)
        | f"Write{folder.capitalize()}Parquet" >> beam.io.Write(sink)
    )


class WriteResults(beam.PTransform):
    """Result rows -> `<output>/results/<prefix>-*.parquet` (zstd, one schema); with
    `run_id`, only while `output` is that run's (`check_still_this_run`)."""

    def __init__(
        self,
        output: str,
        schema: pa.Schema,
        prefix: str = SHARD_PREFIX,
        run_id: str | None = None,
    ):
        super().__init__()
        self._output = output
        self._schema = schema
        self._prefix = prefix
        self._run_id = run_id

    def expand(self, rows):
        return _write_parquet(
            rows,
            self._output,
            RESULTS_DIR,
            self._prefix,
            self._schema,
            rows_to_table,
            self._run_id,
        )


def _errors_to_table(records: list[dict[str, str]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(records, schema=schema)


class WriteErrors(beam.PTransform):
    """Error records -> `<output>/errors/part-*.parquet`; with `run_id`, as `WriteResults`."""

    def __init__(self, output: str, run_id: str | None = None):
        super().__init__()
        self._output = output
        self._run_id = run_id

    def expand(self, errors):
        return _write_parquet(
            errors,
            self._output,
            ERRORS_DIR,
            SHARD_PREFIX,
            ERROR_SCHEMA,
            _errors_to_table,
            self._run_id,
        )


def _partial_name() -> str:
    """The name `write_parquet_file` writes a file under until it is complete."""
    return f"{uuid.uuid4().hex}.partial"


def is_partial_file(name: str) -> bool:
    """Whether a file name in a temp folder is one of `_partial_name`'s: a file a
    killed `write_parquet_file` left behind (other names there are not ours)."""
    return re.fullmatch(r"[0-9a-f]{32}\.partial", name) is not None


def write_parquet_file(
    path: str, tables: Iterable[pa.Table], schema: pa.Schema, temp: str, keep_empty: bool = False
) -> int:
    """`tables` as one Parquet file at `path` (local or gs://), whole or not at all:
    written to a file in the folder `temp`, then renamed; a row group's tables in
    memory at a time. Nothing is written for no rows, unless `keep_empty` (a schema-only file).
    Returns the rows written."""
    partial = FileSystems.join(temp, _partial_name())
    try:
        rows = _write_tables(partial, tables, schema)
        if not (rows or keep_empty):
            FileSystems.delete([partial])
            return rows
        folder = FileSystems.split(path)[0]
        if not FileSystems.exists(folder):  # results/ of a run killed before it finalized
            FileSystems.mkdirs(folder)
        FileSystems.rename([partial], [path])
    except Exception:
        # No stray partial file in the temp folder, also when the write itself
        # failed (a full disk: the partial file only held more space).
        with contextlib.suppress(Exception):
            FileSystems.delete([partial])
        raise
    return rows


def _write_tables(path: str, tables: Iterable[pa.Table], schema: pa.Schema) -> int:
    """`tables` as one Parquet file at `path`; returns the rows written."""
    rows = 0
    with FileSystems.create(path) as f, parquet_writer(f, schema) as writer:
        for table in _row_groups(tables):
            writer.write_table(table, row_group_size=ROWS_PER_GROUP)
            rows += table.num_rows
    return rows


def _row_groups(tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """`tables` joined into tables of at most ROWS_PER_GROUP rows and BYTES_PER_GROUP
    bytes, each as full as whole tables make it (a table over a bound alone is kept
    whole): a salvage's checkpoints hold a batch each (8 rows), and a row group apiece
    made their metadata slow to read. Each table is sized once, by its buffers
    (`nbytes`, which walks every list's offsets, took 0.7 s for 4,000 checkpoints;
    summing the pending ones at every table took minutes for a group of 2,048),
    and each group is one chunk: writing thousands of small chunks took 10x longer."""
    pending: list[pa.Table] = []
    rows = size = 0
    for table in tables:
        table_size = table.get_total_buffer_size()
        over = rows + table.num_rows > ROWS_PER_GROUP or size + table_size > BYTES_PER_GROUP
        if pending and over:
            yield pa.concat_tables(pending).combine_chunks()
            pending, rows, size = [], 0, 0
        pending.append(table)
        rows, size = rows + table.num_rows, size + table_size
    if pending:
        yield pa.concat_tables(pending).combine_chunks()


def results_files(output: str) -> list[str]:
    """The paths of the Parquet files in `<output>/results/` (local or gs://), as
    Beam's file systems list them."""
    pattern = FileSystems.join(output, RESULTS_DIR, "*.parquet")
    return [meta.path for meta in files.match([pattern])[0].metadata_list]


def write_schema_file(output: str, schema: pa.Schema) -> str | None:
    """Writes `<output>/results/SCHEMA_FILE`, a results file of no rows, and returns
    its path; None, with a warning, when it cannot be written.

    A run writes it as it claims its output, before any work: until Beam's sink
    finalizes (at the end of the run), it is what keeps `results/` readable with
    every column (`pd.read_parquet("<output>/results", columns=[...])`, DuckDB's
    `'<output>/results/*.parquet'`), also after a kill.
    """
    path = FileSystems.join(output, RESULTS_DIR, SCHEMA_FILE)
    try:
        write_parquet_file(path, [], schema, FileSystems.join(output, TEMP_DIR), keep_empty=True)
    except Exception as e:  # noqa: BLE001 - a convenience: the run's own writes say what fails
        _LOG.warning("Could not write %s (%s); the run goes on.", path, error_reason(e))
        return None
    return path


def checkpoint_folder(output: str, run_id: str | None = None) -> str:
    """`<output>/.tmp/checkpoints/` (`checkpoints_root`), or run `run_id`'s folder in
    it, the one `run_checkpoints` names to the readers of its checkpoints."""
    return run_checkpoints(output, run_id) if run_id else checkpoints_root(output)


class _Checkpoint(beam.DoFn):
    """Writes the rows of finished images as whole Parquet files, every `every`
    images (one RunInference batch) and at the end of a bundle, into
    `checkpoint_folder(output, run_id)`. Beam's sink writes the same rows only at
    the end of the run: these files are what a --resume keeps of a killed run."""

    def __init__(self, output: str, run_id: str, schema: pa.Schema, every: int):
        self._folder = checkpoint_folder(output, run_id)
        self._schema, self._every = schema, every

    def start_bundle(self):
        self._rows, self._images = [], 0

    def process(self, outcome):
        self._rows.extend(outcome.rows)  # an image's rows, all of them (failed: none)
        self._images += 1
        if self._images >= self._every:
            self._write()

    def finish_bundle(self):
        self._write()

    def _write(self):
        rows, self._rows, self._images = self._rows, [], 0
        if not rows:
            return
        path = FileSystems.join(self._folder, f"{uuid.uuid4().hex}.parquet")
        table = rows_to_table(rows, self._schema)  # a row the schema refuses is a bug: raised
        try:
            write_parquet_file(path, [table], self._schema, self._folder)
        except Exception as e:  # noqa: BLE001 - a checkpoint is a cache: the run goes on
            _LOG.warning(
                "Could not write a checkpoint of %d rows (%s); the run goes on.", len(rows), e
            )


class WriteCheckpoints(beam.PTransform):
    """Image outcomes -> their rows in checkpoint files, as their batches end."""

    def __init__(self, output: str, run_id: str, schema: pa.Schema, every: int):
        super().__init__()
        self._fn = _Checkpoint(output, run_id, schema, every)

    def expand(self, outcomes):
        return outcomes | beam.ParDo(self._fn)


def salvage_checkpoints(
    output: str, done: frozenset[str], schema: pa.Schema, path: str, run_id: str | None
) -> set[str]:
    """Keeps the checkpointed rows of images not in `done` (a killed run's, never
    finalized) as one results file at `path`, each image's rows once; returns their ids.

    Only those of `transforms.manifest.run_checkpoints(output, run_id)`, run `run_id`'s
    (the run resumed), which decides which checkpoints a run has: none for no run id.

    Called by a --resume with the folder's lock held, before the temp folder is
    cleared; a row group's checkpoint files in memory at a time. An unreadable checkpoint
    file is skipped (its images are redone).
    """
    folder = run_checkpoints(output, run_id)
    if folder is None:
        return set()
    seen = set(done)
    write_parquet_file(
        path, _new_rows(folder, seen, schema), schema, FileSystems.join(output, TEMP_DIR)
    )
    return seen - set(done)


def _new_rows(folder: str, seen: set[str], schema: pa.Schema) -> Iterator[pa.Table]:
    """Each of the checkpoint files' rows in `folder` of images not in `seen`, which it
    then adds."""
    pattern = FileSystems.join(folder, "*.parquet")
    for file in sorted(m.path for m in files.match([pattern])[0].metadata_list):
        try:
            table = _read_checkpoint(file, schema)
        except Exception as e:  # noqa: BLE001 - a checkpoint is a cache: skip it, redo its images
            _LOG.warning("Skipping the unreadable checkpoint %s: %s", file, e)
            continue
        ids = table.column("image_id").to_pylist()
        new = [i for i, image_id in enumerate(ids) if image_id not in seen]
        seen.update(ids)
        if len(new) == len(ids):  # the common case: no copy
            yield table
        elif new:
            yield table.take(pa.array(new, pa.int64()))


def _read_checkpoint(file: str, schema: pa.Schema) -> pa.Table:
    """A checkpoint file's rows as `schema`: the file read whole in one request (a
    batch's rows, small), then parsed from memory; `pq.read_table` with the schema
    only for a file written otherwise. Reading each of thousands of files with
    `pq.read_table` took most of a resume's salvage (1.8 ms against 1.1 ms a file)."""
    with files.open_with_beam(file) as f:
        data = f.read()
    table = pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
    if table.schema.equals(schema):
        return table
    return pq.read_table(pa.BufferReader(data), schema=schema)


def json_temp(path: str) -> str:
    """The file `write_json` writes `path` through: a killed write leaves it beside."""
    return path + ".tmp"


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Writes JSON through Beam's file systems (local or gs://), via a temp file.

    A local file is replaced atomically: a kill leaves the old file or the new
    one, never none (a run whose manifest vanished could not be resumed), and a
    write that fails leaves no partial temp file.
    """
    temp = json_temp(path)
    try:
        with FileSystems.create(temp) as f:
            f.write(json.dumps(payload, indent=2, sort_keys=True, default=str).encode("utf-8"))
    except BaseException:  # a full disk, a quota, a stop: no partial file left behind
        if not files.is_remote(path) and os.path.exists(temp):
            os.remove(temp)
        raise
    if not files.is_remote(path):
        os.replace(temp, path)
        return
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temp], [path])


def write_manifest(output: str, base: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    """Writes the "complete" `<output>/manifest.json` of a run (`base`, the job's) whose
    counts (`COUNT_KEYS`, a missing key 0) are `counts`, and returns it."""
    counts = {key: int(counts.get(key, 0)) for key in COUNT_KEYS}
    manifest = dict(base)
    manifest["counts"] = counts
    # --target top_k writes k rows per image, the other targets one.
    per_image = manifest.get("rows_per_image", 1)
    manifest["all_inputs_accounted_for"] = _accounted(counts) == counts["inputs"]
    manifest["rows_match_target_mode"] = counts["rows"] == counts["images_with_rows"] * per_image
    manifest["status"] = "complete"
    manifest["end_time"] = datetime.datetime.now(datetime.UTC).isoformat()
    if not (manifest["all_inputs_accounted_for"] and manifest["rows_match_target_mode"]):
        _LOG.error("The run's counts do not add up: %s", counts_said(counts, per_image))
    write_json(FileSystems.join(output, MANIFEST_FILE), manifest)
    return manifest


def _accounted(counts: dict[str, int]) -> int:
    """The inputs of a run's `counts` that are accounted for: in rows, errors, or
    skipped as done by an earlier run."""
    return counts["images_with_rows"] + counts["images_with_errors"] + counts["skipped_done_before"]


def counts_said(counts: dict[str, int], per_image: int) -> str:
    """A run's counts (`COUNT_KEYS`, `per_image` rows per image with rows) as messages
    say them, for the two checks its manifest records: "of 5 inputs, 4 are accounted
    for (3 images with rows, 1 with errors, 0 skipped as done by an earlier run); 3 rows
    written, where 3 are expected (1 row per image with rows); 1 error recorded." """
    accounted = _accounted(counts)
    expected = counts["images_with_rows"] * per_image
    return (
        f"of {count(counts['inputs'], 'input')}, {accounted} {_is_are(accounted)} accounted "
        f"for ({count(counts['images_with_rows'], 'image')} with rows, "
        f"{counts['images_with_errors']} with errors, {counts['skipped_done_before']} skipped "
        f"as done by an earlier run); {count(counts['rows'], 'row')} written, where "
        f"{expected} {_is_are(expected)} expected ({count(per_image, 'row')} per image with "
        f"rows); {count(counts['errors'], 'error')} recorded."
    )


def _is_are(number: int) -> str:
    return "is" if number == 1 else "are"


def write_no_errors(output: str) -> None:
    """Writes `<output>/errors/` as a run whose every input was skipped leaves it: one
    errors file of no record, the one Beam's sink writes for none."""
    path = FileSystems.join(output, ERRORS_DIR, f"{SHARD_PREFIX}-00000-of-00001.parquet")
    write_parquet_file(path, [], ERROR_SCHEMA, FileSystems.join(output, TEMP_DIR), keep_empty=True)


class SumCounts(beam.CombineFn):
    """(count key, n) pairs -> {key: the sum of its n}, each of COUNT_KEYS there (0
    when no pair had it), in their order."""

    def create_accumulator(self) -> dict[str, int]:
        return dict.fromkeys(COUNT_KEYS, 0)

    def add_input(self, counts: dict[str, int], pair: tuple[str, int]) -> dict[str, int]:
        key, n = pair
        counts[key] = counts.get(key, 0) + n
        return counts

    def merge_accumulators(self, accumulators: Iterable[dict[str, int]]) -> dict[str, int]:
        total = self.create_accumulator()
        for counts in accumulators:
            for key, n in counts.items():
                total[key] = total.get(key, 0) + n
        return total

    def extract_output(self, counts: dict[str, int]) -> dict[str, int]:
        return counts


class _Manifest(beam.DoFn):
    def __init__(self, output: str, base: dict[str, Any]):
        self._output = output
        self._base = base

    def process(self, counts: dict[str, int], files_written: Sequence[Any] = ()):
        del files_written  # a side input only to come after the writes (`WriteManifest`)
        if self._base.get("run_id") is not None:  # a run that claimed the folder
            # A retry of this step after it wrote the manifest (a worker lost before it
            # committed) finds its own run complete: the same manifest is written again.
            check_still_this_run(self._output, self._base["run_id"], complete_ok=True)
        yield write_manifest(self._output, self._base, counts)


class WriteManifest(beam.PTransform):
    """Counts -> `<output>/manifest.json` with the run's configuration and versions.

    Input: a PCollection of (count key, 1) pairs from every branch.

    Args:
      after: the outputs of the runs' file writes (`WriteResults`,
        `WriteErrors`: their finalized file names). The manifest reads them as
        a side input, so it is written only once every file is in place: a
        "complete" manifest never precedes its rows.
    """

    def __init__(self, output: str, base: dict[str, Any], after: Sequence[Any] = ()):
        super().__init__()
        self._output = output
        self._base = base
        self._after = tuple(after)

    def expand(self, keyed_ones):
        # One combine and a side input: each extra step costs every run (a local
        # one's set-up is mostly Beam's per-step work), so no Create of zeros, no
        # dict-building combine, no count of the files.
        p = keyed_ones.pipeline
        after = self._after or (p | "NoFiles" >> beam.Create([]),)
        written = after | "FilesWritten" >> beam.Flatten()
        return (
            keyed_ones
            | "SumCounts" >> beam.CombineGlobally(SumCounts())
            | "WriteManifestJson"
            >> beam.ParDo(_Manifest(self._output, self._base), beam.pvalue.AsList(written))
        )
