"""Known-answer tests of the framework-free IG math on analytic functions."""

import numpy as np
import pytest

from transforms import ig

RNG = np.random.default_rng(0)
SHAPE = (3, 4, 2)
WEIGHTS = RNG.normal(size=SHAPE).astype(np.float32)


def analytic(point: np.ndarray, target: int) -> tuple[float, np.ndarray]:
    """Three analytic outputs: 0 linear w.x, 1 sum x^3, 2 sum sin x."""
    if target == 0:
        return float(np.sum(WEIGHTS * point)), WEIGHTS
    if target == 1:
        return float(np.sum(point**3)), 3.0 * point**2
    return float(np.sum(np.sin(point))), np.cos(point)


def score_grad_fn(inputs, baselines, alphas, targets):
    calls.append(len(alphas))
    points = baselines + alphas.reshape(-1, 1, 1, 1) * (inputs - baselines)
    out = [analytic(p.astype(np.float64), int(t)) for p, t in zip(points, targets, strict=True)]
    return np.array([s for s, _ in out]), np.stack([g for _, g in out]).astype(np.float32)


calls: list[int] = []


def run(method, steps, targets, path_batch_size=16, x=None, **kwargs):
    if x is None:
        x = RNG.uniform(0.2, 1.0, size=(len(targets), *SHAPE)).astype(np.float32)
    base = np.zeros((len(targets), 1, *SHAPE), np.float32)
    result = ig.integrated_gradients(
        score_grad_fn, x, base, np.arange(len(targets)), targets,
        method=method, steps=steps, path_batch_size=path_batch_size, **kwargs,
    )  # fmt: skip
    return x, result


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


