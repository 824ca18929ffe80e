"""Where images come from: image folders (local or gs://), TFDS datasets, the bundled sample.

Every element leaving a source is a `RawImage` with a stable, unique
`image_id`; decoding happens later (`transforms.preprocess`), so a broken file
becomes an error record there instead of failing the read.

What `--dataset` names is decided once, by `source_for`: a `SampleSource`, a
`FolderSource` or a `TfdsSource`, each knowing its read transform and its
manifest entry; `source_of_manifest` reads the kind back from a finished run.
Those values are defined without Beam in `transforms.datasource` (read-back
needs them) and re-exported here; the transforms that read them are here.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import os
import posixpath
import re
import stat
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

from transforms import files, manifest, quiet, wording
from transforms.datasource import (
    REMOTE_FOLDER_SCHEMES,
    SAMPLE,
    SAMPLE_IMAGES,
    WORDNET_LABELS,
    DataSource,
    FolderFile,
    FolderLabels,
    FolderSource,
    SampleSource,
    TfdsSource,
    holds_prepared_tfds,
    image_id_of,
    sample_files,
    source_for,
    source_of_manifest,
    unlisted_folder,
)
from transforms.done_ids import load_done_ids

__all__ = [
    "REMOTE_FOLDER_SCHEMES",
    "SAMPLE",
    "SAMPLE_IMAGES",
    "DataSource",
    "FolderFile",
    "FolderLabels",
    "FolderSource",
    "RawImage",
    "ReadImageFolder",
    "ReadSample",
    "ReadTfds",
    "SampleSource",
    "TfdsSource",
    "check_folder_exists",
    "check_tfds",
    "escape_glob",
    "forget_other_runs",
    "list_image_folder",
    "network_problem",
    "resolve_tfds",
    "sample_files",
    "source_for",
    "source_of_manifest",
]

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RawImage:
    """One input before decoding.

    Attributes:
      image_id: stable unique id (folder: the path relative to the root;
        TFDS: `<name>/<tfds_id>`; sample: `sample/<wnid>/<file>`).
      file_name: the file's base name, or the dataset's file name feature.
      label: class index in the dataset's label space, or None when unlabelled.
      data: the encoded image bytes (JPEG, PNG, ...), or None when `pixels` is set.
      pixels: decoded uint8 [H, W, C] pixels, for sources that hold no file.
      error: why reading failed, if it did (the element then goes to errors).
    """

    image_id: str
    file_name: str
    label: int | None
    data: bytes | None = None
    pixels: np.ndarray | None = None
    error: str | None = None


def escape_glob(path: str) -> str:
    """`path` with Beam's glob characters (`*`, `?`, `[`) matching only themselves.

    A folder named `photos [2023]` read as a character class and matched nothing.
    """
    return re.sub(r"([*?\[])", r"[\1]", path)


def _folder_prefix(root: str) -> str:
    """`root` with one trailing slash: the prefix stripped from paths to make ids."""
    return root.rstrip("/") + "/"


def _folder_pattern(root: str) -> str:
    return FileSystems.join(escape_glob(root.rstrip("/") or "/"), "**")


def _no_files_error(root: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"No files found in image folder {root!r} (hidden entries, whose names start with "
        "'.', and sub-folders holding a run of this job are not inputs). Pass a folder of images "
        "(optionally in WordNet-id sub-folders), a TFDS name, or 'sample'."
    )


def _is_input(relative: str) -> bool:
    """Hidden files and folders (`.DS_Store`, `.git/`) are not inputs (the job's
    own temp files are in its --output's hidden `.tmp/`)."""
    if not relative:
        return False
    return not any(part.startswith(".") for part in relative.split("/"))


def _folder_file(
    prefix: str,
    meta: FileMetadata,
    skip: str | None = None,
    labelled: FolderLabels = WORDNET_LABELS,
) -> FolderFile | None:
    """The input a matched (remote) file becomes, or None for what is not an input.

    Skipped: hidden files and folders, folder placeholder objects
    (`gs://.../n01/`), the `skip` prefix (the job's own --output when it lies
    inside the dataset), and sub-folders holding another run (`_other_run`).
    """
    path = meta.path
    if path.endswith("/") or meta.size_in_bytes is None:
        return None
    if skip is not None and path.startswith(_folder_prefix(skip)):
        return None
    relative = path[len(prefix) :] if path.startswith(prefix) else posixpath.basename(path)
    relative = relative.replace(os.sep, "/")
    if not _is_input(relative) or _under_other_run(prefix, relative):
        return None
    image_id = image_id_of(relative)
    return FolderFile(path=path, image_id=image_id, label=labelled.of(image_id))


def _local_entry(
    path: str, image_id: str, ancestors: tuple[str, ...], label: int | None = None
) -> FolderFile | str | None:
    """What one local folder entry is: a file to read (maybe an error), or a folder (its
    real path) to list; None for the job's own output folder."""
    try:
        info = os.stat(path)  # follows symbolic links
    except FileNotFoundError:
        if not os.path.islink(path):  # listed, then deleted (another process)
            return FolderFile(
                path, image_id, label, error="deleted while the job listed its folder"
            )
        error = f"dangling symbolic link to {os.readlink(path)!r}"
        return FolderFile(path, image_id, label, error=error)
    except OSError as e:  # ELOOP: links pointing at each other; EACCES
        return FolderFile(path, image_id, label, error=f"cannot stat: {e}")
    if stat.S_ISDIR(info.st_mode):
        real = os.path.realpath(path)
        if real in ancestors:
            loop = f"symbolic link loop: leads back to {real!r}"
            return FolderFile(path, image_id, label, error=loop)
        return real
    if not stat.S_ISREG(info.st_mode):
        kind = f"{files.entry_kind(info.st_mode)}, not a regular file"
        return FolderFile(path, image_id, label, error=kind)
    return FolderFile(path, image_id, label)


def _list_local(
    root: str,
    skip: str | None = None,
    outside: list[tuple[str, str]] | None = None,
    labelled: FolderLabels = WORDNET_LABELS,
) -> Iterator[FolderFile]:
    """Every non-hidden entry below a local `root`, symbolic links followed, as inputs.

    A linked file is read as the file it points to; a linked folder is listed
    like a folder. What cannot be read is an input with an `error`: a dangling
    link, a link looping back to a folder above it, a FIFO, socket or device
    (opening a FIFO would block the job forever). `skip` (the job's --output)
    is never listed, nor is what a link leads to inside it, so a run never reads
    its own files; nor are sub-folders holding another run of this job
    (`_other_run`). `outside`, when given, receives each followed folder link
    leading outside `root` (`_note_outside`). `labelled`: the labels' rule.
    """
    skip_real = os.path.realpath(skip) if skip is not None else None
    stack = [(root, "", (os.path.realpath(root),))]
    while stack:
        folder, relative, ancestors = stack.pop()
        try:
            names = sorted((entry.name, entry.is_symlink()) for entry in os.scandir(folder))
        except OSError as e:
            folder_id = image_id_of(relative.rstrip("/") or ".")
            yield FolderFile(folder, folder_id, None, error=unlisted_folder(e))
            continue
        for name, link in names:
            path = os.path.join(folder, name)
            if not _is_input(relative + name) or (link and _leads_into(path, skip_real)):
                continue
            image_id = image_id_of(relative + name)
            entry = _local_entry(path, image_id, ancestors, labelled.of(image_id))
            if isinstance(entry, str):
                if entry != skip_real and not _other_run(path):
                    if outside is not None:
                        _note_outside(path, entry, ancestors[0], outside)
                    stack.append((path, relative + name + "/", (*ancestors, entry)))
            elif entry is not None:
                yield entry


def _leads_into(link: str, folder: str | None) -> bool:
    """Whether symbolic link `link` leads to `folder` (a real path; None: no folder) or
    into it, dangling or not (`.tmp/` before the run writes it). Only a link can: an
    entry of a folder the listing reached otherwise lies in it only if that folder does."""
    return folder is not None and _within(os.path.realpath(link), folder)


def _note_outside(link: str, target: str, root: str, outside: list[tuple[str, str]]) -> None:
    """Adds (`link`, `target`) to `outside` when `link` is a symbolic link to a folder
    (`target`, its real path) outside the dataset's real folder `root` and outside every
    target noted before: a link within /usr to /usr/lib, below a link to /usr, is no news."""
    if not os.path.islink(link):
        return
    if any(_within(target, folder) for folder in (root, *(t for _, t in outside))):
        return
    outside.append((link, target))


def _within(path: str, folder: str) -> bool:
    """Whether real path `path` is `folder` or lies below it."""
    return os.path.commonpath([path, folder]) == folder


_SAID_OUTSIDE = 5  # links leading outside --dataset named at launch; the rest counted


def _say_outside(outside: list[tuple[str, str]]) -> None:
    """One line per folder link leading outside --dataset (five at most): its files,
    however many, are inputs, and were walked without a word."""
    for link, target in outside[:_SAID_OUTSIDE]:
        _LOG.info("Following %s -> %s, outside --dataset: its files are inputs too.", link, target)
    if len(outside) > _SAID_OUTSIDE:
        _LOG.info(
            "And %d more links to folders outside --dataset: their files are inputs too.",
            len(outside) - _SAID_OUTSIDE,
        )


@functools.lru_cache(maxsize=4096)
def _other_run(folder: str) -> bool:
    """Whether a folder below the dataset holds a run of this job (`manifest.is_run`),
    another --output put inside it: its files are not inputs. Read once per folder
    and run (`forget_other_runs`), and warned of once."""
    if not manifest.is_run(folder):
        return False
    _LOG.warning("Not listing %s: it holds a run of this job (its manifest.json).", folder)
    return True


def forget_other_runs() -> None:
    """Forgets which folders held another run (`_other_run`), as a run starts: a later
    run in the same process (a notebook's) reused an earlier run's answers, so it read
    the files of a run put in a folder since as images, and no longer warned of one."""
    _other_run.cache_clear()


def _under_other_run(prefix: str, relative: str) -> bool:
    """Whether a listed file lies in a sub-folder of `prefix` holding another run."""
    parts = relative.split("/")[:-1]
    return any(_other_run(prefix + "/".join(parts[: i + 1])) for i in range(len(parts)))


def _list_files(root: str, skip: str | None, labelled: FolderLabels) -> list[FolderFile]:
    """The inputs of a folder, local or remote (listed with Beam's file systems)."""
    if not files.is_remote(root):
        outside: list[tuple[str, str]] = []
        listed = list(_list_local(root, skip, outside, labelled))
        _say_outside(outside)
        return listed
    metadata = _match_folder(root)
    prefix = _folder_prefix(root)
    found = (_folder_file(prefix, meta, skip, labelled) for meta in metadata)
    return [f for f in found if f is not None]


def list_image_folder(
    root: str, skip: str | None = None, labelled: FolderLabels = WORDNET_LABELS
) -> list[FolderFile]:
    """Lists every non-hidden file below `root` (local path or gs://), sorted.

    Files directly in `root` are unlabelled; files in a top-level sub-folder named
    by one of `labelled`'s class names (--class_names: `cat/x.jpg`) get that name's
    index, those in one named by an ImageNet WordNet id (e.g. `n02123045/cat.jpg`)
    that class's label (0-999); other sub-folders give unlabelled images
    (`FolderLabels`, the rule). Files that are not
    images are listed too, so they are reported as errors instead of vanishing,
    and so are local entries that cannot be read (see `_list_local`). `skip`
    is a folder never listed (the job's own --output). `ReadImageFolder` gives
    the same files inside a pipeline.

    Raises:
      FileNotFoundError: the folder does not exist or holds no file.
      PermissionError: gs://, the credentials may not list it (`files.match`).
    """
    files = _list_files(root, skip, labelled)
    if not files:
        raise _no_files_error(root)
    files.sort(key=lambda f: f.image_id)
    _warn_of_class_root(root, files, labelled)
    _warn_of_unlabelled(root, files, labelled)
    return files


def _warn_of_unlabelled(root: str, listed: list[FolderFile], labelled: FolderLabels) -> None:
    """Warns of files in sub-folders that label nothing (named by no WordNet id, nor by
    --class_names when given: the rule that applies is named; without it, that
    --class_names labels them), and where labelling folders lie below those
    (imagenette2-160/train/n01440764/), of the folder to pass.
    An entry that is an error record (a link loop, a dangling link) is no file to label."""
    unlabelled = [f for f in listed if f.label is None and f.error is None and "/" in f.image_id]
    if not unlabelled:
        return
    folders = sorted({f.image_id.split("/")[0] for f in unlabelled})
    more = f" and {len(folders) - 5} more" if len(folders) > 5 else ""
    one, names = len(folders) == 1, labelled.class_names
    if names:
        where = (
            f"{'a sub-folder' if one else 'sub-folders'} named neither by --class_names nor by "
            f"{'an ImageNet WordNet id' if one else 'ImageNet WordNet ids'}"
        )
        rule = (
            f" --class_names names {', '.join(names[:5])}{', ...' if names[5:] else ''}: a "
            "sub-folder named exactly so (case counts) labels its files with that class."
        ) + _near_misses(folders, names)
    else:
        where = (
            "a sub-folder that is not an ImageNet WordNet id"
            if one
            else "sub-folders that are not ImageNet WordNet ids"
        )
        rule = ""
    deeper = _deeper_labelled(root, unlabelled, labelled)
    if not names and not deeper:  # cat/, dog/: the flag that labels them
        rule = (
            " With --class_names (a file of the model's class names, one per line), a "
            "sub-folder named exactly as one of them labels its files with that class."
        )
    _LOG.warning(
        "%s in %s (%s%s) %s no label.%s%s",
        wording.count(len(unlabelled), "file"),
        where,
        ", ".join(folders[:5]),
        more,
        "gets" if len(unlabelled) == 1 else "get",
        rule,
        deeper,
    )


def _near_misses(folders: list[str], names: Sequence[str]) -> str:
    """' 'Cat' differs from the class 'cat' only in case or spaces: rename it so.' for
    the unlabelling `folders` (up to 3) that a class name matches but for its case or
    spaces at either end; else empty."""
    folded = {name.casefold(): name for name in names}
    pairs = [(f, folded[f.strip().casefold()]) for f in folders if f.strip().casefold() in folded]
    if not pairs:
        return ""
    said = [f"{folder!r} from {name!r}" for folder, name in pairs[:3]]
    said[0] = said[0].replace(" from ", " differs from the class ", 1)
    listed = said[0] if len(said) == 1 else f"{', '.join(said[:-1])}, and {said[-1]},"
    return f" {listed} only in case or spaces: rename {'it' if len(said) == 1 else 'them'} so."


def _deeper_labelled(root: str, unlabelled: list[FolderFile], labelled: FolderLabels) -> str:
    """Where the first labelling folder (a WordNet id, a --class_names name) below a
    top-level sub-folder is, and the folder to pass to label its files (its parent);
    else empty."""
    for item in unlabelled:
        parts = item.image_id.split("/")[:-1]
        found = (i for i in range(1, len(parts)) if labelled.names_folder(parts[i]) is not None)
        deeper = next(found, None)
        if deeper is None:
            continue
        parent = "/".join(parts[:deeper])
        kind = labelled.names_folder(parts[deeper])
        folders = "WordNet-id folders" if kind == "WordNet id" else "Folders named by --class_names"
        return (
            f" {folders} lie deeper ({parts[deeper]} in {parent}): only a top-level "
            "one labels its files; to label those, pass the folder holding them, e.g. "
            f"--dataset {wording.shell_word(root.rstrip('/') + '/' + parent)}."
        )
    return ""


def _warn_of_class_root(root: str, listed: list[FolderFile], labelled: FolderLabels) -> None:
    """Warns when `root` is itself a labelling folder (`imagenet_a/n02123045`, one class
    audited; `photos/cat` with --class_names): labels come from its sub-folders'
    names, so its files get none."""
    folder = root.rstrip("/") or root
    parent, name = os.path.split(folder)
    unlabelled = sum(f.label is None and f.error is None for f in listed)
    kind = labelled.names_folder(name)
    if kind is None or not unlabelled:
        return
    _LOG.warning(
        "%s is itself named by %s, but labels come from its sub-folders' "
        "names: its %s no label (to label them as %s, pass a folder holding it: its "
        "parent, %s, or a new folder holding a symbolic link to it).",
        folder,
        "an ImageNet WordNet id" if kind == "WordNet id" else "a class of --class_names",
        wording.count(unlabelled, "file") + (" gets" if unlabelled == 1 else " get"),
        name,
        parent,
    )


def check_folder_exists(root: str) -> None:
    """Checks that `root` (e.g. gs://...) holds at least one object, listing no more.

    For folders too large or too remote to list at launch; `ReadImageFolder`
    lists them on the workers.

    Raises:
      FileNotFoundError: the folder cannot be listed or is empty.
      PermissionError: the credentials may not list it (`files.match`).
      RemoteUnreachable: its storage does not answer (offline), said in seconds.
    """
    files.check_reachable(root, "read", "a gs:// image folder")
    if not _match_folder(root, limit=1):
        raise _no_files_error(root)


def _match_folder(root: str, limit: int | None = None) -> list[FileMetadata]:
    """The files below the remote folder `root` (at most `limit`), as Beam lists them.

    Raises:
      PermissionError: the credentials may not list it (`files.match`).
      FileNotFoundError: it cannot be listed otherwise (Beam's BeamIOError, no bucket).
    """
    try:
        return files.match([_folder_pattern(root)], [limit] if limit else None)[0].metadata_list
    except PermissionError:
        raise
    except Exception as e:  # BeamIOError with per-pattern causes
        raise FileNotFoundError(f"Cannot list image folder {root!r}: {e}") from e


def _read_error(error: Exception) -> str:
    """What a failed read says: an OSError's message, else its type too (a
    MemoryError's message alone was empty)."""
    if isinstance(error, OSError):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class _ReadFile(beam.DoFn):
    """A listed file -> its `RawImage`; an image whose id is in the file `done_file`
    (a --resume's images with rows, `transforms.done_ids`, loaded in `setup`)
    unread: no bytes, no error, skipped by the job."""

    def __init__(self, done_file: str | None = None):
        self._done_file = done_file
        self._done = frozenset()  # the file's ids, from `setup`

    def setup(self) -> None:
        self._done = load_done_ids(self._done_file)

    def _path(self, item: FolderFile) -> str:
        return item.path

    def process(self, item: FolderFile) -> Iterator[RawImage]:
        name = posixpath.basename(item.image_id)
        if item.image_id in self._done:
            yield RawImage(item.image_id, name, item.label)
            return
        if item.error is not None:
            yield RawImage(item.image_id, name, item.label, error=item.error)
            return
        path = self._path(item)
        try:
            if files.is_remote(path):  # no storage probe per worker: Beam's own retries
                with files.open_with_beam(path, "uncompressed") as f:
                    data = files.read_bounded(f)
            else:
                data = files.read_input_file(path)
        except Exception as e:  # any I/O failure becomes an error record
            error = f"cannot read file: {_read_error(e)}"
            yield RawImage(item.image_id, name, item.label, error=error)
            return
        yield RawImage(item.image_id, name, item.label, data=data)


def _to_folder_files(
    meta: FileMetadata, prefix: str, skip: str | None, labelled: FolderLabels
) -> Iterator[FolderFile]:
    item = _folder_file(prefix, meta, skip, labelled)
    if item is not None:
        yield item


def _require_files(_: object, root: str, count: int) -> None:
    if count == 0:
        raise _no_files_error(root)


class _MatchFolder(beam.PTransform):
    """The files below a remote folder, listed by a worker (`_match_folder`), as
    `fileio.MatchFiles` lists them; a listing Cloud Storage refuses (the workers'
    credentials may not list it) fails the job naming the folder, Google's reason
    and no request URL (`files.match`), not in Beam's nested reprs."""

    def __init__(self, root: str):
        super().__init__()
        self._root = root

    def expand(self, pbegin):
        return pbegin | beam.Create([self._root]) | beam.FlatMap(_match_folder)


class ReadImageFolder(beam.PTransform):
    """Lists and reads an image folder (local or gs://) inside the pipeline.

    A gs:// folder is matched by a worker (`_MatchFolder`), a local one
    listed by `_list_local` (symbolic links, FIFOs); the files are spread over
    workers (`Reshuffle`) and read in parallel, so the launcher never lists or
    reads a large remote dataset. Ids, labels and skipped files are those of
    `list_image_folder`; a folder without files fails the job with the same
    error. Unreadable files become error records. `skip`: a folder never read
    (the job's own --output, when it lies inside the dataset). `done_file`: the
    file of the image ids whose files are not read (a --resume's images with rows,
    `transforms.done_ids`; `_ReadFile`).
    """

    def __init__(
        self,
        root: str,
        skip: str | None = None,
        done_file: str | None = None,
        labelled: FolderLabels = WORDNET_LABELS,
    ):
        super().__init__()
        self._root = root
        self._skip = skip
        self._done_file = done_file
        self._labelled = labelled

    def expand(self, pbegin):
        if files.is_remote(self._root):
            root = pbegin | "Impulse" >> beam.Impulse()
            found = (
                pbegin
                | "MatchFiles" >> _MatchFolder(self._root)
                | "ToFolderFiles"
                >> beam.FlatMap(
                    _to_folder_files,
                    prefix=_folder_prefix(self._root),
                    skip=self._skip,
                    labelled=self._labelled,
                )
            )
        else:
            root = pbegin | "LocalFolder" >> beam.Create([self._root])
            found = root | "ToFolderFiles" >> beam.FlatMap(
                _list_local, skip=self._skip, labelled=self._labelled
            )
        # The count as a side input, 0 where there is none: a combine without the
        # default value's steps (each step costs every run; benchmarks/run_overhead.py).
        count = found | "CountFiles" >> beam.combiners.Count.Globally().without_defaults()
        _ = root | "RequireFiles" >> beam.Map(
            _require_files, root=self._root, count=beam.pvalue.AsSingleton(count, default_value=0)
        )
        spread = found | "SpreadFiles" >> beam.Reshuffle()
        return spread | "ReadFiles" >> beam.ParDo(_ReadFile(self._done_file))


class _ReadSampleFile(_ReadFile):
    """Reads a sample photo from the worker's own scikit-image installation.

    The launcher's path (`FolderFile.path`) need not exist on remote workers;
    scikit-image is installed there too, maybe elsewhere.
    """

    def _path(self, item: FolderFile) -> str:
        from skimage import data as skdata  # noqa: PLC0415 - heavy, only for the sample

        return os.path.join(os.path.dirname(skdata.__file__), posixpath.basename(item.path))


class ReadSample(beam.PTransform):
    """Reads the bundled sample (`sample_files()`) on any runner."""

    def expand(self, pbegin):
        return (
            pbegin
            | "ListSample" >> beam.Create(sample_files())
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFiles" >> beam.ParDo(_ReadSampleFile())
        )


def _builder(name: str, data_dir: str | None):
    import tensorflow_datasets as tfds  # noqa: PLC0415 - heavy; only for TFDS sources

    return tfds.builder(name, data_dir=data_dir)


# Probed when a dataset lists no download URLs: TFDS's own mirror.
_DEFAULT_PROBE_URL = "https://storage.googleapis.com/"


def network_problem(urls: Sequence[str], timeout: float | None = None) -> str | None:
    """Why none of the first hops of `urls` (their hosts, or the proxy they go
    through) can be reached, or None when one can.

    Args:
      urls: download URLs (http or https); up to three distinct hops are tried.
      timeout: seconds per hop, for the DNS lookup and the TCP connection
        (files.PROBE_TIMEOUT_S by default).
    """
    by_hop: dict[tuple[str, int, bool] | str, str] = {}
    for url in urls:
        try:
            hop: tuple[str, int, bool] | str | None = files.first_hop(url)
        except ValueError as e:  # a proxy's URL with a bad port: `no_answer` says it
            hop = str(e)
        if hop is not None:
            by_hop.setdefault(hop, url)
    problems = []
    for url in list(by_hop.values())[:3]:
        problem = files.no_answer(url, timeout)
        if problem is None:
            return None
        problems.append(problem)
    return "; ".join(problems) or None


def _check_download_reachable(name: str, builder: Any, data_dir: str | None) -> None:
    """Fails in seconds, not after minutes of TFDS retries, when the download is offline."""
    urls = list(getattr(builder, "url_infos", None) or ()) or [_DEFAULT_PROBE_URL]
    problem = network_problem(urls)
    if problem is not None:
        raise ValueError(
            f"Could not download and prepare TFDS dataset {name!r} into {builder.data_dir}: "
            f"the network is unreachable ({problem}). {_offline_fix(name, data_dir)}"
        )


def _offline_fix(name: str, data_dir: str | None) -> str:
    """What to do about a dataset that could not be downloaded: prepare it in the
    --data_dir it was looked for in (or TFDS's own folder), or point --data_dir at it."""
    if data_dir is None:
        return (
            f"Without network, prepare it where there is network with "
            f"{_build_command(name, None)} and pass --data_dir where it is prepared."
        )
    return (
        f"It is not prepared in --data_dir {data_dir!r}: prepare it there with "
        f"{_build_command(name, data_dir)} (needs network; or build it where there is "
        "network and copy it in), or pass --data_dir where it is prepared."
    )


def _tfds_builder(name: str, data_dir: str | None) -> Any:
    """The dataset's builder; an unknown name is a bad --dataset."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    try:
        return _builder(name, data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise _not_found_error(name, data_dir, e) from e
    except (ValueError, AssertionError) as e:  # a known dataset's config or version
        if "not a valid FileFormat" in str(e):  # its dataset_info.json names an unknown one
            raise ValueError(_unreadable_metadata(name, data_dir, e)) from e
        raise ValueError(_builder_error(name, e)) from e
    except Exception as e:  # the metadata cannot be read: a bad --data_dir, not a run
        raise ValueError(_unreadable_metadata(name, data_dir, e)) from e


def _not_found_error(name: str, data_dir: str | None, error: Exception) -> ValueError:
    """Why TFDS knows no dataset `name`: --data_dir is its own folder, holds it at
    another version or config (read without its builder's code), is missing, or the
    name is unknown (with close names)."""
    own = _own_folder_error(name, data_dir)
    if own is not None:
        return own
    base = name.split(":")[0].split("/")[0]
    prepared = _prepared_as(base, data_dir)
    if prepared:
        where = f"--data_dir {data_dir!r}" if data_dir is not None else "TFDS's data folder"
        return ValueError(
            f"--dataset {name!r}: {where} holds TFDS dataset {base!r} "
            f"prepared as {', '.join(prepared)}, not as asked; pass one of those as "
            "--dataset, or prepare this one there with the code of its builder."
        )
    try:
        missing = data_dir is not None and not FileSystems.exists(data_dir)
    except Exception:  # e.g. gs:// without credentials: say what is known
        missing = False
    if data_dir is None:
        where = " If it is prepared in a TFDS data folder of your own, pass it as --data_dir."
    else:
        where = f" --data_dir {data_dir!r} does not exist." if missing else ""
    close = _close_folders(name)
    if close:
        these = "a folder of a close name is" if len(close) == 1 else "folders of close names are"
        where = f"; {these} here: {', '.join(map(repr, close))}.{where}"
    else:
        where = f".{where}"
    return ValueError(
        f"--dataset {name!r} is neither a folder, 'sample', nor a known TFDS dataset{where} "
        f"({_first_line(error)}{_closest_dataset(name, data_dir)})"
    )


def _close_folders(name: str) -> list[str]:
    """Local folders beside where a --dataset folder `name` would be whose names are close
    to its own (`photos` for a misspelt `photo`), as paths to pass; else none."""
    if files.is_remote(name):
        return []
    parent, base = os.path.split(name.rstrip("/"))
    try:
        entries = os.listdir(parent or ".")
    except OSError:
        return []
    folders = [
        entry
        for entry in entries
        if not entry.startswith(".") and os.path.isdir(os.path.join(parent or ".", entry))
    ]
    return [os.path.join(parent, m) for m in difflib.get_close_matches(base, folders, n=3)]


def _own_folder_error(name: str, data_dir: str | None) -> ValueError | None:
    """A --data_dir that is the dataset's own folder (TFDS looks in `<data_dir>/<name>`,
    so it would prepare the dataset again inside itself): the error naming its parent."""
    if data_dir is None:
        return None
    base = name.split(":")[0].split("/")[0]
    parent, folder = posixpath.split(data_dir.rstrip("/"))
    prepared = _prepared_as(base, parent or ".") if folder == base else []
    if not prepared:
        return None
    return ValueError(
        f"--data_dir {data_dir!r} is the folder of TFDS dataset {base!r} itself (it holds "
        f"{', '.join(prepared)}); pass its parent: --data_dir {wording.shell_word(parent or '.')}."
    )


def _prepared_as(base: str, data_dir: str | None) -> list[str]:
    """How dataset `base` is prepared in `data_dir` (TFDS's own folder when None), as
    `base[/config]:version` spellings; what TFDS reads without the builder's code."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    root = FileSystems.join(data_dir or tfds.core.constants.DATA_DIR, base)
    prepared = []
    for levels in (["*"], ["*", "*"]):
        pattern = FileSystems.join(escape_glob(root), *levels, "dataset_info.json")
        try:
            found = FileSystems.match([pattern])[0].metadata_list
        except Exception:  # not there, or not readable (gs:// offline): nothing known
            continue
        for meta in found:
            *config, version = meta.path[len(root) :].strip("/").split("/")[:-1]
            if re.fullmatch(r"\d+\.\d+\.\d+", version):
                prepared.append("/".join([base, *config]) + f":{version}")
    return sorted(set(prepared))


def _unreadable_metadata(name: str, data_dir: str | None, error: Exception) -> str:
    """Why a dataset's metadata (its dataset_info.json) could not be read: an
    unreachable gs:// --data_dir (offline, no credentials; a Dataflow dry run
    reads it too) or a broken prepared folder. Said at launch, not as a failed run."""
    reason = " ".join(_first_line(error).split('": ', 1)[-1].split())
    where = f"--data_dir {data_dir!r}" if data_dir is not None else "TFDS's data folder"
    if data_dir is not None and files.is_remote(data_dir):
        fix = (
            "a gs:// --data_dir is read at launch (a Dataflow dry run too): it needs network "
            "and Google Cloud credentials (gcloud auth application-default login)"
        )
    else:
        fix = f"prepare it again with {_build_command(name.split(':')[0], data_dir)}"
    return (
        f"--dataset {name!r}: cannot read its TFDS metadata in {where} "
        f"({type(error).__name__}: {reason}); {fix}."
    )


def _first_line(error: Exception) -> str:
    """The first line of an error's text that says something."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), "")


def _closest_dataset(name: str, data_dir: str | None = None) -> str:
    """` Did you mean mnist?` for a misspelt TFDS name (or `sample`, or a dataset prepared
    in a local `data_dir`); for a known one with a malformed version (`mnist:abc`, which
    TFDS reads as a namespace), how a version is written; else empty."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    base = name.split(":")[0].split("/")[0]
    known = tfds.list_builders(with_community_datasets=False)
    if base in known:
        return f" A version is written {base}:x.y.z, e.g. {base}:1.0.0."
    # The bundled sample and a dataset of --data_dir without its builder's code too.
    close = difflib.get_close_matches(base, [*known, "sample", *_prepared_in(data_dir)])
    return f" Did you mean {', '.join(close[:3])}?" if close else ""


def _prepared_in(data_dir: str | None) -> list[str]:
    """The datasets prepared in a local `data_dir` (its sub-folders holding one)."""
    if data_dir is None or files.is_remote(data_dir) or not os.path.isdir(data_dir):
        return []
    try:
        names = sorted(os.listdir(data_dir))
    except OSError:
        return []
    return [n for n in names if holds_prepared_tfds(os.path.join(data_dir, n))]


def _builder_error(name: str, error: Exception) -> str:
    """What is wrong with a known TFDS dataset's `name/config:version`: TFDS's own
    reason, or for an unknown config the configs there are (TFDS's message stops
    at "Here are 10 BuilderConfigs whose name closely match:" and lists none)."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    base, _, config = name.split(":")[0].partition("/")
    try:
        configs = [c.name for c in tfds.builder_cls(base).BUILDER_CONFIGS]
    except Exception:  # not a builder class after all: TFDS's reason below
        configs, config = [], ""
    if config and config not in configs:
        if not configs:
            return (
                f"--dataset {name!r}: TFDS dataset {base!r} has no configs; pass --dataset {base}."
            )
        close = difflib.get_close_matches(config, configs, n=3, cutoff=0.3) or configs[:3]
        shown = ", ".join(f"{base}/{c}" for c in close)
        return (
            f"--dataset {name!r}: TFDS dataset {base!r} has no config {config!r}; it has "
            f"{len(configs)}, e.g. {shown}."
        )
    reason = " ".join(str(error).split('": ', 1)[-1].split())  # one line
    reason = reason.split(" Here are ")[0].split(" Where:")[0]
    return f"--dataset {name!r}: {reason}"


def _not_prepared_error(
    name: str, builder: Any, remote_workers: bool, data_dir: str | None
) -> ValueError:
    if remote_workers:
        return ValueError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir}. The launcher of a "
            "Dataflow job does not prepare datasets (that would read all of it here); "
            f"prepare it once with {_build_command(name, '<gs:// folder>')} and pass "
            "that folder as --data_dir."
        )
    return ValueError(
        f"TFDS dataset {name!r} is not prepared in {builder.data_dir}. Prepare it with "
        f"{_build_command(name, data_dir)} (needs network), pass --data_dir where it is, or "
        "drop --no_download."
    )


def _build_command(name: str, data_dir: str | None) -> str:
    """The `tfds build` command that prepares `name` where this job reads it: into
    --data_dir when given (without it, tfds build prepares into TFDS's own folder),
    quoted for a shell as printed (a folder with a space is one argument); a placeholder
    in angle brackets (`<gs:// folder>`) is printed as it is."""
    folder = (
        data_dir if data_dir is None or data_dir.startswith("<") else wording.shell_word(data_dir)
    )
    into = f" --data_dir {folder}" if folder is not None else ""
    return f"`tfds build {wording.shell_word(name)}{into}`"


def _check_preparable(
    name: str, builder: Any, download: bool, remote_workers: bool, data_dir: str | None
) -> None:
    """An unprepared dataset this launch may not prepare: --data_dir is TFDS's own
    folder, --no_download, or the launcher of remote workers; says how to."""
    own = _own_folder_error(name, data_dir)
    if own is not None:
        raise own
    if remote_workers or not download:
        raise _not_prepared_error(name, builder, remote_workers, data_dir)


def _ensure_prepared(
    name: str, builder: Any, download: bool, remote_workers: bool, data_dir: str | None
) -> Any:
    """Prepares (downloads) an unprepared dataset when allowed, else says how to; the
    builder to read it with (a new one, of the metadata another run prepared meanwhile)."""
    if builder.is_prepared():
        return builder
    _check_preparable(name, builder, download, remote_workers, data_dir)
    _check_download_reachable(name, builder, data_dir)
    _LOG.info("Preparing TFDS dataset %s in %s (downloads it).", name, builder.data_dir)
    try:
        builder.download_and_prepare()
    except Exception as e:
        # Another run prepared it meanwhile: TFDS's rename of this one's copy then fails.
        if not builder.is_prepared():
            raise _preparation_error(name, builder, data_dir, e) from e
        _LOG.info("TFDS dataset %s was prepared by another run meanwhile; reading it.", name)
        return _tfds_builder(name, data_dir)
    return builder


#: The characters of a failure's text that are said: a library's may be a page long
#: (a builder's error holding the HTML a server answered).
_REASON_CHARS = 300


def _preparation_error(
    name: str, builder: Any, data_dir: str | None, error: Exception
) -> ValueError:
    """Why TFDS could not download or prepare a dataset once the network answered the
    probe, in one line, and what to do: a download its source refused or that was
    another file than its builder expects, or a failure of the builder itself."""
    reason, at_source = _preparation_failure(error)
    if len(reason) > _REASON_CHARS:
        reason = reason[: _REASON_CHARS - 1] + "…"
    build = _build_command(name, data_dir)
    if at_source:
        fix = (
            "Its source may have moved or changed the file since this tensorflow-datasets was "
            "released: a newer one may know (pip install -U tensorflow-datasets); or prepare it "
            f"where it downloads, with {build}, and pass --data_dir where it is prepared."
        )
    else:
        fix = (
            f"{build} shows TFDS's whole error; or prepare it elsewhere and pass --data_dir "
            "where it is prepared."
        )
    return ValueError(
        f"Could not download and prepare TFDS dataset {name!r} into {builder.data_dir}: "
        f"{reason}. {fix}"
    )


def _preparation_failure(error: Exception) -> tuple[str, bool]:
    """What went wrong in TFDS's download_and_prepare, on one line (its text may hold
    many), and whether it was the download's source: an HTTP status other than 200,
    or a file whose size or checksum is not the builder's (TFDS's page of them)."""
    import tensorflow_datasets as tfds  # noqa: PLC0415
    from tensorflow_datasets.core.download import download_manager  # noqa: PLC0415

    text = " ".join(str(error).split()).rstrip(".")  # the message adds its own period
    if isinstance(error, download_manager.NonMatchingChecksumError):
        return _other_file(text), True
    if isinstance(error, tfds.download.DownloadError):  # "Failed to get url U. HTTP code: 404."
        return text, True
    return (f"{type(error).__name__}: {text}" if text else type(error).__name__), False


def _other_file(checksum_error: str) -> str:
    """TFDS's NonMatchingChecksumError (`Artifact URL, downloaded to PATH, has wrong
    checksum: * Expected: UrlInfo(size=17, ...) * Got: UrlInfo(size=12 bytes, ...)`,
    on one line) said in a sentence."""
    url = re.search(r"Artifact (\S+), downloaded to", checksum_error)
    sizes = re.findall(r"UrlInfo\(size=(\d+)", checksum_error)
    where = f" from {url.group(1)}" if url else ""
    if len(sizes) == 2 and sizes[0] != sizes[1]:
        differs = f" ({sizes[1]} bytes, not {sizes[0]})"
    else:
        differs = " (its checksum differs)"
    return f"the file downloaded{where} is not the one its builder expects{differs}"


#: The names TFDS datasets give the feature of their images' file names: imagenet_a's
#: first, then eurosat's and uc_merced's, cats_vs_dogs' and cassava's, caltech101's.
_FILE_NAME_KEYS = ("file_name", "filename", "image/filename", "image/file_name")


def _feature_keys(name: str, builder: Any) -> tuple[str, str | None, str | None]:
    """(image, label, file name) feature keys: the supervised keys where they fit."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    features = builder.info.features
    image_keys = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    if not image_keys:
        raise ValueError(f"TFDS dataset {name!r} has no image feature ({list(features)}).")
    supervised = builder.info.supervised_keys or ()
    image_key = _image_key(name, image_keys, supervised)
    _check_image_dtype(name, image_key, features[image_key])
    named = supervised[1] if len(supervised) > 1 and isinstance(supervised[1], str) else None
    label_key = _label_key(name, features, named)
    if label_key is None and (named in features or "label" in features):
        key = named if named in features else "label"
        _LOG.warning(
            "TFDS dataset %r has a %r feature%s that is not a ClassLabel (%s): its images "
            "get no label.",
            name,
            key,
            ", its label (supervised_keys)," if key == named else "",
            type(features[key]).__name__,
        )
    file_name_key = next((k for k in _FILE_NAME_KEYS if k in features), None)
    return image_key, label_key, file_name_key


def _label_key(name: str, features: Any, named: str | None) -> str | None:
    """The ClassLabel read as each image's label: the one the dataset `named` as its
    label (supervised_keys), else 'label', else the first; said when the dataset names
    another or none of several (shapes3d's six ClassLabels, label_floor_hue first, were
    read so without a word)."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    label_keys = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    if named in label_keys or not label_keys:
        return named if named in label_keys else None
    key = "label" if "label" in label_keys else label_keys[0]
    if named is not None:
        _LOG.warning(
            "TFDS dataset %r names %r as its label (supervised_keys), which is not a "
            "ClassLabel (%s): reading its ClassLabel %r as each image's label instead.",
            name,
            named,
            type(features[named]).__name__ if named in features else "a nested feature",
            key,
        )
    elif key != "label" and len(label_keys) > 1:
        _LOG.warning(
            "TFDS dataset %r has %d ClassLabel features (%s) and names none as its label "
            "(supervised_keys): reading %r as each image's label.",
            name,
            len(label_keys),
            ", ".join(label_keys),
            key,
        )
    return key


def _check_image_dtype(name: str, key: str, feature: Any) -> None:
    """Refuses a float32 image feature: TFDS stores it as the bytes of each float in
    an RGBA PNG pixel, which decoded as a picture gave other pixels (0.5 was black)."""
    dtype = np.dtype(feature.np_dtype)
    if dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"TFDS dataset {name!r} stores its image feature {key!r} as {dtype} (the bytes "
            "of each float in a PNG pixel), which the job does not decode; it reads uint8 "
            "and uint16 images."
        )


def _image_key(name: str, image_keys: list[str], supervised: Sequence[Any]) -> str:
    """The image feature audited: the supervised input, else 'image', else the first
    (said: a dataset of photos and masks or depth maps could be audited on the wrong one)."""
    if supervised and supervised[0] in image_keys:
        return supervised[0]
    key = "image" if "image" in image_keys else image_keys[0]
    if len(image_keys) > 1:
        _LOG.warning(
            "TFDS dataset %r has %d image features (%s) and names none as its input "
            "(supervised_keys): auditing %r.",
            name,
            len(image_keys),
            ", ".join(image_keys),
            key,
        )
    return key


def _checked_split(name: str, split: str, builder: Any) -> tuple[int, list[tuple[str, int, int]]]:
    """The examples a split spec reads and its parts' `_read_ranges`, from the sizes
    `builder.info` holds (prepared, or declared by the builder): an unknown split, a
    slice beyond its size or ending before it starts, parts that overlap and a spec
    that reads no example are refused."""
    num_examples = _split_size(name, split, builder)
    ranges = _read_ranges(name, split, builder)
    _check_no_overlap(name, split, ranges)
    _check_not_empty(name, split, num_examples, builder)
    return num_examples, ranges


def _check_not_empty(name: str, split: str, num_examples: int, builder: Any) -> None:
    """Refuses a split spec that reads no example ('test[:0]', 'test[:1%]' of a small
    split, a split prepared empty): the run loaded the model, then had no input. The
    split suggested is the spec's own where it holds examples."""
    if num_examples:
        return
    sizes = {str(s): info.num_examples for s, info in builder.info.splits.items()}
    held = ", ".join(f"{s}: {wording.count(n, 'example')}" for s, n in sizes.items())
    named = {part.split("[")[0].strip() for part in split.split("+")}  # 'test[:1%]': test
    some = sorted((s for s, n in sizes.items() if n), key=lambda s: s not in named)
    fix = (
        f"pass a split or slice that holds some, e.g. --split {some[0]}"
        if some
        else "none holds an example: check --dataset and --data_dir"
    )
    raise ValueError(
        f"--split {split!r} reads no example of {name!r} ({held or 'no split'}); {fix}."
    )


def _split_size(name: str, split: str, builder: Any) -> int:
    try:
        return builder.info.splits[split].num_examples
    except (KeyError, ValueError) as e:
        beyond = _slice_beyond(name, split, builder)
        if beyond is not None:
            raise ValueError(beyond) from e
        raise ValueError(
            f"--split {split!r} is not valid for {name!r}; its splits are "
            f"{', '.join(builder.info.splits)} (slices like 'test[:2%]' work too). ({e})"
        ) from e


def _slice_beyond(name: str, split: str, builder: Any) -> str | None:
    """What is wrong with a part of a split spec slicing its split beyond its size
    (`test[:5]` of 4 examples, which TFDS refuses), with that size; None when no part
    does (an unknown split name)."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    for part in (p.strip() for p in split.split("+")):
        try:
            instruction = tfds.core.ReadInstruction.from_spec(part)
            instruction.to_absolute(builder.info.splits)
        except ValueError as e:
            if not str(e).startswith("Requested slice"):
                continue
            splitname = instruction.split_name
            size = builder.info.splits[splitname].num_examples
            fix = (
                f"keep each bound within -{size} and {size} (e.g. '{splitname}[:{size}]'), "
                f"or slice by percent (e.g. '{splitname}[:50%]')"
                if size
                else f"read another split ({', '.join(builder.info.splits)})"
            )
            return (
                f"--split {split!r} slices {name!r} split {splitname!r} ({part!r}) beyond its "
                f"{wording.count(size, 'example')}; {fix}."
            )
    return None


def _check_split_syntax(split: str) -> None:
    """Refuses a split spec TFDS cannot parse (`test[:2%`, `test[::2]`), before any
    download: which split names exist is only known once the dataset is prepared."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    try:
        tfds.core.ReadInstruction.from_spec(split)
    except (ValueError, TypeError, NotImplementedError) as e:
        # TFDS raises NotImplementedError for a slice of 'all' (all[:3]).
        why = ""
        if isinstance(e, NotImplementedError):
            why = " ('all' cannot be sliced: slice each split, e.g. 'train[:10]+test[:10]')"
        raise ValueError(
            f"--split {split!r} is not a TFDS split spec{why}; use a split name with optional "
            "slices, e.g. 'test', 'test[:2%]', 'test[10:20]' or 'test[:10]+train[:10]'."
        ) from e


def _read_ranges(name: str, split: str, builder: Any) -> list[tuple[str, int, int]]:
    """What each part of a split spec reads: (split name, start, stop) in examples.

    Refuses a part whose slice ends before it starts (`test[3:1]`): TFDS counts
    it -2 examples and its Beam reader reads from the start to the split's end.
    """
    import tensorflow_datasets as tfds  # noqa: PLC0415

    instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(builder.info.splits)
    ranges = []
    for part in instructions:
        size = builder.info.splits[part.splitname].num_examples
        start, stop = part.from_ or 0, size if part.to is None else part.to
        if stop < start:
            raise ValueError(
                f"--split {split!r} reads {name!r} split {part.splitname!r} from example "
                f"{start} but ends at example {stop}, before it; write the slice's start "
                f"first (e.g. '{part.splitname}[{stop}:{start}]')."
            )
        ranges.append((part.splitname, start, stop))
    return ranges


def _check_no_overlap(name: str, split: str, ranges: list[tuple[str, int, int]]) -> None:
    """Refuses a split spec whose parts (their `_read_ranges`) read an example twice
    (`test[:3]+test[1:4]`, `test+test`): its image_id would name two inputs, audited
    twice."""
    read: dict[str, list[tuple[int, int]]] = {}
    for splitname, start, stop in ranges:
        for other_start, other_stop in read.get(splitname, []):
            first, last = max(start, other_start), min(stop, other_stop)
            if first < last:
                raise ValueError(
                    f"--split {split!r} reads examples {first} to {last - 1} of {name!r} "
                    f"split {splitname!r} more than once; each would be audited twice "
                    "under one image_id. Use parts that do not overlap."
                )
        read.setdefault(splitname, []).append((start, stop))


def _check_split_files(name: str, splitnames: set[str], builder: Any, data_dir: str | None) -> None:
    """Refuses a prepared dataset missing a file of a split it reads: one copied in part
    has its dataset_info.json, so TFDS reads it as prepared, and the run failed in its
    workers on the first image of a missing file. One listing of the version's folder."""
    pattern = FileSystems.join(escape_glob(str(builder.data_dir)), "*")
    try:
        there = {posixpath.basename(m.path) for m in FileSystems.match([pattern])[0].metadata_list}
    except Exception:  # not listable (gs:// offline): the run's reader will say
        return
    for splitname in sorted(splitnames):
        files_of = [posixpath.basename(str(p)) for p in builder.info.splits[splitname].filepaths]
        missing = [f for f in files_of if f not in there]
        if missing:
            raise ValueError(
                f"TFDS dataset {name!r} in {builder.data_dir} is incomplete: "
                f"{len(missing)} of the {len(files_of)} files of its split {splitname!r} "
                f"{'is' if len(missing) == 1 else 'are'} missing ({missing[0]}"
                f"{', ...' if len(missing) > 1 else ''}), as after a copy cut short. Copy it "
                f"again whole, or remove {builder.data_dir} and prepare it again with "
                f"{_build_command(name, data_dir)}."
            )


def resolve_tfds(
    name: str, split: str, data_dir: str | None, download: bool, remote_workers: bool = False
) -> TfdsSource:
    """Checks a TFDS dataset and split before the pipeline starts.

    Reads the dataset's metadata only. Prepares (downloads) the dataset when it
    is not there and `download` is set.

    Args:
      remote_workers: the job runs on remote workers (Dataflow); an unprepared
        dataset is then an error that says how to prepare it once, in `data_dir`.

    Raises:
      ValueError: a split spec that does not parse (checked first, before any
        download), unknown dataset, no image feature or one of floats,
        unknown split, a slice beyond its split's size or ending before it starts, a split
        whose parts overlap or that reads no example (checked before any download where
        the builder declares its splits' sizes), or not prepared (with how to prepare it).
    """
    check_tfds(name, split, data_dir, download, remote_workers)
    builder = _tfds_builder(name, data_dir)
    mocked = _tfds_mocked()
    if not mocked:
        builder = _ensure_prepared(name, builder, download, remote_workers, data_dir)
    image_key, label_key, file_name_key = _feature_keys(name, builder)
    if mocked:  # no split files, nor sizes: the mock's own examples
        num_examples = int(builder.as_dataset(split=split).cardinality())
        _check_not_empty(name, split, num_examples, builder)
    else:
        num_examples, ranges = _checked_split(name, split, builder)
        _check_split_files(name, {part for part, _, _ in ranges}, builder, data_dir)
    features = builder.info.features
    class_names = tuple(features[label_key].names) if label_key else None
    return TfdsSource(
        name=name,
        split=split,
        data_dir=data_dir,
        image_key=image_key,
        label_key=label_key,
        file_name_key=file_name_key,
        num_examples=num_examples,
        class_names=class_names,
        version=str(builder.info.version),
        shard_ranges=None if mocked else _shard_ranges(builder, split),
    )


def check_tfds(
    name: str, split: str, data_dir: str | None, download: bool, remote_workers: bool = False
) -> bool:
    """What `resolve_tfds` checks of an unprepared dataset before any download, from its
    metadata alone: the split's syntax, the name, the split sizes its builder declares,
    and whether this launch may prepare it. A launcher checks them before --output is,
    the download coming after.

    Returns:
      Whether the dataset is prepared (or mocked): `resolve_tfds` then reads its
      metadata alone, and checks the rest.

    Raises:
      ValueError: as `resolve_tfds`, of what is known before a download.
    """
    _check_split_syntax(split)
    builder = _tfds_builder(name, data_dir)
    if _tfds_mocked() or builder.is_prepared():
        return True
    if builder.info.splits:
        _checked_split(name, split, builder)  # the sizes it declares: before any download
    _check_preparable(name, builder, download, remote_workers, data_dir)
    return False


def _tfds_mocked() -> bool:
    """Whether `tfds.testing.mock_data` is active, as in tests that run the job offline
    (DESIGN.md): it prepares nothing and writes no files, so the split is read through
    the builder's mocked `as_dataset` (`_mocked_examples`), in this process."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    return tfds.core.DatasetBuilder.as_dataset.__module__ == "tensorflow_datasets.testing.mocking"


def _mocked_examples(builder: Any, source: TfdsSource) -> list[RawImage]:
    """The examples `tfds.testing.mock_data` gives for the split, as `ReadTfds` reads
    a prepared one: encoded images, each with its `tfds_id`."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    dataset = builder.as_dataset(
        split=source.split,
        decoders={source.image_key: tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(add_tfds_id=True),
        shuffle_files=False,
    )
    return [_to_raw(example, source) for example in tfds.as_numpy(dataset)]


def _to_raw(example: dict[str, Any], source: TfdsSource) -> RawImage:
    def text(value: Any) -> str:
        value = value.numpy() if hasattr(value, "numpy") else value
        return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)

    tfds_id = text(example["tfds_id"])
    file_name = text(example[source.file_name_key]) if source.file_name_key else tfds_id
    label = None
    if source.label_key is not None:
        value = int(np.asarray(example[source.label_key]))
        label = value if value >= 0 else None
        if label is not None and source.label_map is not None:
            label = source.label_map[label]
    data = example[source.image_key]
    data = data.numpy() if hasattr(data, "numpy") else data
    # A file name feature need not be unique across a dataset; the tfds_id
    # (split, shard, index) is, and is stable for a prepared dataset.
    image_id = f"{source.name}/{tfds_id}"
    return RawImage(image_id=image_id, file_name=file_name, label=label, data=bytes(data))


def _read_config(verbose: bool) -> Any:
    """TFDS's read options (each example with its `tfds_id`), pickled so that a
    worker imports TensorFlow quietly (unless `verbose`) before it rebuilds them.

    A `tfds.ReadConfig` holds `tf.data` options: unpickling one imports TensorFlow,
    in each worker process of a multi-process run, before any of the job's code
    runs there; TensorFlow's native libraries then printed their start-up lines.
    """
    quiet.import_tensorflow(verbose=verbose)
    import tensorflow_datasets as tfds  # noqa: PLC0415

    class QuietReadConfig(tfds.ReadConfig):
        def __reduce__(self):
            return _read_config, (verbose,)

    return QuietReadConfig(add_tfds_id=True)


#: Examples in one element of the read of ArrayRecord files: what a worker reads at once.
_RECORDS_PER_READ = 64


@dataclasses.dataclass(frozen=True)
class _RecordRange:
    """Examples `start` to `stop` (excluded) of `split`, all of one shard: the shard TFDS
    names `id_prefix` when it prepares the dataset as TFRecord files; `start` is its
    example `first_index`."""

    split: str
    start: int
    stop: int
    id_prefix: str
    first_index: int


def _shard_parts(builder: Any, split: str) -> Iterator[tuple[str, int, int, int, str]]:
    """What a split spec reads of each shard file of a prepared dataset: (split name, the
    shard's first example in its split, skip, take, the shard's name as TFDS's TFRecord
    reader names it in its examples' tfds_ids). TFDS shards both formats alike, so an
    example keeps its id whichever format the dataset is prepared in."""
    import tensorflow_datasets as tfds  # noqa: PLC0415
    from tensorflow_datasets.core import naming  # noqa: PLC0415

    splits = builder.info.splits
    for instruction in splits[split].file_instructions:
        # Parsed as tfds.beam.ReadFromTFDS parses it, to read one shard.
        shard = naming.FilenameInfo.from_str(instruction.filename)
        name = str(shard.replace(filetype_suffix=tfds.core.FileFormat.TFRECORD.file_suffix))
        offset = sum(splits[shard.split].shard_lengths[: shard.shard_index])
        yield shard.split, offset, instruction.skip, instruction.take, name


def _shard_ranges(builder: Any, split: str) -> tuple[tuple[str, int, int], ...] | None:
    """The tfds_ids of a split spec's examples (`TfdsSource.shard_ranges`): per shard
    file, its name and the indices read there; None for a format other than TFRecord
    and ArrayRecord, whose ids name files the job does not name ahead."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    formats = (tfds.core.FileFormat.TFRECORD, tfds.core.FileFormat.ARRAY_RECORD)
    if builder.info.file_format not in formats:
        return None
    parts = _shard_parts(builder, split)
    return tuple((name, skip, skip + take) for _, _, skip, take, name in parts)


def _record_ranges(
    builder: Any, split: str, records_per_read: int = _RECORDS_PER_READ
) -> list[_RecordRange]:
    """What a split spec reads of a dataset prepared as ArrayRecord files, in ranges of
    at most `records_per_read` examples, none across two shards, each example with the
    id TFDS's TFRecord reader (`ReadTfds`) gives it (`_shard_parts`)."""
    ranges = []
    for splitname, offset, skip, take, prefix in _shard_parts(builder, split):
        for first in range(skip, skip + take, records_per_read):
            last = min(first + records_per_read, skip + take)
            ranges.append(_RecordRange(splitname, offset + first, offset + last, prefix, first))
    return ranges


class _ReadRecordRange(beam.DoFn):
    """A `_RecordRange` -> its examples as `RawImage`s (encoded images, as `ReadTfds`
    reads TFRecord files), by random access to the split's ArrayRecord files
    (`as_data_source`), opened once per worker and split and closed at teardown."""

    def __init__(self, source: TfdsSource, verbose: bool = False):
        self._source = source
        self._verbose = verbose
        self._splits: dict[str, Any] = {}

    def setup(self) -> None:
        quiet.import_tensorflow(verbose=self._verbose)
        self._builder = _builder(self._source.name, self._source.data_dir)
        self._splits = {}

    def _examples(self, split: str) -> Any:
        if split not in self._splits:
            import tensorflow_datasets as tfds  # noqa: PLC0415

            decoders = {self._source.image_key: tfds.decode.SkipDecoding()}
            self._splits[split] = self._builder.as_data_source(split, decoders=decoders)
        return self._splits[split]

    def process(self, item: _RecordRange) -> Iterator[RawImage]:
        examples = self._examples(item.split).__getitems__(list(range(item.start, item.stop)))
        for index, example in enumerate(examples, start=item.first_index):
            yield _to_raw({**example, "tfds_id": f"{item.id_prefix}__{index}"}, self._source)

    def teardown(self) -> None:
        """Closes the splits' ArrayRecord files: a data source opens a reader per file
        it reads and keeps it open until its context exits (array_record's
        `ArrayRecordDataSource.__exit__`), which `as_data_source` leaves to its caller."""
        splits, self._splits = self._splits, {}
        for examples in splits.values():
            readers = getattr(examples, "data_source", None)  # TFDS's wrapper holds it
            if hasattr(readers, "__exit__"):
                readers.__exit__(None, None, None)


class ReadTfds(beam.PTransform):
    """Reads a prepared TFDS split: TFRecord files (and the other formats TFDS reads
    with tf.data) with `tfds.beam.ReadFromTFDS`, parallel by shard; ArrayRecord files
    (`tfds build --file_format array_record`), which it cannot read, by ranges of
    examples (`_record_ranges`), parallel by range. Either way an example is the same
    `RawImage`.

    `verbose`: a worker process shows TensorFlow's start-up lines (as `--verbose`).
    """

    def __init__(self, source: TfdsSource, verbose: bool = False):
        super().__init__()
        self._source = source
        self._verbose = verbose

    def expand(self, pbegin):
        import tensorflow_datasets as tfds  # noqa: PLC0415

        source = self._source
        builder = _builder(source.name, source.data_dir)
        if _tfds_mocked():  # read here, where the mock is active
            return pbegin | "ReadMockedTFDS" >> beam.Create(_mocked_examples(builder, source))
        if builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
            return (
                pbegin
                | "ListRecordRanges" >> beam.Create(_record_ranges(builder, source.split))
                | "SpreadRanges" >> beam.Reshuffle()
                | "ReadRecordRanges" >> beam.ParDo(_ReadRecordRange(source, self._verbose))
            )
        return (
            pbegin
            | "ReadFromTFDS"
            >> tfds.beam.ReadFromTFDS(
                builder,
                split=source.split,
                decoders={source.image_key: tfds.decode.SkipDecoding()},
                read_config=_read_config(self._verbose),
                shuffle_files=False,
            )
            | "ToRawImage" >> beam.Map(_to_raw, source=source)
        )
