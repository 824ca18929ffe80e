"""Integrated Gradients, framework-free.

IG attributes F(x) - F(x') to the input features along the straight path
x' + a (x - x'), a in [0, 1]:

    IG_i(x) = (x_i - x'_i) * integral_0^1 dF/dx_i(x' + a (x - x')) da

The integral is approximated by a quadrature rule with `steps` nodes, i.e.
`steps` gradient evaluations per image, target and baseline. Completeness says
sum_i IG_i = F(x) - F(x'), so the quadrature error is observable per row.

Nothing here imports TensorFlow or Beam: the model enters through a
`ScoreGradFn`, which the TF adapter (`transforms.tf_model`) supplies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "METHODS",
    "NESTED_METHODS",
    "IGResult",
    "ScoreGradFn",
    "completeness",
    "integrated_gradients",
    "quadrature",
    "refinement",
]

METHODS: tuple[str, ...] = (
    "gausslegendre",
    "riemann_trapezoid",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
)

#: Methods whose refined node set contains the current one, so refinement
#: reuses every gradient already computed (see `refinement`).
NESTED_METHODS: tuple[str, ...] = (
    "riemann_trapezoid",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
)

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


def _check_steps(method: str, steps: int) -> None:
    if method not in METHODS:
        raise ValueError(f"Unknown IG method {method!r}; choose one of {', '.join(METHODS)}.")
    minimum = 2 if method == "riemann_trapezoid" else 1
    if not isinstance(steps, int | np.integer) or steps < minimum:
        raise ValueError(f"steps must be an integer >= {minimum} for {method}, got {steps!r}.")


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of a quadrature rule on [0, 1].

    Args:
      method: one of `METHODS`.
      steps: number of nodes, i.e. gradient evaluations.

    Returns:
      (alphas, weights): float64 [steps] each; alphas in [0, 1] ascending,
      weights sum to 1. The rules are exact for polynomials of degree
      2*steps-1 (Gauss-Legendre), 1 (trapezoid, middle) and 0 (left, right).
    """
    _check_steps(method, steps)
    n = int(steps)
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return (nodes + 1.0) / 2.0, weights / 2.0
    if method == "riemann_trapezoid":
        alphas = np.linspace(0.0, 1.0, n)
        weights = np.full(n, 1.0 / (n - 1))
        weights[[0, -1]] /= 2.0
        return alphas, weights
    weights = np.full(n, 1.0 / n)
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
    return (np.arange(n) + offset) / n, weights


def refinement(method: str, steps: int) -> tuple[int, float, np.ndarray, np.ndarray]:
    """How to refine a rule with `steps` nodes to a finer one.

    For the nested Riemann rules every old node is a node of the finer rule and
    its weight is scaled by one constant, so

        finer_estimate = scale * old_estimate + sum_k new_weights[k] * g(new_alphas[k])

    For Gauss-Legendre nothing is reusable: the finer rule (2x nodes) is
    returned whole with ``scale = 0``.

    Returns:
      (new_steps, scale, new_alphas, new_weights); the arrays are float64 and
      hold only the nodes that must be evaluated.
    """
    _check_steps(method, steps)
    n = int(steps)
    if method == "riemann_trapezoid":
        # n nodes at i/(n-1) -> 2n-1 nodes at i/(2n-2): the odd ones are new.
        m = 2 * n - 1
        alphas, weights = quadrature(method, m)
        return m, 0.5, alphas[1::2], weights[1::2]
    if method in ("riemann_left", "riemann_right"):
        m = 2 * n
        alphas, weights = quadrature(method, m)
        new = slice(1, None, 2) if method == "riemann_left" else slice(0, None, 2)
        return m, 0.5, alphas[new], weights[new]
    if method == "riemann_middle":
        # (i + 1/2)/n are nodes (3i + 3/2)/(3n) of the 3n-node rule: keep those.
        m = 3 * n
        alphas, weights = quadrature(method, m)
        keep = np.arange(m) % 3 == 1
        return m, 1.0 / 3.0, alphas[~keep], weights[~keep]
    alphas, weights = quadrature(method, 2 * n)
    return 2 * n, 0.0, alphas, weights


