"""Deletion and insertion: known answers on linear models, the control's seeding, batching."""

import itertools
import warnings

import numpy as np
import pytest

from transforms import faithfulness as fa

SIDE = 4  # 4 x 4 pixels
PIXELS = SIDE * SIDE


def _linear(weights: np.ndarray, calls: list | None = None) -> fa.ProbabilityFn:
    """F(x) = sum(x * w): removing a pixel takes its channel-summed x * w off the score."""

    def fn(images, targets):
        if calls is not None:
            calls.append(len(images))
        assert images.dtype == np.float32 and targets.dtype == np.int64
        return (images * weights).reshape(len(images), -1).sum(axis=1, dtype=np.float64)

    return fn


def _ramp_image() -> np.ndarray:
    """float32 [4, 4, 3] whose pixels' channel sums are 1..16 in a shuffled layout, with
    large channels of opposite sign: an |attribution| ranking would order them otherwise."""
    values = np.random.default_rng(0).permutation(PIXELS).reshape(SIDE, SIDE) + 1.0
    opposite = np.random.default_rng(1).integers(10, 20, size=(SIDE, SIDE)) + 0.5
    return np.stack([values + opposite, -opposite, np.zeros_like(values)], -1).astype(np.float32)


def _run(fn, image, attribution, random_order, steps, chunk_size=8, known=None):
    zero = np.zeros_like(image)[None]
    return fa.deletion_insertion(
        fn,
        image[None],
        zero,
        zero,
        [0],
        [0],
        fa.ranking(attribution)[None],
        random_order[None],
        steps=steps,
        chunk_size=chunk_size,
        image_probabilities=known,
    )


def test_ranking_sums_channels_signed_highest_first():
    image = _ramp_image()
    order = fa.ranking(image)
    sums = image.sum(-1).ravel()
    np.testing.assert_array_equal(sums[order], np.arange(PIXELS, 0, -1))
    # The example tells the reductions apart: |.| summed over channels ranks otherwise.
    assert not np.array_equal(np.argsort(-np.abs(image).sum(-1).ravel()), order)
    np.testing.assert_array_equal(fa.ranking(image.sum(-1)), order)  # pixel maps as they are
    assert fa.ranking(np.array([[0.0, 2.0], [2.0, -1.0]])).tolist() == [1, 2, 0, 3]  # ties: index
    # Ties keep row-major order at any size (a black baseline's padding: many zeros),
    # where an unstable sort orders them otherwise.
    ties = np.tile([1.0, 0.0, 0.0, 1.0], 64).reshape(16, 16)
    flat = np.arange(ties.size)
    expected = np.concatenate([flat[ties.ravel() == 1], flat[ties.ravel() == 0]])
    np.testing.assert_array_equal(fa.ranking(ties), expected)
    with pytest.raises(ValueError, match="shape"):
        fa.ranking(np.zeros(4))


@pytest.mark.parametrize("steps", [PIXELS, 4])
def test_linear_model_aucs_have_closed_forms(steps):
    # IG of F(x) = sum(x) from a zero baseline is x itself. Pixel sums are 1..P: after
    # the n highest are deleted, F / F(x) = (P - n)(P - n + 1) / (P (P + 1)); insertion
    # over a zero start reveals what deletion removes: 1 minus that.
    image = _ramp_image()
    result = _run(_linear(1.0), image, image, np.arange(PIXELS), steps)
    n = np.arange(steps + 1) * PIXELS // steps
    deletion = (PIXELS - n) * (PIXELS - n + 1) / (PIXELS * (PIXELS + 1))
    total = PIXELS * (PIXELS + 1) / 2
    np.testing.assert_allclose(result.deletion_curve[0] / total, deletion, rtol=1e-6)
    np.testing.assert_allclose(result.insertion_curve[0] / total, 1 - deletion, atol=1e-6)
    trapezoid = (deletion.sum() - (deletion[0] + deletion[-1]) / 2) / steps
    np.testing.assert_allclose(result.deletion_auc, [trapezoid], rtol=1e-6)
    np.testing.assert_allclose(result.insertion_auc, [1 - trapezoid], rtol=1e-6)
    if steps == PIXELS:  # one pixel per step: sum over m <= P of m (m + 1) / (P (P + 1))
        np.testing.assert_allclose(result.deletion_auc, [(2 * PIXELS + 1) / (6 * PIXELS)])
        np.testing.assert_allclose(result.insertion_auc, [(4 * PIXELS - 1) / (6 * PIXELS)])


