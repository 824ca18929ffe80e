"""Result rows and output folders of known content, as the job writes them, for the
read-back, report and plot tests (the `folder_run` fixture in conftest.py is one)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import SIZE
from transforms import faithfulness
from transforms.schema import results_schema, rows_to_table

SIDE = 4  # attributions of the hand-made rows: [4, 4, 3]


def known_attributions(seed: int, mode: str = "full") -> np.ndarray:
    """float32 [4, 4, 3] (or the [4, 4] channel sum): distinct, signed, exactly representable."""
    values = (np.arange(SIDE * SIDE * 3, dtype=np.float32) - 20 + seed) / 8
    values = values.reshape(SIDE, SIDE, 3)
    return values.sum(axis=-1) if mode == "pixel" else values


def make_row(
    image_id: str,
    label: int | None,
    predicted: int,
    prob: float,
    relative: float,
    target: int | None = None,
    mode: str = "full",
    dtype: str = "float32",
    seed: int = 0,
) -> dict:
    """A result row as the model handler makes it (names are the class index as text)."""
    target = predicted if target is None else target
    top = np.array([predicted, (predicted + 1) % 1000, (predicted + 2) % 1000], dtype=np.int64)
    stored = None if mode == "none" else known_attributions(seed, mode).astype(dtype)
    return {
        "image_id": image_id,
        "file_name": image_id.rsplit("/", 1)[-1],
        "label": label,
        "label_name": None if label is None else f"class {label}",
        "predicted_class": predicted,
        "predicted_name": f"class {predicted}",
        "top_k_classes": top,
        "top_k_names": [f"class {c}" for c in top],
        "top_k_probs": np.array([prob, (1 - prob) / 2, (1 - prob) / 4], dtype=np.float32),
        "target_class": target,
        "target_name": f"class {target}",
        "target_score": 5.0,
        "baseline_score": 1.0,
        "attribution_sum": 4.0 + relative * 4.0,
        "completeness_delta": relative * 4.0,
        "relative_delta": relative,
        "steps": 8,
        "method": "gausslegendre",
        "score": "raw",
        "baseline": "black",
        "evaluations": 8,
        "attribution_error": relative,
        "within_tolerance": relative <= 0.01,
        "path_alphas": np.array([0.9, 0.1, 0.5], dtype=np.float32),  # unsorted on purpose
        "path_scores": np.array([4.9, 1.5, 3.0], dtype=np.float32),
        **faithfulness.row_columns(None, 0),  # faithfulness off: nulls
        "attribution_shape": None if stored is None else np.asarray(stored.shape, np.int32),
        "attributions": stored,
    }


def _model_entry(image_size: int) -> dict:
    """The manifest's "model" of the tiny linear Keras model."""
    return {
        "reference": "linear.keras",
        "kind": "keras",
        "location": "/m/linear.keras",
        "image_size": image_size,
        "input_range": [0.0, 1.0],
        "num_outputs": 1000,
        "label_offset": 0,
        "identity": "sha256:" + "ab" * 32,
    }


def _config_entry(dtype: str, attributions: str, baselines_: tuple[str, ...]) -> dict:
    """The manifest's "config": the job's settings, some of them chosen by the test."""
    return {
        "attribution_dtype": dtype,
        "attributions": attributions,
        "baselines": list(baselines_),
        "method": "gausslegendre",
        "steps": 8,
        "max_steps": 512,
        "score": "raw",
        "seed": 0,
        "store_path": True,
        "target": "predicted",
        "tolerance": 0.0125,
        "estimate_bound": 0.01,  # the job's: --tolerance over the estimate's margin
        "completeness_tolerance": 0.01,
        "faithfulness_pixels": "own",  # the job's: a padded image's own pixels are ranked
        "faithfulness_ties": "control",  # the job's: equal values ordered as the control
        "top_k": 3,
    }


