"""Known answers of `transforms.sinks` on tiny real Parquet files, read back."""

import contextlib
import json
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from transforms.schema import ERROR_SCHEMA, results_schema, rows_to_table
from transforms.sinks import (
    COUNT_KEYS,
    SCHEMA_FILE,
    SumCounts,
    checkpoint_folder,
    salvage_checkpoints,
    write_json,
    write_manifest,
    write_no_errors,
    write_parquet_file,
    write_schema_file,
)


def _table(*image_ids: str):
    """Result rows of `image_ids`, one each, every other column null."""
    schema = results_schema()
    return rows_to_table(
        [{name: None for name in schema.names} | {"image_id": i} for i in image_ids], schema
    )


@pytest.mark.parametrize(
    "pairs, counts",
    [
        (
            [("rows", 1), ("errors", 1), ("rows", 1), ("inputs", 2)],
            {"rows": 2, "errors": 1, "inputs": 2},
        ),
        ([], {}),  # a run of no input: every count 0, a manifest all the same
    ],
    ids=["some", "none"],
)
def test_the_manifests_counts_sum_each_key_and_hold_every_key(pairs, counts):
    combine = SumCounts()
    # Beam merges partial sums (one per bundle or worker) in any grouping.
    halves = [combine.create_accumulator(), combine.create_accumulator()]
    for i, pair in enumerate(pairs):
        halves[i % 2] = combine.add_input(halves[i % 2], pair)
    summed = combine.extract_output(combine.merge_accumulators(halves))
    assert list(summed) == list(COUNT_KEYS)  # in the manifest's order
    assert summed == dict.fromkeys(COUNT_KEYS, 0) | counts
    with beam.Pipeline("DirectRunner") as p:
        got = p | beam.Create(pairs, reshuffle=False) | beam.CombineGlobally(SumCounts())
        assert_that(got, equal_to([summed]))


def test_a_file_is_written_into_a_missing_folder_with_its_rows(tmp_path):
    # results/ of a run killed before it finalized is missing: the file goes there whole.
    temp = tmp_path / ".tmp"
    temp.mkdir()
    path = tmp_path / "results" / "part-x.parquet"
    written = write_parquet_file(
        str(path), [_table("a", "b"), _table("c")], results_schema(), str(temp)
    )
    assert written == 3
    assert pq.read_table(path).column("image_id").to_pylist() == ["a", "b", "c"]
    assert list(temp.iterdir()) == []  # no partial file left


@pytest.mark.parametrize("keep_empty", [False, True])
def test_no_rows_make_a_file_only_when_kept_empty(keep_empty, tmp_path):
    temp = tmp_path / ".tmp"
    temp.mkdir()
    path = tmp_path / "results" / "none.parquet"
    assert write_parquet_file(str(path), [], results_schema(), str(temp), keep_empty) == 0
    assert path.exists() is keep_empty
    if keep_empty:
        assert pq.read_table(path).num_rows == 0
    assert list(temp.iterdir()) == []


def test_a_runs_first_files_hold_every_column_and_no_row(tmp_path):
    # What a run writes as it claims its output, and a resume with nothing left to do.
    out = tmp_path / "out"
    written = write_schema_file(str(out), results_schema())
    assert written == str(out / "results" / SCHEMA_FILE)
    schema_file = pq.read_table(written)
    assert schema_file.num_rows == 0 and schema_file.schema.names == results_schema().names
    write_no_errors(str(out))
    (errors,) = (out / "errors").iterdir()
    assert errors.name == "part-00000-of-00001.parquet"
    assert pq.read_table(errors).num_rows == 0
    assert pq.read_schema(errors).equals(ERROR_SCHEMA)


def _checkpoint(output, run_id: str, name: str, *image_ids: str) -> None:
    folder = Path(checkpoint_folder(str(output), run_id))
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(_table(*image_ids), folder / f"{name}.parquet")


def test_the_checkpoints_of_no_run_are_the_folder_of_each_runs(tmp_path):
    # One home for <output>/.tmp/checkpoints/: a run's folder (`run_checkpoints`, as
    # the report and a --resume read it) sits in the folder that holds every run's.
    from transforms.manifest import run_checkpoints

    out = str(tmp_path / "out")
    root = checkpoint_folder(out)
    assert root == str(tmp_path / "out" / ".tmp" / "checkpoints")
    assert checkpoint_folder(out, "r1") == run_checkpoints(out, "r1") == str(Path(root) / "r1")
    assert checkpoint_folder(out, None) == checkpoint_folder(out, "") == root