def test_deleting_the_highest_attributed_pixels_first_drops_the_score_fastest():
    image = _ramp_image()
    rng = np.random.default_rng(2)
    fn = _linear(1.0)
    for _ in range(20):
        other = rng.permutation(PIXELS)
        result = _run(fn, image, image, other, steps=8)
        assert np.all(result.deletion_curve[0] <= result.deletion_curve_random[0] + 1e-5)
        assert np.all(result.insertion_curve[0] >= result.insertion_curve_random[0] - 1e-5)
        assert result.deletion_auc[0] <= result.deletion_auc_random[0]
        assert result.insertion_auc[0] >= result.insertion_auc_random[0]
    # Ranking by the reversed map (least evidence first) is the slowest.
    worst = _run(fn, image, -image, np.arange(PIXELS), steps=PIXELS)
    np.testing.assert_allclose(worst.deletion_auc, [(4 * PIXELS - 1) / (6 * PIXELS)])


def test_curves_end_at_the_reference_and_start_at_the_blurred_image():
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 1, (SIDE, SIDE, 3)).astype(np.float32)
    reference = np.full_like(image, 0.25)
    blurred = np.full_like(image, 0.5)
    weights = rng.uniform(0, 1, image.shape).astype(np.float32)
    fn = _linear(weights)
    result = fa.deletion_insertion(
        fn,
        image[None],
        reference[None],
        blurred[None],
        [0],
        [0],
        fa.ranking(image * weights)[None],
        fa.random_ranking(PIXELS, "a")[None],
        steps=4,
        chunk_size=3,
    )
    p = {
        name: float(fn(x[None], np.zeros(1, np.int64))[0])
        for name, x in (("image", image), ("reference", reference), ("blurred", blurred))
    }
    for curve in (result.deletion_curve, result.deletion_curve_random):
        np.testing.assert_allclose(curve[0, [0, -1]], [p["image"], p["reference"]], rtol=1e-6)
    for curve in (result.insertion_curve, result.insertion_curve_random):
        np.testing.assert_allclose(curve[0, [0, -1]], [p["blurred"], p["image"]], rtol=1e-6)
    assert result.forward_evaluations.tolist() == [fa.forward_passes_per_row(4) + 1]


def test_random_ranking_is_seeded_by_image_and_run_seed():
    first = fa.random_ranking(PIXELS * 100, "cat.png", seed=0)
    np.testing.assert_array_equal(first, fa.random_ranking(PIXELS * 100, "cat.png", seed=0))
    assert sorted(first.tolist()) == list(range(PIXELS * 100))
    assert not np.array_equal(first, fa.random_ranking(PIXELS * 100, "dog.png", seed=0))
    assert not np.array_equal(first, fa.random_ranking(PIXELS * 100, "cat.png", seed=1))


def test_the_controls_ranking_is_the_one_earlier_versions_drew():
    """A --resume continues a run of an earlier version whose settings match, and its
    manifest records nothing of how the control is drawn: an image's control must be
    drawn as that version drew it, or one results table holds controls of two draws
    (and a rerun with the same flags gives other deletion_auc_random). These
    permutations were drawn by the versions up to this test's; a change of the
    derivation needs a new manifest key a --resume checks (as faithfulness_ties)."""
    drawn = {
        (16, "cat.png", 0): [8, 6, 11, 13, 10, 2, 9, 14, 4, 1, 7, 12, 0, 3, 5, 15],
        (16, "n01484850/shark.png", 3): [8, 9, 10, 2, 0, 13, 12, 11, 4, 5, 7, 15, 3, 6, 1, 14],
    }
    for (pixels, image_id, seed), ranking in drawn.items():
        assert fa.random_ranking(pixels, image_id, seed).tolist() == ranking
    assert fa.random_ranking(1000, "cat.png", 0)[:8].tolist() == [
        546,
        511,
        653,
        224,
        242,
        399,
        522,
        715,
    ]


