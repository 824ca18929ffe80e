"""The read-back API on output folders with known rows, and on a real DirectRunner run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.conftest import SIZE, WNID_CAT, WNID_SHARK, cli_args, closed_port, write_image
from tests.known_rows import (
    LATER_COLUMNS,
    SIDE,
    as_older_version,
    damage_arrays,
    known_attributions,
    make_row,
    regroup,
    write_output,
)
from transforms import baselines, images, results
from transforms.manifest import estimate_bound
from transforms.schema import METADATA_COLUMNS, results_schema, rows_to_table


def test_metadata_by_default_sorted_across_shards(folder_run):
    meta = results.read_results(folder_run["output"])
    assert list(meta.columns) == list(METADATA_COLUMNS)
    assert "attributions" not in meta.columns
    assert meta.image_id.tolist() == [
        "loose.png",
        f"{WNID_SHARK}/shark.png",
        f"{WNID_CAT}/cat1.png",
        f"{WNID_CAT}/cat2.png",
    ]
    assert meta.file_name.tolist() == ["loose.png", "shark.png", "cat1.png", "cat2.png"]
    assert meta.relative_delta.tolist() == [0.004, 0.05, 0.001, 0.002]
    assert np.isnan(meta.label.iloc[0]) and meta.label.iloc[1] == 2
    assert meta.top_k_probs.iloc[2].tolist() == pytest.approx([0.8, 0.1, 0.05])


def test_named_columns_are_sorted_by_image_id_too(folder_run):
    # Without image_id among the columns the rows came in file order, the shards' order.
    output = folder_run["output"]
    meta = results.read_results(output, ["file_name", "relative_delta"])
    assert list(meta.columns) == ["file_name", "relative_delta"]
    assert meta.file_name.tolist() == ["loose.png", "shark.png", "cat1.png", "cat2.png"]
    assert meta.relative_delta.tolist() == [0.004, 0.05, 0.001, 0.002]
    rows = results.read_results(output, "file_name", with_arrays=True)
    assert list(rows.columns) == ["file_name", "attribution_shape", "attributions"]
    assert rows.file_name.tolist() == meta.file_name.tolist()


def test_columns_from_a_generator_or_named_twice_are_read_once_each(folder_run):
    # A generator gave a frame of no columns (read_results consumed it to look for
    # image_id); image_id named twice raised pandas' "column label is not unique".
    output = folder_run["output"]
    names = ["image_id", "file_name", "relative_delta"]
    expected = results.read_results(output, names)
    pd.testing.assert_frame_equal(results.read_results(output, (c for c in names)), expected)
    twice = results.read_results(output, ["image_id", *names, "file_name"])
    pd.testing.assert_frame_equal(twice, expected)
    assert results.read_table(output, ["file_name", "file_name"]).column_names == ["file_name"]
    rows = results.read_results(output, iter(["file_name", "file_name"]), with_arrays=True)
    assert list(rows.columns) == ["file_name", "attribution_shape", "attributions"]
    assert rows.file_name.tolist() == ["loose.png", "shark.png", "cat1.png", "cat2.png"]
    with pytest.raises(ValueError, match=r"Unknown result columns \[\['file_name'\]\]"):
        results.read_results(output, [["file_name"]])


def test_metadata_reads_never_touch_the_attribution_column(folder_run, tmp_path):
    # Overwrite the attributions' column chunk with garbage: metadata still reads.
    path = next((tmp_path / "out" / "results").glob("part-00000*"))
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(len(METADATA_COLUMNS))
    assert chunk.path_in_schema.startswith("attributions")
    data = bytearray(path.read_bytes())
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data[start : start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    path.write_bytes(bytes(data))

    meta = results.read_results(folder_run["output"])
    assert len(meta) == 4
    assert len(pd.read_parquet(path, columns=["image_id", "relative_delta"])) == 2
    with pytest.raises(OSError):
        results.read_results(folder_run["output"], with_arrays=True)


def test_filtered_reads_of_arrays_read_only_the_row_groups_holding_the_rows(folder_run):
    # Two row groups whose statistics cannot exclude cat1 (ids loose..cat1, shark..cat2;
    # targets 7..281, 3..282), the second's arrays damaged: reads of cat1's arrays must
    # not decode them (pyarrow decoded every group's arrays before filtering the rows).
    order = ["loose.png", f"{WNID_CAT}/cat1.png", f"{WNID_SHARK}/shark.png", f"{WNID_CAT}/cat2.png"]
    damage_arrays(regroup(folder_run["output"], order, rows_per_group=2), [1])

    output, cat1 = folder_run["output"], f"{WNID_CAT}/cat1.png"
    row = results.read_row(output, "cat1.png")
    np.testing.assert_array_equal(results.attributions_of(row), known_attributions(1))
    for filters in ([("image_id", "in", [cat1])], pc.field("target_class") == 281):
        rows = results.read_results(output, with_arrays=True, filters=filters)
        assert rows.image_id.tolist() == [cat1]
        np.testing.assert_array_equal(results.attributions_of(rows.iloc[0]), known_attributions(1))
    assert (
        results.read_table(output, with_arrays=True, filters=[("label", "==", 999)]).num_rows == 0
    )
    with pytest.raises(OSError):  # the damage is real: a read of the others' arrays fails
        results.read_row(output, "cat2.png")


@pytest.mark.parametrize("mode", ["full", "pixel"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_attributions_round_trip_in_their_shape_and_dtype(tmp_path, mode, dtype):
    rows = [[make_row("a.png", None, 1, 0.5, 0.0, mode=mode, dtype=dtype, seed=5)]]
    output = write_output(
        tmp_path / "out", rows, dataset=str(tmp_path), dtype=dtype, attributions=mode
    )
    frame = results.read_results(output, with_arrays=True)
    heat = results.attributions_of(frame.iloc[0])
    expected = known_attributions(5, mode)
    assert heat.shape == ((SIDE, SIDE, 3) if mode == "full" else (SIDE, SIDE))
    assert heat.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(heat, expected.astype(dtype))
    # Named tuples and dicts work too.
    np.testing.assert_array_equal(results.attributions_of(next(frame.itertuples())), heat)
    np.testing.assert_array_equal(results.attributions_of(frame.iloc[0].to_dict()), heat)


def test_attributions_of_a_one_row_frame_and_not_of_several(folder_run):
    rows = results.read_results(folder_run["output"], with_arrays=True)
    one = rows[rows.file_name == "cat1.png"]
    np.testing.assert_array_equal(results.attributions_of(one), known_attributions(1))
    with pytest.raises(ValueError, match="one row, got a DataFrame of 4 rows; pass df.iloc"):
        results.attributions_of(rows)


def test_with_arrays_reads_the_arrays_with_named_columns_too(folder_run):
    # with_arrays=True was dropped when columns were named, and attributions_of then
    # asked for with_arrays=True; without attribution_shape it raised KeyError.
    output = folder_run["output"]
    rows = results.read_results(output, ["image_id", "target_class"], with_arrays=True)
    assert list(rows.columns) == ["image_id", "target_class", "attribution_shape", "attributions"]
    row = rows[rows.image_id == f"{WNID_CAT}/cat1.png"].iloc[0]
    np.testing.assert_array_equal(results.attributions_of(row), known_attributions(1))
    table = results.read_table(output, "attributions", with_arrays=True)
    assert table.column_names == ["attributions", "attribution_shape"]
    arrays = results.read_results(output, ["image_id", "attributions"])
    with pytest.raises(ValueError, match="no 'attribution_shape' column; .*with_arrays=True"):
        results.attributions_of(arrays.iloc[0])


def test_attributions_of_explains_missing_arrays(folder_run, tmp_path):
    meta = results.read_results(folder_run["output"])
    with pytest.raises(ValueError, match="with_arrays=True"):
        results.attributions_of(meta.iloc[0])
    output = write_output(
        tmp_path / "none",
        [[make_row("a.png", None, 1, 0.5, 0.0, mode="none")]],
        dataset=str(tmp_path),
        attributions="none",
    )
    row = results.read_row(output, "a.png")
    with pytest.raises(ValueError, match="--attributions none"):
        results.attributions_of(row)
    # Values that do not fill their shape (a file another tool wrote) are named, not
    # numpy's "cannot reshape array".
    odd = {"image_id": "a.png", "attributions": np.zeros(3), "attribution_shape": [2, 2]}
    with pytest.raises(ValueError, match=r"3 attribution values do not fit shape \[2, 2\]"):
        results.attributions_of(odd)


def test_filters_as_tuples_and_expressions(folder_run):
    output = folder_run["output"]
    above = results.read_results(output, filters=[("relative_delta", ">", 0.003)])
    assert above.file_name.tolist() == ["loose.png", "shark.png"]
    cats = results.read_results(output, ["file_name"], filters=pc.field("label") == 281)
    assert cats.file_name.tolist() == ["cat1.png", "cat2.png"]
    either = results.read_results(
        output, ["file_name"], filters=[[("label", "==", 2)], [("predicted_class", "==", 7)]]
    )
    assert sorted(either.file_name) == ["loose.png", "shark.png"]
    with pytest.raises(ValueError, match="Unknown result columns \\['nope'\\]"):
        results.read_results(output, ["file_name", "nope"])
    one = results.read_results(output, "file_name")  # one column by name
    assert list(one.columns) == ["file_name"] and len(one) == 4
    with pytest.raises(ValueError, match="filters: unknown column 'nope'; the columns are: "):
        results.read_results(output, filters=[("nope", "==", 1)])
    with pytest.raises(ValueError, match="filters: operator '~' is not one of: ==, ="):
        results.read_results(output, filters=[("label", "~", 1)])  # pyarrow blamed 'label'
    with pytest.raises(ValueError, match="is not a \\(column, operator, value\\) term"):
        results.read_results(output, filters=[("label", "==")])


def test_filters_as_lists_or_one_term_as_pyarrow_reads_them(folder_run):
    # A term as a list (as from JSON) was split into its characters, and one term
    # alone failed with "'float' object is not iterable".
    output = folder_run["output"]
    expected = ["loose.png", "shark.png"]
    for filters in (
        ("relative_delta", ">", 0.003),
        [["relative_delta", ">", 0.003]],
        [[["relative_delta", ">", 0.003]]],
    ):
        assert results.read_results(output, filters=filters).file_name.tolist() == expected
    both = [["relative_delta", ">", 0.003], ["label", "==", 2]]
    assert results.read_results(output, filters=both).file_name.tolist() == ["shark.png"]
    with pytest.raises(ValueError, match="an empty group of conditions"):
        results.read_results(output, filters=[[]])


def test_in_filters_with_empty_and_typed_lists(folder_run):
    output = folder_run["output"]
    # An empty list (e.g. the ids of an empty selection) gives an empty frame, not an
    # ArrowTypeError "string vs null".
    none = results.read_results(output, with_arrays=True, filters=[("image_id", "in", [])])
    assert none.empty and "attributions" in none.columns
    every = results.read_results(output, ["file_name"], filters=[("image_id", "not in", [])])
    assert len(every) == len(results.read_results(output))
    some = results.read_results(
        output, ["file_name"], filters=[("label", "in", [2, 281]), ("relative_delta", "<", 1)]
    )
    assert sorted(some.file_name) == ["cat1.png", "cat2.png", "shark.png"]
    empty_or = results.read_results(
        output, ["file_name"], filters=[[("image_id", "in", [])], [("label", "==", 2)]]
    )
    assert empty_or.file_name.tolist() == ["shark.png"]


def test_in_filters_refuse_a_scalar_or_mistyped_values_naming_the_term(folder_run):
    output = folder_run["output"]
    # A set or a tuple is a list of values too.
    cats = results.read_results(output, ["file_name"], filters=[("label", "in", {281})])
    assert sorted(cats.file_name) == ["cat1.png", "cat2.png"]
    # A scalar was "TypeError: 'int' object is not iterable"; a string was read as its letters.
    with pytest.raises(ValueError, match=r"filters: 'in' takes a list of values, e\.g\. \('label'"):
        results.read_results(output, filters=[("label", "in", 281)])
    with pytest.raises(
        ValueError, match="filters: 'not in' takes a list of values.*got 'cat1.png'"
    ):
        results.read_results(output, filters=[("file_name", "not in", "cat1.png")])
    with pytest.raises(
        ValueError, match=r"the values of \('label', 'in', \.\.\.\) are not all int"
    ):
        results.read_results(output, filters=[("label", "in", ["cat"])])


def test_comparison_filters_refuse_a_value_of_another_type_naming_the_term(folder_run):
    # They raised Arrow's "Function 'equal' has no kernel matching input types (int64,
    # string)" from the read, naming no term.
    output = folder_run["output"]
    with pytest.raises(
        ValueError, match=r"filters: \('label', '==', '281'\) compares the int64 column with str"
    ):
        results.read_results(output, filters=[("label", "==", "281")])
    with pytest.raises(ValueError, match=r"\('top_k_classes', '>=', 3\) compares the list<"):
        results.read_table(output, filters=[("top_k_classes", ">=", 3)])
    # What Arrow compares still reads: a float or a NumPy integer for an int64 column.
    cats = results.read_results(output, ["file_name"], filters=[("label", "==", 281.0)])
    assert sorted(cats.file_name) == ["cat1.png", "cat2.png"]
    sharks = results.read_results(output, ["file_name"], filters=[("label", "<", np.int64(3))])
    assert sharks.file_name.tolist() == ["shark.png"]


def test_filters_as_a_string_are_refused_saying_what_to_pass(folder_run):
    # A query string was read as its letters: "('l', 'a', 'b', ...) is not a term".
    with pytest.raises(ValueError, match=r"filters: 'label == 281' is a string; pass \(column,"):
        results.read_results(folder_run["output"], filters="label == 281")


def _two_x_pngs() -> list[list[dict]]:
    """a/x.png (two targets, 9 and 5), b/x.png and b/y.png: two images named x.png."""
    return [
        [
            make_row("a/x.png", None, 5, 0.5, 0.0, target=9, seed=1),
            make_row("a/x.png", None, 5, 0.5, 0.0, target=5, seed=2),
            make_row("b/x.png", None, 6, 0.5, 0.0, seed=3),
            make_row("b/y.png", None, 6, 0.5, 0.0, seed=4),
        ]
    ]


def test_read_row_by_file_name_or_id_and_target(tmp_path):
    rows = _two_x_pngs()
    output = write_output(tmp_path / "out", rows, dataset=str(tmp_path))
    row = results.read_row(output, "a/x.png")  # the predicted class's row by default
    assert row.target_class == 5
    np.testing.assert_array_equal(results.attributions_of(row), known_attributions(2))
    assert results.read_row(output, "a/x.png", target_class=9).target_class == 9
    assert results.read_row(output, "y.png").image_id == "b/y.png"
    with pytest.raises(ValueError, match="names 2 images: a/x.png, b/x.png"):
        results.read_row(output, "x.png")
    with pytest.raises(KeyError, match="No result row for 'z.png'"):
        results.read_row(output, "z.png")
    with pytest.raises(KeyError, match="no row with target_class 3"):
        results.read_row(output, "a/x.png", target_class=3)
    meta = results.read_results(output)  # a metadata row reads back as itself
    for i in range(len(meta)):
        for row in (meta.iloc[i], meta.iloc[i].to_dict(), list(meta.itertuples())[i]):
            full = results.read_row(output, row)
            assert (full.image_id, full.target_class) == (meta.image_id[i], meta.target_class[i])
    with pytest.raises(TypeError, match="not int 0; .* pass frame.iloc"):
        results.read_row(output, 0)
    # A top-level y.png is named by its image_id, though b/y.png's file name is y.png too.
    rows[0].append(make_row("y.png", None, 7, 0.5, 0.0, seed=5))
    output = write_output(tmp_path / "out2", rows, dataset=str(tmp_path))
    assert results.read_row(output, "y.png").image_id == "y.png"
    assert results.read_row(output, "b/y.png").image_id == "b/y.png"


def test_read_row_refuses_an_ambiguous_name_or_absent_target_before_reading_arrays(tmp_path):
    # Every map damaged: the refusals come from the metadata alone (they came after
    # decoding every matching row's arrays: 24 s and 3.3 GB on 7,500 rows at 224x224).
    output = write_output(tmp_path / "out", _two_x_pngs(), dataset=str(tmp_path))
    damage_arrays(next(Path(output, "results").glob("part-*")), [0])
    with pytest.raises(ValueError, match="names 2 images: a/x.png, b/x.png"):
        results.read_row(output, "x.png")
    with pytest.raises(KeyError, match="no row with target_class 3; its rows' targets: 5, 9"):
        results.read_row(output, "a/x.png", target_class=3)
    with pytest.raises(OSError):  # the damage is real
        results.read_row(output, "a/x.png")


def test_read_row_names_a_target_class_it_cannot_match_and_the_targets_there_are(tmp_path):
    # target_class="9" read as no row at all: "'a/x.png' has no row with target_class 9".
    output = write_output(tmp_path / "out", _two_x_pngs(), dataset=str(tmp_path))
    with pytest.raises(TypeError, match=r"target_class must be a class index .an integer"):
        results.read_row(output, "a/x.png", target_class="9")
    with pytest.raises(KeyError, match=r"no row with target_class 3; its rows' targets: 5, 9"):
        results.read_row(output, "a/x.png", target_class=3)
    # A class index as NumPy or pandas give it (a label read as float64) is one.
    assert results.read_row(output, "a/x.png", target_class=np.int64(9)).target_class == 9
    assert results.read_row(output, "a/x.png", target_class=9.0).target_class == 9


def test_read_row_of_a_row_read_without_its_image_id(tmp_path):
    # README's first query reads columns=["file_name", ...]: such a row names its file
    # (it was refused as if it were no row at all, "not Series").
    output = write_output(tmp_path / "out", _two_x_pngs(), dataset=str(tmp_path))
    meta = pd.read_parquet(os.path.join(output, "results"), columns=["file_name", "target_class"])
    row = results.read_row(output, meta[meta.file_name == "y.png"].iloc[0])
    assert (row.image_id, row.target_class) == ("b/y.png", 6)
    np.testing.assert_array_equal(results.attributions_of(row), known_attributions(4))
    with pytest.raises(ValueError, match="'x.png' names 2 images"):
        results.read_row(output, meta[meta.target_class == 9].iloc[0])
    with pytest.raises(TypeError, match="with its image_id or file_name"):
        results.read_row(output, {"target_class": 9})


def test_read_row_of_a_row_without_its_image_id_never_gives_another_images_row(tmp_path):
    # b/y.png's row read without image_id names only its file, y.png: the top-level
    # y.png's image_id is that too, and its row came back for b/y.png's, silently.
    rows = _two_x_pngs()
    rows[0].append(make_row("y.png", None, 6, 0.5, 0.0, seed=5))  # b/y.png's class too
    output = write_output(tmp_path / "out", rows, dataset=str(tmp_path))
    meta = pd.read_parquet(os.path.join(output, "results"), columns=["file_name", "target_class"])
    for _, row in meta[meta.file_name == "y.png"].iterrows():  # b/y.png's, the top-level one's
        with pytest.raises(ValueError, match=r"'y.png' names 2 images: b/y.png, y.png\. Pass"):
            results.read_row(output, row)
    # A row with its image_id, or the image_id itself, is that image's.
    row = results.read_row(output, {"image_id": "y.png", "file_name": "y.png"})
    np.testing.assert_array_equal(results.attributions_of(row), known_attributions(5))
    assert results.read_row(output, "y.png").image_id == "y.png"


def test_read_row_of_a_one_row_frame_and_not_of_several(tmp_path):
    # meta[meta.file_name == "x.png"] is a row too, as attributions_of takes it; it
    # was read as the text of its image_id column ('0    a/x.png\nName: ...').
    rows = [
        [
            make_row("a/x.png", None, 5, 0.5, 0.0, target=9, seed=1),
            make_row("a/x.png", None, 5, 0.5, 0.0, target=5, seed=2),
        ]
    ]
    output = write_output(tmp_path / "out", rows, dataset=str(tmp_path))
    meta = results.read_results(output)
    row = results.read_row(output, meta[meta.target_class == 9])
    assert (row.image_id, row.target_class) == ("a/x.png", 9)
    np.testing.assert_array_equal(results.attributions_of(row), known_attributions(1))
    with pytest.raises(ValueError, match="read_row takes one row, got a DataFrame of 2 rows"):
        results.read_row(output, meta)


def test_path_of_is_sorted_by_alpha(folder_run):
    row = results.read_row(folder_run["output"], "cat1.png")
    alphas, scores = results.path_of(row)
    assert alphas.tolist() == pytest.approx([0.1, 0.5, 0.9])
    assert scores.tolist() == pytest.approx([1.5, 3.0, 4.9])


def test_misclassified_tolerance_and_class_filters(folder_run):
    meta = results.read_results(folder_run["output"])
    assert results.misclassified(meta).file_name.tolist() == ["shark.png", "cat2.png"]
    assert results.above_tolerance(meta, 0.01).file_name.tolist() == ["shark.png"]
    assert results.above_tolerance(meta, 0.0015).file_name.tolist() == [
        "loose.png",
        "shark.png",
        "cat2.png",
    ]
    # The run's own bounds (its estimate_bound, not its --tolerance) flag what it flagged.
    config = results.read_manifest(folder_run["output"])["config"]
    flagged = results.above_tolerance(
        meta, estimate_bound(config), config["completeness_tolerance"]
    )
    assert config["estimate_bound"] < config["tolerance"]
    assert flagged.file_name.tolist() == meta[~meta.within_tolerance].file_name.tolist()
    # Each bound on its own column: the per-pixel error, then the completeness delta.
    other = meta.assign(attribution_error=0.0, relative_delta=0.0)
    other.loc[other.file_name == "cat1.png", "attribution_error"] = 0.012
    other.loc[other.file_name == "cat2.png", "relative_delta"] = 0.008
    assert results.above_tolerance(other, 0.015).empty
    assert results.above_tolerance(other, 0.01).file_name.tolist() == ["cat1.png"]
    assert results.above_tolerance(other, 0.015, 0.005).file_name.tolist() == ["cat2.png"]
    # A row at a bound is within it, as within_tolerance (error <= bound) has it.
    assert results.above_tolerance(other, 0.012, 0.008).empty
    assert results.for_class(meta, 281).file_name.tolist() == ["cat1.png", "cat2.png"]
    assert results.for_class(meta, "class 281").file_name.tolist() == ["cat1.png", "cat2.png"]
    assert results.for_class(meta, 282, "predicted").file_name.tolist() == ["cat2.png"]
    # By name, in the chosen column's names: no image is labelled 'class 282' or 'class 3'.
    assert results.for_class(meta, "class 282", "predicted").file_name.tolist() == ["cat2.png"]
    assert results.for_class(meta, "class 3", "target").file_name.tolist() == ["shark.png"]
    with pytest.raises(ValueError, match="one of: label, predicted, target"):
        results.for_class(meta, 1, "score")


def test_row_filters_on_projected_frames(folder_run):
    """Frames read with some columns (as the README advises) work, or name what is missing."""
    output = folder_run["output"]
    full = results.per_class_accuracy(results.read_results(output))
    columns = ["image_id", "label", "label_name", "predicted_class", "predicted_name"]
    pd.testing.assert_frame_equal(
        results.per_class_accuracy(results.read_results(output, columns)), full
    )
    slim = results.read_results(output, ["file_name", "label", "predicted_class"])
    with pytest.raises(ValueError, match="per_class_accuracy needs .* has no image_id, label_name"):
        results.per_class_accuracy(slim)
    with pytest.raises(ValueError, match="above_tolerance needs the columns relative_delta"):
        results.above_tolerance(slim, 0.01)


def test_per_class_accuracy_counts_each_image_once(tmp_path):
    # --target top_k: two rows per image; accuracy must count images, not rows.
    rows = [
        [
            make_row("c1.png", 281, 281, 0.8, 0.0),
            make_row("c1.png", 281, 281, 0.8, 0.0, target=282),
            make_row("c2.png", 281, 282, 0.9, 0.0),
            make_row("c2.png", 281, 282, 0.9, 0.0, target=283),
            make_row("c3.png", 281, 282, 0.7, 0.0),
            make_row("c4.png", 281, 283, 0.7, 0.0),  # a rarer confusion than 282's
            make_row("s.png", 2, 3, 0.6, 0.0),
            make_row("u.png", None, 5, 0.6, 0.0),
            make_row("b.png", 1, 1, 0.9, 0.0),  # the best class has the lowest index
        ]
    ]
    output = write_output(tmp_path / "out", rows, dataset=str(tmp_path))
    meta = results.read_results(output)
    per_image = results.one_row_per_image(meta)
    assert per_image.image_id.tolist() == [
        "b.png",
        "c1.png",
        "c2.png",
        "c3.png",
        "c4.png",
        "s.png",
        "u.png",
    ]
    assert (per_image.target_class == per_image.predicted_class).all()
    table = results.per_class_accuracy(meta)
    assert table.index.tolist() == [2, 281, 1]  # worst first, not by class
    assert table.loc[281].to_dict() == {
        "label_name": "class 281",
        "images": 4,
        "correct": 1,
        "accuracy": pytest.approx(1 / 4),
        "top_confusion": "class 282",
        "top_confusion_count": 2,
    }
    assert table.loc[2, "accuracy"] == 0.0 and table.loc[2, "top_confusion"] == "class 3"
    assert results.per_class_accuracy(meta[meta.label.isna()]).empty
    # The wrong predictions it picks from, each image once, correct ones left out.
    counts = results.confusions(meta)
    assert counts[(281, "class 282")] == 2 and (281, "class 281") not in counts
    wrong = table["top_confusion_count"]
    assert counts.groupby(level=0).max().to_dict() == wrong[wrong > 0].to_dict()  # 1: none


def test_load_input_image_is_what_the_model_saw(folder_run):
    output = folder_run["output"]
    cat = results.load_input_image(output, f"{WNID_CAT}/cat1.png")
    assert cat.dtype == np.uint8 and cat.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(cat, folder_run["pixels"][f"{WNID_CAT}/cat1.png"])
    shark = results.load_input_image(results.read_manifest(output), f"{WNID_SHARK}/shark.png")
    # 8x16 fits the 16x16 square unscaled, centred between black bands.
    np.testing.assert_array_equal(shark[4:12], folder_run["pixels"][f"{WNID_SHARK}/shark.png"])
    assert not shark[:4].any() and not shark[12:].any()
    loaded = results.input_images(output, ["loose.png", "gone.png", "loose.png"])
    assert list(loaded) == ["loose.png"]
    with pytest.raises(results.ImageUnavailable, match="gone.png cannot be read"):
        results.load_input_image(output, "gone.png")


def test_load_input_image_of_a_non_ascii_name_where_python_reads_names_as_ascii(
    folder_run,
):
    # A C locale with PYTHONUTF8=0: Python names files in ASCII, the job still gives
    # 'café.png' its UTF-8 id, but re-loading it failed ("'ascii' codec can't encode
    # character '\\xe9'"): the report showed no photo, the sanity check exited 2.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.rename(
        os.path.join(folder_run["root"], "loose.png"), os.path.join(folder_run["root"], "café.png")
    )
    code = (  # ASCII alone: the id as read from the results, 'caf\\xe9.png' in Python
        "from transforms import results; "
        f"print(results.load_input_image({folder_run['output']!r}, 'caf\\xe9.png').shape)"
    )
    env = {**os.environ, "PYTHONPATH": root, "LC_ALL": "C", "PYTHONUTF8": "0"}
    env["PYTHONCOERCECLOCALE"] = "0"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.strip() == f"({SIZE}, {SIZE}, 3)", done.stderr


def test_load_input_image_of_a_non_ascii_folder_where_python_reads_names_as_ascii(tmp_path):
    # The same of the image folder's own name ('fotos-é', in the manifest as UTF-8 text),
    # where the run read it and where image_root= (a str of the caller's) says it is now.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    write_image(tmp_path / "fotos-é" / "a.png", np.full((SIZE, SIZE, 3), 90, np.uint8))
    rows = [[make_row("a.png", None, 1, 0.5, 0.0)]]
    output = write_output(tmp_path / "out", rows, dataset=str(tmp_path / "fotos-é"))
    moved = str(tmp_path) + "/fotos-\\xe9"  # ASCII alone in the code: 'fotos-é' in Python
    code = (
        "from transforms import results; "
        f"print(results.load_input_image({str(output)!r}, 'a.png').shape, "
        f"results.load_input_image({str(output)!r}, 'a.png', image_root='{moved}').shape)"
    )
    env = {**os.environ, "PYTHONPATH": root, "LC_ALL": "C", "PYTHONUTF8": "0"}
    env["PYTHONCOERCECLOCALE"] = "0"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.split() == [f"({SIZE},", f"{SIZE},", "3)"] * 2, done.stderr


def test_load_input_image_of_a_file_changed_since_the_run_says_why(folder_run):
    """A file replaced by one that is no image, or by a folder, since the run: said so,
    as ImageUnavailable (the report and plots then show the map without the photo)."""
    root = folder_run["root"]
    with open(os.path.join(root, "loose.png"), "wb") as f:
        f.write(b"not an image any more")
    with pytest.raises(results.ImageUnavailable, match=r"loose.png cannot be decoded: "):
        results.load_input_image(folder_run["output"], "loose.png")
    cat = os.path.join(root, WNID_CAT, "cat1.png")
    os.remove(cat)
    os.mkdir(cat)
    with pytest.raises(results.ImageUnavailable, match=r"cat1.png cannot be read: .*directory"):
        results.load_input_image(folder_run["output"], f"{WNID_CAT}/cat1.png")
    loaded = results.input_images(folder_run["output"], ["loose.png", f"{WNID_SHARK}/shark.png"])
    assert list(loaded) == [f"{WNID_SHARK}/shark.png"]


def test_load_input_image_moved_folder_sample_and_tfds(folder_run, tmp_path):
    manifest = results.read_manifest(folder_run["output"])
    moved = dict(manifest, dataset=str(tmp_path / "old_place"))
    with pytest.raises(results.ImageUnavailable, match="pass image_root="):
        results.load_input_image(moved, "loose.png")
    image = results.load_input_image(moved, "loose.png", image_root=folder_run["root"])
    np.testing.assert_array_equal(image, folder_run["pixels"]["loose.png"])

    tfds = dict(manifest, dataset="imagenet_a", split="test[:2%]")
    with pytest.raises(results.ImageUnavailable) as caught:
        results.load_input_image(tfds, "imagenet_a/imagenet_a-test.tfrecord-00000-of-00001__3")
    # The cause alone: what a caller does without the photo is the caller's to say (the
    # sanity check's error ended "the heat map is shown without the photo").
    assert str(caught.value) == (
        "images of the TFDS dataset 'imagenet_a' are not re-loaded (it would mean scanning "
        "the dataset)."
    )

    from transforms.sources import sample_files

    sample = dict(manifest, dataset="sample")
    chelsea = next(f for f in sample_files() if f.image_id.endswith("chelsea.png"))
    with open(chelsea.path, "rb") as f:
        expected = images.resize_with_pad(images.decode_image(f.read(), SIZE), SIZE)
    np.testing.assert_array_equal(results.load_input_image(sample, chelsea.image_id), expected)
    # A file name instead of the image_id: the error says what to pass.
    with pytest.raises(results.ImageUnavailable, match=f"did you mean '{chelsea.image_id}'"):
        results.load_input_image(sample, "chelsea.png")
    with pytest.raises(results.ImageUnavailable, match="'cat1.png' only a file name, not"):
        results.load_input_image(manifest, "cat1.png")  # it is f"{WNID_CAT}/cat1.png"
    # A row's own id whose file is gone: the sanity check and the report logged only
    # 'is it a row's image_id?' of the id they had read from the row.
    (tmp_path / "emptied").mkdir()
    emptied = dict(manifest, dataset=str(tmp_path / "emptied"))
    with pytest.raises(results.ImageUnavailable, match=r"\(deleted or moved since the run\? or"):
        results.load_input_image(emptied, "loose.png")


def test_an_image_id_outside_the_runs_folder_is_never_read(tmp_path):
    """Rows are data a run's sharer wrote: an image_id `../private/me.png` or an absolute
    one read that file, outside the image folder, into the report's cards and gallery.
    The job's ids are paths inside their folder; others are refused unread."""
    write_image(tmp_path / "private" / "me.png", np.full((SIZE, SIZE, 3), 200, np.uint8))
    write_image(tmp_path / "images" / "ok.png", np.full((SIZE, SIZE, 3), 50, np.uint8))
    outside = ["../private/me.png", str(tmp_path / "private" / "me.png"), "a/../../private/me.png"]
    rows = [make_row(i, None, 1, 0.5, 0.0) for i in ["ok.png", *outside]]
    output = write_output(tmp_path / "out", [rows], dataset=str(tmp_path / "images"))
    for image_id in outside:
        for root in (None, str(tmp_path / "images")):
            with pytest.raises(results.ImageUnavailable) as refused:
                results.load_input_image(output, image_id, image_root=root)
            assert str(refused.value) == (
                f"{image_id!r} is not a path inside the run's image folder (absolute, or with "
                "'..'): the job gives no such image_id, and a file outside the folder is not read."
            )
    assert list(results.input_images(output, ["ok.png", *outside])) == ["ok.png"]


