"""Storage cost of the result formats, and how fast metadata reads stay.

    python benchmarks/storage.py [--rows 10000] [--side 224] [--compare OUTPUT]

For each `--attributions full|pixel|none` x `--attribution_dtype float16|float32`
it writes `--rows` synthetic result rows with the project's own `rows_to_table`
and schema, through a `pyarrow.parquet.ParquetWriter` set up as Beam's
`WriteToParquetBatched` sets it up in `transforms.sinks.WriteResults` (zstd, one
row group per group of the sink's size), then measures:

* bytes per row on disk;
* the time to read only the metadata columns into pandas (the README's
  `pd.read_parquet(..., columns=[...])`), and the time to scan every column
  (decoded a row group at a time, so full float32 attributions of 10,000 rows need
  not fit in memory);

and prints one table with ratios against references measured in the same run:
sizes against `full/float32` (the default), metadata reads against `none/float32`
(no arrays at all) and against a full scan of the same file.

Synthetic attributions imitate real ones: heavy-tailed values, exact zeros in
the black padding of non-square images (IG is 0 where image and black baseline
agree). `--compare OUTPUT` adds the bytes per row of a real run.
Files live in a temporary folder (page cache warm, as right after a job), all
of them at once, since the reads are interleaved: about 1.6 MB per row over the
eight files at 224 x 224 (16 GB at the default 10,000 rows; `--folder` chooses
where), deleted when the reads are timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transforms import faithfulness, labels
from transforms.schema import METADATA_COLUMNS, results_schema, rows_to_table
from transforms.sinks import BYTES_PER_GROUP, ROWS_PER_GROUP, row_bytes, writer_options

FORMATS = [
    ("full", "float32"),
    ("full", "float16"),
    ("pixel", "float32"),
    ("pixel", "float16"),
    ("none", "float32"),
    ("none", "float16"),
]
_POOL = 16  # distinct attribution arrays, cycled (a row group never repeats one)
_PATH_POINTS = 64


def _attribution_pool(side: int, rng: np.random.Generator) -> list[np.ndarray]:
    """float32 [side, side, 3] arrays: heavy-tailed noise, zero in padding bands."""
    pool = []
    for _ in range(_POOL):
        values = rng.standard_normal((side, side, 3)) * np.exp(rng.normal(0, 1.5, (side, side, 1)))
        values *= 1e-3
        aspect = rng.uniform(0.6, 1.0)  # content height / width of a landscape photo
        band = int(round(side * (1 - aspect) / 2))
        if band:
            values[:band] = 0.0
            values[side - band :] = 0.0
        pool.append(values.astype(np.float32))
    return pool


def synthetic_rows(
    count: int, side: int, attributions: str, dtype: str, seed: int = 0
) -> Iterator[dict]:
    """Result rows as the model handler makes them (same keys, types and array shapes)."""
    rng = np.random.default_rng(seed)
    names = labels.imagenet_class_names()
    pool = _attribution_pool(side, rng) if attributions != "none" else []
    alphas = np.sort(rng.uniform(0, 1, _PATH_POINTS)).astype(np.float32)
    for i in range(count):
        top = rng.choice(1000, size=5, replace=False).astype(np.int64)
        probs = np.sort(rng.dirichlet(np.ones(5)))[::-1].astype(np.float32)
        label = int(rng.integers(0, 1000))
        target_score = float(rng.normal(8, 2))
        baseline_score = float(rng.normal(0, 1))
        stored = None
        if attributions != "none":
            full = pool[i % _POOL]
            stored = (full.sum(axis=-1) if attributions == "pixel" else full).astype(dtype)
        yield {
            "image_id": f"imagenet_a/imagenet_a-test.tfrecord-{i // 1000:05d}-of-00008__{i}",
            "file_name": f"{i:07d}.jpg",
            "label": label,
            "label_name": names[label],
            "predicted_class": int(top[0]),
            "predicted_name": names[top[0]],
            "top_k_classes": top,
            "top_k_names": [names[c] for c in top],
            "top_k_probs": probs,
            "target_class": int(top[0]),
            "target_name": names[top[0]],
            "target_score": target_score,
            "baseline_score": baseline_score,
            "attribution_sum": target_score - baseline_score + float(rng.normal(0, 0.01)),
            "completeness_delta": float(rng.normal(0, 0.01)),
            "relative_delta": float(abs(rng.normal(0, 0.004))),
            "steps": 64,
            "method": "gausslegendre",
            "score": "raw",
            "baseline": "black",
            "evaluations": 64,
            "attribution_error": float(abs(rng.normal(0, 0.01))),
            "within_tolerance": True,
            "path_alphas": alphas,
            "path_scores": np.linspace(baseline_score, target_score, _PATH_POINTS).astype(
                np.float32
            ),
            **faithfulness.row_columns(None, 0),  # faithfulness off: nulls
            "attribution_shape": None if stored is None else np.asarray(stored.shape, np.int32),
            "attributions": stored,
        }


def write_like_sink(
    path: str,
    rows: Iterator[dict],
    dtype: str,
    *,
    max_rows: int = ROWS_PER_GROUP,
    max_bytes: int = BYTES_PER_GROUP,
    **options,
) -> int:
    """Writes rows as `WriteResults` does: groups of the sink's size (`max_rows` rows or
    `max_bytes` bytes by `row_bytes`, whichever comes first), one row group each.

    `options`: the `ParquetWriter` options (the sink's are `writer_options(schema)`).
    """
    schema = results_schema(dtype)
    count = 0
    with pq.ParquetWriter(
        path, schema, compression="zstd", use_compliant_nested_type=False, **options
    ) as writer:
        group, size = [], 0
        for row in rows:
            group.append(row)
            size += row_bytes(row)
            if len(group) >= max_rows or size >= max_bytes:
                writer.write_table(rows_to_table(group, schema))
                count += len(group)
                group, size = [], 0
        if group:
            writer.write_table(rows_to_table(group, schema))
            count += len(group)
    return count


def _timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time in seconds of `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def read_metadata(path: str) -> pd.DataFrame:
    return pd.read_parquet(path, columns=list(METADATA_COLUMNS))


def scan_everything(path: str) -> int:
    """Decodes every column of every row group, one group at a time (as a worker holds
    them); returns the rows seen."""
    file = pq.ParquetFile(path)
    return sum(file.read_row_group(i).num_rows for i in range(file.num_row_groups))


def _write_variant(
    folder: str, rows: int, side: int, attributions: str, dtype: str, writer: str
) -> dict[str, Any]:
    """Writes one variant's file (`writer` "sink": the job's options; "plain": none)
    and returns its record: sizes, row groups, write time and path."""
    path = os.path.join(folder, f"{attributions}-{dtype}-{writer}.parquet")
    options = writer_options(results_schema(dtype)) if writer == "sink" else {}
    start = time.perf_counter()
    written = write_like_sink(
        path, synthetic_rows(rows, side, attributions, dtype), dtype, **options
    )
    size = os.path.getsize(path)
    record = {
        "attributions": attributions,
        "dtype": dtype,
        "writer": writer,
        "rows": written,
        "row_groups": pq.ParquetFile(path).metadata.num_row_groups,
        "bytes_per_row": size / written,
        "file_mb": size / 1e6,
        "write_s": time.perf_counter() - start,
        "path": path,
    }
    wrote = f"  wrote {attributions}/{dtype} ({writer}): {size / written:,.0f} B/row"
    print(wrote, file=sys.stderr, flush=True)
    return record


def measure(rows: int, side: int, repeats: int, folder: str) -> pd.DataFrame:
    """Writes every variant, then times reads in interleaved rounds.

    Interleaving (round 1: every file, round 2: every file, ...) and taking
    medians keeps the ratios fair when the machine's load changes meanwhile.
    """
    variants = [(a, d, "sink") for a, d in FORMATS]
    variants += [("full", "float32", "plain"), ("full", "float16", "plain")]
    records = [_write_variant(folder, rows, side, *variant) for variant in variants]
    metadata = {r["path"]: [] for r in records}
    scans = {r["path"]: [] for r in records}
    read_metadata(records[0]["path"])  # warm-up: first-call costs of pandas and pyarrow
    for round_ in range(repeats):
        for r in records:
            metadata[r["path"]].append(_timed(lambda p=r["path"]: read_metadata(p), 1))
        for r in records:
            scans[r["path"]].append(_timed(lambda p=r["path"]: scan_everything(p), 1))
        print(f"  read round {round_ + 1} of {repeats}", file=sys.stderr, flush=True)
    for r in records:
        r["metadata_read_s"] = statistics.median(metadata[r["path"]])
        r["full_scan_s"] = statistics.median(scans[r["path"]])
        os.remove(r.pop("path"))
    table = pd.DataFrame.from_records(records)

    def reference(attributions: str, column: str) -> float:
        sink_float32 = (table.dtype == "float32") & (table.writer == "sink")
        chosen = table[(table.attributions == attributions) & sink_float32]
        return float(chosen[column].iloc[0])

    table["size_vs_full_f32"] = table["bytes_per_row"] / reference("full", "bytes_per_row")
    table["metadata_vs_none"] = table["metadata_read_s"] / reference("none", "metadata_read_s")
    table["metadata_vs_full_scan"] = table["metadata_read_s"] / table["full_scan_s"]
    return table


def real_bytes_per_row(output: str) -> tuple[int, float]:
    """Rows and bytes per row of a real run's `<output>/results`."""
    files = [
        os.path.join(output, "results", f) for f in os.listdir(os.path.join(output, "results"))
    ]
    files = [f for f in files if f.endswith(".parquet")]
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return rows, sum(os.path.getsize(f) for f in files) / max(rows, 1)