def test_curves_do_not_depend_on_the_chunk_size():
    rng = np.random.default_rng(4)
    images = rng.uniform(0, 1, (3, SIDE, SIDE, 3)).astype(np.float32)
    mix = rng.normal(size=(SIDE * SIDE * 3, 5))

    def softmax_fn(batch, targets):  # a nonlinear model, 5 classes
        logits = batch.reshape(len(batch), -1).astype(np.float64) @ mix
        p = np.exp(logits - logits.max(1, keepdims=True))
        return (p / p.sum(1, keepdims=True))[np.arange(len(batch)), targets]

    index, targets = [0, 1, 1, 2], [3, 0, 4, 2]
    maps = rng.normal(size=(4, SIDE, SIDE, 3))
    orders = np.stack([fa.ranking(m) for m in maps])
    random_orders = np.stack([fa.random_ranking(PIXELS, f"img{i}") for i in index])
    results, calls = [], []
    for chunk, known in ((1, None), (7, None), (1000, None), (5, "known")):
        sizes = []
        probs = softmax_fn(images[index], np.array(targets)) if known else None
        result = fa.deletion_insertion(
            lambda b, t, s=sizes: (s.append(len(b)), softmax_fn(b, t))[1],
            images,
            images * 0,
            images * 0.5,
            index,
            targets,
            orders,
            random_orders,
            steps=6,
            chunk_size=chunk,
            image_probabilities=probs,
        )
        results.append(result)
        calls.append(sizes)
    assert max(calls[0]) == 1 and max(calls[1]) <= 7 and len(calls[2]) == 1
    assert sum(calls[1]) == 4 * (fa.forward_passes_per_row(6) + 1)
    # With p(x) known, the image itself is not forwarded again: the documented cost.
    assert sum(calls[3]) == 4 * fa.forward_passes_per_row(6)
    assert results[3].forward_evaluations.tolist() == [fa.forward_passes_per_row(6)] * 4
    for other in results[1:]:
        for name in (
            "deletion_curve",
            "insertion_curve",
            "deletion_curve_random",
            "insertion_curve_random",
            "deletion_auc",
            "insertion_auc",
            "deletion_auc_random",
            "insertion_auc_random",
        ):
            np.testing.assert_allclose(
                getattr(other, name), getattr(results[0], name), rtol=1e-12, err_msg=name
            )


def test_auc_is_normalised_by_the_image_probability_and_capped():
    curves = np.array([[0.8, 0.6, 0.4, 0.2, 0.0], [0.5, 1.0, 1.0, 0.5, 0.5], [0.1] * 5])
    np.testing.assert_allclose(fa.auc(curves, [0.8, 0.5, 0.0])[:2], [0.5, 1.0])
    assert np.isnan(fa.auc(curves, [0.8, 0.5, 0.0])[2])


def test_an_undefined_auc_is_stored_as_null_not_nan():
    # p(x) = 0 (a softmax underflow): the normalised curves are undefined. A NaN in
    # Parquet is a value (DuckDB orders it above every number, so `deletion_auc >=
    # deletion_auc_random` would hold); null is what every reader treats as missing.
    image = _ramp_image()
    result = _run(_linear(image * 0), image, image, np.arange(PIXELS), 4, known=np.array([0.0]))
    assert np.isnan(result.deletion_auc[0])
    columns = fa.row_columns(result, 0)
    for name in fa.COLUMNS[:4]:
        assert columns[name] is None, name
    np.testing.assert_array_equal(columns["deletion_curve"], np.zeros(5, np.float32))
    finite = fa.row_columns(_run(_linear(image), image, image, np.arange(PIXELS), 4), 0)
    assert all(isinstance(finite[name], float) for name in fa.COLUMNS[:4])


def test_bad_steps_name_the_value():
    with pytest.raises(ValueError, match=r"\[1, 16\].*got 17"):
        fa.step_counts(PIXELS, 17)
    assert fa.step_counts(10, 4).tolist() == [0, 2, 5, 8, 10]


def test_for_rows_seeds_the_control_by_each_rows_image_and_the_run_seed():
    rng = np.random.default_rng(5)
    images = rng.uniform(0, 1, (2, SIDE, SIDE, 3)).astype(np.float32)
    weights = rng.uniform(0, 1, images.shape[1:]).astype(np.float32)
    ids, index = ["cat.png", "dog.png"], [1, 0, 1]
    maps = rng.normal(size=(3, SIDE, SIDE, 3))
    kwargs = dict(steps=PIXELS, chunk_size=8)
    result = fa.for_rows(
        _linear(weights), images, images * 0, ids, index, [0] * 3, maps, seed=3, **kwargs
    )
    for r, i in enumerate(index):
        control = _run(
            _linear(weights), images[i], maps[r], fa.random_ranking(PIXELS, ids[i], 3), PIXELS
        )
        np.testing.assert_allclose(
            result.deletion_curve_random[r], control.deletion_curve_random[0]
        )
        np.testing.assert_allclose(result.deletion_curve[r], control.deletion_curve[0])
    other = fa.for_rows(
        _linear(weights), images, images * 0, ids, index, [0] * 3, maps, seed=4, **kwargs
    )
    assert not np.allclose(other.deletion_curve_random, result.deletion_curve_random)
    np.testing.assert_array_equal(other.deletion_curve, result.deletion_curve)


