"""Faithfulness in the job: DirectRunner runs on the tiny linear Keras model, Parquet read back."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import run
from tests.conftest import SIZE, cli_args, dense_keras, write_image
from transforms import faithfulness as fa
from transforms import images, results
from transforms.baselines import make_baselines
from transforms.config import AttributionConfig

STEPS = 4
AUCS = ["deletion_auc", "deletion_auc_random", "insertion_auc", "insertion_auc_random"]


def _run(image_folder, model, output, *flags):
    args = cli_args(
        runner="DirectRunner",
        dataset=image_folder["root"],
        model=model,
        output=output,
        steps=4,
        method="riemann_left",
    )
    return run([*args, *flags], save_main_session=False)


def _softmax_at(weights, bias, x, target):
    logits = x.reshape(-1).astype(np.float64) @ weights + bias
    p = np.exp(logits - logits.max())
    return p[target] / p.sum()


def _expected_curves(x, order, reference, start, weights, bias, target, pixels=SIZE * SIZE):
    """The target's probability along deletion and insertion of the first `pixels` of
    `order`, in NumPy."""
    positions = np.empty(SIZE * SIZE, np.int64)
    positions[order] = np.arange(SIZE * SIZE)
    deletion, insertion = [], []
    for n in fa.step_counts(pixels, STEPS):
        switched = (positions < n).reshape(SIZE, SIZE, 1)
        deletion.append(_softmax_at(weights, bias, np.where(switched, reference, x), target))
        insertion.append(_softmax_at(weights, bias, np.where(switched, x, start), target))
    return np.array(deletion), np.array(insertion)


def test_rows_hold_the_curves_of_the_linear_model(
    image_folder, linear_keras, linear_weights, tmp_path
):
    flags = cli_args(faithfulness_steps=STEPS)
    manifest = _run(image_folder, linear_keras, tmp_path / "out", *flags)
    assert manifest["config"]["faithfulness"] == "deletion_insertion"
    weights, bias = linear_weights
    results = pd.read_parquet(tmp_path / "out" / "results")
    assert len(results) == 4
    columns = list(results.columns)
    assert columns.index("insertion_curve") < columns.index("attribution_shape")
    for row in results.itertuples():
        x = image_folder["pixels"][row.image_id].astype(np.float32) / 255.0
        t = row.target_class
        # The map is exact for this model (IG = x * W[:, t]); black baseline, blurred start.
        order = fa.ranking(np.reshape(row.attributions, (SIZE, SIZE, 3)))

        blurred = make_baselines(x, ("blur",), (0.0, 1.0), row.image_id)[0]
        deletion, insertion = _expected_curves(x, order, 0.0, blurred, weights, bias, t)
        np.testing.assert_allclose(row.deletion_curve, deletion, rtol=2e-4, atol=1e-7)
        np.testing.assert_allclose(row.insertion_curve, insertion, rtol=2e-4, atol=1e-7)
        np.testing.assert_allclose(row.deletion_curve[0], row.top_k_probs[0], rtol=1e-5)
        p_x = deletion[0]
        np.testing.assert_allclose(row.deletion_auc, fa.auc(deletion[None], [p_x])[0], rtol=1e-4)
        np.testing.assert_allclose(row.insertion_auc, fa.auc(insertion[None], [p_x])[0], rtol=1e-4)
        control = fa.random_ranking(SIZE * SIZE, row.image_id, seed=0)
        deletion, insertion = _expected_curves(x, control, 0.0, blurred, weights, bias, t)
        np.testing.assert_allclose(
            row.deletion_auc_random, fa.auc(deletion[None], [p_x])[0], rtol=1e-4
        )
        np.testing.assert_allclose(
            row.insertion_auc_random, fa.auc(insertion[None], [p_x])[0], rtol=1e-4
        )
        # For a linear model the map's ranking deletes evidence fastest: it beats chance.
        assert row.deletion_auc < row.deletion_auc_random
        assert row.insertion_auc > row.insertion_auc_random


def test_a_padded_images_row_ranks_and_switches_its_own_pixels_alone(
    linear_keras, linear_weights, tmp_path
):
    """A 16 x 8 landscape fills rows 4-11 of the 16 x 16 input: both rankings switch
    those 128 pixels alone (K steps of 32), and its black bars stay in every image,
    the blurred start's too."""
    pixels = np.random.default_rng(7).integers(0, 256, (SIZE // 2, SIZE, 3), dtype=np.uint8)
    write_image(tmp_path / "images" / "wide.png", pixels)
    flags = cli_args(faithfulness_steps=STEPS)
    _run({"root": tmp_path / "images"}, linear_keras, tmp_path / "out", *flags)
    (row,) = pd.read_parquet(tmp_path / "out" / "results").itertuples()
    x = images.scale_to_range(images.resize_with_pad(pixels, SIZE), (0.0, 1.0))
    assert images.pad_box(SIZE // 2, SIZE, SIZE) == (4, 0, 8, 16)
    content = np.zeros((SIZE, SIZE), dtype=bool)
    content[4:12] = True
    blurred = np.where(content[..., None], make_baselines(x, ("blur",), (0.0, 1.0), "")[0], x)
    weights, bias = linear_weights
    order = fa.ranking(np.reshape(row.attributions, (SIZE, SIZE, 3)))
    control = fa.random_ranking(SIZE * SIZE, row.image_id, seed=0)
    for ranked, deletion_auc, insertion_auc in (
        (order, row.deletion_auc, row.insertion_auc),
        (control, row.deletion_auc_random, row.insertion_auc_random),
    ):
        own_first = fa.content_first(ranked, content)
        args = (x, own_first, 0.0, blurred, weights, bias, row.target_class, 128)
        deletion, insertion = _expected_curves(*args)
        if ranked is order:
            np.testing.assert_allclose(row.deletion_curve, deletion, rtol=2e-4, atol=1e-7)
            np.testing.assert_allclose(row.insertion_curve, insertion, rtol=2e-4, atol=1e-7)
        p_x = deletion[0]
        np.testing.assert_allclose(deletion_auc, fa.auc(deletion[None], [p_x])[0], rtol=1e-4)
        np.testing.assert_allclose(insertion_auc, fa.auc(insertion[None], [p_x])[0], rtol=1e-4)


def test_deletion_sets_pixels_to_the_first_of_several_baselines(
    image_folder, linear_keras, linear_weights, tmp_path
):
    _run(image_folder, linear_keras, tmp_path / "out", "--baseline", "white,black")
    weights, bias = linear_weights
    results = pd.read_parquet(tmp_path / "out" / "results")
    white, black = np.ones((SIZE, SIZE, 3)), np.zeros((SIZE, SIZE, 3))
    for row in results.itertuples():  # every pixel deleted: the first baseline itself
        last = row.deletion_curve[-1]
        t = row.target_class
        np.testing.assert_allclose(last, _softmax_at(weights, bias, white, t), rtol=2e-4)
        assert not np.isclose(last, _softmax_at(weights, bias, black, t), rtol=1e-2)


def test_faithfulness_none_leaves_the_columns_null(image_folder, linear_keras, tmp_path):
    manifest = _run(image_folder, linear_keras, tmp_path / "out", "--faithfulness", "none")
    assert manifest["config"]["faithfulness"] == "none"
    results = pd.read_parquet(tmp_path / "out" / "results", columns=list(fa.COLUMNS))
    assert len(results) == 4 and results.isna().all().all()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--faithfulness", "deletion"], "--faithfulness 'deletion' is not supported; use one of"),
        (["--faithfulness_steps", "1"], r"--faithfulness_steps must be in \[2, 1024\], got 1"),
    ],
)
def test_bad_faithfulness_flags_fail_before_any_work(
    flags, message, image_folder, linear_keras, tmp_path
):
    with pytest.raises(ValueError, match=message):
        _run(image_folder, linear_keras, tmp_path / "out", *flags)
    assert not (tmp_path / "out").exists()


def test_defaults_are_on():
    config = AttributionConfig()
    assert config.faithfulness == "deletion_insertion" and 16 <= config.faithfulness_steps <= 32


@pytest.fixture(scope="module")
def remote_class_keras(tmp_path_factory) -> tuple[str, np.ndarray, np.ndarray]:
    """A `.keras` file with 2 outputs: logit 0 is 0, logit 1 is x . w - 110, so class 1's
    probability, about 1e-48, is far below float32's smallest (1.4e-45) and exact in
    float64; and its weights and bias."""
    import keras

    weights = np.zeros((SIZE * SIZE * 3, 2), np.float32)
    weights[:, 1] = np.random.default_rng(4).normal(0, 0.05, SIZE * SIZE * 3)
    bias = np.array([0.0, -110.0], np.float32)
    inputs = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([weights, bias])
    path = str(tmp_path_factory.mktemp("models") / "remote.keras")
    model.save(path)
    return path, weights, bias


def test_a_target_too_improbable_for_float32_gets_the_aucs_of_its_float64_curves(
    image_folder, remote_class_keras, tmp_path
):
    """The curves were a float32 softmax, which flushed class 1's probabilities to 0,
    while p(x), which normalises them, is float64 (1e-48): its AUCs read 1/(2K) (0.125
    for a deletion AUC of 0.26), as if the probability vanished at every inner point."""
    model, weights, bias = remote_class_keras
    flags = cli_args(faithfulness_steps=STEPS, target="top_k", top_k=2)
    _run(image_folder, model, tmp_path / "out", *flags)
    results = pd.read_parquet(tmp_path / "out" / "results")
    remote = results[results.target_class == 1]
    assert len(remote) == 4
    for row in remote.itertuples():
        x = image_folder["pixels"][row.image_id].astype(np.float32) / 255.0
        order = fa.ranking(np.reshape(row.attributions, (SIZE, SIZE, 3)))
        blurred = make_baselines(x, ("blur",), (0.0, 1.0), row.image_id)[0]
        deletion, insertion = _expected_curves(x, order, 0.0, blurred, weights, bias, 1)
        assert 0 < deletion[0] < 1e-45
        p_x = [deletion[0]]
        np.testing.assert_allclose(row.deletion_auc, fa.auc(deletion[None], p_x)[0], rtol=1e-4)
        np.testing.assert_allclose(row.insertion_auc, fa.auc(insertion[None], p_x)[0], rtol=1e-4)


def _brightness_keras(path, bias: float) -> str:
    """A `.keras` file with 2 outputs and a softmax head: logit 0 is 0, logit 1 is
    bias + x . w with w about 37.6 / P per value (P = 768), so class 1's margin is
    about bias + 18.8 on a mid-grey image. Deleting pixels to black lowers it by up to
    about 19 (a check that measures something); blurring keeps the image's mean, and
    moves the margin by about 0.1 only."""
    import keras

    values = SIZE * SIZE * 3
    weights = np.zeros((values, 2), np.float32)
    noise = np.random.default_rng(6).normal(size=values)
    weights[:, 1] = 37.6 / values * (1 + 0.3 * noise)
    inputs = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(2, activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([weights, np.array([0.0, bias], np.float32)])
    model.save(path)
    return str(path)


@pytest.fixture(scope="module")
def noise_images(tmp_path_factory) -> dict[str, str]:
    """32 images of uniform noise (mean about 0.5) in a folder."""
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(5)
    for i in range(32):
        write_image(root / f"img{i:02d}.png", rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8))
    return {"root": str(root)}


def test_a_check_within_float32_steps_of_the_images_probability_measured_nothing(
    noise_images, tmp_path
):
    """p(x) = 1 - 1e-6: blurring the image moves class 1's float32 probability by 0 to 3
    steps of 1.2e-7, so both insertion AUCs are 1 or a few steps below it. Where the
    blurred start (shared by both rankings) rounded one step below p(x) and nothing
    else moved, the two AUCs tied at 1 - 7e-9 and the row was flagged no better than
    chance, though its deletion beats chance by 0.14; where it rounded to p(x), the
    check measured nothing (both exactly 1) and the row was not flagged."""
    model = _brightness_keras(tmp_path / "saturated.keras", -5.0)
    flags = cli_args(faithfulness_steps=8, tolerance=0)
    _run(noise_images, model, tmp_path / "out", *flags)
    rows = pd.read_parquet(tmp_path / "out" / "results")
    assert len(rows) == 32 and (rows.predicted_class == 1).all()
    assert (1 - rows.top_k_probs.map(lambda p: p[0])).between(2e-7, 1e-5).all()
    below_one = (rows.insertion_auc < 1) | (rows.insertion_auc_random < 1)
    assert below_one.sum() >= 16  # not exactly 1: the old rule judged them
    assert results.measured_nothing(rows, "insertion").all()
    insertion = rows[["insertion_auc", "insertion_auc_random"]]
    assert (insertion >= 1 - results.AUC_RESOLUTION).all().all()
    assert (rows.deletion_auc < rows.deletion_auc_random - 0.1).all()
    assert not results.measured_nothing(rows, "deletion").any()
    assert results.no_better_than_chance(rows).empty


def test_a_check_whose_curves_move_by_1e_3_is_judged(noise_images, tmp_path):
    """The same model 9.4 logits lower, p(x) about 0.99: blurring moves the probability
    by about 1e-3, which float32 resolves, so insertion is judged (unless the blurred
    image scores above p(x), both curves capped at 1), and a row whose map loses to
    its control there is flagged, whatever its deletion does."""
    model = _brightness_keras(tmp_path / "moving.keras", -14.4)
    _run(noise_images, model, tmp_path / "out", *cli_args(faithfulness_steps=8, tolerance=0))
    rows = pd.read_parquet(tmp_path / "out" / "results")
    assert (1 - rows.top_k_probs.map(lambda p: p[0])).between(1e-3, 0.1).all()
    moved = 1 - rows[["insertion_auc", "insertion_auc_random"]].min(axis=1)
    capped = moved == 0  # the blurred image scores above p(x): both curves capped at 1
    assert capped.sum() <= 4 and (moved[~capped] > 1e-5).all() and (moved < 1e-2).all()
    assert (results.measured_nothing(rows, "insertion") == capped).all()
    assert (rows.deletion_auc < rows.deletion_auc_random - 0.05).all()
    loses = (rows.insertion_auc <= rows.insertion_auc_random) & ~capped
    assert loses.any()
    assert set(results.no_better_than_chance(rows).image_id) == set(rows.image_id[loses])


def test_a_map_of_zeros_ties_with_its_control(tmp_path):
    """A model of one pixel, the top-left one, black in the image: against a black
    baseline the map is 0 everywhere, no information. Its ties were ordered row-major,
    so insertion revealed that pixel first and the map beat its control (0.985 against
    0.713 here) and was not counted among the rows that do no better than chance."""
    import keras

    weights = np.zeros((SIZE * SIZE * 3, 2), np.float32)
    weights[0, 1] = 10.0  # logit 1 = 10 x[0, 0, 0] - 5, logit 0 = 0
    inputs = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([weights, np.array([0.0, -5.0], np.float32)])
    model.save(tmp_path / "corner.keras")
    pixels = np.full((SIZE, SIZE, 3), 255, np.uint8)
    pixels[0, 0] = 0  # the blurred start is brighter there: revealing it matters
    write_image(tmp_path / "images" / "corner.png", pixels)
    _run({"root": tmp_path / "images"}, tmp_path / "corner.keras", tmp_path / "out")
    rows = pd.read_parquet(tmp_path / "out" / "results")
    (row,) = rows.itertuples()
    assert row.target_class == 0 and not np.any(row.attributions)
    assert row.insertion_auc < 1 - 1e-3  # the check measures something
    assert row.deletion_auc == row.deletion_auc_random
    assert row.insertion_auc == row.insertion_auc_random
    assert len(results.no_better_than_chance(rows)) == 1


def test_a_rows_control_is_its_images_whichever_run_and_batch_compute_it(
    image_folder, linear_keras, tmp_path
):
    """The control is seeded by --seed and the image id alone (README: reruns give the
    same numbers): each row's control AUCs are the same in one run of every image and
    in a run a --resume completes in other batches, at other positions; a copy of an
    image under another name, the same map and curves, gets a control of its own."""
    root = Path(image_folder["root"])
    first = sorted(image_folder["pixels"])[0]
    shutil.copy(root / first, root / "copy.png")
    flags = cli_args(target="top_k", top_k=2, faithfulness_steps=STEPS, seed=5)
    _run(image_folder, linear_keras, tmp_path / "whole", *flags, "--batch_size", "8")
    later = sorted(image_folder["pixels"])[1:]  # left to the resume
    away = tmp_path / "away"
    for image_id in later:
        (away / image_id).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(root / image_id, away / image_id)
    _run(image_folder, linear_keras, tmp_path / "parts", *flags, "--batch_size", "2")
    for image_id in later:
        shutil.move(away / image_id, root / image_id)
    _run(image_folder, linear_keras, tmp_path / "parts", *flags, "--batch_size", "1", "--resume")

    key, controls = ["image_id", "target_class"], ["deletion_auc_random", "insertion_auc_random"]
    whole, parts = (pd.read_parquet(tmp_path / o / "results") for o in ("whole", "parts"))
    assert len(whole) == len(parts) == 2 * 5
    both = whole.merge(parts, on=key, suffixes=("", "_parts"))
    assert len(both) == len(whole)
    for column in controls:
        np.testing.assert_allclose(both[column], both[f"{column}_parts"], rtol=1e-6)
    rows = whole.set_index(key).sort_index()
    original, copy = rows.loc[first], rows.loc["copy.png"]
    np.testing.assert_allclose(copy.deletion_auc, original.deletion_auc, rtol=1e-6)
    assert not np.allclose(copy[controls].to_numpy(float), original[controls].to_numpy(float))


@pytest.fixture
def black_and_noise(tmp_path) -> dict[str, str]:
    """A folder of an all-black image (equal to the black baseline) and a noise image."""
    root = tmp_path / "images"
    write_image(root / "black.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    noise = np.random.default_rng(9).integers(0, 256, (SIZE, SIZE, 3), np.uint8)
    write_image(root / "noise.png", noise)
    return {"root": str(root)}


def test_an_image_equal_to_its_baseline_is_not_measurable_not_no_better_than_chance(
    black_and_noise, linear_keras, tmp_path
):
    """A black image on the black baseline: x - x' is 0, so its map is exactly 0 (exact
    IG) and deleting to black or blurring it changes nothing: all four AUCs are 1. It was
    flagged no better than chance; the checks cannot measure it."""
    _run(black_and_noise, linear_keras, tmp_path / "out", *cli_args(faithfulness_steps=8))
    rows = results.read_results(str(tmp_path / "out")).set_index("image_id", drop=False)
    black = rows.loc["black.png"]
    assert black.attribution_sum == 0 and black.target_score == black.baseline_score
    assert (black[AUCS] == 1.0).all()
    assert not np.any(results.read_row(str(tmp_path / "out"), "black.png").attributions)
    assert results.no_better_than_chance(rows).empty  # the noise image's map beats chance
    deletion, insertion = results.chance_losses(rows)
    assert not deletion.any() and not insertion.any()
    assert list(results.not_measurable(rows).image_id) == ["black.png"]


def test_flat_curves_of_a_map_that_is_not_0_are_not_measurable_not_no_better_than_chance(
    black_and_noise, tmp_path
):
    """A saturated model, logit 0 about 40 above logit 1 whatever the image: every curve
    stays at p(x) = 1, on the noise image too, whose map (x * w, raw score) is not 0.
    Neither check can tell that map from its random control: it was flagged no better
    than chance (its map not 0), untrue; it is not measurable, as the black image is."""
    weights = np.zeros((SIZE * SIZE * 3, 2), np.float32)
    weights[:, 0] = np.abs(np.random.default_rng(4).normal(0, 0.05, SIZE * SIZE * 3))
    model = dense_keras(tmp_path / "sat.keras", weights, np.array([40.0, 0.0], np.float32))
    _run(black_and_noise, model, tmp_path / "out", *cli_args(faithfulness_steps=8))
    rows = results.read_results(str(tmp_path / "out")).set_index("image_id", drop=False)
    assert (rows[AUCS] == 1.0).all(axis=None)
    assert rows.loc["noise.png"].attribution_sum > 1
    assert list(results.not_measurable(rows).image_id) == ["black.png", "noise.png"]
    assert results.no_better_than_chance(rows).empty


def test_an_image_the_checks_leave_as_it_is_is_not_measurable_whatever_its_map(
    black_and_noise, linear_keras, tmp_path
):
    """A black image with --baseline black,white: its map is not 0 (the white path's),
    but deletion sets its pixels to the first baseline, black, and its blurred copy is
    black: no curve can move. It was flagged no better than chance (its map not 0),
    which nothing measured; it is not measurable. The noise image is judged."""
    flags = cli_args(faithfulness_steps=8, baseline="black,white")
    _run(black_and_noise, linear_keras, tmp_path / "out", *flags)
    rows = results.read_results(str(tmp_path / "out")).set_index("image_id", drop=False)
    black = rows.loc["black.png"]
    assert black.attribution_sum != 0 and (black[AUCS] == 1.0).all()
    assert list(results.not_measurable(rows).image_id) == ["black.png"]
    assert "black.png" not in set(results.no_better_than_chance(rows).image_id)
    deletion, insertion = results.chance_losses(rows)
    assert not deletion["black.png"] and not insertion["black.png"]
