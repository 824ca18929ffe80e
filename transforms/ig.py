"""Integrated Gradients, framework-free.

IG attributes F(x) - F(x') to the input features along the straight path
x' + a (x - x'), a in [0, 1]:

    IG_i(x) = (x_i - x'_i) * integral_0^1 dF/dx_i(x' + a (x - x')) da

The integral is approximated by a quadrature rule; every node costs one
gradient evaluation. Completeness says sum_i IG_i = F(x) - F(x'), so the
quadrature error of the attribution sum is observable per row.

Two modes:

* fixed (``tolerance == 0``): the rule with ``steps`` nodes on [0, 1], as in
  the IG paper, Captum and the seed notebooks.
* adaptive (``tolerance > 0``): the rule is applied on panels, sub-intervals of
  [0, 1]. F at panel boundaries is known (a forward pass), so the exact
  integral of every panel, F(b) - F(a), is known and each panel's quadrature
  error is observed, not estimated. Panels with the largest error are bisected
  until the row's relative completeness delta meets the tolerance or the
  budget ``max_steps`` is spent. Refinement goes exactly where the integrand
  bends (for image classifiers and dark baselines, mostly near a = 0, where
  the score saturates), and every other panel's result is kept.

Nothing here imports TensorFlow or Beam: the model enters through a
`ScoreGradFn` (and optionally a forward-only `ScoreFn`), which the TF adapter
(`transforms.tf_model`) supplies.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "METHODS",
    "IGResult",
    "IntegrandFn",
    "ScoreFn",
    "ScoreGradFn",
    "completeness",
    "has_baseline_node",
    "integrand_from_gradients",
    "integrated_gradients",
    "min_steps",
    "panel_nodes",
    "quadrature",
]

METHODS: tuple[str, ...] = (
    "gausslegendre",
    "gausslobatto",
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

ScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``fn(inputs, baselines, alphas, targets) -> scores``: `ScoreGradFn` without gradients."""

IntegrandFn = Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
"""``fn(images, references, index, alphas, targets, weights, segments, num_segments)
-> (scores, derivatives, finite, sums)``: the IG integrand of N path points, reduced.

The points lie on U paths: images, references: float32 [U, *S], the ends of
each path; index: int32 [N] in [0, U), the path of each point, whose ends are
gathered next to the model (N points of a few paths cost no N copies of
their ends). With x_j, x'_j the ends of point j's path and
c_j = (x_j - x'_j) * grad F(x'_j + alphas_j (x_j - x'_j)), the integrand at j:

  scores: float [N], F(point_j).
  derivatives: float [N], dF/da at the point = sum of c_j.
  finite: bool [N], the score and c_j are finite.
  sums: float32 [num_segments, *S], sum of weights_j * c_j over the points j of
    each segment (segments: int32 [N] in [0, num_segments)).

`integrand_from_gradients` builds one from any `ScoreGradFn` with NumPy; a
framework can supply its own that does the arithmetic next to the gradients.
"""

# Nodes per panel in adaptive mode. Two-node panels refined often beat fewer,
# larger, higher-order ones (benchmarks/ig_accuracy.py): near a = 0 the
# integrand of image classifiers has many ReLU6 kinks. Gauss-Lobatto panels
# have three nodes (Simpson's rule), two of them the edges, shared with the
# neighbours and reused when a panel is bisected.
_PANEL_NODES = {"gausslobatto": 3}
# Share of the initial panels graded geometrically towards a = 0.
_GEOMETRIC_FRACTION = 0.75
# Panels per path whose node vectors are kept so that they can still be
# refined; the rest are folded into one sum (a folded panel split later costs
# its nodes again). With the panels evaluated per round, this bounds memory
# whatever the steps: as many panels as the node vectors of all paths of a
# call fit in _NODE_VECTOR_BYTES, between 8 and 32 per path. At 32, adaptive
# trapezoid panels on 36 real photos (logit and softmax scores) evaluated no
# node twice; at 8 they spent 15-20 % more evaluations on nodes evaluated again.
_NODE_VECTOR_BYTES = 256 << 20
_MIN_ACTIVE_PANELS = 8
_MAX_ACTIVE_PANELS = 32
_PANELS_PER_ROUND = 8
# Bisections per path and refinement round: one at first, one more every
# _SPLIT_GROWTH_ROUNDS rounds the path has taken, at most _PANELS_PER_ROUND / 2.
# On this CPU a gradient call costs about 10 ms plus 9 ms per point, so the
# fewest points win: one bisection per round spent 23 % fewer evaluations and
# 24 % less time than four per round (softmax score, 36 photos; logit: 16 % and
# 10 %); the growth bounds the rounds of paths whose integrand is rough all over.
_SPLIT_GROWTH_ROUNDS = 8
_TWO_NODE_MINIMUM = ("riemann_trapezoid", "gausslobatto")


