"""The job: read images, attribute them with IG inside RunInference, write Parquet.

`run(argv)` validates every flag and resolves the dataset and the model before
the pipeline starts, so bad configuration fails at once with a clear message.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import platform
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from pipeline.options import AuditOptions, attribution_config, parse_input_range
from transforms import labels, sources
from transforms.attribution import ERRORS_TAG, IGModelHandler, ImageOutcome, Preprocess
from transforms.config import AttributionConfig
from transforms.schema import results_schema
from transforms.sinks import WriteErrors, WriteManifest, WriteResults, read_manifest
from transforms.tf_model import ModelSpec, resolve_model

__all__ = ["AuditJob", "build_pipeline", "prepare", "run"]

_LOG = logging.getLogger(__name__)
_DEFAULT_BATCH_SIZE = 8
_PACKAGES = ("apache-beam", "tensorflow", "tensorflow-datasets", "tensorflow-hub", "keras",
             "numpy", "pyarrow", "pillow", "ig-audit")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class AuditJob:
    """Everything resolved at launch that the pipeline graph is built from."""

    output: str
    dataset: str
    split: str | None
    files: tuple[sources.FolderFile, ...] | None
    tfds: sources.TfdsSource | None
    spec: ModelSpec
    config: AttributionConfig
    class_names: tuple[str, ...] | None
    batch_size: int
    jit_compile: bool | None
    start_time: str

    def manifest_base(self) -> dict[str, Any]:
        versions = {"python": platform.python_version()}
        for name in _PACKAGES:
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = None
        return {
            "dataset": self.dataset,
            "split": self.split,
            "model": dataclasses.asdict(self.spec),
            "config": dataclasses.asdict(self.config),
            "batch_size": self.batch_size,
            "output": self.output,
            "versions": versions,
            "start_time": self.start_time,
            "command": sys.argv,
        }


def _class_names(spec: ModelSpec, tfds_names: Sequence[str] | None) -> tuple[str, ...] | None:
    """Names of the label space: a dataset's own, else ImageNet's for 1000-class models."""
    imagenet = spec.num_classes == labels.IMAGENET_NUM_CLASSES
    if tfds_names is not None and len(tfds_names) == spec.num_classes:
        if imagenet and tuple(tfds_names) == labels.imagenet_wnids():
            return labels.imagenet_class_names()
        return tuple(tfds_names)
    return labels.imagenet_class_names() if imagenet else None


def _prepare_output(output: str, overwrite: bool) -> None:
    """Refuses to mix two runs: an earlier run's output is kept unless --overwrite."""
    parts = [FileSystems.join(output, name) for name in ("results", "errors", "manifest.json")]
    existing = [p for p in parts if FileSystems.exists(p)]
    if existing and not overwrite:
        raise ValueError(
            f"--output {output!r} already holds a run ({', '.join(os.path.basename(p) for p in existing)}). "
            "Pass --overwrite to replace it, or choose another folder."
        )
    if existing:
        FileSystems.delete(existing)
    try:
        FileSystems.mkdirs(output)
    except OSError:
        pass  # exists already
    probe = FileSystems.join(output, ".write_probe")
    try:
        with FileSystems.create(probe) as f:
            f.write(b"ok")
        FileSystems.delete([probe])
    except Exception as e:
        raise ValueError(f"--output {output!r} is not writable: {e}") from e


