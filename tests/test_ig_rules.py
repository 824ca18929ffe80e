"""Quadrature rules by name, and the error model that calibrates their
estimates, on analytic functions with known answers."""

import numpy as np
import pytest

from tests.ig_cases import (
    WEIGHTS,
    run,
)
from transforms import ig
from transforms.ig import engine, rules


@pytest.mark.parametrize("method", ig.METHODS)
@pytest.mark.parametrize("steps", [2, 5, 16])
def test_quadrature_weights_sum_to_one_and_nodes_in_unit_interval(method, steps):
    alphas, weights = ig.quadrature(method, steps)
    assert alphas.shape == weights.shape == (steps,)
    assert np.isclose(weights.sum(), 1.0)
    assert np.all((alphas >= 0) & (alphas <= 1)) and np.all(np.diff(alphas) > 0)


@pytest.mark.parametrize("method", ig.METHODS)
def test_linear_model_attribution_is_exact_for_every_rule(method):
    x, result = run(method, 3, [0, 0])
    np.testing.assert_allclose(result.attributions, x * WEIGHTS, rtol=1e-5, atol=1e-6)
    assert np.all(result.error < 1e-6)  # a constant integrand: the estimate does not move


# integral_0^1 3 a^2 da = 1 estimated by each rule with n nodes, in closed form.
CUBIC_FACTOR = {
    "riemann_left": lambda n: (n - 1) * (2 * n - 1) / (2 * n**2),
    "riemann_right": lambda n: (n + 1) * (2 * n + 1) / (2 * n**2),
    "riemann_middle": lambda n: 1 - 1 / (4 * n**2),
    "riemann_trapezoid": lambda n: 1 + 1 / (2 * (n - 1) ** 2),
    "gausslegendre": lambda n: 1.0,
    "gausslobatto": lambda n: 1.5 if n == 2 else 1.0,  # n = 2 is the trapezoid rule
}


@pytest.mark.parametrize("method", ig.METHODS)
@pytest.mark.parametrize("steps", [2, 4, 7])
def test_cubic_error_matches_closed_form(method, steps):
    # F = sum x^3, baseline 0: IG_i = x_i^3 * (rule's estimate of int 3a^2 da).
    x, result = run(method, steps, [1])
    expected = x**3 * CUBIC_FACTOR[method](steps)
    np.testing.assert_allclose(result.attributions, expected, rtol=1e-5)


@pytest.mark.parametrize("method", ig.METHODS)
def test_completeness_converges_with_steps(method):
    # sum sin: IG_i = sin x_i - sin 0, smooth; every rule converges.
    x, coarse = run(method, 3, [2])
    _, fine = run(method, 48, [2], x=x)
    exact = np.sin(x)
    coarse_err = np.abs(coarse.attributions - exact).max()
    fine_err = np.abs(fine.attributions - exact).max()
    assert fine_err < max(coarse_err / 10, 1e-6)
    assert fine_err < 2e-2


def test_rules_with_a_node_at_the_baseline():
    found = [m for m in ig.METHODS if ig.has_baseline_node(m)]
    assert found == ["gausslobatto", "riemann_trapezoid", "riemann_left"]


def test_gauss_legendre_is_spectrally_accurate_on_smooth_function():
    x, result = run("gausslegendre", 8, [2])
    np.testing.assert_allclose(result.attributions, np.sin(x), atol=1e-6)


@pytest.mark.parametrize(
    "method, steps, message",
    [("simpson", 4, "Unknown IG method 'simpson'"), ("riemann_trapezoid", 1, "steps must be")],
)
def test_bad_rule_arguments_name_the_value(method, steps, message):
    with pytest.raises(ValueError, match=message):
        ig.quadrature(method, steps)
    with pytest.raises(ValueError, match=message):
        ig.IGSettings(method, steps)


def test_brownian_variances_have_their_closed_forms():
    # Trapezoid on [0, 1]: E[(W(0)/2 + W(1)/2 - int W)^2] = 1/12. Two nodes have no
    # spread (a coarser rule on them would not integrate linear functions).
    t, w = ig.quadrature("riemann_trapezoid", 2)
    assert rules._brownian_error_variance(t, w) == pytest.approx(1 / 12)
    assert np.isnan(rules.brownian_kappa(t, w))
    # Three trapezoid nodes, (-1/4, 1/2, -1/4) the spread: fine error 1/48, spread 1/16.
    t, w = ig.quadrature("riemann_trapezoid", 3)
    assert rules.spread_weights(t).tolist() == pytest.approx([-0.25, 0.5, -0.25])
    assert rules.brownian_kappa(t, w) == pytest.approx(1 / np.sqrt(3))
    # An adaptive trapezoid panel is one gap, its spread blind to constants only:
    # (c(b) - c(a)) / 2, of variance 1/4 against the error's 1/12.
    panel = ig.panel_rule("riemann_trapezoid")
    assert panel.nodes.tolist() == [0.0, 1.0] and panel.edge_nodes and panel.signed
    assert panel.weights.tolist() == [0.5, 0.5]
    assert panel.spread.tolist() == pytest.approx([-0.5, 0.5])
    assert panel.kappa == pytest.approx(1 / np.sqrt(3))
    assert not ig.panel_rule("gausslobatto").signed