def test_stored_curves_read_back_as_their_aucs_measure_them():
    # p(x) is where deletion starts; without it (0), where insertion ends.
    deletion, insertion = np.array([0.5, 0.25, 0.75]), np.array([0.1, 0.2, 0.5])
    assert fa.image_probability(deletion, insertion) == 0.5
    assert fa.image_probability(np.array([0.0, 0.1]), insertion) == 0.5
    assert fa.image_probability(None, np.array([0.0])) is None
    drawn = fa.normalised(deletion[None], np.array([0.5]))[0]
    np.testing.assert_allclose(drawn, [1.0, 0.5, 1.0])  # above p(x): capped at 1
    assert fa.auc(deletion[None], np.array([0.5]))[0] == 0.75  # its trapezoid area
    assert np.isnan(fa.normalised(deletion[None], np.array([0.0]))).all()


def test_a_padded_images_curves_switch_its_own_pixels_alone_and_keep_its_padding():
    """An 8 x 8 square holding a 4 x 8 image between two bars of padding (value 0.3):
    F is the mean of the image's own pixels (1 each), deletion sets them to 0. Both
    rankings switch the 32 own pixels alone, K / 4 steps of 8, so every curve falls
    straight to 0 (AUC 1/2), and no perturbed image, the blurred start included,
    changes a padding pixel. The map says nothing of which own pixel matters, and
    ties with its control. Before, with the bars ranked too, it beat the control by
    ranking them last (AUC 1/4 against about 1/2): the padding alone made it look good."""
    side, steps = 8, 4
    content = np.zeros((1, side, side), dtype=bool)
    content[0, 2:6] = True
    image = np.where(content[0, ..., None], 1.0, 0.3).astype(np.float32)[None].repeat(3, -1)
    seen = []

    def own_mean(images, targets):
        seen.append(images.copy())
        return images[:, 2:6, :, 0].mean(axis=(1, 2)).astype(np.float64)

    kwargs = dict(steps=steps, chunk_size=16, seed=0)
    args = (own_mean, image, np.zeros_like(image), ["panorama.png"], [0], [0])
    attribution = np.where(content[0], 1.0, 0.0)[None]  # padding 0, as a black baseline gives
    result = fa.for_rows(*args, attribution, content=content, **kwargs)
    straight = 1.0 - np.arange(steps + 1) / steps
    for curve in (result.deletion_curve, result.deletion_curve_random):
        np.testing.assert_allclose(curve[0], straight, atol=1e-6)
    np.testing.assert_allclose([result.deletion_auc[0], result.deletion_auc_random[0]], 0.5)
    bars = ~content[0]
    for images in seen:
        np.testing.assert_array_equal(images[:, bars], np.float32(0.3))
    # The rankings put the own pixels first, each in its order: a uniform permutation
    # of the 32 own pixels for the control.
    order = fa.content_first(np.arange(side * side)[::-1], content[0])
    assert order[:32].tolist() == list(range(47, 15, -1)) and set(order[32:]) == set(
        range(16)
    ) | set(range(48, 64))
    whole = fa.for_rows(*args, attribution, **kwargs)  # no content: the bars are ranked too
    np.testing.assert_allclose(whole.deletion_curve[0], [1.0, 0.5, 0.0, 0.0, 0.0], atol=1e-6)
    assert whole.deletion_auc[0] == pytest.approx(0.25)


