"""The RunInference model handler: the model once per worker, `attribute_batch` per batch.

The per-batch work (predictions, targets, IG, its checks, rows) is Beam-free, in
`transforms.batch`; preprocessing is in `transforms.preprocess`. Both are
re-exported here, where the graph takes them from.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler

from transforms import quiet
from transforms.batch import ImageOutcome, attribute_batch
from transforms.config import DEFAULT_BATCH_SIZE, AttributionConfig
from transforms.errors import error_reason
from transforms.preprocess import ERRORS_TAG, NAMESPACE, ImageExample, Preprocess, error_record
from transforms.tf_model import Classifier, ModelHandoff, ModelSpec

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "ERRORS_TAG",
    "IGModelHandler",
    "ImageExample",
    "ImageOutcome",
    "Preprocess",
    "error_record",
]

_LOG = logging.getLogger(__name__)
#: In the environment of a worker process Beam starts (a multi-process DirectRunner's,
#: a portable runner's SDK harness): the launcher's control service it connects to.
_WORKER_SETTING = "CONTROL_API_SERVICE_DESCRIPTOR"


def _end_worker_without_a_last_collection() -> None:
    """In a worker process Beam started, its exit skips Python's last garbage
    collections (`gc.freeze` at exit): its work is done by then (bundles finished,
    files closed, logs sent), and collecting the objects TensorFlow and the model
    left took 1-3 s of its end, which the launcher waits for at each run's end and
    stop. Elsewhere (the launcher, a notebook's in-process run) the exit is as it was."""
    if _WORKER_SETTING in os.environ:
        atexit.unregister(gc.freeze)  # once, however many models the worker loads
        atexit.register(gc.freeze)


class _Progress:
    """Beam counters per batch, and (with `log_lines`) a readable progress line of
    this worker at most every 10 s."""

    def __init__(self, every_seconds: float = 10.0, log_lines: bool = True):
        self._every, self._log = every_seconds, log_lines
        self._start = self._last = None
        self._images = self._rows = self._errors = 0
        self._counters = {
            name: beam.metrics.Metrics.counter(NAMESPACE, name)
            for name in ("images_attributed", "rows", "image_errors", "gradient_evaluations")
        }

    def update(self, outcomes: Sequence[ImageOutcome]) -> None:
        now = time.monotonic()
        if self._start is None:
            self._start = self._last = now
        rows = sum(len(o.rows) for o in outcomes)
        failed = sum(1 for o in outcomes if o.errors)
        self._images += len(outcomes)
        self._rows += rows
        self._errors += failed
        self._counters["images_attributed"].inc(len(outcomes) - failed)
        self._counters["rows"].inc(rows)
        self._counters["image_errors"].inc(failed)
        self._counters["gradient_evaluations"].inc(
            sum(r["evaluations"] for o in outcomes for r in o.rows)
        )
        _LOG.debug("attributed a batch of %d images", len(outcomes))
        if self._log and now - self._last >= self._every:
            self._last = now
            rate = self._images / max(now - self._start, 1e-9)
            _LOG.info(
                "progress: %d images (%d rows, %d errors), %.2f images/s in this worker",
                self._images,
                self._rows,
                self._errors,
                rate,
            )


class IGModelHandler(ModelHandler[ImageExample, ImageOutcome, Classifier]):
    """Loads the classifier once per worker; per batch, top-k predictions and IG.

    Batching happens at two levels: RunInference hands `run_inference` up to
    `batch_size` images, and the IG engine evaluates path points of all those
    images in chunks of `config.path_batch_size` per gradient call (by default
    the device's choice, `DeviceSettings.path_batch_size`).
    """

    def __init__(
        self,
        spec: ModelSpec,
        config: AttributionConfig,
        class_names: Sequence[str] | None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        jit_compile: bool | None = None,
        handoff: ModelHandoff | None = None,
        log_progress: bool = True,
        verbose: bool = False,
        label_names: Sequence[str] | None = None,
    ):
        """`label_names`: the dataset's, where they are not the model's `class_names`
        (a model of one output; None: `class_names`); `handoff`: where the launcher
        of a local job left the model it loaded;
        `log_progress`: log this worker's own progress line (off where the launcher
        logs the job's, as on the DirectRunner); `verbose`: TensorFlow's start-up
        lines in worker processes."""
        super().__init__()
        self._spec = spec
        self._config = config
        self._names = tuple(class_names) if class_names is not None else None
        self._label_names = tuple(label_names) if label_names is not None else None
        self._batch_size = batch_size
        self._jit_compile = jit_compile
        self._handoff = handoff
        self._progress = _Progress(log_lines=log_progress)
        self._verbose = verbose

    def load_model(self) -> Classifier:
        # In a worker process of its own, TensorFlow is imported here first.
        quiet.import_tensorflow(verbose=self._verbose)
        _end_worker_without_a_last_collection()
        classifier = Classifier(self._spec, jit_compile=self._jit_compile, handoff=self._handoff)
        _LOG.info(
            "Loaded %s on %s (jit_compile=%s).",
            self._spec.reference,
            classifier.settings.device,
            classifier.settings.jit_compile,
        )
        return classifier

    def batch_elements_kwargs(self) -> dict[str, Any]:
        # Full batches (the last of a bundle may be smaller). Beam's default starts
        # at one element and grows only while a batch takes well under a second,
        # which IG batches never do: it kept the DirectRunner at 1-2 images per
        # batch, so the engine had few paths to fill its gradient calls with.
        return {"min_batch_size": self._batch_size, "max_batch_size": self._batch_size}

    def get_metrics_namespace(self) -> str:
        return NAMESPACE

    def run_inference(
        self,
        batch: Sequence[ImageExample],
        model: Classifier,
        inference_args: dict[str, Any] | None = None,
    ) -> list[ImageOutcome]:
        outcomes = self._attribute(list(batch), model)
        self._progress.update(outcomes)
        return outcomes

    def _attribute(self, batch: list[ImageExample], model: Classifier) -> list[ImageOutcome]:
        """`attribute_batch`; where the model raises on a batch (an assertion, out of
        memory), its images one at a time, and an image it raises on alone becomes an
        error record (stage `attribute`): one input cannot fail the run, whose
        --resume would meet it again."""
        import tensorflow as tf  # noqa: PLC0415 (loaded with the model already)

        try:
            return attribute_batch(
                model, batch, self._config, self._spec, self._names, self._label_names
            )
        except tf.errors.OpError as e:
            cause = f"{type(e).__name__}: {error_reason(e)}"
            if len(batch) > 1:
                _LOG.warning(
                    "The model failed on a batch of %d images (%s); attributing them one at "
                    "a time.",
                    len(batch),
                    cause,
                )
                return [out for ex in batch for out in self._attribute([ex], model)]
            (ex,) = batch
            reason = f"the model failed on this image: {cause}"
            return [
                ImageOutcome(
                    ex.image_id, [], [error_record(ex.image_id, ex.file_name, "attribute", reason)]
                )
            ]
