"""Sources: image folders, the bundled sample, and TFDS through the real builders and reader."""

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
from apache_beam.io.filesystem import FileMetadata, MatchResult
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline import run
from pipeline.__main__ import main
from tests.conftest import (
    SIZE,
    WNID_CAT,
    WNID_SHARK,
    cli_args,
    closed_port,
    dense_keras,
    launched,
    write_image,
)
from transforms import files, labels, sources
from transforms.done_ids import write_done_ids
from transforms.results import read_manifest


def test_folder_listing_labels_from_wordnet_ids(image_folder):
    files = sources.list_image_folder(image_folder["root"])
    got = {f.image_id: f.label for f in files}
    assert got == {
        f"{WNID_CAT}/cat1.png": 281,
        f"{WNID_CAT}/cat2.png": 281,
        f"{WNID_SHARK}/shark.png": 2,
        "loose.png": None,
        "broken.jpg": None,
    }
    assert [f.image_id for f in files] == sorted(got)


def test_folder_listing_skips_hidden_files_and_unknown_folders_are_unlabelled(tmp_path):
    write_image(tmp_path / "holiday" / "a.png", np.zeros((2, 2, 3), np.uint8))
    (tmp_path / ".DS_Store").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an image, still an input")
    write_image(tmp_path / "beam-template.png", np.zeros((2, 2, 3), np.uint8))  # not Beam's
    files = sources.list_image_folder(str(tmp_path))
    assert {f.image_id: f.label for f in files} == {
        "holiday/a.png": None,
        "notes.txt": None,
        "beam-template.png": None,
    }


def test_the_warning_about_unlabelled_sub_folders_says_how_many_it_does_not_name(tmp_path, caplog):
    for name in ("a", "b", "c", "d", "e", "f", "g"):
        write_image(tmp_path / name / "x.png", np.zeros((2, 2, 3), np.uint8))
    write_image(tmp_path / WNID_CAT / "cat.png", np.zeros((2, 2, 3), np.uint8))
    with caplog.at_level("WARNING", logger="transforms.sources"):
        sources.list_image_folder(str(tmp_path))
    assert (
        "7 files in sub-folders that are not ImageNet WordNet ids (a, b, c, d, e and 2 more) "
        "get no label." in caplog.text
    )


def test_the_unlabelled_warning_counts_only_files_that_are_read(tmp_path, caplog):
    """A sub-folder holding a link loop, or a dangling link, holds no image that could
    get a label (each is an error record): 'dirloop' was named among the sub-folders whose
    files get no label, and its loop counted as such a file."""
    write_image(tmp_path / "holiday" / "a.png", np.zeros((2, 2, 3), np.uint8))
    (tmp_path / "dirloop").mkdir()
    (tmp_path / "dirloop" / "up").symlink_to("..")
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "b.png").symlink_to("nowhere.png")
    with caplog.at_level("WARNING", logger="transforms.sources"):
        files = sources.list_image_folder(str(tmp_path))
    assert [f.image_id for f in files] == ["dirloop/up", "gone/b.png", "holiday/a.png"]
    assert (
        "1 file in a sub-folder that is not an ImageNet WordNet id (holiday) gets no label."
        in caplog.text
    )


def test_the_warning_of_a_dataset_named_by_a_wordnet_id_counts_only_files_that_are_read(
    tmp_path, caplog
):
    """A --dataset named by a WordNet id holding an image and a dangling link: the link
    is an error record, no file that gets no label, and is not counted as one."""
    root = tmp_path / WNID_CAT
    write_image(root / "cat.png", np.zeros((2, 2, 3), np.uint8))
    (root / "gone.png").symlink_to("nowhere.png")
    with caplog.at_level("WARNING", logger="transforms.sources"):
        listed = sources.list_image_folder(str(root))
    assert [(f.image_id, f.error is None) for f in listed] == [
        ("cat.png", True),
        ("gone.png", False),
    ]
    said = [r.getMessage() for r in caplog.records if "is itself named" in r.getMessage()]
    assert len(said) == 1 and "its 1 file gets no label" in said[0], said


def test_wordnet_id_folders_below_split_folders_are_warned_of_with_the_folder_to_pass(
    tmp_path, caplog
):
    # imagenette2-160/{train,val}/n01440764/...: pointed at the archive's root, every
    # file got no label, and the warning named 'train' and 'val' as folders that are
    # not WordNet ids, not that the WordNet ids lay one level down.
    root = tmp_path / "imagenette2-160"
    write_image(root / "train" / WNID_CAT / "a.png", np.zeros((2, 2, 3), np.uint8))
    write_image(root / "val" / WNID_SHARK / "b.png", np.zeros((2, 2, 3), np.uint8))
    write_image(root / "val" / WNID_SHARK / "c.png", np.zeros((2, 2, 3), np.uint8))
    with caplog.at_level("WARNING", logger="transforms.sources"):
        sources.list_image_folder(str(root))
    assert [r.getMessage() for r in caplog.records] == [
        "3 files in sub-folders that are not ImageNet WordNet ids (train, val) get no label. "
        f"WordNet-id folders lie deeper ({WNID_CAT} in train): only a top-level one labels "
        f"its files; to label those, pass the folder holding them, e.g. --dataset {root}/train."
    ]


def test_the_warning_about_one_unlabelled_file_speaks_of_one(tmp_path, caplog):
    write_image(tmp_path / "holiday" / "x.png", np.zeros((2, 2, 3), np.uint8))
    write_image(tmp_path / WNID_CAT / "cat.png", np.zeros((2, 2, 3), np.uint8))
    with caplog.at_level("WARNING", logger="transforms.sources"):
        sources.list_image_folder(str(tmp_path))
    assert (
        "1 file in a sub-folder that is not an ImageNet WordNet id (holiday) gets no label."
        in caplog.text
    )


def test_class_named_sub_folders_without_class_names_are_warned_of_with_the_flag_that_labels_them(
    tmp_path, caplog
):
    """cat/ and dog/ (Keras' image_dataset_from_directory layout) audited without
    --class_names: the warning said their files get no label because the folders are not
    WordNet ids, and no word of --class_names, the flag that labels them."""
    for name in ("cat", "dog"):
        write_image(tmp_path / name / "x.png", np.zeros((2, 2, 3), np.uint8))
    with caplog.at_level("WARNING", logger="transforms.sources"):
        listed = sources.list_image_folder(str(tmp_path))
    assert [f.label for f in listed] == [None, None]
    assert [r.getMessage() for r in caplog.records] == [
        "2 files in sub-folders that are not ImageNet WordNet ids (cat, dog) get no label. "
        "With --class_names (a file of the model's class names, one per line), a sub-folder "
        "named exactly as one of them labels its files with that class."
    ]


def test_a_dataset_folder_named_by_a_wordnet_id_is_warned_of_its_files_get_no_label(
    tmp_path, caplog
):
    """--dataset imagenet_a/n02123045, to audit one class: its files got no label, and
    the one warning, about a sub-folder, read as if the others had theirs."""
    parent = tmp_path / "imagenet_a"
    root = parent / WNID_CAT
    write_image(root / "cat.png", np.zeros((2, 2, 3), np.uint8))
    write_image(root / "more" / "cat2.png", np.zeros((2, 2, 3), np.uint8))
    with caplog.at_level("WARNING", logger="transforms.sources"):
        listed = sources.list_image_folder(str(root) + "/")
    assert [f.label for f in listed] == [None, None]
    said = [r.getMessage() for r in caplog.records if WNID_CAT in r.getMessage()]
    assert said == [
        f"{root} is itself named by an ImageNet WordNet id, but labels come from its "
        f"sub-folders' names: its 2 files get no label (to label them as {WNID_CAT}, pass "
        f"a folder holding it: its parent, {parent}, or a new folder holding a symbolic "
        "link to it)."
    ]
    (tmp_path / "one_class").mkdir()  # the link the warning suggests
    (tmp_path / "one_class" / WNID_CAT).symlink_to(root)
    for folder in (parent, tmp_path / "one_class"):  # labelled, no word of it
        caplog.clear()
        with caplog.at_level("WARNING", logger="transforms.sources"):
            listed = sources.list_image_folder(str(folder))
        assert [f.label for f in listed] == [281, 281]
        assert caplog.text == ""


def test_a_wordnet_id_folder_whose_files_all_have_labels_is_not_warned_of(tmp_path, caplog):
    """A WordNet-id folder holding WordNet-id sub-folders labels all its files: no file
    goes without a label, so there is nothing to warn of."""
    root = tmp_path / WNID_CAT
    write_image(root / WNID_SHARK / "shark.png", np.zeros((2, 2, 3), np.uint8))
    with caplog.at_level("WARNING", logger="transforms.sources"):
        listed = sources.list_image_folder(str(root))
    assert [f.label for f in listed] == [2]
    assert caplog.text == ""


def _info_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "INFO"]


def test_a_linked_folder_leading_outside_the_dataset_is_said_once_at_launch(tmp_path, caplog):
    # `ln -s /usr imgs/r`: 135k files of /usr were walked as inputs without a word.
    root, usr = tmp_path / "imgs", tmp_path / "usr"
    write_image(root / "sub" / "a.png", np.zeros((2, 2, 3), np.uint8))
    write_image(usr / "lib" / "b.png", np.zeros((2, 2, 3), np.uint8))
    (root / "r").symlink_to(usr)  # leads outside: said
    (root / "alias").symlink_to(root / "sub")  # within the dataset: not said
    (usr / "lib64").symlink_to(usr / "lib")  # within a folder already said: not said again
    with caplog.at_level("INFO", logger="transforms.sources"):
        files = sources.list_image_folder(str(root))
    assert {f.image_id for f in files} == {
        "sub/a.png",
        "alias/a.png",
        "r/lib/b.png",
        "r/lib64/b.png",
    }
    assert _info_lines(caplog) == [
        f"Following {root / 'r'} -> {usr.resolve()}, outside --dataset: its files are inputs too."
    ]


def test_links_leading_outside_the_dataset_are_said_five_at_most(tmp_path, caplog):
    root = tmp_path / "imgs"
    write_image(root / "a.png", np.zeros((2, 2, 3), np.uint8))
    for i in range(8):
        write_image(tmp_path / f"out{i}" / "b.png", np.zeros((2, 2, 3), np.uint8))
        (root / f"link{i}").symlink_to(tmp_path / f"out{i}")
    with caplog.at_level("INFO", logger="transforms.sources"):
        sources.list_image_folder(str(root))
    lines = _info_lines(caplog)
    assert lines[:5] == [
        f"Following {root / f'link{i}'} -> {(tmp_path / f'out{i}').resolve()}, outside --dataset: "
        "its files are inputs too."
        for i in range(5)
    ]
    assert lines[5:] == [
        "And 3 more links to folders outside --dataset: their files are inputs too."
    ]


def test_the_pipeline_listing_a_folder_says_nothing_of_its_links(tmp_path, caplog):
    # The job lists the folder again inside the pipeline: the launch said it already.
    root = tmp_path / "imgs"
    write_image(tmp_path / "usr" / "b.png", np.zeros((2, 2, 3), np.uint8))
    root.mkdir()
    (root / "r").symlink_to(tmp_path / "usr")
    with caplog.at_level("INFO", logger="transforms.sources"):
        listed = list(sources._list_local(str(root)))
    assert [f.image_id for f in listed] == ["r/b.png"] and not _info_lines(caplog)


def _listed(root, **kwargs) -> dict[str, str | None]:
    """image_id -> the reason it cannot be read (None: a file to read)."""
    return {f.image_id: f.error for f in sources.list_image_folder(str(root), **kwargs)}


def test_folder_with_glob_characters_in_its_name(tmp_path):
    root = tmp_path / "photos [2023] *?"
    write_image(root / "a.png", np.zeros((2, 2, 3), np.uint8))
    assert _listed(root) == {"a.png": None}


def test_file_names_that_are_not_utf8_get_valid_readable_ids(tmp_path):
    write_image(tmp_path / "ok.png", np.zeros((2, 2, 3), np.uint8))
    name = b"caf\xe9.png"  # Latin-1, as zips made on Windows hold them
    with open(bytes(tmp_path) + b"/" + name, "wb") as f:
        f.write(b"x")
    files = sources.list_image_folder(str(tmp_path))
    assert sorted(f.image_id for f in files) == ["caf\\xe9.png", "ok.png"]
    for f in files:
        f.image_id.encode("utf-8")  # no lone surrogate: every coder and Parquet can hold it
    (odd,) = (f for f in files if f.image_id != "ok.png")
    assert Path(odd.path).read_bytes() == b"x"  # the path still opens the file


def test_ids_of_file_names_are_one_per_name_and_lead_back_to_it():
    from transforms.datasource import image_id_of, relative_path

    latin1 = os.fsdecode(b"caf\xe9.png")  # as Python lists a name that is not UTF-8
    names = [latin1, "caf\\xe9.png", "caf\\\\xe9.png", "a\\b/c.png", "n01/é.png", "plain.png"]
    ids = [image_id_of(name) for name in names]
    assert ids == [
        "caf\\xe9.png",
        "caf\\\\xe9.png",
        "caf\\\\\\\\xe9.png",
        "a\\\\b/c.png",
        "n01/é.png",
        "plain.png",
    ]
    assert len(set(ids)) == len(ids)
    assert [relative_path(i) for i in ids] == names