@pytest.mark.parametrize("method,steps", [("riemann_trapezoid", 9), ("gausslegendre", 16)])
def test_error_ratio_spans_a_random_walk_to_white_noise(method, steps):
    t, w = ig.quadrature(method, steps)
    v = rules.spread_weights(t)
    walk = rules.brownian_kappa(t, w)
    # ell = inf is the random walk; a very long correlation length tends to it.
    assert rules.error_ratio(t, w, v, np.inf) == pytest.approx(walk, rel=1e-9)
    assert rules.error_ratio(t, w, v, 1e3) == pytest.approx(walk, rel=1e-4)
    # White noise: the error is sum w_i n_i (its integral is 0), the spread sum v_i n_i.
    noise = np.sqrt((w**2).sum() / (v**2).sum())
    assert rules.error_ratio(t, w, v, 1e-9) == pytest.approx(noise, rel=1e-6)
    # In between, rougher integrands have larger errors per unit of spread.
    middle = [rules.error_ratio(t, w, v, ell) for ell in (1.0, 0.1, 0.01)]
    assert walk < middle[0] < middle[1] < middle[2] < noise


@pytest.mark.parametrize("method", ["riemann_trapezoid", "gausslobatto"])
def test_roughness_table_runs_from_a_random_walk_to_white_noise(method):
    scales, squares = engine.roughness_table(method)
    rule = ig.panel_rule(method)
    assert squares[0] == pytest.approx(rule.kappa**2, rel=1e-3)
    assert np.all(np.diff(squares) >= -1e-6)  # rougher: more error per unit of spread
    # White noise on 64 signed one-gap panels: the error sum_i w_i n_i has
    # variance sum w_i^2 = 63.5 h^2, the spread h^2 per change of sign between
    # neighbouring panels (about half of 63): a ratio near 2.
    if method == "riemann_trapezoid":
        assert 1.6 < squares[-1] < 2.5


