"""Metadata reads of many small rows: row groups of 64 rows against the sink's rule.

    python -m benchmarks.row_groups [--rows 200000] [--repeats 3]

Writes `--rows` synthetic rows of `--attributions none` (`storage.synthetic_rows`)
twice with the sink's writer options: in row groups of 64 rows (the rule before
2026-12-05) and as `write_like_sink` groups them now (by bytes, `BYTES_PER_GROUP`,
at most `ROWS_PER_GROUP` rows). Then times a 3-column `pd.read_parquet` of each,
interleaved, and prints the footer sizes and read times with ratios against the
64-row file, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.storage import synthetic_rows, write_like_sink  # noqa: E402
from transforms.schema import results_schema, rows_to_table  # noqa: E402
from transforms.sinks import writer_options  # noqa: E402

_COLUMNS = ["image_id", "relative_delta", "attribution_error"]
_OLD_GROUP = 64


def _write_64(path: str, rows: int) -> None:
    """The rows in groups of 64, as the sink wrote them before."""
    schema = results_schema("float32")
    options = writer_options(schema)
    with pq.ParquetWriter(
        path, schema, compression="zstd", use_compliant_nested_type=False, **options
    ) as writer:
        group = []
        for row in synthetic_rows(rows, 224, "none", "float32"):
            group.append(row)
            if len(group) == _OLD_GROUP:
                writer.write_table(rows_to_table(group, schema))
                group = []
        if group:
            writer.write_table(rows_to_table(group, schema))


def _reads(paths: dict[str, str], repeats: int) -> dict[str, float]:
    """Median seconds of a 3-column read of each file, the files interleaved."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, path in paths.items():
            start = time.perf_counter()
            pd.read_parquet(path, columns=_COLUMNS)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="Synthetic rows.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed reads per file (median).")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        paths = {"64 rows": os.path.join(folder, "64.parquet")}
        paths["by bytes (the sink)"] = os.path.join(folder, "sink.parquet")
        _write_64(paths["64 rows"], args.rows)
        rows = synthetic_rows(args.rows, 224, "none", "float32")
        schema = results_schema("float32")
        write_like_sink(paths["by bytes (the sink)"], rows, "float32", **writer_options(schema))
        medians = _reads(paths, args.repeats)
        print(f"{args.rows:,} rows of --attributions none, {args.repeats} interleaved rounds")
        print("| row groups | groups | footer | file | 3-column read, median | vs 64 rows |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, path in paths.items():
            meta = pq.ParquetFile(path).metadata
            ratio = medians[name] / medians["64 rows"]
            print(
                f"| {name} | {meta.num_row_groups:,} | {meta.serialized_size / 2**20:.1f} MB | "
                f"{os.path.getsize(path) / 2**20:.1f} MB | {medians[name]:.3f} s | {ratio:.3f}x |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