def test_completeness_delta_and_relative():
    delta, rel = ig.completeness(np.array([1.1, 2.0, 0.0, 1.0]), [2.0, 3.0, 1.0, 1.0],
                                 [1.0, 1.0, 1.0, 1.0])  # fmt: skip
    np.testing.assert_allclose(delta, [0.1, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(rel[:3], [0.1, 0.0, 0.0])
    assert np.isinf(rel[3])


@pytest.mark.parametrize("method", ig.METHODS)
def test_results_do_not_depend_on_path_batch_size(method):
    x = RNG.uniform(0, 1, size=(3, *SHAPE)).astype(np.float32)
    base = np.stack([np.zeros_like(x), np.full_like(x, 0.5)], axis=1)
    outs = [
        ig.integrated_gradients(score_grad_fn, x, base, [0, 1, 2, 2], [0, 1, 2, 1],
                                method=method, steps=5, path_batch_size=b).attributions
        for b in (1, 7, 1000)
    ]  # fmt: skip
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(outs[0], outs[2], rtol=1e-6, atol=1e-7)


def test_chunks_bound_the_points_per_call():
    calls.clear()
    run("riemann_trapezoid", 20, [1, 2, 2], path_batch_size=8)
    assert max(calls) == 8 and sum(calls) == 60
    assert len(calls) == 8 and min(calls) == 7  # evenly sized: no small, slow last call


def test_several_baselines_are_averaged():
    x = RNG.uniform(0, 1, size=(1, *SHAPE)).astype(np.float32)
    base = np.stack([np.zeros_like(x), np.ones_like(x)], axis=1)
    result = ig.integrated_gradients(
        score_grad_fn, x, base, [0], [0], method="gausslegendre", steps=2, path_batch_size=4
    )
    expected = ((x - 0) * WEIGHTS + (x - 1) * WEIGHTS) / 2
    np.testing.assert_allclose(result.attributions, expected, rtol=1e-5, atol=1e-6)
    assert result.evaluations.tolist() == [4]


def steep(point: np.ndarray) -> tuple[float, np.ndarray]:
    """F = sum tanh(40 x): saturates early on the path from 0, like image classifiers."""
    return float(np.sum(np.tanh(40 * point))), 40 / np.cosh(40 * point) ** 2


def steep_fn(inputs, baselines, alphas, targets):
    calls.append(len(alphas))
    points = baselines + alphas.reshape(-1, 1, 1, 1) * (inputs - baselines)
    out = [steep(p.astype(np.float64)) for p in points]
    return np.array([s for s, _ in out]), np.stack([g for _, g in out]).astype(np.float32)


def adaptive(fn, x, tolerance, steps=8, max_steps=512, method="gausslegendre", exact=np.tanh):
    scale = 40 if exact is np.tanh else 1
    target_scores = exact(scale * x).reshape(len(x), -1).sum(1)
    return ig.integrated_gradients(
        fn, x, np.zeros((len(x), 1, *SHAPE), np.float32), np.arange(len(x)), [2] * len(x),
        method=method, steps=steps, path_batch_size=32, target_scores=target_scores,
        baseline_scores=np.zeros((len(x), 1)), tolerance=tolerance, max_steps=max_steps,
    )  # fmt: skip


OFFSETS = RNG.uniform(0, 5, size=SHAPE)


def kinks_fn(inputs, baselines, alphas, targets):
    """F = sum clip(40 x - b, 0, 1): ReLU6-like kinks at a different point per feature."""
    points = baselines + alphas.reshape(-1, 1, 1, 1) * (inputs - baselines)
    z = 40 * points.astype(np.float64) - OFFSETS
    scores = np.clip(z, 0, 1).reshape(len(points), -1).sum(1)
    return scores, (40.0 * ((z > 0) & (z < 1))).astype(np.float32)


def test_adaptive_refinement_reaches_tolerance_where_the_fixed_rule_does_not():
    x = np.random.default_rng(7).uniform(0.5, 1.0, size=(2, *SHAPE)).astype(np.float32)
    exact = np.clip(40 * x - OFFSETS, 0, 1)
    fixed = ig.integrated_gradients(
        kinks_fn, x, np.zeros((2, 1, *SHAPE), np.float32), [0, 1], [2, 2],
        method="gausslegendre", steps=64, path_batch_size=32,
    )  # fmt: skip
    result = ig.integrated_gradients(
        kinks_fn, x, np.zeros((2, 1, *SHAPE), np.float32), [0, 1], [2, 2],
        method="gausslegendre", steps=16, path_batch_size=32,
        target_scores=exact.reshape(2, -1).sum(1), baseline_scores=np.zeros((2, 1)),
        tolerance=1e-3, max_steps=512,
    )  # fmt: skip
    for attributions in (fixed.attributions, result.attributions):
        assert attributions.shape == x.shape
    _, fixed_rel = ig.completeness(
        fixed.attributions.reshape(2, -1).sum(1), exact.reshape(2, -1).sum(1), 0
    )
    _, rel = ig.completeness(
        result.attributions.reshape(2, -1).sum(1), exact.reshape(2, -1).sum(1), 0
    )
    assert np.all(fixed_rel > 1e-3)  # 64 Gauss-Legendre nodes stumble on the kinks
    assert np.all(rel <= 1e-3)
    assert np.all(result.evaluations <= 512) and np.all(result.forward_evaluations > 0)
    # Refinement went where the integrand bends: the kinks all lie at a < 6 / 20.
    alphas = result.path_alphas[0]
    assert np.mean(alphas < 0.3) > 0.8
    assert result.path_alphas[0][0] == 0.0 and result.path_alphas[0][-1] == 1.0
    np.testing.assert_allclose(result.path_scores[0][-1], exact[0].sum(), rtol=1e-9)


def test_adaptive_attributions_converge_per_feature_on_a_smooth_steep_function():
    x = np.random.default_rng(8).uniform(0.5, 1.0, size=(2, *SHAPE)).astype(np.float32)
    result = adaptive(steep_fn, x, tolerance=1e-5, steps=8, max_steps=1024)
    np.testing.assert_allclose(result.attributions, np.tanh(40 * x), atol=1e-3)


def test_adaptive_mode_on_a_linear_model_refines_nothing():
    x = RNG.uniform(size=(2, *SHAPE)).astype(np.float32)
    result = ig.integrated_gradients(
        score_grad_fn, x, np.zeros((2, 1, *SHAPE), np.float32), [0, 1], [0, 0],
        method="gausslegendre", steps=8, path_batch_size=32,
        target_scores=(x * WEIGHTS).reshape(2, -1).sum(1), baseline_scores=np.zeros((2, 1)),
        tolerance=1e-6, max_steps=64,
    )  # fmt: skip
    np.testing.assert_allclose(result.attributions, x * WEIGHTS, rtol=1e-5, atol=1e-6)
    assert result.evaluations.tolist() == [8, 8] and result.steps.tolist() == [8, 8]


def test_adaptive_results_do_not_depend_on_path_batch_size():
    x = RNG.uniform(0.5, 1.0, size=(3, *SHAPE)).astype(np.float32)
    target_scores = np.tanh(40 * x).reshape(3, -1).sum(1)
    outs = [
        ig.integrated_gradients(
            steep_fn, x, np.zeros((3, 1, *SHAPE), np.float32), [0, 1, 2], [2, 2, 2],
            method="gausslegendre", steps=8, path_batch_size=b, target_scores=target_scores,
            baseline_scores=np.zeros((3, 1)), tolerance=1e-3, max_steps=256,
        )
        for b in (1, 5, 1000)
    ]  # fmt: skip
    for other in outs[1:]:
        np.testing.assert_allclose(outs[0].attributions, other.attributions, rtol=1e-5, atol=1e-7)
        assert outs[0].evaluations.tolist() == other.evaluations.tolist()


def test_refinement_rounds_bisect_one_panel_per_path_then_more():
    # On a CPU a gradient call costs a fixed overhead plus a cost per point:
    # a path's first rounds bisect only its worst panel (one new trapezoid node
    # each), and a path still above the tolerance after 8 rounds bisects one
    # panel more every 8 rounds, so that rough paths do not take hundreds of rounds.
    x = np.random.default_rng(11).uniform(0.5, 1.0, size=(1, *SHAPE)).astype(np.float32)
    calls.clear()
    result = adaptive(steep_fn, x, tolerance=1e-6, steps=5, method="riemann_trapezoid")
    assert calls[:25] == [5] + [1] * 8 + [2] * 8 + [3] * 8
    assert max(calls) > 3 and result.evaluations[0] == sum(calls)
    # Two paths share each round's call.
    calls.clear()
    x2 = np.concatenate([x, x])
    adaptive(steep_fn, x2, tolerance=1e-6, steps=5, method="riemann_trapezoid", max_steps=40)
    assert calls[:10] == [10] + [2] * 8 + [4]


def test_refinement_stops_at_the_cap():
    x = RNG.uniform(0.5, 1.0, size=(1, *SHAPE)).astype(np.float32)
    result = adaptive(steep_fn, x, tolerance=1e-12, max_steps=40)
    assert result.evaluations[0] <= 40 and result.evaluations[0] > 8


@pytest.mark.parametrize("method", ig.METHODS)
def test_adaptive_mode_works_for_every_rule(method):
    x = RNG.uniform(0.5, 1.0, size=(1, *SHAPE)).astype(np.float32)
    result = adaptive(steep_fn, x, tolerance=1e-2, steps=8, max_steps=2048, method=method)
    _, rel = ig.completeness(result.attributions.sum(), np.tanh(40 * x).sum(), 0)
    assert rel <= 1e-2 and result.evaluations[0] > 8


def recording(fn, seen):
    def wrapped(inputs, baselines, alphas, targets):
        seen.extend(zip(inputs[:, 0, 0, 0].tolist(), alphas.tolist(), strict=True))
        return fn(inputs, baselines, alphas, targets)

    return wrapped


@pytest.mark.parametrize("method", ["riemann_trapezoid", "gausslobatto"])
def test_bisection_reuses_every_node_of_nested_panels(method, monkeypatch):
    # Trapezoid and Gauss-Lobatto panels keep their edges (and middle) as nodes
    # of their halves: with nothing folded, no point is evaluated twice and F at
    # the edges comes with the gradients (no forward passes).
    monkeypatch.setattr(ig, "_active_panels", lambda paths, vector_bytes: 10_000)
    x = np.random.default_rng(9).uniform(0.5, 1.0, size=(2, *SHAPE)).astype(np.float32)
    seen = []
    result = adaptive(recording(steep_fn, seen), x, tolerance=1e-4, steps=5, method=method)
    assert len(seen) == len(set(seen)) == result.evaluations.sum()
    assert result.forward_evaluations.tolist() == [0, 0]
    assert result.evaluations.tolist() == [len(a) for a in result.path_alphas]
    assert result.steps.tolist() == result.evaluations.tolist() and result.steps.min() > 10


@pytest.mark.parametrize("method", ["riemann_trapezoid", "gausslobatto", "gausslegendre"])
def test_folding_panels_away_does_not_change_the_result(method, monkeypatch):
    # Memory is bounded by folding all but a few panels into one sum; a folded
    # panel split later is taken out of the sum again. The result must be the
    # one computed with every panel kept apart.
    x = np.random.default_rng(10).uniform(0.5, 1.0, size=(2, *SHAPE)).astype(np.float32)
    outs = []
    for active in (10_000, 2, 1):
        monkeypatch.setattr(ig, "_active_panels", lambda paths, vector_bytes, k=active: k)
        outs.append(adaptive(steep_fn, x, tolerance=1e-4, steps=8, method=method))
    for other in outs[1:]:
        np.testing.assert_allclose(other.attributions, outs[0].attributions, rtol=1e-4, atol=1e-6)
        assert (other.steps == outs[0].steps).all()
    # Folding costs evaluations (nodes evaluated again), never accuracy.
    assert (outs[2].evaluations >= outs[0].evaluations).all()
    assert (outs[2].evaluations > outs[0].evaluations).any()


def test_kept_panels_fit_the_node_vector_budget(monkeypatch):
    vector = 224 * 224 * 3 * 4  # one float32 224x224 RGB vector: 602112 bytes
    assert ig._NODE_VECTOR_BYTES == 256 * 2**20
    assert ig._active_panels(8, vector) == 32  # a batch of 8 images: 55 fit, capped at 32
    assert ig._active_panels(20, vector) == 22  # 268435456 // (20 * 602112) = 22
    assert ig._active_panels(8, 2 * vector) == 27  # two vectors per panel (Gauss-Lobatto)
    assert ig._active_panels(80, vector) == 8  # top_k 5 x 2 baselines x 8: the floor
    # The engine passes the bytes of a panel's own nodes: one vector for
    # trapezoid panels (edges shared), two for Gauss-Lobatto (middle + edge).
    seen = []
    real = ig._active_panels
    monkeypatch.setattr(ig, "_active_panels", lambda n, b: seen.append((n, b)) or real(n, b))
    x = np.random.default_rng(3).uniform(0.5, 1.0, size=(2, *SHAPE)).astype(np.float32)
    for method in ("riemann_trapezoid", "gausslobatto"):
        adaptive(steep_fn, x, tolerance=1e-2, steps=5, method=method)
    assert seen == [(2, x[0].nbytes), (2, 2 * x[0].nbytes)]


def test_non_finite_gradients_are_flagged_per_row():
    def nan_fn(inputs, baselines, alphas, targets):
        scores, grads = score_grad_fn(inputs, baselines, alphas, targets)
        grads[targets == 1] = np.nan
        return scores, grads

    x = RNG.uniform(size=(2, *SHAPE)).astype(np.float32)
    result = ig.integrated_gradients(
        nan_fn, x, np.zeros((2, 1, *SHAPE), np.float32), [0, 1], [0, 1],
        method="riemann_middle", steps=3, path_batch_size=4,
    )  # fmt: skip
    assert result.finite.tolist() == [True, False]


@pytest.mark.parametrize(
    "method, steps, message",
    [("simpson", 4, "Unknown IG method 'simpson'"), ("riemann_trapezoid", 1, "steps must be")],
)
def test_bad_rule_arguments_name_the_value(method, steps, message):
    with pytest.raises(ValueError, match=message):
        ig.quadrature(method, steps)
