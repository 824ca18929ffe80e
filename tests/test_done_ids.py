"""A --resume's done ids as the file its DoFns load (`transforms.done_ids`)."""

import os

import pytest

from transforms import done_ids
from transforms.done_ids import DONE_IDS_FILE, done_ids_file, load_done_ids, write_done_ids


def test_the_ids_come_back_whatever_their_characters(tmp_path):
    # Any file name is an id: a newline, a tab, the escaped form of a name that is
    # not UTF-8 (`image_id_of`), accents and quotes.
    ids = {"n01440764/a.JPEG", "line\nbreak.png", "tab\t.png", "caf\\xe9.png", "é\"'.png"}
    path = write_done_ids(str(tmp_path / "out"), "run1", ids)
    assert path == str(tmp_path / "out" / ".tmp" / "checkpoints" / "run1" / DONE_IDS_FILE)
    assert path == done_ids_file(str(tmp_path / "out"), "run1")
    assert load_done_ids(path) == ids


def test_no_ids_no_file(tmp_path):
    assert write_done_ids(str(tmp_path / "out"), "run1", []) is None
    assert not (tmp_path / "out").exists()
    assert load_done_ids(None) == frozenset()


def test_a_process_holds_one_set_per_file_while_it_is_used(tmp_path):
    # The two DoFns that read it (the folder's read, the split), in each of a
    # worker's threads: one set, not a copy each.
    path = write_done_ids(str(tmp_path / "out"), "run1", [f"{i}.png" for i in range(1000)])
    first = load_done_ids(path)
    assert load_done_ids(path) is first


def test_a_missing_file_stops_the_run_naming_it(tmp_path):
    # Skipping none would give every done image a second row.
    path = done_ids_file(str(tmp_path / "out"), "gone")
    with pytest.raises(RuntimeError, match="--resume: cannot read .*done_before.json.gz") as e:
        load_done_ids(path)
    assert path in str(e.value) and "Run the same command with --resume again" in str(e.value)


def test_a_gs_file_the_credentials_may_not_read_stops_the_run_saying_the_fix(gcs_stub):
    # Its reason was Google's "403 GET http://...: ...", and the fix to run again, which
    # writes the file anew and is refused it again.
    gcs_stub.objects["run/.tmp/ids.json.gz"] = b"gzip"
    gcs_stub.forbidden.add("run/.tmp/ids.json.gz")
    with pytest.raises(RuntimeError) as caught:
        done_ids._read("gs://bucket/run/.tmp/ids.json.gz")
    said = str(caught.value)
    assert said.startswith(
        "--resume: cannot read gs://bucket/run/.tmp/ids.json.gz, the ids of the images this "
        "run skips ([Errno 13] Permission denied (stub@stub.iam.gserviceaccount.com does "
    ), said
    assert said.endswith(
        "a second row; the Google Cloud credentials in use need read access to it (roles/"
        "storage.objectViewer on its bucket; `gcloud auth application-default login` or "
        "GOOGLE_APPLICATION_CREDENTIALS for others), then run the same command with --resume "
        "again."
    ), said
    assert "http://" not in said


def test_a_million_ids_come_back_whole(tmp_path):
    # Beam's gzip reader's read() gave the first 16 MiB of text: 540,000 ids, then
    # a cut JSON list. ImageNet's train split has 1.28 million.
    ids = [f"n{k % 1000:08d}/n{k % 1000:08d}_{k}.JPEG" for k in range(1_000_000)]
    path = write_done_ids(str(tmp_path / "out"), "run1", ids)
    assert load_done_ids(path) == set(ids)


def test_a_file_larger_than_one_read_comes_back_whole(tmp_path, monkeypatch):
    # The file is read in reads of `_CHUNK` bytes (4 MiB), to its end: a file of
    # many reads (a 1 KiB read here) comes back whole, not cut at its first read.
    ids = {f"n{k:08d}/{k}.JPEG" for k in range(2000)}
    path = write_done_ids(str(tmp_path / "out"), "run1", ids)
    monkeypatch.setattr(done_ids, "_CHUNK", 1024)
    assert os.path.getsize(path) > 4 * 1024  # four reads at least
    assert load_done_ids(path) == ids
