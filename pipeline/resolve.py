"""--dataset, --model and the label space, resolved at launch (no image read).

The dataset's kind (`dataset_source`) and what is known of it at launch (`Dataset`: a
local folder listed once, a gs:// one looked up, a TFDS split's metadata); the
model's signature (`resolve_model_spec`) and the settings fitted to it
(`fit_to_model`); and the labels read as the model's classes: a TFDS dataset
of ImageNet WordNet ids mapped into ImageNet's indices, the --label_offset that
fits ImageNet labels, the class names (--class_names, the dataset's own or
ImageNet's), and the warnings where labels and names mean nothing on the model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence

from pipeline import logs
from pipeline.options import DEFAULT_SPLIT, AuditOptions, ConfigError
from pipeline.output_folder import local_output
from pipeline.runner import LocalWorkers, check_credentials
from transforms import labels, manifest, sources, wording
from transforms.config import AttributionConfig
from transforms.datasource import IMAGE_SUFFIXES, REMOTE_FOLDER_SCHEMES
from transforms.files import read_access_fix
from transforms.model.reference import KNOWN_NAMES
from transforms.tf_model import (
    ModelHandoff,
    ModelReference,
    ModelSpec,
    known_outputs,
    resolve_model,
)

__all__ = [
    "Dataset",
    "check_dataset",
    "check_imagenet_offset",
    "check_known_model_classes",
    "check_path_batch_memory",
    "check_labels",
    "check_labels_in_model",
    "class_names_for",
    "dataset_source",
    "fit_to_model",
    "in_model_label_space",
    "label_names_for",
    "resolve_dataset",
    "resolve_model_spec",
    "top_k_fitted",
    "warn_of_other_label_space",
]

_LOG = logging.getLogger(__name__)


def _unnamed(names: Sequence[str]) -> bool:
    """Whether a TFDS dataset's class names are only its indices: TFDS names the classes
    of a `ClassLabel(num_classes=n)` '0' to 'n-1'."""
    return all(name == str(i) for i, name in enumerate(names))


# What a model of one output (a single logit or sigmoid) is, said where its labels are.
_ONE_OUTPUT = "has one output, a score and no classes"


def _first_three(names: Sequence[str]) -> str:
    """'a, b, c, ...': a dataset's classes, as a message shows them."""
    return ", ".join(names[:3]) + (", ..." if names[3:] else "")


def _class_names(spec: ModelSpec, tfds_names: Sequence[str] | None) -> tuple[str, ...] | None:
    """Names of the label space: a dataset's own, else ImageNet's for 1000-class models;
    none of a model of one output, which has no classes (a 1-class dataset's name named it).
    A dataset's classes named by their indices alone have no names of their own: on an
    ImageNet model, '667' named the predictions, where a dataset of 3 such classes gave
    ImageNet's names."""
    imagenet = spec.num_classes == labels.IMAGENET_NUM_CLASSES
    if tfds_names is not None and _unnamed(tfds_names):
        tfds_names = None
    if tfds_names is not None and len(tfds_names) == spec.num_classes and spec.num_outputs != 1:
        if imagenet and tuple(tfds_names) == labels.imagenet_wnids():
            return labels.imagenet_class_names()
        return tuple(tfds_names)
    return labels.imagenet_class_names() if imagenet else None


@dataclasses.dataclass(frozen=True)
class Dataset:
    """--dataset resolved: what the pipeline reads, and what is known of it at launch."""

    source: sources.DataSource
    total: int | None = None  # inputs, when known at launch
    # ImageNet labels: a local folder's by WordNet-id sub-folder, the sample's.
    folder_labels: tuple[int, ...] = ()
    named_labels: tuple[int, ...] = ()  # a local folder's labels by --class_names sub-folder
    ids: frozenset[str] | None = None  # a local folder's image ids, listed at launch

    @property
    def tfds_class_names(self) -> tuple[str, ...] | None:
        return self.source.class_names if isinstance(self.source, sources.TfdsSource) else None


def _check_folder_listable(audit: AuditOptions, root: str) -> None:
    """Refuses a local --dataset folder this user may not list (chmod 000, another
    user's) or enter (chmod 444: its names listed, none of its files opened): its
    error records, after the model loaded and the pipeline ran, were the whole run.
    An unreadable sub-folder is an error record of its own, as before."""
    try:
        with os.scandir(root) as entries:
            first = next(entries, None)
    except OSError as e:
        raise ConfigError(
            f"--dataset {audit.dataset!r} is a folder that cannot be listed "
            f"({e.strerror or e}); give this user permission to read it, or pass another folder."
        ) from e
    try:
        if first is not None:
            first.stat(follow_symlinks=False)
    except OSError as e:
        raise ConfigError(
            f"--dataset {audit.dataset!r} is a folder whose files cannot be opened "
            f"({e.strerror or e}: it lists, but may not be entered); give this user "
            f"permission to enter it (chmod +x), or pass another folder."
        ) from e


def _check_remote_folder(audit: AuditOptions, root: str) -> None:
    """A gs:// folder holds an object (`sources.check_folder_exists`); one the credentials
    may not list (or credentials Google refused) is a bad --dataset, said in one line."""
    try:
        sources.check_folder_exists(root)
    except PermissionError as e:
        raise ConfigError(
            f"--dataset {audit.dataset!r} cannot be listed ({e}); {read_access_fix(root, e)}, "
            "then run the same command again."
        ) from e


