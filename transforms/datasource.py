"""What `--dataset` names, as a value: the bundled sample, an image folder or a TFDS dataset.

`source_for` decides the kind once, from the flag; `source_of_manifest` reads it
back from a finished run. These values and the sample's file list need no Beam,
so reading a run back (`transforms.results`) does not import it; the Beam read
transforms they name (`read_transform`) and the TFDS launch check (`resolved`)
live in `transforms.sources`, which re-exports everything here.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from transforms import files, labels

if TYPE_CHECKING:
    import apache_beam as beam

__all__ = [
    "IMAGE_SUFFIXES",
    "REMOTE_FOLDER_SCHEMES",
    "SAMPLE",
    "SAMPLE_IMAGES",
    "WORDNET_LABELS",
    "DataSource",
    "FolderFile",
    "FolderLabels",
    "FolderSource",
    "SampleSource",
    "TfdsSource",
    "holds_prepared_tfds",
    "image_id_of",
    "input_kind",
    "relative_path",
    "sample_files",
    "source_for",
    "source_of_manifest",
    "unlisted_folder",
]

# The dataset kind: what --dataset names is decided here, once (`source_for`), and
# read back from a run's manifest here (`source_of_manifest`); everything else
# asks the value, never the string.

#: The --dataset spelling of the bundled sample.
SAMPLE = "sample"

#: Names of image files: a folder holding one is a folder of images, and a --dataset
#: named so is a path (no TFDS name ends so), whether it exists or not.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp")

#: Schemes of image folders that remote workers read directly.
REMOTE_FOLDER_SCHEMES: tuple[str, ...] = ("gs://",)


# Bumped when `image_id_of` names a file differently: 2 escapes backslashes. A
# --resume of a run made under another scheme could redo a file under a new id.
IMAGE_ID_SCHEME = 2


def image_id_of(name: str) -> str:
    """`name` as valid UTF-8 text, one text per name: where a name is not UTF-8 or
    holds a backslash, each backslash becomes `\\\\` and each undecodable byte `\\xNN`.

    Python lists a name that is not UTF-8 (`caf\\xe9.png`, from a zip made on
    Windows) with lone surrogates, which no Beam coder or Parquet column can
    encode: one such name failed the whole job. The path keeps them, to open
    the file; the id and file name get this readable, stable form. A name
    holding a backslash is escaped too (`caf\\\\xe9.png` for the UTF-8 name
    `caf\\xe9.png`), so no two files share an id; `relative_path` inverts it.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        if "\\" not in name:
            return name
    return os.fsencode(name).replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


_ESCAPE = re.compile(rb"\\(\\|x[0-9a-f]{2})")


def relative_path(image_id: str) -> str:
    """The path, relative to its folder, of the file a folder's `image_id` names
    (the inverse of the id's escaping, `image_id_of`)."""
    if "\\" not in image_id:
        return image_id
    raw = _ESCAPE.sub(
        lambda m: b"\\" if m[1] == b"\\" else bytes([int(m[1][1:], 16)]),
        image_id.encode("utf-8"),
    )
    return os.fsdecode(raw)


_UNLISTED = "cannot list folder: "


def unlisted_folder(error: OSError) -> str:
    """The `error` of the input a folder the job could not list becomes (`FolderFile`)."""
    return f"{_UNLISTED}{error}"


def input_kind(error: str) -> str:
    """What the input of an error record is, told by its `error`: "folder" for a folder
    the job could not list (`unlisted_folder`), else "file". Only a folder's entries
    have ids that a reason quotes (in a path); a TFDS example's or the sample's never
    appears in one."""
    return "folder" if error.startswith(_UNLISTED) else "file"


