"""One RunInference batch, Beam-free: predictions, targets, IG, checks and rows.

`attribute_batch` is what the model handler's `run_inference` delegates to, as
Beam's own TensorFlow handler delegates to a replaceable inference function.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from transforms import baselines as baselines_lib
from transforms import faithfulness, ig
from transforms.config import AttributionConfig
from transforms.preprocess import ImageExample, error_record
from transforms.tf_model import Classifier, ModelSpec
from transforms.wording import classes

__all__ = ["ImageOutcome", "attribute_batch", "baselines_and_scores", "forget_warnings"]

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ImageOutcome:
    """What one image produced: result rows and/or error records."""

    image_id: str
    rows: list[dict[str, Any]]
    errors: list[dict[str, str]]


class _Names(NamedTuple):
    """Names by index: of the model's classes (the prediction and target columns), and
    of the dataset's labels (label_name): the same but on a model of one output."""

    classes: Sequence[str] | None
    labels: Sequence[str] | None


@dataclasses.dataclass(frozen=True)
class _Predictions:
    """The batch's forward pass: logits, probabilities and the top-k per image."""

    logits: np.ndarray  # float32 [N, outputs]
    probs: np.ndarray  # float64 [N, outputs] (`Classifier.probabilities`)
    top: np.ndarray  # int64 [N, k], class indices (label space), best first

    def scores(self, score: str) -> np.ndarray:
        return self.probs if score == "softmax" else self.logits.astype(np.float64)


@dataclasses.dataclass(frozen=True)
class _Attributed:
    """IG and its checks for R rows (image `image_index[r]`, class `targets[r]`)."""

    image_index: np.ndarray
    targets: np.ndarray
    result: ig.IGResult
    target_scores: np.ndarray
    baseline_scores: np.ndarray  # averaged over the baselines
    sums: np.ndarray
    delta: np.ndarray
    relative: np.ndarray
    faith: Any  # transforms.faithfulness result, or None
    failures: dict[int, str]  # rows with a NaN or infinite score or gradient: why


def _predict(model: Classifier, inputs: np.ndarray, top_k: int, spec: ModelSpec) -> _Predictions:
    logits = model.logits(inputs)
    probs = model.probabilities(logits)
    top = np.argsort(-probs[:, spec.label_offset :], axis=1, kind="stable")
    return _Predictions(logits, probs, top[:, : min(top_k, spec.num_classes)])


def _targets_of(
    ex: ImageExample, i: int, preds: _Predictions, cfg: AttributionConfig, spec: ModelSpec
) -> tuple[list[int], str | None]:
    """The classes to attribute for image i, or a reason why there are none."""
    if not np.all(np.isfinite(preds.logits[i])):
        return [], "predict:model output is NaN or infinite"
    if cfg.target == "predicted":
        return [int(preds.top[i, 0])], None
    if cfg.target == "top_k":
        return [int(c) for c in preds.top[i]], None
    if ex.label is None:
        return [], "target:image has no label, which --target label needs"
    if not 0 <= ex.label < spec.num_classes:
        return [], f"target:label {ex.label} is outside the model's {classes(spec.num_classes)}"
    return [int(ex.label)], None


def _choose_targets(batch, preds, cfg, spec, errors) -> tuple[np.ndarray, np.ndarray]:
    """(image_index, targets) of every row; images without targets get an error record."""
    image_index, targets = [], []
    for i, ex in enumerate(batch):
        chosen, reason = _targets_of(ex, i, preds, cfg, spec)
        if reason is not None:
            stage, text = reason.split(":", 1)
            errors[i].append(error_record(ex.image_id, ex.file_name, stage, text))
        image_index += [i] * len(chosen)
        targets += chosen
    return np.asarray(image_index, dtype=np.int64), np.asarray(targets, dtype=np.int64)


def _distinct_logits(model: Classifier, images: np.ndarray) -> np.ndarray:
    """float64 logits of `images`, each distinct image forwarded once: a constant
    baseline (black, white, grey) is the same image for a whole batch."""
    seen: dict[bytes, int] = {}
    index = np.array([seen.setdefault(im.tobytes(), len(seen)) for im in images])
    first = np.unique(index, return_index=True)[1]  # where each distinct image first is
    return model.logits(images[first]).astype(np.float64)[index]