def ou_pairs(ell, pixels=4000, nodes=129, seed=0):
    """`engine.neighbour_pairs` of an Ornstein-Uhlenbeck process (ell = inf: a
    random walk) sampled on uniform nodes, one independent process per pixel."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, nodes)
    c = [rng.normal(size=pixels)]
    for h in np.diff(t):
        r = 0.0 if ell == 0 else np.exp(-h / ell)
        step = np.sqrt(h) if np.isinf(ell) else np.sqrt(1 - r * r)
        c.append((1.0 if np.isinf(ell) else r) * c[-1] + step * rng.normal(size=pixels))
    return engine.neighbour_pairs(list(zip(t.tolist(), c, strict=True)))


def test_correlation_length_is_read_from_neighbouring_gaps():
    for ell in (0.1, 0.01):
        assert rules.correlation_length(ou_pairs(ell)) == pytest.approx(ell, rel=0.2)
    assert rules.correlation_length(ou_pairs(0)) < 1e-3  # white noise
    assert rules.correlation_length(ou_pairs(np.inf)) > 1.0  # a random walk: long
    # A smooth trend (neighbouring differences alike) and no pairs: a random walk.
    t = np.linspace(0, 1, 9)
    trend = engine.neighbour_pairs([(a, np.full(5, a * a)) for a in t.tolist()])
    assert np.isinf(rules.correlation_length(trend))
    assert np.isinf(rules.correlation_length(np.zeros((0, 4))))
    # Pairs of non-finite gradients (rows flagged elsewhere) are left out.
    broken = np.vstack([ou_pairs(0.01), [[0.01, 0.01, np.nan, np.inf]]])
    assert rules.correlation_length(broken) == rules.correlation_length(ou_pairs(0.01))
    # (h1, h2, |d1|^2 + |d2|^2, |d1 + d2|^2) of three nodes, by hand.
    pairs = engine.neighbour_pairs([(0.0, np.zeros(2)), (0.5, np.ones(2)), (1.5, np.zeros(2))])
    assert pairs.tolist() == [[0.5, 1.0, 4.0, 0.0]]


def test_panel_signs_are_even_and_a_function_of_the_panel_alone():
    edges = np.sort(np.random.default_rng(0).random((2000, 2)), axis=1)
    signs = np.array([engine.panel_sign(a, b) for a, b in edges])
    assert set(signs.tolist()) == {-1.0, 1.0}
    assert abs(signs.mean()) < 0.1  # about half of each
    again = [engine.panel_sign(float(a), float(b)) for a, b in edges[:50]]
    assert again == signs[:50].tolist()
    # Halves of a panel are new panels with signs of their own, also even.
    halves = [engine.panel_sign(a, (a + b) / 2) for a, b in edges]
    assert abs(np.mean(halves)) < 0.1 and np.mean(np.array(halves) == signs) < 0.6


@pytest.mark.parametrize("nodes", [[0.2, 0.5, 0.6], [0.1, 0.2, 0.4, 0.9], np.linspace(0, 1, 9)])
def test_the_spread_sees_every_gap_and_no_slope(nodes):
    nodes = np.asarray(nodes, dtype=np.float64)
    v = rules.spread_weights(nodes)
    assert abs(v.sum()) < 1e-12 and abs(v @ nodes) < 1e-12
    tails = np.cumsum(v[::-1])[::-1][1:]  # the spread's response to a jump in each gap
    assert np.all(np.abs(tails) > 1e-3)


@pytest.mark.parametrize("method", ig.METHODS)
def test_panel_rules_are_the_rule_on_both_halves(method):
    panel = ig.panel_rule(method)
    assert np.isclose(panel.weights.sum(), 1.0) and np.isclose(panel.spread.sum(), 0.0)
    assert np.all(np.diff(panel.nodes) > 0)
    # int_0^1 a da = 1/2, exact but for the one-sided rules on four sub-intervals.
    expected = {"riemann_left": 0.5 - 1 / 8, "riemann_right": 0.5 + 1 / 8}.get(method, 0.5)
    assert np.isclose(panel.weights @ panel.nodes, expected)
    if rules.exact_for_linear(method):
        assert panel.least_kappa == 0 and 0 < panel.kappa < 2
    else:  # a trend's error 1/8 against its spread 1/32: kappa 4, above the walk's 4/3
        assert panel.least_kappa == pytest.approx(4.0) and panel.kappa == panel.least_kappa


# Each adaptive panel: the rule on both halves of the panel, with the rule's own
# nodes on each half (Gauss-Lobatto: Simpson's three, the middle one shared); the
# midpoint rule on three parts, whose spread sees curvature.
_PANELS = {
    "gausslobatto": ([0, 1 / 4, 1 / 2, 3 / 4, 1], [1 / 12, 4 / 12, 2 / 12, 4 / 12, 1 / 12]),
    "gausslegendre": (  # two points, 1/2 -+ 1/(2 sqrt 3), on each half
        np.array([0, 0, 1, 1]) / 2 + np.array([-1, 1, -1, 1]) / (4 * 3**0.5) + 1 / 4,
        [1 / 4] * 4,
    ),
    "riemann_middle": ([1 / 6, 1 / 2, 5 / 6], [1 / 3] * 3),  # on three parts
    "riemann_left": ([0, 1 / 4, 1 / 2, 3 / 4], [1 / 4] * 4),
    "riemann_right": ([1 / 4, 1 / 2, 3 / 4, 1], [1 / 4] * 4),
    "riemann_trapezoid": ([0, 1], [1 / 2, 1 / 2]),  # one gap: bisecting costs one node
}


@pytest.mark.parametrize("method", ig.METHODS)
def test_the_panel_of_each_rule_has_known_nodes_and_weights(method):
    nodes, weights = _PANELS[method]
    panel = ig.panel_rule(method)
    np.testing.assert_allclose(panel.nodes, nodes, atol=1e-12)
    np.testing.assert_allclose(panel.weights, weights, atol=1e-12)


@pytest.mark.parametrize("method", ["riemann_left", "riemann_right"])
def test_the_spread_of_a_one_sided_rule_sees_its_error_on_a_trend(method):
    t, w = ig.quadrature(method, 16)
    v = rules.rule_spread(method, t)
    assert abs(v.sum()) < 1e-12  # blind to constants, which the rule integrates exactly
    error = w @ t - 0.5  # -h/2 (left) or +h/2 (right) on c(a) = a
    assert abs(error) == pytest.approx(1 / 32)
    assert rules.trend_kappa(t, w, v) == pytest.approx(abs(error / (v @ t)))
    assert 0.9 < rules.trend_kappa(t, w, v) < 1.1  # the spread is about the error
    # Rules exact for linear functions keep a spread blind to trends.
    t, w = ig.quadrature("riemann_middle", 16)
    assert rules.trend_kappa(t, w, rules.rule_spread("riemann_middle", t)) == 0.0