@dataclasses.dataclass(frozen=True)
class FolderFile:
    """A file to read: where it is, its id and its label.

    `error` says why an entry the user sees cannot be read (a dangling link, a
    FIFO); it then becomes an error record instead of vanishing.
    """

    path: str
    image_id: str
    label: int | None
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class FolderLabels:
    """How an image folder's files are labelled: the one home of the rule.

    Only a top-level sub-folder labels its files; a file directly in the folder, or
    in a sub-folder named otherwise, has no label. The sub-folder's name, exactly as
    listed (case and spaces count: `Cat` is not `cat`), is looked up first among
    `class_names` (--class_names, a model of your own classes; `cat/` -> the index of
    'cat'), then as an ImageNet WordNet id (`n02123045/` -> 281, ImageNet's index). A
    name that is both (a --class_names file of WordNet ids in another order) is the
    --class_names class: the model's own.
    """

    class_names: tuple[str, ...] | None = None
    _index: dict[str, int] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {name: i for i, name in enumerate(self.class_names or ())}
        object.__setattr__(self, "_index", index)

    def _lookup(self, name: str) -> tuple[str, int] | None:
        """How a sub-folder named `name` labels its files and with what label:
        ("--class_names", that class's index), ("WordNet id", ImageNet's index), or None."""
        named = self._index.get(name)
        if named is not None:
            return "--class_names", named
        wnid = labels.wnid_to_label(name)
        return None if wnid is None else ("WordNet id", wnid)

    def of(self, image_id: str) -> int | None:
        """The label of a folder's file `image_id` (its path in the folder), or None."""
        folder, sep, _ = image_id.partition("/")
        found = self._lookup(folder) if sep else None
        return None if found is None else found[1]

    def by_name(self, image_id: str) -> bool:
        """Whether `image_id` is labelled by a --class_names name (not ImageNet's)."""
        folder, sep, _ = image_id.partition("/")
        return bool(sep) and folder in self._index

    def names_folder(self, name: str) -> str | None:
        """What a folder named `name` would label its files by: "--class_names",
        "WordNet id", or None."""
        found = self._lookup(name)
        return None if found is None else found[0]


#: The rule without --class_names: sub-folders named by ImageNet WordNet id alone.
WORDNET_LABELS = FolderLabels()


#: The bundled offline sample: scikit-image's photos, with an ImageNet label
#: where an ImageNet class plainly applies (None otherwise).
SAMPLE_IMAGES: tuple[tuple[str, int | None], ...] = (
    ("chelsea.png", 281),  # a tabby cat
    ("coffee.png", 967),  # espresso in a cup
    ("rocket.jpg", None),  # a rocket launch; ImageNet has only "missile"
    ("astronaut.png", None),  # a person; ImageNet has no person class
    ("motorcycle_left.png", None),  # a motorbike; ImageNet has only moped/scooter
    ("camera.png", None),  # a photographer, grayscale
    ("hubble_deep_field.jpg", None),  # galaxies
    ("coins.png", None),  # old coins, grayscale
)


def sample_files() -> list[FolderFile]:
    """The bundled sample as files, with ids `sample/<wnid or unlabelled>/<name>`."""
    from skimage import data as skdata  # noqa: PLC0415 - heavy, only for the sample

    root = os.path.dirname(skdata.__file__)
    files = []
    for name, label in SAMPLE_IMAGES:
        folder = labels.imagenet_wnids()[label] if label is not None else "unlabelled"
        path = os.path.join(root, name)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"The bundled sample image {path} is missing; reinstall scikit-image."
            )
        files.append(FolderFile(path=path, image_id=f"sample/{folder}/{name}", label=label))
    return files


@dataclasses.dataclass(frozen=True)
class SampleSource:
    """The bundled sample (`--dataset sample`): offline photos, read on any runner."""

    @property
    def name(self) -> str:
        return SAMPLE

    def manifest_entry(self) -> dict[str, str | None]:
        """What the run's manifest.json says of the dataset."""
        return {"dataset": SAMPLE, "split": None}

    def read_transform(
        self, skip: str | None = None, verbose: bool = False, done_file: str | None = None
    ) -> beam.PTransform:
        """`ReadSample`; `skip` and `done_file` are for folders only, `verbose` for TFDS
        datasets."""
        del skip, verbose, done_file  # the sample never holds the job's output, nor imports TF
        from transforms import sources  # noqa: PLC0415 - Beam; not needed to read a run back

        return sources.ReadSample()