def baselines_and_scores(
    model: Classifier,
    inputs: np.ndarray,
    image_ids: Sequence[str],
    cfg: AttributionConfig,
    spec: ModelSpec,
) -> tuple[np.ndarray, np.ndarray]:
    """The run's baselines of each image, and the model's scores of them.

    Args:
      model: the loaded classifier.
      inputs: float32 [N, S, S, 3] in `spec.input_range`.
      image_ids: the N images' ids (they seed the `noise` baseline).
      cfg: the run's settings (`baselines`, `seed`, `score`).
      spec: the model's signature (input range).

    Returns:
      Baselines float32 [N, B, S, S, 3] (B = len(cfg.baselines)) and their scores
      float64 [N, B, outputs]: logits, or probabilities for `score` softmax.
    """
    per_image = [
        baselines_lib.make_baselines(x, cfg.baselines, spec.input_range, image_id, cfg.seed)
        for x, image_id in zip(inputs, image_ids, strict=True)
    ]
    refs = np.stack(per_image)
    outputs = _distinct_logits(model, refs.reshape(-1, *refs.shape[2:]))
    if cfg.score == "softmax":
        outputs = model.probabilities(outputs)
    return refs, outputs.reshape(len(inputs), refs.shape[1], -1)


def integrate_rows(model, cfg, inputs, refs, ref_outputs, rows, target_scores) -> ig.IGResult:
    """The job's IG of `rows` (image index, output index): the run's settings, the
    device's path points per call, and the model's integrand for `cfg.score`.

    Args:
      refs: float32 [N, B, H, W, C] baselines of the N images.
      ref_outputs: float64 [N, B, outputs] the model's scores of them.
      target_scores: float64 [R] F(x) of each row.
    """
    image_index, out_index = rows
    return ig.integrated_gradients(
        model.integrand_fn(cfg.score, tuned=cfg.path_batch_size is None),
        inputs,
        refs,
        image_index,
        out_index,
        cfg.ig_settings(model.settings.path_batch_size),
        target_scores=target_scores,
        baseline_scores=ref_outputs[image_index, :, out_index],  # [R, B]
        score_fn=model.score_fn(cfg.score),
    )


def _attribute(model, batch, inputs, preds, rows, cfg, spec) -> _Attributed:
    """IG of every row, its completeness, and its faithfulness curves."""
    image_index, targets = rows
    image_ids = [ex.image_id for ex in batch]
    refs, ref_outputs = baselines_and_scores(model, inputs, image_ids, cfg, spec)
    out_index = targets + spec.label_offset
    target_scores = preds.scores(cfg.score)[image_index, out_index]
    result = integrate_rows(
        model, cfg, inputs, refs, ref_outputs, (image_index, out_index), target_scores
    )
    baseline_scores = ref_outputs[image_index, :, out_index].mean(axis=1)
    with np.errstate(invalid="ignore"):  # rows with inf - inf are error records (failures)
        sums = result.attributions.reshape(len(targets), -1).sum(axis=1, dtype=np.float64)
        delta, relative = ig.completeness(sums, target_scores, baseline_scores)
    failed = np.flatnonzero(~result.finite | ~np.isfinite(baseline_scores))
    rows = (image_index, out_index, targets)
    failures = _failure_reasons(model, cfg, inputs, refs, failed, rows, baseline_scores)
    keep = np.setdiff1d(np.arange(len(targets)), failed)
    faith = _faithfulness(model, cfg, spec, inputs, refs, batch, rows, result, preds, keep)
    return _Attributed(
        image_index,
        targets,
        result,
        target_scores,
        baseline_scores,
        sums,
        delta,
        relative,
        faith,
        failures,
    )


def _faithfulness(model, cfg, spec, inputs, refs, batch, rows, result, preds, keep):
    """The faithfulness curves of the rows `keep` (the others are error records: no
    model call is spent on them), as a result over all rows, NaN for the others;
    None when faithfulness is off or no row is kept. Only an image's own pixels are
    ranked, not the padding that fits it to the model's height x width
    (`ImageExample.content`)."""
    if cfg.faithfulness == "none" or not len(keep):
        return None
    image_index, out_index, _ = rows
    kept = faithfulness.for_rows(
        faithfulness.from_outputs(model.logits, model.probabilities),
        inputs,
        refs[:, 0],
        [ex.image_id for ex in batch],
        image_index[keep],
        out_index[keep],
        result.attributions[keep],
        steps=cfg.faithfulness_steps,
        chunk_size=cfg.points_per_call(model.settings.path_batch_size),
        seed=cfg.seed,
        image_probabilities=preds.probs[image_index[keep], out_index[keep]],
        content=np.stack([ex.content_mask() for ex in batch]),
    )
    return faithfulness.scattered(kept, keep, len(image_index))