def _resolve_folder(audit: AuditOptions, source: sources.FolderSource, dry_run: bool) -> Dataset:
    """A gs:// folder is looked up (one object); a local one is listed once."""
    if source.remote:
        if dry_run:
            _LOG.info(
                "Dry run: not checking that --dataset %s exists (needs GCS access).", source.root
            )
        else:  # anonymous, or offline, Beam's lookup retried for two minutes
            check_credentials(source.root, "--dataset", "read")
            _check_remote_folder(audit, source.root)
        return Dataset(source)
    if not os.path.isdir(source.root):
        raise ConfigError(_no_folder(audit.dataset, source.root))
    _check_folder_listable(audit, source.root)
    files = sources.list_image_folder(
        source.root, skip=local_output(audit.output), labelled=source.labelled
    )
    _check_not_tfds_data(audit, files)
    _LOG.info(
        "%s in %s; the pipeline lists and reads them again.",
        wording.count(len(files), "file"),
        source.root,
    )
    named: list[int] = []
    imagenet: list[int] = []
    for f in files:
        if f.label is not None:
            (named if source.labelled.by_name(f.image_id) else imagenet).append(f.label)
    ids = frozenset(f.image_id for f in files)
    return Dataset(
        source, len(files), folder_labels=tuple(imagenet), named_labels=tuple(named), ids=ids
    )


def _no_folder(dataset: str, root: str) -> str:
    """Why a local --dataset, read as the path `root`, is no folder: a file (an image
    given for its folder), or nothing there (a typo; a relative path is looked for
    from the working folder, which a run from another folder does not show)."""
    if os.path.isfile(root):
        return (
            f"--dataset {dataset!r} is a file, not a folder: --dataset takes a folder, whose "
            "every file is an input; put the images to audit in a folder of their own and "
            "pass that folder."
        )
    read_as = ""
    if not os.path.isabs(dataset):
        read_as = f" (read as {root!r}: a relative path starts at the working folder)"
    return (
        f"--dataset {dataset!r}: no such folder{read_as}; pass an existing folder of images, "
        "a TFDS name (imagenet_a) or 'sample'."
    )


def _check_not_tfds_data(audit: AuditOptions, listed: Sequence[sources.FolderFile]) -> None:
    """Refuses a folder holding a prepared TFDS dataset (a data folder, a dataset's, a
    config's or a version's, as `tfds build` leaves them), naming the flags that read
    it: its record and JSON files were read as images, each an error, after the model
    loaded. A folder holding images too is read as before."""
    if any(item.image_id.lower().endswith(IMAGE_SUFFIXES) for item in listed):
        return
    for item in listed:
        if item.image_id.rsplit("/", 1)[-1] != "dataset_info.json" or item.image_id.count("/") > 3:
            continue
        try:
            with open(item.path, encoding="utf-8") as f:
                info = json.load(f)
            name, config = str(info["name"]), info.get("configName")
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not TFDS's
        data_dir = os.path.dirname(os.path.dirname(os.path.dirname(item.path)))
        data_dir = os.path.dirname(data_dir) if config else data_dir
        spelt = f"{name}/{config}" if config else name
        raise ConfigError(
            f"--dataset {audit.dataset!r} holds a prepared TFDS dataset (its "
            "dataset_info.json and record files), not images; read it as one: "
            f"--dataset {wording.shell_word(spelt)} --data_dir {wording.shell_word(data_dir)}."
        )


def resolve_dataset(
    audit: AuditOptions,
    source: sources.DataSource,
    on_dataflow: bool,
    dry_run: bool,
    class_names: tuple[str, ...] | None = None,
) -> Dataset:
    """Checks the dataset at launch and learns what it can of it (no images read). A
    folder's sub-folders named by `class_names` (--class_names) label their files too
    (`sources.FolderLabels`)."""
    if isinstance(source, sources.SampleSource):
        files = sources.sample_files()
        found = tuple(f.label for f in files if f.label is not None)
        return Dataset(source, total=len(files), folder_labels=found)
    if isinstance(source, sources.FolderSource):
        labelled = sources.FolderLabels(class_names)
        return _resolve_folder(audit, dataclasses.replace(source, labelled=labelled), dry_run)
    logs.import_tensorflow(audit.verbose)  # TFDS imports it: quietly, once
    resolved = source.resolved(_may_download(audit, on_dataflow), remote_workers=on_dataflow)
    return Dataset(resolved, total=resolved.num_examples)


def check_dataset(
    audit: AuditOptions,
    source: sources.DataSource,
    on_dataflow: bool,
    dry_run: bool,
    class_names: tuple[str, ...] | None = None,
) -> Dataset | None:
    """The dataset checked before --output is, nothing written: the sample, an image
    folder (listed) or a prepared TFDS dataset resolved (`resolve_dataset`); one to be
    downloaded as far as its metadata tells (`sources.check_tfds`), None: its download
    and `resolve_dataset` come after --output's check."""
    if isinstance(source, sources.TfdsSource):
        logs.import_tensorflow(audit.verbose)  # TFDS imports it: quietly, once
        if not source.check(_may_download(audit, on_dataflow), remote_workers=on_dataflow):
            return None
    return resolve_dataset(audit, source, on_dataflow, dry_run, class_names)