def test_a_fifo_or_device_in_place_of_an_image_is_refused_not_read(tmp_path):
    """The job never opens a FIFO or reads a device; the read-back did: the report of
    a run whose image was replaced by a FIFO waited forever, and by a link to /dev/zero
    read until memory ran out."""
    write_image(tmp_path / "images" / "ok.png", np.full((SIZE, SIZE, 3), 50, np.uint8))
    rows = [make_row(i, None, 1, 0.5, 0.0) for i in ("ok.png", "fifo.png", "zero.png")]
    output = write_output(tmp_path / "out", [rows], dataset=str(tmp_path / "images"))
    os.mkfifo(tmp_path / "images" / "fifo.png")
    (tmp_path / "images" / "zero.png").symlink_to("/dev/zero")
    done = threading.Event()
    threading.Thread(
        target=_unblock_a_reader_of, args=(tmp_path / "images" / "fifo.png", done), daemon=True
    ).start()
    try:
        for name, kind in (("fifo.png", "a FIFO (named pipe)"), ("zero.png", "a character device")):
            with pytest.raises(results.ImageUnavailable) as refused:
                results.load_input_image(output, name)
            path = tmp_path / "images" / name
            assert str(refused.value) == f"{path} cannot be read: {kind}, not a regular file"
    finally:
        done.set()


