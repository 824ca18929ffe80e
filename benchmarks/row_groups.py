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
from transforms.schema import results_schema  # noqa: E402
from transforms.sinks import writer_options  # noqa: E402

_COLUMNS = ["image_id", "relative_delta", "attribution_error"]
# The sink's groups before 2026-12-05: 64 rows, or 64 MiB, whichever came first.
_OLD_ROWS, _OLD_BYTES = 64, 64 << 20


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
        # The same rows grouped by each rule (the sink's: write_like_sink's defaults).
        limits = {"64 rows": {"max_rows": _OLD_ROWS, "max_bytes": _OLD_BYTES}}
        limits["by bytes (the sink)"] = {}
        paths = {name: os.path.join(folder, f"{i}.parquet") for i, name in enumerate(limits)}
        options = writer_options(results_schema("float32"))
        for name, bounds in limits.items():
            rows = synthetic_rows(args.rows, 224, "none", "float32")
            write_like_sink(paths[name], rows, "float32", **bounds, **options)
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