def _may_download(audit: AuditOptions, on_dataflow: bool) -> bool:
    """Preparing a dataset reads all of it: never on the launcher of a Dataflow job."""
    return not audit.no_download and not on_dataflow


def in_model_label_space(data: Dataset, spec: ModelSpec) -> Dataset:
    """A TFDS dataset whose classes are some of ImageNet's WordNet ids (imagenette),
    on an ImageNet model (1000 classes): its labels read as ImageNet's class indices,
    the model's. A model of the dataset's own classes keeps its labels."""
    source = data.source
    if not isinstance(source, sources.TfdsSource) or spec.num_classes != 1000:
        return data
    mapped = source.in_imagenet_space()
    if mapped is None:
        return data
    label_map, wnids = mapped.label_map or (), source.class_names or ()
    moved = next((i for i, c in enumerate(label_map) if c != i), 0)
    _LOG.info(
        "TFDS dataset %s names its %d classes by ImageNet WordNet id: its labels are read as "
        "ImageNet's class indices, the model's (its label %d, %s, is class %d).",
        source.name,
        len(label_map),
        moved,
        wnids[moved],
        label_map[moved],
    )
    return dataclasses.replace(data, source=mapped)


def check_imagenet_offset(
    audit: AuditOptions,
    spec: ModelSpec,
    data: Dataset,
    names_file: tuple[str, ...] | None = None,
) -> None:
    """A model of 1000 or 1001 outputs is read as ImageNet's 1000 classes, one
    --label_offset fitting them (`labels.imagenet_label_offset`); any other reads every
    label and prediction one class off (the seed notebook's off-by-one). Refused on
    ImageNet labels (the sample's, WordNet-id folders', imagenet_a's), on a known model
    (efficientnet_lite0, inception_v1), and where no names tell other classes: neither
    `names_file` (--class_names) nor a TFDS dataset's own."""
    fits = labels.imagenet_label_offset(spec.num_outputs)
    if fits is None or spec.label_offset == fits:
        return
    imagenet_labels = (
        isinstance(data.source, sources.SampleSource)
        or bool(data.folder_labels)
        or data.tfds_class_names == labels.imagenet_wnids()
    )
    if imagenet_labels:
        raise ConfigError(
            f"--label_offset {spec.label_offset} does not fit --dataset {audit.dataset!r}, "
            f"whose labels are ImageNet's 1000 classes, on --model {audit.model!r} with "
            f"{spec.num_outputs} outputs: the offset that fits is {fits}; leave "
            "--label_offset out."
        )
    known = spec.reference in KNOWN_NAMES
    if not known and (names_file is not None or _class_names(spec, data.tfds_class_names)):
        return
    fix = "leave --label_offset out"
    if not known:
        fix += (
            ", or, for a model of other classes, pass --class_names naming its "
            f"{wording.classes(spec.num_classes)}"
        )
    background = " after a background output" if fits else ""
    off = abs(spec.label_offset - fits)
    raise ConfigError(
        f"--label_offset {spec.label_offset} does not fit --model {audit.model!r} with "
        f"{spec.num_outputs} outputs, ImageNet's 1000 classes{background}: the offset that "
        f"fits is {fits}, and {spec.label_offset} would read every prediction "
        f"{'one class' if off == 1 else wording.classes(off)} off; {fix}."
    )


def class_names_for(
    audit: AuditOptions, spec: ModelSpec, data: Dataset, from_file: tuple[str, ...] | None
) -> tuple[str, ...] | None:
    """The names of the label space: --class_names, checked against the model, else
    the dataset's own or ImageNet's (`_class_names`)."""
    if from_file is not None:
        _check_names_count(audit, from_file, spec.num_outputs, spec.label_offset)
        return from_file
    return _class_names(spec, data.tfds_class_names)


def _check_names_count(
    audit: AuditOptions, from_file: tuple[str, ...], num_outputs: int, label_offset: int
) -> None:
    """Refuses --class_names whose names are not one per class of a model of
    `num_outputs` outputs, the first class at `label_offset`."""
    num_classes = num_outputs - label_offset
    if len(from_file) == num_classes:
        return
    fix = _comma_separated(from_file, num_classes) or "give one name per class"
    if label_offset and len(from_file) == num_outputs:
        # TF Hub's ImageNetLabels.txt: 'background' first, then the 1000 classes.
        first = "line" if label_offset == 1 else f"{label_offset} lines"
        fix = (
            f"it names every output, the {label_offset} before the classes too "
            f"(first {from_file[0]!r}): drop its first {first}"
        )
    raise ConfigError(
        f"--class_names {audit.class_names!r} holds {wording.count(len(from_file), 'name')} "
        f"but --model {audit.model!r} has {wording.classes(num_classes)} ({num_outputs} "
        f"outputs, --label_offset {label_offset}); {fix}."
    )


