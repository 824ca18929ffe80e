"""The IG engines: a fixed rule on [0, 1], or adaptive panels refined per pixel.

Both evaluate path points through a `_Paths` object in bounded chunks and
leave, per path (an image, a target and a baseline), two vectors over all
input values: the attribution estimate A and the spread D = fine - coarse
estimate on the same nodes (see `transforms.ig.rules`), whose norm times a
kappa estimates the per-pixel error ||A - A_true||: the rule's random-walk
kappa, or a larger one where pairs of neighbouring gaps (`neighbour_pairs`)
show the integrand to be rougher than a random walk.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
from collections.abc import Sequence

import numpy as np

from transforms.ig import rules

__all__ = [
    "SCORE_RESOLUTION",
    "Adaptive",
    "Fixed",
    "Paths",
    "even_parts",
    "least_path_bytes",
    "relative_delta",
]

#: A score's relative float32 rounding across model calls (batch shapes change
#: the kernels): score differences within it of the scores are not resolved.
SCORE_RESOLUTION = 16 * float(np.finfo(np.float32).eps)

# Nodes of a path whose vectors are kept so that their panels can still be
# refined: as many panels per path as fit the memory budget, at least 8. A
# folded panel (its vectors dropped, its contribution kept in the sums) that
# must be split after all has its nodes evaluated again.
_MIN_ACTIVE_PANELS = 8
# Cuts per path and round (a panel split in m parts takes m - 1), at most
# (one more where the last panel that still fits is cut in three); fewer where
# the error model predicts that fewer reach the tolerance (it expects a cut
# into m parts to divide the panel's share of the squared error by m^2, as for
# a random walk). Small rounds follow the error closely and
# stop close to the tolerance: 8 cost 5 % fewer evaluations than 32 for the
# same per-pixel error (docs/accuracy.md §3).
_MAX_SPLITS_PER_ROUND = 8
# Where each round aims, as a fraction of the tolerance. With small rounds the
# rows stop close to the tolerance anyway; 0.9 cost 3 % more evaluations for a
# median per-pixel error 0.04 points lower (docs/accuracy.md §3).
_AIM = 1.0
# A panel's scalar error is unexplained (`Adaptive._unexplained`) beyond this many
# times what an error vector like its spread sums to at most: the spread estimates
# a panel's error within a factor 2 (docs/accuracy.md), so only what no error of
# its spread's size and shape can make is counted.
_UNEXPLAINED_MARGIN = 2.0
# Scores rounded more coarsely than SCORE_RESOLUTION (a float32 mean of many values:
# a linear probe's global average pool over 224 x 224 rounded F by up to about
# 90 eps of |F|) gave most of a path's panels a scalar error beyond it, each read as
# a unit that switched unseen, on one value: rows flagged with exact maps
# (docs/accuracy.md). Where at least half of at least `_NOISE_MIN_PANELS` panels
# exceed it, `_NOISE_FACTOR` times their median excess is taken for the rounding,
# at most eps sqrt(n) of the scores (n: the map's values), the rounding of a sum of
# n values of their size; an unseen switch is one panel's error, far above it.
_NOISE_MIN_PANELS = 8
_NOISE_FACTOR = 4.0
_EPS = float(np.finfo(np.float32).eps)


class Paths:
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

    @property
    def shape(self) -> tuple[int, ...]:
        return self.inputs.shape[1:]

    def parts(self, n: int) -> list[slice]:
        """The fewest calls of at most `chunk` points for n points (`even_parts`), or
        of at most the integrand's `call_size()` where it has one and that is fewer."""
        sized = getattr(self.integrand, "call_size", None)
        return even_parts(n, min(self.chunk, sized()) if sized else self.chunk)

    def row(self, path: int) -> range:
        """The paths of `path`'s row: one per baseline, consecutive."""
        first = path - path % self.num_baselines
        return range(first, first + self.num_baselines)

    def endpoints(self, path: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ends (x, x') of paths: float32 [len(path), *S] each."""
        return self.inputs[self.image[path]], self.baselines[self.image[path], self.base[path]]

    def gradients(self, path, alpha, out, parts=None):
        """out[j] = c(point j) = (x - x') grad F(point j), in bounded chunks.

        Returns the scores F and the path derivatives dF/da = sum of c at the
        points, float64 [N] each; out: an array [N, *S] or N arrays [*S], float32;
        parts: the slices of the points each model call takes, `self.parts(N)`
        unless given (a caller that already asked `parts` passes one call).
        """
        n = len(path)
        scores = np.empty(n, dtype=np.float64)
        derivs = np.empty(n, dtype=np.float64)
        for part in self.parts(n) if parts is None else parts:
            p = path[part]
            # Each path's ends once per call; the model gathers them per point.
            ids, index = np.unique(p, return_inverse=True)
            x, x_ref = self.endpoints(ids)
            s, d, ok, contributions = self.integrand(
                x, x_ref, index.astype(np.int32), alpha[part].astype(np.float32), self.target[p]
            )
            scores[part] = s
            derivs[part] = d
            np.logical_and.at(self.finite, p, np.asarray(ok, dtype=bool))
            for j, c in enumerate(np.asarray(contributions), start=part.start):
                out[j][...] = c
        return scores, derivs

    def scores(self, score_fn, path, alpha) -> np.ndarray:
        out = np.empty(len(path), dtype=np.float64)
        for part in even_parts(len(path), self.chunk):  # forward passes: not timed
            x, x_ref = self.endpoints(path[part])
            out[part] = np.asarray(
                score_fn(x, x_ref, alpha[part].astype(np.float32), self.target[path[part]]),
                dtype=np.float64,
            )
        return out


def error_map(a: np.ndarray, channel_sum: bool) -> np.ndarray:
    """The map whose relative error is estimated: `a` itself, or its sum over the
    last axis (channels), the pixel map a caller keeps (`IGSettings.channel_sum`)."""
    return a.sum(axis=-1) if channel_sum else a


class Fixed:
    """One rule with `steps` nodes on [0, 1] for every path.

    Node vectors come back one per point and are summed here, twice: with the
    rule's weights (A) and with its spread weights (D).
    """

    def __init__(self, paths: Paths, method: str, steps: int, channel_sum: bool = False):
        self.error_map = functools.partial(error_map, channel_sum=channel_sum)
        alphas, weights = rules.quadrature(method, steps)
        spread = rules.rule_spread(method, alphas)
        n, k = paths.count, len(alphas)
        self.attributions = np.zeros((n, *paths.shape), dtype=np.float64)
        self.spreads = np.zeros((n, *paths.shape), dtype=np.float64)
        path, node = np.repeat(np.arange(n), k), np.tile(np.arange(k), n)
        scores = np.empty(n * k, dtype=np.float64)
        # The last two nodes of each path seen, for the pairs that span calls.
        tails: dict[int, list[tuple[float, np.ndarray]]] = {}
        pairs: list[list[np.ndarray]] = [[] for _ in range(n)]
        for part in paths.parts(n * k):  # one model call each: bounded memory
            p, i = path[part], node[part]
            vectors = np.empty((len(p), *paths.shape), dtype=np.float32)
            scores[part], _ = paths.gradients(p, alphas[i], vectors, [slice(0, len(p))])
            for q in np.unique(p):
                own = p == q
                self.attributions[q] += np.tensordot(weights[i[own]], vectors[own], axes=1)
                self.spreads[q] += np.tensordot(spread[i[own]], vectors[own], axes=1)
                seen = tails.get(q, []) + list(
                    zip(alphas[i[own]].tolist(), vectors[own], strict=True)
                )
                pairs[q].append(neighbour_pairs(seen))
                tails[q] = seen[-2:]
        scores = scores.reshape(n, k)
        self._kappas = fixed_kappas(alphas, weights, spread, pairs)
        self._alphas = alphas
        self._scores = scores
        self.nodes = np.full(n, k, dtype=np.int64)
        self.evaluations = self.nodes.copy()
        self.forward_evaluations = np.zeros(n, dtype=np.int64)

    def kappas(self) -> np.ndarray:
        """Per path, the error per unit of spread for the roughness its
        neighbouring nodes show (`rules.correlation_length`)."""
        return self._kappas

    def unexplained(self) -> np.ndarray:
        """Per path, 0: a fixed rule knows F at no panel edges (`Adaptive.unexplained`)."""
        return np.zeros(len(self.nodes))

    def largest(self) -> np.ndarray:
        """Per path, 0: one rule over [0, 1], no panels (`Adaptive.largest`)."""
        return np.zeros(len(self.nodes))

    def curve(self, path: int) -> tuple[np.ndarray, np.ndarray]:
        return self._alphas, self._scores[path]


def fixed_kappas(alphas, weights, spread, pairs) -> np.ndarray:
    """Per path, the rule's kappa for the roughness its pairs show: the
    random-walk kappa unless they show more; never below what a smooth trend
    needs (`rules.trend_kappa`: left and right rules)."""
    walk = rules.error_ratio(alphas, weights, spread, float("inf"))
    least = rules.trend_kappa(alphas, weights, spread)
    lengths = [rules.correlation_length(np.concatenate(own)) for own in pairs]
    kappas = [
        walk if np.isinf(ell) else rules.error_ratio(alphas, weights, spread, ell)
        for ell in lengths
    ]
    return np.maximum(np.array(kappas, dtype=np.float64), least)


def relative_delta(delta, difference, scale) -> np.ndarray:
    """|delta| / |difference|, elementwise: the relative completeness delta, as the
    results report it and refinement reads it. 0 where delta is 0, and where delta
    and difference are both within the float32 rounding of scores of size `scale`
    (`SCORE_RESOLUTION` of the larger |score|), whose ratio means nothing; inf
    for a larger delta against a zero difference."""
    delta, difference = np.abs(delta), np.abs(difference)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = delta / difference
    rounding = SCORE_RESOLUTION * np.abs(scale)
    unresolved = (delta <= rounding) & (difference <= rounding)
    return np.where((delta == 0.0) | unresolved, 0.0, relative)


def neighbour_pairs(nodes: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """(h1, h2, |d1|^2 + |d2|^2, |d1 + d2|^2) of each two neighbouring gaps of
    ascending (a, c(a)) nodes, d the differences of c over the gaps: what
    `rules.correlation_length` reads the integrand's roughness from. [P, 4]."""
    rows = []
    for (a, ca), (m, cm), (b, cb) in zip(nodes, nodes[1:], nodes[2:], strict=False):
        d1, d2, d = (cm - ca).ravel(), (cb - cm).ravel(), (cb - ca).ravel()
        rows.append((m - a, b - m, float(d1 @ d1) + float(d2 @ d2), float(d @ d)))
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


@functools.cache
def roughness_table(method: str) -> tuple[np.ndarray, np.ndarray]:
    """(log x, kappa(x)^2) on 64 equal adaptive panels of `method` on [0, 1],
    for an integrand of correlation length ell = h / x (`rules.error_ratio`):
    kappa(0) is the rule's random-walk kappa, kappa(inf) its white-noise one."""
    rule, count = rules.panel_rule(method), 64
    h = 1.0 / count
    weights: dict[float, float] = {}
    spreads: dict[float, float] = {}
    for q in range(count):
        a, b = q * h, (q + 1) * h
        sign = panel_sign(a, b) if rule.signed else 1.0
        for x, w, v in zip(rule.nodes.tolist(), rule.weights, rule.spread, strict=True):
            t = a + h * x
            weights[t] = weights.get(t, 0.0) + h * w
            spreads[t] = spreads.get(t, 0.0) + sign * h * v
    t = np.array(sorted(weights))
    w, v = np.array([weights[x] for x in t]), np.array([spreads[x] for x in t])
    scales = np.linspace(np.log(1e-4), np.log(1e3), 57)
    ratios = np.array([rules.error_ratio(t, w, v, h / np.exp(x)) ** 2 for x in scales])
    return scales, ratios


def initial_edges(count: int) -> np.ndarray:
    """Edges of `count` initial panels, graded towards a = 0 as a = s^2, s uniform.

    Scores of image classifiers change fastest near the baseline (they
    saturate along the path); refinement corrects the mesh where this is wrong.
    """
    return np.linspace(0.0, 1.0, count + 1) ** 2


@dataclasses.dataclass(eq=False)
class _Panel:
    a: float
    b: float
    nodes: tuple[float, ...]
    error: float  # the rule's estimate of int_a^b dF/da minus the exact F(b) - F(a)
    spread2: float  # ||(b - a) sum_i spread_i c(node_i)||^2, the panel's share of ||D||^2
    spread1: float = 0.0  # the same vector's sum of absolute values (L1 norm)
    active: bool = True  # False once its node vectors are dropped
    sign: float = 1.0  # of its spread (`rules.PanelRule.signed`, `panel_sign`)


def panel_sign(a: float, b: float) -> float:
    """+1 or -1, spread evenly over panels but a function of (a, b) alone, so that
    results do not depend on batching or on the order of refinement."""
    bits = int(np.float64(a).view(np.uint64)) * 0x9E3779B97F4A7C15
    bits ^= int(np.float64(b).view(np.uint64)) * 0xBF58476D1CE4E5B9
    bits &= (1 << 64) - 1
    return 1.0 if bin(bits >> 29).count("1") % 2 else -1.0


def completeness_splits(panels: list[_Panel], bound: float) -> list[_Panel]:
    """The panels to bisect for a completeness delta above `bound`, largest first.

    Only panels whose scalar error has the sign of the delta (the sum of the
    panels' errors): bisecting one of the other sign would add to it. As many
    as bring it within `bound` if each bisection removes 3/4 of its panel's
    error (a smooth integrand's rate), at most `_MAX_SPLITS_PER_ROUND`.
    Measured against the largest errors of either sign: 8 % fewer evaluations
    at the defaults, the same accuracy (docs/accuracy.md §3).
    """
    delta = sum(q.error for q in panels)
    excess = abs(delta) - bound
    ranked = sorted((q for q in panels if q.error * delta > 0), key=lambda q: -abs(q.error))
    chosen = []
    for q in ranked[:_MAX_SPLITS_PER_ROUND]:
        if excess <= 0:
            break
        chosen.append(q)
        excess -= 0.75 * abs(q.error)
    return chosen


def _share_left(parts: int) -> float:
    """The fraction of a panel's share of the squared error left after cutting
    it into `parts` equal parts: 1 / parts^2, as for a random walk."""
    return 1.0 / parts**2


def split_counts(shares: np.ndarray, target: float, limit: int) -> np.ndarray:
    """Parts m_q >= 1 to cut each panel into, the fewest cuts sum(m_q - 1) with
    sum_q shares_q / m_q^2 <= target, or the best `limit` cuts.

    shares: each panel's expected share of the squared error, which falls as
    1 / m^2 when the panel is cut into m equal parts (`_share_left`; 1/4 for a
    bisection). Each cut goes where it removes most; as that gain,
    shares_q (1/m^2 - 1/(m+1)^2), falls with m, the greedy plan is optimal.
    Only powers of two are reachable by bisection alone: the plan says where
    a three-way cut reaches the target with fewer evaluations.
    """
    shares = np.asarray(shares, dtype=np.float64)
    parts = np.ones(len(shares), dtype=np.int64)
    left = float(shares[shares > 0].sum())
    gains = [(-e * (1.0 - _share_left(2)), q) for q, e in enumerate(shares.tolist()) if e > 0]
    heapq.heapify(gains)
    for _ in range(limit):
        if left <= target or not gains:
            break
        gain, q = heapq.heappop(gains)
        left += gain
        parts[q] += 1
        m = int(parts[q])
        heapq.heappush(gains, (-shares[q] * (_share_left(m) - _share_left(m + 1)), q))
    return parts


def even_parts(n: int, chunk: int) -> list[slice]:
    """The fewest slices of at most `chunk` items for n items, evenly sized (72
    points at 32 per call: 24 + 24 + 24, not 32 + 32 + 8, whose last call would
    run the model at a small, slow batch)."""
    calls = -(-n // chunk)
    edges = np.linspace(0, n, calls + 1).round().astype(int) if n else [0]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _path_bytes(values: int) -> tuple[int, int]:
    """(bytes of a path's two float64 sums, bytes of one node vector, float32)."""
    return values * 2 * 8, values * 4


def _round_vectors(rule: rules.PanelRule) -> int:
    """Node vectors one round of refinement adds to a path, at the most: it splits
    at most `_MAX_SPLITS_PER_ROUND` panels, into at most 2 * _MAX_SPLITS_PER_ROUND + 1
    parts in all (`Adaptive._choose`), each part `own_nodes` new nodes past its shared
    edge, and each panel split, if folded, has its nodes evaluated again (`own_nodes`
    of them beyond the edges its parts share)."""
    return (3 * _MAX_SPLITS_PER_ROUND + 1) * rule.own_nodes


def least_path_bytes(method: str, shape: Sequence[int]) -> int:
    """Bytes a path of the adaptive engine holds at the least: its two float64
    sums and the node vectors of its fewest active panels, each apart from the
    others (an edge node shared with none), and of one round's new ones. A
    call's rows are chunked so that their paths fit the budget."""
    rule = rules.panel_rule(method)
    sums, vector = _path_bytes(int(np.prod(shape)))
    return sums + (_MIN_ACTIVE_PANELS * len(rule.nodes) + _round_vectors(rule)) * vector


class Adaptive:
    """Composite rule on panels, split where the estimated per-pixel error is.

    Per path it keeps the sums A and D (float64 vectors) over all panels, F and
    dF/da at every node evaluated (scalars), and the node vectors
    c(a) = (x - x') * grad F of the active panels. A path is done when its
    row's estimated per-pixel error kappa ||D|| / ||A|| and completeness delta
    (its baselines' paths averaged, `estimate`) are within their tolerances,
    when its budget of evaluations is spent, or when a path of its row is not
    finite (the row is flagged, whatever more it costs).
    Until then each round splits the panels with the largest shares of the
    squared error, as many as the error model predicts are needed, each in
    three where the cheapest plan to the tolerance (`split_counts`) says three,
    else in two; or, when only completeness misses, bisects those with the
    largest scalar errors of the delta's sign.
    """

    def __init__(self, paths, method, settings, f_start, f_end, score_fn):
        self.paths = paths
        self.method, self.rule = method, rules.panel_rule(method)
        self.tolerance = settings.tolerance
        self.completeness_tolerance = settings.completeness()
        self.max_steps = settings.max_steps
        self.error_map = functools.partial(error_map, channel_sum=settings.channel_sum)
        self.score_fn = score_fn
        self.f_start, self.f_end, self.difference = f_start, f_end, f_end - f_start
        n, shape = paths.count, paths.shape
        self.attributions = np.zeros((n, *shape), dtype=np.float64)
        self.spreads = np.zeros((n, *shape), dtype=np.float64)
        shared, own = int(self.rule.edge_nodes), self.rule.own_nodes
        # The budget holds the sums, the active panels' vectors and one round's new
        # ones (`least_path_bytes`: what the rows of a call are chunked by). Adjacent
        # panels share their edge nodes: as many as `fit` panels in a row.
        sums, vector = _path_bytes(int(np.prod(shape)))
        room = (settings.memory_budget - n * sums) // max(1, n * vector)
        fit = (room - _round_vectors(self.rule) - shared) // own
        least = _MIN_ACTIVE_PANELS * len(self.rule.nodes)
        self.active_vectors = int(min(1 << 20, max(least, fit * own + shared)))
        self.active_panels = (self.active_vectors - shared) // own
        self.vectors_at: list[dict[float, np.ndarray]] = [{} for _ in range(n)]
        self.derivative: list[dict[float, float]] = [{} for _ in range(n)]
        # F on the path wherever known: ends, panel edges, and every node evaluated.
        self.known: list[dict[float, float]] = [{0.0: f_start[p], 1.0: f_end[p]} for p in range(n)]
        self.panels: list[list[_Panel]] = [[] for _ in range(n)]
        # Neighbouring-gap pairs seen on each path (`neighbour_pairs`), and each
        # path's kappa_q^2 for its current panels (None: to be computed).
        self.pairs: list[list[np.ndarray]] = [[] for _ in range(n)]
        self._kappa2: list[np.ndarray | None] = [None] * n
        self.evaluations = np.zeros(n, dtype=np.int64)
        self.forward_evaluations = np.zeros(n, dtype=np.int64)
        self._start(max(1, (settings.steps - shared) // own))
        self._refine()
        self.nodes = np.array(
            [len({x for q in panels for x in q.nodes}) for panels in self.panels], dtype=np.int64
        )

    def _start(self, count: int) -> None:
        edges = initial_edges(count).tolist()
        spans = list(zip(edges[:-1], edges[1:], strict=True))
        # The first group fills what memory holds per path anyway; each later one
        # comes on top of the vectors kept, so holds a round's new ones less the
        # two kept for it (`_round_vectors`).
        first = self.active_panels + _MAX_SPLITS_PER_ROUND
        later = max(1, (_round_vectors(self.rule) - 2) // self.rule.own_nodes)
        starts = [0, *range(first, len(spans), later)]
        lead: list[float] = []
        for i, j in zip(starts, [*starts[1:], len(spans)], strict=True):
            # The group's last two nodes are kept for the next group: its first
            # node (edge rules), and what its first neighbouring-gap pair needs.
            n = self.paths.count
            nodes = sorted({x for a, b in spans[i:j] for x in self._nodes(a, b)})
            news = [(p, a, b) for p in range(n) for a, b in spans[i:j]]
            keep = set(nodes[-2:]) if j < len(spans) else set()
            self._evaluate(news, [], keep=keep, lead=lead)
            lead = nodes[-2:]

    def _nodes(self, a: float, b: float) -> tuple[float, ...]:
        # Exact ends, and inner nodes computed the same way for a panel and its
        # halves, so that a shared node is found again: a rule on two halves
        # places each half's nodes from that half's edges, its middle computed as
        # `_plan` splits the panel there.
        t = self.rule.nodes.tolist()
        if not self.rule.halves:
            return tuple(a if x == 0.0 else b if x == 1.0 else a + (b - a) * x for x in t)
        m = a + (b - a) * 0.5
        return tuple(
            a
            if x == 0.0
            else b
            if x == 1.0
            else m
            if x == 0.5
            else a + (m - a) * (2.0 * x)
            if x < 0.5
            else m + (b - m) * (2.0 * x - 1.0)
            for x in t
        )

    def _sum(self, path: int, q: _Panel, weights: np.ndarray) -> np.ndarray:
        vectors = self.vectors_at[path]
        total = None
        for w, x in zip(weights.tolist(), q.nodes, strict=True):
            if w:
                term = np.float32((q.b - q.a) * w) * vectors[x]
                total = term if total is None else np.add(total, term, out=total)
        return np.zeros(self.paths.shape, dtype=np.float32) if total is None else total

    def _add(self, path: int, q: _Panel, sign: float) -> np.ndarray:
        """Adds (sign 1) or removes (-1) a panel's share of A and D; returns its D share."""
        spread = self._sum(path, q, self.rule.spread * q.sign)
        share = self._sum(path, q, self.rule.weights)
        accumulate = np.add if sign > 0 else np.subtract
        accumulate(self.attributions[path], share, out=self.attributions[path])
        accumulate(self.spreads[path], spread, out=self.spreads[path])
        return spread

    def _forward(self, spans, need) -> None:
        """F at panel edges that are not nodes and whose F is unknown: forward passes."""
        edges = sorted(
            {
                (p, e)
                for p, a, b in spans
                for e in (a, b)
                if e not in self.known[p] and (p, e) not in need
            }
        )
        if not edges:
            return
        found = self.paths.scores(
            self.score_fn, np.array([p for p, _ in edges]), np.array([e for _, e in edges])
        )
        for (p, e), s in zip(edges, found.tolist(), strict=True):
            self.known[p][e] = s
            self.forward_evaluations[p] += 1

    def _gradients(self, need) -> None:
        missing = sorted((p, x) for p, x in need if x not in self.vectors_at[p])
        if not missing:
            return
        path = np.array([p for p, _ in missing])
        vectors = [np.empty(self.paths.shape, np.float32) for _ in missing]
        scores, derivs = self.paths.gradients(path, np.array([x for _, x in missing]), vectors)
        for (p, x), s, d, v in zip(missing, scores.tolist(), derivs.tolist(), vectors, strict=True):
            self.known[p][x], self.derivative[p][x], self.vectors_at[p][x] = s, d, v
            self.evaluations[p] += 1

    def _evaluate(
        self, spans, split, keep: frozenset[float] | set[float] = frozenset(), lead=()
    ) -> None:
        """New panels (path, a, b); split panels (path, panel) leave the sums.

        keep: nodes whose vectors stay whatever the memory budget; lead: nodes
        just before the new panels, whose vectors are kept, for the first pairs.
        """
        need = {(p, x) for p, a, b in spans for x in self._nodes(a, b)}
        need |= {(p, x) for p, q in split for x in q.nodes}
        self._forward(spans, need)
        self._gradients(need)
        self._observe(spans, lead)
        for p, q in split:
            self._add(p, q, -1.0)
        for p, a, b in spans:
            nodes = self._nodes(a, b)
            estimate = (b - a) * sum(
                w * self.derivative[p][x]
                for w, x in zip(self.rule.weights.tolist(), nodes, strict=True)
            )
            exact = self.known[p][b] - self.known[p][a]
            sign = panel_sign(a, b) if self.rule.signed else 1.0
            q = _Panel(a, b, nodes, estimate - exact, 0.0, sign=sign)
            spread = self.error_map(self._add(p, q, 1.0)).ravel()
            q.spread2, q.spread1 = float(np.dot(spread, spread)), float(np.abs(spread).sum())
            self.panels[p].append(q)
        for p in sorted({p for p, _, _ in spans} | {p for p, _ in split}):
            self._fold(p, keep)

    def _observe(self, spans, lead) -> None:
        """Adds the neighbouring-gap pairs of each run of adjacent new panels (the
        first run from the `lead` nodes before it on)."""
        by_path: dict[int, list[tuple[float, float]]] = {}
        for p, a, b in spans:
            by_path.setdefault(p, []).append((a, b))
            self._kappa2[p] = None
        for p, own in by_path.items():
            run: set[float] = set(lead)
            own.sort()
            for (a, b), later in zip(own, own[1:] + [(None, None)], strict=True):
                run.update(self._nodes(a, b))
                if later[0] != b:  # the run ends here
                    nodes = sorted(run)
                    self.pairs[p].append(
                        neighbour_pairs([(x, self.vectors_at[p][x]) for x in nodes])
                    )
                    run = set()

    def _squares(self, path: int) -> np.ndarray:
        """kappa_q^2 of each panel of the path (in `self.panels[path]` order): its
        error per unit of spread at its own scale, for the roughness the path's
        neighbouring gaps show (`rules.correlation_length`, `roughness_table`);
        the panel rule's random-walk kappa^2 where they show none beyond a
        random walk's."""
        if self._kappa2[path] is None:
            ell = rules.correlation_length(np.concatenate(self.pairs[path]))
            panels = self.panels[path]
            if np.isinf(ell):
                squares = np.full(len(panels), self.rule.kappa**2)
            else:
                scales, ratios = roughness_table(self.method)
                squares = np.interp(np.log([(q.b - q.a) / ell for q in panels]), scales, ratios)
            self._kappa2[path] = np.maximum(squares, self.rule.least_kappa**2)
        return self._kappa2[path]

    def kappa(self, path: int) -> float:
        """kappa^2 = sum_q |D_q|^2 kappa_q^2 / sum_q |D_q|^2: the panels' errors per
        unit of spread, weighted by their spreads as the error is (a path's
        panels are fine where its integrand moves most; its coarse, quiet
        panels would otherwise count as much)."""
        spreads = np.array([q.spread2 for q in self.panels[path]])
        total = spreads.sum()
        if not (np.isfinite(total) and total > 0):  # no spread, or non-finite (flagged)
            return self.rule.kappa
        return float(np.sqrt(spreads @ self._squares(path) / total))

    def kappas(self) -> np.ndarray:
        return np.array([self.kappa(p) for p in range(self.paths.count)])

    def _unexplained(self, path: int) -> np.ndarray:
        """Per panel of the path (in `self.panels[path]` order), the part of its scalar
        error, |the rule's integral of dF/da - (F(b) - F(a))|, beyond what an error
        vector like its spread could sum to: kappa_q times the spread's L1 norm (its
        values all of one sign), twice over (`_UNEXPLAINED_MARGIN`). It is a unit that
        switched between the panel's nodes, unseen by them (the map did not move
        there), and is counted as if on one value, where it costs the map most.
        Float rounding is not counted: the scores', and that of the float32 sums of c
        over the values that give dF/da (`_rounding`)."""
        panels = self.panels[path]
        if not panels:
            return np.zeros(0)
        errors = np.abs(np.array([q.error for q in panels]))
        kappas = np.sqrt(self._squares(path))
        sums = _UNEXPLAINED_MARGIN * kappas * np.array([q.spread1 for q in panels])
        with np.errstate(invalid="ignore"):  # a non-finite path is flagged anyway
            excess = errors - sums
            unexplained = excess - self._rounding(path, excess)
        return np.where(unexplained > 0, unexplained, 0.0)

    def _rounding(self, path: int, excess: np.ndarray) -> float:
        """What of each of the path's panels' scalar errors beyond its spread
        (`excess`) is the float32 rounding of the scores: `_resolution`, or, where the
        median panel's excess is above it, that median `_NOISE_FACTOR` times, at most
        eps sqrt(n) of the scores (`_NOISE_MIN_PANELS`)."""
        scale = self._scale([path])
        rounding = SCORE_RESOLUTION * scale  # `_resolution`
        if excess.size < _NOISE_MIN_PANELS:
            return rounding
        typical = float(np.median(excess))
        if not typical > rounding:  # a NaN too: a non-finite path is flagged anyway
            return rounding
        cap = _EPS * np.sqrt(self.attributions[path].size) * scale
        return max(rounding, min(_NOISE_FACTOR * typical, cap))

    def _resolution(self, paths: Sequence[int]) -> float:
        """The float32 rounding of the paths' (mean) scalar errors: of the scores, and of
        dF/da, a sum of c over all values rounded by about eps sum|c|, over the path
        eps ||A||_1. (F(x) = F(x') = 0 exactly, with a map that is not 0, had that
        rounding read as an infinite relative delta.)"""
        return SCORE_RESOLUTION * self._scale(paths)

    def _scale(self, paths: Sequence[int]) -> float:
        """What the paths' scalar errors are rounded against (`_resolution`): the larger
        of their largest |score| and their mean ||A||_1."""
        scores = max(max(abs(self.f_start[p]), abs(self.f_end[p])) for p in paths)
        sums = sum(float(np.abs(self.attributions[p]).sum()) for p in paths) / len(paths)
        return max(scores, sums)

    def unexplained(self) -> np.ndarray:
        """Per path, the L2 norm of its panels' `_unexplained` errors (each on its own
        value): what the map misses beyond what its spread shows."""
        return np.array([np.linalg.norm(self._unexplained(p)) for p in range(self.paths.count)])

    def _largest(self, path: int) -> float:
        """The largest estimated error of one of the path's panels, kappa_q ||D_q||.

        The signed sum of the panels' spreads (`panel_sign`) models their errors as
        independent; the two panels on either side of a node where a steep unit
        switches have spreads of opposite sign and errors of the same, and with
        equal signs their spreads cancel in the sum. Whatever the signs, the map's
        error is not taken for less than its largest panel's."""
        errors2 = self._errors2(path)
        return float(np.sqrt(errors2.max())) if errors2.size else 0.0

    def _errors2(self, path: int) -> np.ndarray:
        """Per panel of the path (in `self.panels[path]` order), its estimated squared
        error, kappa_q^2 ||D_q||^2."""
        panels = self.panels[path]
        if not panels:
            return np.zeros(0)
        return np.array([q.spread2 for q in panels]) * self._squares(path)

    def largest(self) -> np.ndarray:
        """Per path, `_largest`."""
        return np.array([self._largest(p) for p in range(self.paths.count)])

    def _fold(self, path: int, keep: set[float]) -> None:
        """Keeps the node vectors of the panels with the largest spreads, largest first,
        while they fit the budget's `active_vectors` (adjacent panels share an edge
        node; a panel kept without its neighbours holds both); drops the rest."""
        active = [q for q in self.panels[path] if q.active]
        held: set[float] = set()
        full = False
        # Largest first; of equal ones, the later (as the panels were folded before).
        for q in reversed(sorted(active, key=lambda q: (q.spread2, abs(q.error)))):
            more = held.union(q.nodes)
            full = full or len(more) > self.active_vectors
            if full:
                q.active = False
            else:
                held = more
        used = held | set(keep)
        vectors = self.vectors_at[path]
        for x in [x for x in vectors if x not in used]:
            del vectors[x]

    def estimate(self, path: int) -> tuple[float, float, float, float]:
        """Of the row (image and target) whose baseline `path` is, its baselines'
        paths averaged as the result averages them (`api._result`): (estimated
        per-pixel relative error, relative completeness delta, ||A||,
        |F(x) - F(x')|). With one baseline, the path's own.

        A row's paths are refined against the row's ||A|| and F(x) - F(x'):
        where every path's kappa ||D|| and completeness delta are within the
        tolerances times those, the row's are too (a mean is at most the mean
        of the norms), however much the baselines' maps cancel in the average.
        """
        row = self.paths.row(path)
        b = len(row)
        attributions = self.error_map(sum(self.attributions[p] for p in row) / b)
        spreads = self.error_map(sum(self.kappa(p) * self.spreads[p] for p in row) / b)
        size = float(np.linalg.norm(attributions))
        unexplained = sum(float(np.linalg.norm(self._unexplained(p))) for p in row) / b
        largest = max(self._largest(p) for p in row) / b
        spread = float(np.hypot(max(np.linalg.norm(spreads), largest), unexplained))
        pixel = spread / size if size > 0 else (0.0 if spread == 0 else np.inf)
        delta = abs(sum(q.error for p in row for q in self.panels[p]) / b)
        difference = abs(sum(self.difference[p] for p in row) / b)
        scale = max(abs(self.f_end[path]), abs(sum(self.f_start[p] for p in row) / b))
        # A delta within the rounding of what it is made of is not resolved: no
        # refinement can reduce it, so here it reads 0 (the row's relative_delta is
        # its own).
        unresolved = delta <= max(SCORE_RESOLUTION * scale, self._resolution(row))
        total = 0.0 if unresolved else float(relative_delta(delta, difference, scale))
        return pixel, total, size, difference

    def _choose(self, path: int) -> list[tuple[_Panel, int]]:
        """The panels to split this round and their numbers of parts, largest first."""
        pixel, total, size, difference = self.estimate(path)
        panels = self.panels[path]
        if pixel > self.tolerance:
            # Each panel's share of the squared error: kappa_q^2 |D_q|^2 (times the
            # coherence of the panels' spreads, the share of their squares that
            # their sum keeps), and its unexplained error's square.
            squares = float(np.sum([q.spread2 for q in panels]))
            norm2 = float(np.sum(self.error_map(self.spreads[path]) ** 2))
            errors2 = self._errors2(path)
            # ... but not below the largest panel's share (`_largest`)
            least = float(errors2.max() / errors2.sum()) if errors2.sum() > 0 else 0.0
            coherence = max(norm2 / squares, least) if squares > 0 else 1.0
            shares = errors2 * coherence + self._unexplained(path) ** 2
            target = (_AIM * self.tolerance * size) ** 2
            plan = split_counts(shares, target, max(1, self._budget(path)))
            chosen, cuts, left = [], 0, float(shares.sum())
            for q in np.argsort(-shares, kind="stable"):
                if not shares[q] > 0 or cuts >= _MAX_SPLITS_PER_ROUND or left <= target:
                    break
                # Three parts where the plan says three; the others are cut in
                # two and planned again from what their halves show.
                parts = 3 if plan[q] == 3 and 3 in self.rule.parts else 2
                chosen.append((panels[q], parts))
                cuts += parts - 1
                left -= shares[q] * (1.0 - _share_left(parts))
            return chosen
        if total > self.completeness_tolerance:
            bound = _AIM * self.completeness_tolerance * difference
            return [(q, 2) for q in completeness_splits(panels, bound)]
        return []

    def _plan(self, path: int) -> list[tuple[_Panel, list[tuple[float, float]]]]:
        """(panel, (a, b) of its parts) splits of a path within its budget of evaluations."""
        row = self.paths.row(path)
        if not self.paths.finite[row.start : row.stop].all():
            return []  # its row is flagged: no refinement makes it finite
        budget = self._budget(path)
        planned: set[float] = set()
        out = []
        for q, parts in self._choose(path):
            edges = [q.a] + [q.a + (q.b - q.a) * (j / parts) for j in range(1, parts)] + [q.b]
            spans = list(zip(edges, edges[1:], strict=False))
            if not all(u < v for u, v in spans):
                continue  # too narrow for the floats
            new = {x for u, v in spans for x in self._nodes(u, v)}
            if not q.active:
                new |= set(q.nodes)
            new -= planned | self.vectors_at[path].keys()
            cost = len(new - self.derivative[path].keys())  # re-evaluations are free
            if cost > budget:
                break
            budget -= cost
            planned |= new
            out.append((q, spans))
        return out

    def _budget(self, path: int) -> int:
        """Nodes the path may still add: `max_steps` counts its distinct nodes, not
        its evaluations, so that the panels a memory budget folds and evaluates
        again (more of them with more paths per call) cost no refinement."""
        return self.max_steps - len(self.derivative[path])

    def _refine(self) -> None:
        while True:
            # Every path planned before any panel leaves: a path's plan reads its
            # row's other paths (`estimate`).
            plans = [self._plan(p) for p in range(self.paths.count)]
            spans, split = [], []
            for p, plan in enumerate(plans):
                for q, parts in plan:
                    self.panels[p].remove(q)
                    split.append((p, q))
                    spans += [(p, u, v) for u, v in parts]
            if not spans:
                return
            self._evaluate(spans, split)

    def curve(self, path: int) -> tuple[np.ndarray, np.ndarray]:
        alphas = np.array(sorted(self.known[path]))
        return alphas, np.array([self.known[path][a] for a in alphas])
