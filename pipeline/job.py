"""The job as resolved at launch (`AuditJob`): what the pipeline graph is built
from, and the settings its manifest records (`AuditJob.manifest_base`).

`pipeline.main` resolves it (`prepare`) and runs it; the modules that ready its
output folder, resume an earlier run and stop it take it as it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
from importlib import metadata
from typing import Any

from pipeline import output_lock
from transforms import datasource, sources
from transforms.config import AttributionConfig
from transforms.manifest import FAITHFULNESS_PIXELS, FAITHFULNESS_TIES, SHARD_PREFIX
from transforms.tf_model import ModelHandoff, ModelSpec

__all__ = ["AuditJob", "config_entry"]


_PACKAGES = (
    "apache-beam",
    "tensorflow",
    "tensorflow-datasets",
    "tensorflow-hub",
    "keras",
    "numpy",
    "pyarrow",
    "pillow",
    "ig-audit",
)


def config_entry(config: AttributionConfig) -> dict[str, Any]:
    """The manifest's "config" of `config`: its settings, and what follows from them or
    from this version of the job."""
    return {
        **dataclasses.asdict(config),
        # the bound on attribution_error that --tolerance sets (the report's)
        "estimate_bound": config.estimate_bound(),
        # a padded image's own pixels are what deletion and insertion rank
        "faithfulness_pixels": FAITHFULNESS_PIXELS,
        # a map's equal values are ordered as its random control orders them
        "faithfulness_ties": FAITHFULNESS_TIES,
    }


@dataclasses.dataclass(frozen=True)
class AuditJob:
    """Everything resolved at launch that the pipeline graph is built from."""

    output: str
    source: sources.DataSource  # resolved: a TFDS source knows its features
    spec: ModelSpec
    config: AttributionConfig
    class_names: tuple[str, ...] | None
    batch_size: int
    jit_compile: bool | None
    start_time: str
    done_before: frozenset[str] = frozenset()
    # label_name's names, where they are not class_names (a model of one output)
    label_names: tuple[str, ...] | None = None
    # Where the workers read done_before from (`transforms.done_ids`): not in the graph.
    done_file: str | None = None
    results_prefix: str = SHARD_PREFIX
    # How the runs this one resumes made their rows, oldest first (`_earlier_runs`).
    earlier_runs: tuple[dict[str, Any], ...] = ()
    total_inputs: int | None = None  # when known at launch (folders, the sample, TFDS)
    input_ids: frozenset[str] | None = None  # a local folder's, listed at launch
    show_progress: bool = False  # a progress line on the launcher's log (DirectRunner)
    progress_per_worker: bool = False  # local worker processes count their own share
    lock: output_lock.RunLock | None = None
    command: tuple[str, ...] = ()  # as typed (`command_as_typed`), for the manifest
    verbose: bool = False  # TensorFlow's start-up lines in worker processes too
    # The model the launcher loaded, for the in-process worker of a DirectRunner job.
    model_handoff: ModelHandoff | None = None

    def manifest_base(self) -> dict[str, Any]:
        versions = {"python": platform.python_version()}
        for name in _PACKAGES:
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = None
        return {
            **self.source.manifest_entry(),  # "dataset", "split" (TFDS: "dataset_version")
            "model": dataclasses.asdict(self.spec),
            "config": config_entry(self.config),
            "batch_size": self.batch_size,
            "jit_compile": {None: "auto", True: "on", False: "off"}[self.jit_compile],
            "results_prefix": self.results_prefix,
            "earlier_runs": list(self.earlier_runs),
            "output": self.output,
            # what relative paths in "command" and "output" are relative to
            "working_folder": os.getcwd(),
            "versions": versions,
            "start_time": self.start_time,
            "command": list(self.command),
            "image_id_scheme": datasource.IMAGE_ID_SCHEME,
            "rows_per_image": (
                min(self.config.top_k, self.spec.num_classes)
                if self.config.target == "top_k"
                else 1
            ),
            "class_names_sha256": (
                hashlib.sha256("\n".join(self.class_names).encode("utf-8")).hexdigest()
                if self.class_names is not None
                else None
            ),
            "resumed": bool(self.done_before),
            "run_id": self.lock.run_id if self.lock is not None else None,
            "status": "running",
        }