def markdown(table: pd.DataFrame, side: int) -> str:
    lines = [
        f"| `--attributions` | `--attribution_dtype` | bytes / row | vs full/float32 | "
        f"metadata read ({int(table['rows'].iloc[0]):,} rows) | vs none | full scan | "
        "metadata / full scan |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table.itertuples():
        plain = " (pyarrow defaults)" if r.writer == "plain" else ""
        lines.append(
            f"| {r.attributions}{plain} | {r.dtype} | {r.bytes_per_row:,.0f} | {r.size_vs_full_f32:.3f} | "
            f"{r.metadata_read_s * 1e3:,.0f} ms | {r.metadata_vs_none:.2f}x | {r.full_scan_s:.2f} s | "
            f"{r.metadata_vs_full_scan:.3f} |"
        )
    raw = side * side * 3 * 4
    lines.append("")
    lines.append(f"Raw float32 attributions of a {side}x{side}x3 image: {raw:,} bytes.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000, help="Synthetic rows per format.")
    parser.add_argument(
        "--side", type=int, default=224, help="Image side (attributions side x side x 3)."
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="Timed reads per measurement (median)."
    )
    parser.add_argument(
        "--folder",
        default=None,
        help="Where to write, all files at once, created if missing (default: a temp folder).",
    )
    parser.add_argument(
        "--compare", default=None, help="A real run's --output folder to compare with."
    )
    args = parser.parse_args(argv)
    if args.folder:
        os.makedirs(args.folder, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        table = measure(args.rows, args.side, args.repeats, folder)
    print(markdown(table, args.side))
    if args.compare:
        rows, per_row = real_bytes_per_row(args.compare)
        print(f"Real run {args.compare}: {rows} rows, {per_row:,.0f} bytes / row.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