def check_known_model_classes(
    audit: AuditOptions,
    config: AttributionConfig,
    model: ModelReference,
    names_file: tuple[str, ...] | None,
) -> None:
    """--top_k and --class_names (`names_file`) against the classes of a known model
    (`known_outputs`: its table tells them, nothing loaded), before --dataset is listed
    and --output checked. Any other model's classes are known only once its files are
    read or it is loaded (`resolve_model_spec`), which waits until --output's check has
    passed, so that a folder holding a run is refused before a load of seconds (a TF
    Hub download: minutes); `fit_to_model` and `class_names_for` check them then."""
    known = known_outputs(model, audit.label_offset)
    if known is None:
        return
    num_outputs, label_offset = known
    _check_top_k(audit, config, num_outputs - label_offset)
    if names_file is not None:
        _check_names_count(audit, names_file, num_outputs, label_offset)


def _comma_separated(names: tuple[str, ...], classes: int) -> str | None:
    """What to do about a --class_names file whose lines hold the `classes` names
    separated by commas ('apple, pear, plum': one name, of a list pasted as text), or
    None where they do not."""
    parts = [part.strip() for name in names for part in name.split(",")]
    if len(parts) != classes or len(parts) == len(names) or not all(parts):
        return None
    where = "its one line holds" if len(names) == 1 else f"its {len(names)} lines hold"
    example = ", ".join(json.dumps(part, ensure_ascii=False) for part in parts[:2])
    return (
        f"{where} {classes} comma-separated names: give one name per line, or a JSON list "
        f"([{example}, ...])"
    )


def label_names_for(
    spec: ModelSpec, data: Dataset, class_names: tuple[str, ...] | None
) -> tuple[str, ...] | None:
    """The names of the labels (label_name): the model's class names, which the labels
    are read as, but on a model of one output, which has no classes, a TFDS dataset's
    own (cats_vs_dogs' 'cat' and 'dog'; () where they are only its indices, or it has
    none: each label's index)."""
    if spec.num_outputs != 1:
        return class_names
    own = data.tfds_class_names
    return () if own is None or _unnamed(own) else tuple(own)


def warn_of_other_label_space(
    data: Dataset,
    spec: ModelSpec,
    class_names: Sequence[str] | None,
    names_file: Sequence[str] | None = None,
) -> None:
    """A TFDS dataset with another number of classes than the model, or ImageNet labels
    (WordNet-id folders, the sample) on a model of other than 1000 classes: the labels
    are read as the model's classes, and named by the model's names, not their own;
    and a `names_file` (--class_names) naming a TFDS dataset's classes otherwise."""
    _warn_of_other_names(data, names_file)
    if data.folder_labels and spec.num_classes != 1000:
        _warn_of_imagenet_labels(data, spec, class_names)
    own = data.tfds_class_names
    # One output is no class: a dataset of one class is no more the model's than of two.
    if own is None or (len(own) == spec.num_classes and spec.num_outputs != 1):
        return
    shown = _first_three(own)
    if spec.num_outputs == 1:
        held = f"TFDS dataset {data.source.name} has {wording.classes(len(own))} ({shown})"
        _warn_of_one_output(held, spec.reference, "the dataset's")
        return
    named = f" ({class_names[0]!r}, not {own[0]!r})" if class_names else ""
    _LOG.warning(
        "TFDS dataset %s has %d classes (%s) and --model %s has %s: its labels are read as "
        "the model's classes 0 to %d, and label_name names them as the model does%s. Unless "
        "they are those classes, label, label_name and --target label mean nothing here.",
        data.source.name,
        len(own),
        shown,
        spec.reference,
        wording.classes(spec.num_classes),
        len(own) - 1,
        named,
    )


def _warn_of_imagenet_labels(
    data: Dataset, spec: ModelSpec, class_names: Sequence[str] | None
) -> None:
    """ImageNet labels (WordNet-id folders, the sample) on a model of other than 1000
    classes, in one warning: what the labels are read as, those the model can never
    predict, and how a folder labels its images by the model's own classes instead. A
    model of one output (a single logit or sigmoid) scores no classes at all, which is
    said instead of "Unless the model's classes are ImageNet's first 1"."""
    sample = isinstance(data.source, sources.SampleSource)
    kind = "the sample's own" if sample else "WordNet-id folders"
    if spec.num_outputs == 1:
        held = f"The images of {data.source.name} are labelled by ImageNet class ({kind})"
        _warn_of_one_output(held, spec.reference, "ImageNet's")
        return
    images = len(data.folder_labels)
    named, fix = "", "pass --class_names and name each sub-folder as its class (cat/, dog/)"
    if class_names:
        first, wnid = class_names[0], labels.imagenet_wnids()[0]
        named = f", and label_name names them as the model does ({first!r} for ImageNet's {wnid})"
        fix = f"name each sub-folder as its class is named in --class_names ({first}/ for class 0)"
    _LOG.warning(
        "%s of %s %s labelled by ImageNet class (%s) and --model %s has %s, not ImageNet's "
        "1000: label holds ImageNet's class indices, read as the model's classes of those "
        "indices%s.%s Unless %s, label, label_name and --target label mean nothing here%s.",
        wording.count(images, "image"),
        data.source.name,
        "is" if images == 1 else "are",
        kind,
        spec.reference,
        wording.classes(spec.num_classes),
        named,
        _past_the_model(data.folder_labels, spec.num_classes),
        _imagenet_first(spec.num_classes),
        "" if sample else f"; to label the images by the model's own classes, {fix}",
    )