def test_links_fifos_and_loops_are_inputs_or_error_records(tmp_path):
    import os

    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    write_image(root / "real.png", np.zeros((2, 2, 3), np.uint8))
    write_image(elsewhere / WNID_CAT / "cat.png", np.zeros((2, 2, 3), np.uint8))
    (root / "alias.png").symlink_to(root / "real.png")  # a linked file: read through the link
    (root / "linked").symlink_to(elsewhere)  # a linked sub-folder: listed like a folder
    (root / "dangling.png").symlink_to(tmp_path / "gone.png")
    (root / "loop").symlink_to(root)  # back to an ancestor: would never end
    (root / "ping.png").symlink_to(root / "pong.png")  # links pointing at each other
    (root / "pong.png").symlink_to(root / "ping.png")
    os.mkfifo(root / "x.png")  # reading it would block the job forever
    listed = _listed(root)
    assert sorted(listed) == [
        "alias.png",
        "dangling.png",
        "linked/" + WNID_CAT + "/cat.png",
        "loop",
        "ping.png",
        "pong.png",
        "real.png",
        "x.png",
    ]
    assert listed["alias.png"] is None and listed["real.png"] is None
    assert listed[f"linked/{WNID_CAT}/cat.png"] is None
    assert "dangling symbolic link" in listed["dangling.png"]
    assert "symbolic link loop" in listed["loop"]
    assert "cannot stat" in listed["ping.png"]
    assert listed["x.png"] == "a FIFO (named pipe), not a regular file"
    # Even unlisted (the folder changed after listing), a FIFO is refused, not waited on.
    fifo = sources.FolderFile(str(root / "x.png"), "x.png", None)
    (raw,) = sources._ReadFile().process(fifo)
    assert raw.data is None and "FIFO" in raw.error
    # A file listed, then deleted by another process before it was looked at.
    gone = sources._local_entry(str(root / "gone.png"), "gone.png", (str(root),))
    assert gone.error == "deleted while the job listed its folder"  # not a "dangling link"


def test_a_gs_image_the_credentials_may_not_read_is_an_error_record_saying_so(gcs_stub):
    # A worker read gs:// through Beam's FileSystems.open: the reason was Google's own,
    # "Forbidden: 403 GET http://...?projection=noAcl...: ...", its request's URL; a 401 too.
    gcs_stub.objects.update({"img/a.png": b"png", "img/b.png": b"png"})
    gcs_stub.forbidden.add("img/a.png")
    gcs_stub.unauthorized.add("img/b.png")
    for name, caller in (("a.png", "stub@stub.iam.gserviceaccount.com"), ("b.png", "Anonymous")):
        item = sources.FolderFile(f"gs://bucket/img/{name}", name, None)
        (raw,) = sources._ReadFile().process(item)
        assert raw.data is None and raw.error.startswith(
            f"cannot read file: [Errno 13] Permission denied ({caller} caller"
            if caller == "Anonymous"
            else f"cannot read file: [Errno 13] Permission denied ({caller} does not have "
        ), raw.error
        assert raw.error.endswith(f"): 'gs://bucket/img/{name}'"), raw.error
        assert "http://" not in raw.error, raw.error


def test_a_gs_folder_the_credentials_may_not_list_is_a_permission_error(gcs_stub):
    # Its 403 was a FileNotFoundError ("Cannot list image folder ...: Match operation
    # failed with exceptions {...}"), Beam's reprs and the request's URL.
    gcs_stub.objects["img/a.png"] = b"png"
    gcs_stub.unlistable = True
    with pytest.raises(PermissionError) as caught:
        sources.check_folder_exists("gs://bucket/img")
    assert caught.value.filename == "gs://bucket/img/"
    assert "storage.objects.list" in str(caught.value) and "http" not in str(caught.value)


def test_a_gs_folder_the_workers_may_not_list_fails_the_job_naming_it(gcs_stub):
    # A worker's listing (fileio.MatchFiles: the launcher's credentials may list, the
    # workers' not) failed the job in Beam's "Match operation failed with exceptions
    # {...}", nested reprs and the request's URL; list_image_folder's said the same.
    gcs_stub.objects["img/a.png"] = b"png"
    gcs_stub.unlistable = True
    with pytest.raises(PermissionError) as caught:
        sources.list_image_folder("gs://bucket/img")
    assert caught.value.filename == "gs://bucket/img/"
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the runner's wrapping
        with TestPipeline() as p:
            _ = p | sources.ReadImageFolder("gs://bucket/img")
    said = str(caught.value)
    assert "Permission denied (stub@stub.iam.gserviceaccount.com does not have storage." in said
    assert "'gs://bucket/img/'" in said and "http://" not in said, said


def test_a_file_larger_than_any_image_is_an_error_record_not_read_whole(tmp_path):
    from apache_beam.io.filesystems import FileSystems

    big = tmp_path / "video.png"
    with open(big, "wb") as f:  # sparse: no disk space, no memory
        f.truncate(files.MAX_FILE_BYTES + 1)
    (raw,) = sources._ReadFile().process(sources.FolderFile(str(big), "video.png", None))
    assert raw.data is None and raw.error == (
        f"cannot read file: file of {files.MAX_FILE_BYTES + 1} bytes, more than any image "
        "the job decodes (1024 MiB, transforms.files.MAX_FILE_BYTES)"
    )
    # Through Beam's file systems (gs://) the size is not checked first: the read stops.
    with FileSystems.open(str(big), compression_type="uncompressed") as f:
        with pytest.raises(OSError, match=f"^file of more than {files.MAX_FILE_BYTES} bytes, "):
            files.read_bounded(f)


def test_folders_holding_other_runs_of_the_job_are_not_listed(tmp_path, caplog):
    from apache_beam.io.filesystem import FileMetadata

    write_image(tmp_path / "a.png", np.zeros((2, 2, 3), np.uint8))
    # Another tool's manifest naming a model, without the job's config, is no run either.
    manifests = {"audit_a": '{"model": {}, "config": {}}', "notes": "{}", "tool": '{"model": {}}'}
    for name, manifest in manifests.items():
        write_image(tmp_path / name / "results" / "x.png", np.zeros((2, 2, 3), np.uint8))
        (tmp_path / name / "manifest.json").write_text(manifest)
    files = ("manifest.json", "results/x.png")
    expected = {"a.png": None} | {f"{name}/{f}": None for name in ("notes", "tool") for f in files}
    assert _listed(tmp_path) == expected  # notes/ and tool/ hold no run: their files are inputs
    assert "holds a run of this job" in caplog.text and "audit_a" in caplog.text
    # The same files matched by Beam's file systems (how gs:// folders are listed).
    prefix = str(tmp_path) + "/"
    metas = [FileMetadata(str(p), p.stat().st_size) for p in tmp_path.rglob("*") if p.is_file()]
    found = [sources._folder_file(prefix, m) for m in metas]
    assert {f.image_id for f in found if f is not None} == set(expected)


def test_files_below_hidden_folders_are_not_inputs_as_beam_matches_them(tmp_path):
    # gs:// folders are matched by Beam, each file with its whole path below the
    # folder: a hidden folder anywhere on it (.git/, holiday/.cache/) leaves it out,
    # as the local listing does by never entering such a folder.
    from apache_beam.io.filesystem import FileMetadata

    for name in ("a.png", ".git/x.png", "holiday/b.png", "holiday/.cache/y.png"):
        write_image(tmp_path / name, np.zeros((2, 2, 3), np.uint8))
    (tmp_path / "holiday" / ".DS_Store").write_bytes(b"x")
    expected = {"a.png", "holiday/b.png"}
    assert {f.image_id for f in sources.list_image_folder(str(tmp_path))} == expected
    prefix = str(tmp_path) + "/"
    metas = [FileMetadata(str(p), p.stat().st_size) for p in tmp_path.rglob("*") if p.is_file()]
    found = [sources._folder_file(prefix, m) for m in metas]
    assert {f.image_id for f in found if f is not None} == expected


def test_each_run_in_a_process_leaves_out_a_run_put_in_its_folder_since(
    image_folder, linear_keras, tmp_path, caplog
):
    """A notebook's runs on one folder: the first listed it while later/ was empty, the
    second wrote its run there, and the third read that run's files as images (error
    records) without a word: the first run's answer was kept for the process."""
    root = Path(image_folder["root"])
    (root / "later").mkdir()
    flags = cli_args(dataset=root, model=linear_keras, steps=2, tolerance=0, faithfulness="none")
    first = run([*flags, "--output", tmp_path / "first"], save_main_session=False)
    run([*flags, "--output", root / "later"], save_main_session=False)  # its own: left out
    for out in ("third", "fourth"):
        caplog.clear()
        manifest = run([*flags, "--output", tmp_path / out], save_main_session=False)
        assert manifest["counts"] == first["counts"]
        said = [r.getMessage() for r in caplog.records if "Not listing" in r.getMessage()]
        assert said == [
            f"Not listing {root / 'later'}: it holds a run of this job (its manifest.json)."
        ]


def test_the_jobs_own_output_inside_the_folder_is_not_listed(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((2, 2, 3), np.uint8))
    (tmp_path / "audit" / "results").mkdir(parents=True)
    (tmp_path / "audit" / "manifest.json").write_text("{}")
    assert _listed(tmp_path, skip=str(tmp_path / "audit")) == {"a.png": None}


def test_links_into_the_jobs_own_output_are_not_listed(tmp_path):
    """Links in the folder to the run's own files (its results/, its manifest, its
    .tmp/ not made yet): a run read its own Parquet files and manifest as images, and
    the launch counted the earlier run's result files, not the pipeline's (another
    count of inputs: the files change as the run writes them)."""
    images, audit = tmp_path / "images", tmp_path / "audit"
    write_image(images / "a.png", np.zeros((2, 2, 3), np.uint8))
    (audit / "results").mkdir(parents=True)
    (audit / "results" / "part-00000-of-00001.parquet").write_bytes(b"PAR1")
    (audit / "manifest.json").write_text("{}")
    (images / "res").symlink_to(audit / "results")
    (images / "man.json").symlink_to(audit / "manifest.json")
    (images / "tmp").symlink_to(audit / ".tmp")  # dangling until the run writes there
    (images / "audit").symlink_to(audit)
    assert _listed(images, skip=str(audit)) == {"a.png": None}


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No files found in image folder"):
        sources.list_image_folder(str(tmp_path))


def test_sample_is_real_photos_with_imagenet_labels():
    files = sources.sample_files()
    ids = {f.image_id: f.label for f in files}
    assert ids["sample/n02123045/chelsea.png"] == 281
    assert ids["sample/n07920052/coffee.png"] == 967
    assert len(ids) == len(files) >= 6


@pytest.fixture(scope="module")
def tiny_imagenet_a(tmp_path_factory):
    """The real `imagenet_a` TFDS builder, prepared offline from a tiny folder.

    Only the download is replaced: the builder's own `_generate_examples` reads
    `imagenet-a/<wnid>/<file>.jpg` as it would from the real archive.
    """
    import tensorflow_datasets as tfds

    root = tmp_path_factory.mktemp("imagenet_a_download")
    rng = np.random.default_rng(4)
    for wnid, count in ((WNID_CAT, 2), (WNID_SHARK, 2)):
        for i in range(count):
            array = rng.integers(0, 256, (SIZE + 4, SIZE, 3), dtype=np.uint8)
            write_image(root / "imagenet-a" / wnid / f"{wnid}_{i}.jpg", array, quality=95)
    data_dir = str(tmp_path_factory.mktemp("tfds_data"))
    builder = tfds.builder("imagenet_a", data_dir=data_dir)
    with mock.patch.object(
        tfds.download.DownloadManager, "download_and_extract", return_value=str(root)
    ):
        builder.download_and_prepare()
    return data_dir


def test_resolve_tfds_names_features_and_classes(tiny_imagenet_a):
    source = sources.resolve_tfds("imagenet_a", "test", tiny_imagenet_a, download=False)
    assert (source.image_key, source.label_key, source.file_name_key) == (
        "image",
        "label",
        "file_name",
    )
    assert source.num_examples == 4 and len(source.class_names) == 1000


def test_read_tfds_yields_encoded_images_with_stable_ids(tiny_imagenet_a):
    source = sources.resolve_tfds("imagenet_a", "test", tiny_imagenet_a, download=False)
    expected = [
        (f"{w}_{i}.jpg", label, b"\xff\xd8", "imagenet_a")
        for w, label in ((WNID_CAT, 281), (WNID_SHARK, 2))
        for i in range(2)
    ]
    with TestPipeline() as p:
        raw = p | sources.ReadTfds(source)
        got = raw | beam.Map(lambda r: (r.file_name, r.label, r.data[:2], r.image_id.split("/")[0]))
        assert_that(got, equal_to(expected))


def test_tfds_dataset_end_to_end_with_subsplit(tiny_imagenet_a, linear_keras, tmp_path):
    half_of_test = cli_args(dataset="imagenet_a", split="test[:50%]", data_dir=tiny_imagenet_a)
    args = cli_args(
        model=linear_keras, output=tmp_path / "out", steps=2, target="label", attributions="none"
    )
    manifest = run([*half_of_test, *args], save_main_session=False)
    results = pd.read_parquet(tmp_path / "out" / "results")
    assert manifest["counts"]["inputs"] == 2 and len(results) == 2
    assert results.image_id.is_unique and results.image_id.str.startswith("imagenet_a/").all()
    assert set(results.label_name) <= {"tabby cat", "great white shark"}
    assert (results.target_class == results.label).all()
    assert manifest["dataset"] == "imagenet_a" and manifest["split"] == "test[:50%]"