def test_probabilities_of_outputs_are_float64_and_an_infinite_output_nan_without_warning():
    # from_outputs reads each target's probability as the image's own p(x) is read: in
    # float64 (a float32 softmax flushed 1e-48 to 0); an infinite output is NaN (its AUC
    # null), without numpy's 'invalid value' warning on every curve of a worker's log.
    from transforms.tf_model import softmax  # noqa: PLC0415

    outputs = np.array([[0.0, -110.0], [np.inf, 0.0]], np.float32)
    # As Classifier.probabilities computes them, from float64 outputs.
    probabilities = fa.from_outputs(
        lambda images: images.reshape(2, 2), lambda o: softmax(o.astype(np.float64))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = probabilities(outputs, np.array([1, 1]))
    assert values.dtype == np.float64 and 0 < values[0] < 1e-45 and np.isnan(values[1])


def test_ties_in_the_map_are_ordered_as_the_control_orders_them():
    """Equal values of a map are ordered as the row's random control orders them, not
    row-major: a map of zeros (no information) has the control's curves, so it ties
    with its control instead of beating it where the evidence lies in the top rows."""
    rng = np.random.default_rng(8)
    images = rng.uniform(0, 1, (1, SIDE, SIDE, 3)).astype(np.float32)
    weights = np.zeros(images.shape[1:], np.float32)
    weights[0, 0] = 1.0  # the top-left pixel is all the evidence
    kwargs = dict(steps=PIXELS, chunk_size=8, seed=0)
    zero = np.zeros((1, SIDE, SIDE, 3))
    result = fa.for_rows(
        _linear(weights), images, images * 0, ["cat.png"], [0], [0], zero, **kwargs
    )
    np.testing.assert_array_equal(result.deletion_curve, result.deletion_curve_random)
    np.testing.assert_array_equal(result.insertion_curve, result.insertion_curve_random)
    np.testing.assert_array_equal(result.deletion_auc, result.deletion_auc_random)
    # Two tied groups: each keeps the control's order within it.
    control = fa.random_ranking(PIXELS, "cat.png", 0)
    groups = (np.arange(PIXELS) % 2).reshape(SIDE, SIDE)  # odd pixels first
    order = fa.ranking(groups, ties=control)
    odd = control[control % 2 == 1]
    np.testing.assert_array_equal(order, np.concatenate([odd, control[control % 2 == 0]]))


def test_ties_of_another_size_than_the_map_are_refused_saying_so():
    with pytest.raises(
        ValueError, match=r"^ties must be a permutation of the 16 pixels, got \(15,\)"
    ):
        fa.ranking(np.zeros((SIDE, SIDE)), ties=np.arange(PIXELS - 1))


@pytest.mark.parametrize(
    ("ties", "said"),
    [
        # Repeats left positions unset: the ranking then read uninitialized memory.
        (np.r_[np.arange(PIXELS - 1), 0], r"0 given twice; 15 missing"),
        (np.r_[np.arange(PIXELS - 1), PIXELS], r"16 is no pixel"),
        (np.r_[np.arange(PIXELS - 1), -1], r"-1 is no pixel"),
        (np.arange(PIXELS) + 0.0, r"float64 values, not integers"),
        # An entry given 3 times is counted as such, not called "given twice".
        (np.r_[0, 0, 0, np.arange(3, PIXELS)], r"0 given 3 times; 1 missing; 2 missing\.$"),
        # At most the first 3 faults of each kind are named.
        (
            np.r_[np.arange(12), 16, 17, 18, 19],
            r"16 is no pixel; 17 is no pixel; 18 is no pixel; "
            r"12 missing; 13 missing; 14 missing\.$",
        ),
    ],
)
def test_ties_that_are_no_permutation_are_refused_naming_the_entries(ties, said):
    with pytest.raises(
        ValueError,
        match=rf"^ties must be a permutation of the 16 pixels \(0 to 15, each once\): {said}",
    ):
        fa.ranking(np.zeros((SIDE, SIDE)), ties=ties)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        # Checked before any model call, naming the value: a reference of another size
        # broadcast over the image, 0 images per call divided by zero, and 0 own pixels
        # or more steps than pixels drew curves that switch no pixel between points.
        ({"references": np.zeros((1, SIDE, SIDE, 1))}, r"references \(1, 4, 4, 1\)"),
        ({"starts": np.zeros((1, SIDE, 2, 3))}, r"starts \(1, 4, 2, 3\) must have"),
        ({"chunk_size": 0}, r"^chunk_size must be >= 1, got 0\."),
        ({"own_pixels": [0]}, r"own_pixels must be \[R\] = \[1\] counts in \[1, 16\]"),
        ({"steps": PIXELS + 1}, r"\[1, 16\].*got 17"),
        ({"steps": 0}, r"\[1, 16\].*got 0"),
    ],
)
def test_bad_arguments_of_deletion_insertion_are_refused_before_any_model_call(change, said):
    image = _ramp_image()[None]
    calls = []
    kwargs = dict(
        references=np.zeros_like(image),
        starts=np.zeros_like(image),
        image_index=[0],
        targets=[0],
        orders=np.arange(PIXELS)[None],
        random_orders=np.arange(PIXELS)[None],
        steps=4,
        chunk_size=8,
    )
    with pytest.raises(ValueError, match=said):
        fa.deletion_insertion(_linear(1.0, calls), image, **(kwargs | change))
    assert calls == []