@dataclasses.dataclass(frozen=True)
class FolderSource:
    """An image folder: `gs://...` as given, or a local path made absolute.

    A local `root` that is no folder (a missing path, a file) is still a
    `FolderSource`: the launch check refuses it with the flag's spelling.
    """

    root: str
    # How its files are labelled: by WordNet id, and by --class_names when given.
    labelled: FolderLabels = WORDNET_LABELS

    @property
    def name(self) -> str:
        return self.root

    @property
    def remote(self) -> bool:
        """On gs://: what remote (Dataflow) workers can read; else on this machine."""
        return self.root.startswith(REMOTE_FOLDER_SCHEMES)

    def manifest_entry(self) -> dict[str, str | None]:
        """What the run's manifest.json says of the dataset (the absolute root)."""
        return {"dataset": self.root, "split": None}

    def read_transform(
        self, skip: str | None = None, verbose: bool = False, done_file: str | None = None
    ) -> beam.PTransform:
        """`ReadImageFolder` of the root, never reading `skip` (the job's own --output)
        nor the files of the images whose ids `done_file` holds (a --resume's, with
        rows already: `transforms.done_ids`);
        `verbose` is for TFDS datasets."""
        del verbose  # reading a folder imports no TensorFlow
        from transforms import sources  # noqa: PLC0415 - Beam; not needed to read a run back

        return sources.ReadImageFolder(
            self.root, skip=skip, done_file=done_file, labelled=self.labelled
        )


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """A TFDS dataset and split (`--dataset imagenet_a --split test`).

    `source_for` gives the name, split and data folder; `resolved()` (or
    `sources.resolve_tfds`) checks them at launch and fills in the rest: how the
    features are named, the split's size and the class names.
    """

    name: str
    split: str
    data_dir: str | None = None
    image_key: str | None = None  # the rest: None until resolved
    label_key: str | None = None
    file_name_key: str | None = None
    num_examples: int | None = None
    class_names: tuple[str, ...] | None = None
    # The ImageNet class of each of the dataset's labels, when they are read in
    # ImageNet's label space (an ImageNet model on imagenette: see `in_imagenet_space`).
    label_map: tuple[int, ...] | None = None
    # The prepared dataset's version (TFDS's `info.version`), once resolved: its
    # examples and their tfds_id ids can differ from another version's.
    version: str | None = None
    # The tfds_ids of the split's examples, once resolved: per shard file it reads, its
    # name and the examples' indices there, first to stop (`holds`); None: not known
    # ahead (mock data, or a file format other than TFRecord and ArrayRecord).
    shard_ranges: tuple[tuple[str, int, int], ...] | None = None

    def manifest_entry(self) -> dict[str, str | None]:
        """What the run's manifest.json says of the dataset."""
        return {"dataset": self.name, "split": self.split, "dataset_version": self.version}

    def not_held(self, image_ids: Iterable[str]) -> list[str] | None:
        """Those of `image_ids` that name no example of the split as it is prepared now
        (`<name>/<shard file>__<index>`, `shard_ranges`), sorted; None: not known. The ids
        name the shard files: a copy of the dataset prepared in other shards names its
        examples otherwise."""
        if self.shard_ranges is None:
            return None
        ranges: dict[str, list[tuple[int, int]]] = {}
        for shard, first, stop in self.shard_ranges:
            ranges.setdefault(f"{self.name}/{shard}", []).append((first, stop))

        def held(image_id: str) -> bool:
            shard, _, index = image_id.rpartition("__")
            if not (index.isascii() and index.isdigit()):
                return False
            return any(first <= int(index) < stop for first, stop in ranges.get(shard, ()))

        return sorted(i for i in image_ids if not held(i))

    def in_imagenet_space(self) -> TfdsSource | None:
        """This dataset with its labels read as ImageNet's class indices (0-999), when
        its classes are ImageNet WordNet ids other than ImageNet's 1000 in order
        (imagenette's 10: its label 1, n02102040, is ImageNet's 217); else None.

        An ImageNet model scores ImageNet's classes: imagenette's label 1 read as
        class 1 (goldfish) named and targeted the wrong class.
        """
        names = self.class_names
        if names is None or self.label_map is not None or names == labels.imagenet_wnids():
            return None
        label_map = tuple(labels.wnid_to_label(name) for name in names)
        if any(label is None for label in label_map):
            return None
        return dataclasses.replace(self, label_map=label_map, class_names=labels.imagenet_wnids())

    def check(self, download: bool, remote_workers: bool = False) -> bool:
        """What `resolved` checks before any download; whether it is prepared (see
        `sources.check_tfds`)."""
        from transforms import sources  # noqa: PLC0415 - Beam; not needed to read a run back

        return sources.check_tfds(self.name, self.split, self.data_dir, download, remote_workers)

    def resolved(self, download: bool, remote_workers: bool = False) -> TfdsSource:
        """This dataset checked and described at launch (see `sources.resolve_tfds`)."""
        from transforms import sources  # noqa: PLC0415 - Beam; not needed to read a run back

        return sources.resolve_tfds(self.name, self.split, self.data_dir, download, remote_workers)

    def read_transform(
        self, skip: str | None = None, verbose: bool = False, done_file: str | None = None
    ) -> beam.PTransform:
        """`ReadTfds` of the resolved dataset; `skip` and `done_file` are for folders only
        (a record comes with its image); `verbose`: worker processes show
        TensorFlow's start-up lines, which TFDS imports."""
        del skip, done_file  # a TFDS dataset never holds the job's output
        if self.image_key is None:
            raise ValueError(f"TFDS dataset {self.name!r} is read only once resolved.")
        from transforms import sources  # noqa: PLC0415 - Beam; not needed to read a run back

        return sources.ReadTfds(self, verbose=verbose)