def _unblock_a_reader_of(fifo, done: threading.Event, after: float = 10.0) -> None:
    """If the code under test opened `fifo` to read (it must not: that waits for a
    writer forever), open its write end and close it, so that the test fails on the
    message instead of hanging."""
    while not done.wait(after):
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO: no reader waits
        except OSError:
            continue


def test_baseline_images_match_the_run(folder_run):
    manifest = results.read_manifest(folder_run["output"])
    image = folder_run["pixels"]["loose.png"]
    black = results.baseline_images(manifest, image, "loose.png")
    assert black.shape == (1, SIZE, SIZE, 3) and not black.any()
    manifest = dict(
        manifest,
        model=dict(manifest["model"], input_range=[-1.0, 1.0]),
        config=dict(manifest["config"], baselines=["white", "noise"], seed=3),
    )
    white, noise = results.baseline_images(manifest, image, "loose.png")
    np.testing.assert_array_equal(white, np.ones_like(white))
    scaled = images.scale_to_range(image, (-1.0, 1.0))
    expected = baselines.make_baselines(scaled, ["noise"], (-1.0, 1.0), "loose.png", 3)[0]
    np.testing.assert_allclose(noise, (expected + 1) / 2, atol=1e-6)


def test_errors_and_empty_runs(folder_run, tmp_path):
    with pytest.raises(KeyError, match="'broken.jpg' failed at stage 'decode': broken image"):
        results.read_row(folder_run["output"], "broken.jpg")
    errors = results.read_errors(folder_run["output"])
    assert errors.to_dict("records") == [
        {
            "image_id": "broken.jpg",
            "file_name": "broken.jpg",
            "stage": "decode",
            "error": "broken image: truncated",
        }
    ]
    empty = write_output(tmp_path / "empty", [], dataset=str(tmp_path), dtype="float16")
    frame = results.read_results(empty, with_arrays=True)
    assert frame.empty and list(frame.columns) == results_schema().names
    assert results.per_class_accuracy(frame).empty
    with pytest.raises(
        FileNotFoundError, match=r"holds no results/\*.parquet and no manifest.json"
    ):
        results.read_results(str(tmp_path / "nothing"))
    inside = os.path.join(folder_run["output"], "results")  # the pandas one-liner's path
    for path in (inside, results._parquet_files(inside)[0]):
        for read in (results.read_results, results.read_errors):
            with pytest.raises(
                FileNotFoundError, match="it is inside the run '.*out': pass that folder"
            ):
                read(path)
    shutil.rmtree(os.path.join(empty, "errors"))
    assert results.read_errors(empty).empty  # a run without error files
    for not_a_run in (tmp_path / "nothing", tmp_path / "images"):
        with pytest.raises(FileNotFoundError, match="no errors/.*no manifest.json"):
            results.read_errors(str(not_a_run))
        with pytest.raises(FileNotFoundError, match="holds no manifest.json: it is not") as e:
            results.read_manifest(not_a_run)
        assert e.value.filename == os.path.join(str(not_a_run), "manifest.json")