def _two_class_softmax(w_target: np.ndarray, w_other: np.ndarray) -> fa.ProbabilityFn:
    """p(target) of a linear 2-class model over 1-channel images, logits z = x . w."""
    weights = np.stack([w_target, w_other], axis=-1)  # [P, 2]

    def fn(images, targets):
        z = images.reshape(len(images), -1).astype(np.float64) @ weights
        p = np.exp(z - z.max(axis=1, keepdims=True))
        return (p / p.sum(axis=1, keepdims=True))[np.arange(len(images)), targets]

    return fn


def test_a_map_exact_for_the_logit_can_lose_to_every_random_ranking_of_the_probability():
    """The curves follow the target's probability, whatever --score; a map of the raw
    logit (--score raw, the default) explains another quantity. Pixel 0 raises both
    classes' logits by 3: the logit's exact IG against black ranks it first, yet
    deleting it leaves the probability as it is (softmax cancels what every class
    gains). Against each of the 24 orders of the 4 pixels as the control, the logit's
    map ties (pixel 0 first in both) or loses; the log-odds' map (x (w_t - w_o), what
    --score softmax ranks like here) ties or wins."""
    w_target, w_other = np.array([3.0, 1.0, 1.0, 1.0]), np.array([3.0, 0.0, 0.0, 0.0])
    fn = _two_class_softmax(w_target, w_other)
    image = np.ones((1, 2, 2, 1), np.float32)
    zero = np.zeros_like(image)
    logit_map = (image[0] * w_target.reshape(2, 2, 1))[None]  # IG of z_t from black
    odds_map = (image[0] * (w_target - w_other).reshape(2, 2, 1))[None]
    controls = np.array(list(itertools.permutations(range(4))))
    outcomes = {}
    for name, attribution in (("logit", logit_map), ("log-odds", odds_map)):
        results = [
            fa.deletion_insertion(
                fn,
                image,
                zero,
                zero,
                [0],
                [0],
                fa.ranking(attribution[0])[None],
                c[None],
                steps=4,
                chunk_size=8,
            )
            for c in controls
        ]
        outcomes[name] = [
            (
                np.sign(r.deletion_auc_random[0] - r.deletion_auc[0]),
                np.sign(r.insertion_auc[0] - r.insertion_auc_random[0]),
            )
            for r in results
        ]  # +1: the map beats the control; 0: ties; -1: loses
    first = controls[:, 0] == 0  # the control deletes pixel 0 first too: the same curves
    for check in (0, 1):
        logit = np.array([o[check] for o in outcomes["logit"]])
        odds = np.array([o[check] for o in outcomes["log-odds"]])
        assert (logit[first] == 0).all() and (logit[~first] == -1).all()
        assert (odds >= 0).all() and (odds[first] == 1).all()


def test_a_map_of_noise_beats_its_control_in_about_half_the_rows():
    """The control is one random ranking per image: a map that carries no information
    (another random ranking) beats it or loses to it as often, so each check's count
    of rows where a map beats chance is evidence only well above half, and a row that
    beats its control is not shown faithful by that alone (the report says so)."""
    rng = np.random.default_rng(5)
    rows = 200
    images = rng.uniform(0, 1, (rows, SIDE, SIDE, 3)).astype(np.float32)
    mix = rng.normal(size=(PIXELS * 3, 4))

    def fn(batch, targets):
        z = batch.reshape(len(batch), -1).astype(np.float64) @ mix
        p = np.exp(z - z.max(axis=1, keepdims=True))
        return (p / p.sum(axis=1, keepdims=True))[np.arange(len(batch)), targets]

    ids = [f"img{i}.png" for i in range(rows)]
    targets = np.argmax(images.reshape(rows, -1) @ mix, axis=1)
    noise = rng.normal(size=(rows, SIDE, SIDE))
    result = fa.for_rows(
        fn,
        images,
        np.zeros_like(images),
        ids,
        np.arange(rows),
        targets,
        noise,
        steps=8,
        chunk_size=512,
    )
    deletion = np.mean(result.deletion_auc < result.deletion_auc_random)
    insertion = np.mean(result.insertion_auc > result.insertion_auc_random)
    both = np.mean(
        (result.deletion_auc < result.deletion_auc_random)
        & (result.insertion_auc > result.insertion_auc_random)
    )
    assert 0.4 < deletion < 0.6 and 0.4 < insertion < 0.6, (deletion, insertion)
    assert 0.1 < both < 0.4, both
