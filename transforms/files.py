"""A run's files, local or remote, for readers: read-back, plots and the report.

Local paths go through `os` and `open`; remote URIs (`gs://...`: anything with
`://`) through Beam's `FileSystems`, imported on the first remote call. Reading a
local run back (a notebook importing `transforms.results`) so never loads Beam,
which takes seconds; remote reads behave as they do inside the pipeline.
"""

from __future__ import annotations

import os
from typing import IO, Any

__all__ = ["create", "exists", "is_remote", "join", "list_folder", "open_read"]


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` is a URI (gs://...) read through Beam's file systems."""
    return "://" in os.fspath(path)


def _beam() -> Any:
    """Beam's `FileSystems`: imported here only, and only for remote paths."""
    from apache_beam.io.filesystems import FileSystems  # noqa: PLC0415 - slow; remote only

    return FileSystems


def join(base: str | os.PathLike, *parts: str) -> str:
    """`base` (a string or a `pathlib.Path`) and `parts` joined as the file system of
    `base` joins them."""
    base = os.fspath(base)
    if is_remote(base):
        return _beam().join(base, *parts)
    return os.path.join(base, *parts)


def exists(path: str) -> bool:
    """Whether the file or folder `path` exists."""
    if is_remote(path):
        return _beam().exists(path)
    return os.path.exists(path)


def open_read(path: str) -> IO[bytes]:
    """The file `path` opened for reading its bytes as stored (never decompressed).

    Raises:
      OSError (local) or Beam's errors (remote): no such file, no permission.
    """
    if is_remote(path):
        return _beam().open(path, compression_type="uncompressed")
    return open(path, "rb")


def create(path: str, mime_type: str = "application/octet-stream") -> IO[bytes]:
    """The file `path` opened for writing bytes, its local parent folders made.

    `mime_type` is the remote object's content type (ignored locally).
    """
    if is_remote(path):
        return _beam().create(path, mime_type=mime_type)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    return open(path, "wb")


def list_folder(folder: str, suffix: str) -> list[str]:
    """The paths of the files directly in `folder` whose names end in `suffix`, sorted.

    A local folder that does not exist (or is a file) holds none: [], as Beam
    lists it. Names are matched literally, so a folder named `runs [2024]` works.

    Raises:
      OSError (local, e.g. no permission) or Beam's BeamIOError (remote): the
        folder cannot be listed.
    """
    if is_remote(folder):
        filesystems = _beam()
        pattern = filesystems.join(folder, "*" + suffix)
        return sorted(m.path for m in filesystems.match([pattern])[0].metadata_list)
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(
        os.path.join(folder, e.name) for e in entries if e.name.endswith(suffix) and e.is_file()
    )
