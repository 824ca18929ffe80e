"""Writing results, errors and the run manifest."""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import filebasedsink, parquetio
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from transforms.schema import ERROR_SCHEMA, rows_to_table

__all__ = [
    "BYTES_PER_GROUP",
    "COUNT_KEYS",
    "ROWS_PER_GROUP",
    "WriteErrors",
    "WriteManifest",
    "WriteResults",
    "read_manifest",
    "write_json",
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
# Rows per Parquet row group: large enough for fast scans, small enough that
# a worker holds a group of full attributions (about 0.6 MB each) in memory.
ROWS_PER_GROUP = 64
BYTES_PER_GROUP = 64 << 20
_FLOAT_ARRAYS = ("attributions", "path_alphas", "path_scores", "deletion_curve", "insertion_curve")


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
        leaf for leaf, field in zip(leaves, schema, strict=True)
        if leaf in arrays and pa.types.is_float32(field.type.value_type)
    ]  # fmt: skip
    return {
        "use_dictionary": [leaf for leaf in leaves if leaf not in arrays],
        "use_byte_stream_split": split,
    }


class _ResultsSink(parquetio._ParquetSink):
    """Beam's Parquet sink (temp files, atomic finalize) with `writer_options`."""

    def open(self, temp_path):
        self._file_handle = filebasedsink.FileBasedSink.open(self, temp_path)
        return pq.ParquetWriter(
            self._file_handle,
            self._schema,
            compression=self._codec,
            use_compliant_nested_type=False,
            **writer_options(self._schema),
        )


def _row_bytes(row: dict[str, Any]) -> int:
    array = row.get("attributions")
    return 1024 + (array.nbytes if isinstance(array, np.ndarray) else 0)


class _GroupRows(beam.DoFn):
    """Buffers a bundle's rows into groups of bounded size: one Parquet row group each."""

    def __init__(self, max_rows: int, max_bytes: int):
        self._max_rows = max_rows
        self._max_bytes = max_bytes

    def start_bundle(self):
        self._rows, self._bytes = [], 0

    def process(self, row: dict[str, Any]):
        self._rows.append(row)
        self._bytes += _row_bytes(row)
        if len(self._rows) >= self._max_rows or self._bytes >= self._max_bytes:
            yield self._rows
            self._rows, self._bytes = [], 0

    def finish_bundle(self):
        if self._rows:
            yield WindowedValue(self._rows, GlobalWindow().max_timestamp(), [GlobalWindow()])
        self._rows, self._bytes = [], 0


class WriteResults(beam.PTransform):
    """Result rows -> `<output>/results/<prefix>-*.parquet` (zstd, one schema)."""

    def __init__(self, output: str, schema: pa.Schema, prefix: str = "part"):
        super().__init__()
        self._output = output
        self._schema = schema
        self._prefix = prefix

    def expand(self, rows):
        schema = self._schema
        return (
            rows
            | "GroupRows" >> beam.ParDo(_GroupRows(ROWS_PER_GROUP, BYTES_PER_GROUP))
            | "RowsToArrow" >> beam.Map(rows_to_table, schema=schema)
            | "WriteResultsParquet"
            >> beam.io.Write(
                _ResultsSink(
                    FileSystems.join(self._output, "results", self._prefix),
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
            )
        )


class WriteErrors(beam.PTransform):
    """Error records -> `<output>/errors/part-*.parquet`."""

    def __init__(self, output: str):
        super().__init__()
        self._output = output

    def expand(self, errors):
        return errors | "WriteErrorsParquet" >> parquetio.WriteToParquet(
            FileSystems.join(self._output, "errors", "part"),
            schema=ERROR_SCHEMA,
            codec="zstd",
            file_name_suffix=".parquet",
        )


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Writes JSON through Beam's file systems (local or gs://), via a temp file."""
    temp = path + ".tmp"
    with FileSystems.create(temp) as f:
        f.write(json.dumps(payload, indent=2, sort_keys=True, default=str).encode("utf-8"))
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temp], [path])


def read_manifest(output: str) -> dict[str, Any]:
    """The manifest of a finished run in `output`."""
    with FileSystems.open(FileSystems.join(output, "manifest.json")) as f:
        return json.loads(f.read().decode("utf-8"))


class _Manifest(beam.DoFn):
    def __init__(self, output: str, base: dict[str, Any]):
        self._output = output
        self._base = base

    def process(self, counts: dict[str, int]):
        counts = {key: int(counts.get(key, 0)) for key in COUNT_KEYS}
        accounted = (
            counts["images_with_rows"]
            + counts["images_with_errors"]
            + counts["skipped_done_before"]
        )
        manifest = dict(self._base)
        manifest["counts"] = counts
        manifest["all_inputs_accounted_for"] = accounted == counts["inputs"]
        # --target top_k writes k rows per image, the other targets one.
        expected_rows = counts["images_with_rows"] * manifest.get("rows_per_image", 1)
        manifest["rows_match_target_mode"] = counts["rows"] == expected_rows
        manifest["status"] = "complete"
        manifest["end_time"] = datetime.datetime.now(datetime.UTC).isoformat()
        if accounted != counts["inputs"] or counts["rows"] != expected_rows:
            _LOG.error("Inputs not accounted for: %s (rows expected: %d).", counts, expected_rows)
        write_json(FileSystems.join(self._output, "manifest.json"), manifest)
        yield manifest


class WriteManifest(beam.PTransform):
    """Counts -> `<output>/manifest.json` with the run's configuration and versions.

    Input: a PCollection of (count key, 1) pairs from every branch.
    """

    def __init__(self, output: str, base: dict[str, Any]):
        super().__init__()
        self._output = output
        self._base = base

    def expand(self, keyed_ones):
        zeros = keyed_ones.pipeline | "ZeroCounts" >> beam.Create([(k, 0) for k in COUNT_KEYS])
        return (
            (keyed_ones, zeros)
            | "AllCounts" >> beam.Flatten()
            | "SumCounts" >> beam.CombinePerKey(sum)
            | "CountsToDict" >> beam.combiners.ToDict()
            | "WriteManifestJson" >> beam.ParDo(_Manifest(self._output, self._base))
        )