def _imagenet_first(num_classes: int) -> str:
    """When ImageNet's labels mean something on a model of `num_classes` (not 1000):
    its first classes are ImageNet's, in ImageNet's order."""
    if num_classes > labels.IMAGENET_NUM_CLASSES:  # ImageNet-21k's, say
        return "the model's first 1000 classes are ImageNet's, in its order"
    return f"the model's classes are ImageNet's first {num_classes}"


def _past_the_model(folder_labels: Sequence[int], num_classes: int) -> str:
    """' 2 of them have a label past the model's last class (n02123045 = 281): ...', or
    '' where the model has every label's class."""
    outside = sorted({label for label in folder_labels if label >= num_classes})
    if not outside:
        return ""
    wnids = labels.imagenet_wnids()
    shown = ", ".join(f"{wnids[c]} = {c}" for c in outside[:3]) + (", ..." if outside[3:] else "")
    images = sum(1 for label in folder_labels if label >= num_classes)
    if len(folder_labels) == 1:
        whose = "Its label is"
    elif images == len(folder_labels):
        whose = "All of them have a label"
    else:
        whose = f"{images} of them {'has' if images == 1 else 'have'} a label"
    one = images == 1
    return (
        f" {whose} past the model's last class ({shown}): {'it' if one else 'they'} can "
        "never be predicted, and --target label makes "
        f"{'that image an error' if one else 'those images errors'}."
    )


def _warn_of_one_output(labelled: str, model: str, whose: str) -> None:
    """A dataset's labels (`labelled`: what they are, `whose` classes) on a model of one
    output (a single logit or sigmoid): it scores no classes to compare them with."""
    _LOG.warning(
        "%s and --model %s %s to compare them with: label and label_name hold %s classes, "
        "and they, --target label and the report's accuracy mean nothing here.",
        labelled,
        model,
        _ONE_OUTPUT,
        whose,
    )


def _same_name(a: str, b: str) -> bool:
    return a.casefold().replace("_", " ").strip() == b.casefold().replace("_", " ").strip()


def _warn_of_other_names(data: Dataset, class_names: Sequence[str] | None) -> None:
    """--class_names that name a TFDS dataset's classes otherwise (other names, or its
    names in another order): label_name names each image's label by the file, so an
    image of the dataset's 'a' was labelled 'b', silently. Classes named by WordNet id
    (imagenet_a, imagenette) or by their indices alone have no names of their own to
    compare."""
    own = data.tfds_class_names
    if own is None or class_names is None or len(class_names) != len(own) or _unnamed(own):
        return
    if all(labels.wnid_to_label(name) is not None for name in own):
        return
    other = [
        i for i, (a, b) in enumerate(zip(class_names, own, strict=True)) if not _same_name(a, b)
    ]
    if not other:
        return
    first = other[0]
    _LOG.warning(
        "--class_names names class %d %r where TFDS dataset %s names its label %d %r%s: "
        "label_name holds the names of --class_names. Unless the model's classes are the "
        "dataset's, in its order, label, label_name and --target label mean nothing here.",
        first,
        class_names[first],
        data.source.name,
        first,
        own[first],
        f" (and {len(other) - 1} more differ)" if other[1:] else "",
    )


def resolve_model_spec(
    audit: AuditOptions,
    model: ModelReference,
    data: Dataset,
    input_range: tuple[float, float] | None,
    handoff: ModelHandoff | None,
) -> ModelSpec:
    """Learns the model's signature (quietly importing TensorFlow). With a `handoff`
    (a local job) the model is loaded and left there for the worker; without, its
    signature is read without loading when known."""
    num_classes = len(data.tfds_class_names) if data.tfds_class_names else None
    logs.import_tensorflow(audit.verbose)
    spec = resolve_model(
        model,
        image_size=audit.image_size,
        input_range=input_range,
        label_offset=audit.label_offset,
        num_dataset_classes=num_classes,
        load=handoff is not None,
        handoff=handoff,
        jit_compile=True if audit.jit_compile == "on" else None,  # auto: the worker's device
    )
    return spec


def fit_to_model(
    audit: AuditOptions, config: AttributionConfig, spec: ModelSpec
) -> AttributionConfig:
    """--top_k and --score checked against the model's classes (--top_k's default
    shrinks to a model with fewer classes), --faithfulness_steps against its pixels."""
    _check_top_k(audit, config, spec.num_classes)
    config = top_k_fitted(config, spec.num_classes)
    if config.score == "softmax" and spec.num_outputs == 1:
        raise ConfigError(
            "--score softmax of a model with 1 output is 1 everywhere: every attribution "
            "would be 0. Use --score raw."
        )
    if config.faithfulness != "none" and spec.num_outputs == 1:
        # A softmax over one output is 1 for every image: each curve is 1 throughout,
        # every AUC 1, and every row would tie with its control ("no better than chance").
        _LOG.warning(
            "Model has 1 output: the faithfulness checks follow the target's softmax "
            "probability, 1 for every image, so they measure nothing; they are off "
            "(--faithfulness none, the columns null)."
        )
        config = dataclasses.replace(config, faithfulness="none")
    height, width = spec.image_shape
    pixels = height * width
    if config.faithfulness != "none" and config.faithfulness_steps > pixels:
        raise ConfigError(
            f"--faithfulness_steps {config.faithfulness_steps} exceeds the "
            f"{height}x{width} model input's {pixels} pixels (a step "
            f"switches at least one pixel); pass --faithfulness_steps {pixels} or less."
        )
    return config