def _failure_reasons(model, cfg, inputs, refs, failed, rows, baseline_scores) -> dict[int, str]:
    """Why each `failed` row has a NaN or infinite score or gradient: the model's score
    of the baseline; its gradient there (alpha = 0), which some rules take and some
    models (sqrt or log of the input) make infinite; or a point further along the path,
    which no other rule avoids."""
    image_index, out_index, targets = rows
    gradients = _finite_at_baseline(
        model, cfg, inputs, refs, image_index[failed], out_index[failed]
    )
    reasons = {}
    for r, finite_there in zip(failed.tolist(), gradients, strict=True):
        reason = f"NaN or infinite score or gradient for class {targets[r]}"
        if not np.isfinite(baseline_scores[r]):
            reason = (
                f"NaN or infinite score for class {targets[r]} of the baseline itself "
                f"(--baseline {','.join(cfg.baselines)}; another baseline may avoid it)"
            )
        elif not finite_there:
            reason += (
                f" ({cfg.method} takes the gradient at the baseline itself, alpha = 0; "
                "--method gausslegendre has no node there)"
            )
        else:
            reason += " on the path from the baseline to the image (alpha > 0)"
        reasons[r] = reason
    return reasons


def _finite_at_baseline(model, cfg, inputs, refs, image_index, out_index) -> np.ndarray:
    """bool [R]: whether each row's gradients at its baselines (alpha = 0) are finite;
    True where the rule takes none there."""
    if not ig.has_baseline_node(cfg.method) or not len(image_index):
        return np.ones(len(image_index), dtype=bool)
    count = refs.shape[1]
    index = (image_index[:, None] * count + np.arange(count)).ravel()
    _, _, finite, _ = model.integrand_fn(cfg.score)(
        np.repeat(inputs, count, axis=0),
        refs.reshape(-1, *refs.shape[2:]),
        index,
        np.zeros(len(index), np.float32),
        np.repeat(out_index, count),
    )
    return np.asarray(finite).reshape(-1, count).all(axis=1)


def _name(names: Sequence[str] | None, index: int | None) -> str | None:
    if index is None:
        return None
    if names is not None and 0 <= index < len(names):
        return names[index]
    return str(index)


def _optional(value: float) -> float | None:
    """A float, or None (null) where it is unknown (nan)."""
    return None if np.isnan(value) else float(value)


def _within(config: AttributionConfig, error: float, relative: float) -> bool | None:
    """Whether the map is within the tolerances: its estimated per-pixel error (within
    `estimate_bound()`) and its completeness; None without a tolerance (the fixed rule)."""
    if config.tolerance == 0:
        return None
    return bool(error <= config.estimate_bound() and relative <= config.completeness_tolerance)


def _stored(attributions: np.ndarray, cfg: AttributionConfig):
    """The attributions as stored (`--attributions`, `--attribution_dtype`), their
    shape, and the relative L2 error of storing them so (0 in float32)."""
    if cfg.attributions == "none":
        return None, None, 0.0
    if cfg.attributions == "pixel":
        attributions = attributions.sum(axis=-1)
    with np.errstate(over="ignore"):  # beyond float16: inf, counted in the error
        stored = attributions.astype(cfg.attribution_dtype)
    return stored, np.asarray(stored.shape, dtype=np.int32), _storage_error(attributions, stored)


# The dtypes whose storage warning this process gave in this run (`_warn_storage`),
# and the lock that lets one thread of a worker (the DirectRunner's run several) give it.
_WARNED: set[str] = set()
_WARNED_LOCK = threading.Lock()


def _warn_storage(dtype: str) -> None:
    """Once per worker process and run (`forget_warnings`), however many of its
    threads reach it at once: maps that lose more than 0.1 % in `dtype`."""
    with _WARNED_LOCK:
        if dtype in _WARNED:
            return
        _WARNED.add(dtype)
    _LOG.warning(
        "Some attribution maps do not fit %s (values beyond 65504, or below 6.1e-5, "
        "where float16 keeps fewer bits and flushes to 0 below 6e-8, lose more than "
        "0.1 %%): their attribution_error includes it, and rows whose "
        "attribution_error exceeds the bound --tolerance sets are flagged. "
        "--attribution_dtype float32 stores them exactly.",
        dtype,
    )


def forget_warnings() -> None:
    """Forgets the warnings given once (`_warn_storage`), as a run starts: a later run
    in the same process (a notebook's, whose in-process worker is this process) said
    nothing of its own maps."""
    with _WARNED_LOCK:
        _WARNED.clear()


