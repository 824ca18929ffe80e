"""Preprocessing and the RunInference model handler that computes predictions and IG."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler

from transforms import baselines as baselines_lib
from transforms import faithfulness, ig, images
from transforms.config import AttributionConfig
from transforms.sources import RawImage
from transforms.tf_model import Classifier, ModelSpec

__all__ = [
    "ERRORS_TAG",
    "IGModelHandler",
    "ImageExample",
    "ImageOutcome",
    "Preprocess",
    "error_record",
]

_LOG = logging.getLogger(__name__)
ERRORS_TAG = "errors"
NAMESPACE = "ig_audit"


def error_record(image_id: str, file_name: str, stage: str, error: str) -> dict[str, str]:
    """A dead-letter record: which input, at which stage, and why."""
    return {"image_id": image_id, "file_name": file_name, "stage": stage, "error": error}


@dataclasses.dataclass(frozen=True)
class ImageExample:
    """A preprocessed image.

    Attributes:
      image: float32 [S, S, 3] in the model's input range, padded to the square.
    """

    image_id: str
    file_name: str
    label: int | None
    image: np.ndarray


@dataclasses.dataclass(frozen=True)
class ImageOutcome:
    """What one image produced: result rows and/or error records."""

    image_id: str
    rows: list[dict[str, Any]]
    errors: list[dict[str, str]]


class Preprocess(beam.DoFn):
    """RawImage -> ImageExample (main output) or an error record (ERRORS_TAG)."""

    def __init__(self, image_size: int, input_range: tuple[float, float]):
        self._size = image_size
        self._range = input_range
        self._decoded = beam.metrics.Metrics.counter(NAMESPACE, "images_decoded")
        self._failed = beam.metrics.Metrics.counter(NAMESPACE, "images_failed_preprocess")

    def process(self, raw: RawImage) -> Iterator[Any]:
        if raw.error is not None:
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(
                ERRORS_TAG, error_record(raw.image_id, raw.file_name, "read", raw.error)
            )
            return
        try:
            if raw.pixels is not None:
                pixels = images.to_rgb_uint8(raw.pixels)
            else:
                pixels = images.decode_image(raw.data, max_side_hint=self._size)
            square = images.resize_with_pad(pixels, self._size)
        except Exception as e:  # noqa: BLE001 - one bad input must not end the bundle
            # ImageError says what is wrong with the file; anything else (MemoryError,
            # a Pillow bug) is still this one input's failure, not the job's.
            reason = str(e) if isinstance(e, images.ImageError) else f"{type(e).__name__}: {e}"
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(
                ERRORS_TAG, error_record(raw.image_id, raw.file_name, "decode", reason)
            )
            return
        self._decoded.inc()
        yield ImageExample(
            image_id=raw.image_id,
            file_name=raw.file_name,
            label=raw.label,
            image=images.scale_to_range(square, self._range),
        )


def _baseline_node_hint(method: str) -> str:
    """Why a row may fail with this rule: some models (sqrt, log of the input) have
    an infinite slope at the baseline, where rules with a node at alpha = 0 look."""
    if not ig.has_baseline_node(method):
        return ""
    return (f" ({method} takes the gradient at the baseline itself, alpha = 0; "
            "--method gausslegendre has no node there)")  # fmt: skip


def _name(names: Sequence[str] | None, index: int | None) -> str | None:
    if index is None:
        return None
    if names is not None and 0 <= index < len(names):
        return names[index]
    return str(index)


def _distinct_logits(model: Classifier, images: np.ndarray) -> np.ndarray:
    """float64 logits of `images`, each distinct image forwarded once: a constant
    baseline (black, white, grey) is the same image for a whole batch."""
    seen: dict[bytes, int] = {}
    index = np.array([seen.setdefault(im.tobytes(), len(seen)) for im in images])
    first = np.unique(index, return_index=True)[1]  # where each distinct image first is
    return model.logits(images[first]).astype(np.float64)[index]


def _optional(value: float) -> float | None:
    """A float, or None (null) where it is unknown (nan)."""
    return None if np.isnan(value) else float(value)


def _within(config: AttributionConfig, error: float, relative: float) -> bool | None:
    """Whether the map is within the tolerances: its estimated per-pixel error and its
    completeness; None without a tolerance (the fixed rule)."""
    if config.tolerance == 0:
        return None
    return bool(error <= config.tolerance and relative <= config.completeness_tolerance)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _faithfulness(cfg, spec, model, batch, inputs, refs, image_index, out_index, probs, result):
    """Deletion and insertion of every row (`transforms.faithfulness`), None when off:
    perturbed images of all rows share softmax forward calls of `path_batch_size`."""
    if cfg.faithfulness == "none":
        return None
    return faithfulness.for_rows(
        faithfulness.from_score_fn(model.score_fn("softmax")), inputs, refs[:, 0],
        [ex.image_id for ex in batch], image_index, out_index, result.attributions,
        input_range=spec.input_range, steps=cfg.faithfulness_steps,
        chunk_size=cfg.path_batch_size, seed=cfg.seed,
        image_probabilities=probs[image_index, out_index],
    )  # fmt: skip


class _Progress:
    """Beam counters per batch, and a readable progress line at most every 10 s."""

    def __init__(self, every_seconds: float = 10.0):
        self._every = every_seconds
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
        if now - self._last >= self._every:
            self._last = now
            rate = self._images / max(now - self._start, 1e-9)
            _LOG.info(
                "progress: %d images (%d rows, %d errors), %.2f images/s in this worker",
                self._images, self._rows, self._errors, rate,
            )  # fmt: skip


class IGModelHandler(ModelHandler[ImageExample, ImageOutcome, Classifier]):
    """Loads the classifier once per worker; per batch, top-k predictions and IG.

    Batching happens at two levels: RunInference hands `run_inference` up to
    `batch_size` images, and the IG engine evaluates path points of all those
    images in chunks of `config.path_batch_size` per gradient call.
    """

    def __init__(
        self,
        spec: ModelSpec,
        config: AttributionConfig,
        class_names: Sequence[str] | None,
        batch_size: int = 8,
        jit_compile: bool | None = None,
    ):
        super().__init__()
        self._spec = spec
        self._config = config
        self._names = tuple(class_names) if class_names is not None else None
        self._batch_size = batch_size
        self._jit_compile = jit_compile
        self._progress = _Progress()

    def load_model(self) -> Classifier:
        classifier = Classifier(self._spec, jit_compile=self._jit_compile)
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
        batch = list(batch)
        if not batch:
            return []
        cfg, spec = self._config, self._spec
        offset = spec.label_offset
        inputs = np.stack([ex.image for ex in batch]).astype(np.float32)
        logits = model.logits(inputs)
        probs = _softmax(logits.astype(np.float64))
        outputs = probs if cfg.score == "softmax" else logits.astype(np.float64)

        errors: dict[int, list[dict[str, str]]] = {i: [] for i in range(len(batch))}
        top_k = min(cfg.top_k, spec.num_classes)
        class_probs = probs[:, offset:]
        top = np.argsort(-class_probs, axis=1, kind="stable")[:, :top_k]
        image_index, targets = [], []
        for i, ex in enumerate(batch):
            if not np.all(np.isfinite(logits[i])):
                errors[i].append(
                    error_record(
                        ex.image_id, ex.file_name, "predict", "model output is NaN or infinite"
                    )
                )
                continue
            if cfg.target == "predicted":
                chosen = [int(top[i, 0])]
            elif cfg.target == "top_k":
                chosen = [int(c) for c in top[i]]
            elif ex.label is None:
                errors[i].append(
                    error_record(ex.image_id, ex.file_name, "target",
                                 "image has no label, which --target label needs")
                )  # fmt: skip
                continue
            elif not 0 <= ex.label < spec.num_classes:
                errors[i].append(
                    error_record(ex.image_id, ex.file_name, "target",
                                 f"label {ex.label} is outside the model's {spec.num_classes} classes")
                )  # fmt: skip
                continue
            else:
                chosen = [int(ex.label)]
            image_index += [i] * len(chosen)
            targets += chosen
        image_index = np.asarray(image_index, dtype=np.int64)
        targets = np.asarray(targets, dtype=np.int64)

        rows_by_image: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(batch))}
        if len(targets):
            refs = np.stack(
                [
                    baselines_lib.make_baselines(
                        ex.image, cfg.baselines, spec.input_range, ex.image_id, cfg.seed
                    )
                    for ex in batch
                ]
            )
            num_base = refs.shape[1]
            ref_outputs = _distinct_logits(model, refs.reshape(-1, *inputs.shape[1:]))
            if cfg.score == "softmax":
                ref_outputs = _softmax(ref_outputs)
            ref_outputs = ref_outputs.reshape(len(batch), num_base, -1)
            out_index = targets + offset
            target_scores = outputs[image_index, out_index]
            path_baseline_scores = ref_outputs[image_index, :, out_index]  # [R, B]
            baseline_scores = path_baseline_scores.mean(axis=1)
            result = ig.integrated_gradients(
                model.integrand_fn(cfg.score),
                inputs,
                refs,
                image_index,
                out_index,
                cfg.ig_settings(),
                target_scores=target_scores,
                baseline_scores=path_baseline_scores,
                score_fn=model.score_fn(cfg.score),
            )
            sums = result.attributions.reshape(len(targets), -1).sum(axis=1, dtype=np.float64)
            delta, relative = ig.completeness(sums, target_scores, baseline_scores)
            faith = _faithfulness(cfg, spec, model, batch, inputs, refs, image_index, out_index,
                                  probs, result)  # fmt: skip
            for r, i in enumerate(image_index):
                ex = batch[i]
                if not result.finite[r] or not np.isfinite(baseline_scores[r]):
                    errors[i].append(
                        error_record(ex.image_id, ex.file_name, "attribute",
                                     f"NaN or infinite score or gradient for class {targets[r]}"
                                     + _baseline_node_hint(cfg.method))
                    )  # fmt: skip
                    continue
                rows_by_image[i].append(
                    self._row(ex, top[i], class_probs[i], int(targets[r]), result, r,
                              target_scores[r], baseline_scores[r], sums[r], delta[r], relative[r])
                    | faithfulness.row_columns(faith, r)
                )  # fmt: skip
        outcomes = []
        for i, ex in enumerate(batch):
            rows, errs = rows_by_image[i], errors[i]
            if rows and errs:
                # One target failed: the image is reported once, as an error,
                # so rows + errors = inputs holds per image.
                rows = []
            outcomes.append(ImageOutcome(ex.image_id, rows, errs))
        self._progress.update(outcomes)
        return outcomes

    def _row(
        self,
        ex: ImageExample,
        top: np.ndarray,
        class_probs: np.ndarray,
        target: int,
        result: ig.IGResult,
        r: int,
        target_score: float,
        baseline_score: float,
        attribution_sum: float,
        delta: float,
        relative: float,
    ) -> dict[str, Any]:
        cfg = self._config
        attributions = result.attributions[r]
        if cfg.attributions == "pixel":
            attributions = attributions.sum(axis=-1)
        stored = None if cfg.attributions == "none" else attributions.astype(cfg.attribution_dtype)
        shape = None if stored is None else np.asarray(stored.shape, dtype=np.int32)
        return {
            "image_id": ex.image_id,
            "file_name": ex.file_name,
            "label": ex.label,
            "label_name": _name(self._names, ex.label),
            "predicted_class": int(top[0]),
            "predicted_name": _name(self._names, int(top[0])),
            "top_k_classes": top.astype(np.int64),
            "top_k_names": [_name(self._names, int(c)) for c in top],
            "top_k_probs": class_probs[top].astype(np.float32),
            "target_class": target,
            "target_name": _name(self._names, target),
            "target_score": float(target_score),
            "baseline_score": float(baseline_score),
            "attribution_sum": float(attribution_sum),
            "completeness_delta": float(delta),
            "relative_delta": float(relative),
            "steps": int(result.steps[r]),
            "method": cfg.method,
            "score": cfg.score,
            "baseline": ",".join(cfg.baselines),
            "evaluations": int(result.evaluations[r]),
            "attribution_error": _optional(result.error[r]),
            "within_tolerance": _within(cfg, result.error[r], relative),
            "path_alphas": result.path_alphas[r].astype(np.float32) if cfg.store_path else None,
            "path_scores": result.path_scores[r].astype(np.float32) if cfg.store_path else None,
            "attribution_shape": shape,
            "attributions": stored,
        }