def top_k_fitted(config: AttributionConfig, num_classes: int) -> AttributionConfig:
    """`config` with its --top_k shrunk to `num_classes`, a model's classes, where they
    are fewer: the default's fate (a --top_k given past them is refused, `_check_top_k`)."""
    if config.top_k > num_classes:
        return dataclasses.replace(config, top_k=num_classes)
    return config


def _check_top_k(audit: AuditOptions, config: AttributionConfig, num_classes: int) -> None:
    """Refuses a --top_k given past the model's `num_classes` (its default shrinks)."""
    if audit.top_k is not None and config.top_k > num_classes:
        raise ConfigError(
            f"--top_k {config.top_k} exceeds the model's {wording.classes(num_classes)}; "
            f"pass --top_k {num_classes} or less."
        )


# Bytes a path point of a gradient call holds, per value of the model's input: the
# bundled EfficientNet-Lite0's activations for its gradient, measured (peak memory of
# the sample's runs with calls of 8, 43 and 128 points at 224x224: 27 MiB a point, 28
# MB); any model's point holds at least its input, gradient and contribution (float32).
_BUNDLED_BYTES_PER_VALUE = 186
_LEAST_BYTES_PER_VALUE = 12
# Bytes a process holding the model holds before any call: TensorFlow's runtime and
# Beam's, and the model. Measured as the resident memory of a fresh process after
# `resolve_model` (the launcher's load and call on one black image): 0.93 GB of the
# bundled model, 0.76 GB after importing TensorFlow and Beam alone (the least of any
# model's process; 0.82 GB with a small tf_keras model loaded). The sample's runs
# (8 images, --faithfulness none) peaked above the need these give, summed over a
# run's processes: one worker 1.88 and 3.66 GB at --path_batch_size 8 and 64 (need
# 1.12 and 2.69), two threads 2.20 and 4.60 (1.35 and 4.48), two worker processes
# 3.99 and 6.38 (3.15 and 6.28): no value that fits is refused.
_BUNDLED_PROCESS_BYTES = 900_000_000
_LEAST_PROCESS_BYTES = 700_000_000


@dataclasses.dataclass(frozen=True)
class _MemoryNeed:
    """The memory a local job's gradient calls need: `calls` live at once, each of
    `points` path points of `per_point` bytes, beside the bytes `held` by the processes
    holding the model before any call."""

    points: int
    per_point: int
    calls: int
    held: int

    @property
    def total(self) -> int:
        return self.held + self.calls * self.points * self.per_point


def _memory_needed(
    config: AttributionConfig,
    spec: ModelSpec,
    batch_size: int,
    workers: LocalWorkers,
    images: int | None,
) -> _MemoryNeed:
    """What `check_path_batch_memory` holds a job to: a call holds at most the points
    of a round of its batch's paths, and no more calls are live at once than workers or
    `images` (when known: each call is of one image at least)."""
    bundled = spec.kind == "bundled"
    height, width = spec.image_shape
    per_value = _BUNDLED_BYTES_PER_VALUE if bundled else _LEAST_BYTES_PER_VALUE
    rows = config.top_k if config.target == "top_k" else 1
    per_path = config.steps if config.tolerance == 0 else config.max_steps
    return _MemoryNeed(
        points=min(config.path_batch_size, batch_size * rows * len(config.baselines) * per_path),
        per_point=height * width * 3 * per_value,
        calls=max(1, min(workers.calls, images or workers.calls)),
        held=workers.processes * (_BUNDLED_PROCESS_BYTES if bundled else _LEAST_PROCESS_BYTES),
    )


def check_path_batch_memory(
    config: AttributionConfig,
    spec: ModelSpec,
    batch_size: int,
    workers: LocalWorkers | None,
    images: int | None = None,
) -> None:
    """Refuses a --path_batch_size whose gradient calls cannot fit in this machine's
    memory where the job runs here (`workers`, `runner.local_workers`: None where it
    runs elsewhere): it failed while running, out of memory, or was killed.
    Its need (`_memory_needed`): the processes holding the model, and the calls live at
    once, so a larger value than a call's points is refused only when those do not fit
    either. Other models than the bundled one are held to the least any model's
    process and point need: values that fit pass."""
    memory = _machine_memory()
    if config.path_batch_size is None or memory is None or workers is None:
        return
    need = _memory_needed(config, spec, batch_size, workers, images)
    if need.total <= memory:
        return
    height, width = spec.image_shape
    at_once = f" in each of {need.calls} workers at once" if need.calls > 1 else ""
    processes = wording.count(workers.processes, "process", "processes")
    fits = max(0, memory - need.held) // 2 // (need.per_point * need.calls)  # half the room
    fix = f"--path_batch_size {fits} or less, or auto" if fits else "fewer --direct_num_workers"
    raise ConfigError(
        f"--path_batch_size {config.path_batch_size}: gradient calls of {need.points} path "
        f"points{at_once} need about {(need.total - need.held) / 1e9:.1f} GB "
        f"({need.per_point / 1e6:.1f} MB a point at the model's {height}x{width} input), "
        f"and {processes} holding the model about {need.held / 1e9:.1f} GB before any "
        f"call: more than this machine's {memory / 1e9:.1f} GB of memory; pass {fix}."
    )