def test_read_row_of_a_file_name_that_failed_in_a_class_folder_gives_its_error_record(
    folder_run,
):
    """A file name is matched to the run's error records by file_name too, as to its
    rows: an input that failed inside a class folder is named with its error."""
    import pyarrow as pa

    from transforms.schema import ERROR_SCHEMA
    from transforms.sinks import write_parquet_file

    output = folder_run["output"]
    failed = {"image_id": f"{WNID_CAT}/bad.png", "file_name": "bad.png", "stage": "decode"}
    records = pa.Table.from_pylist([{**failed, "error": "not an image"}], schema=ERROR_SCHEMA)
    path = os.path.join(output, "errors", "part-00001-of-00002.parquet")
    write_parquet_file(path, [records], ERROR_SCHEMA, os.path.join(output, ".tmp"))
    said = f"'bad.png' in .*: '{WNID_CAT}/bad.png' failed at stage 'decode': not an image"
    with pytest.raises(KeyError, match=said):
        results.read_row(output, "bad.png")


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_manifest_json_that_is_no_file_is_refused_naming_it_and_what_it_is(tmp_path, kind):
    """manifest.json is read as an input file is (a FIFO refused, not waited on), whose
    refusal named neither the file ('a FIFO (named pipe), not a regular file'), nor,
    for a folder, anything but a descriptor number ('Is a directory: 3')."""
    path = tmp_path / "out" / "manifest.json"
    path.parent.mkdir()
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    said = "a FIFO (named pipe)" if kind == "fifo" else "a directory"
    with pytest.raises(OSError) as refused:
        results.read_manifest(str(tmp_path / "out"))
    assert str(refused.value) == f"{str(path)!r}: {said}, not a regular file"


