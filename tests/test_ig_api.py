"""The public IG entry point on analytic functions: completeness, path
batching, several baselines, non-finite rows, settings."""

import warnings

import numpy as np
import pytest

from tests.ig_cases import (
    SHAPE,
    WEIGHTS,
    analytic,
    calls,
    integrate,
    run,
    score_grad_fn,
    uniform,
)
from transforms import ig


def test_completeness_delta_and_relative():
    delta, rel = ig.completeness(
        np.array([1.1, 2.0, 0.0, 1.0]), [2.0, 3.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]
    )
    np.testing.assert_allclose(delta, [0.1, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(rel[:3], [0.1, 0.0, 0.0])
    assert np.isinf(rel[3])


def test_an_input_equal_to_its_baseline_is_complete_despite_float32_score_noise():
    # F(x) and F(x') of an all-black image and the black baseline, as the bundled
    # model scored them in two calls: one float32 ulp apart. IG is exactly 0.
    target, baseline = 3.3415887355804443, 3.3415892124176025
    delta, rel = ig.completeness(np.array([0.0, 0.0, 1.0]), [target] * 3, [baseline, 2.0, baseline])
    assert rel[0] == 0.0
    np.testing.assert_allclose(rel[1], abs(delta[1]) / (target - 2.0))
    assert rel[2] > 1e5  # a sum where no score difference resolves stays flagged


@pytest.mark.parametrize("method", ["riemann_trapezoid", "gausslegendre"])
def test_refinement_reads_completeness_within_the_scores_rounding_as_completeness_does(method):
    # One value of the input a float32 ulp from its baseline, whose scores come out
    # equal, as a model's can: the map sums to about 1e-7 against a difference of
    # 0. `completeness` reads that as 0 (both within the scores' rounding); the
    # engine read it as an infinite delta and refined the row to --max_steps.
    base = uniform(1, 0.2, 1.0, seed=5)
    x = base.copy()
    x.flat[0] = np.nextafter(x.flat[0], np.float32(2))
    f = analytic(base[0].astype(np.float64), 1)[0]
    scores = dict(target_scores=np.array([f]), baseline_scores=np.array([[f]]))
    result = integrate(
        score_grad_fn, x, base[:, None], [0], [1], method, 24, tolerance=0.01, **scores
    )
    delta, relative = ig.completeness(result.attributions.sum(), f, f)
    assert 0 < abs(delta) < ig.api.SCORE_RESOLUTION * abs(f) and relative == 0.0
    assert result.evaluations.tolist() == [24]


def test_a_completeness_delta_within_the_scores_rounding_is_flagged_not_refined():
    # A short path (F(x) - F(x') = 1e-4 on scores of 5) whose F(x) the model gave
    # 5e-6 off, within its float32 rounding (about 1e-5 here): the map is accurate,
    # its sum 5 % off that F(x) - F(x'). No refinement can reduce a delta of the
    # scores' rounding: the row is flagged at the initial nodes, not refined to
    # --max_steps (256 evaluations).
    def off_at_x(inputs, baselines, alphas, targets):
        scores, grads = score_grad_fn(inputs, baselines, alphas, targets)
        return np.where(alphas == 1.0, scores + 5e-6, scores), grads

    base = uniform(1, 0.5, 0.7, seed=5)
    x = (base * np.float32(1 + 7e-6)).astype(np.float32)
    f0, f1 = (analytic(a[0].astype(np.float64), 1)[0] for a in (base, x))
    assert 5e-5 < f1 - f0 < 2e-4 and 5e-6 < ig.api.SCORE_RESOLUTION * f1
    scores = dict(target_scores=np.array([f1 + 5e-6]), baseline_scores=np.array([[f0]]))
    result = integrate(
        off_at_x, x, base[:, None], [0], [1], "riemann_trapezoid", 24, tolerance=0.01, **scores
    )
    _, relative = ig.completeness(result.attributions.sum(), f1 + 5e-6, f0)
    assert relative[()] > 0.01 and result.error[0] < 0.01
    assert result.evaluations.tolist() == [24]


@pytest.mark.parametrize("method", ig.METHODS)
def test_results_do_not_depend_on_path_batch_size(method):
    x = uniform(3, seed=2)
    base = np.stack([np.zeros_like(x), np.full_like(x, 0.5)], axis=1)
    outs = [
        integrate(score_grad_fn, x, base, [0, 1, 2, 2], [0, 1, 2, 1], method, 5, path_batch_size=b)
        for b in (1, 7, 1000)
    ]
    for other in outs[1:]:
        np.testing.assert_allclose(outs[0].attributions, other.attributions, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(outs[0].error, other.error, rtol=1e-5, atol=1e-9)


def test_chunks_bound_the_points_per_call():
    calls.clear()
    run("riemann_trapezoid", 20, [1, 2, 2], path_batch_size=8)
    assert max(calls) == 8 and sum(calls) == 60
    assert len(calls) == 8 and min(calls) == 7  # evenly sized: no small, slow last call


def test_several_baselines_are_averaged():
    x = uniform(1, seed=3)
    base = np.stack([np.zeros_like(x), np.ones_like(x)], axis=1)
    result = integrate(score_grad_fn, x, base, [0], [0], "gausslegendre", 2, path_batch_size=4)
    expected = ((x - 0) * WEIGHTS + (x - 1) * WEIGHTS) / 2
    np.testing.assert_allclose(result.attributions, expected, rtol=1e-5, atol=1e-6)
    assert result.evaluations.tolist() == [4]


def test_non_finite_gradients_are_flagged_per_row():
    def nan_fn(inputs, baselines, alphas, targets):
        scores, grads = score_grad_fn(inputs, baselines, alphas, targets)
        grads[targets == 1] = np.nan
        return scores, grads

    x = uniform(2, seed=4)
    base = np.zeros((2, 1, *SHAPE), np.float32)
    result = integrate(nan_fn, x, base, [0, 1], [0, 1], "riemann_middle", 3, path_batch_size=4)
    assert result.finite.tolist() == [True, False]


def test_a_zero_map_whose_nodes_disagree_has_an_infinite_error():
    # F's gradient is +1 before the path's midpoint and -1 after it: from x' = 0 to
    # x = 1 the rule's map is exactly 0 while its nodes disagree (a spread). An error
    # relative to a zero map is unbounded: the row is flagged, never called exact.
    def step_fn(inputs, baselines, alphas, targets):
        points = baselines + alphas.reshape(-1, 1, 1, 1) * (inputs - baselines)
        return np.zeros(len(alphas)), np.sign(0.5 - points).astype(np.float32)

    base = np.zeros((1, 1, *SHAPE), np.float32)
    x = np.ones((1, *SHAPE), np.float32)
    result = integrate(step_fn, x, base, [0], [0], "gausslegendre", 4, tolerance=0.0)
    assert not result.attributions.any() and result.error.tolist() == [np.inf]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tolerance": -1.0}, "tolerance must be >= 0"),
        ({"max_steps": 4}, "max_steps \\(4\\)"),
        ({"path_batch_size": 0}, "path_batch_size must be >= 1"),
        ({"memory_budget": -1}, "memory_budget must be >= 0"),
        # Each was a TypeError naming no setting, or failed only in the engine.
        ({"tolerance": "0.01"}, "tolerance must be a number, got '0.01'"),
        ({"completeness_tolerance": "0.01"}, "completeness_tolerance must be a number"),
        ({"max_steps": "64"}, "max_steps must be an integer, got '64'"),
        ({"path_batch_size": 2.5}, "path_batch_size must be an integer, got 2.5"),
        ({"path_batch_size": None}, "path_batch_size must be an integer, got None"),
        ({"memory_budget": float("nan")}, "memory_budget must be an integer, got nan"),
    ],
)
def test_bad_settings_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ig.IGSettings("riemann_trapezoid", 8, **kwargs)


_ROWS_X = uniform(2, seed=4)
_ROWS_BASE = np.zeros((2, 1, *SHAPE), np.float32)


@pytest.mark.parametrize(
    "image_index, targets, base, message",
    [
        # numpy took -1 as the last image, and zipped the shorter of the two lists.
        ([0, -1], [0, 0], _ROWS_BASE, r"image_index must be in \[0, 2\).*got -1"),
        ([0, 2], [0, 0], _ROWS_BASE, r"image_index must be in \[0, 2\).*got 2"),
        ([0], [0, 1], _ROWS_BASE, "image_index and targets give one value per row: 1 and 2"),
        ([[0, 1]], [[0, 1]], _ROWS_BASE, r"image_index must be a non-empty 1-D .*\(1, 2\)"),
        ([0.5, 1], [0, 0], _ROWS_BASE, "image_index must hold integers"),
        ([], [], _ROWS_BASE, r"image_index must be a non-empty 1-D .*\(0,\)"),
        # baselines of 3 images for 2: the third was never used.
        ([0, 1], [0, 0], np.zeros((3, 1, *SHAPE), np.float32), r"baselines must have shape"),
    ],
)
def test_rows_that_do_not_fit_the_inputs_are_refused_by_name(image_index, targets, base, message):
    with pytest.raises(ValueError, match=message):
        integrate(score_grad_fn, _ROWS_X, base, image_index, targets, "riemann_trapezoid", 4)


@pytest.mark.parametrize(
    "target_scores, baseline_scores, message",
    [
        (np.ones(2), np.zeros(2), r"baseline_scores must .* \[R, B\] = \[2, 2\]"),
        (np.ones(1), np.zeros((2, 2)), r"target_scores must .* \[R\] = \[2\]"),
    ],
)
def test_exact_scores_of_the_wrong_size_are_refused_by_name(
    target_scores, baseline_scores, message
):
    base = np.zeros((2, 2, *SHAPE), np.float32)  # two baselines: [R, B] = [2, 2] scores
    with pytest.raises(ValueError, match=message):
        integrate(
            score_grad_fn,
            _ROWS_X,
            base,
            [0, 1],
            [0, 0],
            "riemann_trapezoid",
            4,
            tolerance=0.01,
            target_scores=target_scores,
            baseline_scores=baseline_scores,
        )


def test_a_score_grad_fn_passed_as_the_integrand_names_integrand_from_gradients():
    settings = ig.IGSettings("riemann_trapezoid", 4)
    with pytest.raises(TypeError, match=r"integrand_from_gradients\(fn\)"):
        ig.integrated_gradients(score_grad_fn, _ROWS_X, _ROWS_BASE, [0, 1], [0, 0], settings)


def test_settings_that_are_not_ig_settings_are_named():
    integrand = ig.integrand_from_gradients(score_grad_fn)
    with pytest.raises(TypeError, match="settings must be an IGSettings, .* got dict"):
        ig.integrated_gradients(
            integrand, _ROWS_X, _ROWS_BASE, [0, 1], [0, 0], {"method": "riemann_trapezoid"}
        )


def test_steps_that_are_not_an_integer_are_named():
    # Checked before the default max_steps compares them (a TypeError otherwise).
    with pytest.raises(ValueError, match="steps must be an integer >= 2 .*, got '8'"):
        ig.IGSettings("riemann_trapezoid", "8")


def test_without_max_steps_a_tolerance_refines_up_to_the_default_cap():
    """The library and the job share one default cap (it was `steps` in the
    library: a tolerance without max_steps then never refined)."""
    assert ig.IGSettings("riemann_trapezoid", 8, tolerance=0.01).max_steps == 256
    assert ig.IGSettings("riemann_trapezoid", 300, tolerance=0.01).max_steps == 300
    x = uniform(1, seed=6)
    result = integrate(
        score_grad_fn,
        x,
        np.zeros((1, 1, *SHAPE), np.float32),
        [0],
        [1],  # sum x^3: curved along the path
        "riemann_trapezoid",
        3,
        tolerance=1e-3,
        target_scores=np.array([analytic(x[0].astype(np.float64), 1)[0]]),
        baseline_scores=np.zeros((1, 1)),
    )
    assert 3 < result.evaluations[0] <= 256 and result.error[0] <= 1e-3


def test_a_tolerance_without_the_exact_scores_is_refused():
    x = uniform(1, seed=5)
    with pytest.raises(ValueError, match="tolerance > 0 needs target_scores"):
        integrate(
            score_grad_fn,
            x,
            np.zeros((1, 1, *SHAPE), np.float32),
            [0],
            [0],
            "riemann_trapezoid",
            5,
            tolerance=0.01,
        )


@pytest.mark.parametrize(
    "method, steps", [("riemann_trapezoid", 2), ("gausslegendre", 2), ("riemann_middle", 1)]
)
def test_a_fixed_rule_without_a_spread_has_no_error_estimate(method, steps):
    # Two nodes of a rule exact for linear functions (one for middle) show nothing
    # of how far the map is off: nan, not 0.
    _, result = run(method, steps, [1, 2])
    assert np.isnan(result.error).all()
    _, finer = run(method, steps + 2, [1, 2])
    assert (finer.error > 0).all()


def test_a_rows_steps_are_the_most_of_any_of_its_baselines():
    # A baseline equal to the image is a path of length 0: exact at its 4 initial
    # nodes, never split; the row refines only its path from black. Its `steps` are
    # that path's nodes, whichever order the baselines come in.
    x = uniform(1, 0.2, 1.0, seed=7)
    f = analytic(x[0].astype(np.float64), 1)[0]  # sum x^3: curved along the path
    for base, f_base in (([np.zeros_like(x), x], [0.0, f]), ([x, np.zeros_like(x)], [f, 0.0])):
        result = integrate(
            score_grad_fn,
            x,
            np.stack(base, axis=1),
            [0],
            [1],
            "riemann_trapezoid",
            4,
            tolerance=1e-3,
            target_scores=np.array([f]),
            baseline_scores=np.array([f_base]),
        )
        assert result.steps[0] > 4
        assert result.evaluations[0] == result.steps[0] + 4


def test_a_path_of_length_zero_has_a_zero_map_known_exactly():
    # x' = x: the map is 0 and so is its spread, an error of 0 (not nan, not inf).
    x = uniform(1, 0.2, 1.0, seed=8)
    result = integrate(score_grad_fn, x, x[:, None], [0], [1], "riemann_trapezoid", 5)
    assert not result.attributions.any()
    assert result.error.tolist() == [0.0]


@pytest.mark.parametrize("method", ["gausslegendre", "gausslobatto", "riemann_middle"])
def test_adaptive_steps_below_one_panel_are_refused_not_run_past_max_steps(method):
    # The adaptive engine starts from at least one whole panel (4 or 5 nodes for
    # these rules, 3 for the midpoint's): fewer --steps than that, with a cap below
    # one panel, cost more evaluations than max_steps allows. The job refuses it
    # (`AttributionConfig`); so does the library, rather than exceed its cap.
    panel = len(ig.panel_rule(method).nodes)
    steps = ig.min_steps(method)
    with pytest.raises(ValueError, match="one adaptive panel"):
        ig.IGSettings(method, steps, tolerance=0.01, max_steps=steps)
    assert ig.IGSettings(method, steps).max_steps >= steps  # the fixed rule: any steps
    x = uniform(1, seed=9)
    result = integrate(
        score_grad_fn,
        x,
        np.zeros((1, 1, *SHAPE), np.float32),
        [0],
        [1],
        method,
        panel,
        tolerance=1e-6,
        max_steps=panel,
        target_scores=np.array([analytic(x[0].astype(np.float64), 1)[0]]),
        baseline_scores=np.zeros((1, 1)),
    )
    assert result.evaluations[0] <= panel


@pytest.mark.parametrize("path_batch_size", [1, 1000])
def test_a_path_non_finite_at_one_point_is_flagged_whatever_its_other_points(path_batch_size):
    # NaN gradients before the path's middle only: in one call with the finite
    # points after it (1000 per call), the path's later points must not unflag it.
    def nan_first_half(inputs, baselines, alphas, targets):
        scores, grads = score_grad_fn(inputs, baselines, alphas, targets)
        grads[alphas < 0.5] = np.nan
        return scores, grads

    x = uniform(2, seed=4)
    base = np.zeros((2, 1, *SHAPE), np.float32)
    kwargs = dict(path_batch_size=path_batch_size)
    result = integrate(nan_first_half, x, base, [0, 1], [1, 2], "riemann_trapezoid", 9, **kwargs)
    assert result.finite.tolist() == [False, False]


@pytest.mark.parametrize("tolerance", [0.0, 0.01])
def test_infinite_gradients_flag_their_row_without_numpy_warnings(tolerance):
    # The row is flagged (`finite`); NumPy's "invalid value encountered" warnings
    # from its sums said nothing more, once per process, in a job's log.
    def inf_after_middle(inputs, baselines, alphas, targets):
        scores, grads = score_grad_fn(inputs, baselines, alphas, targets)
        grads[(alphas > 0.5) & (targets == 1)] = np.inf
        return scores, grads

    x = uniform(2, seed=9)
    f = np.array([analytic(x[i].astype(np.float64), t)[0] for i, t in [(0, 1), (1, 2)]])
    scores = dict(target_scores=f, baseline_scores=np.zeros((2, 1)))
    base = np.zeros((2, 1, *SHAPE), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = integrate(
            inf_after_middle,
            x,
            base,
            [0, 1],
            [1, 2],
            "riemann_trapezoid",
            9,
            tolerance=tolerance,
            **scores,
        )
    assert result.finite.tolist() == [False, True]
    assert np.isnan(result.error[0]) and np.isfinite(result.error[1])


def test_a_non_finite_score_flags_its_row_though_its_gradients_are_finite():
    def nan_score(inputs, baselines, alphas, targets):
        scores, grads = score_grad_fn(inputs, baselines, alphas, targets)
        return np.where(targets == 2, np.nan, scores), grads

    x = uniform(2, seed=4)
    base = np.zeros((2, 1, *SHAPE), np.float32)
    result = integrate(nan_score, x, base, [0, 1], [1, 2], "riemann_trapezoid", 5)
    assert result.finite.tolist() == [True, False]


@pytest.mark.parametrize("tolerance", [0.0, 1e-3])
@pytest.mark.parametrize("first", ["black", "x"])
def test_the_path_curve_is_the_first_baselines(first, tolerance):
    # IGResult: path_alphas / path_scores are of the first baseline's path. From
    # black, F = sum x^3 rises as a^3 (and adaptive mode refines it); from x itself,
    # the path has length 0: F is F(x) all along, at the 4 initial nodes only.
    x = uniform(1, 0.2, 1.0, seed=7)
    f = analytic(x[0].astype(np.float64), 1)[0]
    bases, f_bases = [np.zeros_like(x), x], [0.0, f]
    if first == "x":
        bases, f_bases = bases[::-1], f_bases[::-1]
    scores = {"target_scores": np.array([f]), "baseline_scores": np.array([f_bases])}
    result = integrate(
        score_grad_fn,
        x,
        np.stack(bases, axis=1),
        [0],
        [1],
        "riemann_trapezoid",
        4,
        tolerance=tolerance,
        **(scores if tolerance else {}),
    )
    alphas, curve = result.path_alphas[0], result.path_scores[0]
    assert alphas[0] == 0.0 and alphas[-1] == 1.0 and len(curve) == len(alphas)
    if first == "black":
        np.testing.assert_allclose(curve, f * alphas**3, rtol=1e-5, atol=1e-6)
        assert len(alphas) > 4 or not tolerance
    else:
        np.testing.assert_allclose(curve, f, rtol=1e-5)
        assert len(alphas) == 4