@pytest.mark.parametrize("run_id, kept", [("r1", ["b", "c"]), (None, [])], ids=["its-run", "none"])
def test_a_salvage_keeps_each_new_image_of_the_runs_checkpoints_once(run_id, kept, tmp_path):
    # Run r1 checkpointed a, b, then b again (a retried bundle) and c; a job that lost
    # the folder (r2) left d. Image a has rows already. Computed by hand: r1's new
    # images are b and c, each once. No run id (an older version's manifest, which
    # wrote no checkpoints): none of them is its run's, nothing is kept.
    out = tmp_path / "out"
    _checkpoint(out, "r1", "1", "a", "b")
    _checkpoint(out, "r1", "2", "b", "c")
    _checkpoint(out, "r2", "3", "d")
    path = out / "results" / "part-salvaged.parquet"
    salvaged = salvage_checkpoints(str(out), frozenset({"a"}), results_schema(), str(path), run_id)
    assert salvaged == set(kept)  # the images salvaged, not those done before
    held = pq.read_table(path).column("image_id").to_pylist() if path.exists() else []
    assert sorted(held) == kept


def test_a_stop_as_a_local_json_file_is_replaced_leaves_the_old_or_the_new_one(
    tmp_path, monkeypatch
):
    # A local manifest.json is replaced in one step (os.replace): a run stopped there
    # never leaves none, which no --resume could continue. Here a stop right after any
    # file deletion, as deleting the old file before renaming the new one would leave it.
    from apache_beam.io.filesystems import FileSystems

    path = tmp_path / "manifest.json"
    write_json(str(path), {"status": "running"})
    real_delete = FileSystems.delete

    def delete_then_stop(paths):
        real_delete(paths)
        raise KeyboardInterrupt

    monkeypatch.setattr(FileSystems, "delete", delete_then_stop)
    with contextlib.suppress(KeyboardInterrupt):
        write_json(str(path), {"status": "complete"})
    assert json.loads(path.read_text()) in ({"status": "running"}, {"status": "complete"})


@pytest.mark.parametrize(
    "counts, rows_per_image, said",
    [
        (  # an input lost: neither in rows, errors nor skipped
            {"inputs": 5, "images_with_rows": 3, "images_with_errors": 1, "rows": 3, "errors": 1},
            1,
            "of 5 inputs, 4 are accounted for (3 images with rows, 1 with errors, 0 skipped "
            "as done by an earlier run); 3 rows written, where 3 are expected (1 row per "
            "image with rows); 1 error recorded.",
        ),
        (  # every input is, but a top_k image lost a row
            {"inputs": 2, "skipped_done_before": 1, "images_with_rows": 1, "rows": 2},
            3,
            "of 2 inputs, 2 are accounted for (1 image with rows, 0 with errors, 1 skipped "
            "as done by an earlier run); 2 rows written, where 3 are expected (3 rows per "
            "image with rows); 0 errors recorded.",
        ),
    ],
)
def test_counts_that_do_not_add_up_are_logged_as_a_sentence(
    tmp_path, caplog, counts, rows_per_image, said
):
    # The line was the counts' dict: "Inputs not accounted for: {'inputs': 5,
    # 'skipped_done_before': 0, ...} (rows expected: 3)."
    with caplog.at_level("ERROR", logger="transforms.sinks"):
        manifest = write_manifest(str(tmp_path), {"rows_per_image": rows_per_image}, counts)
    assert [r.getMessage() for r in caplog.records] == [f"The run's counts do not add up: {said}"]
    assert manifest["counts"] == {key: counts.get(key, 0) for key in COUNT_KEYS}


def test_counts_that_add_up_log_nothing(tmp_path, caplog):
    counts = {"inputs": 2, "images_with_rows": 1, "images_with_errors": 1, "rows": 1, "errors": 1}
    with caplog.at_level("ERROR", logger="transforms.sinks"):
        manifest = write_manifest(str(tmp_path), {}, counts)
    assert caplog.records == [] and manifest["all_inputs_accounted_for"]


def test_a_gs_listing_of_checkpoints_or_shards_refused_names_the_folder(gcs_stub):
    # The salvage's listing of a run's checkpoints (a --resume) and the sink's of its
    # earlier shards (a worker's finalize) called FileSystems.match: a refusal was Beam's
    # "Match operation failed with exceptions {...}", nested reprs and the request's URL.
    from transforms.sinks import _delete_earlier_shards

    gcs_stub.objects["out/.tmp/checkpoints/r1/1.parquet"] = b"rows"
    gcs_stub.objects["out/results/part-00000-of-00002.parquet"] = b"rows"
    gcs_stub.unlistable = True
    path = "gs://bucket/out/results/part-salvaged.parquet"
    with pytest.raises(PermissionError) as caught:
        salvage_checkpoints("gs://bucket/out", frozenset(), results_schema(), path, "r1")
    assert caught.value.filename == "gs://bucket/out/.tmp/checkpoints/r1/"
    assert "storage.objects.list" in str(caught.value) and "http://" not in str(caught.value)
    with pytest.raises(PermissionError) as caught:
        _delete_earlier_shards("gs://bucket/out/results/part")
    assert caught.value.filename == "gs://bucket/out/results/"