def prepare(argv: Sequence[str] | None = None) -> tuple[AuditJob, PipelineOptions]:
    """Parses and validates flags, resolves dataset and model. No pipeline yet."""
    options = PipelineOptions(argv)
    audit = options.view_as(AuditOptions)
    if not audit.output:
        raise ValueError(
            "--output is required: the folder for results/, errors/ and manifest.json."
        )
    config = attribution_config(audit)
    input_range = parse_input_range(audit.input_range)
    batch_size = audit.batch_size or _DEFAULT_BATCH_SIZE
    if batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {batch_size}.")
    if audit.image_size is not None and audit.image_size < 8:
        raise ValueError(f"--image_size must be >= 8, got {audit.image_size}.")

    files, tfds_source, split = None, None, None
    dataset = audit.dataset
    if dataset == "sample":
        files = tuple(sources.sample_files())
    elif dataset.startswith("gs://") or os.path.isdir(dataset):
        files = tuple(sources.list_image_folder(dataset))
    elif os.path.sep in dataset or os.path.exists(dataset):
        raise ValueError(f"--dataset {dataset!r} is not a folder of images.")
    else:
        split = audit.split
        tfds_source = sources.resolve_tfds(dataset, split, audit.data_dir, not audit.no_download)

    num_classes = len(tfds_source.class_names) if tfds_source and tfds_source.class_names else None
    spec = resolve_model(
        audit.model,
        image_size=audit.image_size,
        input_range=input_range,
        label_offset=audit.label_offset,
        num_dataset_classes=num_classes,
    )
    if config.top_k > spec.num_classes:
        raise ValueError(f"--top_k {config.top_k} exceeds the model's {spec.num_classes} classes.")
    _prepare_output(audit.output, audit.overwrite)
    jit = {"auto": None, "on": True, "off": False}[audit.jit_compile]
    job = AuditJob(
        output=audit.output,
        dataset=dataset,
        split=split,
        files=files,
        tfds=tfds_source,
        spec=spec,
        config=config,
        class_names=_class_names(spec, tfds_source.class_names if tfds_source else None),
        batch_size=batch_size,
        jit_compile=jit,
        start_time=datetime.datetime.now(datetime.UTC).isoformat(),
    )
    return job, options


def _split_outcomes(outcome: ImageOutcome):
    yield from outcome.rows
    for error in outcome.errors:
        yield beam.pvalue.TaggedOutput(ERRORS_TAG, error)


def _images_with(outcome: ImageOutcome) -> list[tuple[str, int]]:
    if outcome.errors:
        return [("images_with_errors", 1)]
    return [("images_with_rows", 1)] if outcome.rows else []


def build_pipeline(p: beam.Pipeline, job: AuditJob) -> None:
    """Adds the job's transforms to `p`."""
    if job.files is not None:
        raw = p | "ReadImages" >> sources.ReadImageFiles(job.files)
    else:
        raw = p | "ReadImages" >> sources.ReadTfds(job.tfds)
    prepared = raw | "Preprocess" >> beam.ParDo(
        Preprocess(job.spec.image_size, job.spec.input_range)
    ).with_outputs(ERRORS_TAG, main="images")
    handler = IGModelHandler(
        job.spec, job.config, job.class_names, batch_size=job.batch_size,
        jit_compile=job.jit_compile,
    )  # fmt: skip
    outcomes = prepared.images | "Attribute" >> RunInference(handler)
    split = outcomes | "SplitOutcomes" >> beam.FlatMap(_split_outcomes).with_outputs(
        ERRORS_TAG, main="rows"
    )
    errors = (prepared[ERRORS_TAG], split[ERRORS_TAG]) | "AllErrors" >> beam.Flatten()
    _ = split.rows | "WriteResults" >> WriteResults(
        job.output, results_schema(job.config.attribution_dtype)
    )
    _ = errors | "WriteErrors" >> WriteErrors(job.output)
    counts = (
        raw | "CountInputs" >> beam.Map(lambda _: ("inputs", 1)),
        prepared[ERRORS_TAG]
        | "CountDecodeFailures" >> beam.Map(lambda _: ("images_with_errors", 1)),
        outcomes | "CountImages" >> beam.FlatMap(_images_with),
        split.rows | "CountRows" >> beam.Map(lambda _: ("rows", 1)),
        errors | "CountErrors" >> beam.Map(lambda _: ("errors", 1)),
    ) | "FlattenCounts" >> beam.Flatten()
    _ = counts | "Manifest" >> WriteManifest(job.output, job.manifest_base())


def run(argv: Sequence[str] | None = None, save_main_session: bool = True) -> dict[str, Any]:
    """Runs the job to completion and returns its manifest.

    Raises:
      ValueError: bad flags, dataset or model (before any work).
      RuntimeError: the run finished without accounting for every input.
    """
    job, options = prepare(argv)
    options.view_as(SetupOptions).save_main_session = save_main_session
    _LOG.info("Auditing %s with %s into %s.", job.dataset, job.spec.reference, job.output)
    with beam.Pipeline(options=options) as p:
        build_pipeline(p, job)
    manifest = read_manifest(job.output)
    if not manifest["all_inputs_accounted_for"]:
        raise RuntimeError(f"Not every input is accounted for: {manifest['counts']}.")
    return manifest
