"""The end-of-run summary printed by `python -m pipeline`."""

from __future__ import annotations

from typing import Any

import pandas as pd
from apache_beam.io.filesystems import FileSystems

__all__ = ["print_summary", "summary_table"]

_COLUMNS = ["file_name", "label_name", "predicted_name", "top_k_probs", "relative_delta"]


def summary_table(output: str, limit: int = 20) -> pd.DataFrame:
    """file, label, prediction, confidence and relative delta of the first rows."""
    frame = pd.read_parquet(FileSystems.join(output, "results"), columns=_COLUMNS)
    frame = frame.sort_values("file_name").head(limit)
    return pd.DataFrame(
        {
            "file": frame["file_name"],
            "label": frame["label_name"].fillna("-"),
            "prediction": frame["predicted_name"],
            "confidence": frame["top_k_probs"].map(lambda p: f"{p[0]:.1%}"),
            "relative_delta": frame["relative_delta"].map(lambda d: f"{d:.3%}"),
        }
    )


def print_summary(manifest: dict[str, Any]) -> None:
    """Prints where the results are, a short table and how to read them."""
    output = manifest["output"]
    counts = manifest["counts"]
    print()
    print(
        f"Results in {output}/results ({counts['rows']} rows), errors in {output}/errors "
        f"({counts['errors']}), manifest {output}/manifest.json; {counts['inputs']} inputs."
    )
    if counts["rows"]:
        print()
        print(summary_table(output).to_string(index=False))
    print()
    print("Read them with pandas:")
    print(
        f"  python -c \"import pandas as pd; print(pd.read_parquet('{output}/results', "
        "columns=['file_name', 'predicted_name', 'relative_delta']))\""
    )
    print("Render the audit report (one self-contained HTML page):")
    print(f"  python -m pipeline.report --input {output} --output {output}/report.html")
