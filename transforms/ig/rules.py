"""Quadrature rules by name, and the error model that calibrates their estimates.

Every rule approximates integral_0^1 f(a) da by sum_i w_i f(t_i). In adaptive
mode a rule is applied on panels, sub-intervals [a, b] of [0, 1]: a panel's
rule is the method's rule on each of its two halves (so that a bisected
panel's nodes are, for nested rules, nodes of its halves again), except for
the trapezoid rule, whose panel is one gap between two nodes (split in two or
three, it costs one evaluation per cut), and the midpoint rule, whose panel is
the rule on three equal parts (a spread that sees curvature). On the nodes
of a rule, fixed or on a panel, the *spread* D = sum_i v_i c(t_i) (v summing to
0, see `spread_weights`) is the estimate minus a coarser one on the same nodes,
a vector over all pixels that observes how much the estimate still moves.

How far the fine estimate is off, given that difference, depends on how the
integrand varies. Gradients of ReLU / ReLU6 networks are piecewise constant
along the path, with many kinks at scattered places: per pixel, the integrand
behaves like a random walk. Under that model (Brownian motion, whose
covariance min(s, t) makes every variance below a closed form), the fine
rule's expected squared error is a fixed multiple of the difference's:
``kappa = sqrt(Var(fine error) / Var(fine - coarse))``, computed per rule from
its nodes. For a smooth integrand the same estimate is larger than the error
(by sqrt(3) for the fixed trapezoid rule; by several times for the adaptive
trapezoid's single-gap panels, whose spread moves with the integrand's slope),
so it errs on the safe side. For an
integrand rougher than a random walk at the scale of the nodes (gradients that
change wholesale between neighbouring nodes) the multiple is larger: the model
becomes an Ornstein-Uhlenbeck process whose correlation length is read from
neighbouring differences (`correlation_length`, `error_ratio`). Left and
right rules are first-order: on a smooth trend their error is about the
spread's own size or more, so their kappa is never below what a linear trend
needs (`trend_kappa`); on a random walk this overestimates, up to 3x.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = [
    "METHODS",
    "PanelRule",
    "brownian_kappa",
    "correlation_length",
    "error_ratio",
    "exact_for_linear",
    "spread_weights",
    "has_baseline_node",
    "min_steps",
    "panel_rule",
    "quadrature",
    "rule_spread",
    "trend_kappa",
]

METHODS: tuple[str, ...] = (
    "gausslegendre",
    "gausslobatto",
    "riemann_trapezoid",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
)

# Rules whose first and last nodes are the ends: they need at least two nodes.
_TWO_NODE_MINIMUM = ("riemann_trapezoid", "gausslobatto")
# Nodes of the rule on each half of an adaptive panel: two by default, three for
# Gauss-Lobatto (Simpson); trapezoid panels are single gaps (`_TWO_NODE_PANELS`).
# Low-order panels refined often beat fewer, larger, higher-order ones on the
# kinked integrands of image classifiers.
_HALF_NODES = {"gausslobatto": 3}
# Rules whose adaptive panel is the rule itself on the panel's two edges: each
# gap its own panel, so that a bisection costs one evaluation, not two. Its
# spread, (b - a) / 2 (c(b) - c(a)), is blind to constants only, so the engine
# gives each panel's spread a sign of its own (`PanelRule.signed`): along a
# smooth trend, where the rule's error is small, the spreads would otherwise
# add up coherently. Measured against three-node panels (docs/accuracy.md §3):
# 10-15 % fewer evaluations for the same per-pixel error.
_TWO_NODE_PANELS = ("riemann_trapezoid",)
# Rules whose adaptive panel is the rule itself on three equal parts (one node
# each: 1/6, 1/2, 5/6), not on two halves. On two halves the midpoint rule has an
# even number of nodes, symmetric about the panel's middle, and its alternating
# spread is antisymmetric: blind to the curvature that is the rule's leading error
# (a quadratic integrand gave a spread of 0 and rows flagged within at 1.5-2.6x
# their tolerance). Three nodes give a symmetric spread that sees curvature and a
# jump in either gap; its walk kappa (0.71) is above curvature's own ratio (0.25).
_THREE_PART_PANELS = ("riemann_middle",)


def check_steps(method: str, steps: int) -> None:
    """Raises ValueError naming the value when `method` or `steps` is not usable."""
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
    check_steps(method, steps)
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


def spread_weights(nodes: np.ndarray, linear: bool = True) -> np.ndarray:
    """Weights v of the spread D = sum_i v_i c(t_i) on ascending nodes t.

    D is the fine estimate minus a coarse one on the same nodes: v sums to 0,
    and a jump J of the integrand in the gap (t_i, t_{i+1}) moves D by
    J * (-1)^i (t_{i+1} - t_i) / 2, about the error it causes: every gap is seen
    (a coarse rule on every other node would miss every other gap). On three
    equally spaced nodes, v = (-1/4, 1/2, -1/4): composite minus plain trapezoid.
    Two nodes or fewer have no spread (v = 0) when linear functions are exact.

    Args:
      nodes: float64 [n], ascending.
      linear: whether the rule integrates linear functions exactly.
    """
    if len(nodes) <= _most_spreadless(linear):
        return np.zeros_like(nodes)
    gaps = np.diff(nodes)
    tails = (-1.0) ** np.arange(len(gaps)) * gaps / 2.0  # sum_{j > i} v_j
    v = -np.diff(np.concatenate([[0.0], tails, [0.0]]))
    # Blind to what the rule integrates exactly: linear integrands for every
    # rule here but left / right (`linear=False`), which are exact for constants.
    exact = [np.ones_like(nodes), nodes] if linear else [np.ones_like(nodes)]
    basis, _ = np.linalg.qr(np.stack(exact, axis=1))
    return v - basis @ (basis.T @ v)


def _most_spreadless(linear: bool) -> int:
    """The most nodes that have no spread: two for rules exact on linear functions
    (the only two-node estimate is the rule itself), else one."""
    return 2 if linear else 1


def has_spread(method: str, steps: int) -> bool:
    """Whether `method`'s fixed rule on `steps` nodes has a spread to estimate its
    error from (`spread_weights`); without one, `attribution_error` is null."""
    return steps > _most_spreadless(exact_for_linear(method))


def _brownian_error_variance(t: np.ndarray, w: np.ndarray) -> float:
    """E[(sum w_i W(t_i) - integral_0^1 W)^2] for a standard Brownian motion W."""
    cov = np.minimum.outer(t, t)
    return float(w @ cov @ w - 2.0 * w @ (t - t * t / 2.0) + 1.0 / 3.0)


def exact_for_linear(method: str) -> bool:
    """Whether the rule integrates linear functions exactly (all but left / right)."""
    return method not in ("riemann_left", "riemann_right")


# The smooth error of the trapezoid and midpoint rules on n equal gaps of width h:
# coefficient * h^2 (c'(1) - c'(0)), the integrand's curvature.
_CURVATURE_ERROR = {"riemann_trapezoid": 1 / 12, "riemann_middle": 1 / 24}


def rule_spread(method: str, t: np.ndarray) -> np.ndarray:
    """The spread weights of `method`'s fixed rule on its nodes t (`spread_weights`).

    Left and right rules are off by about (h/2) (c(1) - c(0)) on any smooth
    trend, an error the alternating spread does not see (a trend moves it by
    h^2 at most): their spread adds that term, (h/2) (c(t_last) - c(t_first)).
    On an even number of nodes, symmetric about 1/2, the alternating spread of the
    trapezoid and midpoint rules is antisymmetric: blind to curvature, their
    smooth error. Their spread then adds twice that error as the ends' slopes
    show it, 2 k h ((c_last - c_last-1) - (c_1 - c_0)), k the rule's
    `_CURVATURE_ERROR`: curvature's error per unit of spread (1/2) stays below
    the random walk's kappa, which therefore holds for both.
    """
    linear = exact_for_linear(method)
    v = spread_weights(t, linear)
    if not linear and len(t) > 1:
        v[0] -= 0.5 / len(t)
        v[-1] += 0.5 / len(t)
    elif method in _CURVATURE_ERROR and len(t) >= 4 and _blind_to_curvature(t, v):
        h = (t[-1] - t[0]) / (len(t) - 1)
        v[[0, 1, -2, -1]] += 2 * _CURVATURE_ERROR[method] * h * np.array([1, -1, -1, 1])
    return v


def _blind_to_curvature(t: np.ndarray, v: np.ndarray) -> bool:
    """Whether the spread v on nodes t does not see a quadratic integrand."""
    return abs(float(v @ (t - 0.5) ** 2)) < 1e-9 * float(np.abs(v).sum() or 1.0)


def trend_kappa(t: np.ndarray, w: np.ndarray, v: np.ndarray) -> float:
    """|error| / |D| of the rule w and spread v on a linear integrand, c(a) = a:
    the least kappa that does not underestimate a smooth trend. 0 for rules that
    integrate linear functions exactly."""
    error, spread = abs(float(w @ t) - 0.5), abs(float(v @ t))
    if error < 1e-12:
        return 0.0
    return error / spread if spread > 0 else float("inf")


def brownian_kappa(t: np.ndarray, weights: np.ndarray, linear: bool = True) -> float:
    """sqrt(E[error^2] / E[D^2]) of a rule and its spread under the random-walk
    model; nan where there is no spread (two nodes or fewer)."""
    return error_ratio(t, weights, spread_weights(t, linear), float("inf"))


# Correlation lengths beyond this are a random walk's (inf): at gaps of 1e-4
# and more the two differ by less than 1e-4 in the pair ratio below.
_LONGEST = 1e4
_SHORTEST = 1e-9


def _psi(z: np.ndarray) -> np.ndarray:
    """e^-z - 1 + z, without cancellation for small z."""
    z = np.asarray(z, dtype=np.float64)
    small = z < 1e-3
    zs, zl = np.where(small, z, 0.0), np.where(small, 1.0, z)
    return np.where(small, zs**2 / 2 - zs**3 / 6 + zs**4 / 24, np.expm1(-zl) + zl)


def _chi(z: float) -> float:
    """z^2 / 2 - z + 1 - e^-z (the integral of `_psi` from 0), without cancellation."""
    if z < 0.05:
        return sum((-1) ** (k + 1) * z**k / math.factorial(k) for k in range(3, 9))
    return z * z / 2 - z - float(np.expm1(-z))


def _exp_form(t: np.ndarray, a: np.ndarray, b: np.ndarray, ell: float) -> float:
    """sum_ij a_i b_j exp(-|t_i - t_j| / ell) for ascending t, in O(n)."""
    decay = np.exp(-np.diff(t) / ell).tolist()
    a, b = a.tolist(), b.tolist()
    # fa, fb: the sums over j < i of a_j and b_j times e^(-(t_i - t_j) / ell).
    total, fa, fb = a[0] * b[0], 0.0, 0.0
    for i in range(1, len(a)):
        fa, fb = (fa + a[i - 1]) * decay[i - 1], (fb + b[i - 1]) * decay[i - 1]
        total += a[i] * b[i] + a[i] * fb + b[i] * fa
    return total


def error_ratio(t: np.ndarray, w: np.ndarray, v: np.ndarray, ell: float) -> float:
    """sqrt(E[error^2] / E[D^2]) of the rule w and spread v on ascending nodes t.

    The integrand is modelled with stationary increments of semivariogram
    gamma(h) = ell (1 - exp(-h / ell)) (Ornstein-Uhlenbeck): a random walk
    (gamma = h) at ell = inf, white noise at ell -> 0. For weights u summing to
    0, E[(sum u_i c(t_i))^2] = -sum_ij u_i u_j gamma(t_i - t_j); the error is such
    a sum with the rule's weights and the integral's uniform measure.
    nan where the spread is 0.
    """
    t, w, v = (np.asarray(x, dtype=np.float64) for x in (t, w, v))
    if len(t) == 0:
        return float("nan")
    if not np.isfinite(ell) or ell > _LONGEST:  # a random walk: covariance min(s, t)
        error = _brownian_error_variance(t, w)
        spread = float(v @ np.minimum.outer(t, t) @ v)
    else:
        ell = max(ell, _SHORTEST)  # white noise
        mean = ell * ell * (_psi(t / ell) + _psi((1 - t) / ell))  # int_0^1 gamma(t_i - s) ds
        error = -ell * (w.sum() ** 2 - _exp_form(t, w, w, ell))
        error += 2.0 * w @ mean - 2.0 * ell**3 * _chi(1.0 / ell)
        spread = ell * _exp_form(t, v, v, ell) - ell * v.sum() ** 2
    if not spread > 0.0:
        return float("nan")
    return float(np.sqrt(max(float(error), 0.0) / spread))


def correlation_length(pairs: np.ndarray) -> float:
    """The Ornstein-Uhlenbeck correlation length that explains neighbouring differences.

    pairs: float64 [P, 4], rows (h1, h2, |d1|^2 + |d2|^2, |d1 + d2|^2) for two
    neighbouring gaps of widths h1, h2 and the integrand's differences d1, d2
    over them (vectors over all pixels). Their ratio, sum of the third column
    over sum of the fourth, is 1 for a random walk (independent increments),
    2 for white noise (d1 and d2 share a node's noise with opposite signs),
    below 1 for a smooth trend; the model's ratio at each pair's widths,
    weighted like the observed sums, is matched by bisection on log ell.
    inf where the ratio is a random walk's or below (no finite pairs: inf).
    """
    pairs = np.asarray(pairs, dtype=np.float64).reshape(-1, 4)
    pairs = pairs[np.isfinite(pairs).all(axis=1)]  # non-finite gradients: flagged elsewhere
    h1, h2, num, den = pairs.T
    if not den.sum() > 0:
        return float("inf")
    observed = num.sum() / den.sum()

    def model(ell: float) -> float:
        g = lambda h: -np.expm1(-h / ell)  # noqa: E731
        return float(den @ ((g(h1) + g(h2)) / g(h1 + h2)) / den.sum())

    if observed <= model(_LONGEST):
        return float("inf")
    if observed >= model(_SHORTEST):
        return _SHORTEST
    lo, hi = np.log(_SHORTEST), np.log(_LONGEST)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if model(np.exp(mid)) > observed else (lo, mid)
    return float(np.exp((lo + hi) / 2))


@dataclasses.dataclass(frozen=True)
class PanelRule:
    """An adaptive panel's rule on [0, 1] (scaled to [a, b] by the engine).

    Attributes:
      nodes: float64 [n] ascending in [0, 1]: the method's rule on both halves.
      weights: float64 [n], the fine rule, summing to 1.
      spread: float64 [n], the weights of the spread (`spread_weights`).
      kappa: error of the fine rule per unit of spread (random-walk model).
      edge_nodes: whether 0 and 1 are nodes (their F comes with the gradients,
        and neighbouring panels share them).
      signed: whether each panel's spread gets a sign of its own
        (`transforms.ig.engine.panel_sign`): two-node panels, whose spreads
        would otherwise add up coherently along a smooth trend.
      parts: the numbers of equal parts a panel may be split into: 2, and 3
        for two-node panels, whose nodes (their edges) stay nodes of the parts
        (other panels' inner nodes would be lost to a three-way split).
      least_kappa: the kappa a smooth trend needs (`trend_kappa`); no panel's
        kappa is below it. 0 but for left and right rules, whose error on a
        trend is first order: there `kappa` is this, the larger.
      halves: whether the nodes are a rule's on the panel's two halves, so that
        the engine places them from the halves' edges, as a split does: a
        half's own middle is then the same float as its parent's quarter node.
    """

    nodes: np.ndarray
    weights: np.ndarray
    spread: np.ndarray
    kappa: float
    edge_nodes: bool
    signed: bool = False
    parts: tuple[int, ...] = (2,)
    least_kappa: float = 0.0
    halves: bool = False

    @property
    def own_nodes(self) -> int:
        """Nodes of a panel in a row of panels that it shares with no neighbour: all
        but one edge node where the edges are nodes."""
        return len(self.nodes) - int(self.edge_nodes)


def _on_two_halves(t: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rule (t, w) on both halves of [0, 1], a shared middle node merged."""
    left, right = t / 2.0, 0.5 + t / 2.0
    nodes = np.concatenate([left, right])
    weights = np.concatenate([w, w]) / 2.0
    if left[-1] == right[0]:  # a shared middle node: merge it
        weights[len(t) - 1] += weights[len(t)]
        nodes, weights = np.delete(nodes, len(t)), np.delete(weights, len(t))
    return nodes, weights


def panel_rule(method: str) -> PanelRule:
    """The adaptive panel of `method`: its rule on the two halves of the panel;
    for the trapezoid rule, the rule itself on the panel's two edges; for the
    midpoint rule, the rule on three equal parts (`_THREE_PART_PANELS`)."""
    if method in _TWO_NODE_PANELS:
        t, w = quadrature(method, 2)
        # On one gap only constants are invisible to the spread.
        spread = spread_weights(t, linear=False)
        kappa = brownian_kappa(t, w, linear=False)
        return PanelRule(t, w, spread, kappa, edge_nodes=True, signed=True, parts=(2, 3))
    if method in _THREE_PART_PANELS:
        nodes, weights = quadrature(method, 3)
    else:
        nodes, weights = _on_two_halves(*quadrature(method, _HALF_NODES.get(method, 2)))
    linear = exact_for_linear(method)
    spread = spread_weights(nodes, linear)
    least = trend_kappa(nodes, weights, spread)
    kappa = max(brownian_kappa(nodes, weights, linear), least)
    edges = bool(nodes[0] == 0.0 and nodes[-1] == 1.0)
    halves = method not in _THREE_PART_PANELS
    return PanelRule(nodes, weights, spread, kappa, edges, least_kappa=least, halves=halves)
