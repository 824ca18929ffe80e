"""The public entry point: `integrated_gradients` and its types."""

from __future__ import annotations

import dataclasses
import inspect
import numbers
from collections.abc import Callable, Sequence

import numpy as np

from transforms.ig import rules
from transforms.ig.engine import (
    SCORE_RESOLUTION,
    Adaptive,
    Fixed,
    Paths,
    even_parts,
    least_path_bytes,
    relative_delta,
)

__all__ = [
    "DEFAULT_MAX_STEPS",
    "DEFAULT_PATH_BATCH_SIZE",
    "IGResult",
    "IGSettings",
    "IntegrandFn",
    "SCORE_RESOLUTION",
    "ScoreFn",
    "ScoreGradFn",
    "completeness",
    "default_max_steps",
    "integrand_from_gradients",
    "integrated_gradients",
]


ScoreGradFn = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]
]
"""``fn(inputs, baselines, alphas, targets) -> (scores, grads)``.

For each row j of a batch of N path points, the point is
``baselines[j] + alphas[j] * (inputs[j] - baselines[j])``.

Args:
  inputs, baselines: float32 [N, *S], in the model's input range.
  alphas: float32 [N], in [0, 1].
  targets: int64 [N], the output index whose score is differentiated.

Returns:
  scores: float [N], F_target(point).
  grads: float32 [N, *S], dF_target/dpoint.
"""

ScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``fn(inputs, baselines, alphas, targets) -> scores``: `ScoreGradFn` without gradients."""

IntegrandFn = Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
"""``fn(images, references, index, alphas, targets) -> (scores, derivatives, finite,
contributions)``: the IG integrand of N path points.

