"""The bundled offline default: EfficientNet-Lite0 on scikit-image photos, as ./run_local.sh runs it."""

import re

import pandas as pd
import pytest

from pipeline.__main__ import main
from pipeline.summary import print_summary, summary_table
from tests.conftest import cli_args, user_doc_blocks
from transforms.sinks import read_manifest


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("sample") / "out"
    code = main(
        cli_args(runner="DirectRunner", dataset="sample", model="efficientnet_lite0", output=output)
    )
    assert code == 0
    return output


def test_sample_predictions_are_believable(sample_run):
    results = pd.read_parquet(sample_run / "results").set_index("file_name")
    assert 281 <= results.loc["chelsea.png", "predicted_class"] <= 285  # a cat class
    assert {967, 968, 504} & set(results.loc["coffee.png", "top_k_classes"])
    assert results.loc["coffee.png", "predicted_name"] == "espresso"
    assert results.loc["chelsea.png", "label_name"] == "tabby cat"
    assert results.loc["motorcycle_left.png", "top_k_names"][0] in {"moped", "motor scooter"}


def test_sample_accuracy_at_defaults(sample_run):
    columns = ["relative_delta", "attribution_error", "evaluations", "within_tolerance"]
    results = pd.read_parquet(sample_run / "results", columns=columns)
    print(results.describe())
    # Default tolerances: every row refined until its estimated per-pixel error is
    # within 1.5 % and its completeness within 0.5 %, within the budget.
    assert results.within_tolerance.all()
    assert (results.attribution_error <= 0.015).all() and (results.relative_delta <= 0.005).all()
    assert (results.evaluations >= 25).all() and (results.evaluations <= 256).all()
    # A regression guard, not the goal: 128 per image is not met yet (docs/accuracy.md).
    assert results.evaluations.mean() <= 200


def test_sample_summary_table_and_printout(sample_run, capsys):
    table = summary_table(str(sample_run))
    assert list(table.columns) == [
        "file",
        "label",
        "prediction",
        "confidence",
        "relative_delta",
        "attribution_error",
    ]
    assert len(table) == 8
    print_summary(read_manifest(str(sample_run)))
    out = capsys.readouterr().out
    assert f"Results in {sample_run}/results (8 rows)" in out
    assert "chelsea.png" in out and "Egyptian Mau" in out
    assert f"pd.read_parquet('{sample_run}/results'" in out
    assert f"python -m pipeline.report --input {sample_run}" in out


def test_every_readme_python_snippet_runs_on_the_default_run(sample_run, tmp_path, monkeypatch):
    # The README and docs/ promise their examples run as is against ./output/sample: run them
    # in order, in one namespace (as a reader pastes them), from a folder where
    # output/sample is this module's real default run.
    import matplotlib

    matplotlib.use("Agg")
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "sample").symlink_to(sample_run)
    # "Comparing two runs" reads a second one: here the same run (test_pipeline.py
    # runs that snippet on two runs whose maps differ).
    (tmp_path / "output" / "sample_blur").symlink_to(sample_run)
    monkeypatch.chdir(tmp_path)
    snippets = user_doc_blocks("python")
    assert len(snippets) >= 8
    namespace: dict = {}
    for i, (doc, snippet) in enumerate(snippets):
        try:
            exec(compile(snippet, f"{doc} python snippet {i + 1}", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"{doc} snippet {i + 1} fails:\n{snippet}") from e


def test_every_readme_sql_query_runs_on_the_default_run(sample_run, monkeypatch):
    # The DuckDB queries of README and docs/ run as is against ./output/sample too, each statement
    # of each ```sql block (their comments included), giving rows.
    import duckdb

    monkeypatch.chdir(sample_run.parent)
    sample_run.parent.joinpath("output").mkdir(exist_ok=True)
    link = sample_run.parent / "output" / "sample"
    if not link.exists():
        link.symlink_to(sample_run)
    blocks = user_doc_blocks("sql")
    code = [(doc, re.sub(r"--.*", "", block)) for doc, block in blocks]  # a comment may hold ';'
    queries = [(doc, q) for doc, block in code for q in block.split(";") if q.strip(" \n")]
    assert len(queries) >= 4
    for doc, query in queries:
        try:
            duckdb.sql(query).fetchall()
        except Exception as e:
            raise AssertionError(f"{doc} query fails:\n{query}") from e