@pytest.fixture(scope="module")
def half_split_run(tmp_path_factory, tiny_imagenet_a, linear_keras):
    """A finished run of `tiny_imagenet_a`'s test[:50%] (--steps 2), made once a module
    for the resume tests: `args(output)` are its flags with `output`, `copy(output)`
    puts a copy of the run there; `manifest` is its manifest."""
    where = tmp_path_factory.mktemp("half_split_run")
    split = cli_args(dataset="imagenet_a", split="test[:50%]", data_dir=tiny_imagenet_a)

    def args(output) -> list[str]:
        return [*split, *cli_args(model=linear_keras, output=output, steps=2)]

    manifest = run(args(where / "out"), save_main_session=False)

    def copy(output) -> None:
        shutil.copytree(where / "out", output)

    return {"args": args, "copy": copy, "manifest": manifest}


def test_a_resume_of_a_whole_tfds_split_completes_at_once(half_split_run, tmp_path, caplog):
    # Its ids name the shard files, known only as they are read; its count is known
    # (the builder's), and every row a resume finds is of this --split.
    args = half_split_run["args"](tmp_path / "out")
    assert half_split_run["manifest"]["counts"]["images_with_rows"] == 2
    half_split_run["copy"](tmp_path / "out")
    with caplog.at_level(logging.INFO):
        manifest = run([*args, "--resume"], save_main_session=False)
    assert manifest["counts"]["inputs"] == manifest["counts"]["skipped_done_before"] == 2
    assert manifest["all_inputs_accounted_for"] and manifest["status"] == "complete"
    assert "Every input has rows already: nothing left to do." in caplog.messages


def test_a_resume_of_a_tfds_split_with_one_example_left_runs_it(half_split_run, tmp_path):
    # Only the count tells a whole split from one short of it: one example without a
    # row (as a run killed before it, or whose image failed, leaves) is audited, once.
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    args = half_split_run["args"](tmp_path / "out")
    assert half_split_run["manifest"]["counts"]["images_with_rows"] == 2
    half_split_run["copy"](tmp_path / "out")
    (part,) = (tmp_path / "out" / "results").glob("part-*.parquet")
    table = pq.read_table(part)
    ids = sorted(table.column("image_id").to_pylist())
    pq.write_table(table.filter(pc.equal(table["image_id"], ids[0])), part)
    manifest = run([*args, "--resume"], save_main_session=False)
    counts = manifest["counts"]
    assert counts["inputs"] == 2 and counts["skipped_done_before"] == 1
    assert counts["images_with_rows"] == 1
    assert sorted(pd.read_parquet(tmp_path / "out" / "results").image_id) == ids