The points lie on U paths: images, references: float32 [U, *S], the ends of
each path; index: int32 [N] in [0, U), the path of each point, whose ends are
gathered next to the model (N points of a few paths cost no N copies of
their ends). With x_j, x'_j the ends of point j's path and
c_j = (x_j - x'_j) * grad F(x'_j + alphas_j (x_j - x'_j)), the integrand at j:

  scores: float [N], F(point_j).
  derivatives: float [N], dF/da at the point = sum of c_j.
  finite: bool [N], the score and c_j are finite.
  contributions: float32 [N, *S], c_j.

`integrand_from_gradients` builds one from any `ScoreGradFn` with NumPy; a
framework can supply its own that does the arithmetic next to the gradients.
It may also have a ``call_size()`` attribute: the points per call it would
rather take next, when fewer than `IGSettings.path_batch_size` (the job's
model on CPUs times its calls to find the fastest size).
"""


# Path points per model call when the caller does not choose: it bounds the
# memory of one call (32 images' activations) and changes no result. The job
# passes its device's choice instead (`transforms.tf_model.device_settings`:
# on CPUs 8 or 16, whichever its calls time faster; 32 on GPUs).
DEFAULT_PATH_BATCH_SIZE = 32
# The refinement cap when none is given (raised to `steps` when that is more): it
# bounds a row's cost at about 2x the points the bundled sample needs at the job's
# defaults (131 per image, docs/scale.md).
DEFAULT_MAX_STEPS = 256


def default_max_steps(steps: int) -> int:
    """The refinement cap when none is given: `DEFAULT_MAX_STEPS`, or `steps` if more."""
    return max(DEFAULT_MAX_STEPS, steps)


@dataclasses.dataclass(frozen=True)
class IGSettings:
    """How the path integral is computed.

    Attributes:
      method: the quadrature rule, one of `rules.METHODS`.
      steps: its nodes on [0, 1] (fixed mode), or the initial nodes, spread over
        panels graded towards a = 0 (adaptive mode: at least one panel's,
        `panel_rule(method).nodes`, rounded down to whole panels: 24 of 25 for
        gausslegendre, 5 of 8 for gausslobatto).
      tolerance: 0 for the fixed rule; > 0 refines the paths of each row until
        its estimated per-pixel relative error is within it and its relative
        completeness delta within `completeness_tolerance` (of the map averaged
        over its baselines), or `max_steps` evaluations per path are spent.
      completeness_tolerance: the bound on the relative completeness delta in
        adaptive mode; None: `tolerance`.
      max_steps: cap on gradient evaluations per path (adaptive), its distinct
        points: re-evaluations of folded panels are not counted; None:
        `default_max_steps(steps)`.
      path_batch_size: path points per model call, across rows; bounds memory.
      memory_budget: bytes of node vectors kept per call for refinement
        (adaptive); panels beyond it are folded and re-evaluated if split.
      channel_sum: the per-pixel error (`IGResult.error`, and what refinement
        bounds) is of the map summed over its last axis, the H x W pixel map a
        caller keeps, instead of the whole map: a sum over channels cancels
        less of the error than of the map, so its relative error is larger.
    """

    method: str
    steps: int
    tolerance: float = 0.0
    max_steps: int | None = None
    path_batch_size: int = DEFAULT_PATH_BATCH_SIZE
    # 2 GiB holds every node vector of 8 paths at the defaults (about 135 nodes
    # of 224 x 224 x 3 float32), so nothing is evaluated twice, and those of 40
    # (`--target top_k` at 8 images) at 1.8x fewer re-evaluations than 1 GiB
    # (docs/performance.md).
    memory_budget: int = 2 << 30
    completeness_tolerance: float | None = None
    channel_sum: bool = False

    def completeness(self) -> float:
        """The bound on the relative completeness delta (adaptive mode)."""
        return (
            self.tolerance if self.completeness_tolerance is None else self.completeness_tolerance
        )

    def __post_init__(self) -> None:
        rules.check_steps(self.method, self.steps)  # first: the default cap compares it
        if self.max_steps is None:  # frozen: set once, here
            object.__setattr__(self, "max_steps", default_max_steps(self.steps))
        _check_types(self)
        if not self.tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0 (0: the fixed rule), got {self.tolerance}.")
        if self.max_steps < self.steps:
            raise ValueError(f"max_steps ({self.max_steps}) must be >= steps ({self.steps}).")
        panel = len(rules.panel_rule(self.method).nodes)
        if self.tolerance > 0 and self.steps < panel:
            # The adaptive engine starts from whole panels: fewer steps would
            # still cost one panel, beyond a max_steps of as few.
            raise ValueError(
                f"steps ({self.steps}) is less than one adaptive panel of {self.method} "
                f"({panel} nodes), which tolerance > 0 starts from."
            )
        if self.path_batch_size < 1:
            raise ValueError(f"path_batch_size must be >= 1, got {self.path_batch_size}.")
        if self.completeness_tolerance is not None and not self.completeness_tolerance > 0:
            raise ValueError(
                f"completeness_tolerance must be > 0, got {self.completeness_tolerance}."
            )
        if self.memory_budget < 0:
            raise ValueError(f"memory_budget must be >= 0 bytes, got {self.memory_budget}.")


def _check_types(settings: IGSettings) -> None:
    """Integers and numbers where they go, before the comparisons of `__post_init__`:
    a str or None there raised a TypeError naming no setting, and a float
    path_batch_size or memory_budget failed only in the engine."""
    for name in ("max_steps", "path_batch_size", "memory_budget"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{name} must be an integer, got {value!r}.")
    for name in ("tolerance", "completeness_tolerance"):
        value = getattr(settings, name)
        if value is None and name == "completeness_tolerance":
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name} must be a number, got {value!r}.")


@dataclasses.dataclass
class IGResult:
    """Attributions of R rows (image, target).

    Attributes:
      attributions: float32 [R, *S], averaged over the baselines.
      error: float64 [R], estimated per-pixel relative error
        ||A - A_true|| / ||A_true|| over all values (||kappa D|| / ||A|| with
        each path's spread D times its kappa averaged like A); nan where the
        rule has no spread (too few nodes).
      steps: int64 [R], nodes per baseline in the final estimate (the most of
        any baseline).
      evaluations: int64 [R], gradient evaluations spent on the row, all
        baselines, refinements and re-evaluations included.
      forward_evaluations: int64 [R], forward-only evaluations (adaptive mode: the
        panel edges of gausslegendre and riemann_middle, which have no node there;
        riemann_left and riemann_right take F at their nodeless edge from the
        neighbouring panel's node), all baselines included.
      finite: bool [R], False where a score or gradient was NaN or infinite.
      path_alphas: per row, float64 [K] points of the path with known F, ascending
        (of the first baseline's path when there are several).
      path_scores: per row, float64 [K] F(alpha) at those points.
    """

    attributions: np.ndarray
    error: np.ndarray
    steps: np.ndarray
    evaluations: np.ndarray
    forward_evaluations: np.ndarray
    finite: np.ndarray
    path_alphas: list[np.ndarray]
    path_scores: list[np.ndarray]


def integrand_from_gradients(fn: ScoreGradFn) -> IntegrandFn:
    """The `IntegrandFn` of a `ScoreGradFn`, computed with NumPy."""

    def integrand(images, references, index, alphas, targets):
        inputs, baselines = images[index], references[index]
        scores, grads = fn(inputs, baselines, alphas, targets)
        scores = np.asarray(scores, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows are flagged
            contribution = (inputs - baselines) * np.asarray(grads, dtype=np.float32)
        flat = contribution.reshape(len(scores), -1)
        derivatives = flat.sum(axis=1, dtype=np.float64)
        finite = np.isfinite(scores) & np.isfinite(flat).all(axis=1)
        return scores, derivatives, finite, contribution

    return integrand


def completeness(
    attribution_sum: np.ndarray, target_score: np.ndarray, baseline_score: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Signed and relative completeness deltas.

    delta = sum(IG) - (F(x) - F(x')); relative = |delta| / |F(x) - F(x')|.
    A zero delta gives 0, and so do a delta and a difference both within the
    scores' float32 rounding (`SCORE_RESOLUTION` of the larger |score|): F(x) and
    F(x') come from separate model calls, so an input equal to its baseline (IG
    exactly 0) has scores a rounding apart, and a ratio of roundings means
    nothing. A larger delta against a zero difference gives inf (IG cannot be
    judged against it).

    Args:
      attribution_sum, target_score, baseline_score: float [R].

    Returns:
      (delta, relative): float64 [R] each.
    """
    attribution_sum = np.asarray(attribution_sum, dtype=np.float64)
    target_score = np.asarray(target_score, np.float64)
    baseline_score = np.asarray(baseline_score, np.float64)
    difference = target_score - baseline_score
    delta = attribution_sum - difference
    scale = np.maximum(np.abs(target_score), np.abs(baseline_score))
    return delta, relative_delta(delta, difference, scale)


def _check_shapes(inputs: np.ndarray, baselines: np.ndarray) -> None:
    if (
        inputs.ndim < 1
        or baselines.ndim != inputs.ndim + 1
        or baselines.shape[0] != inputs.shape[0]
        or baselines.shape[2:] != inputs.shape[1:]
    ):
        raise ValueError(
            f"baselines must have shape [M, B, *S] = [{', '.join(map(str, inputs.shape[:1]))}, "
            f"B, {', '.join(map(str, inputs.shape[1:]))}] for inputs of shape [M, *S] = "
            f"{list(inputs.shape)}, got {list(baselines.shape)}."
        )


def _check_callers_types(integrand, settings) -> None:
    """An `IGSettings`, and an integrand that takes the five arguments of an
    `IntegrandFn`: a `ScoreGradFn` passed as is failed in the engine's first call
    with "takes 4 positional arguments but 5 were given"."""
    if not isinstance(settings, IGSettings):
        raise TypeError(
            f"settings must be an IGSettings, e.g. IGSettings('riemann_trapezoid', 64), "
            f"got {type(settings).__name__}."
        )
    if not callable(integrand):
        raise TypeError(f"integrand must be an IntegrandFn, got {type(integrand).__name__}.")
    try:
        inspect.signature(integrand).bind(*range(5))
    except ValueError:  # no signature to read (a builtin): its first call tells
        return
    except TypeError as e:
        raise TypeError(
            "integrand must take (images, references, index, alphas, targets), an "
            "IntegrandFn; a ScoreGradFn fn(inputs, baselines, alphas, targets) becomes "
            f"one with integrand_from_gradients(fn) ({e})."
        ) from e


def _as_rows(image_index, targets, images: int) -> tuple[np.ndarray, np.ndarray]:
    """image_index and targets as int64 [R], refused unless they are R >= 1 integers
    each, image_index in [0, M): numpy would take a negative index from the end, and
    zip the shorter of the two."""
    index, targets = np.asarray(image_index), np.asarray(targets)
    for name, value in (("image_index", index), ("targets", targets)):
        if value.ndim != 1 or not len(value):
            raise ValueError(
                f"{name} must be a non-empty 1-D sequence [R], got shape {value.shape}."
            )
        if value.dtype.kind not in "iu":
            raise ValueError(f"{name} must hold integers, got {value.dtype} {value[:4].tolist()}.")
    if len(index) != len(targets):
        raise ValueError(
            f"image_index and targets give one value per row: {len(index)} and {len(targets)}."
        )
    outside = index[(index < 0) | (index >= images)]
    if len(outside):
        raise ValueError(
            f"image_index must be in [0, {images}) (the images of inputs), got {outside[0]}."
        )
    return index.astype(np.int64), targets.astype(np.int64)


def _check_scores(target_scores, baseline_scores, rows: int, baselines: int) -> None:
    """Adaptive mode's exact scores: F(x) of each row and F(x'_b) of each of its baselines."""
    if np.size(target_scores) != rows:
        raise ValueError(
            f"target_scores must hold F(x) of each row, [R] = [{rows}], "
            f"got shape {np.shape(target_scores)}."
        )
    if np.size(baseline_scores) != rows * baselines:
        raise ValueError(
            f"baseline_scores must hold F(x'_b) of each row and baseline, [R, B] = "
            f"[{rows}, {baselines}], got shape {np.shape(baseline_scores)}."
        )


def _row_error(
    attributions: np.ndarray,
    spreads: np.ndarray,
    known: np.ndarray,
    unexplained: np.ndarray,
    largest: np.ndarray,
) -> np.ndarray:
    """hypot(max(||kappa D||, L), U) / ||A|| per row, from [R, *S] means over the
    baselines of A and of each path's spread times its kappa, and [R] of the largest
    panel's error (`engine.Adaptive.largest`, over the baselines' count) and of the
    means of the paths' errors their spreads do not explain (`unexplained`); nan
    where a kappa is not `known`."""
    size = np.linalg.norm(attributions.reshape(len(attributions), -1), axis=1)
    signed = np.linalg.norm(spreads.reshape(len(spreads), -1), axis=1)
    spread = np.hypot(np.maximum(signed, largest), unexplained)
    with np.errstate(divide="ignore", invalid="ignore"):
        error = np.where(size > 0, spread / size, np.where(spread == 0, 0.0, np.inf))
    return np.where(known, error, np.nan)


def integrated_gradients(
    integrand: IntegrandFn,
    inputs: np.ndarray,
    baselines: np.ndarray,
    image_index: Sequence[int] | np.ndarray,
    targets: Sequence[int] | np.ndarray,
    settings: IGSettings,
    *,
    target_scores: np.ndarray | None = None,
    baseline_scores: np.ndarray | None = None,
    score_fn: ScoreFn | None = None,
) -> IGResult:
    """Integrated Gradients for R rows, with each row's estimated per-pixel error.

    Args:
      integrand: the model's `IntegrandFn` (`integrand_from_gradients` makes one
        from a `ScoreGradFn`).
      inputs: float32 [M, *S], the images in the model's input range.
      baselines: float32 [M, B, *S], B baselines per image; attributions are
        averaged over them.
      image_index: int [R], R >= 1, the image of each row, in [0, M).
      targets: int [R], the model output index each row attributes.
      settings: the rule, its nodes, the tolerance and the batching.
      target_scores: float [R], F(x); needed when `settings.tolerance > 0`.
      baseline_scores: float [R, B], F(x'_b); needed when `settings.tolerance > 0`.
      score_fn: forward-only scores for the panel edges of rules without edge
        nodes (adaptive mode); when None, the integrand computes them (its
        gradients unused).

    Returns:
      An `IGResult`.

    Raises:
      ValueError: arrays whose shapes or values do not fit the above (the message
        names the argument), or a tolerance without the exact scores.
      TypeError: settings that are not an `IGSettings`, or an integrand that does
        not take an `IntegrandFn`'s five arguments.
    """
    _check_callers_types(integrand, settings)
    inputs = np.asarray(inputs, dtype=np.float32)
    baselines = np.asarray(baselines, dtype=np.float32)
    _check_shapes(inputs, baselines)
    image_index, targets = _as_rows(image_index, targets, len(inputs))
    paths = Paths(integrand, inputs, baselines, image_index, targets, settings.path_batch_size)
    if settings.tolerance > 0 and (target_scores is None or baseline_scores is None):
        raise ValueError(
            "tolerance > 0 needs target_scores and baseline_scores: the exact "
            "F(x) - F(x') that completeness is checked against."
        )
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite paths are flagged
        if settings.tolerance == 0:
            fixed = Fixed(paths, settings.method, settings.steps, settings.channel_sum)
            return _result(fixed, paths, len(image_index))
        return _adaptive_rows(
            (integrand, inputs, baselines, image_index, targets, settings),
            paths,
            target_scores,
            baseline_scores,
            score_fn,
        )


def _adaptive_rows(call: tuple, paths: Paths, target_scores, baseline_scores, score_fn):
    """The adaptive engine on a call's rows, in chunks of rows where they would
    not fit the memory budget at once."""
    integrand, _, _, image_index, _, settings = call
    _check_scores(target_scores, baseline_scores, len(image_index), paths.num_baselines)
    chunks = _row_chunks(settings, paths, len(image_index))
    if len(chunks) > 1:
        return _concat(
            [_rows_of(call, rows, target_scores, baseline_scores, score_fn) for rows in chunks]
        )
    return _adaptive(
        paths, settings, target_scores, baseline_scores, score_fn or _scores_of(integrand)
    )


def _adaptive(paths: Paths, settings: IGSettings, target_scores, baseline_scores, score_fn):
    """The adaptive engine on all of `paths` (rows that fit the memory budget)."""
    f_start = np.asarray(baseline_scores, np.float64).reshape(-1)
    f_end = np.repeat(np.asarray(target_scores, np.float64), paths.num_baselines)
    run = Adaptive(paths, settings.method, settings, f_start, f_end, score_fn)
    return _result(run, paths, len(target_scores))


def _rows_of(call: tuple, rows: slice, target_scores, baseline_scores, score_fn) -> IGResult:
    """`integrated_gradients` of the rows `rows` of a call's arguments `call`."""
    integrand, inputs, baselines, image_index, targets, settings = call
    return integrated_gradients(
        integrand,
        inputs,
        baselines,
        image_index[rows],
        targets[rows],
        settings,
        target_scores=np.asarray(target_scores)[rows],
        baseline_scores=np.asarray(baseline_scores)[rows],
        score_fn=score_fn,
    )


def _row_chunks(settings: IGSettings, paths: Paths, rows: int) -> list[slice]:
    """Rows in chunks whose paths fit `settings.memory_budget` in the adaptive
    engine (one chunk at the defaults); rows are independent, so chunking
    changes no result."""
    per_row = paths.num_baselines * least_path_bytes(settings.method, paths.shape)
    # As few chunks as fit, of even sizes: not a last chunk of a row or two, whose
    # calls would be short.
    return even_parts(rows, max(1, settings.memory_budget // per_row))


def _concat(parts: list[IGResult]) -> IGResult:
    """The results of consecutive chunks of rows, as one."""
    fields = {}
    for field in dataclasses.fields(IGResult):
        values = [getattr(part, field.name) for part in parts]
        fields[field.name] = (
            [v for value in values for v in value]
            if isinstance(values[0], list)
            else np.concatenate(values)
        )
    return IGResult(**fields)


def _scores_of(integrand: IntegrandFn) -> ScoreFn:
    """A `ScoreFn` from an integrand: each point its own path, gradients unused."""

    def score(inputs, baselines, alphas, targets):
        index = np.arange(len(alphas), dtype=np.int32)
        return integrand(inputs, baselines, index, alphas, targets)[0]

    return score


def _result(run: Fixed | Adaptive, paths: Paths, rows: int) -> IGResult:
    b = paths.num_baselines
    shape = paths.shape
    attributions = run.attributions.reshape(rows, b, *shape).mean(axis=1)
    kappas = run.kappas()
    known = np.isfinite(kappas)
    with np.errstate(invalid="ignore"):  # non-finite paths are flagged in `finite`
        scaled = run.spreads * np.where(known, kappas, 0.0).reshape(-1, *([1] * len(shape)))
    spreads = scaled.reshape(rows, b, *shape).mean(axis=1)
    per_row = lambda a: a.reshape(rows, b)  # noqa: E731
    curves = [run.curve(r * b) for r in range(rows)]
    reduce = run.error_map
    return IGResult(
        attributions=attributions.astype(np.float32),
        error=_row_error(
            reduce(attributions),
            reduce(spreads),
            known.reshape(rows, b).all(axis=1),
            per_row(run.unexplained()).mean(axis=1),
            per_row(run.largest()).max(axis=1) / b,
        ),
        steps=per_row(run.nodes).max(axis=1),
        evaluations=per_row(run.evaluations).sum(axis=1),
        forward_evaluations=per_row(run.forward_evaluations).sum(axis=1),
        finite=per_row(paths.finite).all(axis=1),
        path_alphas=[alphas for alphas, _ in curves],
        path_scores=[scores for _, scores in curves],
    )