def _check_steps(method: str, steps: int) -> None:
    if method not in METHODS:
        raise ValueError(f"Unknown IG method {method!r}; choose one of {', '.join(METHODS)}.")
    minimum = min_steps(method)
    if not isinstance(steps, int | np.integer) or steps < minimum:
        raise ValueError(f"steps must be an integer >= {minimum} for {method}, got {steps!r}.")


def min_steps(method: str) -> int:
    """The fewest nodes of a rule: 2 where both ends are nodes, else 1."""
    return 2 if method in _TWO_NODE_MINIMUM else 1


def has_baseline_node(method: str) -> bool:
    """Whether the rule (fixed or on panels) takes the gradient at a = 0, the baseline."""
    return bool(quadrature(method, min_steps(method))[0][0] == 0.0)


def _gauss_lobatto(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n-point Gauss-Lobatto rule on [-1, 1]: both ends and the roots of P'_{n-1}.

    The interior nodes are the Gauss-Jacobi(1, 1) nodes, eigenvalues of their
    Jacobi matrix (Golub-Welsch); w_i = 2 / (n (n-1) P_{n-1}(x_i)^2).
    """
    k = np.arange(1, n - 2, dtype=np.float64)
    off = np.sqrt(k * (k + 2) / ((2 * k + 1) * (2 * k + 3)))
    interior = np.linalg.eigvalsh(np.diag(off, 1) + np.diag(off, -1)) if n > 2 else []
    nodes = np.concatenate([[-1.0], interior, [1.0]])
    nodes = (nodes - nodes[::-1]) / 2.0  # exactly symmetric
    legendre = np.polynomial.legendre.legval(nodes, [0.0] * (n - 1) + [1.0])
    return nodes, 2.0 / (n * (n - 1) * legendre**2)


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of a quadrature rule on [0, 1].

    Args:
      method: one of `METHODS`.
      steps: number of nodes, i.e. gradient evaluations.

    Returns:
      (alphas, weights): float64 [steps] each; alphas in [0, 1] ascending,
      weights sum to 1. The rules are exact for polynomials of degree
      2*steps-1 (Gauss-Legendre), 2*steps-3 (Gauss-Lobatto, whose first and
      last nodes are 0 and 1), 1 (trapezoid, middle) and 0 (left, right).
    """
    _check_steps(method, steps)
    n = int(steps)
    if method in ("gausslegendre", "gausslobatto"):
        rule = np.polynomial.legendre.leggauss if method == "gausslegendre" else _gauss_lobatto
        nodes, weights = rule(n)
        return (nodes + 1.0) / 2.0, weights / 2.0
    if method == "riemann_trapezoid":
        alphas = np.linspace(0.0, 1.0, n)
        weights = np.full(n, 1.0 / (n - 1))
        weights[[0, -1]] /= 2.0
        return alphas, weights
    weights = np.full(n, 1.0 / n)
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
    return (np.arange(n) + offset) / n, weights


def integrand_from_gradients(fn: ScoreGradFn) -> IntegrandFn:
    """The `IntegrandFn` of a `ScoreGradFn`, computed with NumPy."""

    def integrand(images, references, index, alphas, targets, weights, segments, num_segments):
        inputs, baselines = images[index], references[index]
        scores, grads = fn(inputs, baselines, alphas, targets)
        scores = np.asarray(scores, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows are flagged
            contribution = (inputs - baselines) * np.asarray(grads, dtype=np.float32)
        flat = contribution.reshape(len(scores), -1)
        derivatives = flat.sum(axis=1, dtype=np.float64)
        finite = np.isfinite(scores) & np.isfinite(flat).all(axis=1)
        weights = np.asarray(weights, np.float32).reshape((-1,) + (1,) * (contribution.ndim - 1))
        segments = np.asarray(segments)
        sums = np.zeros((num_segments, *contribution.shape[1:]), dtype=np.float32)
        with np.errstate(invalid="ignore", over="ignore"):
            contribution *= weights
            for k in range(num_segments):  # few segments per chunk: one sum each
                sums[k] = contribution[segments == k].sum(axis=0)
        return scores, derivatives, finite, sums

    return integrand


def _active_panels(paths: int, panel_bytes: int) -> int:
    """Panels per path kept unfolded, so that their node vectors (`panel_bytes` per
    panel, its nodes but a shared edge) fit in `_NODE_VECTOR_BYTES`."""
    fit = _NODE_VECTOR_BYTES // max(1, paths * panel_bytes)
    return int(min(_MAX_ACTIVE_PANELS, max(_MIN_ACTIVE_PANELS, fit)))


def panel_nodes(method: str, steps: int) -> int:
    """Nodes per panel in adaptive mode (at most `steps`)."""
    _check_steps(method, steps)
    return min(int(steps), _PANEL_NODES.get(method, 2))


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
      steps: int64 [R], gradient nodes per baseline in the final estimate.
      evaluations: int64 [R], gradient evaluations spent on the row, all
        baselines and refinements included.
      forward_evaluations: int64 [R], forward-only evaluations (panel
        boundaries in adaptive mode), all baselines included.
      finite: bool [R], False where a score or gradient was NaN or infinite.
      path_alphas: per row, float64 [K] points of the path with known F, ascending
        (of the first baseline's path when there are several).
      path_scores: per row, float64 [K] F(alpha) at those points.
    """

    attributions: np.ndarray
    steps: np.ndarray
    evaluations: np.ndarray
    forward_evaluations: np.ndarray
    finite: np.ndarray
    path_alphas: list[np.ndarray]
    path_scores: list[np.ndarray]


class _Paths:
    """The (row, baseline) paths of a call and the evaluation of points on them."""

    def __init__(self, integrand, inputs, baselines, image_index, targets, path_batch_size):
        self.integrand = integrand
        self.inputs = inputs
        self.baselines = baselines
        self.num_baselines = baselines.shape[1]
        rows = len(image_index)
        self.count = rows * self.num_baselines
        # Path p is row p // B, baseline p % B.
        self.image = np.repeat(image_index, self.num_baselines)
        self.base = np.tile(np.arange(self.num_baselines), rows)
        self.target = np.repeat(targets, self.num_baselines)
        self.chunk = path_batch_size
        self.finite = np.ones(self.count, dtype=bool)

    def parts(self, n: int) -> list[slice]:
        """The fewest calls of at most `chunk` points for n points, evenly sized
        (72 points at 32 per call: 24 + 24 + 24, not 32 + 32 + 8, whose last
        call would run the model at a small, slow batch)."""
        calls = -(-n // self.chunk)
        edges = np.linspace(0, n, calls + 1).round().astype(int) if n else [0]
        return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]

    def endpoints(self, path: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ends (x, x') of paths: float32 [len(path), *S] each."""
        return self.inputs[self.image[path]], self.baselines[self.image[path], self.base[path]]

    def gradients(self, path, alpha, weight, slot, accumulators):
        """accumulators[slot[j]] += weight[j] (x - x') grad F(point j), in bounded chunks.

        Returns the scores F and the path derivatives dF/da = (x - x') . grad F
        at the points, float64 [N] each.
        """
        n = len(path)
        scores = np.empty(n, dtype=np.float64)
        derivs = np.empty(n, dtype=np.float64)
        for part in self.parts(n):
            p = path[part]
            # Each path's ends once per call; the model gathers them per point.
            ids, index = np.unique(p, return_inverse=True)
            x, x_ref = self.endpoints(ids)
            # One sum per distinct slot of the chunk, added to its accumulator.
            slots, segments = np.unique(slot[part], return_inverse=True)
            s, d, ok, sums = self.integrand(
                x, x_ref, index.astype(np.int32), alpha[part].astype(np.float32),
                self.target[p], weight[part].astype(np.float32), segments.astype(np.int32),
                len(slots),
            )  # fmt: skip
            scores[part] = s
            derivs[part] = d
            np.logical_and.at(self.finite, p, np.asarray(ok, dtype=bool))
            for target, total in zip(slots, np.asarray(sums), strict=True):
                accumulators[target] += total
        return scores, derivs

    def scores(self, score_fn, path, alpha) -> np.ndarray:
        out = np.empty(len(path), dtype=np.float64)
        for part in self.parts(len(path)):
            x, x_ref = self.endpoints(path[part])
            out[part] = np.asarray(
                score_fn(x, x_ref, alpha[part].astype(np.float32), self.target[path[part]]),
                dtype=np.float64,
            )
        return out


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
    score_fn: ScoreFn | None = None,
    integrand: IntegrandFn | None = None,
) -> IGResult:
    """Integrated Gradients for R rows, fixed or adaptive.

    Args:
      fn: the model's scores and gradients, see `ScoreGradFn`.
      inputs: float32 [M, *S], the images in the model's input range.
      baselines: float32 [M, B, *S], B baselines per image; attributions are
        averaged over them.
      image_index: int [R], the image of each row.
      targets: int [R], the model output index each row attributes.
      method, steps: the quadrature rule and its number of nodes (in adaptive
        mode, the initial nodes, spread over panels of `panel_nodes` nodes).
      path_batch_size: path points per call of `fn`, across rows and steps;
        bounds memory.
      target_scores: float [R], F(x). Needed for adaptive mode.
      baseline_scores: float [R, B], F(x'_b). Needed for adaptive mode.
      tolerance: relative completeness tolerance per path; 0 = fixed mode.
      max_steps: cap on gradient evaluations per path in adaptive mode.
      score_fn: forward-only scores for panel boundaries; defaults to `fn`.
      integrand: the model's own `IntegrandFn` (same results as `fn`, faster);
        defaults to `integrand_from_gradients(fn)`.

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
    integrand = integrand or integrand_from_gradients(fn)
    paths = _Paths(integrand, inputs, baselines, image_index, targets, path_batch_size)
    adaptive = tolerance > 0 and target_scores is not None and baseline_scores is not None
    if adaptive:
        f_start = np.asarray(baseline_scores, np.float64).reshape(-1)
        f_end = np.repeat(np.asarray(target_scores, np.float64), paths.num_baselines)
        if score_fn is None:
            score_fn = lambda *a: fn(*a)[0]  # noqa: E731 - gradients wasted, still right
        run = _Adaptive(paths, method, steps, tolerance, max_steps or steps, f_start, f_end,
                        score_fn)  # fmt: skip
    else:
        run = _Fixed(paths, method, steps)
    vectors = run.vectors()
    rows = len(image_index)
    attributions = vectors.reshape(rows, paths.num_baselines, *inputs.shape[1:]).mean(axis=1)
    per_row = lambda a: a.reshape(rows, paths.num_baselines)  # noqa: E731
    curves = [run.curve(r * paths.num_baselines) for r in range(rows)]
    return IGResult(
        attributions=attributions.astype(np.float32, copy=False),
        steps=per_row(run.nodes).max(axis=1),
        evaluations=per_row(run.evaluations).sum(axis=1),
        forward_evaluations=per_row(run.forward_evaluations).sum(axis=1),
        finite=per_row(paths.finite).all(axis=1),
        path_alphas=[alphas for alphas, _ in curves],
        path_scores=[scores for _, scores in curves],
    )


class _Fixed:
    """One rule with `steps` nodes on [0, 1] for every path."""

    def __init__(self, paths: _Paths, method: str, steps: int):
        alphas, weights = quadrature(method, steps)
        n, k = paths.count, len(alphas)
        self._accumulators = np.zeros((n, *paths.inputs.shape[1:]), dtype=np.float32)
        path = np.repeat(np.arange(n), k)
        scores, _ = paths.gradients(
            path, np.tile(alphas, n), np.tile(weights, n), path, self._accumulators
        )
        self._alphas = alphas
        self._scores = scores.reshape(n, k)
        self.nodes = np.full(n, k, dtype=np.int64)
        self.evaluations = self.nodes.copy()
        self.forward_evaluations = np.zeros(n, dtype=np.int64)

    def vectors(self) -> np.ndarray:
        return self._accumulators

    def curve(self, path: int) -> tuple[np.ndarray, np.ndarray]:
        return self._alphas, self._scores[path]


def _initial_edges(count: int) -> np.ndarray:
    """Edges of `count` initial panels, graded towards a = 0.

    Scores of image classifiers change fastest near the baseline (they
    saturate along the path), so most panels halve in width towards 0
    (1/2, 1/4, ...) and the rest split [1/2, 1] evenly. Refinement corrects
    the mesh where this prior is wrong.
    """
    if count < 3:
        return np.linspace(0.0, 1.0, count + 1)
    geometric = max(1, int(round(count * _GEOMETRIC_FRACTION)))
    uniform = count - geometric
    edges = [0.0] + [2.0**-k for k in range(geometric, 0, -1)]
    return np.array(edges + list(np.linspace(0.5, 1.0, uniform + 1)[1:]))


@dataclasses.dataclass(eq=False)
class _Panel:
    a: float
    b: float
    nodes: tuple[float, ...]
    error: float  # quadrature estimate of int_a^b dF/da minus the exact F(b) - F(a)
    active: bool = True  # False once its weighted node vectors are folded into the sum


class _Adaptive:
    """Composite rule on panels, bisecting the panels with the largest observed error.

    Every node evaluated leaves its F(a) and dF/da (scalars, all kept) and its
    vector c(a) = (x - x') * grad F (kept while an active panel uses it). A
    bisected panel's nodes that are nodes of its halves too (the edges and the
    middle of a Gauss-Lobatto or trapezoid panel) are reused, not evaluated again.

    Memory: each path keeps one folded sum plus the node vectors of at most
    K panels (+ one round), whatever the number of steps; K (8 to 32) is set by
    `_active_panels` from the number of paths and the size of a vector. A
    folded panel that must be split after all is taken out of the sum again,
    its node vectors evaluated again where they were dropped.
    """

    def __init__(self, paths, method, steps, tolerance, max_steps, f_start, f_end, score_fn):
        self.paths = paths
        self.t, self.w = quadrature(method, panel_nodes(method, steps))
        shared = int(self.t[0] == 0.0 and self.t[-1] == 1.0)  # edges are nodes
        self.tolerance = tolerance
        self.max_steps = max(max_steps, steps)
        self.score_fn = score_fn
        self.difference = f_end - f_start
        n = paths.count
        self.folded = np.zeros((n, *paths.inputs.shape[1:]), dtype=np.float32)
        self.active_panels = _active_panels(n, self.folded[0].nbytes * (len(self.t) - shared))
        self.vectors_at: list[dict[float, np.ndarray]] = [{} for _ in range(n)]
        self.derivative: list[dict[float, float]] = [{} for _ in range(n)]
        # F on the path wherever known: ends, panel edges, and every node evaluated.
        self.known: list[dict[float, float]] = [{0.0: f_start[p], 1.0: f_end[p]} for p in range(n)]
        self.panels: list[list[_Panel]] = [[] for _ in range(n)]
        self.evaluations = np.zeros(n, dtype=np.int64)
        self.forward_evaluations = np.zeros(n, dtype=np.int64)
        self.rounds = np.zeros(n, dtype=np.int64)  # refinement rounds taken per path

        count = max(1, (steps - shared) // (len(self.t) - shared))
        edges = _initial_edges(count).tolist()
        spans = list(zip(edges[:-1], edges[1:], strict=True))
        group_size = self.active_panels + _PANELS_PER_ROUND  # what memory holds per path anyway
        for i in range(0, len(spans), group_size):
            group = spans[i : i + group_size]
            # The group's last edge is the next group's first node: kept.
            self._evaluate([(p, a, b) for p in range(n) for a, b in group], [], keep=group[-1][1])
        self._refine()
        self.nodes = np.array(
            [len({x for q in panels for x in q.nodes}) for panels in self.panels], dtype=np.int64
        )

    def _nodes(self, a: float, b: float) -> tuple[float, ...]:
        # Exact ends, and the middle computed as `_refine` splits, so that a node
        # shared with a neighbour or a half is found again.
        return tuple(a if t == 0.0 else b if t == 1.0 else a + (b - a) * t for t in self.t.tolist())

    def _contribution(self, path: int, q: _Panel) -> np.ndarray:
        vectors = self.vectors_at[path]
        total = np.zeros_like(self.folded[path])
        for w, x in zip(self.w.tolist(), q.nodes, strict=True):
            total += np.float32((q.b - q.a) * w) * vectors[x]
        return total

    def _evaluate(self, spans, unfold, keep: float | None = None) -> None:
        """New panels (path, a, b), and folded panels (path, panel) to take out of the sum."""
        paths = self.paths
        need = {(p, x) for p, a, b in spans for x in self._nodes(a, b)}
        need |= {(p, x) for p, q in unfold for x in q.nodes}
        missing = sorted((p, x) for p, x in need if x not in self.vectors_at[p])
        # Edges that are not nodes (Gauss-Legendre panels) and whose F is unknown: forward passes.
        edges = sorted(
            {(p, e) for p, a, b in spans for e in (a, b)
             if e not in self.known[p] and (p, e) not in need}
        )  # fmt: skip
        if edges:
            found = paths.scores(
                self.score_fn, np.array([p for p, _ in edges]), np.array([e for _, e in edges])
            )
            for (p, e), s in zip(edges, found.tolist(), strict=True):
                self.known[p][e] = s
                self.forward_evaluations[p] += 1
        if missing:
            path = np.array([p for p, _ in missing])
            vectors = [np.zeros_like(self.folded[0]) for _ in missing]
            scores, derivs = paths.gradients(
                path, np.array([x for _, x in missing]), np.ones(len(missing)),
                np.arange(len(missing)), vectors,
            )  # fmt: skip
            for (p, x), s, d, v in zip(missing, scores.tolist(), derivs.tolist(), vectors,
                                       strict=True):  # fmt: skip
                self.known[p][x], self.derivative[p][x], self.vectors_at[p][x] = s, d, v
                self.evaluations[p] += 1
        for p, q in unfold:
            self.folded[p] -= self._contribution(p, q)
        for p, a, b in spans:
            nodes = self._nodes(a, b)
            estimate = (b - a) * sum(
                w * self.derivative[p][x] for w, x in zip(self.w.tolist(), nodes, strict=True)
            )
            exact = self.known[p][b] - self.known[p][a]
            self.panels[p].append(_Panel(a, b, nodes, estimate - exact))
        for p in sorted({p for p, _, _ in spans} | {p for p, _ in unfold}):
            self._fold(p, keep)

    def _fold(self, path: int, keep: float | None) -> None:
        """Keeps the K active panels with the largest errors; folds the rest into the sum."""
        active = [q for q in self.panels[path] if q.active]
        surplus = max(0, len(active) - self.active_panels)
        for q in heapq.nsmallest(surplus, active, key=lambda q: abs(q.error)):
            self.folded[path] += self._contribution(path, q)
            q.active = False
        used = {x for q in self.panels[path] if q.active for x in q.nodes} | {keep}
        vectors = self.vectors_at[path]
        for x in [x for x in vectors if x not in used]:
            del vectors[x]

    def _refine(self) -> None:
        while True:
            spans, unfold = [], []
            for p in range(self.paths.count):
                delta = sum(q.error for q in self.panels[p])
                if not self.paths.finite[p] or abs(delta) <= self.tolerance * abs(
                    self.difference[p]
                ):
                    continue
                worst_first = sorted(self.panels[p], key=lambda q: -abs(q.error))
                budget = self.max_steps - self.evaluations[p]
                planned: set[float] = set()
                # The worst panel, and others nearly as bad once the path has
                # taken a few rounds, in one round.
                splits = min(1 + self.rounds[p] // _SPLIT_GROWTH_ROUNDS, _PANELS_PER_ROUND // 2)
                self.rounds[p] += 1
                for q in worst_first[:splits]:
                    middle = q.a + (q.b - q.a) * 0.5
                    if abs(q.error) < abs(worst_first[0].error) / 4 or not q.a < middle < q.b:
                        break
                    new = set(self._nodes(q.a, middle) + self._nodes(middle, q.b))
                    if not q.active:
                        new |= set(q.nodes)
                    new -= planned | self.vectors_at[p].keys()
                    if len(new) > budget:
                        break
                    budget -= len(new)
                    planned |= new
                    self.panels[p].remove(q)
                    if not q.active:
                        unfold.append((p, q))
                    spans += [(p, q.a, middle), (p, middle, q.b)]
            if not spans:
                return
            self._evaluate(spans, unfold)

    def vectors(self) -> np.ndarray:
        """float32 [paths, *S]: folded sums plus the active panels."""
        out = self.folded.copy()
        for p, panels in enumerate(self.panels):
            for q in panels:
                if q.active:
                    out[p] += self._contribution(p, q)
        return out

    def curve(self, path: int) -> tuple[np.ndarray, np.ndarray]:
        alphas = np.array(sorted(self.known[path]))
        return alphas, np.array([self.known[path][a] for a in alphas])