def test_real_run_round_trip(image_folder, linear_keras, linear_weights, tmp_path):
    """The API on a real DirectRunner run: known IG of a linear model, re-loaded inputs."""
    from pipeline import run

    output = str(tmp_path / "out")
    args = cli_args(
        runner="DirectRunner",
        dataset=image_folder["root"],
        model=linear_keras,
        output=output,
        steps=4,
        method="riemann_left",
        attributions="pixel",
        attribution_dtype="float16",
    )
    run(args, save_main_session=False)
    weights, bias = linear_weights
    meta = results.read_results(output)
    assert len(meta) == 4 and "attributions" not in meta
    row = results.read_row(output, "cat2.png")
    x = image_folder["pixels"][f"{WNID_CAT}/cat2.png"].astype(np.float32) / 255.0
    expected = (x * weights[:, row.target_class].reshape(SIZE, SIZE, 3)).sum(axis=-1)
    heat = results.attributions_of(row)
    assert heat.shape == (SIZE, SIZE) and heat.dtype == np.float16
    np.testing.assert_allclose(heat, expected, rtol=2e-3, atol=2e-4)
    np.testing.assert_array_equal(
        results.load_input_image(output, row.image_id), image_folder["pixels"][row.image_id]
    )
    assert results.read_errors(output).image_id.tolist() == ["broken.jpg"]
    labels = {f"{WNID_CAT}/cat1.png": 281, f"{WNID_CAT}/cat2.png": 281, "n01484850/shark.png": 2}
    inputs = {i: (image_folder["pixels"][i].astype(np.float32) / 255.0).reshape(-1) for i in labels}
    predicted = {i: int(np.argmax(x @ weights + bias)) for i, x in inputs.items()}
    expected_wrong = sorted(i for i in labels if predicted[i] != labels[i])
    assert expected_wrong  # random weights: the tiny model gets images wrong
    assert results.misclassified(meta).image_id.tolist() == expected_wrong


def test_a_results_folder_holding_two_runs_files_says_so(image_folder, linear_keras, tmp_path):
    """A run writes one row per image and target. Another run's file copied into its
    results/ (by hand: the job refuses to mix runs) gave each image two rows, read back
    as one run's without a word, and read_row picked one of the two."""
    from pipeline import run

    for baseline in ("black", "white"):
        flags = dict(dataset=image_folder["root"], model=linear_keras, output=tmp_path / baseline)
        args = cli_args(runner="DirectRunner", **flags, steps=4, baseline=baseline)
        run([*args, "--faithfulness", "none"], save_main_session=False)
    [white] = (tmp_path / "white" / "results").glob("*.parquet")
    shutil.copy(white, tmp_path / "black" / "results" / "part-white.parquet")
    mixed = str(tmp_path / "black")
    reads = {
        "read_results": (lambda: results.read_results(mixed), "4 rows"),
        "read_table": (lambda: results.read_table(mixed, ["image_id", "target_class"]), "4 rows"),
        "read_row": (lambda: results.read_row(mixed, "cat1.png"), "1 row"),
    }
    for name, (read, rows) in reads.items():
        with pytest.warns(UserWarning, match=rf"results/ holds {rows} more than once") as said:
            read()
        assert [w.category for w in said] == [results.MixedRunsWarning], name
        assert said[0].filename == __file__, name  # the caller's line, not the module's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(results.read_results(str(tmp_path / "white"))) == 4  # one run: no word
        assert len(results.read_results(mixed, ["file_name"])) == 8  # no key read: no check


def test_a_row_that_does_not_match_the_schema_is_refused_by_name():
    good = make_row("a.png", label=None, predicted=3, prob=0.5, relative=0.0)
    schema = results_schema()
    assert rows_to_table([good], schema).num_rows == 1
    misspelt = dict(good)
    misspelt["attribution_summ"] = misspelt.pop("attribution_sum")
    with pytest.raises(ValueError, match=r"'a.png'.*\['attribution_summ'\].*\['attribution_sum'\]"):
        rows_to_table([good, misspelt], schema)
    missing = {k: v for k, v in good.items() if k != "within_tolerance"}
    with pytest.raises(ValueError, match=r"schema columns missing \['within_tolerance'\]"):
        rows_to_table([missing], schema)