def completeness(
    attribution_sum: np.ndarray, target_score: np.ndarray, baseline_score: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Signed and relative completeness deltas.

    delta = sum(IG) - (F(x) - F(x')); relative = |delta| / |F(x) - F(x')|.
    A zero score difference with a zero delta gives 0; with a non-zero delta,
    inf (IG cannot be judged against a zero difference).

    Args:
      attribution_sum, target_score, baseline_score: float [R].

    Returns:
      (delta, relative): float64 [R] each.
    """
    attribution_sum = np.asarray(attribution_sum, dtype=np.float64)
    difference = np.asarray(target_score, np.float64) - np.asarray(baseline_score, np.float64)
    delta = attribution_sum - difference
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.abs(delta) / np.abs(difference)
    relative = np.where(delta == 0.0, 0.0, relative)
    return delta, relative


@dataclasses.dataclass
class IGResult:
    """Attributions of R rows (image, target).

    Attributes:
      attributions: float32 [R, *S], averaged over the baselines.
      steps: int64 [R], nodes per baseline in the final estimate.
      evaluations: int64 [R], gradient evaluations spent on the row, all
        baselines and refinements included.
      finite: bool [R], False where a score or gradient was NaN or infinite.
      path_alphas: per row, float64 [K] nodes of the final estimate.
      path_scores: per row, float64 [B, K] F(alpha) per baseline at those nodes.
    """

    attributions: np.ndarray
    steps: np.ndarray
    evaluations: np.ndarray
    finite: np.ndarray
    path_alphas: list[np.ndarray]
    path_scores: list[np.ndarray]


def _accumulate(
    fn: ScoreGradFn,
    inputs: np.ndarray,
    baselines: np.ndarray,
    image_index: np.ndarray,
    targets: np.ndarray,
    rows: np.ndarray,
    alphas: np.ndarray,
    weights: np.ndarray,
    attributions: np.ndarray,
    finite: np.ndarray,
    path_batch_size: int,
) -> np.ndarray:
    """Adds sum_k w_k (x - x'_b) grad F(point_rbk) / B into attributions[rows].

    Points are laid out row-major over (row, baseline, alpha) and evaluated in
    chunks of at most `path_batch_size`, so memory is bounded by the chunk,
    not by the number of steps. Returns the path scores, float64 [len(rows), B, K].
    """
    num_baselines = baselines.shape[1]
    k = len(alphas)
    total = len(rows) * num_baselines * k
    scores_out = np.empty(total, dtype=np.float64)
    for start in range(0, total, path_batch_size):
        flat = np.arange(start, min(start + path_batch_size, total))
        row_pos, rest = np.divmod(flat, num_baselines * k)
        base_pos, alpha_pos = np.divmod(rest, k)
        row = rows[row_pos]
        image = image_index[row]
        x = inputs[image]
        x_ref = baselines[image, base_pos]
        scores, grads = fn(
            x,
            x_ref,
            alphas[alpha_pos].astype(np.float32),
            targets[row].astype(np.int64),
        )
        scores = np.asarray(scores, dtype=np.float64)
        grads = np.asarray(grads, dtype=np.float32)
        scores_out[flat] = scores
        ok = np.isfinite(scores) & np.isfinite(grads.reshape(len(flat), -1)).all(axis=1)
        contribution = (x - x_ref) * grads
        contribution *= (
            (weights[alpha_pos] / num_baselines)
            .astype(np.float32)
            .reshape((-1,) + (1,) * (grads.ndim - 1))
        )
        # Several points of a chunk belong to the same row: unbuffered add.
        np.add.at(attributions, row, contribution)
        np.logical_and.at(finite, row, ok)
    return scores_out.reshape(len(rows), num_baselines, k)


def integrated_gradients(
    fn: ScoreGradFn,
    inputs: np.ndarray,
    baselines: np.ndarray,
    image_index: Sequence[int] | np.ndarray,
    targets: Sequence[int] | np.ndarray,
    *,
    method: str,
    steps: int,
    path_batch_size: int,
    target_scores: np.ndarray | None = None,
    baseline_scores: np.ndarray | None = None,
    tolerance: float = 0.0,
    max_steps: int | None = None,
) -> IGResult:
    """Integrated Gradients for R rows, with optional adaptive refinement.

    Args:
      fn: the model's scores and gradients, see `ScoreGradFn`.
      inputs: float32 [M, *S], the images in the model's input range.
      baselines: float32 [M, B, *S], B baselines per image; attributions are
        averaged over them.
      image_index: int [R], the image of each row.
      targets: int [R], the model output index each row attributes.
      method, steps: the quadrature rule and its number of nodes.
      path_batch_size: path points per call of `fn`, across rows and steps.
      target_scores, baseline_scores: float [R] F(x) and mean_b F(x'_b); only
        needed for refinement.
      tolerance: rows whose relative completeness delta exceeds it are refined
        (nodes doubled, tripled for riemann_middle) until they meet it or would
        exceed `max_steps`; 0 disables refinement.
      max_steps: cap on nodes per baseline during refinement.

    Returns:
      An `IGResult`.
    """
    _check_steps(method, steps)
    if path_batch_size < 1:
        raise ValueError(f"path_batch_size must be >= 1, got {path_batch_size}.")
    inputs = np.asarray(inputs, dtype=np.float32)
    baselines = np.asarray(baselines, dtype=np.float32)
    if baselines.ndim != inputs.ndim + 1 or baselines.shape[2:] != inputs.shape[1:]:
        raise ValueError(
            f"baselines must have shape [M, B, *S] = [{inputs.shape[0]}, B, "
            f"{', '.join(map(str, inputs.shape[1:]))}], got {baselines.shape}."
        )
    image_index = np.asarray(image_index, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    num_rows = len(image_index)
    num_baselines = baselines.shape[1]
    attributions = np.zeros((num_rows, *inputs.shape[1:]), dtype=np.float32)
    finite = np.ones(num_rows, dtype=bool)
    all_rows = np.arange(num_rows)

    alphas, weights = quadrature(method, steps)
    path_scores = _accumulate(
        fn, inputs, baselines, image_index, targets, all_rows, alphas, weights,
        attributions, finite, path_batch_size,
    )  # fmt: skip
    row_alphas = [alphas] * num_rows
    row_scores = list(path_scores)
    row_steps = np.full(num_rows, steps, dtype=np.int64)
    evaluations = np.full(num_rows, steps * num_baselines, dtype=np.int64)

    refine = tolerance > 0 and target_scores is not None and baseline_scores is not None
    cap = max_steps if max_steps is not None else steps
    current = steps
    while refine:
        flat = attributions.reshape(num_rows, -1).sum(axis=1, dtype=np.float64)
        _, relative = completeness(flat, target_scores, baseline_scores)
        new_steps, scale, new_alphas, new_weights = refinement(method, current)
        pending = np.flatnonzero((row_steps == current) & finite & ~(relative <= tolerance))
        if len(pending) == 0 or new_steps > cap:
            break
        attributions[pending] *= np.float32(scale)
        scores = _accumulate(
            fn, inputs, baselines, image_index, targets, pending, new_alphas,
            new_weights, attributions, finite, path_batch_size,
        )  # fmt: skip
        for i, row in enumerate(pending):
            if scale == 0.0:
                row_alphas[row], row_scores[row] = new_alphas, scores[i]
            else:
                merged = np.concatenate([row_alphas[row], new_alphas])
                order = np.argsort(merged, kind="stable")
                row_alphas[row] = merged[order]
                row_scores[row] = np.concatenate([row_scores[row], scores[i]], axis=1)[:, order]
        row_steps[pending] = new_steps
        evaluations[pending] += len(new_alphas) * num_baselines
        current = new_steps
    return IGResult(
        attributions=attributions,
        steps=row_steps,
        evaluations=evaluations,
        finite=finite,
        path_alphas=row_alphas,
        path_scores=row_scores,
    )