def write_output(
    output,
    rows_per_file: list[list[dict]],
    dataset: str,
    dtype: str = "float32",
    attributions: str = "full",
    image_size: int = SIZE,
    baselines_: tuple[str, ...] = ("black",),
    split: str | None = None,
) -> str:
    """An output folder as the job writes it: zstd Parquet shards, an errors file, a manifest."""
    schema = results_schema(dtype)
    (output / "results").mkdir(parents=True)
    (output / "errors").mkdir()
    for i, rows in enumerate(rows_per_file):
        path = output / "results" / f"part-{i:05d}-of-{len(rows_per_file):05d}.parquet"
        with pq.ParquetWriter(path, schema, compression="zstd") as writer:
            writer.write_table(rows_to_table(rows, schema))
    manifest = {
        "dataset": dataset,
        "split": split,
        "model": _model_entry(image_size),
        "config": _config_entry(dtype, attributions, baselines_),
        "counts": {
            "inputs": 5,
            "rows": sum(map(len, rows_per_file)),
            "errors": 1,
            "images_with_rows": 4,
            "images_with_errors": 1,
        },
        "all_inputs_accounted_for": True,
        "start_time": "2026-01-01T10:00:00+00:00",
        "end_time": "2026-01-01T10:01:30+00:00",
        "versions": {"python": "3.11"},
        "output": str(output),
        "command": ["pipeline", "--dataset", dataset],
    }
    (output / "manifest.json").write_text(json.dumps(manifest))
    broken = {
        "image_id": "broken.jpg",
        "file_name": "broken.jpg",
        "stage": "decode",
        "error": "broken image: truncated",
    }
    errors = pd.DataFrame([broken])
    errors.to_parquet(output / "errors" / "part-00000-of-00001.parquet")
    return str(output)


#: Result columns added after the first versions of the job: an output written before
#: them has none (`attribution_error`; the faithfulness checks' AUCs and curves).
LATER_COLUMNS = ("attribution_error", *faithfulness.COLUMNS)


def as_older_version(
    output: str,
    columns: tuple[str, ...] = LATER_COLUMNS,
    manifest_keys: tuple[str, ...] = (
        "estimate_bound",
        "completeness_tolerance",
        "faithfulness",
        "faithfulness_steps",
    ),
) -> None:
    """Rewrites every results file of `output` without `columns`, and its manifest's
    "config" without `manifest_keys`: the output of a version of the job before them."""
    for path in sorted(Path(output, "results").glob("*.parquet")):
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(list(columns)), path, compression="zstd")
    manifest_path = Path(output, "manifest.json")
    manifest = json.loads(manifest_path.read_text())
    for key in manifest_keys:
        manifest["config"].pop(key, None)
    manifest_path.write_text(json.dumps(manifest))


def regroup(output: str, image_ids: list[str], rows_per_group: int) -> Path:
    """Rewrites the results of `output` as one file, its rows in the order of
    `image_ids`, `rows_per_group` rows to a row group; returns the file's path."""
    parts = sorted(Path(output, "results").glob("part-*.parquet"))
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    order = table["image_id"].to_pylist()
    table = table.take([order.index(image_id) for image_id in image_ids])
    for path in parts:
        path.unlink()
    path = Path(output, "results", "part-00000-of-00001.parquet")
    pq.write_table(table, path, row_group_size=rows_per_group, compression="zstd")
    return path


def damage_arrays(path: Path, groups: list[int]) -> None:
    """Overwrites the attributions' column chunk of these row groups of a results file
    with garbage: a read that decodes them fails."""
    metadata = pq.ParquetFile(path).metadata
    column = metadata.schema.to_arrow_schema().get_field_index("attributions")
    data = bytearray(path.read_bytes())
    for group in groups:
        chunk = metadata.row_group(group).column(column)
        assert chunk.path_in_schema.startswith("attributions")
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        data[start : start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    path.write_bytes(bytes(data))