def test_reading_back_imports_no_beam():
    """A notebook's imports (read-back, plots, report) never load Apache Beam: it takes seconds."""
    code = (
        "import sys, transforms.results, transforms.plots, pipeline.report; "
        "print(any(m == 'apache_beam' or m.startswith('apache_beam.') for m in sys.modules))"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert done.stdout.strip() == "False"


def test_an_output_folder_with_glob_characters_reads_back(folder_run, tmp_path):
    """Result files are listed by name, not by a glob: `[2024]` is no character class."""
    before = results.read_results(folder_run["output"])
    moved = tmp_path / "runs [2024]"
    os.rename(folder_run["output"], moved)
    pd.testing.assert_frame_equal(results.read_results(str(moved)), before)
    assert len(before) == 4 and len(results.read_errors(str(moved))) == 1


def test_output_folders_as_pathlib_paths(folder_run):
    """A notebook's `pathlib.Path` works wherever a folder string does."""
    import pathlib  # noqa: PLC0415

    output, root = folder_run["output"], folder_run["root"]
    path = pathlib.Path(output)
    pd.testing.assert_frame_equal(results.read_results(path), results.read_results(output))
    assert results.result_columns(path) == results.result_columns(output)
    assert results.read_row(path, "cat1.png").image_id == f"{WNID_CAT}/cat1.png"
    assert len(results.read_errors(path)) == 1
    assert results.read_manifest(path) == results.read_manifest(output)
    moved = results.load_input_image(path, "loose.png", image_root=pathlib.Path(root))
    np.testing.assert_array_equal(moved, results.load_input_image(output, "loose.png"))


def test_a_gs_run_where_storage_cannot_be_reached_fails_at_once_naming_it(unreachable_storage):
    # Offline, read_results("gs://...") waited out Beam's credential retries and the
    # storage client's (over two minutes), then raised a RetryError ("Timeout of 120.0s
    # exceeded ..."). The storage host here is an emulator's that never resolves.
    for read in (
        lambda: results.read_results("gs://bucket/run"),
        lambda: results.read_row("gs://bucket/run", "a.png"),
        lambda: results.read_errors("gs://bucket/run"),
        lambda: results.read_manifest("gs://bucket/run"),
    ):
        with pytest.raises(ConnectionError) as caught:
            read()
        message = str(caught.value)
        assert message.startswith("Cannot reach Google Cloud Storage (storage.invalid:4443: "), (
            message
        )
        assert "to read 'gs://bucket/run/" in message
        assert message.endswith("reading a gs:// run needs network access.")


def test_a_gs_run_behind_a_proxy_that_does_not_answer_fails_at_once_naming_it(
    monkeypatch, no_proxy_set
):
    # The storage client's calls go through `https_proxy`: the probe was skipped
    # behind one, and a dead proxy left the client to retry for minutes.
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    closed = closed_port()
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{closed}")
    with pytest.raises(ConnectionError) as caught:
        results.read_manifest("gs://bucket/run")
    message = str(caught.value)
    assert message.startswith(f"Cannot reach Google Cloud Storage (proxy 127.0.0.1:{closed}: "), (
        message
    )
    assert message.endswith("reading a gs:// run needs network access.")


def test_a_gs_run_that_is_not_there_is_no_run_not_an_unreadable_one(gcs_stub, folder_run):
    # A missing object comes from the storage client as Google's NotFound, no OSError:
    # read_manifest let it through, read_results and read_row with it, a traceback.
    from google.api_core.exceptions import NotFound

    from transforms import files

    local = results.read_manifest(folder_run["output"])
    gcs_stub.objects["run/manifest.json"] = Path(folder_run["output"], "manifest.json").read_bytes()
    assert results.read_manifest("gs://bucket/run") == local  # the peer serves what it holds
    with pytest.raises(FileNotFoundError) as caught:
        files.open_read("gs://bucket/none/manifest.json")
    assert caught.value.filename == "gs://bucket/none/manifest.json"
    assert isinstance(caught.value.__cause__, NotFound)  # Google's 404, kept
    assert "GET /storage/v1/b/bucket/o/none%2Fmanifest.json" in " ".join(gcs_stub.requests)
    with pytest.raises(FileNotFoundError, match="'gs://bucket/none' holds no manifest.json: "):
        results.read_manifest("gs://bucket/none")
    no_run = "'gs://bucket/none' holds no results/*.parquet and no manifest.json; pass the "
    for read in (
        lambda: results.read_results("gs://bucket/none"),
        lambda: results.read_row("gs://bucket/none", "a.png"),
    ):
        with pytest.raises(FileNotFoundError) as caught:
            read()
        assert str(caught.value).startswith(no_run), caught.value


def test_a_gs_object_the_credentials_may_not_read_is_a_permission_error(gcs_stub, folder_run):
    # Cloud Storage's 403 (Forbidden; 401, Unauthorized, to an anonymous caller) is no
    # OSError: read_manifest let it through, a traceback to the commands, and an input
    # image's reason was "403 GET http://...: ..." with the request's URL.
    from google.api_core.exceptions import Forbidden

    from transforms import files

    gcs_stub.objects["run/manifest.json"] = Path(folder_run["output"], "manifest.json").read_bytes()
    gcs_stub.forbidden.add("run/manifest.json")
    with pytest.raises(PermissionError) as caught:
        files.open_read("gs://bucket/run/manifest.json")
    assert caught.value.filename == "gs://bucket/run/manifest.json"
    assert isinstance(caught.value.__cause__, Forbidden)  # Google's 403, kept
    assert str(caught.value) == (
        "[Errno 13] Permission denied (stub@stub.iam.gserviceaccount.com does not have "
        "storage.objects.get access to the Google Cloud Storage object. Permission "
        "'storage.objects.get' denied on resource (or it may not exist)): "
        "'gs://bucket/run/manifest.json'"
    )
    with pytest.raises(PermissionError):
        results.read_manifest("gs://bucket/run")
    cat = f"{WNID_CAT}/cat1.png"
    gcs_stub.objects[f"images/{cat}"] = Path(folder_run["root"], cat).read_bytes()
    gcs_stub.forbidden.add(f"images/{cat}")
    manifest = results.read_manifest(folder_run["output"])
    with pytest.raises(results.ImageUnavailable) as caught:
        results.load_input_image(manifest, cat, image_root="gs://bucket/images")
    said = str(caught.value)
    assert said.startswith(f"gs://bucket/images/{cat} cannot be read: [Errno 13] Permission ")
    assert "http://" not in said, said


def _run_on_gcs(gcs_stub, output: str) -> list[str]:
    """The local run `output`'s files as gs://bucket/run's; the names of its results
    files in the bucket, sorted."""
    for path in filter(Path.is_file, Path(output).rglob("*")):
        gcs_stub.objects[f"run/{path.relative_to(output)}"] = path.read_bytes()
    return sorted(n for n in gcs_stub.objects if n.startswith("run/results/"))


def test_a_gs_object_an_anonymous_caller_may_not_read_is_a_permission_error(gcs_stub):
    # Cloud Storage's 401 (Unauthorized) was mapped as its 403 is, untested.
    from google.api_core.exceptions import Unauthorized

    from transforms import files

    gcs_stub.objects["run/manifest.json"] = b"{}"
    gcs_stub.unauthorized.add("run/manifest.json")
    with pytest.raises(PermissionError) as caught:
        files.open_read("gs://bucket/run/manifest.json")
    assert isinstance(caught.value.__cause__, Unauthorized)
    assert str(caught.value) == (
        "[Errno 13] Permission denied (Anonymous caller does not have storage.objects.get "
        "access to the Google Cloud Storage object. Permission 'storage.objects.get' denied "
        "on resource (or it may not exist)): 'gs://bucket/run/manifest.json'"
    )


def test_a_gs_folder_the_credentials_may_not_list_is_a_permission_error(gcs_stub, folder_run):
    # Cloud Storage's 403 to a listing came as Beam's BeamIOError, Google's words two
    # reprs deep with the request's URL; a run's results/ then read as "Cannot list".
    from apache_beam.io.filesystem import BeamIOError

    from transforms import files

    _run_on_gcs(gcs_stub, folder_run["output"])
    gcs_stub.unlistable = True
    with pytest.raises(PermissionError) as caught:
        files.list_folder("gs://bucket/run/results", ".parquet")
    assert isinstance(caught.value.__cause__, BeamIOError)
    assert caught.value.filename == "gs://bucket/run/results/"
    assert str(caught.value).startswith(
        "[Errno 13] Permission denied (stub@stub.iam.gserviceaccount.com does not have "
        "storage.objects.list access to the Google Cloud Storage bucket."
    ), caught.value
    assert "http://" not in str(caught.value)
    with pytest.raises(PermissionError):
        results.read_results("gs://bucket/run")


def test_credentials_google_refuses_are_a_permission_error_with_their_fix(gcs_stub):
    # A key Google no longer accepts (deleted, revoked): google.auth's RefreshError,
    # from any read or listing, no OSError: a traceback from every reader.
    from apache_beam.io.filesystem import BeamIOError
    from google.auth.exceptions import RefreshError

    from transforms import files

    gcs_stub.objects["run/manifest.json"] = b"{}"
    gcs_stub.token_refused = True
    for read, cause in (
        (lambda: files.open_read("gs://bucket/run/manifest.json"), RefreshError),
        (lambda: files.list_folder("gs://bucket/run/results", ".parquet"), BeamIOError),
    ):
        with pytest.raises(files.CredentialsRefused) as caught:
            read()
        assert isinstance(caught.value, PermissionError)
        assert isinstance(caught.value.__cause__, cause)
        assert str(caught.value).startswith(
            "[Errno 13] Permission denied (the Google Cloud credentials in use were refused: "
            "invalid_grant: Invalid JWT Signature): 'gs://bucket/run/"
        ), caught.value
    assert files.read_access_fix("gs://bucket/run", caught.value) == (
        "renew the Google Cloud credentials in use (`gcloud auth application-default login`, "
        "or GOOGLE_APPLICATION_CREDENTIALS naming a key Google still accepts)"
    )


def test_a_gs_results_file_the_credentials_may_not_read_is_named(gcs_stub, folder_run):
    # Arrow's PermissionError was Google's whole status (some 700 characters, the JSON
    # twice), naming no file; now files.open_read's, of the file, Arrow's its cause.
    shards = _run_on_gcs(gcs_stub, folder_run["output"])
    gcs_stub.forbidden.add(shards[-1])
    with pytest.raises(PermissionError) as caught:
        results.read_results("gs://bucket/run")
    assert caught.value.filename == f"gs://bucket/{shards[-1]}"
    assert str(caught.value).startswith("[Errno 13] Permission denied (stub@stub.iam."), caught
    assert len(str(caught.value)) < 300, caught.value
    assert "google::cloud::Status" in str(caught.value.__cause__)  # Arrow's, kept


def test_a_gs_input_image_gone_since_the_run_is_an_image_not_found(gcs_stub, folder_run):
    # It was an ImageUnavailable ("cannot be read: 404 GET http://..."), not the
    # ImageNotFound a local file gone says, with its hints.
    manifest = results.read_manifest(folder_run["output"])
    cat = f"{WNID_CAT}/cat1.png"
    gcs_stub.objects[f"images/{cat}"] = Path(folder_run["root"], cat).read_bytes()
    loaded = results.load_input_image(manifest, cat, image_root="gs://bucket/images")
    np.testing.assert_array_equal(loaded, results.load_input_image(manifest, cat))
    with pytest.raises(results.ImageNotFound) as caught:
        results.load_input_image(manifest, f"{WNID_CAT}/cat2.png", image_root="gs://bucket/images")
    assert str(caught.value).startswith(
        f"gs://bucket/images/{WNID_CAT}/cat2.png cannot be read: [Errno 2] No such file or "
        f"directory: 'gs://bucket/images/{WNID_CAT}/cat2.png' (deleted or moved since the run?"
    ), caught.value


def test_a_storage_lookup_that_never_answers_does_not_hold_the_process_at_exit(tmp_path):
    # A resolver that does not answer (a DNS server configured but unreachable: glibc
    # tries for 10-30 s) is left behind after the probe's timeout; its thread was a
    # pool's, which Python joins at exit: the error came in seconds, the exit not.
    # The stand-in lookup writes its marker only if the process waits for it.
    code = (
        "import pathlib, socket, sys, time\n"
        "def lookup(*args, **kwargs):\n"
        "    time.sleep(30)\n"
        "    pathlib.Path(sys.argv[1]).write_text('the exit waited for the lookup')\n"
        "socket.create_connection = lookup\n"
        "from transforms import files\n"
        "files.PROBE_TIMEOUT_S = 0.5\n"
        "try:\n"
        "    files.exists('gs://bucket/run/manifest.json')\n"
        "except files.RemoteUnreachable as e:\n"
        "    print(e)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proxies = {"http_proxy", "https_proxy", "all_proxy", "STORAGE_EMULATOR_HOST"}
    proxies |= {name.upper() for name in proxies}
    env = {k: v for k, v in os.environ.items() if k not in proxies}
    marker = tmp_path / "waited"
    done = subprocess.run(
        [sys.executable, "-c", code, str(marker)],
        cwd=root,
        env={**env, "PYTHONPATH": root},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert "(storage.googleapis.com:443: no answer within 0.5 s)" in done.stdout, done.stdout
    assert not marker.exists(), marker.read_text()


def test_an_output_of_a_version_before_later_columns_reads_without_them(folder_run):
    output = folder_run["output"]
    as_older_version(output)  # no attribution_error, no faithfulness columns
    meta = results.read_results(output)
    assert list(meta.columns) == [c for c in METADATA_COLUMNS if c not in LATER_COLUMNS]
    assert len(meta) == 4 and len(results.read_table(output)) == 4
    assert results.read_results(output, with_arrays=True).attributions.notna().all()
    row = results.read_row(output, "cat1.png")
    np.testing.assert_array_equal(results.attributions_of(row), known_attributions(1))
    assert len(results.above_tolerance(meta, 0.01)) == 1  # shark, by relative_delta alone
    # A column of this version that the run's files lack is named as such, not "unknown".
    with pytest.raises(ValueError, match=r"no 'attribution_error'.*older version"):
        results.read_results(output, columns=["file_name", "attribution_error"])
    with pytest.raises(ValueError, match=r"no 'deletion_auc'.*older version"):
        results.read_results(output, filters=[("deletion_auc", ">", 0.5)])


def test_no_better_than_chance_leaves_out_a_check_that_measured_nothing():
    # Both AUCs 1: the check's curves never left p(x) (a saturated model), any ranking
    # ties there. It never counts; a row whose two checks are so is not measurable.
    nan = float("nan")
    rows = pd.DataFrame(
        {
            "image_id": ["beats", "blind_ins", "blind_del", "blind_both", "loses", "nan_del"],
            "deletion_auc": [0.1, 0.1, 1.0, 1.0, 0.5, nan],
            "deletion_auc_random": [0.5, 0.5, 1.0, 1.0, 0.4, nan],
            "insertion_auc": [0.9, 1.0, 0.9, 1.0, 1.0, 1.0],
            "insertion_auc_random": [0.5, 1.0, 0.5, 1.0, 1.0, 1.0],
        }
    )
    # nan_del: a null deletion check never counts, nor the blind insertion beside it.
    assert list(results.no_better_than_chance(rows).image_id) == ["loses"]
    assert list(results.not_measurable(rows).image_id) == ["blind_both"]
    deletion, insertion = results.chance_losses(rows)
    assert list(deletion) == [False, False, False, False, True, False]
    assert list(insertion) == [False] * 6
    with pytest.raises(ValueError, match="insertion_auc"):
        results.no_better_than_chance(rows.drop(columns="insertion_auc"))


def test_a_check_within_float32_resolution_of_1_measured_nothing():
    # A float32 probability near p(x) moves in relative steps of 1.2e-7: two AUCs that
    # both lie within a few steps of 1 differ by rounding, not by their rankings.
    step = float(np.finfo(np.float32).eps)
    rows = pd.DataFrame(
        {
            "image_id": ["start_a_step_below", "steps_apart", "moves_1e-3", "both_near_1"],
            "deletion_auc": [0.5, 0.5, 0.5, 1 - step],
            "deletion_auc_random": [0.7, 0.7, 0.7, 1 - 2 * step],
            "insertion_auc": [1 - step / 16, 1 - 3 * step, 1 - 2e-3, 1 - step / 16],
            "insertion_auc_random": [1 - step / 16, 1 - step, 1 - 1e-3, 1.0],
        }
    )
    assert list(results.measured_nothing(rows, "insertion")) == [True, True, False, True]
    assert list(results.measured_nothing(rows, "deletion")) == [False, False, False, True]
    # Both checks blind: not measurable, not counted.
    assert list(results.no_better_than_chance(rows).image_id) == ["moves_1e-3"]
    assert list(results.not_measurable(rows).image_id) == ["both_near_1"]
    assert 4 * step <= results.AUC_RESOLUTION < 1e-6


def test_a_row_whose_two_checks_measured_nothing_is_not_measurable_whichever_way_rounding_went():
    # Both checks within float32 rounding of 1 (a model the pixels do not move): the
    # row was counted no better than chance, as one of AUCs exactly 1 was; neither
    # check told the map from its control, so it is not measurable, whichever way
    # rounding put the map's AUCs.
    step = float(np.finfo(np.float32).eps)
    rows = pd.DataFrame(
        {
            "image_id": ["rounded_for_ig", "exactly_1", "rounded_against_ig"],
            "deletion_auc": [1 - 2 * step, 1.0, 1 - step],
            "deletion_auc_random": [1 - step, 1.0, 1 - 2 * step],
            "insertion_auc": [1 - step, 1.0, 1 - 2 * step],
            "insertion_auc_random": [1 - 2 * step, 1.0, 1 - step],
        }
    )
    assert results.no_better_than_chance(rows).empty
    assert list(results.not_measurable(rows).image_id) == list(rows.image_id)
    deletion, insertion = results.chance_losses(rows)
    assert not deletion.any() and not insertion.any()


def test_a_check_with_one_auc_at_1_is_judged_as_measured():
    # Only both AUCs at 1 make a check blind. A map whose deletion never lowers the
    # score (AUC 1) where the random ranking's does (0.4) loses on deletion; a map
    # whose insertion restores less (0.5) than the random one, at once (1), loses there.
    rows = pd.DataFrame(
        {
            "image_id": ["deletion_flat", "control_restores_at_once"],
            "deletion_auc": [1.0, 0.2],
            "deletion_auc_random": [0.4, 0.4],
            "insertion_auc": [0.9, 0.5],
            "insertion_auc_random": [0.5, 1.0],
        }
    )
    flagged = results.no_better_than_chance(rows).image_id
    assert list(flagged) == ["deletion_flat", "control_restores_at_once"]
    deletion, insertion = results.chance_losses(rows)
    assert list(deletion) == [True, False] and list(insertion) == [False, True]


def test_a_check_that_measured_nothing_beside_a_null_one_flags_no_row():
    # Deletion's two AUCs at 1 (blind) and insertion's null (a model's NaN on a curve):
    # a null check never counts, nor a blind one: the row is not flagged, and not
    # counted not measurable (one of its checks has no values); both checks blind is.
    nan = float("nan")
    rows = pd.DataFrame(
        {
            "image_id": ["blind_and_null", "blind_and_blind"],
            "deletion_auc": [1.0, 1.0],
            "deletion_auc_random": [1.0, 1.0],
            "insertion_auc": [nan, 1.0],
            "insertion_auc_random": [nan, 1.0],
        }
    )
    assert results.no_better_than_chance(rows).empty
    assert list(results.not_measurable(rows).image_id) == ["blind_and_blind"]
    assert list(results.measured_nothing(rows, "deletion")) == [True, True]
    assert list(results.measured_nothing(rows, "insertion")) == [False, True]


def test_not_measurable_is_both_checks_measured_nothing_whatever_the_map():
    # Every curve flat: neither check can tell the map from its control, whether the
    # map is 0 (an image equal to its baseline), not 0 (a saturated model, a black image
    # with --baseline black,white) or sums to 0 (a map of both signs). A map that is
    # not 0 with flat curves was flagged no better than chance, a map of 0 not: the
    # flag followed attribution_sum, which no check measured. One check moving is
    # judged; a blind check beside a null one flags nothing and is not counted here.
    nan = float("nan")
    rows = pd.DataFrame(
        {
            "image_id": ["zero", "not_zero", "sums_to_0", "zero_but_moves", "blind_and_null"],
            "attribution_sum": [0.0, 2.5, 0.0, 0.0, 0.0],
            "deletion_auc": [1.0, 1.0, 1.0, 1.0, 1.0],
            "deletion_auc_random": [1.0, 1.0, 1.0, 1.0, 1.0],
            "insertion_auc": [1.0, 1.0, 1.0, 0.7, nan],
            "insertion_auc_random": [1.0, 1.0, 1.0, 0.7, nan],
        }
    )
    assert list(results.not_measurable(rows).image_id) == ["zero", "not_zero", "sums_to_0"]
    assert list(results.no_better_than_chance(rows).image_id) == ["zero_but_moves"]
    deletion, insertion = results.chance_losses(rows)
    assert list(deletion) == [False] * 5
    assert list(insertion) == [False, False, False, True, False]
    # The AUCs are all they need (a frame read with those columns only).
    aucs = rows.drop(columns="attribution_sum")
    assert list(results.not_measurable(aucs).image_id) == ["zero", "not_zero", "sums_to_0"]
    assert list(results.no_better_than_chance(aucs).image_id) == ["zero_but_moves"]


def test_a_map_that_ties_with_its_control_or_lies_at_the_resolution_read_back(tmp_path):
    """Known AUCs written to Parquet and read back: a map whose measured AUC equals its
    control's does no better than chance (ties count, on deletion as on insertion), and
    AUCs exactly `AUC_RESOLUTION` below 1 measured nothing ("within" it), a step further not."""
    edge = 1.0 - results.AUC_RESOLUTION
    below = float(np.nextafter(edge, 0.0))
    aucs = {  # deletion, its control, insertion, its control
        "ties_deletion.png": (0.4, 0.4, 0.9, 0.5),
        "ties_insertion.png": (0.2, 0.4, 0.6, 0.6),
        "beats_both.png": (0.2, 0.4, 0.9, 0.5),
        "edge.png": (0.2, 0.4, edge, edge),
        "below_edge.png": (0.2, 0.4, below, below),
    }
    names = ("deletion_auc", "deletion_auc_random", "insertion_auc", "insertion_auc_random")
    rows = [make_row(i, 1, 1, 0.9, 0.0) | dict(zip(names, v, strict=True)) for i, v in aucs.items()]
    output = write_output(tmp_path / "out", [rows], dataset=str(tmp_path))
    meta = results.read_results(output).set_index("image_id", drop=False)
    flagged = results.no_better_than_chance(meta).image_id.tolist()
    # below_edge.png: its insertion measured something, and ties.
    assert flagged == ["below_edge.png", "ties_deletion.png", "ties_insertion.png"]
    nothing = results.measured_nothing(meta, "insertion")
    assert nothing.to_dict() == {
        "beats_both.png": False,
        "below_edge.png": False,
        "edge.png": True,
        "ties_deletion.png": False,
        "ties_insertion.png": False,
    }


def test_a_manifest_without_a_status_reads_as_a_finished_run(folder_run):
    """Manifests written before runs recorded a status (as `write_output`'s) are of
    finished runs: reading them warns of no unfinished run."""
    assert "status" not in results.read_manifest(folder_run["output"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", results.UnfinishedRunWarning)
        assert len(results.read_results(folder_run["output"])) == 4


def test_a_lock_of_another_run_is_no_template_the_run_waits_for(folder_run):
    """A template's build leaves its lock under the run id of the folder's manifest; a
    lock under another run id (a run that took the folder since) names no template."""
    import json

    from transforms.manifest import LOCK_FILE, awaited_template

    output = folder_run["output"]
    manifest = {**results.read_manifest(output), "status": "running", "run_id": "run-1"}
    lock = os.path.join(output, LOCK_FILE)
    template = "gs://b/templates/audit"
    for run_id, awaited in (("run-1", template), ("run-2", None)):
        with open(lock, "w") as f:
            json.dump({"run_id": run_id, "template": template}, f)
        assert awaited_template(output, manifest) == awaited
    assert awaited_template(output, {**manifest, "status": "complete"}) is None


@pytest.mark.parametrize("port", ["abc", "99999"])
def test_a_proxy_url_with_a_bad_port_is_named_not_a_traceback(port, monkeypatch, no_proxy_set):
    # Its port read as a number raised urllib's ValueError out of the probe: the
    # report and the job ended in a traceback.
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("https_proxy", f"http://proxy.invalid:{port}")
    with pytest.raises(ConnectionError) as caught:
        results.read_manifest("gs://bucket/run")
    message = str(caught.value)
    assert message.startswith(
        f"Cannot reach Google Cloud Storage (https_proxy 'http://proxy.invalid:{port}' "
        "names no valid port: "
    ), message
    assert "; correct it or unset https_proxy) to read 'gs://bucket/run/" in message


def test_chance_test_is_an_exact_sign_test_over_the_trials_of_a_check():
    # Deletion: 8 rows beat their control, 1 ties (a map of one value has its control's
    # curves) and 1 loses; a blind check (both AUCs 1) and a null one are no trials.
    # The tie counts as no win, as in chance_losses: 8 of 10, p = P(X >= 8) =
    # (45 + 10 + 1) / 1024, not below 0.05 (8 of the 9 that did not tie would be
    # 10 / 512: the test is conservative where maps tie, never the other way).
    nan = float("nan")
    deletion = [0.1, 0.15, 0.2, 0.05, 0.1, 0.3, 0.25, 0.12, 0.4, 0.6, 1.0, nan]
    control = [0.4, 0.35, 0.3, 0.45, 0.2, 0.5, 0.55, 0.32, 0.4, 0.5, 1.0, nan]
    rows = pd.DataFrame(
        {
            "image_id": [f"img{i:02d}.png" for i in range(12)],
            "deletion_auc": deletion,
            "deletion_auc_random": control,
            "insertion_auc": [0.9] * 12,
            "insertion_auc_random": [0.5] * 12,
        }
    )
    lead = results.leads(rows, "deletion")
    assert lead.iloc[:10].round(6).tolist() == [
        0.3, 0.2, 0.1, 0.4, 0.1, 0.2, 0.3, 0.2, 0.0, -0.1,
    ]  # fmt: skip
    assert results.leads(rows, "insertion").round(6).tolist() == [0.4] * 12
    test = results.chance_test(rows, "deletion")
    assert (test.check, test.rows, test.images, test.beats) == ("deletion", 10, 10, 8)
    assert test.p_value == 56 / 1024 and not test.better_than_chance
    # The median of the 10 leads, and its interval: the 2nd smallest to the 2nd largest
    # (1 - 2 P(X <= 1) = 1 - 22 / 1024 >= 0.95; the 3rd would cover 1 - 112 / 1024).
    assert test.median_lead == pytest.approx(0.2)
    assert test.interval == pytest.approx((0.0, 0.3))
    # Insertion: every one of 12 rows beats its control: p = 2 ** -12.
    insertion = results.chance_test(rows, "insertion")
    assert (insertion.images, insertion.beats, insertion.p_value) == (12, 12, 2.0**-12)
    assert insertion.better_than_chance
    # chance_losses counts the same rows against the map: the tie and the loss.
    assert results.chance_losses(rows)[0].tolist() == [False] * 8 + [True, True, False, False]


def test_chance_test_counts_an_image_of_several_targets_once():
    # --target top_k: an image's targets share one random ranking, so their rows are
    # not independent trials: each image counts once, by its predicted class's row.
    # Images a to e: a's predicted class (7) loses, its two other targets beat; every
    # row of b to e beats. By row that is 12 wins of 15; by image, 4 of 5.
    ids = [image for image in "abcde" for _ in range(3)]
    targets = [1, 7, 2] + [3, 4, 5] * 4
    predicted = [7] * 3 + [3] * 12
    rows = pd.DataFrame(
        {
            "image_id": ids,
            "target_class": targets,
            "predicted_class": predicted,
            "deletion_auc": [0.1, 0.5, 0.1] + [0.1] * 12,
            "deletion_auc_random": [0.3] * 15,
            "insertion_auc": [0.9] * 15,
            "insertion_auc_random": [0.5] * 15,
        }
    )
    test = results.chance_test(rows, "deletion")
    assert (test.rows, test.images, test.beats) == (15, 5, 4)
    assert test.p_value == 6 / 32 and test.interval is None  # under 6 images: none
    # One row per image of those that are a trial of the check: a's predicted class's
    # deletion blind (both AUCs 1), its first other target's row counts instead.
    rows.loc[1, ["deletion_auc", "deletion_auc_random"]] = 1.0
    test = results.chance_test(rows, "deletion")
    assert (test.rows, test.images, test.beats) == (14, 5, 5)
    with pytest.raises(ValueError, match="chance_test needs the columns image_id"):
        results.chance_test(rows.drop(columns="image_id"), "deletion")