#: What --dataset names: one of the three kinds.
DataSource = SampleSource | FolderSource | TfdsSource


def source_for(dataset: str, split: str, data_dir: str | None = None) -> DataSource:
    """The kind of dataset `--dataset` names, decided once (no listing, no TFDS call).

    Args:
      dataset: the flag: 'sample', a gs:// folder, a local path, or a TFDS name.
      split: --split, kept for a TFDS dataset only.
      data_dir: --data_dir, the TFDS data folder.

    Returns:
      `SampleSource`; a `FolderSource` for gs://, an existing local path (made
      absolute, so the manifest finds it from anywhere: `files.as_opened`) or anything else that is
      a path (holds a separator and is no TFDS name, or is named like an image file:
      `cat.jpg` is no TFDS name's typo); else a `TfdsSource` (not
      resolved yet), builder configs included (`cifar10_corrupted/brightness_1`),
      also for a TFDS name that is a local folder holding that prepared dataset
      (run from a TFDS data folder: read from `data_dir`, else from here).
    """
    if dataset == SAMPLE:
        return SampleSource()
    if dataset.startswith(REMOTE_FOLDER_SCHEMES):
        return FolderSource(dataset)
    if _TFDS_NAME.match(dataset) and holds_prepared_tfds(dataset):
        # Run from a TFDS data folder: the name is the dataset there, not a folder of images.
        return TfdsSource(dataset, split, data_dir or os.path.abspath(os.curdir))
    if (
        os.path.exists(dataset)
        or (os.path.sep in dataset and not _TFDS_NAME.match(dataset))
        or dataset.lower().endswith(IMAGE_SUFFIXES)
    ):
        return FolderSource(os.path.abspath(files.as_opened(dataset)))
    return TfdsSource(dataset, split, data_dir)


def holds_prepared_tfds(folder: str) -> bool:
    """Whether a local folder is a prepared TFDS dataset's (`<version>/dataset_info.json`,
    or `<config>/<version>/dataset_info.json`), as `tfds build --data_dir` leaves them."""
    root = glob.escape(folder)
    return any(
        glob.glob(os.path.join(root, *levels, "dataset_info.json"))
        for levels in (["*"], ["*", "*"])
    )


# A TFDS name, `name[/config][:version]`, as TFDS spells them (snake_case names).
_TFDS_NAME = re.compile(r"[a-z][a-z0-9_]*(/[a-zA-Z0-9_.\-]+)?(:[0-9]+\.[0-9*]+\.[0-9*]+)?\Z")


def source_of_manifest(manifest: Mapping[str, Any]) -> DataSource:
    """The source a run's manifest names: the inverse of `manifest_entry`.

    Only TFDS runs write a split; a folder's root was written absolute (or gs://).
    """
    dataset, split = str(manifest.get("dataset")), manifest.get("split")
    if dataset == SAMPLE:
        return SampleSource()
    if split is not None:
        return TfdsSource(dataset, str(split), version=manifest.get("dataset_version"))
    return FolderSource(dataset)
