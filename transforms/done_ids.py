"""A --resume's done image ids, kept in a file beside the run's checkpoints.

The ids of the images an earlier run finished (1.28 M for ImageNet's train split)
were pickled into the job's graph, which Dataflow bounds in size (10 MB for the
graph, 20 MB for the job's request): 14 MB of graph for a million ids. The
launcher writes them once, to `done_ids_file(output, run_id)` in the run's own
checkpoint folder, and the graph holds only that path (a resume with nothing left
to do runs no pipeline: no file). So the file lives and dies
with the run's checkpoints: deleted when the run finishes
(`pipeline.output_folder._drop_checkpoints`), and by the next run on the folder if this one
is killed (`.tmp/` is cleared then); a later run has another run id, another file.
Checkpoints are read as `*.parquet`, so this file is never taken for one.
"""

from __future__ import annotations

import gzip
import json
import threading
import weakref
from collections.abc import Iterable

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms import files
from transforms.errors import error_reason
from transforms.sinks import checkpoint_folder

__all__ = ["DONE_IDS_FILE", "done_ids_file", "load_done_ids", "write_done_ids"]

#: In a run's checkpoint folder: the JSON list of the ids its --resume skips, gzipped.
DONE_IDS_FILE = "done_before.json.gz"

# One set per process and file, shared by the DoFns (and threads) that hold it.
_LOADED: weakref.WeakValueDictionary[str, frozenset[str]] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()
_CHUNK = 1 << 22  # bytes a read asks for


def done_ids_file(output: str, run_id: str) -> str:
    """`<output>/.tmp/checkpoints/<run_id>/DONE_IDS_FILE`."""
    return FileSystems.join(checkpoint_folder(output, run_id), DONE_IDS_FILE)


def write_done_ids(output: str, run_id: str, ids: Iterable[str]) -> str | None:
    """Writes `ids` (local or gs://) for the run `run_id`; returns the file's path,
    or None for no ids: no file (a run that skips nothing)."""
    ids = sorted(ids)
    if not ids:
        return None
    path = done_ids_file(output, run_id)
    data = gzip.compress(json.dumps(ids, ensure_ascii=False).encode("utf-8"), compresslevel=6)
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)
    return path


def load_done_ids(path: str | None) -> frozenset[str]:
    """The ids `write_done_ids` wrote to `path` (none for None), read once per process
    while a DoFn holds them: for a DoFn's `setup`.

    Raises:
      RuntimeError: the file cannot be read. The run cannot tell which images it
        may skip, and redoing them would give them two rows: it stops, saying so.
    """
    if path is None:
        return frozenset()
    with _LOCK:
        ids = _LOADED.get(path)
        if ids is None:
            ids = _read(path)
            _LOADED[path] = ids
    return ids


def _read(path: str) -> frozenset[str]:
    """The file's ids, decompressed here: Beam's gzip reader's `read()` stopped at
    16 MiB of text (half a million ids), so a million read as a cut JSON list."""
    try:
        with files.open_with_beam(path, CompressionTypes.UNCOMPRESSED) as f:
            data = b"".join(iter(lambda: f.read(_CHUNK), b""))
        return frozenset(json.loads(gzip.decompress(data).decode("utf-8")))
    except Exception as e:
        fix = (  # the workers' credentials may not be the launcher's, which wrote it
            f"; {files.read_access_fix(path, e)}, then run the same command with --resume again"
            if isinstance(e, PermissionError)
            else ". Run the same command with --resume again: it writes the file anew"
        )
        raise RuntimeError(
            f"--resume: cannot read {path}, the ids of the images this run skips "
            f"({error_reason(e)}); without them it would give those images a second row{fix}."
        ) from e