def _storage_error(computed: np.ndarray, stored: np.ndarray) -> float:
    """||stored - computed|| / ||computed||: float16's rounding (coarser below 6.1e-5,
    its subnormal values), its values flushed to 0 (below 6e-8) and its overflows
    (beyond 65504: inf)."""
    if stored.dtype == computed.dtype:
        return 0.0
    computed = computed.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        off = float(np.linalg.norm(stored.astype(np.float64) - computed))
        size = float(np.linalg.norm(computed))
    if not np.isfinite(off):
        return float("inf")
    return off / size if size > 0 else (0.0 if off == 0 else float("inf"))


def _prediction_columns(
    ex: ImageExample, i: int, preds: _Predictions, spec: ModelSpec, names: _Names
) -> dict[str, Any]:
    top = preds.top[i]
    class_probs = preds.probs[i, spec.label_offset :]
    return {
        "image_id": ex.image_id,
        "file_name": ex.file_name,
        "label": ex.label,
        "label_name": _name(names.labels, ex.label),
        "predicted_class": int(top[0]),
        "predicted_name": _name(names.classes, int(top[0])),
        "top_k_classes": top.astype(np.int64),
        "top_k_names": [_name(names.classes, int(c)) for c in top],
        "top_k_probs": class_probs[top].astype(np.float32),
    }


def _row(ex, r: int, preds, a: _Attributed, cfg, spec, names) -> dict[str, Any]:
    """The result row of row r, in the schema's columns (`transforms.schema`)."""
    result, target = a.result, int(a.targets[r])
    stored, shape, storage = _stored(result.attributions[r], cfg)
    error = result.error[r] + storage  # of the map as stored: its rounding adds
    if storage > 1e-3:
        _warn_storage(cfg.attribution_dtype)
    path = cfg.store_path
    return (
        _prediction_columns(ex, int(a.image_index[r]), preds, spec, names)
        | {
            "target_class": target,
            "target_name": _name(names.classes, target),
            "target_score": float(a.target_scores[r]),
            "baseline_score": float(a.baseline_scores[r]),
            "attribution_sum": float(a.sums[r]),
            "completeness_delta": float(a.delta[r]),
            "relative_delta": float(a.relative[r]),
            "steps": int(result.steps[r]),
            "method": cfg.method,
            "score": cfg.score,
            "baseline": ",".join(cfg.baselines),
            "evaluations": int(result.evaluations[r]),
            "attribution_error": _optional(error),
            "within_tolerance": _within(cfg, error, a.relative[r]),
            "path_alphas": result.path_alphas[r].astype(np.float32) if path else None,
            "path_scores": result.path_scores[r].astype(np.float32) if path else None,
            "attribution_shape": shape,
            "attributions": stored,
        }
        | faithfulness.row_columns(a.faith, r)
    )


def _outcomes(batch, rows, errors) -> list[ImageOutcome]:
    outcomes = []
    for i, ex in enumerate(batch):
        # One target failed: the image is reported once, as an error, so that
        # rows + errors = inputs holds per image.
        kept = [] if errors[i] else rows[i]
        outcomes.append(ImageOutcome(ex.image_id, kept, errors[i]))
    return outcomes


def attribute_batch(
    model: Classifier,
    batch: Sequence[ImageExample],
    config: AttributionConfig,
    spec: ModelSpec,
    names: Sequence[str] | None,
    label_names: Sequence[str] | None = None,
) -> list[ImageOutcome]:
    """Predictions, IG, its checks and the result rows of a batch of images.

    Args:
      model: the loaded classifier.
      batch: preprocessed images, float32 [S, S, 3] each in the model's input range.
      config: the run's algorithm settings.
      spec: the model's signature (label offset, classes, input range).
      names: class names by index (label space), or None.
      label_names: names of the dataset's labels by index, where they are not the
        model's classes (a model of one output); None: `names`.

    Returns:
      One `ImageOutcome` per image, in order: its rows, or its error records.
    """
    batch = list(batch)
    if not batch:
        return []
    inputs = np.stack([ex.image for ex in batch]).astype(np.float32)
    preds = _predict(model, inputs, config.top_k, spec)
    errors: dict[int, list[dict[str, str]]] = {i: [] for i in range(len(batch))}
    rows: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(batch))}
    image_index, targets = _choose_targets(batch, preds, config, spec, errors)
    both = _Names(names, names if label_names is None else label_names)
    if len(targets):
        a = _attribute(model, batch, inputs, preds, (image_index, targets), config, spec)
        for r, i in enumerate(image_index.tolist()):
            ex = batch[i]
            if r in a.failures:
                errors[i].append(
                    error_record(ex.image_id, ex.file_name, "attribute", a.failures[r])
                )
                continue
            rows[i].append(_row(ex, r, preds, a, config, spec, both))
    return _outcomes(batch, rows, errors)