def test_a_label_offset_that_shifts_imagenet_a_on_a_1001_output_model_exits_2(
    tiny_imagenet_a, tmp_path, capsys
):
    # As on a WordNet-id folder: --label_offset 0 on a background-class model read
    # every imagenet_a label and prediction one class off, silently.
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, keras.layers.Dense(1001)(keras.layers.Flatten()(inputs)))
    model.save(tmp_path / "background.keras")
    args = cli_args(dataset="imagenet_a", data_dir=tiny_imagenet_a, label_offset=0)
    code = main([*args, *cli_args(model=tmp_path / "background.keras", output=tmp_path / "o")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(
        "error: --label_offset 0 does not fit --dataset 'imagenet_a', whose labels are "
        "ImageNet's 1000 classes,"
    )
    assert err[0].endswith("the offset that fits is 1; leave --label_offset out.")


def test_a_tfds_builder_config_is_read_by_its_name(linear_keras, tmp_path):
    data_dir = _prepared("tiny_shades/light", tmp_path)
    args = cli_args(dataset="tiny_shades/light", data_dir=data_dir, model=linear_keras)
    args += cli_args(output=tmp_path / "out", steps=2, target="label", attributions="none")
    manifest = run(args, save_main_session=False)
    results = pd.read_parquet(tmp_path / "out" / "results")
    assert manifest["dataset"] == "tiny_shades/light" and manifest["counts"]["rows"] == 3
    assert results.image_id.str.startswith("tiny_shades/light/").all()
    assert sorted(results.label) == [0, 0, 1] and (results.target_class == results.label).all()


def test_a_tfds_photo_with_an_exif_orientation_is_fed_upright_unlike_tfds_own_decoding(
    linear_keras, tmp_path
):
    """As docs/inputs.md says: the job decodes a TFDS dataset's encoded images itself, as an image
    folder's files (EXIF orientation applied), where TFDS's decoding gives them as stored."""
    import tensorflow_datasets as tfds

    data_dir = _prepared("tiny_turned_photo", tmp_path)
    (example,) = tfds.as_numpy(
        tfds.builder("tiny_turned_photo", data_dir=data_dir).as_dataset(split="test")
    )
    assert example["image"].shape == (SIZE // 2, SIZE, 3)  # TFDS: as stored, landscape
    args = cli_args(dataset="tiny_turned_photo", data_dir=data_dir, model=linear_keras)
    run(
        [*args, *cli_args(output=tmp_path / "out", steps=2, faithfulness="none")],
        save_main_session=False,
    )
    (row,) = pd.read_parquet(tmp_path / "out" / "results").itertuples()
    photo = np.abs(np.asarray(row.attributions).reshape(SIZE, SIZE, 3)).sum(axis=2) > 0
    quarter = SIZE // 4  # upright, SIZE high and SIZE/2 wide: padded left and right
    assert photo[:, quarter : SIZE - quarter].all() and not photo[:, :quarter].any()
    assert not photo[:, SIZE - quarter :].any()


def test_a_tfds_dataset_with_other_classes_than_the_model_is_warned_of(
    linear_keras, tmp_path, caplog
):
    # tiny_shades' 2 classes (a, b) on a 1000-class ImageNet model: its label 0 is
    # read as the model's class 0 and named 'tench', which was said nowhere.
    from pipeline.main import prepare

    data_dir = _prepared("tiny_shades/dark", tmp_path)
    args = cli_args(dataset="tiny_shades/dark", data_dir=data_dir, model=linear_keras)
    with caplog.at_level("WARNING", logger="pipeline.resolve"):
        prepare([*args, *cli_args(output=tmp_path / "out")])
    warned = [r.getMessage() for r in caplog.records if "TFDS dataset" in r.getMessage()]
    assert warned == [
        f"TFDS dataset tiny_shades/dark has 2 classes (a, b) and --model {linear_keras} has "
        "1000 classes: "
        "its labels are read as the model's classes 0 to 1, and label_name names them as the "
        "model does ('tench', not 'a'). Unless they are those classes, label, label_name and "
        "--target label mean nothing here."
    ]


def _two_class_keras(path, classes: int = 2) -> str:
    """A `.keras` file of 2 classes (as tiny_shades has) on SIZE x SIZE images."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    keras.Model(inputs, keras.layers.Dense(classes)(keras.layers.Flatten()(inputs))).save(path)
    return str(path)


def test_a_tfds_dataset_of_more_classes_than_the_model_exits_2_saying_why(tmp_path, capsys):
    # Its labels would be read as classes the model does not have; the message
    # said "it scores 1 classes, fewer than the dataset's 2." and not what to do.
    data_dir = _prepared("tiny_shades/dark", tmp_path)
    model = _two_class_keras(tmp_path / "three.keras", classes=3)
    args = cli_args(dataset="tiny_shades/dark", data_dir=data_dir, output=tmp_path / "out")
    assert main([*args, "--model", model, "--label_offset", "2"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: --model '{model}' has 3 outputs; with --label_offset 2 it scores 1 class, "
        "fewer than the --dataset's 2 classes (its labels are read as the model's classes): "
        "use a model that scores them, or a smaller --label_offset."
    )


def _one_output_keras(path) -> str:
    """A `.keras` binary classifier: one logit on SIZE x SIZE images."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(inputs))).save(path)
    return str(path)


def test_a_binary_classifier_of_one_output_audits_a_two_class_tfds_dataset(
    tmp_path, caplog, capsys
):
    # A single logit on tiny_shades' 2 classes (as on cats_vs_dogs) exited 2: "has 1 outputs;
    # with --label_offset 0 it scores 1 class, fewer than the --dataset's 2 classes", where
    # the same model on the sample or a folder runs. A one-output model scores no classes.
    from pipeline import report
    from transforms import plots

    data_dir = _prepared("tiny_shades/dark", tmp_path)
    model = _one_output_keras(tmp_path / "one.keras")
    args = cli_args(dataset="tiny_shades/dark", data_dir=data_dir, model=model)
    args += cli_args(output=tmp_path / "out", steps=4, faithfulness="none")
    with caplog.at_level(logging.WARNING, logger="pipeline.resolve"):
        assert main(args) == 0, capsys.readouterr().err
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.resolve"]
    assert said == [
        f"TFDS dataset tiny_shades/dark has 2 classes (a, b) and --model {model} has one "
        "output, a score and no classes to compare them with: label and label_name hold the "
        "dataset's classes, and they, --target label and the report's accuracy mean nothing "
        "here."
    ]
    rows = pd.read_parquet(tmp_path / "out" / "results")
    assert sorted(zip(rows.label, rows.label_name, strict=True)) == [(0, "a"), (0, "a"), (1, "b")]
    # Its one output, attributed: predicted and named by index, as the model has no names.
    assert (rows.predicted_class == 0).all() and (rows.predicted_name == "0").all()
    assert (rows.target_class == 0).all() and (rows.target_name == "0").all()
    assert [list(p) for p in rows.top_k_probs] == [[1.0]] * 3
    assert rows.target_score.notna().all() and rows.within_tolerance.all()
    # Captioned by its score and the dataset's names, not "pred: 0 (>99.9%)".
    captions = [plots.row_title(row, one_output=True)[0] for _, row in rows.iterrows()]
    assert sorted(c.split("\n", 1)[1] for c in captions) == sorted(
        f"score: {row.target_score:.3g}\nlabel: {row.label_name}" for row in rows.itertuples()
    )
    assert report.main(["--input", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.html").is_file()


def test_a_one_output_model_on_a_one_class_tfds_dataset_is_as_on_two_classes(tmp_path, caplog):
    # One class and one output matched in count: no warning was given, and the
    # dataset's one name ('only') named the model's output, as if it were that class,
    # where on 2 classes the launch warns and predicted_name is the output's index.
    data_dir = _prepared("tiny_one_class", tmp_path)
    model = _one_output_keras(tmp_path / "one.keras")
    args = cli_args(dataset="tiny_one_class", data_dir=data_dir, model=model)
    args += cli_args(output=tmp_path / "out", steps=4, faithfulness="none")
    with caplog.at_level(logging.WARNING, logger="pipeline.resolve"):
        assert main(args) == 0
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.resolve"]
    assert said == [
        f"TFDS dataset tiny_one_class has 1 class (only) and --model {model} has one "
        "output, a score and no classes to compare them with: label and label_name hold the "
        "dataset's classes, and they, --target label and the report's accuracy mean nothing "
        "here."
    ]
    rows = pd.read_parquet(tmp_path / "out" / "results")
    assert sorted(zip(rows.label, rows.label_name, strict=True)) == [(0, "only"), (0, "only")]
    assert (rows.predicted_name == "0").all() and (rows.target_name == "0").all()
    assert [list(names) for names in rows.top_k_names] == [["0"], ["0"]]


def test_target_label_on_a_one_output_model_and_a_tfds_dataset_exits_2(tmp_path, capsys):
    # As on the sample: the dataset's classes are not the one output's, and its label 0
    # attributed the score of whatever the output scores, for images of class a.
    data_dir = _prepared("tiny_shades/dark", tmp_path)
    model = _one_output_keras(tmp_path / "one.keras")
    args = cli_args(dataset="tiny_shades/dark", data_dir=data_dir, model=model, target="label")
    assert main([*args, *cli_args(output=tmp_path / "out")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert lines == [
        f"error: --target label: --model {model!r} has one output, a score and no classes, "
        "and the labels of 'tiny_shades/dark' are the dataset's 2 classes (a, b), not "
        "outputs of the model. Use --target predicted, which attributes that output."
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("names", "warned"),
    [
        (["b", "a"], "names class 0 'b' where TFDS dataset tiny_shades/dark names its label 0 'a'"),
        (["cat", "b"], "names class 0 'cat' where TFDS dataset tiny_shades/dark names its label 0"),
        (["A", "b"], None),  # the dataset's own names, spelt in another case
    ],
)
def test_class_names_other_than_a_tfds_datasets_own_are_warned_of(tmp_path, caplog, names, warned):
    # --class_names replaces the dataset's names in label_name too: names in another
    # order named each image's label as another class ('b' for an image of 'a'), silently.
    from pipeline.main import prepare

    data_dir = _prepared("tiny_shades/dark", tmp_path)
    model = _two_class_keras(tmp_path / "two.keras")
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    args = cli_args(dataset="tiny_shades/dark", data_dir=data_dir, model=model)
    args += cli_args(class_names=tmp_path / "names.txt", output=tmp_path / "out")
    with caplog.at_level("WARNING", logger="pipeline.resolve"):
        job, _ = prepare(args)
    assert job.class_names == tuple(names)
    said = [r.getMessage() for r in caplog.records if "--class_names" in r.getMessage()]
    if warned is None:
        assert said == []
    else:
        assert len(said) == 1 and warned in said[0], said
        assert "label_name holds the names of --class_names" in said[0]


def test_a_resume_refuses_a_run_of_another_tfds_dataset_version(linear_keras, tmp_path):
    # Another prepared version of a dataset can hold other examples under the same
    # tfds_id ids: its rows must not be mixed with this version's.
    data_dir = _prepared("tiny_shades/light", tmp_path)
    args = cli_args(dataset="tiny_shades/light", data_dir=data_dir, model=linear_keras)
    args += cli_args(output=tmp_path / "out", steps=2, attributions="none")
    manifest = run(args, save_main_session=False)
    assert manifest["dataset_version"] == "1.0.0"  # tests.tfds_builders' VERSION
    assert run([*args, "--resume"], save_main_session=False)["counts"]["rows"] == 0  # all done
    # The same folder as if an earlier run had read version 0.9.0 of the dataset.
    path = tmp_path / "out" / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "dataset_version": "0.9.0"}))
    message = "--dataset version (earlier run: '0.9.0', this run: '1.0.0')"
    with pytest.raises(ValueError, match=re.escape(message)):
        run([*args, "--resume"], save_main_session=False)


def test_a_resume_refuses_a_copy_of_the_tfds_dataset_sharded_otherwise(linear_keras, tmp_path):
    # Its examples' ids name the shard files (`<file>-00000-of-00003__2`): a copy of the
    # same version prepared in other shards (another --data_dir) names them otherwise.
    # The resume took the earlier run's rows for this split's (as many), completed at
    # once and said all were done; one row fewer, and it audited every example again.
    from tests import tfds_builders

    one, three = (tmp_path / "one", tmp_path / "three")
    dirs = [
        tfds_builders.prepared("tiny_shades/dark", d, num_shards=n)
        for d, n in ((one, 1), (three, 3))
    ]
    args = cli_args(dataset="tiny_shades/dark", model=linear_keras, output=tmp_path / "out")
    args += cli_args(steps=2, tolerance=0, attributions="none", faithfulness="none")
    run([*args, "--data_dir", dirs[0]], save_main_session=False)
    assert (
        run([*args, "--data_dir", dirs[0], "--resume"], save_main_session=False)["counts"][
            "skipped_done_before"
        ]
        == 3
    )
    message = (
        "--resume: the earlier run in {!r} has rows of examples that 'tiny_shades/dark' "
        "split 'test' does not hold as it is prepared in {!r}"
    ).format(str(tmp_path / "out"), dirs[1])
    with pytest.raises(ValueError, match=re.escape(message)):
        run([*args, "--data_dir", dirs[1], "--resume"], save_main_session=False)


def test_of_several_tfds_image_features_the_image_is_audited_and_said(tmp_path, caplog):
    # Without supervised keys the first image feature was audited, silently: here
    # the mask, defined before the photo.
    data_dir = _prepared("tiny_two_images", tmp_path)
    with caplog.at_level("WARNING", logger="transforms.sources"):
        source = sources.resolve_tfds("tiny_two_images", "test", data_dir, download=False)
    assert source.image_key == "image"
    assert [r.getMessage() for r in caplog.records] == [
        "TFDS dataset 'tiny_two_images' has 2 image features (mask, image) and names none as "
        "its input (supervised_keys): auditing 'image'."
    ]


@pytest.mark.parametrize("config", ["slash", "plain"])
def test_a_tfds_file_name_feature_spelt_as_tfds_datasets_do_fills_file_name(
    config, linear_keras, tmp_path
):
    # cats_vs_dogs' 'image/filename' and eurosat's 'filename' were not read: file_name
    # held the tfds_id ('tiny_file_names-test.tfrecord-00000-of-00001__0').
    name = f"tiny_file_names/{config}"
    data_dir = _prepared(name, tmp_path)
    args = cli_args(dataset=name, data_dir=data_dir, model=linear_keras, output=tmp_path / "out")
    run([*args, *cli_args(steps=2, attributions="none")], save_main_session=False)
    results = pd.read_parquet(tmp_path / "out" / "results", columns=["image_id", "file_name"])
    assert sorted(results.file_name) == ["photo_0.jpg", "photo_1.jpg"]
    assert results.image_id.str.startswith(f"{name}/tiny_file_names-test.tfrecord").all()


def test_a_tfds_label_that_is_not_a_class_label_is_warned_of(tmp_path, caplog):
    data_dir = _prepared("tiny_text_labels", tmp_path)
    with caplog.at_level("WARNING", logger="transforms.sources"):
        source = sources.resolve_tfds("tiny_text_labels", "test", data_dir, download=False)
    assert source.label_key is None and source.num_examples == 2
    assert (
        "TFDS dataset 'tiny_text_labels' has a 'label' feature that is not a ClassLabel (Text): "
        "its images get no label." in caplog.text
    )


def test_of_several_tfds_class_labels_the_one_read_as_the_label_is_said(tmp_path, caplog):
    # shapes3d's six ClassLabels (label_floor_hue, ..., label_shape), no supervised keys:
    # the first was read as every image's label, and nothing said which.
    data_dir = _prepared("tiny_two_labels", tmp_path)
    with caplog.at_level("WARNING", logger="transforms.sources"):
        source = sources.resolve_tfds("tiny_two_labels", "test", data_dir, download=False)
    assert source.label_key == "fine" and source.class_names == ("w", "x", "y", "z")
    assert [r.getMessage() for r in caplog.records] == [
        "TFDS dataset 'tiny_two_labels' has 2 ClassLabel features (fine, coarse) and names "
        "none as its label (supervised_keys): reading 'fine' as each image's label."
    ]


def test_a_tfds_supervised_label_that_is_no_class_label_is_said_with_the_one_read(tmp_path, caplog):
    # supervised_keys name 'label', a number; the ClassLabel 'species' was read as the
    # label instead, silently (as imagenet2012_real's original_label for its real_label).
    data_dir = _prepared("tiny_number_labels", tmp_path)
    with caplog.at_level("WARNING", logger="transforms.sources"):
        source = sources.resolve_tfds("tiny_number_labels", "test", data_dir, download=False)
    assert source.label_key == "species" and source.class_names == ("cat", "dog")
    assert [r.getMessage() for r in caplog.records] == [
        "TFDS dataset 'tiny_number_labels' names 'label' as its label (supervised_keys), "
        "which is not a ClassLabel (Tensor): reading its ClassLabel 'species' as each "
        "image's label instead."
    ]


def test_a_tfds_supervised_label_of_another_name_that_is_no_class_label_is_warned_of(
    tmp_path, caplog
):
    # Only a feature named 'label' was warned of: the images of a dataset whose
    # supervised label is the number 'target' got no label without a word.
    data_dir = _prepared("tiny_number_targets", tmp_path)
    with caplog.at_level("WARNING", logger="transforms.sources"):
        source = sources.resolve_tfds("tiny_number_targets", "test", data_dir, download=False)
    assert source.label_key is None and source.num_examples == 2
    assert [r.getMessage() for r in caplog.records] == [
        "TFDS dataset 'tiny_number_targets' has a 'target' feature, its label "
        "(supervised_keys), that is not a ClassLabel (Tensor): its images get no label."
    ]


def test_a_tfds_dataset_of_float_images_exits_2_naming_the_feature(linear_keras, tmp_path, capsys):
    # TFDS stores a float32 image as the bytes of an RGBA PNG: decoded as a picture, its
    # mid-grey 0.5 pixels were black (alpha 63 over colour bytes 0), and audited as such.
    data_dir = _prepared("tiny_float_images", tmp_path)
    args = cli_args(dataset="tiny_float_images", data_dir=data_dir, model=linear_keras)
    code = main([*args, *cli_args(output=tmp_path / "out", steps=2)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and err == [
        "error: TFDS dataset 'tiny_float_images' stores its image feature 'image' as float32 "
        "(the bytes of each float in a PNG pixel), which the job does not decode; it reads "
        "uint8 and uint16 images."
    ]
    assert not (tmp_path / "out").exists()


def test_target_label_on_a_tfds_dataset_without_labels_exits_2(linear_keras, tmp_path, capsys):
    data_dir = _prepared("tiny_unlabelled", tmp_path)
    args = cli_args(dataset="tiny_unlabelled", data_dir=data_dir, model=linear_keras)
    code = main([*args, *cli_args(output=tmp_path / "out", target="label")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and err == [
        "error: --target label: TFDS dataset 'tiny_unlabelled' has no label feature (a "
        "ClassLabel). Use --target predicted or top_k."
    ]
    # The same dataset with --target predicted runs: one row per image.
    manifest = run([*args, *cli_args(output=tmp_path / "out", steps=2)], save_main_session=False)
    assert manifest["counts"]["rows"] == 2 and manifest["all_inputs_accounted_for"]


def test_a_tfds_dataset_of_unnamed_classes_is_named_as_the_model_names_them(
    linear_keras, tmp_path, caplog
):
    # ClassLabel(num_classes=1000) names its classes '0' to '999': on an ImageNet model
    # they replaced ImageNet's names, so predicted_name held '667', not a class name (as
    # a dataset of 3 unnamed classes did not), and a --class_names was warned of as
    # naming the dataset's classes otherwise.
    data_dir = _prepared("tiny_unnamed_thousand", tmp_path)
    args = cli_args(dataset="tiny_unnamed_thousand", data_dir=data_dir, model=linear_keras)
    args += cli_args(steps=2, attributions="none")
    run([*args, *cli_args(output=tmp_path / "out")], save_main_session=False)
    columns = ["label", "label_name", "predicted_class", "predicted_name"]
    rows = pd.read_parquet(tmp_path / "out" / "results", columns=columns).sort_values("label")
    names = labels.imagenet_class_names()
    assert list(rows.label_name) == ["great white shark", "tabby cat"]
    assert list(rows.predicted_name) == [names[c] for c in rows.predicted_class]
    names_file = tmp_path / "names.txt"
    names_file.write_text("".join(f"c{i}\n" for i in range(1000)))
    with caplog.at_level("WARNING"):
        run([*args, *cli_args(output=tmp_path / "o2", class_names=names_file)], False)
    assert "--class_names names class" not in caplog.text
    rows = pd.read_parquet(tmp_path / "o2" / "results", columns=columns).sort_values("label")
    assert list(rows.label_name) == ["c2", "c281"]


def test_a_tfds_dataset_of_some_imagenet_classes_is_labelled_in_the_models_space(
    linear_keras, tmp_path
):
    # imagenette names its 10 classes by WordNet id: its label 1 is ImageNet's 217
    # (English springer). On an ImageNet model it was read as class 1 (goldfish),
    # named and targeted so; a model of the dataset's own 3 classes keeps them.
    import keras

    data_dir = _prepared("tiny_imagenette", tmp_path)
    args = cli_args(dataset="tiny_imagenette", data_dir=data_dir, target="label", steps=2)
    manifest = run([*args, *cli_args(model=linear_keras, output=tmp_path / "imagenet")])
    assert manifest["all_inputs_accounted_for"] and manifest["counts"]["rows"] == 3
    rows = pd.read_parquet(tmp_path / "imagenet" / "results").sort_values("label")
    assert rows["label"].tolist() == rows["target_class"].tolist() == [0, 217, 482]
    assert rows["label_name"].tolist() == ["tench", "English Springer Spaniel", "cassette player"]

    inputs = keras.Input((SIZE, SIZE, 3))
    three = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    three.save(tmp_path / "three.keras")
    run([*args, *cli_args(model=tmp_path / "three.keras", output=tmp_path / "own")])
    rows = pd.read_parquet(tmp_path / "own" / "results").sort_values("label")
    assert rows["label"].tolist() == rows["target_class"].tolist() == [0, 1, 2]
    assert rows["label_name"].tolist() == ["n01440764", "n02102040", "n02979186"]


@pytest.mark.parametrize(
    "stored, shows",
    [
        ("full", "each image's attribution mask (the photos cannot be read back"),
        ("none", "nothing to draw: this run stored no attribution maps"),
    ],
)
def test_the_gallery_of_a_tfds_run_says_what_it_can_show(
    tiny_imagenet_a, linear_keras, tmp_path, stored, shows
):
    from pipeline.report import build_report

    args = cli_args(dataset="imagenet_a", split="test", data_dir=tiny_imagenet_a)
    args += cli_args(model=linear_keras, output=tmp_path / "out", steps=2, attributions=stored)
    run(args, save_main_session=False)
    page = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", build_report(str(tmp_path / "out"))))
    assert shows in page and "translucently" not in page


def test_a_split_that_reads_no_example_exits_2_before_the_model_loads(
    tiny_imagenet_a, linear_keras, tmp_path
):
    # 'test[:0]' loaded the model, ran the pipeline on nothing and exited 1 ("no input:
    # the dataset gave no image"): the split's size is in the prepared dataset's info.
    # A real process: its whole stderr is the one error line (no "Loaded" model line).
    args = cli_args(dataset="imagenet_a", split="test[:0]", data_dir=tiny_imagenet_a)
    args += cli_args(model=linear_keras, output=tmp_path / "out", steps=2)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = launched([sys.executable, "-m", "pipeline", *args])
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.splitlines()  # but TensorFlow's C++ start-up lines: "E0000 00:00..."
    assert [line for line in lines if not re.match(r"[EWI]\d{4} ", line)] == [
        "error: --split 'test[:0]' reads no example of 'imagenet_a' (test: 4 examples); pass "
        "a split or slice that holds some, e.g. --split test."
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("split", ["test[:0%]", "test[:10%]", "test[2:2]+test[-1:-1]"])
def test_every_split_spec_that_reads_no_example_exits_2(
    split, tiny_imagenet_a, linear_keras, tmp_path, capsys
):
    # 'test[:10%]' of 4 examples rounds to none.
    line = _refused_split(split, tiny_imagenet_a, linear_keras, tmp_path, capsys)
    assert line == (
        f"error: --split {split!r} reads no example of 'imagenet_a' (test: 4 examples); pass "
        "a split or slice that holds some, e.g. --split test."
    )


def test_a_tfds_dataset_under_tfds_testing_mock_data_is_audited_offline(linear_keras, tmp_path):
    # DESIGN: TFDS is tested offline "with a tiny generated dataset or
    # `tfds.testing.mock_data`". Under mock_data the job tried to download imagenet_a
    # (exit 2, network unreachable): it read the split's files, which the mock never
    # writes, instead of the mocked `as_dataset`.
    import tensorflow_datasets as tfds  # noqa: PLC0415

    args = cli_args(dataset="imagenet_a", model=linear_keras, output=tmp_path / "out")
    args += cli_args(steps=2, faithfulness="none", attributions="none")
    with tfds.testing.mock_data(num_examples=3):
        manifest = run(args, save_main_session=False)
    rows = pd.read_parquet(tmp_path / "out" / "results")
    assert manifest["counts"]["inputs"] == manifest["counts"]["rows"] == 3 == len(rows)
    assert manifest["dataset"] == "imagenet_a" and manifest["split"] == "test"
    assert rows.image_id.is_unique and rows.image_id.str.startswith("imagenet_a/").all()
    assert rows.label.between(0, 999).all() and rows.label_name.notna().all()


def test_tfds_bad_split_names_the_valid_ones(tiny_imagenet_a):
    with pytest.raises(
        ValueError, match="--split 'validation' is not valid for 'imagenet_a'; its splits are test"
    ):
        sources.resolve_tfds("imagenet_a", "validation", tiny_imagenet_a, download=False)


def test_a_tfds_slice_beyond_its_splits_size_exits_2_saying_the_size(
    tiny_imagenet_a, linear_keras, tmp_path, capsys
):
    # 'test[:5]' of a 4-example split said "--split 'test[:5]' is not valid for
    # 'imagenet_a'; its splits are test", as if 'test' were not one of them.
    for split, part in (("test[:5]", "test[:5]"), ("test[:2]+test[-9:]", "test[-9:]")):
        line = _refused_split(split, tiny_imagenet_a, linear_keras, tmp_path, capsys)
        assert line == (
            f"error: --split {split!r} slices 'imagenet_a' split 'test' ({part!r}) beyond its "
            "4 examples; keep each bound within -4 and 4 (e.g. 'test[:4]'), or slice by "
            "percent (e.g. 'test[:50%]')."
        )


def _refused_split(split, data_dir, model, tmp_path, capsys) -> str:
    """The one error line of a job on imagenet_a's `split`, which must exit 2 before
    any work (no --output folder made)."""
    args = cli_args(dataset="imagenet_a", split=split, data_dir=data_dir)
    args += cli_args(model=model, output=tmp_path / "out", steps=2)
    assert main(args) == 2, split
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and not (tmp_path / "out").exists(), err
    return err[0]


def test_tfds_split_whose_parts_overlap_exits_2_before_any_work(
    tiny_imagenet_a, linear_keras, tmp_path, capsys
):
    # test[:3]+test[1:4] read examples 1 and 2 twice: 6 inputs, 6 rows, 4 image_ids.
    for split in ("test[:3]+test[1:4]", "test+test", "test[-1:]+test[:75%]+test[75%:]"):
        line = _refused_split(split, tiny_imagenet_a, linear_keras, tmp_path, capsys)
        assert "more than once" in line, line
    overlap = "'test[:3]+test[1:4]' reads examples 1 to 2 of 'imagenet_a' split 'test' more"
    with pytest.raises(ValueError, match=re.escape(overlap)):
        sources.resolve_tfds("imagenet_a", "test[:3]+test[1:4]", tiny_imagenet_a, download=False)
    for split in ("test[:50%]+test[50%:]", "test[-1:]+test[:3]"):
        source = sources.resolve_tfds("imagenet_a", split, tiny_imagenet_a, download=False)
        assert source.num_examples == 4


def test_tfds_split_whose_slice_ends_before_it_starts_exits_2_before_any_work(
    tiny_imagenet_a, linear_keras, tmp_path, capsys
):
    # test[3:1] said 'Auditing -2 images' and then audited examples 3 to the end.
    for split in ("test[3:1]", "test[-1:1]", "test[:2]+test[3:-2]"):
        line = _refused_split(split, tiny_imagenet_a, linear_keras, tmp_path, capsys)
        assert "ends at example" in line, line
    reversed_slice = (
        "--split 'test[3:1]' reads 'imagenet_a' split 'test' from example 3 but ends at "
        "example 1, before it; write the slice's start first (e.g. 'test[1:3]')."
    )
    with pytest.raises(ValueError, match=re.escape(reversed_slice)):
        sources.resolve_tfds("imagenet_a", "test[3:1]", tiny_imagenet_a, download=False)
    assert sources.resolve_tfds("imagenet_a", "test[2:3]", tiny_imagenet_a, False).num_examples == 1


def test_tfds_split_that_does_not_parse_is_refused_before_any_download(tmp_path):
    # Not prepared and download allowed: a typo in the spec must not start a download.
    with mock.patch.object(sources, "_ensure_prepared", side_effect=AssertionError("download")):
        for split in ("test[:2%", "test[::2]", ""):
            with pytest.raises(ValueError, match=r"is not a TFDS split spec; .*'test\[:2%\]'"):
                sources.resolve_tfds("imagenet_a", split, str(tmp_path), download=True)


def test_a_slice_of_the_all_split_exits_2_saying_how_to_slice(
    tiny_imagenet_a, linear_keras, tmp_path, capsys
):
    # TFDS refuses 'all[:3]' with a NotImplementedError: 'the run failed', exit 1.
    args = cli_args(dataset="imagenet_a", split="all[:3]", data_dir=tiny_imagenet_a)
    assert main([*args, *cli_args(model=linear_keras, output=tmp_path / "out")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert err == [
        "error: --split 'all[:3]' is not a TFDS split spec ('all' cannot be sliced: slice "
        "each split, e.g. 'train[:10]+test[:10]'); use a split name with optional slices, "
        "e.g. 'test', 'test[:2%]', 'test[10:20]' or 'test[:10]+train[:10]'."
    ]
    assert sources.resolve_tfds("imagenet_a", "all", tiny_imagenet_a, False).num_examples == 4


def test_tfds_not_prepared_without_download_says_how(tmp_path):
    # The command prepares it where this job looks: `tfds build` alone wrote it to
    # TFDS's own folder, and the job's --data_dir stayed unprepared.
    fix = rf"`tfds build imagenet_a --data_dir {re.escape(str(tmp_path))}` \(needs network\)"
    with pytest.raises(ValueError, match=rf"not prepared in .*{fix}"):
        sources.resolve_tfds("imagenet_a", "test", str(tmp_path), download=False)


def test_the_printed_tfds_build_command_runs_as_printed_in_a_folder_with_a_space(tmp_path):
    # `tfds build imagenet_a --data_dir /a b` split the folder in two: a shell ran
    # `tfds build` with --data_dir '/a' and a dataset named 'b'.
    data_dir = tmp_path / "my data"
    data_dir.mkdir()
    with pytest.raises(ValueError) as refused:
        sources.resolve_tfds("imagenet_a", "test", str(data_dir), download=False)
    printed = re.search(r"`(tfds build [^`]*)`", str(refused.value))[1]
    assert shlex.split(printed) == ["tfds", "build", "imagenet_a", "--data_dir", str(data_dir)]


@pytest.fixture(scope="module")
def noise_both_ways(tmp_path_factory) -> dict[str, str]:
    """`tests.tfds_builders`' tiny_noise (8 test, 4 train images) prepared as TFRecord
    and as ArrayRecord files, two shards a split: {file format: its --data_dir}."""
    from tests import tfds_builders

    formats = ("tfrecord", "array_record")
    return {
        f: tfds_builders.prepared("tiny_noise", tmp_path_factory.mktemp(f), f, num_shards=2)
        for f in formats
    }


def _noise_run(data_dir: str, split: str, model: str, output: Path, *more: str) -> pd.DataFrame:
    """The rows of a run over tiny_noise's `split`, by image_id; its manifest as `.attrs`."""
    args = cli_args(dataset="tiny_noise", split=split, data_dir=data_dir, model=model)
    args += cli_args(output=output, steps=2, faithfulness="none")
    manifest = run([*args, *more], save_main_session=False)
    rows = pd.read_parquet(output / "results").sort_values("image_id", ignore_index=True)
    rows.attrs["manifest"] = manifest
    return rows


@pytest.fixture(scope="module")
def noise_rows(noise_both_ways, linear_keras, tmp_path_factory):
    """`noise_rows(file_format, split)`: `_noise_run`'s rows of the linear model over
    that split of tiny_noise as prepared in `file_format`, made once a module (the
    tests only read them)."""
    made = {}

    def rows(file_format: str, split: str) -> pd.DataFrame:
        if (file_format, split) not in made:
            output = tmp_path_factory.mktemp(f"noise_{file_format}") / "out"
            made[file_format, split] = _noise_run(
                noise_both_ways[file_format], split, linear_keras, output
            )
        return made[file_format, split]

    return rows


@pytest.mark.parametrize(("split", "count"), [("test", 8), ("train[25%:75%]+test[2:7]", 7)])
def test_a_dataset_prepared_as_array_record_files_gives_the_rows_of_its_tfrecord_files(
    noise_rows, split, count
):
    # `tfds build --file_format array_record` leaves files tfds.beam.ReadFromTFDS cannot
    # read: the job refused them at launch. Read, each example is the same input as
    # from TFRecord files: same image_id, file name, label, pixels and so rows.
    want, got = (noise_rows(f, split) for f in ("tfrecord", "array_record"))
    assert len(want) == count and want.image_id.is_unique
    columns = ["image_id", "file_name", "label", "predicted_class", "target_score"]
    pd.testing.assert_frame_equal(got[columns], want[columns])
    for got_map, want_map in zip(got.attributions, want.attributions, strict=True):
        np.testing.assert_allclose(got_map, want_map, rtol=1e-5, atol=1e-7)
    counts = got.attrs["manifest"]["counts"]
    assert counts == want.attrs["manifest"]["counts"] and counts["inputs"] == count
    assert got.attrs["manifest"]["all_inputs_accounted_for"]


def test_array_record_files_are_read_without_the_builders_code(
    noise_both_ways, noise_rows, linear_keras, tmp_path
):
    # As on Dataflow: the launcher and its workers know tiny_noise only from its
    # files (they never import tests.tfds_builders).
    want = noise_rows("tfrecord", "test")
    args = cli_args(dataset="tiny_noise", data_dir=noise_both_ways["array_record"])
    args += cli_args(model=linear_keras, output=tmp_path / "got", steps=2, faithfulness="none")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-P", "-m", "pipeline", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    got = pd.read_parquet(tmp_path / "got" / "results").sort_values("image_id", ignore_index=True)
    columns = ["image_id", "file_name", "label", "predicted_class", "target_score"]
    pd.testing.assert_frame_equal(got[columns], want[columns])


def test_a_resume_of_a_run_over_array_record_files_audits_only_what_is_left(
    noise_both_ways, linear_keras, tmp_path
):
    # A run over TFRecord files resumed over the same dataset prepared as ArrayRecord
    # files: the ids agree, so only the example without a row is read and audited.
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    first = _noise_run(noise_both_ways["tfrecord"], "test[:3]", linear_keras, out)
    (part,) = (out / "results").glob("part-*.parquet")
    table = pq.read_table(part)
    pq.write_table(table.filter(pc.not_equal(table["image_id"], first.image_id[0])), part)
    data_dir = noise_both_ways["array_record"]
    resumed = _noise_run(data_dir, "test[:3]", linear_keras, out, "--resume")
    counts = resumed.attrs["manifest"]["counts"]
    assert counts["inputs"] == 3 and counts["skipped_done_before"] == 2
    assert counts["images_with_rows"] == 1
    assert list(resumed.image_id) == list(first.image_id)


def test_an_array_record_split_is_read_in_ranges_of_one_shard(noise_both_ways):
    # Parallel on Dataflow: each range is an element of its own, read by any worker;
    # none is the whole split. Ids name the example's TFRecord shard and place in it.
    import tensorflow_datasets as tfds

    builder = tfds.builder("tiny_noise", data_dir=noise_both_ways["array_record"])
    ranges = sources._record_ranges(builder, "train[25%:75%]+test[2:7]", records_per_read=2)
    assert [(r.split, r.start, r.stop, r.id_prefix, r.first_index) for r in ranges] == [
        ("train", 1, 2, "tiny_noise-train.tfrecord-00000-of-00002", 1),
        ("train", 2, 3, "tiny_noise-train.tfrecord-00001-of-00002", 0),
        ("test", 2, 4, "tiny_noise-test.tfrecord-00000-of-00002", 2),
        ("test", 4, 6, "tiny_noise-test.tfrecord-00001-of-00002", 0),
        ("test", 6, 7, "tiny_noise-test.tfrecord-00001-of-00002", 2),
    ]


def _files_open_in(folder: str) -> list[str]:
    """The files under `folder` this process holds open (its /proc/self/fd links)."""
    links = (os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd"))
    return sorted(link for link in links if link.startswith(os.path.realpath(folder) + os.sep))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="lists open files by /proc")
def test_an_array_record_reader_closes_its_split_files_at_teardown(noise_both_ways):
    # Each worker's reader kept a split's ArrayRecord files open to its end (its data
    # sources were never closed): a long-lived worker held every shard it ever read.
    import tensorflow_datasets as tfds

    data_dir = noise_both_ways["array_record"]
    source = sources.resolve_tfds("tiny_noise", "test", data_dir, download=False)
    ranges = sources._record_ranges(tfds.builder("tiny_noise", data_dir=data_dir), "test")
    reader = sources._ReadRecordRange(source)
    reader.setup()
    first = [raw.image_id for raw in reader.process(ranges[0])]
    assert first and _files_open_in(data_dir)
    readers = [r for r in reader._splits["test"].data_source._readers if r is not None]
    reader.teardown()
    assert readers and not any(r.is_open() for r in readers)
    assert _files_open_in(data_dir) == [] and reader._splits == {}
    again = [raw.image_id for raw in reader.process(ranges[0])]  # reopened, as before
    reader.teardown()
    assert again == first and _files_open_in(data_dir) == []


def test_a_data_dir_whose_metadata_cannot_be_read_exits_2_naming_it(linear_keras, tmp_path, capsys):
    # A broken prepared folder (as a gs:// --data_dir offline, on a dry run too) is a
    # bad --data_dir, refused at launch: it was "the run failed" with exit 1.
    import tensorflow_datasets as tfds

    import tests.tfds_builders  # noqa: F401  (registers tiny_unlabelled)

    data_dir = tmp_path / "tfds"
    tfds.builder("tiny_unlabelled", data_dir=str(data_dir)).download_and_prepare()
    (data_dir / "tiny_unlabelled" / "1.0.0" / "dataset_info.json").write_text("{broken")
    args = cli_args(dataset="tiny_unlabelled", data_dir=data_dir, model=linear_keras)
    code = main([*args, *cli_args(output=tmp_path / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1, err
    assert re.match(
        rf"error: --dataset 'tiny_unlabelled': cannot read its TFDS metadata in --data_dir "
        rf"'{re.escape(str(data_dir))}' \(ParseError: Failed to load JSON: .*\); prepare it "
        rf"again with `tfds build tiny_unlabelled --data_dir {re.escape(str(data_dir))}`\.",
        err[0],
    )
    assert not (tmp_path / "out").exists()  # refused before any work


def test_a_data_dir_naming_an_unknown_file_format_exits_2_naming_it(linear_keras, tmp_path, capsys):
    # Files of a format this TFDS does not know (a newer TFDS's, or a hand-edited
    # dataset_info.json) are refused at launch: said as TFDS's one reason, without
    # the folder or how to prepare the dataset again.
    from tests import tfds_builders

    data_dir = tfds_builders.prepared("tiny_unlabelled", tmp_path, "array_record")
    info = Path(data_dir) / "tiny_unlabelled" / "1.0.0" / "dataset_info.json"
    info.write_text(info.read_text().replace('"array_record"', '"bagz"'))
    args = cli_args(dataset="tiny_unlabelled", data_dir=data_dir, model=linear_keras)
    code = main([*args, *cli_args(output=tmp_path / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and err == [
        f"error: --dataset 'tiny_unlabelled': cannot read its TFDS metadata in --data_dir "
        f"'{data_dir}' (ValueError: 'bagz' is not a valid FileFormat); prepare it again "
        f"with `tfds build tiny_unlabelled --data_dir {data_dir}`."
    ]
    assert not (tmp_path / "out").exists()  # refused before any work


def test_a_prepared_tfds_dataset_missing_a_file_of_its_split_exits_2_naming_it(
    linear_keras, tmp_path, capsys
):
    # A prepared dataset copied in part (a copy cut short; offline, the way to get one)
    # has its dataset_info.json, so TFDS reads it as prepared: the run started, wrote
    # its output folder, and failed in its workers, "NotFoundError: ...-00000-of-00002;
    # No such file or directory [while running 'ReadImages/...']", exit 1.
    from tests import tfds_builders

    data_dir = tfds_builders.prepared("tiny_noise", tmp_path, num_shards=2)
    version = Path(data_dir) / "tiny_noise" / "1.0.0"
    (version / "tiny_noise-test.tfrecord-00000-of-00002").unlink()
    args = cli_args(dataset="tiny_noise", data_dir=data_dir, model=linear_keras)
    code = main([*args, *cli_args(output=tmp_path / "out", split="test[:2]+train[:1]")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and err == [
        f"error: TFDS dataset 'tiny_noise' in {version} is incomplete: 1 of the 2 files of "
        "its split 'test' is missing (tiny_noise-test.tfrecord-00000-of-00002), as after a "
        f"copy cut short. Copy it again whole, or remove {version} and prepare it again with "
        f"`tfds build tiny_noise --data_dir {data_dir}`."
    ]
    assert not (tmp_path / "out").exists()  # refused before any work


def test_tfds_download_failure_offline_is_clear(tmp_path):
    import tensorflow_datasets as tfds

    with mock.patch.object(
        tfds.download.DownloadManager,
        "download_and_extract",
        side_effect=OSError("network unreachable"),
    ):
        with pytest.raises(
            ValueError,
            # Offline, the probe answers before the download is tried; online, the download.
            match="Could not download and prepare TFDS dataset 'imagenet_a'.*network (is )?unreachable",
        ):
            sources.resolve_tfds("imagenet_a", "test", str(tmp_path), download=True)


def test_read_image_folder_in_the_pipeline_gives_the_launch_listing(image_folder):
    root = image_folder["root"]
    write_image(Path(root) / "holiday" / "a.png", np.zeros((2, 2, 3), np.uint8))
    (Path(root) / ".DS_Store").write_bytes(b"x")
    (Path(root) / ".cache").mkdir()
    (Path(root) / ".cache" / "x.png").write_bytes(b"x")
    expected = [
        (f.image_id, f.label, Path(f.path).read_bytes(), None)
        for f in sources.list_image_folder(root)
    ]
    assert len(expected) == 6  # 5 inputs of the fixture and holiday/a.png; no hidden file
    with TestPipeline() as p:
        raw = p | sources.ReadImageFolder(root + "/")
        got = raw | beam.Map(lambda r: (r.image_id, r.label, r.data, r.error))
        assert_that(got, equal_to(expected))


def test_a_resume_reads_no_file_of_an_image_done_before(image_folder, tmp_path):
    # A --resume read every file of the folder, done or not, then dropped the done
    # ones: a resume of 7,000 done images of 7,500 fetched them all (a GET each on
    # gs://). Their inputs now come unread (no bytes, no error) and are counted as skipped.
    # The done ids come from the file the launcher wrote (`transforms.done_ids`).
    root = image_folder["root"]
    listed = {f.image_id: f for f in sources.list_image_folder(root)}
    done = frozenset(sorted(listed)[:3])
    done_file = write_done_ids(str(tmp_path / "out"), "run1", done)
    with TestPipeline() as p:
        raw = p | sources.ReadImageFolder(root, done_file=done_file)
        got = raw | beam.Map(lambda r: (r.image_id, r.data is None, r.error))
        assert_that(got, equal_to([(i, i in done, None) for i in listed]))
    # Unread: a done file gone since the launch is no read error.
    gone = sources.FolderFile(str(tmp_path / "gone.png"), "gone.png", None)
    read = sources._ReadFile(write_done_ids(str(tmp_path / "out"), "run2", ["gone.png"]))
    read.setup()
    (raw,) = read.process(gone)
    assert (raw.image_id, raw.data, raw.error) == ("gone.png", None, None)


def test_read_image_folder_without_files_fails_the_job(tmp_path):
    (tmp_path / ".DS_Store").write_bytes(b"x")
    with pytest.raises(Exception, match="No files found in image folder"):
        with TestPipeline() as p:
            _ = p | sources.ReadImageFolder(str(tmp_path))


class _UriFileSystem(LocalFileSystem):
    """This machine's files under a URI scheme (localuri:///tmp/x), read through Beam's
    file systems as gs:// folders are: the job's remote branch (MatchFiles on a worker,
    `FileSystems.open`), offline."""

    _PREFIX = "localuri://"

    @classmethod
    def scheme(cls) -> str:
        return "localuri"

    def match(self, patterns, limits=None):
        local = super().match([p.removeprefix(self._PREFIX) for p in patterns], limits)
        return [
            MatchResult(p, [FileMetadata(self._PREFIX + m.path, m.size_in_bytes) for m in r.metadata_list])
            for p, r in zip(patterns, local, strict=True)
        ]  # fmt: skip

    def open(self, path, *args, **kwargs):
        return super().open(path.removeprefix(self._PREFIX), *args, **kwargs)


def test_a_folder_read_through_beams_file_systems_is_matched_and_read(image_folder):
    # As a gs:// folder: matched on a worker, each file read through Beam.
    root = image_folder["root"]
    expected = [
        (f.image_id, f.label, Path(f.path).read_bytes(), None)
        for f in sources.list_image_folder(root)
    ]
    with TestPipeline() as p:
        raw = p | sources.ReadImageFolder(_UriFileSystem._PREFIX + root)
        got = raw | beam.Map(lambda r: (r.image_id, r.label, r.data, r.error))
        assert_that(got, equal_to(expected))


def test_a_folder_read_through_beams_file_systems_without_files_fails_the_job(tmp_path):
    (tmp_path / ".DS_Store").write_bytes(b"x")
    with pytest.raises(Exception, match="No files found in image folder 'localuri:///"):
        with TestPipeline() as p:
            _ = p | sources.ReadImageFolder(_UriFileSystem._PREFIX + str(tmp_path))


def test_check_folder_exists_looks_up_one_object(tmp_path):
    with pytest.raises(FileNotFoundError, match="No files found in image folder"):
        sources.check_folder_exists(str(tmp_path))
    (tmp_path / "n02123045").mkdir()
    (tmp_path / "n02123045" / "a.jpg").write_bytes(b"x")
    sources.check_folder_exists(str(tmp_path))


def test_read_sample_reads_the_bundled_photos():
    expected = [(f.image_id, f.label, Path(f.path).read_bytes()) for f in sources.sample_files()]
    with TestPipeline() as p:
        raw = p | sources.ReadSample()
        assert_that(raw | beam.Map(lambda r: (r.image_id, r.label, r.data)), equal_to(expected))


def test_network_probe_answers_in_seconds():
    import socket
    import time

    start = time.monotonic()
    # TEST-NET-1 (never routed) and a name that cannot resolve (RFC 2606 .invalid).
    problem = sources.network_problem(
        ["https://192.0.2.1/a.tar", "http://no-such-host.invalid/b.tar"], timeout=2.0
    )
    assert time.monotonic() - start < 6.0
    assert "192.0.2.1:443" in problem and "no-such-host.invalid:80" in problem
    with socket.create_server(("127.0.0.1", 0)) as server:  # a host that answers
        port = server.getsockname()[1]
        assert sources.network_problem([f"http://127.0.0.1:{port}/x"], timeout=2.0) is None


def test_the_download_probe_asks_the_proxy_the_download_goes_through(monkeypatch, no_proxy_set):
    # TFDS downloads through `https_proxy`: its host need not resolve here (the probe
    # refused such a download as offline), and the proxy is what must answer (a dead
    # one passed the probe); `no_proxy` exempts a host from it.
    import socket

    closed = closed_port()
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{port}")
        assert sources.network_problem(["https://no-such-host.invalid/a.tar"], timeout=2.0) is None
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{closed}")
        problem = sources.network_problem([f"https://127.0.0.1:{port}/a.tar"], timeout=2.0)
        assert problem.startswith(f"proxy 127.0.0.1:{closed}: "), problem
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        assert sources.network_problem([f"https://127.0.0.1:{port}/a.tar"], timeout=2.0) is None


def test_the_probes_pick_the_proxy_by_the_rules_of_the_clients_that_download(
    monkeypatch, no_proxy_set
):
    # TFDS's downloads and the storage client pick their proxy as `requests` does, the
    # probes did as urllib: `all_proxy` (a proxy for every scheme) was not asked, so a
    # dead one passed, and `no_proxy` entries of an IPv4 block or a `host:port` did not
    # exempt their hosts, so a live download was refused for its proxy.
    import socket

    closed = closed_port()
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        monkeypatch.setenv("all_proxy", f"http://127.0.0.1:{closed}")
        for url in (f"https://127.0.0.1:{port}/a.tar", f"http://localhost:{port}/a.tar"):
            problem = sources.network_problem([url], timeout=2.0)
            assert problem.startswith(f"proxy 127.0.0.1:{closed}: "), problem
        monkeypatch.setenv("no_proxy", f"10.0.0.0/8, 127.0.0.0/8, localhost:{port}")
        assert sources.network_problem([f"https://127.0.0.1:{port}/a.tar"], timeout=2.0) is None
        assert sources.network_problem([f"http://localhost:{port}/a.tar"], timeout=2.0) is None
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{closed}")  # the scheme's own
        monkeypatch.setenv("all_proxy", f"http://127.0.0.1:{port}")
        assert sources.network_problem(["https://no-such-host.invalid/a"], timeout=2.0)
    monkeypatch.delenv("https_proxy")
    monkeypatch.setenv("all_proxy", "http://proxy.invalid:abc")
    problem = sources.network_problem(["https://no-such-host.invalid/a.tar"], timeout=2.0)
    assert problem.startswith("all_proxy 'http://proxy.invalid:abc' names no valid port: "), problem


def test_an_unprepared_dataset_offline_fails_in_seconds_with_the_fix(
    linear_keras, tmp_path, no_proxy_set
):
    import time

    import tensorflow_datasets as tfds

    class OfflineProbeDataset(tfds.core.GeneratorBasedBuilder):
        """A real TFDS builder whose download host is unreachable (TEST-NET-1)."""

        VERSION = tfds.core.Version("1.0.0")
        url_infos = {"https://192.0.2.1/offline_probe/images.tar": None}

        def _info(self):
            features = {
                "image": tfds.features.Image(),
                "label": tfds.features.ClassLabel(num_classes=2),
            }
            return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

        def _split_generators(self, dl_manager):
            path = dl_manager.download(next(iter(self.url_infos)))
            return {"test": self._generate_examples(path)}

        def _generate_examples(self, path):
            yield from ()

    start = time.monotonic()
    unreachable = r"network is unreachable \(192\.0\.2\.1:443: .*--data_dir"
    args = cli_args(
        dataset="offline_probe_dataset",
        data_dir=tmp_path / "tfds",
        model=linear_keras,
        output=tmp_path / "out",
    )
    with pytest.raises(ValueError, match=unreachable):
        run(args, save_main_session=False)
    assert time.monotonic() - start < 20.0
    assert not (tmp_path / "out").exists()  # failed before touching --output


def test_each_dataset_spelling_is_one_kind(tmp_path, monkeypatch):
    (tmp_path / "images").mkdir()
    (tmp_path / "imagenet_a").mkdir()  # a folder named like a TFDS dataset: the folder wins
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    monkeypatch.chdir(tmp_path)
    images = str(tmp_path / "images")
    expected = {
        "sample": sources.SampleSource(),
        "gs://bucket/images": sources.FolderSource("gs://bucket/images"),
        images: sources.FolderSource(images),
        images + "/": sources.FolderSource(images),
        "images": sources.FolderSource(images),  # relative: made absolute
        "imagenet_a": sources.FolderSource(str(tmp_path / "imagenet_a")),
        "notes.txt": sources.FolderSource(str(tmp_path / "notes.txt")),  # refused at launch
        "/no/such/folder": sources.FolderSource("/no/such/folder"),  # refused at launch
        "cifar10": sources.TfdsSource("cifar10", "test[:2%]", "/data/tfds"),
        # A builder config: a TFDS name, though it holds a separator.
        "cifar10_corrupted/brightness_1": sources.TfdsSource(
            "cifar10_corrupted/brightness_1", "test[:2%]", "/data/tfds"
        ),
        "photos/": sources.FolderSource(str(tmp_path / "photos")),  # no TFDS name: a path
    }
    got = {
        spelling: sources.source_for(spelling, "test[:2%]", "/data/tfds") for spelling in expected
    }
    assert got == expected
    assert [s.remote for s in got.values() if isinstance(s, sources.FolderSource)] == [
        True,
        False,
        False,
        False,
        False,
        False,
        False,
        False,
    ]


def test_a_tfds_name_run_from_the_tfds_data_folder_reads_the_dataset(
    linear_keras, tmp_path, monkeypatch
):
    # Run from the folder `tfds build --data_dir` filled, --dataset tiny_shades/light
    # named the prepared dataset's own folder: its tfrecord and JSON files were audited
    # as images (every one an error, exit 1) and --data_dir was said to be ignored.
    data_dir = _prepared("tiny_shades/light", tmp_path)
    monkeypatch.chdir(data_dir)
    assert sources.source_for("tiny_shades", "test", None) == sources.TfdsSource(
        "tiny_shades", "test", data_dir
    )
    assert sources.source_for("./tiny_shades/light", "test") == sources.FolderSource(
        f"{data_dir}/tiny_shades/light"
    )
    args = cli_args(dataset="tiny_shades/light", data_dir=".", model=linear_keras)
    args += cli_args(output=tmp_path / "out", steps=2, attributions="none")
    manifest = run(args, save_main_session=False)
    assert manifest["dataset"] == "tiny_shades/light" and manifest["counts"]["rows"] == 3
    results = pd.read_parquet(tmp_path / "out" / "results", columns=["image_id"])
    assert results.image_id.str.startswith("tiny_shades/light/tiny_shades-test.tfrecord").all()


def _written(tmp_path, linear_keras, *flags) -> tuple[dict, sources.DataSource]:
    """The manifest a launch writes into --output, and the job's source."""
    from pipeline.main import prepare

    output = str(tmp_path / "out")
    job, _ = prepare(["--model", linear_keras, "--output", output, *flags])
    job.lock.release()
    return read_manifest(output), job.source


def test_manifest_entries_are_what_runs_write_and_read_back(
    image_folder, tiny_imagenet_a, linear_keras, tmp_path, monkeypatch
):
    from transforms import results

    monkeypatch.chdir(Path(image_folder["root"]).parent)
    cases = [
        (
            ["--dataset", "sample"],
            {"dataset": "sample", "split": None},
            "sample/n02123045/chelsea.png",
        ),
        (
            ["--dataset", "images"],
            {"dataset": image_folder["root"], "split": None},
            f"{WNID_CAT}/cat1.png",
        ),
        (
            ["--dataset", "imagenet_a", "--split", "test[:50%]", "--data_dir", tiny_imagenet_a],
            {"dataset": "imagenet_a", "split": "test[:50%]", "dataset_version": "0.1.0"},
            None,
        ),
    ]
    for i, (flags, entry, image_id) in enumerate(cases):
        manifest, source = _written(tmp_path / str(i), linear_keras, *flags)
        assert {key: manifest[key] for key in entry} == entry == source.manifest_entry()
        # Read back (as transforms.results does), the manifest names the same kind.
        back = sources.source_of_manifest(manifest)
        assert type(back) is type(source) and back.manifest_entry() == entry
        if image_id is not None:  # the sample and folders re-load their images
            assert results.load_input_image(manifest, image_id).shape == (SIZE, SIZE, 3)
        else:
            with pytest.raises(results.ImageUnavailable, match="TFDS dataset 'imagenet_a'"):
                results.load_input_image(manifest, "imagenet_a/x")


def test_each_kind_reads_with_its_own_transform(image_folder, tiny_imagenet_a):
    assert isinstance(sources.SampleSource().read_transform(), sources.ReadSample)
    folder = sources.source_for(image_folder["root"], "test")
    assert isinstance(folder.read_transform(skip="/elsewhere"), sources.ReadImageFolder)
    tfds = sources.source_for("imagenet_a", "test", tiny_imagenet_a)
    with pytest.raises(ValueError, match="read only once resolved"):
        tfds.read_transform()
    resolved = tfds.resolved(download=False)
    assert resolved == sources.resolve_tfds("imagenet_a", "test", tiny_imagenet_a, False)
    assert (resolved.name, resolved.split, resolved.num_examples) == ("imagenet_a", "test", 4)
    assert isinstance(resolved.read_transform(), sources.ReadTfds)


def test_a_manifest_entry_reads_back_as_its_kind():
    assert (
        sources.source_of_manifest({"dataset": "sample", "split": None}) == sources.SampleSource()
    )
    assert sources.source_of_manifest({"dataset": "imagenet_a", "split": "test"}) == (
        sources.TfdsSource("imagenet_a", "test")
    )
    folder = sources.source_of_manifest({"dataset": "gs://b/images", "split": None})
    assert folder == sources.FolderSource("gs://b/images") and folder.remote
    # No split at all: not a TFDS run.
    assert sources.source_of_manifest({"dataset": "/data/images"}) == (
        sources.FolderSource("/data/images")
    )


def _prepared(name: str, tmp_path) -> str:
    """A tiny builder of tests.tfds_builders, prepared under tmp_path: its data_dir."""
    from tests import tfds_builders  # registers the tiny builders

    return tfds_builders.prepared(name, tmp_path)


_LIST_ERRORS = """
import sys
from transforms import sources
for f in sources.list_image_folder(sys.argv[1]):
    print(repr((f.image_id, f.error)))
"""


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="root needs setpriv")
def test_a_sub_folder_this_user_may_not_list_is_one_error_record(tmp_path):
    """As docs/inputs.md says: the folder's path is its id; the rest of the tree is read. In a
    real process the folder's mode applies to (root without the capabilities that
    bypass it)."""
    write_image(tmp_path / "a.png", np.zeros((2, 2, 3), np.uint8))
    write_image(tmp_path / "locked" / "b.png", np.zeros((2, 2, 3), np.uint8))
    caps = "-dac_override,-dac_read_search"
    prefix = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]
    (tmp_path / "locked").chmod(0o000)
    try:
        done = subprocess.run(
            [*(prefix if os.geteuid() == 0 else []), sys.executable, "-c", _LIST_ERRORS, tmp_path],
            cwd=Path(__file__).parent.parent,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        (tmp_path / "locked").chmod(0o755)
    listed = [eval(line) for line in done.stdout.splitlines()]  # noqa: S307 - our own reprs
    assert listed[0] == ("a.png", None)
    assert listed[1][0] == "locked" and listed[1][1].startswith("cannot list folder: [Errno 13]")
    assert len(listed) == 2


def test_a_tfds_file_name_that_is_not_utf8_is_shown_with_escapes_not_a_failed_job():
    # A dataset's file_name feature holds bytes; one made from a Windows zip may not be
    # UTF-8. It is display text (the id is the tfds_id): escaped as folder names are.
    source = sources.TfdsSource(
        "tiny", "test", image_key="image", label_key="label", file_name_key="file_name"
    )
    example = {
        "tfds_id": b"tiny-test.tfrecord-00000-of-00001__0",  # as ReadFromTFDS gives them
        "file_name": b"caf\xe9.png",
        "image": b"\x89PNG...",
        "label": np.int64(3),
    }
    raw = sources._to_raw(example, source)
    assert raw.file_name == "caf\\xe9.png"
    assert raw.image_id == "tiny/tiny-test.tfrecord-00000-of-00001__0"
    assert (raw.label, raw.data) == (3, b"\x89PNG...")


# Each --dataset of argv[2:] resolved in --data_dir argv[1] in turn, in one process (not
# the tests', where the builders are registered; one each spent its time starting
# TensorFlow): a JSON line of what each said.
_RESOLVE = """
import json, sys
from transforms import sources
for name in sys.argv[2:]:
    try:
        sources.resolve_tfds(name, "test", sys.argv[1], download=False)
        said = None
    except ValueError as e:
        said = str(e)
    print(json.dumps(said))
"""


def test_a_version_or_config_not_prepared_of_a_dataset_in_data_dir_names_those_there(tmp_path):
    # A dataset prepared by its own code (not registered in the job's process, as a
    # user's dataset is) and asked at another version or config was 'neither a folder,
    # 'sample', nor a known TFDS dataset ... Did you mean tiny_shakespeare?'.
    data_dir = _prepared("tiny_shades/dark", tmp_path)
    _prepared("tiny_shades/light", tmp_path)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    names = ("tiny_shades:2.0.0", "tiny_shades/medium", "tiny_shadez")
    done = subprocess.run(
        [sys.executable, "-c", _RESOLVE, data_dir, *names],
        capture_output=True,
        text=True,
        check=True,
        cwd=here,
        env={**os.environ, "PYTHONPATH": here},
    )
    said = dict(zip(names, map(json.loads, done.stdout.splitlines()), strict=True))
    where = f"--data_dir {data_dir!r}"
    for name in ("tiny_shades:2.0.0", "tiny_shades/medium"):
        assert said[name] == (
            f"--dataset {name!r}: {where} holds TFDS dataset 'tiny_shades' prepared as "
            "tiny_shades/dark:1.0.0, tiny_shades/light:1.0.0, not as asked; pass one of "
            "those as --dataset, or prepare this one there with the code of its builder."
        )
    assert said["tiny_shadez"].startswith("--dataset 'tiny_shadez' is neither a folder")


def test_a_data_dir_that_is_the_datasets_own_folder_names_its_parent(tmp_path):
    # TFDS looks in <data_dir>/<name>: the dataset's own folder as --data_dir was 'not
    # prepared' and, with downloads allowed, prepared (downloaded) again inside itself.
    data_dir = _prepared("tiny_shades/dark", tmp_path)
    own = os.path.join(data_dir, "tiny_shades")
    said = (
        f"--data_dir {own!r} is the folder of TFDS dataset 'tiny_shades' itself (it holds "
        f"tiny_shades/dark:1.0.0); pass its parent: --data_dir {data_dir}."
    )
    for download in (False, True):
        with pytest.raises(ValueError, match=re.escape(said)):
            sources.resolve_tfds("tiny_shades/dark", "test", own, download=download)
    assert not os.path.exists(os.path.join(own, "tiny_shades"))
    assert sources.resolve_tfds("tiny_shades/dark", "test", data_dir, False).num_examples == 3


def test_an_unknown_dataset_without_data_dir_says_where_a_prepared_one_is_read_from():
    # A user's own dataset, prepared with `tfds build` into a folder of theirs and
    # named without --data_dir, read 'neither a folder, 'sample', nor a known TFDS
    # dataset' with no word of --data_dir.
    error = Exception("Dataset my_photos not found.")
    said = str(sources._not_found_error("my_photos", None, error))
    assert said.startswith("--dataset 'my_photos' is neither a folder, 'sample', nor a known")
    assert "prepared in a TFDS data folder of your own, pass it as --data_dir" in said
    given = str(sources._not_found_error("my_photos", "/tmp", error))
    assert "of your own" not in given


def test_a_misspelt_dataset_folder_is_refused_naming_the_folders_of_close_names(
    tmp_path, monkeypatch
):
    """--dataset photo, where the folder is photos/: refused as 'neither a folder, ...
    (Dataset photo not found. Did you mean toto?)', TFDS's closest name alone, no word
    of the folder beside it."""
    write_image(tmp_path / "photos" / "red" / "a.png", np.zeros((2, 2, 3), np.uint8))
    write_image(tmp_path / "lab" / "my_images" / "a.png", np.zeros((2, 2, 3), np.uint8))
    (tmp_path / "photos.txt").write_text("a file of a close name: no folder")
    monkeypatch.chdir(tmp_path)
    for name, close in (("photo", "'photos'"), ("lab/my_image", "'lab/my_images'")):
        with pytest.raises(ValueError) as e:
            sources.resolve_tfds(name, "test", None, download=False)
        said = str(e.value)
        assert said.startswith(
            f"--dataset {name!r} is neither a folder, 'sample', nor a known TFDS dataset; "
            f"a folder of a close name is here: {close}."
        ), said


def test_the_folder_of_a_prepared_tfds_dataset_as_dataset_exits_2_saying_how_to_read_it(
    linear_keras, tmp_path, capsys
):
    # Its TFRecord shards and JSON files were read as images: the model loaded, every
    # file was 'not an image Pillow can read', exit 1.
    data_dir = Path(_prepared("tiny_shades/dark", tmp_path))
    read_it = f"--dataset tiny_shades/dark --data_dir {data_dir}"
    for folder in (data_dir / "tiny_shades", data_dir / "tiny_shades/dark/1.0.0", data_dir):
        args = cli_args(dataset=folder, model=linear_keras, output=tmp_path / "out", steps=2)
        assert main(args) == 2, folder
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert err == [
            f"error: --dataset {str(folder)!r} holds a prepared TFDS dataset (its "
            "dataset_info.json and record files), not images; read it as one: "
            f"{read_it}."
        ]
        assert not (tmp_path / "out").exists()
    # A folder holding images beside it is a folder of images, read as before.
    write_image(data_dir / "photo.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    listed = {f.image_id for f in sources.list_image_folder(str(data_dir))}
    args = cli_args(dataset=data_dir, model=linear_keras, output=tmp_path / "out", steps=2)
    assert run([*args, *cli_args(attributions="none")], False)["counts"]["inputs"] == len(listed)


def test_a_misspelt_dataset_of_data_dir_is_named_by_the_dataset_there(tmp_path):
    # A checker's own dataset, prepared in their --data_dir (its builder's code not
    # importable by the job), named with a typo: close names came from TFDS's
    # catalogue only, so nothing pointed at the dataset in --data_dir.
    data_dir = _prepared("tiny_unlabelled", tmp_path)
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "--dataset", "tiny_unlabeled", "--data_dir", data_dir]
        + ["--output", str(tmp_path / "out")],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    err = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(err) == 1, done.stderr
    assert err[0].startswith("error: --dataset 'tiny_unlabeled' is neither a folder")
    assert err[0].endswith(" Did you mean tiny_unlabelled?)"), err[0]


_READ_UNDER_A_LIMIT = """
import resource, sys
from transforms import sources
with open("/proc/self/status") as f:
    size = next(int(line.split()[1]) << 10 for line in f if line.startswith("VmSize:"))
limit = size + (256 << 20)  # as `ulimit -v` leaves a process: room, but not 1 GiB
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
for path in sys.argv[1:]:
    (raw,) = sources._ReadFile().process(sources.FolderFile(path, path, None))
    print(len(raw.data) if raw.data is not None else raw.error)
"""


def test_an_image_is_read_within_an_address_space_limit_and_a_failure_says_why(tmp_path):
    # A 1 KB image read as f.read(MAX_FILE_BYTES + 1), a 1 GiB buffer: under
    # `ulimit -v` (batch schedulers set it) every input was "cannot read file: ".
    image = tmp_path / "small.png"
    write_image(image, np.zeros((16, 16, 3), np.uint8))
    big = tmp_path / "big.png"
    with open(big, "wb") as f:  # sparse: more than the limit leaves, no disk space
        f.truncate(512 << 20)
    child = subprocess.run(
        [sys.executable, "-c", _READ_UNDER_A_LIMIT, str(image), str(big)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.splitlines() == [
        str(image.stat().st_size),
        "cannot read file: MemoryError: out of memory for its 512 MiB",
    ]


def test_a_fifo_named_manifest_json_in_a_sub_folder_is_an_error_record_not_a_hang(tmp_path):
    """Looking for other runs opened every sub-folder's manifest.json: a FIFO of that
    name blocked the launch's listing forever, where docs/inputs.md says a FIFO is never
    opened. Listed in a real process, so a hang fails the test instead of the suite."""
    write_image(tmp_path / "a.png", np.zeros((2, 2, 3), np.uint8))
    write_image(tmp_path / "sub" / "b.png", np.zeros((2, 2, 3), np.uint8))
    os.mkfifo(tmp_path / "sub" / "manifest.json")
    done = subprocess.run(
        [sys.executable, "-c", _LIST_ERRORS, tmp_path],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert [eval(line) for line in done.stdout.splitlines()] == [  # noqa: S307 - our own reprs
        ("a.png", None),
        ("sub/b.png", None),
        ("sub/manifest.json", "a FIFO (named pipe), not a regular file"),
    ]


def test_a_dataset_path_with_dot_dot_after_a_link_is_the_folder_the_system_opens(
    linear_keras, tmp_path, monkeypatch
):
    """`link/../imgs` is the sibling of the link's target, as `ls` reads it; the path
    was made absolute by dropping `link/..` as text: the job refused a folder that
    exists, or read another folder of the same name beside the link."""
    write_image(tmp_path / "deep" / "imgs" / "meant.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    (tmp_path / "deep" / "a").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "deep" / "a")
    monkeypatch.chdir(tmp_path)
    meant = sources.FolderSource(str(tmp_path / "deep" / "imgs"))
    assert sources.source_for("link/../imgs", "test") == meant
    write_image(tmp_path / "imgs" / "other.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    assert sources.source_for(str(tmp_path / "link" / ".." / "imgs"), "test") == meant
    flags = cli_args(dataset="link/../imgs", model=linear_keras, steps=2, faithfulness="none")
    run([*flags, "--output", str(tmp_path / "out")], save_main_session=False)
    assert list(pd.read_parquet(tmp_path / "out" / "results").image_id) == ["meant.png"]
    # Paths without such a `..` keep their spelling (a linked folder is not resolved).
    assert sources.source_for("link", "test") == sources.FolderSource(str(tmp_path / "link"))
    # So does a path that names nothing yet: its error names it as given.
    missing = str(tmp_path / "link" / "none" / "imgs")
    assert sources.source_for(missing, "test") == sources.FolderSource(missing)


def test_a_proxy_url_with_a_bad_port_is_the_download_probes_reason(monkeypatch, no_proxy_set):
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:abc")
    problem = sources.network_problem(["http://no-such-host.invalid/a.tar"], timeout=2.0)
    assert problem.startswith("http_proxy 'http://proxy.invalid:abc' names no valid port: "), (
        problem
    )


# --- Labels from class sub-folders named by --class_names (cat/, dog/: Keras'
# image_dataset_from_directory, torchvision's ImageFolder) on a model of one's own classes.

_PETS = {"cat/a.png": 0, "cat/b.png": 0, "dog/c.png": 1, "bird/d.png": None, "e.png": None}


@pytest.fixture
def pets(tmp_path) -> dict[str, str]:
    """A folder of cat/ and dog/ sub-folders, an unknown bird/ and a top-level image; a
    2-class .keras model and its names file (cat, dog)."""
    rng = np.random.default_rng(5)
    for image_id in _PETS:
        write_image(tmp_path / "pets" / image_id, rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8))
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n")
    weights = rng.normal(0, 0.05, size=(SIZE * SIZE * 3, 2)).astype(np.float32)
    model = dense_keras(tmp_path / "pets.keras", weights, np.zeros(2, np.float32))
    return {"root": str(tmp_path / "pets"), "names": str(names), "model": model}


def _pets_args(pets, output, *extra) -> list[str]:
    flags = cli_args(
        dataset=pets["root"], model=pets["model"], output=output, class_names=pets["names"]
    )
    return [*flags, "--steps", "4", *extra]


def test_class_name_sub_folders_label_their_images_and_unknown_ones_are_warned_of(
    pets, tmp_path, caplog
):
    with caplog.at_level(logging.WARNING, logger="transforms.sources"):
        run(_pets_args(pets, tmp_path / "out"), save_main_session=False)
    rows = pd.read_parquet(tmp_path / "out" / "results").set_index("image_id")
    assert sorted(rows.index) == sorted(_PETS)
    for image_id, label in _PETS.items():
        row = rows.loc[image_id]
        if label is None:
            assert pd.isna(row["label"]) and pd.isna(row["label_name"]), image_id
        else:
            assert (row["label"], row["label_name"]) == (label, ["cat", "dog"][label]), image_id
    (warned,) = [r.getMessage() for r in caplog.records if "no label" in r.getMessage()]
    assert warned.startswith(
        "1 file in a sub-folder named neither by --class_names nor by an ImageNet WordNet id "
        "(bird) gets no label. --class_names names cat, dog: a sub-folder named exactly so"
    ), warned


def test_target_label_attributes_each_class_name_folders_label_and_the_report_scores_it(
    pets, tmp_path
):
    from pipeline.report import main as report_main  # noqa: PLC0415

    manifest = run(_pets_args(pets, tmp_path / "out", "--target", "label"), save_main_session=False)
    rows = pd.read_parquet(tmp_path / "out" / "results")
    labelled = {k: v for k, v in _PETS.items() if v is not None}
    assert dict(zip(rows.image_id, rows.label, strict=True)) == labelled
    assert (rows.target_class == rows.label).all()
    errors = pd.read_parquet(tmp_path / "out" / "errors")
    assert sorted(errors.image_id) == ["bird/d.png", "e.png"]  # no label to attribute
    assert manifest["counts"]["rows"] == 3
    html = tmp_path / "report.html"
    assert report_main(["--input", str(tmp_path / "out"), "--output", str(html)]) == 0
    assert re.search(r"top-1 accuracy \(3 of 3 images labelled\)", html.read_text()) is not None


def test_a_resumed_class_name_folder_run_labels_its_new_images_as_the_first(pets, tmp_path):
    args = _pets_args(pets, tmp_path / "out")
    run(args, save_main_session=False)
    rng = np.random.default_rng(6)
    write_image(
        Path(pets["root"]) / "dog" / "f.png", rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8)
    )
    manifest = run([*args, "--resume"], save_main_session=False)
    assert manifest["counts"]["skipped_done_before"] == len(_PETS)
    rows = pd.read_parquet(tmp_path / "out" / "results").set_index("image_id")
    expected = {**_PETS, "dog/f.png": 1}
    assert sorted(rows.index) == sorted(expected)
    for image_id, label in expected.items():
        got = rows.loc[image_id, "label"]
        assert pd.isna(got) if label is None else got == label, image_id
    assert rows.loc["dog/f.png", "label_name"] == "dog"


def test_without_class_names_the_launch_says_class_folders_need_them(pets, tmp_path, capsys):
    args = cli_args(dataset=pets["root"], model=pets["model"], output=tmp_path / "o")
    assert main([*args, "--target", "label"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert "with --class_names, also from sub-folders named by class" in line, line


def test_a_folder_named_as_a_class_but_for_its_case_is_warned_of_naming_that_class(
    tmp_path, caplog
):
    """Cat/ beside --class_names 'cat': its files got no label, and the warning named
    the rule (case counts) but not which folder missed which class by its case alone."""
    for image_id in ("Cat/a.png", "dog /b.png", "bird/c.png", "dog/d.png"):
        write_image(tmp_path / image_id, np.zeros((2, 2, 3), np.uint8))
    with caplog.at_level("WARNING", logger="transforms.sources"):
        listed = sources.list_image_folder(
            str(tmp_path), labelled=sources.FolderLabels(("cat", "dog"))
        )
    assert [f.label for f in listed] == [None, None, None, 1]
    assert [r.getMessage() for r in caplog.records] == [
        "3 files in sub-folders named neither by --class_names nor by ImageNet WordNet ids "
        "(Cat, bird, dog ) get no label. --class_names names cat, dog: a sub-folder named "
        "exactly so (case counts) labels its files with that class. 'Cat' differs from the "
        "class 'cat', and 'dog ' from 'dog', only in case or spaces: rename them so."
    ]


def test_folder_labels_rule_class_names_first_exactly_then_wordnet_ids():
    rule = sources.FolderLabels(("cat", "dog", WNID_CAT))
    assert rule.of("cat/a.png") == 0 and rule.of("dog/x/b.png") == 1
    assert rule.of("Cat/a.png") is None and rule.of(" cat/a.png") is None  # exact names only
    assert rule.of("cat") is None  # a top-level file named like a class
    assert rule.of(f"{WNID_CAT}/a.png") == 2  # a class name before ImageNet's 281
    assert rule.of("n01440764/a.png") == 0  # other WordNet ids label as before
    assert sources.WORDNET_LABELS.of(f"{WNID_CAT}/a.png") == 281
    assert sources.WORDNET_LABELS.of("cat/a.png") is None
    # What a folder's name labels by, read by the same lookup as its label.
    kinds = [rule.names_folder(n) for n in ("cat", WNID_CAT, "n01440764", "Cat")]
    assert kinds == ["--class_names", "--class_names", "WordNet id", None]
    assert rule.by_name(f"{WNID_CAT}/a.png") and not rule.by_name("n01440764/a.png")