# Where a container's memory limit is read: cgroup v2's, and v1's (no limit: about 2**63).
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def _machine_memory(limits: Sequence[str] = _CGROUP_LIMITS) -> int | None:
    """Bytes of memory this process may use: the machine's, or its container's limit
    (cgroup v2 or v1, files `limits`) where lower; None where unknown."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX
        return None
    for path in limits:
        try:
            with open(path, encoding="ascii") as f:
                limit = f.read().strip()
        except OSError:
            continue
        if limit.isdigit():  # v2's "max": none
            memory = min(memory, int(limit))
    return memory


def dataset_source(audit: AuditOptions) -> sources.DataSource:
    """--dataset's kind, refusing an empty name and --output being the dataset folder
    (its results would be read as images); warns that --split applies to TFDS only."""
    if not audit.dataset.strip():
        raise ConfigError(
            "--dataset is empty; pass a TFDS name (imagenet_a), a folder of images or 'sample'."
        )
    source = sources.source_for(audit.dataset, audit.split, audit.data_dir)
    if isinstance(source, sources.FolderSource) and _same_folder(source.root, audit.output):
        raise ConfigError(
            f"--output {audit.output!r} is the --dataset folder: its results would be read "
            "as images. Choose another folder (a sub-folder of it, such as "
            f"{audit.output.rstrip('/')}/audit, is left out of the inputs)."
        )
    if isinstance(source, sources.FolderSource):
        _check_not_a_run(audit.dataset, source.root)
        _warn_of_files_in_output(audit.output, source.root)
    if isinstance(source, sources.SampleSource) and os.path.isdir(audit.dataset):
        _LOG.warning(
            "--dataset sample is the bundled sample; the folder 'sample' here is not read "
            "(pass --dataset ./sample to audit it)."
        )
    if not isinstance(source, sources.TfdsSource):
        _warn_tfds_only_flags(audit)
    return source


def _check_not_a_run(dataset: str, root: str) -> None:
    """A local --dataset that is a run's --output (a mix-up with the report's --input),
    or lies in a folder such a run wrote (its results/, errors/, sanity/, or a killed
    run's checkpoints in .tmp/): its Parquet and JSON files would each be an error
    record, not an image. A folder of the user's inside a run's folder is read."""
    if root.startswith(REMOTE_FOLDER_SCHEMES):
        return
    if manifest.is_run(root):
        raise ConfigError(
            f"--dataset {dataset!r} is the --output folder of a run of this job (its "
            "manifest.json): its files are results, not images. Pass a folder of images"
            + _audited(root)
        )
    found = _run_holding(root)
    if found is not None:
        run, entry = found
        raise ConfigError(
            f"--dataset {dataset!r} lies in {entry}/ of the run in {run!r}: "
            f"{_RUN_FOLDERS[entry]}. Pass a folder of images outside it" + _audited(run)
        )


def _audited(run: str) -> str:
    """The end of a refusal's sentence: the --dataset the run in `run` audited."""
    read = manifest.read_manifest(run).get("dataset")
    return f" (that run audited --dataset {read!r})." if isinstance(read, str) else "."


#: The folders a run writes in its --output, and what they hold instead of images.
_RUN_FOLDERS = {
    manifest.RESULTS_DIR: "its files are that run's result rows, not images",
    manifest.ERRORS_DIR: "its files are that run's error records, not images",
    manifest.SANITY_DIR: "the sanity check writes its files there, and an --overwrite or "
    "--resume of the run deletes them",
    manifest.TEMP_DIR: "that run's partial files and checkpoints, which the next run there deletes",
}


def _run_holding(path: str) -> tuple[str, str] | None:
    """The run whose own folder (`_RUN_FOLDERS`) `path` is or lies in, as given or
    through symbolic links, and that folder's name; None: no such run."""
    for resolved in dict.fromkeys((os.path.abspath(path), os.path.realpath(path))):
        folder = resolved
        while os.path.dirname(folder) != folder:
            folder, below = os.path.dirname(folder), os.path.basename(folder)
            if below in _RUN_FOLDERS and manifest.is_run(folder):
                return folder, below
    return None


# What a run writes in its --output: no file of the user's.
_RUN_ENTRIES = frozenset(
    (manifest.RESULTS_DIR, manifest.ERRORS_DIR, manifest.SANITY_DIR)
    + (manifest.MANIFEST_FILE, manifest.REPORT_FILE)
)


def _warn_of_files_in_output(output: str, root: str) -> None:
    """A local --output inside the image folder is left out of the inputs, with the
    files already in it (a class folder's images): said, not dropped silently."""
    if not output or root.startswith(REMOTE_FOLDER_SCHEMES) or not os.path.isdir(output):
        return
    if not any(_below(path(output), path(root)) for path in (os.path.abspath, os.path.realpath)):
        return  # the listing skips --output by its real path, reached through links too
    found = []
    for folder, subfolders, names in os.walk(output):
        top = folder == output
        subfolders[:] = sorted(
            d for d in subfolders if not d.startswith(".") and not (top and d in _RUN_ENTRIES)
        )
        found += sorted(
            os.path.relpath(os.path.join(folder, name), output)
            for name in names
            if not name.startswith(".") and not (top and name in _RUN_ENTRIES)
        )
    if found:
        shown = ", ".join(found[:3]) + (f", ... ({len(found) - 3} more)" if len(found) > 3 else "")
        _LOG.warning(
            "--output %r lies inside --dataset, whose files there are not inputs: the %s "
            "it holds (%s) %s left out of this run. To audit them, choose an --output "
            "outside --dataset (or a new sub-folder of it).",
            output,
            wording.count(len(found), "file"),
            shown,
            "is" if len(found) == 1 else "are",
        )


def _below(path: str, folder: str) -> bool:
    """Whether `path` lies strictly below `folder` (both absolute) where the listing
    reaches it: in no hidden folder (`.cache/`), whose files are never inputs."""
    if path == folder or os.path.commonpath([path, folder]) != folder:
        return False
    return not any(part.startswith(".") for part in os.path.relpath(path, folder).split(os.sep))


def _warn_tfds_only_flags(audit: AuditOptions) -> None:
    """--split, --data_dir and --no_download given with a folder or the sample."""
    given = [
        flag
        for flag, is_given in (
            (f"--split {audit.split!r}", audit.split != DEFAULT_SPLIT),
            ("--data_dir", audit.data_dir is not None),
            ("--no_download", audit.no_download),
        )
        if is_given
    ]
    for flag in given:
        _LOG.warning("%s applies to TFDS datasets only; it is ignored here.", flag)


def _same_folder(a: str, b: str) -> bool:
    if a.startswith(REMOTE_FOLDER_SCHEMES) or b.startswith(REMOTE_FOLDER_SCHEMES):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def check_labels(config: AttributionConfig, data: Dataset) -> None:
    """--target label on a local folder without one labelled image (by WordNet id or
    --class_names sub-folder), or a TFDS dataset without a label feature: refused at
    launch (every image would be an error)."""
    source = data.source
    if config.target == "label" and isinstance(source, sources.TfdsSource):
        if source.image_key is not None and source.label_key is None:
            raise ConfigError(
                f"--target label: TFDS dataset {source.name!r} has no label feature (a "
                "ClassLabel). Use --target predicted or top_k."
            )
    folder = isinstance(source, sources.FolderSource) and not source.remote
    labelled = data.folder_labels or data.named_labels
    if config.target == "label" and folder and data.total and not labelled:
        raise ConfigError(
            f"--target label: none of the {data.total} files of {data.source.root!r} has a "
            f"label (labels come from {_label_folders(source.labelled.class_names)}). Use "
            "--target predicted or top_k, or put the images in such sub-folders."
        )


def _label_folders(class_names: Sequence[str] | None) -> str:
    """Which sub-folders label a folder's files (`sources.FolderLabels`), as said where
    none does: with no --class_names, that a model of one's own classes can name them."""
    if class_names:
        return (
            f"top-level sub-folders named as in --class_names ({_first_three(class_names)}) "
            "or by ImageNet WordNet id, such as n02123045/"
        )
    return (
        "top-level sub-folders named by ImageNet WordNet id, such as n02123045/; with "
        "--class_names, also from sub-folders named by class, such as cat/"
    )


def check_labels_in_model(
    audit: AuditOptions, config: AttributionConfig, spec: ModelSpec, data: Dataset
) -> None:
    """--target label where no label known at launch (WordNet-id sub-folders, the
    sample) is one of the model's classes: every image would be an error; and on a
    model of one output, which has no classes, any labels known at launch."""
    if config.target != "label":
        return
    if spec.num_outputs == 1:
        _refuse_labels_of_one_output(audit, data)
        return
    if data.named_labels or not data.folder_labels:
        return
    if any(label < spec.num_classes for label in data.folder_labels):
        return
    raise ConfigError(
        f"--target label: no image of {audit.dataset!r} has a label among --model's "
        f"{wording.classes(spec.num_classes)} (its labels are ImageNet classes: "
        f"{_shown_labels(data.folder_labels)}), so every image would be an error. Use "
        "--target predicted or top_k, or a model of those classes."
    )


def _refuse_labels_of_one_output(audit: AuditOptions, data: Dataset) -> None:
    """--target label on a model of one output (a single logit or sigmoid), which has no
    classes: the labels known at launch, a TFDS dataset's classes or ImageNet's (WordNet-id
    folders, the sample; its tench, 0, is no output of it either), are none of its outputs."""
    own = data.tfds_class_names
    if own is not None:
        held = f"the dataset's {wording.classes(len(own))} ({_first_three(own)})"
    elif data.folder_labels:
        held = f"ImageNet classes ({_shown_labels(data.folder_labels)})"
    elif data.named_labels:
        held = "the --class_names classes of their sub-folders"
    else:
        return
    raise ConfigError(
        f"--target label: --model {audit.model!r} {_ONE_OUTPUT}, and the labels of "
        f"{audit.dataset!r} are {held}, not outputs of the model. Use --target predicted, "
        "which attributes that output."
    )


def _shown_labels(labels_: Sequence[int]) -> str:
    """'0, 281, 967, ...': a folder's or the sample's distinct labels, as messages show them."""
    return _first_three([str(label) for label in sorted(set(labels_))])
