"""The one Parquet schema of result rows, of error records, and conversion of rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = [
    "ERROR_SCHEMA",
    "METADATA_COLUMNS",
    "results_schema",
    "rows_to_table",
]


def results_schema(attribution_dtype: str = "float32") -> pa.Schema:
    """Schema of `<output>/results/`: one row per image and target.

    Metadata columns come first; the large `attributions` column is last so
    that readers projecting metadata never touch it.
    """
    value = pa.float16() if attribution_dtype == "float16" else pa.float32()
    return pa.schema(
        [
            ("image_id", pa.string()),
            ("file_name", pa.string()),
            ("label", pa.int64()),
            ("label_name", pa.string()),
            ("predicted_class", pa.int64()),
            ("predicted_name", pa.string()),
            ("top_k_classes", pa.list_(pa.int64())),
            ("top_k_names", pa.list_(pa.string())),
            ("top_k_probs", pa.list_(pa.float32())),
            ("target_class", pa.int64()),
            ("target_name", pa.string()),
            ("target_score", pa.float64()),
            ("baseline_score", pa.float64()),
            ("attribution_sum", pa.float64()),
            ("completeness_delta", pa.float64()),
            ("relative_delta", pa.float64()),
            ("attribution_error", pa.float64()),
            ("steps", pa.int64()),
            ("method", pa.string()),
            # The contract's evaluations, within_tolerance and AUCs, with extensions of
            # it (score, baseline, path_*, *_curve); the order is fixed, not a grouping.
            ("score", pa.string()),
            ("baseline", pa.string()),
            ("evaluations", pa.int64()),
            ("within_tolerance", pa.bool_()),
            ("path_alphas", pa.list_(pa.float32())),
            ("path_scores", pa.list_(pa.float32())),
            ("deletion_auc", pa.float64()),
            ("insertion_auc", pa.float64()),
            ("deletion_auc_random", pa.float64()),
            ("insertion_auc_random", pa.float64()),
            ("deletion_curve", pa.list_(pa.float32())),
            ("insertion_curve", pa.list_(pa.float32())),
            ("attribution_shape", pa.list_(pa.int32())),
            ("attributions", pa.list_(value)),
        ],
        metadata={b"ig_audit.schema_version": b"1"},
    )


METADATA_COLUMNS: tuple[str, ...] = tuple(
    name for name in results_schema().names if name != "attributions"
)

ERROR_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("file_name", pa.string()),
        ("stage", pa.string()),
        ("error", pa.string()),
    ]
)


def _list_column(values: Sequence[np.ndarray | None], value_type: pa.DataType) -> pa.Array:
    """Variable-length numeric lists without a Python-level loop over elements."""
    lengths = np.array([0 if v is None else v.size for v in values], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    dtype = value_type.to_pandas_dtype()
    parts = [np.asarray(v, dtype=dtype).ravel() for v in values if v is not None]
    flat = np.concatenate(parts) if parts else np.empty(0, dtype)
    mask = pa.array([v is None for v in values])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=value_type), mask=mask)


def rows_to_table(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Result rows (dicts; array columns as NumPy arrays or None) -> a Table of `schema`.

    Each row must have exactly the schema's keys: a misspelt key would otherwise
    write an all-null column and drop the value without a word.

    Raises:
      ValueError: a row with keys the schema lacks or without some of its columns.
    """
    names = set(schema.names)
    for row in rows:
        if row.keys() != names:
            extra, missing = sorted(row.keys() - names), sorted(names - row.keys())
            raise ValueError(
                f"result row {row.get('image_id')!r} does not match the results schema: "
                f"keys not in the schema {extra}, schema columns missing {missing}"
            )
    columns = []
    for field in schema:
        values = [row.get(field.name) for row in rows]
        value_type = field.type.value_type if pa.types.is_list(field.type) else None
        if value_type is not None and (
            pa.types.is_floating(value_type) or pa.types.is_integer(value_type)
        ):
            columns.append(_list_column(values, value_type))
        else:
            columns.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)
