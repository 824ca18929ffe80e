"""End-to-end DirectRunner runs writing Parquet to tmp_path, read back with pandas."""

import json
import os
import re
import shutil
import zipfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import run
from pipeline.__main__ import main
from tests.conftest import SIZE, WNID_CAT, cli_args, user_doc_blocks, write_image
from transforms.schema import ERROR_SCHEMA, results_schema


def _run(image_folder, model, output, *flags):
    args = cli_args(
        runner="DirectRunner", dataset=image_folder["root"], model=model, output=output, steps=4
    )
    return run([*args, *flags], save_main_session=False)


def _check_linear_row(row, pixels: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> None:
    """A riemann_left row of the linear model: its prediction and its exact IG (x * w)."""
    x = pixels.astype(np.float32) / 255.0
    logits = x.reshape(-1) @ weights + bias
    assert row.predicted_class == int(np.argmax(logits))
    assert row.target_class == row.predicted_class
    assert row.top_k_classes.tolist() == np.argsort(-logits)[:5].tolist()
    np.testing.assert_allclose(row.target_score, logits[row.target_class], rtol=1e-5)
    np.testing.assert_allclose(row.baseline_score, bias[row.target_class], rtol=1e-5)
    assert list(row.attribution_shape) == [SIZE, SIZE, 3]
    attributions = np.asarray(row.attributions).reshape(row.attribution_shape)
    expected = x * weights[:, row.target_class].reshape(SIZE, SIZE, 3)
    np.testing.assert_allclose(attributions, expected, rtol=1e-4, atol=1e-6)
    assert abs(row.completeness_delta) < 1e-4 and row.relative_delta < 1e-4
    assert row.steps == 4 and row.method == "riemann_left" and row.within_tolerance
    assert row.predicted_name and row.top_k_names[0] == row.predicted_name


def test_run_from_python_takes_paths_and_numbers_as_the_command_line_would(
    image_folder, linear_keras, tmp_path
):
    """A notebook's `run([..., "--output", tmp_path / "out", "--steps", 4])`: a path and
    a number were a TypeError from a regular expression ('expected string or
    bytes-like object, got PosixPath')."""
    folder = tmp_path / "images"  # image_folder's, as a pathlib.Path
    args = ["--dataset", folder, "--model", linear_keras, "--output", tmp_path / "out"]
    manifest = run([*args, "--steps", 4, "--tolerance", 0.0], save_main_session=False)
    assert manifest["counts"]["rows"] == len(image_folder["pixels"])
    assert manifest["command"][3:] == [*map(str, args), "--steps", "4", "--tolerance", "0.0"]
    results = pd.read_parquet(tmp_path / "out" / "results", columns=["steps"])
    assert set(results.steps) == {4}


def test_run_from_python_takes_numpy_numbers_as_the_numbers_they_are():
    # A notebook's `for steps in np.arange(4, 64, 8): run([..., "--steps", steps])` was
    # refused: "argv holds np.int64(4) (int64); give flags and values as strings, paths
    # or numbers".
    from pipeline.options import check_flags  # noqa: PLC0415

    argv = ["--steps", np.int64(4), "--tolerance", np.float32(0.5), "--seed", np.int32(-1)]
    assert check_flags(argv) == ["--steps", "4", "--tolerance", "0.5", "--seed=-1"]
    assert check_flags(["--tolerance", np.float64(0.25)]) == ["--tolerance", "0.25"]
    with pytest.raises(TypeError, match=r"argv holds np.True_ \(bool\)"):
        check_flags(["--overwrite", np.True_])


@pytest.mark.parametrize(
    "argv, message",
    [
        ("--dataset sample --output out", r"not one string; shlex.split"),
        (["--output", "out", "--overwrite", True], r"argv holds True \(bool\)"),
    ],
)
def test_run_from_python_refuses_argv_that_is_not_flags_naming_it(argv, message, tmp_path):
    # One string was read character by character: 'unknown flag -'.
    with pytest.raises(TypeError, match=message):
        run(argv)


def test_end_to_end_linear_model_gives_exact_attributions(
    image_folder, linear_keras, linear_weights, tmp_path
):
    manifest = _run(image_folder, linear_keras, tmp_path / "out", "--method", "riemann_left")
    weights, bias = linear_weights

    results = pd.read_parquet(tmp_path / "out" / "results")
    assert list(results.columns) == results_schema().names
    assert sorted(results.image_id) == sorted(image_folder["pixels"])  # one row per good input
    assert results.image_id.is_unique
    errors = pd.read_parquet(tmp_path / "out" / "errors")
    assert errors.to_dict("records") == [
        {
            "image_id": "broken.jpg",
            "file_name": "broken.jpg",
            "stage": "decode",
            "error": errors.error[0],
        }
    ]
    assert "broken image" in errors.error[0]
    assert manifest["counts"] == {
        "inputs": 5,
        "rows": 4,
        "errors": 1,
        "images_with_rows": 4,
        "images_with_errors": 1,
        "skipped_done_before": 0,
    }
    assert manifest["status"] == "complete" and manifest["rows_match_target_mode"]
    assert manifest["all_inputs_accounted_for"]
    # DESIGN: the manifest holds "the run's configuration, versions, model identity and counts".
    assert manifest["config"]["method"] == "riemann_left" and manifest["config"]["steps"] == 4
    assert manifest["model"]["identity"].startswith("sha256:")
    assert all(manifest["versions"][name] for name in ("tensorflow", "apache-beam", "python"))
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest
    # run(argv) from Python: the equivalent command line, not the host's (pytest's).
    assert manifest["command"][:3] == ["python", "-m", "pipeline"]
    assert manifest["command"][-2:] == ["--method", "riemann_left"]

    for row in results.itertuples():
        _check_linear_row(row, image_folder["pixels"][row.image_id], weights, bias)

    labelled = results.set_index("image_id")
    assert labelled.loc[f"{WNID_CAT}/cat1.png", "label"] == 281
    assert labelled.loc[f"{WNID_CAT}/cat1.png", "label_name"] == "tabby cat"
    assert pd.isna(labelled.loc["loose.png", "label"])


# DESIGN.md's result and error columns: its contract, never renamed nor removed.
_CONTRACT_COLUMNS = (
    "image_id file_name label label_name predicted_class predicted_name top_k_classes "
    "top_k_names top_k_probs target_class target_name target_score baseline_score "
    "attribution_sum completeness_delta relative_delta attribution_error within_tolerance "
    "evaluations steps method deletion_auc insertion_auc deletion_auc_random "
    "insertion_auc_random attributions attribution_shape"
).split()
_ERROR_COLUMNS = ["image_id", "file_name", "stage", "error"]


def _split_types(cell: str) -> list[str]:
    """'int64 (null if a, b), string' -> ['int64 (null if a, b)', 'string']."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(cell):
        depth += (char in "([") - (char in ")]")
        if char == "," and depth == 0:
            parts.append(cell[start:i].strip())
            start = i + 1
    return [*parts, cell[start:].strip()]


def _readme_columns() -> dict[str, str]:
    """README's "Result columns" table, in its order: column -> its type cell."""
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    table = readme.split("\nResult columns", 1)[1].split("\n\n")[1]
    columns = {}
    for line in table.splitlines()[2:]:
        names_cell, type_cell, _ = (c.strip() for c in line.strip("| ").split(" | ", 2))
        names = re.findall(r"`(\w+)`", names_cell)
        types = _split_types(type_cell)
        if len(types) != len(names):  # one type for all: 'list<float32>'
            types = [type_cell] * len(names)
        columns.update(zip(names, types, strict=True))
    return columns


def _readme_type(arrow_type) -> str:
    """An Arrow type as README spells it: float64, list<float32>, ..."""
    if pa.types.is_list(arrow_type):
        return f"list<{_readme_type(arrow_type.value_type)}>"
    named = {"double": "float64", "float": "float32", "halffloat": "float16"}
    return named.get(str(arrow_type), str(arrow_type))


def _check_output_against_readme(output, columns: dict[str, str]) -> set[str]:
    """Asserts `output`'s results have README's columns, in order, of its types, and
    its errors DESIGN's columns, as strings; returns the result columns holding a null."""
    table = pq.read_table(os.path.join(output, "results"))
    assert table.column_names == list(columns)
    stated = {
        name: {cell.split(" ")[0].replace("float16/32", f) for f in ("float16", "float32")}
        for name, cell in columns.items()
    }
    wrong = {
        f.name: str(f.type) for f in table.schema if _readme_type(f.type) not in stated[f.name]
    }
    assert wrong == {}
    errors = pq.read_table(os.path.join(output, "errors"))
    assert errors.column_names == _ERROR_COLUMNS
    assert {str(t) for t in errors.schema.types} == {"string"}
    rows = pd.read_parquet(os.path.join(output, "results"))
    return {name for name in rows if rows[name].isna().any()}


def test_the_readme_column_table_is_the_output_read_back_with_its_nulls(
    image_folder, linear_keras, tmp_path
):
    # The table users read is what the job writes: DESIGN's columns among README's,
    # each of the type README states, and null where it says, nowhere else.
    columns = _readme_columns()
    assert [name for name in _CONTRACT_COLUMNS if name not in columns] == []
    switched_off = {
        name: re.findall(r"null if `(--\w+) (\w+)`", cell) for name, cell in columns.items()
    }
    off_flags = dict(pair for pairs in switched_off.values() for pair in pairs)
    assert off_flags == {"--tolerance": "0", "--faithfulness": "none", "--attributions": "none"}
    unlabelled = {name for name, cell in columns.items() if "null if unlabelled" in cell}
    assert unlabelled == {"label", "label_name"}

    _run(image_folder, linear_keras, tmp_path / "on", "--faithfulness_steps", "4")
    assert _check_output_against_readme(tmp_path / "on", columns) == unlabelled
    _run(
        image_folder,
        linear_keras,
        tmp_path / "off",
        *cli_args(**{k[2:]: v for k, v in off_flags.items()}),
    )
    rows = pd.read_parquet(tmp_path / "off" / "results")
    assert set(rows.image_id[rows.label.isna()]) == {"loose.png"}  # the one unlabelled image
    off = {name for name, pairs in switched_off.items() if pairs}
    assert _check_output_against_readme(tmp_path / "off", columns) == off | unlabelled
    assert rows[sorted(off)].isna().all().all()


def test_rows_hold_designs_definitions_where_the_sum_misses(
    image_folder, quadratic_saved_model, tmp_path
):
    # F = sum x^2 w from black, 4 left points: the map sums to 3/4 of F(x) - F(x'), so
    # completeness_delta and relative_delta are checked far from 0.
    flags = cli_args(method="riemann_left", tolerance=0, faithfulness="none", top_k=3)
    _run(image_folder, quadratic_saved_model, tmp_path / "out", *flags)
    rows = pd.read_parquet(tmp_path / "out" / "results")
    gap = rows.target_score - rows.baseline_score
    np.testing.assert_allclose(rows.completeness_delta, rows.attribution_sum - gap, rtol=1e-9)
    np.testing.assert_allclose(rows.relative_delta, rows.completeness_delta.abs() / gap.abs())
    np.testing.assert_allclose(rows.relative_delta, 0.25, rtol=1e-3)
    for row in rows.itertuples():
        assert len(row.attributions) == np.prod(row.attribution_shape) == SIZE * SIZE * 3
        assert np.sum(row.attributions, dtype=np.float64) == pytest.approx(row.attribution_sum)
        assert row.predicted_class == row.target_class == row.top_k_classes[0]
        assert row.predicted_name == row.target_name == row.top_k_names[0]
        assert len(row.top_k_classes) == len(row.top_k_names) == len(row.top_k_probs) == 3
        assert list(row.top_k_probs) == sorted(row.top_k_probs, reverse=True)
        assert (row.steps, row.evaluations, row.method) == (4, 4, "riemann_left")


def test_the_model_sees_its_input_range_and_ig_starts_from_its_black(
    image_folder, linear_keras, linear_weights, tmp_path
):
    # --input_range -1,1 (Inception's): the model scores x = pixels / 127.5 - 1 and
    # the black baseline is -1, so the linear model's exact IG is pixels / 127.5 * w.
    flags = ("--method", "riemann_left", "--input_range", "-1,1", "--faithfulness", "none")
    manifest = _run(image_folder, linear_keras, tmp_path / "out", *flags)
    assert manifest["model"]["input_range"] == [-1.0, 1.0]
    weights, bias = linear_weights
    results = pd.read_parquet(tmp_path / "out" / "results")
    assert len(results) == 4
    for row in results.itertuples():
        pixels = image_folder["pixels"][row.image_id].astype(np.float32)
        x = pixels / 127.5 - 1.0
        logits = x.reshape(-1) @ weights + bias
        w = weights[:, row.target_class]
        assert row.predicted_class == int(np.argmax(logits))
        np.testing.assert_allclose(row.target_score, logits[row.target_class], rtol=1e-4)
        np.testing.assert_allclose(row.baseline_score, bias[row.target_class] - w.sum(), rtol=1e-4)
        attributions = np.asarray(row.attributions).reshape(SIZE, SIZE, 3)
        expected = (x + 1.0) * w.reshape(SIZE, SIZE, 3)
        np.testing.assert_allclose(attributions, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("baseline, value", [("black", 0.0), ("white", 1.0)])
def test_a_padded_image_is_attributed_where_it_lies_and_its_bars_as_readme_says(
    linear_keras, linear_weights, tmp_path, baseline, value
):
    """A 16 x 8 landscape fills rows 4 to 11 of the model's square, rows 0-3 and 12-15
    black: the map, reshaped row-major, is x * w there; on the bars x - x' is 0 for the
    black baseline, -1 for the white one (README: the padding is part of the map)."""
    photo = np.random.default_rng(5).integers(0, 256, size=(SIZE // 2, SIZE, 3), dtype=np.uint8)
    write_image(tmp_path / "images" / "wide.png", photo)
    folder = {"root": str(tmp_path / "images")}
    flags = ("--baseline", baseline, "--faithfulness", "none", "--tolerance", "0")
    _run(folder, linear_keras, tmp_path / "out", *flags)
    (row,) = pd.read_parquet(tmp_path / "out" / "results").itertuples()
    x = np.zeros((SIZE, SIZE, 3), np.float32)
    x[SIZE // 4 : SIZE // 4 + SIZE // 2] = photo / 255.0
    w = linear_weights[0][:, row.target_class].reshape(SIZE, SIZE, 3)
    attributions = np.asarray(row.attributions).reshape(row.attribution_shape)
    np.testing.assert_allclose(attributions, (x - value) * w, rtol=1e-4, atol=1e-6)
    bars = np.r_[: SIZE // 4, SIZE // 4 + SIZE // 2 : SIZE]
    assert (attributions[bars] == 0).all() == (baseline == "black")


def test_small_rows_fill_large_row_groups_and_full_maps_64_a_group(linear_keras, tmp_path):
    # Row groups held 64 rows whatever their size: a million rows of --attributions
    # none (1.5 KB each) had a 53 MB footer, and reading three columns took 6.5 s and
    # 1.4 GB where 0.1 s do. 70 such rows are one group now.
    import apache_beam as beam  # noqa: PLC0415
    from apache_beam.testing.util import assert_that, equal_to  # noqa: PLC0415

    from transforms.sinks import BYTES_PER_GROUP, ROWS_PER_GROUP, _GroupRows  # noqa: PLC0415

    rng = np.random.default_rng(3)
    for i in range(70):
        write_image(
            tmp_path / "many" / f"{i:02d}.png",
            rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
        )
    flags = ["--attributions", "none", "--faithfulness", "none", "--steps", "2"]
    _run({"root": tmp_path / "many"}, linear_keras, tmp_path / "out", *flags)
    groups = [
        pq.ParquetFile(f).metadata.num_row_groups
        for f in (tmp_path / "out" / "results").glob("*.parquet")
        if pq.ParquetFile(f).metadata.num_rows
    ]
    assert groups == [1]
    # Full float32 maps of 224 x 224 x 3 (602 KB each) stay 64 to a group, as before.
    # Made in the pipeline, fused with the grouping: `Create` of the rows themselves
    # pickled their 78 MB first (16-24 s of this test's 25, against 1-1.5 s).
    full = {"attributions": np.zeros((224, 224, 3), np.float32)}
    with beam.Pipeline() as p:
        sizes = (
            p
            | beam.Create(range(130), reshuffle=False)
            | beam.Map(lambda _: full)
            | beam.ParDo(_GroupRows(ROWS_PER_GROUP, BYTES_PER_GROUP))
            | beam.Map(len)
        )
        assert_that(sizes, equal_to([64, 64, 2]))
        # Small rows: a group ends at its row bound, `max_rows` rows, not one more.
        small = (
            p
            | "SmallRows" >> beam.Create([{"attributions": None}] * 7, reshuffle=False)
            | "GroupsOfThree" >> beam.ParDo(_GroupRows(3, BYTES_PER_GROUP))
            | "SmallSizes" >> beam.Map(len)
        )
        assert_that(small, equal_to([3, 3, 1]), label="CheckSmallSizes")


def test_long_path_curves_count_toward_a_row_group_s_bytes():
    # row_bytes counted the attributions and 1 KB for the rest: rows of --attributions
    # none with --steps 4096 --tolerance 0 carry two 4,096-point path curves (33 KB),
    # so 16,384 of them made a 540 MB group (2 GB at --max_steps 16384), not ~39 MB.
    import apache_beam as beam  # noqa: PLC0415
    from apache_beam.testing.util import assert_that  # noqa: PLC0415

    from transforms.sinks import BYTES_PER_GROUP, ROWS_PER_GROUP, _GroupRows  # noqa: PLC0415

    curve = np.zeros(4096, np.float32)
    row = {"attributions": None, "path_alphas": curve, "path_scores": curve}
    arrays = 2 * curve.nbytes

    def check(sizes):
        assert sum(sizes) == 1500
        assert max(sizes) * arrays <= BYTES_PER_GROUP, sizes

    with beam.Pipeline() as p:
        sizes = (
            p
            | beam.Create(range(1500), reshuffle=False)
            | beam.Map(lambda _: row)  # made in the pipeline: `Create` pickled 49 MB of rows
            | beam.ParDo(_GroupRows(ROWS_PER_GROUP, BYTES_PER_GROUP))
            | beam.Map(len)
        )
        assert_that(sizes, check)


def test_output_files_have_one_schema_and_metadata_reads_alone(
    image_folder, linear_keras, tmp_path
):
    pixel_float16 = cli_args(attribution_dtype="float16", attributions="pixel")
    _run(image_folder, linear_keras, tmp_path / "out", *pixel_float16)
    files = sorted((tmp_path / "out" / "results").glob("*.parquet"))
    assert files
    for f in files:
        schema = pq.read_schema(f)
        assert schema.remove_metadata().equals(results_schema("float16").remove_metadata())
        group = pq.ParquetFile(f).metadata.row_group(0)
        columns = {
            group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)
        }
        assert columns["image_id"].compression == "ZSTD"
        # Float arrays: no dictionary; float32 ones byte-stream-split (float16 not: DuckDB).
        assert not columns["attributions.list.item"].has_dictionary_page
        assert "BYTE_STREAM_SPLIT" in columns["path_scores.list.item"].encodings
        assert "BYTE_STREAM_SPLIT" not in columns["attributions.list.item"].encodings
    assert pq.read_schema(next((tmp_path / "out" / "errors").glob("*.parquet"))).equals(
        ERROR_SCHEMA
    )
    meta = pd.read_parquet(tmp_path / "out" / "results", columns=["image_id", "relative_delta"])
    assert len(meta) == 4
    full = pd.read_parquet(tmp_path / "out" / "results")
    assert all(list(s) == [SIZE, SIZE] for s in full.attribution_shape)
    assert full.attributions[0].dtype == np.float16


def test_label_target_and_label_offset_through_hub_handle(
    image_folder, offline_hub, quadratic_weights, tmp_path
):
    # inception_v1 resolves to the seed's TF Hub handle; the cache holds a
    # 1001-output model whose output 0 is a background class.
    flags = cli_args(target="label", method="gausslegendre")
    manifest = _run(image_folder, "inception_v1", tmp_path / "out", *flags)
    assert manifest["model"]["label_offset"] == 1
    assert manifest["model"]["kind"] == "hub" and manifest["model"]["num_outputs"] == 1001
    results = pd.read_parquet(tmp_path / "out" / "results").set_index("image_id")
    # Unlabelled and broken images become errors with the reason.
    errors = pd.read_parquet(tmp_path / "out" / "errors").set_index("image_id")
    assert (
        "needs" in errors.loc["loose.png", "error"] and errors.loc["loose.png", "stage"] == "target"
    )
    assert len(results) + len(errors) == 5
    row = results.loc[f"{WNID_CAT}/cat2.png"]
    assert row.target_class == 281
    x = image_folder["pixels"][f"{WNID_CAT}/cat2.png"].astype(np.float32) / 255.0
    outputs = (x * x).reshape(-1) @ quadratic_weights
    # Output index 282 is ImageNet class 281: no off-by-one.
    np.testing.assert_allclose(row.target_score, outputs[282], rtol=1e-5)
    assert row.predicted_class == int(np.argmax(outputs[1:]))
    # The top-k probabilities are those of the classes listed (output index + 1), of
    # the softmax over all 1001 outputs.
    probs = np.exp(outputs - outputs.max()) / np.exp(outputs - outputs.max()).sum()
    top = np.asarray(row.top_k_classes)
    np.testing.assert_allclose(row.top_k_probs, probs[top + 1], rtol=1e-4)
    expected = (x * x) * quadratic_weights[:, 282].reshape(SIZE, SIZE, 3)
    np.testing.assert_allclose(
        np.reshape(row.attributions, (SIZE, SIZE, 3)), expected, rtol=1e-4, atol=1e-6
    )


def test_a_direct_runner_job_loads_its_model_once(
    image_folder, quadratic_saved_model, tmp_path, monkeypatch
):
    # The launcher loads the model for its signature and hands it, through the
    # job's ModelHandoff (pickled with the handler), to the in-process worker.
    from pipeline.main import launch
    from transforms import tf_model

    loads = []
    real = tf_model._load
    monkeypatch.setattr(tf_model, "_load", lambda m: loads.append(m.reference) or real(m))
    job, result = launch(
        [
            "--runner",
            "DirectRunner",
            "--dataset",
            image_folder["root"],
            "--model",
            quadratic_saved_model,
            "--output",
            str(tmp_path / "out"),
            "--steps",
            "4",
        ],
        save_main_session=False,
    )
    assert result.state == "DONE" and loads == [quadratic_saved_model]
    assert job.model_handoff is not None and not job.model_handoff.holding


def test_top_k_target_gives_k_rows_per_image(image_folder, quadratic_saved_model, tmp_path):
    flags = cli_args(target="top_k", top_k=3, attributions="none", score="softmax")
    manifest = _run(image_folder, quadratic_saved_model, tmp_path / "out", *flags)
    results = pd.read_parquet(tmp_path / "out" / "results")
    assert manifest["counts"]["rows"] == 12 and len(results) == 12
    for _, group in results.groupby("image_id"):
        assert group.target_class.tolist() == list(group.top_k_classes.iloc[0])
        np.testing.assert_allclose(group.target_score, group.top_k_probs.iloc[0], rtol=1e-4)
    assert results.attributions.isna().all()


def test_each_class_has_one_name_in_every_column_and_top_k_probs_are_probabilities(
    image_folder, linear_keras, tmp_path
):
    # DESIGN's pairs (label, label_name), (predicted_class, predicted_name), the top-k
    # lists and (target_class, target_name) name a class one way throughout a run; the
    # top-k probabilities are probabilities, sorted, of distinct classes.
    flags = cli_args(target="top_k", top_k=5, attributions="none", faithfulness="none")
    _run(image_folder, linear_keras, tmp_path / "out", *flags)
    rows = pd.read_parquet(tmp_path / "out" / "results")
    pairs = {(row.predicted_class, row.predicted_name) for row in rows.itertuples()}
    pairs |= {(row.target_class, row.target_name) for row in rows.itertuples()}
    for row in rows.itertuples():
        pairs |= set(zip(row.top_k_classes, row.top_k_names, strict=True))
        probs = np.asarray(row.top_k_probs, np.float64)
        assert ((probs >= 0) & (probs <= 1)).all() and probs.sum() <= 1 + 1e-6
        assert (np.diff(probs) <= 0).all() and len(set(row.top_k_classes)) == 5
    labelled = rows.dropna(subset=["label"])
    pairs |= set(zip(labelled.label.astype(int), labelled.label_name, strict=True))
    names = dict(pairs)
    assert len(names) == len(pairs)  # no class named two ways
    assert (rows.label.isna() == rows.label_name.isna()).all()


def test_rerun_into_same_output_is_refused_unless_overwrite(image_folder, linear_keras, tmp_path):
    _run(image_folder, linear_keras, tmp_path / "out", "--attributions", "none")
    with pytest.raises(ValueError, match="already holds a run.*--overwrite"):
        _run(image_folder, linear_keras, tmp_path / "out")
    manifest = _run(image_folder, linear_keras, tmp_path / "out", "--overwrite", "--steps", "2")
    assert manifest["config"]["steps"] == 2
    assert len(pd.read_parquet(tmp_path / "out" / "results")) == 4


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--method", "simpson"], "--method 'simpson' is not supported; use one of: gausslegendre"),
        (["--baseline", "black,pink"], "--baseline 'pink' is not supported"),
        (["--baseline", "black,,white"], "--baseline 'black,,white' has an empty name; give"),
        (["--baseline", "black,"], "--baseline 'black,' has an empty name"),
        (
            ["--target", "best"],
            "--target 'best' is not supported; use one of: predicted, label, top_k",
        ),
        (["--score", "logit"], "--score 'logit' is not supported; use one of: raw, softmax"),
        (["--attributions", "all"], "--attributions 'all' is not supported"),
        (["--attribution_dtype", "int8"], "--attribution_dtype 'int8' is not supported"),
        (["--steps", "0"], "--steps must be >= 2 for riemann_trapezoid, got 0"),
        (["--steps", "0", "--method", "riemann_middle"], "--steps must be >= 1 for riemann_middle"),
        (["--tolerance", "-1"], "--tolerance must be a finite number >= 0"),
        (
            ["--output", "s3://bucket/out"],
            "--output 's3://bucket/out': only local paths and gs:// folders are supported",
        ),
        (["--dataset", "hdfs://nn/images"], "--dataset 'hdfs://nn/images': only local paths"),
        (
            ["--method", "gausslegendre", "--steps", "2", "--max_steps", "2"],
            "--steps 2 is less than one adaptive panel of gausslegendre (4 nodes), which "
            "--tolerance > 0 starts from; pass --steps 4 or more, or --tolerance 0.",
        ),
        (["--input_range", "1,0"], "--input_range '1,0' needs low < high"),
        (["--image_size", "32"], "--image_size 32 does not fit --model"),
        (
            ["--model", "efficientnet_lite0", "--input_range", "0,255"],
            "--input_range 0,255 does not fit --model 'efficientnet_lite0', which takes pixels "
            "in [0, 1] and normalises them itself; drop --input_range.",
        ),
        (
            ["--model", "inception_v1", "--input_range", "-1,1"],
            "--input_range -1,1 does not fit --model 'inception_v1', which takes pixels in [0, 1]",
        ),
        (["--label_offset", "1000"], "--label_offset 1000 does not fit"),
        (["--model", "/no/such/model.keras"], "no such .keras file"),
        (["--model", "/no/such/folder"], "is not a SavedModel folder, a .keras file"),
        (["--dataset", "/no/such/folder/"], "--dataset '/no/such/folder/': no such folder;"),
        (["--dataset", "no_such_tfds_dataset"], "neither a folder, 'sample', nor a known TFDS"),
        (
            ["--dataset", "mnistt"],
            "(Dataset mnistt not found. Did you mean mnist, kmnist, emnist?)",
        ),
        (["--dataset", "samples"], "(Dataset samples not found. Did you mean sample, "),
        (["--dataset", "mnist:abc"], "A version is written mnist:x.y.z, e.g. mnist:1.0.0.)"),
        (
            ["--dataset", "mnist:1.0"],
            "must be of the following format: dataset_name[/config_name][:version][/kwargs]",
        ),
        (
            ["--dataset", "cifar10_corrupted/brightnes_1"],
            "--dataset 'cifar10_corrupted/brightnes_1': TFDS dataset 'cifar10_corrupted' has no "
            "config 'brightnes_1'; it has 95, e.g. cifar10_corrupted/brightness_1,",
        ),
        (
            ["--dataset", "imagenet_a/xyz"],
            "TFDS dataset 'imagenet_a' has no configs; pass --dataset imagenet_a.",
        ),
        (
            ["--dataset", "imagenet_a:9.9.9"],
            "--dataset 'imagenet_a:9.9.9': Dataset imagenet_a cannot be loaded at version 9.9.9",
        ),
        (
            ["--dataset", "my_tfds", "--data_dir", "/no/such/tfds"],
            "nor a known TFDS dataset. --data_dir '/no/such/tfds' does not exist.",
        ),
    ],
)
def test_bad_configuration_fails_before_any_work(
    flags, message, image_folder, linear_keras, tmp_path
):
    args = cli_args(dataset=image_folder["root"], model=linear_keras, output=tmp_path / "out")
    with pytest.raises(ValueError, match=re.escape(message)):
        run([*args, *flags])
    assert not (tmp_path / "out").exists()


def test_command_line_prints_error_and_exit_code(capsys, linear_keras, tmp_path):
    code = main(cli_args(dataset=tmp_path / "missing", model=linear_keras, output=tmp_path / "out"))
    assert code == 2
    assert "error: --dataset" in capsys.readouterr().err


_AS_ANOTHER_USER = """
import os, sys
from pipeline.output_folder import _check_local_writable  # imported while root may read the code
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)  # "nobody": the folder's permissions now apply
try:
    _check_local_writable(sys.argv[1])
except ValueError as e:
    print(e)
"""


@pytest.mark.parametrize(
    "mode, output, message",
    [
        (0o555, "locked/out", "is not writable: no permission to write in"),
        (0o000, "locked/a/out", "is not writable: a folder on its path may not be entered"),
    ],
)
def test_an_output_folder_this_user_may_not_write_is_refused(mode, output, message):
    """In a real process of a user the folder's permissions apply to (root bypasses
    them), in a folder that user may enter (pytest's own tmp_path is root's alone)."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        locked = os.path.join(folder, "locked")
        os.makedirs(os.path.join(locked, "a"))
        os.chmod(locked, mode)
        path = os.path.join(folder, output)
        try:
            done = subprocess.run(
                [sys.executable, "-c", _AS_ANOTHER_USER, path],
                capture_output=True,
                text=True,
                check=True,
            )
        finally:
            os.chmod(locked, 0o755)
    assert done.stdout.startswith(f"--output '{path}' {message}"), done.stdout


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_an_output_no_folder_can_be_made_in_is_refused_before_the_model_loads(
    image_folder, tmp_path
):
    """/proc passes root's permission checks, yet no folder can be made in it: the
    launch tries one instead of trusting the permissions (a broken model shows that
    the refusal comes before the model loads)."""
    broken_model = tmp_path / "broken.keras"
    with zipfile.ZipFile(broken_model, "w") as archive:
        archive.writestr("config.json", "not a model")
    output = "/proc/ig_audit_test/out"
    message = f"--output '{output}' is not writable: no "
    with pytest.raises(ValueError, match=re.escape(message)) as refused:
        run(cli_args(dataset=image_folder["root"], model=str(broken_model), output=output))
    assert "'/proc'" in str(refused.value)


def test_output_folder_not_writable_is_a_clear_error(image_folder, tmp_path):
    """Refused before the model loads: this model file would fail to load."""
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    broken_model = tmp_path / "broken.keras"
    with zipfile.ZipFile(broken_model, "w") as archive:
        archive.writestr("config.json", "not a model")
    output = os.path.join(str(blocked), "out")
    message = f"--output '{output}' is not writable: '{blocked}' is a file, not a folder"
    with pytest.raises(ValueError, match=re.escape(message)):
        run(cli_args(dataset=image_folder["root"], model=str(broken_model), output=output))


@pytest.mark.parametrize("below", ["", "out"])
def test_an_output_through_a_link_to_nothing_names_the_link(
    image_folder, linear_keras, tmp_path, below
):
    # A symbolic link whose target is gone (an unmounted disk): refused only when the
    # lock was written, with "No such file or directory: '<output>/.lock.<id>'".
    link = tmp_path / "audits"
    link.symlink_to(tmp_path / "unmounted" / "audits")
    output = os.path.join(str(link), below) if below else str(link)
    message = (
        f"--output {output!r} is not writable: {str(link)!r} is a symbolic link to "
        f"{str(tmp_path / 'unmounted' / 'audits')!r}, which does not exist; create it "
        "or choose another folder."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        run(cli_args(dataset=image_folder["root"], model=linear_keras, output=output))


def test_duckdb_reads_the_results_with_sql(image_folder, linear_keras, tmp_path):
    import duckdb

    _run(image_folder, linear_keras, tmp_path / "out", "--attribution_dtype", "float16")
    files = f"{tmp_path / 'out' / 'results'}/*.parquet"
    ((rows, labelled, worst),) = duckdb.sql(
        f"SELECT count(*), count(label), max(relative_delta) FROM '{files}'"
    ).fetchall()
    assert (rows, labelled) == (4, 3) and worst < 1e-4
    ((length,),) = duckdb.sql(f"SELECT len(attributions) FROM '{files}' LIMIT 1").fetchall()
    assert length == SIZE * SIZE * 3


def test_the_readme_sql_queries_run_on_a_top_k_run(image_folder, linear_keras, tmp_path):
    import re

    import duckdb

    _run(image_folder, linear_keras, tmp_path / "out", "--target", "top_k", "--top_k", "3")
    sql = "\n".join(block for _, block in user_doc_blocks("sql"))
    sql = re.sub(r"--[^\n]*", "", sql)  # comments, which may hold a ';'
    queries = [q for q in sql.split(";") if "SELECT" in q]
    assert len(queries) >= 3
    frames = [duckdb.sql(q.replace("output/sample/", f"{tmp_path / 'out'}/")).df() for q in queries]
    wrong = frames[0]  # the most confident misclassifications: each image once
    assert wrong.image_id.is_unique and len(wrong) >= 1
    rows = pd.read_parquet(tmp_path / "out" / "results")
    expected = rows[rows.label.notna() & (rows.predicted_class != rows.label)].image_id.unique()
    assert sorted(wrong.image_id) == sorted(expected)


def test_the_readme_comparison_of_two_runs_pairs_their_rows_and_correlates_their_maps(
    image_folder, linear_keras, linear_weights, tmp_path, monkeypatch
):
    # README "Comparing two runs", run as is against two real runs over the same images:
    # the linear model's maps from black and from white (in the snippet's sample_blur)
    # are known, x * w and (x - 1) * w, and so is their correlation.
    import matplotlib

    matplotlib.use("Agg")
    _run(image_folder, linear_keras, tmp_path / "output" / "sample")
    _run(image_folder, linear_keras, tmp_path / "output" / "sample_blur", "--baseline", "white")
    [snippet] = [block for _, block in user_doc_blocks("python") if "sample_blur" in block]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(snippet, "README.md comparison snippet", "exec"), namespace)
    pairs = namespace["pairs"]
    assert sorted(pairs.image_id) == sorted(image_folder["pixels"])  # broken.jpg: no row
    assert (pairs.baseline_a == "black").all() and (pairs.baseline_b == "white").all()
    weights, _ = linear_weights
    for row in pairs.itertuples():
        x = image_folder["pixels"][row.image_id].reshape(-1).astype(np.float64) / 255.0
        w = weights[:, row.target_class]
        expected = np.corrcoef(x * w, (x - 1) * w)[0, 1]
        np.testing.assert_allclose(row.map_correlation, expected, rtol=1e-4)
    assert len(namespace["maps"]) == 8  # the 4 least alike, run a's then run b's
    assert (tmp_path / "a_above_b.png").stat().st_size > 0


def test_a_relative_output_folder_is_written_and_read_back(
    image_folder, linear_keras, tmp_path, monkeypatch
):
    # ./run_local.sh passes --output ./output/sample: Beam's finalize step must find
    # the temp files of a relative folder too.
    monkeypatch.chdir(tmp_path)
    manifest = _run(image_folder, linear_keras, "./out", "--faithfulness", "none")
    assert manifest["status"] == "complete" and manifest["counts"]["rows"] == 4
    assert len(pd.read_parquet(tmp_path / "out" / "results")) == 4
    assert not list((tmp_path / "out" / ".tmp").glob("beam-temp-*/*"))


def test_an_output_with_dot_dot_after_a_link_is_the_folder_the_system_opens(
    image_folder, linear_keras, tmp_path, monkeypatch
):
    """`link/../out` is the sibling of the link's target, as `mkdir -p` makes it; the
    launch checked an `out` beside the link (refused a file there) and Beam's sinks
    wrote their temporary files there, then failed to move them into `link/../out`."""
    (tmp_path / "deep" / "a").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "deep" / "a")
    (tmp_path / "out").write_text("a file beside the link, not the output")
    monkeypatch.chdir(tmp_path)
    manifest = _run(image_folder, linear_keras, "link/../out", "--faithfulness", "none")
    assert manifest["status"] == "complete" and manifest["counts"]["rows"] == 4
    assert manifest["output"] == str(tmp_path / "deep" / "out")
    assert len(pd.read_parquet(tmp_path / "deep" / "out" / "results")) == 4
    assert (tmp_path / "out").read_text() == "a file beside the link, not the output"


def test_a_model_path_with_dot_dot_after_a_link_is_the_file_the_system_opens(
    image_folder, linear_keras, tmp_path, monkeypatch
):
    """`ls link/../m.keras` lists it, yet TensorFlow's file functions drop `link/..`
    as text: the job refused it as "no such .keras file", after listing the images."""
    (tmp_path / "deep" / "a").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "deep" / "a")
    shutil.copy(linear_keras, tmp_path / "deep" / "m.keras")
    monkeypatch.chdir(tmp_path)
    manifest = _run(image_folder, "link/../m.keras", "out", "--faithfulness", "none")
    assert manifest["status"] == "complete" and manifest["counts"]["rows"] == 4
    assert manifest["model"]["reference"] == str(tmp_path / "deep" / "m.keras")


def test_a_model_that_ends_in_a_softmax_reports_its_own_probabilities(
    image_folder, tmp_path, caplog
):
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Flatten()(inputs))
    probabilities = keras.layers.Dense(5, activation="softmax")(hidden)
    keras.utils.set_random_seed(3)
    path = str(tmp_path / "softmax_head.keras")
    keras.Model(inputs, probabilities).save(path)
    runs = {}
    for score in ("raw", "softmax"):
        output = tmp_path / score
        with caplog.at_level("WARNING"):
            _run(image_folder, path, output, "--score", score, "--tolerance", "0")
        runs[score] = pd.read_parquet(output / "results").sort_values("image_id")
    assert "ends in a softmax (its outputs sum to 1)" in caplog.text
    raw, soft = runs["raw"], runs["softmax"]
    # The top probability is the model's own output (raw target_score), not a
    # softmax of probabilities (squashed towards 1/5).
    top = np.array([p[0] for p in raw.top_k_probs])
    np.testing.assert_allclose(top, raw.target_score, rtol=1e-6)
    assert np.allclose([np.sum(p) for p in raw.top_k_probs], 1.0, atol=1e-5)
    np.testing.assert_allclose([c[0] for c in raw.deletion_curve], top, rtol=1e-5)
    # --score softmax attributes those probabilities too: the same maps.
    for a, b in zip(raw.attributions, soft.attributions, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)


def test_a_run_from_python_drops_beams_per_batch_memory_warning(
    image_folder, linear_keras, tmp_path, caplog
):
    """Beam's RunInference warns on the root logger, for every batch, that it cannot
    read memory use (it imports `resource` with a module that needs PyTorch); a run
    started from Python, which does not set up the job's logging, drops it too."""
    args = cli_args(dataset=image_folder["root"], model=linear_keras, output=tmp_path / "out")
    with caplog.at_level("WARNING"):
        run([*args, "--batch_size", "1"], save_main_session=False)
    assert not [r for r in caplog.records if "Resource module is not available" in r.getMessage()]


def test_each_run_from_python_warns_of_maps_float16_cannot_hold(
    image_folder, linear_weights, tmp_path, caplog
):
    """Each run of a notebook says that float16 loses its maps, as a fresh process's
    does: the warning was given once a process, and a second run said nothing."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(1000)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([w * 1e7 for w in linear_weights])  # maps beyond float16's 65504
    model.save(tmp_path / "scaled.keras")
    flags = ["--attribution_dtype", "float16", "--tolerance", "0", "--faithfulness", "none"]
    for out in ("first", "second"):
        caplog.clear()
        with caplog.at_level("WARNING"):
            _run(image_folder, str(tmp_path / "scaled.keras"), tmp_path / out, *flags)
        said = [r for r in caplog.records if "do not fit float16" in r.getMessage()]
        assert len(said) == 1, out


def test_a_salvage_joins_thousands_of_checkpoints_into_full_row_groups():
    # _row_groups summed the sizes of all pending checkpoint tables at each new one:
    # a group of 2,048 checkpoints of 8 rows (--attributions none) took minutes to join
    # (4,096 of them 258 s here), quadratic in a killed run's rows.
    from transforms.schema import results_schema, rows_to_table  # noqa: PLC0415
    from transforms.sinks import ROWS_PER_GROUP, _row_groups  # noqa: PLC0415

    row = {name: None for name in results_schema().names}
    row |= {"image_id": "x", "path_scores": np.zeros(64, np.float32)}
    checkpoint = rows_to_table([row] * 8, results_schema())
    groups = [t.num_rows for t in _row_groups([checkpoint] * 4100)]
    assert groups == [ROWS_PER_GROUP, ROWS_PER_GROUP, 32]


def test_a_salvages_row_groups_of_full_maps_hold_64_as_the_sinks_do():
    # A salvage joined 8-row checkpoints until their bytes reached the bound: 64 full
    # float32 224 x 224 maps weigh a little under it, so its groups held 72 (43 MB,
    # over the bound). They now stop before a checkpoint would cross it.
    from transforms.schema import results_schema, rows_to_table  # noqa: PLC0415
    from transforms.sinks import BYTES_PER_GROUP, _row_groups  # noqa: PLC0415

    row = {name: None for name in results_schema().names}
    row |= {"image_id": "x", "attributions": np.ones((224, 224, 3), np.float32)}
    checkpoint = rows_to_table([row] * 8, results_schema())
    groups = list(_row_groups([checkpoint] * 17))
    assert [t.num_rows for t in groups] == [64, 64, 8]
    assert all(t.nbytes <= BYTES_PER_GROUP for t in groups)
    big = rows_to_table([row] * 80, results_schema())  # one table over the bound: kept whole
    assert [t.num_rows for t in _row_groups([checkpoint, big, checkpoint])] == [8, 80, 8]
    assert [t.num_rows for t in _row_groups([big, checkpoint])] == [80, 8]  # none empty


def test_a_row_within_a_tolerance_below_half_a_percent_has_its_completeness_within_it(tmp_path):
    # DESIGN: --tolerance bounds each row's per-pixel error "and its completeness". A
    # blur baseline's maps cancel in their sum, so completeness can lag the per-pixel
    # bound: at --tolerance 0.002, 6 of these 12 rows were flagged within with their
    # sums 0.2-0.5 % off (the --completeness_tolerance default, 0.005, applied alone).
    import keras
    from PIL import Image

    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(keras.layers.MaxPooling2D()(x))
    model = keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Flatten()(x)))
    model.save(tmp_path / "c16.keras")
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(12):
        pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "imgs" / f"{i}.png")
    args = ["--dataset", tmp_path / "imgs", "--model", tmp_path / "c16.keras"]
    flags = ["--tolerance", "0.002", "--baseline", "blur", "--faithfulness", "none"]
    manifest = run([*args, "--output", tmp_path / "out", *flags], save_main_session=False)
    assert manifest["config"]["completeness_tolerance"] == 0.002
    rows = pd.read_parquet(tmp_path / "out" / "results")
    within = rows[rows.within_tolerance]
    assert len(within) >= 6, rows[["relative_delta", "attribution_error"]]
    assert (within.relative_delta <= 0.002).all(), within.relative_delta.tolist()
    assert (within.attribution_error <= 0.002 / 1.25).all()


# A model fixing a non-square input, height x width, and images of each orientation.
_HEIGHT, _WIDTH = 24, 40
_RED = (255, 0, 0)


@pytest.fixture(scope="module")
def non_square_images(tmp_path_factory) -> dict:
    """8 tiny images (a uniform red 10 x 40 banner, a red 40 x 10 strip, random others
    of several shapes) in a folder: {"root": folder, "pixels": {image_id: uint8}}."""
    root = tmp_path_factory.mktemp("non_square") / "images"
    rng = np.random.default_rng(11)
    pixels = {"banner.png": np.full((10, 40, 3), _RED, np.uint8)}
    pixels["strip.png"] = np.full((40, 10, 3), _RED, np.uint8)
    for i, shape in enumerate([(16, 16), (30, 20), (20, 30), (24, 40), (8, 12), (32, 32)]):
        pixels[f"r{i}.png"] = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    for name, array in pixels.items():
        write_image(root / name, array)
    return {"root": str(root), "pixels": pixels}


def _padded(pixels: np.ndarray) -> np.ndarray:
    """float32 [24, 40, 3] in [0, 1]: the image as the job feeds a 24 x 40 model."""
    from transforms import images  # noqa: PLC0415

    return images.resize_with_pad(pixels, (_HEIGHT, _WIDTH)).astype(np.float32) / 255.0


def test_a_keras_model_of_a_fixed_non_square_input_is_audited_at_its_size(
    non_square_images, tmp_path
):
    """A .keras model of Input((24, 40, 3)) was refused at launch ('takes non-square
    images (24, 40); the job resizes every image into a square'). Its images are fitted
    into 24 x 40 with padding, aspect kept; a linear model's map is x * w exactly, and
    it reads back in that shape, as do the images the model saw."""
    import keras  # noqa: PLC0415

    from transforms import results  # noqa: PLC0415

    weights = np.random.default_rng(12).normal(0, 0.05, (_HEIGHT * _WIDTH * 3, 5))
    inputs = keras.Input((_HEIGHT, _WIDTH, 3))
    dense = keras.layers.Dense(5)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([weights.astype(np.float32), np.zeros(5, np.float32)])
    model.save(tmp_path / "wide.keras")
    output = str(tmp_path / "out")
    flags = ("--faithfulness", "none", "--tolerance", "0")
    manifest = _run(non_square_images, str(tmp_path / "wide.keras"), output, *flags)
    assert (manifest["model"]["image_size"], manifest["model"]["image_width"]) == (24, 40)
    frame = results.read_results(output, with_arrays=True).set_index("image_id")
    assert sorted(frame.index) == sorted(non_square_images["pixels"])
    seen = results.input_images(output, frame.index)
    for image_id, row in frame.iterrows():
        x = _padded(non_square_images["pixels"][image_id])
        assert list(row.attribution_shape) == [_HEIGHT, _WIDTH, 3]
        w = weights[:, row.target_class].reshape(_HEIGHT, _WIDTH, 3)
        maps = results.attributions_of(row)
        np.testing.assert_allclose(maps, x * w, rtol=1e-4, atol=1e-6)
        assert row.relative_delta < 1e-4
        np.testing.assert_array_equal(seen[image_id], np.round(x * 255).astype(np.uint8))
    banner, strip = (results.attributions_of(frame.loc[i]) for i in ("banner.png", "strip.png"))
    assert (banner[:7] == 0).all() and (banner[17:] == 0).all() and (banner[7:17, :, 0] != 0).all()
    assert (strip[:, :17] == 0).all() and (strip[:, 23:] == 0).all() and strip[:, 17:23, 0].all()


def _fixed_non_square_saved_model(path, weights: np.ndarray) -> str:
    """A SavedModel F_k(x) = sum_i x_i^2 W_ik whose signature fixes (None, 24, 40, 3)."""
    import tensorflow as tf  # noqa: PLC0415

    class Quadratic(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(weights.astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, _HEIGHT, _WIDTH, 3], tf.float32)])
        def __call__(self, x):
            return tf.reshape(x * x, [-1, _HEIGHT * _WIDTH * 3]) @ self.w

    tf.saved_model.save(Quadratic(), str(path))
    return str(path)


def test_a_saved_model_of_a_fixed_non_square_signature_is_audited_with_faithfulness(
    non_square_images, tmp_path
):
    """A SavedModel whose signature fixes (None, 24, 40, 3) was refused at launch, loaded
    or not (a Dataflow launch reads its saved_model.pb alone). Audited, with the
    deletion and insertion checks on: pixel maps [24, 40] of x^2 * W summed over
    channels, within the tolerance."""
    from transforms import results  # noqa: PLC0415
    from transforms.tf_model import resolve_model  # noqa: PLC0415

    weights = np.random.default_rng(13).normal(0, 0.1, (_HEIGHT * _WIDTH * 3, 6))
    model = _fixed_non_square_saved_model(tmp_path / "wide", weights)
    assert resolve_model(model, load=False).image_shape == (_HEIGHT, _WIDTH)
    output = str(tmp_path / "out")
    manifest = _run(non_square_images, model, output, "--attributions", "pixel")
    assert manifest["config"]["faithfulness"] != "none" and manifest["counts"]["rows"] == 8
    frame = results.read_results(output, with_arrays=True).set_index("image_id")
    assert frame.deletion_auc.notna().all() and frame.insertion_auc.notna().all()
    assert frame.within_tolerance.all()
    for image_id, row in frame.iterrows():
        assert list(row.attribution_shape) == [_HEIGHT, _WIDTH]
        x = _padded(non_square_images["pixels"][image_id])
        w = weights[:, row.target_class].reshape(_HEIGHT, _WIDTH, 3)
        expected = (x * x * w).sum(-1)
        maps = results.attributions_of(row)
        assert maps.shape == (_HEIGHT, _WIDTH)
        assert np.linalg.norm(maps - expected) <= 0.02 * np.linalg.norm(expected)
        assert row.relative_delta < 0.01


def test_a_linear_probe_averaging_the_whole_image_is_within_its_tolerance(tmp_path):
    """A 1x1 convolution with a bias and a global average pool at 224 x 224: the score
    is a float32 mean of 50,176 values, rounded more coarsely than 16 eps of |F| (near
    the black baseline the values are nearly equal and their sum rounds one way; along
    the path each F(a) is off by up to about 90 eps). Each panel's scalar error beyond
    16 eps was counted as a unit that switched unseen, on one value: every row was
    flagged at --max_steps (256 evaluations, attribution_error about 2 %) while its map
    was exact to 6e-8 (docs/accuracy.md)."""
    import keras
    from skimage import data as skdata

    from transforms.results import load_input_image

    init = keras.initializers.RandomNormal
    conv = keras.layers.Conv2D(2, 1, kernel_initializer=init(seed=3), bias_initializer=init(seed=4))
    inputs = keras.Input((224, 224, 3))
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(conv(inputs))).save(
        tmp_path / "probe.keras"
    )
    weights = conv.get_weights()[0].reshape(3, 2).astype(np.float64)
    (tmp_path / "photos").mkdir()
    shutil.copy(os.path.join(os.path.dirname(skdata.__file__), "chelsea.png"), tmp_path / "photos")
    flags = cli_args(dataset=tmp_path / "photos", model=tmp_path / "probe.keras")
    run([*flags, "--output", str(tmp_path / "out"), "--faithfulness", "none"])

    results = pd.read_parquet(tmp_path / "out" / "results")
    assert len(results) == 1
    for row in results.itertuples():
        x = load_input_image(str(tmp_path / "out"), row.image_id) / 255.0
        exact = x * weights[:, row.target_class] / (224 * 224)
        stored = np.asarray(row.attributions, np.float64).reshape(exact.shape)
        assert np.linalg.norm(stored - exact) / np.linalg.norm(exact) < 1e-5
        assert row.within_tolerance and row.attribution_error <= 0.015, row
        assert row.steps < 256, row  # refined where F's rounding drifts, not to the cap


def test_the_kept_dofn_specs_answer_as_beam_for_every_dofn_of_a_run(
    image_folder, linear_keras, tmp_path
):
    # A run's `dofn_specs_kept` (the tests' conftest keeps one for the session) answers
    # Beam's question about a DoFn's state and timers once per DoFn, for speed: its
    # answers must be Beam's own, for every DoFn of the job's graph (its own and
    # Beam's, of the read, RunInference and sinks).
    import apache_beam as beam
    from apache_beam.transforms import userstate

    from tests.conftest import job_dofns

    memo = userstate.get_dofn_specs
    assert memo.beams is not memo  # kept by the tests' conftest
    fns = job_dofns(*cli_args(dataset=image_folder["root"], model=linear_keras, output=tmp_path))
    assert len(fns) > 20, len(fns)
    bag = userstate.BagStateSpec("bag", beam.coders.VarIntCoder())

    class Stateful(beam.DoFn):  # none of the job's has state: one that has
        def process(self, element, state=beam.DoFn.StateParam(bag)):  # noqa: B008 (Beam's form)
            yield element

    fns.append(Stateful())
    assert memo(fns[-1]) == ({bag}, set())
    for fn in fns:
        assert memo(fn) == memo.beams(fn) == memo(fn), fn
    # A caller changing its answer changes no later answer.
    states, _ = memo(fns[0])
    states.add("a state")
    assert memo(fns[0]) == memo.beams(fns[0])
