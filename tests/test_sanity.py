"""The model-randomisation sanity check on a finished DirectRunner run of a tiny conv net."""

import dataclasses
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import run as run_job
from pipeline import sanity
from tests.conftest import (
    SIZE,
    cli_args,
    has_loaded,
    launched,
    make_image_folder,
    run_to_a_closed_stdout,
    run_to_an_ascii_stdout,
    write_image,
)
from transforms import plots, results
from transforms.config import AttributionConfig
from transforms.sinks import write_json
from transforms.tf_model import Classifier, model_reference, resolve_model


@pytest.fixture(scope="module")
def conv_keras(tmp_path_factory) -> str:
    """A `.keras` file: conv (8 filters, ReLU) -> dense logits, seeded weights."""
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    outputs = keras.layers.Dense(1000, name="logits")(keras.layers.Flatten()(x))
    path = str(tmp_path_factory.mktemp("models") / "conv.keras")
    keras.Model(inputs, outputs).save(path)
    return path


def test_stages_are_a_number_or_names_with_spaces_around_them_ignored():
    assert sanity.parse_stages("6") == sanity.parse_stages(" 6 ") == 6
    assert sanity.parse_stages("logits, head_conv") == ["logits", "head_conv"]
    assert sanity.parse_stages("logits") == ["logits"]
    # A negative number is a number: refused as one, not listed as an unknown layer.
    assert sanity.parse_stages("-2") == -2


def test_stage_layers_cascade_from_the_top():
    layers = [f"l{i}" for i in range(10)]
    plan = sanity.stage_layers(layers, 3)
    assert [p[-1] for p in plan] == ["l0", "l2", "l9"] and plan[-1] == layers
    assert sanity.stage_layers(layers, ["l4", "l0"]) == [["l0"], layers[:5]]
    with pytest.raises(ValueError) as caught:
        sanity.stage_layers(layers[:2], ["nope", "l0", "gone"])
    assert str(caught.value) == (
        "--stages 'nope', 'gone' are not layers with weights; the model's, from the "
        "output down: l0, l1."
    )
    # An empty name (a stray comma) or a name given twice: the message showed a
    # Python list ("--stages [''] are not layers ...") or the stage ran twice.
    for stages, said in (
        ([""], "--stages '' has an empty name"),
        (["l4", "", "l0"], "--stages 'l4,,l0' has an empty name"),
        (["l4", "l0", "l4"], "--stages 'l4,l0,l4' names 'l4' twice"),
    ):
        with pytest.raises(ValueError) as caught:
            sanity.stage_layers(layers, stages)
        assert str(caught.value) == (
            f"{said}; name each layer with weights once, separated by commas, e.g. --stages l0,l1."
        )
    with pytest.raises(ValueError, match=r"--stages must be >= 1, got 0\."):
        sanity.stage_layers(layers, 0)  # a plan of no stage, no verdict


@pytest.mark.parametrize("stages", ["0", "-2"])
def test_a_stage_count_below_1_is_refused_before_anything_is_read(stages, tmp_path, capsys):
    """It was refused only once the run's rows were read and its model loaded: after
    seconds of work and the model's log line, and a --input that held no run was said
    to be wrong first."""
    args = ["--input", str(tmp_path / "photos"), "--stages", stages]
    assert sanity.main(args) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"error: --stages must be >= 1, got {stages}."]


def test_one_stage_randomises_every_layer_as_the_last_stage_does():
    # --stages 1 randomised the top layer alone (a geometric spread of one point is
    # its start), and the verdict of that stage read as the whole model's.
    layers = [f"l{i}" for i in range(10)]
    assert sanity.stage_layers(layers, 1) == [layers]
    assert sanity.stage_layers(["logits"], 1) == [["logits"]]


def test_map_similarity_is_one_for_the_same_map_and_low_for_unrelated_ones():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 32, 32, 3))
    assert sanity.map_similarity(a, a) == pytest.approx((1.0, 1.0))
    rho, ssim = sanity.map_similarity(a, b)
    assert abs(rho) < 0.1 and ssim < 0.2
    assert np.isnan(sanity.map_similarity(a, np.zeros_like(a))[0])


@pytest.mark.parametrize("draw", ["normal", "cauchy", "lognormal"])
def test_the_measures_known_answers_same_map_negated_map_and_independent_maps(draw):
    """The same map is 1 by every measure; its negation 1 by the absolute measures the
    check decides on and -1 by the signed Spearman; independent maps about 0 by every
    measure. SSIM of maps scaled by their maxima gave heavy-tailed independent maps
    (as IG's are: a few pixels carry most of a map) 0.89 (|Cauchy|) and 0.56
    (lognormal): its constants, fixed for a data range of 1, outweighed the
    variance of maps that sit near 0 but for a few pixels."""
    rng = np.random.default_rng(11)
    sample = {
        "normal": lambda: rng.normal(size=(48, 48, 3)),
        "cauchy": lambda: rng.standard_cauchy(size=(48, 48, 3)),
        "lognormal": lambda: rng.lognormal(0.0, 2.0, size=(48, 48, 3)),
    }[draw]
    a = sample()
    assert sanity.map_similarity(a, a) == pytest.approx((1.0, 1.0))
    assert sanity.signed_spearman(a, a) == pytest.approx(1.0)
    assert sanity.map_similarity(a, -a) == pytest.approx((1.0, 1.0))
    assert sanity.signed_spearman(a, -a) == pytest.approx(-1.0)
    pairs = [(sample(), sample()) for _ in range(3)]
    rho, ssim = np.median([sanity.map_similarity(a, b) for a, b in pairs], axis=0)
    signed = np.median([sanity.signed_spearman(a, b) for a, b in pairs])
    assert abs(rho) < 0.05 and abs(signed) < 0.05 and abs(ssim) < 0.1, (rho, signed, ssim)


def test_a_map_too_thin_for_ssim_has_its_spearman_and_no_ssim():
    # A content box of 1 or 2 rows (a line on black, a panorama's padding) holds no
    # 3 x 3 window: SSIM is undefined there; it raised ZeroDivisionError.
    rng = np.random.default_rng(2)
    for rows in (1, 2):
        a, b = rng.normal(size=(2, rows, 16, 3))
        rho, ssim = sanity.map_similarity(a, b)
        assert -1.0 <= rho <= 1.0 and np.isnan(ssim)
        assert sanity.map_similarity(a, a)[0] == pytest.approx(1.0)
    assert sanity.map_similarity(*rng.normal(size=(2, 3, 16, 3)))[1] < 0.5


def test_maps_are_compared_within_the_content_not_the_padding():
    rng = np.random.default_rng(1)
    image = np.zeros((32, 32, 3), np.float32)
    image[8:24] = rng.uniform(0.1, 1.0, size=(16, 32, 3))  # a wide image, padded above and below
    black, white = np.zeros((1, 32, 32, 3), np.float32), np.ones((1, 32, 32, 3), np.float32)
    box = sanity.content_box(sanity.content_mask(image, black))
    assert box == (slice(8, 24), slice(0, 32))
    # Against white the padding differs from the baseline: IG is not 0 there.
    both = sanity.content_mask(image, np.concatenate([black, white]))
    assert both.all() and sanity.content_box(both) == (slice(0, 32), slice(0, 32))
    blank = sanity.content_mask(np.zeros_like(image), black)
    assert sanity.content_box(blank) == (slice(None), slice(None))
    # Two unrelated maps, both 0 on the padding (x - x' = 0 there): alike on the
    # whole image, unrelated within the content.
    a, b = np.zeros((2, 32, 32, 3))
    a[8:24], b[8:24] = rng.normal(size=(2, 16, 32, 3))
    whole_rho, _ = sanity.map_similarity(a, b)
    rho, ssim = sanity.map_similarity(a[box], b[box])
    assert whole_rho > 0.5 and abs(rho) < 0.1 and ssim < 0.2


def test_maps_are_compared_on_the_pixels_that_differ_from_the_baseline_within_the_box():
    # A mostly black image (a digit, a star field) spans its whole square, but IG is 0 on
    # its black pixels in every map. Their shared zeros made unrelated maps alike
    # (Spearman 0.98 on such a run with every layer randomised: verdict 'fail').
    rng = np.random.default_rng(4)
    image = np.where(rng.random((32, 32, 1)) < 0.2, rng.uniform(0.4, 1.0, (32, 32, 3)), 0.0)
    mask = sanity.content_mask(image, np.zeros((1, 32, 32, 3)))
    assert 0.1 < mask.mean() < 0.3 and sanity.content_box(mask) == (slice(0, 32), slice(0, 32))
    a, b = rng.normal(size=(2, 32, 32, 3)) * mask[..., None]
    rho, ssim = sanity.map_similarity(a, b)
    assert rho > 0.5 and ssim > 0.5  # the zeros, not the maps
    rho, ssim = sanity.map_similarity(a, b, mask)
    assert abs(rho) < 0.2 and abs(ssim) < 0.2
    assert sanity.map_similarity(a, a, mask) == pytest.approx((1.0, 1.0))
    # Only pixels in `where` count: changing the others changes nothing.
    noise = rng.normal(size=a.shape) * ~mask[..., None]
    assert sanity.map_similarity(a + noise, b, mask)[0] == pytest.approx(rho)


@pytest.mark.parametrize("shape", [(16, 16), (32, 20), (5, 9), (3, 3), (4, 40)])
def test_ssim_over_every_pixel_is_skimages(shape):
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(sum(shape))
    a, b = rng.random((2, *shape))
    b = (a + b) / 2
    side = min(shape)
    window = min(7, side if side % 2 else side - 1)
    # map_similarity scales each map by its 99th percentile, clipped, as it documents
    scaled = [np.minimum(m / np.percentile(m, 99), 1.0) for m in (a, b)]
    expected = structural_similarity(*scaled, data_range=1.0, win_size=window)
    assert sanity.map_similarity(a, b)[1] == pytest.approx(expected, rel=1e-9)
    assert sanity.map_similarity(a, b, np.ones(shape, bool))[1] == pytest.approx(expected, rel=1e-9)


def _add_photos(root: str, count: int, seed: int = 9) -> None:
    """Writes `count` photo-like images in `root` (a few soft blobs of colour on a dim
    ground), so that a run has the 5 or more images a sign test needs for p < 0.05."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    for i in range(count):
        pixels = np.full((SIZE, SIZE, 3), 20.0)
        for _ in range(3):
            centre, width = rng.uniform(0, SIZE, 2), rng.uniform(2, 5)
            blob = np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * width**2))
            pixels += blob[..., None] * rng.uniform(60, 200, 3)
        write_image(Path(root) / f"photo{i}.png", np.clip(pixels, 0, 255).astype(np.uint8))


def _stage(similarity, reference, layers=("logits",)) -> dict:
    """A `_stage_report` of rows of one image each, against `reference` (Spearman,
    SSIM per row: the input alone's)."""
    ids = [f"{i}.png" for i in range(len(similarity))]
    return sanity._stage_report(list(layers), similarity, sanity._similarities(reference), ids)


def _verdict_of(stage, reference, **kept) -> dict:
    """`_report` of `_stage`'s rows with `reference` (the input alone's)."""
    ids = [f"{i}.png" for i in range(len(reference))]
    targets = np.arange(len(ids))
    reference = sanity._similarities(reference)
    return sanity._report(ids, targets, AttributionConfig(), 0, [stage], reference, **kept)


def _audit(image_folder, model, output: str, steps: int, **flags: object) -> None:
    """The job on the image folder with `model`, without the faithfulness checks;
    `flags`: more of the job's flags (`target="top_k"`)."""
    args = cli_args(
        runner="DirectRunner",
        dataset=image_folder["root"],
        model=model,
        output=output,
        steps=steps,
        faithfulness="none",
        **flags,
    )
    run_job(args, save_main_session=False)


@pytest.fixture(scope="module")
def audited(tmp_path_factory, conv_keras):
    """`audited(output, steps)`: `_audit`'s run of `image_folder`'s images with
    `conv_keras`, made once a module per step count and copied to `output`."""
    where = tmp_path_factory.mktemp("audited")
    folder = make_image_folder(where / "images")
    _add_photos(folder["root"], 2)  # 6 images: enough for a sign test
    made = {}

    def copy(output: str, steps: int) -> None:
        if steps not in made:
            made[steps] = str(where / f"steps{steps}")
            _audit(folder, conv_keras, made[steps], steps=steps)
        shutil.copytree(made[steps], output)

    return copy


def test_randomising_the_last_layer_changes_the_maps(audited, tmp_path):
    output = str(tmp_path / "out")
    audited(output, steps=8)
    report = sanity.run(output, images_count=6, stages=["logits", "conv"])

    assert report["images"] == 6 and len(report["image_ids"]) == 6
    assert [s["layer"] for s in report["stages"]] == ["logits", "conv"]
    assert [s["layers_randomised"] for s in report["stages"]] == [1, 2]
    logits, conv = report["stages"]
    assert not logits["similar"] and not conv["similar"]
    # Each image's maps, randomised, are further from the intact ones than the input
    # alone (x - x') is: 6 of 6 by both measures, p = 1/64.
    for test in conv["reference_test"].values():
        assert (test["images"], test["below"], test["p_below"]) == (6, 6, 1 / 64)
        assert test["median_difference"] < 0 and test["interval"][1] < 0
    assert report["verdict"].startswith(
        "pass: the randomised model's maps are further from the intact model's than the "
        "input alone (x - x') in 6 of 6 images by Spearman (p = 0.016) and 6 of 6 images "
        "by SSIM (p = 0.016): they depend on the model's weights beyond the input's own "
        "structure"
    ), report["verdict"]
    assert "with 2 layers randomised, down to conv" in report["verdict"]
    assert report["reference"]["spearman_median"] > conv["spearman_median"]
    assert json.loads((tmp_path / "out" / "sanity" / "sanity.json").read_text()) == report
    png = (tmp_path / "out" / "sanity" / "sanity.png").read_bytes()
    assert png.startswith(b"\x89PNG")

    # Before any randomisation the check's IG is the job's: the same rows, the same maps.
    _assert_recomputes_the_runs_maps(output, 3, (SIZE, SIZE, 3))

    # The report's section says the verdict (green), its rule and the tests it is of.
    from pipeline.report import build_report  # noqa: PLC0415
    from tests.test_report import _sanity_text  # noqa: PLC0415

    text = build_report(output, gallery=0)
    section = _sanity_text(text)
    assert '<b class="right">Verdict: pass.</b>' in text
    assert f"Verdict: pass. The rule: {report['rule']}." in section
    for measure, name in (("spearman", "Spearman"), ("ssim", "SSIM")):
        medians = f"{conv[measure + '_median']:.3g} {report['reference'][measure + '_median']:.3g}"
        line = f"{name} 6 of 6 images p = 0.016 0 of 6 images p = 1 {medians}"
        assert line in section, section
    assert "Undecided" not in section and report["advice"] is None


def test_steps_fixes_the_ig_steps_of_every_map_the_check_computes(audited, tmp_path, capsys):
    """--steps 4: the intact and randomised maps at 4 steps, unrefined (the run's
    settings refine 8 steps to its tolerance); --steps 0 is refused, exit 2."""
    output = str(tmp_path / "out")
    audited(output, steps=8)
    assert results.read_manifest(output)["config"]["tolerance"] > 0
    args = ["--input", output, "--images", "2", "--stages", "1"]
    assert sanity.main([*args, "--steps", "4"]) == 0, capsys.readouterr().err
    stored = json.loads((tmp_path / "out" / "sanity" / "sanity.json").read_text())
    assert (stored["settings"]["steps"], stored["settings"]["tolerance"]) == (4, 0.0)
    config = sanity._fixed_steps(sanity._config(results.read_manifest(output)["config"]), 4)
    assert (config.steps, config.max_steps, config.tolerance) == (4, 4, 0.0)
    capsys.readouterr()
    assert sanity.main([*args, "--steps", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --steps must be >= ")


def _assert_recomputes_the_runs_maps(output: str, count: int, shape: tuple[int, ...]) -> None:
    """The check's IG of the run's first `count` rows (its model reloaded from the
    manifest, its images read back) gives the run's stored maps, of `shape`."""
    from transforms import images

    manifest = results.read_manifest(output)
    frame, pixels = sanity._rows(output, manifest, count)
    assert pixels.shape[1:] == shape
    maps = sanity._attribute(
        Classifier(sanity._spec(manifest["model"])),
        sanity._config(manifest["config"]),
        images.scale_to_range(pixels, (0.0, 1.0)),
        list(frame.image_id),
        frame.target_class.to_numpy(np.int64),
    )
    for image_id, computed in zip(frame.image_id, maps, strict=True):
        stored = results.attributions_of(results.read_row(output, image_id))
        assert stored.shape == shape
        np.testing.assert_allclose(computed, stored, rtol=1e-3, atol=1e-5)


def test_a_run_of_a_non_square_model_is_checked_on_its_height_and_width(image_folder, tmp_path):
    """A model fixing a 16 x 24 input: the check reloads it from the manifest (its
    `image_width` too) and the images at 16 x 24, and before any randomisation its maps
    are the run's [16, 24, 3] ones; randomising its layers changes them."""
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((SIZE, 24, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    outputs = keras.layers.Dense(10, name="logits")(keras.layers.Flatten()(x))
    keras.Model(inputs, outputs).save(tmp_path / "wide.keras")
    output = str(tmp_path / "out")
    _audit(image_folder, str(tmp_path / "wide.keras"), output, steps=8)
    report = sanity.run(output, images_count=2, stages=["logits", "conv"])
    # Two images cannot show a difference at p < 0.05 (2 of 2 is p = 0.25): undecided.
    assert report["images"] == 2 and report["changed"] is None
    assert "2 images cannot show it at p < 0.05 (it takes 5: --images)" in report["verdict"]
    _assert_recomputes_the_runs_maps(output, 2, (SIZE, 24, 3))


def test_a_non_square_runs_figure_has_panels_as_tall_as_its_maps(image_folder, tmp_path):
    """A real run of a model fixing a 24 x 40 input: sanity.png drew its images and maps
    in square panels, each line of them a band of blank rows under maps as wide as the
    panel (34 % of its pixel rows blank; 18 % now). Its lines are as tall as the maps,
    as the report's cards are (`plots.panel_height`)."""
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((24, 40, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    outputs = keras.layers.Dense(5, name="logits")(keras.layers.Flatten()(x))
    keras.Model(inputs, outputs).save(tmp_path / "wide.keras")
    output = str(tmp_path / "out")
    _audit(image_folder, str(tmp_path / "wide.keras"), output, steps=4)
    sanity.run(output, images_count=2, stages=["logits", "conv"])
    png = Image.open(Path(output, "sanity", "sanity.png")).convert("L")
    blank = float((np.asarray(png) >= 250).all(axis=1).mean())
    assert blank < 0.3, blank
    assert png.size[1] == pytest.approx(110 * (2 * plots.panel_height((24, 40), 1.6) + 0.2), abs=2)


def test_images_counts_images_each_with_all_its_rows(image_folder, conv_keras, tmp_path):
    """--images 2 of a --target top_k run checks 2 images, each with its k targets: it
    took the first 2 rows, one image's first two targets, and said "2 images"."""
    output = str(tmp_path / "out")
    _audit(image_folder, conv_keras, output, steps=4, target="top_k", top_k=3)
    report = sanity.run(output, images_count=2, stages=["logits"])

    frame = results.read_results(output, columns=["image_id", "target_class", "top_k_classes"])
    first = sorted(set(frame.image_id))[:2]
    assert sorted(set(report["image_ids"])) == first
    assert report["images"] == 2 and report["rows"] == 6 == len(report["image_ids"])
    for image_id in first:
        rows = frame[frame.image_id == image_id]
        checked = [
            t
            for i, t in zip(report["image_ids"], report["target_classes"], strict=True)
            if i == image_id
        ]
        assert sorted(checked) == sorted(rows.top_k_classes.iloc[0].tolist())
    assert len(report["stages"][0]["spearman"]) == 6  # a value per row


def _two_branch_keras(path: Path) -> str:
    """A `.keras` file of 2 classes, each a linear branch of its own on the pixels
    (`branch_a` scores class 0, `branch_b` class 1); class 0 wins by its bias of 50."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 3))
    flat = keras.layers.Flatten()(inputs)
    a = keras.layers.Dense(1, name="branch_a", bias_initializer=keras.initializers.Constant(50))(
        flat
    )
    b = keras.layers.Dense(1, name="branch_b", bias_initializer="zeros")(flat)
    keras.Model(inputs, keras.layers.Concatenate()([a, b])).save(path)
    return str(path)


def test_maps_unmoved_by_the_layers_randomised_so_far_are_not_called_no_explanation(
    image_folder, tmp_path
):
    # --stages stopping above the input: the rows attribute class 0, whose branch keeps
    # its weights, so its maps cannot change. The check said "fail: the maps stay similar
    # when the model is destroyed ... do not explain it", and the report repeated it in
    # red, of exact maps of an intact branch. Randomised down to the input, they change.
    model = _two_branch_keras(tmp_path / "two.keras")
    _add_photos(image_folder["root"], 2)
    output = str(tmp_path / "out")
    _audit(image_folder, model, output, steps=8)
    assert set(results.read_results(output).target_class) == {0}
    partial = sanity.run(output, images_count=6, stages=["branch_b"])
    assert partial["stages"][-1]["spearman_median"] == pytest.approx(1.0)
    assert partial["changed"] is None
    assert partial["advice"] == (
        "randomise down to the input to decide (--stages as a number, or names ending at branch_a)"
    )
    assert partial["verdict"].startswith(
        "undecided: the maps stay closer to the intact model's than the input alone with "
        "the layers down to branch_b randomised, but 1 layer below keeps its trained "
        "weights (branch_a)"
    ), partial["verdict"]
    full = sanity.run(output, images_count=6, stages=2)
    assert full["changed"] is True and full["verdict"].startswith("pass:")


def _weightless_keras(path: Path) -> str:
    """A `.keras` file whose 3 logits are the image's channel means (no weights) plus
    two small Dense layers' output: its maps barely depend on any weight."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 3))
    small = keras.initializers.RandomNormal(stddev=1e-6)
    x = keras.layers.Dense(4, name="inner", kernel_initializer=small)(
        keras.layers.Flatten()(inputs)
    )
    x = keras.layers.Dense(3, name="outer", kernel_initializer=small)(x)
    means = keras.layers.GlobalAveragePooling2D()(inputs)
    keras.Model(inputs, keras.layers.Add()([means, x])).save(path)
    return str(path)


def test_maps_unmoved_with_every_layer_randomised_over_stages_fail_the_check(
    image_folder, tmp_path
):
    # Two stages, the last down to the input: no layer keeps its weights, so maps that
    # stay similar are no explanation of the model (fail), not undecided.
    # Its maps are the target's channel of the input (x - x' times the channel mean's
    # constant gradient), intact or randomised: closer to the intact ones (Spearman
    # 1.00) than the input alone, all channels, is (0.60).
    model = _weightless_keras(tmp_path / "means.keras")
    _add_photos(image_folder["root"], 2)
    output = str(tmp_path / "out")
    _audit(image_folder, model, output, steps=8)
    report = sanity.run(output, images_count=6, stages=2)
    assert [s["layer"] for s in report["stages"]] == ["outer", "inner"]
    assert report["changed"] is False
    assert report["stages"][-1]["reference_test"]["spearman"]["above"] == 6
    assert report["verdict"].startswith(
        "fail: the randomised model's maps stay at least as close to the intact model's as "
        "the input alone (x - x') in 6 of 6 images by Spearman (p = 0.016)"
    ), report["verdict"]


def test_maps_that_change_above_layers_left_intact_pass_the_check():
    # Layers kept below the last stage leave only similar maps undecided: maps that
    # changed already depend on the weights randomised.
    reference = [(0.5, 0.5)] * 5
    report = _verdict_of(_stage([(0.1, 0.2)] * 5, reference), reference, kept=["conv"])
    assert report["changed"] is True and report["verdict"].startswith("pass:")
    report = _verdict_of(_stage([(0.9, 0.8)] * 5, reference), reference, kept=["conv"])
    assert report["changed"] is None and report["verdict"].startswith("undecided:")


def test_the_reference_test_counts_images_not_rows_and_ties_as_no_win():
    # a.png's 3 targets are one trial (their median difference, -0.1); b.png's row has
    # no stage value (no trial); c.png ties within 0.001; d.png is above.
    ids = ["a.png", "a.png", "a.png", "b.png", "c.png", "d.png"]
    values = [0.2, 0.4, 0.9, None, 0.5004, 0.7]
    reference = [0.3, 0.5, 0.5, 0.5, 0.5, 0.5]
    test = sanity.reference_test(ids, values, reference)
    assert (test["images"], test["below"], test["ties"], test["above"]) == (3, 1, 1, 1)
    assert test["p_below"] == pytest.approx(7 / 8)  # P(X >= 1), X ~ Binomial(3, 1/2)
    assert test["p_not_below"] == pytest.approx(4 / 8)  # P(X >= 2): a tie counts against
    assert test["median_difference"] == pytest.approx(0.0004) and test["interval"] is None
    six = sanity.reference_test(list("abcdef"), [0.1] * 6, [0.3] * 6)
    assert (six["below"], six["p_below"]) == (6, 1 / 64)
    assert six["interval"] == pytest.approx([-0.2, -0.2])
    none = sanity.reference_test(["a"], [float("nan")], [0.3])
    assert (none["images"], none["p_below"], none["median_difference"]) == (0, 1.0, None)


def test_stage_medians_leave_out_the_images_without_finite_maps():
    # An image whose map is constant (an all-black image on a black baseline) has no
    # Spearman or SSIM: the stage's medians are the other images', not NaN (undecided).
    nan = float("nan")
    stage = _stage([(0.9, 0.8), (nan, nan), (0.1, 0.2), (0.3, 0.4)], [(0.5, 0.5)] * 4)
    assert stage["spearman_median"] == pytest.approx(0.3)
    assert stage["ssim_median"] == pytest.approx(0.4)
    assert stage["spearman"] == [0.9, None, 0.1, 0.3] and stage["similar"] is False


@pytest.mark.parametrize("spearman, ssim", [(0.3, 0.7), (0.7, 0.3), (0.5, 0.2)])
def test_maps_not_further_than_the_input_alone_by_either_measure_fail_the_check(spearman, ssim):
    # Pass needs both measures below the input alone's in significantly many images; at
    # or above it by one measure in 6 of 6 images (p = 1/64, below 0.05 / 2: either of
    # two measures) is a fail, a tie included. 5 of 5 (p = 1/32) is not.
    reference = [(0.5, 0.5)] * 6
    report = _verdict_of(_stage([(spearman, ssim)] * 6, reference), reference)
    assert report["verdict"].startswith(
        "fail: the randomised model's maps stay at least as close to the intact model's"
    )
    assert "(p = 0.016)" in report["verdict"]
    assert report["changed"] is False and report["stages"][0]["similar"] is True
    report = _verdict_of(_stage([(spearman, ssim)] * 5, reference[:5]), reference[:5])
    assert report["changed"] is None and report["verdict"].startswith("undecided:")


def test_each_stage_records_its_own_decision():
    # A stage recorded only `similar` (its decision being false): maps further than
    # the input alone and no clear direction were both "not similar", so a reader of
    # the cascade could not tell at which stage the maps first changed.
    reference = [(0.5, 0.5)] * 6
    close = _stage([(0.6, 0.6)] * 6, reference)
    further = _stage([(0.2, 0.2)] * 6, reference)
    mixed = _stage([(0.2, 0.2)] * 3 + [(0.7, 0.7)] * 3, reference)
    assert [s["changed"] for s in (close, further, mixed)] == [False, True, None]
    assert [s["similar"] for s in (close, further, mixed)] == [True, False, False]
    for stage in (close, further, mixed):
        assert stage["changed"] is sanity.maps_changed(stage)


def test_stage_medians_are_of_the_images_with_both_measures():
    # A thin image (a line) has a Spearman and no SSIM: it is left out of both
    # medians, so that they are of the same images (and the SSIM's is not NaN).
    nan = float("nan")
    stage = _stage([(0.9, nan), (0.1, 0.2), (0.3, 0.4)], [(0.5, 0.5)] * 3)
    assert stage["spearman_median"] == pytest.approx(0.2)
    assert stage["ssim_median"] == pytest.approx(0.3)
    assert stage["ssim"] == [None, 0.2, 0.4] and stage["similar"] is False


def test_an_undecided_check_prints_dashes_for_its_missing_medians(tmp_path, capsys):
    # A randomised model whose maps are all constant or not finite: no median to judge by.
    nan = float("nan")
    report = _verdict_of(_stage([(nan, nan)] * 2, [(0.5, 0.5)] * 2), [(0.5, 0.5)] * 2)
    path = str(tmp_path / "sanity" / "sanity.json")
    write_json(path, report)
    stored = json.loads((tmp_path / "sanity" / "sanity.json").read_text())
    assert stored["stages"][0]["spearman_median"] is None

    sanity.print_report(stored, str(tmp_path))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{'logits':>24}  Spearman –  SSIM –"
    assert lines[1].startswith("undecided: the randomised model gave no finite maps")
    assert lines[2] == f"Written: {tmp_path}/sanity/sanity.json and sanity.png"
    # --images 100 on a run of two images checked two without a word.
    sanity.print_report(stored, str(tmp_path), asked=100)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "Checked 2 images of the 100 asked (--images): all the run has whose input image "
        "can be re-loaded."
    )
    assert lines[1] == f"{'logits':>24}  Spearman –  SSIM –"
    sanity.print_report(stored, str(tmp_path), asked=2)
    assert capsys.readouterr().out.splitlines()[0].strip().startswith("logits")
    # A --target top_k run: the images asked, and their rows (targets) said.
    ids = ["a.png", "a.png", "a.png", "b.png", "b.png", "b.png"]
    reference = sanity._similarities([(0.5, 0.5)] * 6)
    stages = [sanity._stage_report(["logits"], [(nan, nan)] * 6, reference, ids)]
    top_k = sanity._report(ids, np.arange(6), AttributionConfig(), 0, stages, reference)
    assert (top_k["images"], top_k["rows"]) == (2, 6)
    sanity.print_report(top_k, str(tmp_path), asked=2)
    assert capsys.readouterr().out.splitlines()[0] == (
        "Checked 2 images (6 rows: a row per image and target)."
    )


def test_a_run_of_mostly_black_images_does_not_fail_for_the_zeros_of_its_black_pixels(
    conv_keras, tmp_path
):
    """Sparse bright dots over the whole square, 80 % black: on the old comparison over
    the box the randomised model's maps read as the intact one's (median Spearman
    0.98, SSIM 0.54: 'fail'), from the zeros that every map has on the black pixels.
    Over the dots, they are about as far from the intact maps (Spearman 0.15) as the
    dots alone (x - x', 0.16): the input shares next to nothing with the maps, so
    nothing shows that the weights add to it (undecided), nor that they do not."""
    rng = np.random.default_rng(5)
    root = tmp_path / "dots"
    for i in range(6):
        on = rng.random((SIZE, SIZE)) < 0.2
        on[0, 0] = on[-1, -1] = True  # the box is the whole square
        pixels = np.zeros((SIZE, SIZE, 3), np.uint8)
        pixels[on] = rng.integers(100, 256, size=(on.sum(), 3))
        write_image(root / f"dots{i}.png", pixels)
    output = str(tmp_path / "out")
    _audit({"root": str(root)}, conv_keras, output, steps=8)
    report = sanity.run(output, images_count=6, stages=["logits", "conv"])
    last = report["stages"][-1]
    assert last["spearman_median"] < 0.3 and last["ssim_median"] < 0.4
    assert report["reference"]["spearman_median"] < 0.3
    assert report["changed"] is not False, report["verdict"]


def test_a_run_of_lines_on_black_is_undecided_for_their_thin_content_not_for_finite_maps(
    conv_keras, tmp_path
):
    """A 2 x 64 line is 1 x 16 pixels of content in the model's square: its maps are
    finite and have a Spearman, but no SSIM; the verdict said 'gave no finite maps'."""
    root = tmp_path / "lines"
    write_image(root / "line.png", np.full((64, 2, 3), 200, np.uint8))
    write_image(root / "bar.png", np.full((2, 64, 3), 120, np.uint8))
    output = str(tmp_path / "out")
    _audit({"root": str(root)}, conv_keras, output, steps=8)
    report = sanity.run(output, images_count=2, stages=["logits"])
    (stage,) = report["stages"]
    assert all(r is not None for r in stage["spearman"]) and stage["ssim"] == [None, None]
    assert report["verdict"].startswith(
        "undecided: no image has both measures: the content of 2 rows of 2 (its pixels that "
        "differ from the baseline) is under 3 pixels high or wide, too thin for SSIM (a "
        "panorama or a line on black); check more images (--images) (no medians, with 1 "
        "layer randomised, down to logits)."
    )
    assert report["changed"] is None


def test_a_run_of_images_equal_to_their_baseline_is_undecided_for_that_not_for_finite_maps(
    conv_keras, tmp_path
):
    """Black photos on the black baseline: IG is 0 there whatever the weights, so no map
    has a Spearman or SSIM; the verdict blamed the randomised model's maps, which are
    finite (0, as the intact model's)."""
    root = tmp_path / "dark"
    for name in ("night.png", "void.png"):
        write_image(root / name, np.zeros((SIZE, SIZE, 3), np.uint8))
    output = str(tmp_path / "out")
    _audit({"root": str(root)}, conv_keras, output, steps=8)
    report = sanity.run(output, images_count=2, stages=["logits"])
    assert report["stages"][0]["spearman"] == [None, None]
    assert report["verdict"].startswith(
        "undecided: no image has both measures: the image of 2 rows of 2 equals its "
        "baseline, where IG is 0 whatever the model (no map to compare); check more "
        "images (--images) (no medians, with 1 layer randomised, down to logits)."
    )
    assert "nan" not in report["verdict"]
    assert report["changed"] is None


def test_a_run_of_flat_images_is_undecided_for_the_reasons_its_verdict_ends_with(
    conv_keras, tmp_path
):
    """Flat images (one colour, not the baseline's): the input alone (x - x') is constant
    over each, so no image has a value by either measure, while the randomised model's
    maps are finite and unlike the intact ones. The verdict said 'the randomised model
    gave no finite maps', and with a line beside them, 'the other maps are constant or
    not finite', though its last sentence names the real reason, image by image."""
    root = tmp_path / "flat"
    write_image(root / "white.png", np.full((SIZE, SIZE, 3), 255, np.uint8))
    write_image(root / "grey.png", np.full((SIZE, SIZE, 3), 128, np.uint8))
    output = str(tmp_path / "out")
    _audit({"root": str(root)}, conv_keras, output, steps=8)
    report = sanity.run(output, images_count=2, stages=["logits"])
    (stage,) = report["stages"]
    assert None not in stage["spearman"] + stage["ssim"]  # the randomised maps are fine
    flat = sanity._UNSCORED["flat"]
    verdict = report["verdict"]
    assert verdict.startswith(
        "undecided: no image has both measures, for the reasons this verdict ends with; "
        "check more images (--images) (median Spearman "
    ), verdict
    assert verdict.endswith(
        f" Not counted, without a value: by both measures, 2 of 2 images (grey.png, "
        f"white.png: {flat})."
    ), verdict
    write_image(root / "bar.png", np.full((2, 64, 3), 120, np.uint8))  # no SSIM: too thin
    output = str(tmp_path / "out2")
    _audit({"root": str(root)}, conv_keras, output, steps=8)
    verdict = sanity.run(output, images_count=3, stages=["logits"])["verdict"]
    assert verdict.startswith(
        "undecided: no image has both measures: the content of 1 row of 3 (its pixels that "
        "differ from the baseline) is under 3 pixels high or wide, too thin for SSIM (a "
        "panorama or a line on black), and 2 other rows of 3 lack one for the reasons this "
        "verdict ends with; check more images (--images) ("
    ), verdict
    assert "constant or not finite" not in verdict


def test_an_undecided_check_of_blank_and_thin_images_gives_both_reasons():
    # One image equal to its baseline (no measure), one line (a Spearman, no SSIM) and
    # one whose maps are not finite: each reason once, with its own count.
    nan = float("nan")
    reference = [(nan, nan), (0.5, nan), (0.5, 0.5)]
    stage = _stage([(nan, nan), (0.4, nan), (nan, nan)], reference)
    report = _verdict_of(stage, reference, blank=1)
    assert report["verdict"].startswith(
        "undecided: no image has both measures: the image of 1 row of 3 equals its "
        "baseline, where IG is 0 whatever the model (no map to compare), and the content "
        "of 1 row of 3 (its pixels that differ from the baseline) is under 3 pixels high "
        "or wide, too thin for SSIM (a panorama or a line on black), and the other maps "
        "are constant or not finite; check more images (--images) (median Spearman"
    )


def test_a_check_whose_images_have_no_ssim_is_undecided_in_its_decision_as_in_its_verdict():
    # Lines on black: each image has a Spearman and no SSIM. By Spearman the maps stay
    # as close to the intact ones as the input alone in 6 of 6 images (p = 1/64, a fail
    # by either measure), and the verdict said undecided (no image has both measures)
    # while `changed`, which the report reads, said false: the maps are no explanation.
    nan = float("nan")
    reference = [(0.5, nan)] * 6
    report = _verdict_of(_stage([(0.9, nan)] * 6, reference), reference)
    assert report["verdict"].startswith("undecided: no image has both measures")
    assert report["changed"] is None


def test_a_check_decided_by_one_measure_alone_is_undecided_saying_what_may_decide_it():
    # The sample's 8 photos: by Spearman every randomised map is further from the intact
    # one than the input alone (8 of 8, p = 0.0039), by SSIM 6 of 8 (p = 0.14). A pass
    # takes both; the advice was 'check more images (--images)', which a run of 8 images
    # cannot follow: a run of more images can.
    reference = [(0.4, 0.1)] * 8
    similarity = [(0.2, 0.05)] * 6 + [(0.2, 0.2)] * 2
    report = _verdict_of(_stage(similarity, reference), reference)
    assert report["changed"] is None
    assert report["verdict"].startswith(
        "undecided: the randomised model's maps are further from the intact model's than "
        "the input alone (x - x') in 8 of 8 images by Spearman (p = 0.0039) and 6 of 8 "
        "images by SSIM (p = 0.14): not shown by both measures at p < 0.05, nor the "
        "reverse; more images may decide it (--images, or a run of more images) (median"
    ), report["verdict"]
    # The advice recorded for the report (sanity.json's "advice") is the verdict's own.
    assert report["advice"] == "more images may decide it (--images, or a run of more images)"


@pytest.mark.parametrize(
    "location, relative",
    [("models/conv.keras", True), ("/gone/conv.keras", False), ("gs://bucket/conv", False)],
)
def test_only_a_relative_local_model_path_is_said_to_be_relative(location, relative):
    # An absolute path, or a gs:// folder, is restored where the run read it; only a
    # relative one (as earlier versions recorded a local --model) depends on the folder
    # the check runs in.
    advice = sanity._restore_advice(model_reference(location))
    assert ("relative to the folder the run was started in" in advice) is relative
    assert (advice == "restore it where the run read it") is not relative


def test_a_folder_without_a_run_exits_2_saying_what_to_pass(tmp_path, capsys):
    from tests.test_report import missing_run_lines

    (tmp_path / "photos").mkdir()
    assert sanity.main(["--input", str(tmp_path / "photos")]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line == (
        f"error: --input {str(tmp_path / 'photos')!r} holds no manifest.json: it is not the "
        "--output folder of a run of this job; pass that folder (e.g. ./output/sample)."
    )
    out = str(tmp_path / "out")
    assert missing_run_lines(sanity.main, tmp_path, capsys) == [
        f"error: --input {str(tmp_path / 'otu')!r} does not exist; pass the --output folder "
        "of a run of this job (e.g. ./output/sample).",
        f"error: --input {out + '/results'!r} is inside the run {out!r}; pass --input {out}.",
        f"error: --input {out + '/results/part-0.parquet'!r} is inside the run {out!r}; "
        f"pass --input {out}.",
    ]


@pytest.mark.parametrize("kind", ["fifo", "text"])
def test_a_manifest_that_is_no_manifest_exits_2_naming_it(kind, tmp_path, capsys):
    """As the report's (tests/test_report.py): a FIFO ended in a traceback, text that
    is not JSON in JSON's own 'Expecting value' with no file named."""
    from tests.test_report import _unreadable_manifest

    path = _unreadable_manifest(tmp_path / "out", kind)
    assert sanity.main(["--input", str(tmp_path / "out")]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: --input {str(tmp_path / 'out')!r}: its manifest.json ")
    assert str(path) in line


def test_a_damaged_results_file_or_unreachable_storage_is_one_error_line(
    folder_run, unreachable_storage, capsys
):
    """As the report's: a damaged file in results/ gave pyarrow's message without
    the file's remedy, and a gs:// run offline a traceback."""
    output = folder_run["output"]
    Path(output, "results", "z-damaged.parquet").write_bytes(b"PAR1 not parquet")
    assert sanity.main(["--input", output]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: cannot read the results of --input {output!r}: ")
    assert "a file in results/ is not readable Parquet" in line and "z-damaged.parquet" in line
    assert line.endswith("Move the file out of results/ (or rerun the audit) and run this again.")
    assert sanity.main(["--input", "gs://bucket/run"]) == 1
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line.startswith("error: Cannot reach Google Cloud Storage (storage.invalid:4443: ")


def test_a_gs_input_that_holds_no_run_is_said_so_not_a_traceback(gcs_stub, capsys):
    # As the report's: the storage client's NotFound for its manifest.json, a traceback.
    assert sanity.main(["--input", "gs://bucket/run"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line == (
        "error: --input 'gs://bucket/run' holds no manifest.json: it is not the --output "
        "folder of a run of this job; pass that folder (e.g. ./output/sample)."
    )


def test_a_gs_input_the_credentials_may_not_read_is_one_error_line(gcs_stub, capsys):
    # As the report's: Cloud Storage's 403 for its manifest.json, a traceback.
    gcs_stub.objects["run/manifest.json"] = b"{}"
    gcs_stub.forbidden.add("run/manifest.json")
    assert sanity.main(["--input", "gs://bucket/run"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line.startswith("error: cannot read --input 'gs://bucket/run': [Errno 13] Permission ")
    assert line.endswith(", then run this again."), line


def test_a_run_without_rows_or_images_says_which_not_tfds(folder_run, capsys):
    output = folder_run["output"]
    root = Path(folder_run["root"])
    root.rename(root.with_name("moved"))  # the run's image folder is gone
    assert sanity.main(["--input", output]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: No row of {output!r} has an input image that can be re-loaded")
    assert f"the image folder {str(root)!r} of this run is not reachable from here" in line
    assert "or --image_root where they are now" in line
    for path in Path(output, "results").glob("*.parquet"):  # every input failed: no rows
        pq.write_table(pq.read_table(path).slice(0, 0), path)
    assert sanity.main(["--input", output]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: {output!r} has no result rows (every input failed")
    assert "TFDS" not in line


def test_a_run_over_a_tfds_dataset_is_refused_saying_why_and_what_to_run_on(
    conv_keras, tmp_path, capsys
):
    """Its error ended in the report's figure note, "the heat map is shown without the
    photo" (the check draws no heat map then), and told to put the images where the run
    read them or to pass --image_root, which a TFDS dataset's images have no folder for."""
    from tests import tfds_builders

    data_dir = tfds_builders.prepared("tiny_shades/dark", tmp_path)
    output = str(tmp_path / "out")
    args = cli_args(dataset="tiny_shades/dark", data_dir=data_dir, model=conv_keras)
    run_job(
        [*args, *cli_args(output=output, steps=2, faithfulness="none")], save_main_session=False
    )
    assert sanity.main(["--input", output, "--images", "1", "--stages", "logits"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line == (
        f"error: --input {output!r} is a run over the TFDS dataset 'tiny_shades/dark': the "
        "check re-reads the images it checks, and a TFDS dataset's are not re-read (it "
        "would mean scanning the dataset); run the check on a run over an image folder or "
        "the bundled sample."
    )
    assert not Path(output, "sanity").exists()


def test_a_run_of_a_saved_model_is_refused_saying_what_to_run_the_check_on(
    image_folder, conv_keras, tmp_path, capsys
):
    """A run of a Keras model's SavedModel export: the check loaded the model, then
    refused it as "--model '...' is a saved_model model without Keras layers", naming a
    flag the check has not and no way to check that model."""
    import keras

    exported = str(tmp_path / "exported")
    keras.saving.load_model(conv_keras).export(exported, verbose=False)
    output = str(tmp_path / "out")
    _audit(image_folder, exported, output, steps=2)
    assert sanity.main(["--input", output, "--images", "1", "--stages", "1"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line == (
        f"error: --input {output!r} is a run of the SavedModel {exported!r}, which has "
        "variables but no Keras layers to randomise one by one: the check needs the bundled "
        "model or a .keras file (a Keras model of your own: save it with "
        "model.save('model.keras'), audit that into another --output and run the check on "
        "that run)."
    )
    assert not Path(output, "sanity").exists()


def test_moved_images_are_found_with_image_root_and_a_changed_model_is_refused(
    image_folder, conv_keras, tmp_path, capsys
):
    import keras

    model = str(tmp_path / "model.keras")
    shutil.copyfile(conv_keras, model)
    output = str(tmp_path / "out")
    _audit(image_folder, model, output, steps=4)
    moved = Path(image_folder["root"]).rename(tmp_path / "moved")  # the run's folder is gone
    check = ["--input", output, "--images", "1", "--stages", "logits", "--image_root", str(moved)]
    assert sanity.main(check) == 0
    assert json.loads(Path(output, "sanity", "sanity.json").read_text())["images"] == 1
    shutil.rmtree(Path(output, "sanity"))
    retrained = keras.saving.load_model(model)
    retrained.get_layer("logits").kernel.assign(retrained.get_layer("logits").kernel * 2.0)
    retrained.save(model)  # the file the run named now holds other weights
    assert sanity.main(check) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: the run's model {model!r} changed since the run (identity")
    assert not (tmp_path / "out" / "sanity").exists()


@pytest.fixture(scope="module")
def relative_model_run(tmp_path_factory, conv_keras) -> dict:
    """`_audit`'s run of `image_folder`'s images given `--model models/conv.keras`, typed
    in the folder that holds it (`["where"]`), made once a module: `["copy"](output)`
    puts a copy of the run there."""
    where = tmp_path_factory.mktemp("relative_model")
    (where / "models").mkdir()
    shutil.copyfile(conv_keras, where / "models" / "conv.keras")
    folder = make_image_folder(where / "images")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(where)
        _audit(folder, os.path.join("models", "conv.keras"), str(where / "out"), steps=4)
    return {"where": where, "copy": lambda output: shutil.copytree(where / "out", output)}


def test_a_run_given_a_relative_model_path_is_checked_from_another_folder(
    relative_model_run, tmp_path, monkeypatch
):
    """`--model models/conv.keras`, typed in the folder that holds it: the manifest kept the
    relative path, and a check run from elsewhere said the model could not be read and to
    restore it where the run read it, where it still was."""
    output = str(tmp_path / "out")
    relative_model_run["copy"](output)
    model = results.read_manifest(output)["model"]
    assert model["reference"] == os.path.join("models", "conv.keras")  # as typed
    assert model["location"] == str(relative_model_run["where"] / "models" / "conv.keras")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert sanity.main(["--input", output, "--images", "1", "--stages", "logits"]) == 0


def test_a_batch_norm_models_randomised_variance_stays_a_variance(image_folder, tmp_path):
    # Noise at a moving variance's trained scale is negative in some channels: the
    # layer's sqrt(variance + eps) was NaN there, every map NaN, the check undecided.
    import keras

    keras.utils.set_random_seed(5)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv")(inputs)
    norm = keras.layers.BatchNormalization(name="bn")
    x = keras.layers.ReLU()(norm(x))
    outputs = keras.layers.Dense(1000, name="logits")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    gamma, beta, mean, _ = norm.get_weights()
    variance = np.exp(np.random.default_rng(0).normal(-1.0, 1.0, 16)).astype(np.float32)
    norm.set_weights([gamma, beta, mean, variance])
    path = str(tmp_path / "bn.keras")
    model.save(path)
    output = str(tmp_path / "out")
    _audit(image_folder, path, output, steps=4)

    report = sanity.run(output, images_count=2, stages=["logits", "bn"])
    assert "gave no finite maps" not in report["verdict"], report["verdict"]
    for stage in report["stages"]:
        assert None not in stage["spearman"] + stage["ssim"], stage


def test_every_weight_of_a_randomised_layer_differs_from_its_trained_value(tmp_path):
    # A weight whose values are all equal got noise at its own spread, 0: a zero bias,
    # an untrained BatchNormalization's four vectors and a Dense(1)'s one bias kept
    # their values through "randomisation".
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)  # bias 0
    x = keras.layers.BatchNormalization(name="bn")(x)  # gamma 1, beta 0, mean 0, var 1
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    outputs = keras.layers.Dense(1000, name="logits")(keras.layers.Dense(1, name="one")(x))
    keras.Model(inputs, outputs).save(tmp_path / "constant.keras")
    model = Classifier(resolve_model(str(tmp_path / "constant.keras")))
    names = model.weight_layers()
    trained = {w.path: np.array(w.numpy()) for n in names for w in _layer(model, n).weights}
    assert sum(v.min() == v.max() for v in trained.values()) == 7  # the constant ones
    model.randomize_layers(names, seed=0)
    for name in names:
        for weight in _layer(model, name).weights:
            value = np.asarray(weight.numpy())
            assert (value != trained[weight.path]).all(), weight.path
            assert np.isfinite(value).all(), weight.path
    variance = np.asarray(_layer(model, "bn").moving_variance.numpy())
    assert (variance > 0).all()  # still a variance
    beta = np.asarray(_layer(model, "bn").beta.numpy())
    assert (beta < 0).any() and (beta > 0).any()  # a zero has no sign to keep


def test_a_variance_of_zeros_stays_a_variance_when_randomised(tmp_path):
    # A weight of zeros gets noise of either sign (a zero bias has no sign to keep),
    # and a BatchNormalization's moving variance of zeros did too: sqrt(var + eps)
    # was NaN in the channels drawn negative, every map NaN. A variance is known by
    # its name, whatever its values.
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    norm = keras.layers.BatchNormalization(name="bn")
    x = keras.layers.GlobalAveragePooling2D()(norm(x))
    outputs = keras.layers.Dense(1000, name="logits")(x)
    model = keras.Model(inputs, outputs)
    gamma, beta, mean, variance = norm.get_weights()
    norm.set_weights([gamma, beta, mean, np.zeros_like(variance)])
    model.save(tmp_path / "zero_variance.keras")
    model = Classifier(resolve_model(str(tmp_path / "zero_variance.keras")))
    model.randomize_layers(["bn"], seed=0)
    variance = np.asarray(_layer(model, "bn").moving_variance.numpy())
    assert (variance > 0).all(), variance
    beta = np.asarray(_layer(model, "bn").beta.numpy())
    assert (beta < 0).any() and (beta > 0).any()  # a zero offset still has no sign


def _layer(model: Classifier, name: str):
    return model._model.get_layer(name)


def test_a_constant_weights_noise_is_at_its_value_its_layers_rms_or_glorots_scale(tmp_path):
    # What docs/faithfulness.md says of a weight whose values are all equal: noise whose standard
    # deviation is the larger of its |value| and its layer's root mean square, and
    # Glorot-normal's sqrt(2 / (fan_in + fan_out)) where both are 0 (a layer of zeros).
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    layers = {n: keras.layers.Dense(u, name=n) for n, u in (("zeros", 64), ("rms", 256))}
    layers["value"] = keras.layers.Dense(256, name="value")
    for layer in layers.values():
        x = layer(x)
    outputs = keras.layers.Dense(1000, name="logits")(x)
    rng = np.random.default_rng(3)
    layers["zeros"].set_weights([np.zeros((3, 64), np.float32), np.zeros(64, np.float32)])
    kernel = rng.normal(0, 0.5, (64, 256)).astype(np.float32)
    layers["rms"].set_weights([kernel, np.zeros(256, np.float32)])
    small = rng.normal(0, 0.05, (256, 256)).astype(np.float32)
    layers["value"].set_weights([small, np.full(256, 3.0, np.float32)])
    keras.Model(inputs, outputs).save(tmp_path / "constants.keras")
    model = Classifier(resolve_model(str(tmp_path / "constants.keras")))
    model.randomize_layers(["zeros", "rms", "value"], seed=0)
    rms = float(np.sqrt(np.sum(np.square(kernel, dtype=np.float64)) / (kernel.size + 256)))
    expected = {
        ("zeros", 0): np.sqrt(2 / (3 + 64)),  # Glorot of its (3, 64) kernel
        ("zeros", 1): np.sqrt(2 / (64 + 64)),  # and of its 64 biases
        ("rms", 1): rms,  # a zero bias: its layer's scale
        ("value", 1): 3.0,  # 3.0 throughout: its own size, over the layer's RMS of 0.2
    }
    for (name, index), sd in expected.items():
        drawn = np.asarray(_layer(model, name).weights[index].numpy())
        assert np.std(drawn) == pytest.approx(sd, rel=0.2), (name, index, np.std(drawn))


def test_a_model_whose_pixel_layer_is_constant_is_destroyed_by_the_check(image_folder, tmp_path):
    # Its only layer over the pixels gives every hidden unit the same weight, 1 / P:
    # randomising that layer left it so, the randomised model's maps were the intact
    # one's (Spearman 1.00) and the check failed IG ("they reflect the input").
    import keras

    keras.utils.set_random_seed(7)
    values = SIZE * SIZE * 3
    inputs = keras.Input((SIZE, SIZE, 3))
    mix = keras.layers.Dense(16, activation="relu", name="mix")
    x = keras.layers.Dense(1, name="one")(mix(keras.layers.Flatten()(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(1000, name="logits")(x))
    mix.set_weights([np.full((values, 16), 1 / values, np.float32), np.zeros(16, np.float32)])
    model.save(tmp_path / "mix.keras")
    _add_photos(image_folder["root"], 2)
    output = str(tmp_path / "out")
    _audit(image_folder, str(tmp_path / "mix.keras"), output, steps=8)
    report = sanity.run(output, images_count=6, stages=["logits", "one", "mix"])
    top, one, whole = report["stages"]
    # A Dense(1) bottleneck: randomising above it scales the maps, which stay the same.
    assert top["spearman_median"] > 0.99 and one["spearman_median"] > 0.99
    assert top["similar"] and one["similar"] and not whole["similar"]
    assert [s["changed"] for s in report["stages"]] == [False, False, True]
    assert report["verdict"].startswith("pass"), report["verdict"]


@pytest.fixture(scope="module")
def checked_to_a_closed_stdout(audited, tmp_path_factory) -> dict:
    """`audited`'s steps-4 run checked once a module by `python -m pipeline.sanity
    --input OUTPUT --images 2` whose stdout lost its reader (`run_to_a_closed_stdout`):
    `["done"]` is the finished process, `["output"]` the run's folder, with the check's."""
    output = str(tmp_path_factory.mktemp("closed_stdout") / "out")
    audited(output, steps=4)
    done = run_to_a_closed_stdout("pipeline.sanity", "--input", output, "--images", "2")
    return {"done": done, "output": output}


def test_a_reader_that_stops_reading_stdout_does_not_fail_a_finished_check(
    checked_to_a_closed_stdout,
):
    done = checked_to_a_closed_stdout["done"]
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert Path(checked_to_a_closed_stdout["output"], "sanity", "sanity.json").is_file()


def test_a_saved_models_check_is_refused_before_its_model_prints_stdout_left_empty(
    printing_saved_model, tmp_path
):
    # The check called the run's model before it refused a SavedModel: its tf.print(...,
    # output_stream=sys.stdout), which TensorFlow's C++ writes to file descriptor 1,
    # was 'batch of 2' on the check's stdout, beside its error line on stderr. It now
    # refuses a SavedModel's run from its manifest, before loading the model: no print.
    for i in range(2):
        write_image(tmp_path / "images" / f"{i}.png", np.full((SIZE, SIZE, 3), 60 * i, np.uint8))
    output = str(tmp_path / "out")
    _audit({"root": str(tmp_path / "images")}, printing_saved_model, output, steps=2)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    check = subprocess.run(
        [sys.executable, "-m", "pipeline.sanity", "--input", output, "--images", "1"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 2, check.stderr[-3000:]
    assert check.stdout == ""
    assert "batch of 2" not in check.stderr
    said = f"error: --input {output!r} is a run of the SavedModel {printing_saved_model!r}, "
    assert check.stderr.splitlines()[-1].startswith(said)


def test_a_keras_models_prints_to_stdout_go_to_stderr_stdout_holds_the_report_alone(
    tmp_path, capsys
):
    """A `.keras` model whose layer prints 'batch of N' to file descriptor 1 at each call
    (`tests.printing_layer`; the command's process registers it through sitecustomize,
    as a user's environment does): the check calls it many times, and its lines go to
    stderr; stdout holds the report `print_report` prints, alone. (The SavedModel that
    showed it is refused before it loads: see the test above.)"""
    from tests.printing_layer import PRINTING_SITE, printing_model

    model = printing_model(str(tmp_path / "printing.keras"), SIZE)
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 256, (SIZE, SIZE, 3), np.uint8)
        write_image(tmp_path / "images" / f"{i}.png", pixels)
    output = str(tmp_path / "out")
    _audit({"root": str(tmp_path / "images")}, model, output, steps=2)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(PRINTING_SITE)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, "-m", "pipeline.sanity", "--input", output, "--images", "2"]
    check = subprocess.run(
        launched([*command, "--stages", "logits", "--steps", "2"]),
        cwd=root,
        env={**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{root}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    assert "batch of " in check.stderr
    capsys.readouterr()
    report = json.loads(Path(output, "sanity", "sanity.json").read_text())
    sanity.print_report(report, output, asked=2)
    assert check.stdout == capsys.readouterr().out


def test_a_finished_check_is_said_on_an_ascii_stdout(audited, tmp_path):
    # Its last line named the run's folder in a UnicodeEncodeError traceback, and exited 1.
    output = str(tmp_path / "Prüfung")
    audited(output, steps=4)
    done = run_to_an_ascii_stdout("pipeline.sanity", "--input", output, "--images", "1")
    stderr = done.stderr.decode("ascii", "replace")
    assert (done.returncode, "Traceback" in stderr) == (0, False), stderr
    assert b"Pr\\xfcfung/sanity/sanity.json" in done.stdout


def test_a_tilde_in_the_input_is_the_home_folder_as_in_the_jobs_flags(
    audited, tmp_path, monkeypatch, capsys
):
    # The job expands '~/out' in its --output; the check took it for a folder named '~'.
    audited(str(tmp_path / "out"), steps=4)
    monkeypatch.setenv("HOME", str(tmp_path))
    code = sanity.main(["--input=~/out", "--images", "1", "--stages", "1"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "sanity" / "sanity.json").is_file()


def test_a_check_run_with_warnings_as_errors_finishes(audited, tmp_path):
    """`python -W error -m pipeline.sanity`: reading a layer's weights through
    keras.ops.convert_to_numpy raised NumPy 2's DeprecationWarning of __array__ without
    a copy keyword, and the check ended in its traceback."""
    output = str(tmp_path / "out")
    audited(output, steps=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = sanity.run(output, images_count=1, stages=["logits"])
    assert "1 image cannot show it at p < 0.05" in report["verdict"], report["verdict"]


def test_the_figure_names_each_rows_image_and_target(tmp_path):
    """A --target top_k run: two rows of one image differ only in their target, which
    each row's caption says (uncaptioned, the two rows of the same photo were alike)."""
    from tests.conftest import write_image
    from tests.known_rows import known_attributions, make_row, write_output

    pixels = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), np.uint8)
    write_image(tmp_path / "images" / "cat.png", pixels)
    rows = [[make_row("cat.png", None, 7, 0.6, 0.0, target=t, seed=t) for t in (7, 8)]]
    output = write_output(tmp_path / "out", rows, dataset=str(tmp_path / "images"))
    frame, pictures = sanity._rows(output, results.read_manifest(output), 2)
    maps = np.stack([known_attributions(7), known_attributions(8)])
    figure = sanity._figure(frame, pictures / 255.0, [maps, maps], ["intact", "logits"])
    titles = [[ax.get_title() for ax in figure.axes[r * 3 : r * 3 + 3]] for r in range(2)]
    assert titles == [
        ["cat.png\n→ class 7", "intact", "logits"],
        ["cat.png\n→ class 8", "", ""],
    ]
    np.testing.assert_array_equal(figure.axes[3].get_images()[0].get_array(), pixels / 255.0)


def test_the_figure_draws_names_with_dollar_signs_as_written(tmp_path):
    """A file named `x$^$y.png` failed the check at its figure (matplotlib read the
    caption as TeX math: a ValueError), after the minutes of its maps."""
    from tests.conftest import write_image
    from tests.known_rows import known_attributions, make_row, write_output

    pixels = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), np.uint8)
    write_image(tmp_path / "images" / "x$^$y.png", pixels)
    rows = [[make_row("x$^$y.png", None, 7, 0.6, 0.0)]]
    rows[0][0]["target_name"] = "$5 bill$"
    output = write_output(tmp_path / "out", rows, dataset=str(tmp_path / "images"))
    frame, pictures = sanity._rows(output, results.read_manifest(output), 1)
    figure = sanity._figure(frame, pictures / 255.0, [known_attributions(7)[None]], ["$x^$"])
    assert plots.figure_png(figure).startswith(b"\x89PNG")
    assert [ax.get_title() for ax in figure.axes] == ["x$^$y.png\n→ $5 bill$", "$x^$"]


def test_the_figure_scales_a_wide_images_map_over_the_image_not_its_padding(tmp_path):
    """A 1:8 image on the black baseline: its padding (0 in every map) is left out of the
    99th percentile that scales each map, as in the other figures (`plots.attribution_mask`
    of |the channel sum|, the map the check compares): counted, it put 8 % of the
    image's pixels at the top of the scale."""
    from tests.conftest import write_image
    from tests.known_rows import make_row, write_output

    write_image(tmp_path / "images" / "wide.png", np.full((2, SIZE, 3), 200, np.uint8))
    rows = [[make_row("wide.png", None, 7, 0.6, 0.0, target=7)]]
    output = write_output(tmp_path / "out", rows, dataset=str(tmp_path / "images"))
    frame, pictures = sanity._rows(output, results.read_manifest(output), 1)
    maps = np.zeros((1, SIZE, SIZE, 3), np.float32)
    maps[0, 7:9] = np.random.default_rng(0).normal(size=(2, SIZE, 3))
    figure = sanity._figure(frame, pictures / 255.0, [maps], ["intact"])
    drawn = figure.axes[1].get_images()[0].get_array()
    expected = plots.attribution_mask(maps[0, 7:9].sum(-1))
    np.testing.assert_allclose(drawn[7:9], expected, rtol=1e-6)
    assert not drawn[:7].any() and not drawn[9:].any()
    maps[0, 8, 3] = np.nan  # a NaN map value stays blank, not the top of the scale
    figure = sanity._figure(frame, pictures / 255.0, [maps], ["intact"])
    drawn = figure.axes[1].get_images()[0].get_array()
    assert drawn.mask[8, 3] and drawn.mask.sum() == 1


def test_the_figure_cuts_long_names_and_keeps_missing_glyphs_off_stderr(tmp_path):
    """A class name of 100 characters ran past the figure's left edge and over the next
    column's heading; a name in a script the font lacks (CJK) put a UserWarning per
    character on stderr (the check's own, not `plots.figure_png`'s filter)."""
    import warnings

    from tests.conftest import write_image
    from tests.known_rows import known_attributions, make_row, write_output

    long_name = "a class name " + "that goes on " * 7 + "and on"
    write_image(tmp_path / "images" / "cat.png", np.full((SIZE, SIZE, 3), 90, np.uint8))
    rows = [[make_row("cat.png", None, 7, 0.6, 0.0, target=t, seed=t) for t in (7, 8)]]
    rows[0][0]["target_name"], rows[0][1]["target_name"] = long_name, "右下の象限"
    output = write_output(tmp_path / "out", rows, dataset=str(tmp_path / "images"))
    frame, pictures = sanity._rows(output, results.read_manifest(output), 2)
    maps = np.stack([known_attributions(7), known_attributions(8)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure = sanity._figure(frame, pictures / 255.0, [maps], ["intact"])
        plots.figure_png(figure)
    assert not [w for w in caught if "Glyph" in str(w.message)]
    caption, heading = figure.axes[0].title, figure.axes[1].title
    assert caption.get_text() == "cat.png\n→ a class name that goes on t…"
    width = figure.bbox.width
    box, next_box = caption.get_window_extent(), heading.get_window_extent()
    assert 0 <= box.x0 and box.x1 <= width and box.x1 < next_box.x0


def test_the_figures_headings_say_how_far_down_the_model_was_randomised(
    audited, tmp_path, monkeypatch
):
    """A column headed with a layer's name alone ("logits") read as a map of that layer;
    it is the map of the model randomised from its output down to that layer."""
    output = str(tmp_path / "out")
    audited(output, steps=4)
    drawn, real = [], sanity._figure

    def figure(*args):  # the real figure, kept to read its headings
        drawn.append(real(*args))
        return drawn[-1]

    monkeypatch.setattr(sanity, "_figure", figure)
    sanity.run(output, images_count=1, stages=["logits", "conv"])
    (fig,) = drawn
    assert [ax.get_title() for ax in fig.axes[1:3]] == [
        "intact model",
        "randomised down to\nlogits",
    ]
    assert fig.axes[3].get_title() == "randomised down to\nconv"


def test_the_figures_headings_fit_their_columns(tmp_path):
    """A long layer name is cut, as a long class name is, so no heading runs into the
    next column's at the figure's size (110 dpi)."""
    from tests.conftest import write_image
    from tests.known_rows import known_attributions, make_row, write_output

    write_image(tmp_path / "images" / "cat.png", np.full((SIZE, SIZE, 3), 90, np.uint8))
    rows = [[make_row("cat.png", None, 7, 0.6, 0.0, target=7)]]
    output = write_output(tmp_path / "out", rows, dataset=str(tmp_path / "images"))
    frame, pictures = sanity._rows(output, results.read_manifest(output), 1)
    layers = ["block7a_project_conv", "a_layer_name_that_goes_on_and_on_and_on", "stem_conv"]
    titles = sanity._headings(layers)
    maps = [known_attributions(7)[None]] * 4
    figure = sanity._figure(frame, pictures / 255.0, maps, titles)
    plots.figure_png(figure, dpi=110)
    boxes = [ax.title.get_window_extent() for ax in figure.axes]
    assert all(a.x1 < b.x0 for a, b in itertools.pairwise(boxes)), boxes
    assert 0 <= boxes[0].x0 and boxes[-1].x1 <= figure.bbox.width
    assert figure.axes[3].get_title() == "randomised down to\na_layer_name_that_goes_on_a…"


def test_the_figure_draws_names_with_control_and_format_characters_escaped(tmp_path):
    """File, class and layer names were drawn raw: a right-to-left override reordered a
    caption, a newline split a name over two lines. They are drawn as the terminal shows
    them (`wording.printable`)."""
    from tests.conftest import write_image
    from tests.known_rows import known_attributions, make_row, write_output
    from transforms.wording import printable

    name, target, layer = "x\u202egnp.exe\x1b[2J\n.png", "cat\u200b\nfish", "conv\u202e1"
    write_image(tmp_path / "images" / name, np.full((SIZE, SIZE, 3), 90, np.uint8))
    rows = [[make_row(name, None, 7, 0.6, 0.0, target=7)]]
    rows[0][0]["target_name"] = target
    output = write_output(tmp_path / "out", rows, dataset=str(tmp_path / "images"))
    frame, pictures = sanity._rows(output, results.read_manifest(output), 1)
    maps = [known_attributions(7)[None]] * 2
    figure = sanity._figure(frame, pictures / 255.0, maps, sanity._headings([layer]))
    assert [ax.get_title() for ax in figure.axes] == [
        f"{printable(name)}\n→ {printable(target)}",
        "intact model",
        f"randomised down to\n{printable(layer)}",
    ]


@pytest.mark.parametrize(
    "signum, status, said",
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "stopped by SIGTERM")],
)
def test_a_stop_while_the_check_runs_is_one_error_line(audited, tmp_path, signum, status, said):
    # A Ctrl-C was a KeyboardInterrupt traceback, a SIGTERM a death without a word.
    output = str(tmp_path / "out")
    audited(output, steps=4)
    root = str(Path(__file__).resolve().parents[1])
    check = subprocess.Popen(
        launched(
            [sys.executable, "-m", "pipeline.sanity", "--input", output, "--images", "3"],
            ctrl_c=True,
        ),
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
        stderr=subprocess.PIPE,
        text=True,
    )
    while check.poll() is None and not has_loaded(check.pid, "tensorflow"):
        time.sleep(0.01)  # the check loads TensorFlow in main, after its module's imports
    check.send_signal(signum)
    stderr = check.communicate(timeout=120)[1]
    assert check.returncode == status, stderr[-3000:]
    assert stderr.splitlines()[-1] == f"error: {said}; run the command again."
    assert "Traceback" not in stderr and not (tmp_path / "out" / "sanity").exists()


def test_a_run_made_with_a_tolerance_above_1_is_checked_as_it_was_made(audited, tmp_path, capsys):
    """An earlier version ran `--tolerance 2` (a percent typed for a fraction), which
    this one refuses at launch: the check of such a run said 'error: --tolerance 2 is
    above 1 ...; pass a number from 0 to 1', a flag the check does not have."""
    output = str(tmp_path / "out")
    audited(output, steps=8)
    manifest = results.read_manifest(output)
    manifest["config"].update(tolerance=2.0, completeness_tolerance=1.5, estimate_bound=1.6)
    write_json(os.path.join(output, "manifest.json"), manifest)
    assert sanity.main(["--input", output, "--images", "1", "--stages", "logits"]) == 0, (
        capsys.readouterr().err
    )
    settings = json.loads(Path(output, "sanity", "sanity.json").read_text())["settings"]
    assert settings["tolerance"] == 2.0


def test_an_earlier_runs_relative_model_path_is_said_to_be_relative(
    relative_model_run, tmp_path, monkeypatch, capsys
):
    """A run of an earlier version recorded `--model models/conv.keras` as typed: checked
    from another folder, the model could not be read, and the check said to restore it
    where the run read it, where it still was."""
    output = str(tmp_path / "out")
    relative_model_run["copy"](output)
    manifest = results.read_manifest(output)
    manifest["model"]["location"] = os.path.join("models", "conv.keras")  # as it was recorded
    write_json(os.path.join(output, "manifest.json"), manifest)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert sanity.main(["--input", output, "--images", "1", "--stages", "logits"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert "relative to the folder the run was started in" in line, line
    monkeypatch.chdir(relative_model_run["where"])  # the folder the run was started in
    assert sanity.main(["--input", output, "--images", "1", "--stages", "logits"]) == 0


def test_a_check_cut_short_while_written_leaves_the_earlier_files_whole(
    checked_to_a_closed_stdout, tmp_path
):
    # sanity.png was written straight to its place, after sanity.json: a full disk
    # midway left half a picture beside the new report, and a traceback.
    output = str(tmp_path / "out")
    shutil.copytree(checked_to_a_closed_stdout["output"], output)  # a check's files in it
    folder = tmp_path / "out" / "sanity"
    earlier = {p.name: p.read_bytes() for p in folder.iterdir()}
    root = str(Path(__file__).resolve().parents[1])
    half = len(earlier["sanity.png"]) // 2  # EFBIG past half the picture, as on a full disk
    check = subprocess.run(
        launched(
            [sys.executable, "-m", "pipeline.sanity", "--input", output, "--images", "2"]
            + ["--seed", "1"],  # the earlier check's settings, another seed
            file_size_limit=half,
        ),
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 2, check.stderr[-3000:]
    assert "Traceback" not in check.stderr
    line = check.stderr.splitlines()[-1]
    assert line.startswith(f"error: cannot write the sanity check to {str(folder)!r} (OSError: ")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == earlier  # nothing else beside


@pytest.mark.parametrize(
    "made, said",
    [
        ("file", "it is a file, not a folder; move it (the check writes its files in that folder)"),
        (
            "link",
            "it is a symbolic link to 'gone', which does not exist; create it, or delete the "
            "link (the check writes its files in that folder)",
        ),
        (
            "sanity.png",
            "it holds a folder named sanity.png, where the check writes that file; move that "
            "folder",
        ),
        (
            "sanity.json",
            "it holds a folder named sanity.json, where the check writes that file; move that "
            "folder",
        ),
        (
            "sanity.png link",
            "it holds a symbolic link named sanity.png to 'gone/x.png', whose folder does not "
            "exist, where the check writes that file; create that folder, or delete the link",
        ),
    ],
)
def test_a_sanity_entry_that_is_no_folder_is_refused_before_the_model_loads(
    made, said, audited, tmp_path, capsys, caplog
):
    """A run's sanity/ that is a file, or a symbolic link to nothing (a moved folder;
    here 'gone', never made), failed only once the check was done (FileExistsError,
    or 'No such file or directory' of the link's target); a link whose target could be
    made had the files written there; a folder named sanity.png or sanity.json in it
    failed once done (IsADirectoryError); a sanity.png linked to a file in a folder
    that does not exist had that folder made and the figure written there. Found by
    running the check on copies of a run whose sanity/ was each."""
    output = tmp_path / "out"
    audited(str(output), steps=4)
    folder = output / "sanity"
    if made == "file":
        folder.write_text("my notes")
    elif made == "link":
        folder.symlink_to("gone")
    elif made.endswith(" link"):  # the file's link into a missing folder: written, made there
        folder.mkdir()
        (folder / made.split()[0]).symlink_to("gone/x.png")
    else:  # a folder where the check writes that file (IsADirectoryError, once done)
        (folder / made).mkdir(parents=True)
    caplog.set_level(logging.INFO)
    assert sanity.main(["--input", str(output), "--images", "1", "--stages", "logits"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"error: cannot write the sanity check to {str(folder)!r}: {said}."
    assert not any("median" in r.getMessage() for r in caplog.records)  # no stage was run
    assert not (output / "gone").exists() and not (output / "sanity" / "gone").exists()


def test_a_run_made_before_completeness_tolerance_is_rebuilt_with_its_tolerance_bounding_it():
    # Before --completeness_tolerance, --tolerance bounded completeness too, and before
    # the estimate's margin (no estimate_bound recorded) the estimate itself: the check
    # computes such a run's maps as it did (it took 0.005 and --tolerance / 1.25).
    config = dataclasses.asdict(AttributionConfig())
    recorded = {**config, "estimate_bound": AttributionConfig().estimate_bound()}
    rebuilt = sanity._config(recorded)  # as this version's manifests record them
    assert (rebuilt.tolerance, rebuilt.completeness_tolerance) == (0.01875, 0.005)
    old = {k: v for k, v in config.items() if k != "completeness_tolerance"}
    rebuilt = sanity._config({**old, "tolerance": 0.015})
    assert rebuilt.completeness_tolerance == 0.015
    assert rebuilt.estimate_bound() == pytest.approx(0.015, rel=1e-12)
    assert sanity._config({**old, "tolerance": 0.0}).tolerance == 0.0  # no bound to take
    # Between the two (--completeness_tolerance recorded, no estimate_bound): its
    # completeness bound as recorded, its --tolerance the estimate's bound.
    between = sanity._config({**config, "tolerance": 0.015, "completeness_tolerance": 0.002})
    assert between.completeness_tolerance == 0.002
    assert between.estimate_bound() == pytest.approx(0.015, rel=1e-12)


def test_images_without_a_value_by_a_measure_are_named_with_why_in_the_json_and_verdict(
    conv_keras, tmp_path
):
    """Every image checked is accounted for per measure. An outside review's verdict
    said '9 of 12 images by Spearman and 6 of 11 by SSIM' with no word of the image
    missing from SSIM (a panorama, too thin for its windows); a flat image (x - x'
    constant over it: no Spearman, no SSIM of the input alone) and one equal to its
    baseline were left out of both counts as silently."""
    root = tmp_path / "odd"
    _add_photos(str(root), 5)
    bar = np.broadcast_to(np.linspace(40, 250, 64, dtype=np.uint8)[None, :, None], (2, 64, 3))
    write_image(root / "bar.png", np.ascontiguousarray(bar))  # 1 x 16 in the model
    write_image(root / "black.png", np.zeros((SIZE, SIZE, 3), np.uint8))  # the baseline
    write_image(root / "white.png", np.full((SIZE, SIZE, 3), 255, np.uint8))  # flat
    output = str(tmp_path / "out")
    _audit({"root": str(root)}, conv_keras, output, steps=8)
    report = sanity.run(output, images_count=8, stages=["logits"], steps=4)
    blank = "equal to its baseline, where IG is 0 whatever the model"
    flat = (
        "its input alone (x - x') is constant over its content (a flat or two-colour "
        "image): no ranks or structure to compare the maps with"
    )
    thin = "its content is under 3 pixels high or wide, too thin for SSIM's windows"
    (stage,) = report["stages"]
    assert stage["unscored"] == {
        "spearman": [
            {"image_id": "black.png", "reason": blank},
            {"image_id": "white.png", "reason": flat},
        ],
        "ssim": [
            {"image_id": "bar.png", "reason": thin},
            {"image_id": "black.png", "reason": blank},
            {"image_id": "white.png", "reason": flat},
        ],
    }
    tests = stage["reference_test"]
    assert (tests["spearman"]["images"], tests["ssim"]["images"]) == (6, 5)
    assert report["verdict"].endswith(
        f" Not counted, without a value: by both measures, 2 of 8 images (black.png: {blank}; "
        f"white.png: {flat}); by SSIM alone, 1 of 8 images (bar.png: {thin})."
    ), report["verdict"]
    written = json.loads((Path(output) / "sanity" / "sanity.json").read_text())
    assert written["stages"][0]["unscored"] == stage["unscored"]


def test_each_reason_an_image_has_no_value_is_the_one_its_measures_met():
    # Known answers per row (intact map, input alone, randomised map, content region),
    # each checked against `map_similarity`'s own NaNs: the reason said is the cause.
    rng = np.random.default_rng(2)
    maps = rng.random((3, 12, 12, 3)) + 0.1
    box, everywhere = (slice(0, 12), slice(0, 12)), np.ones((12, 12), bool)
    dots = np.zeros((12, 12), bool)
    dots[::8, ::8] = True  # 4 pixels, no 7 x 7 window holds 2
    flat, zero = np.ones((12, 12, 3)), np.zeros((12, 12, 3))
    nan_map = maps[2].copy()
    nan_map[0, 0, 0] = np.nan
    cases = [
        ((maps[0], maps[1], maps[2], (box, everywhere)), (None, None)),
        ((maps[0], maps[1], maps[2], (sanity._WHOLE, everywhere)), ("blank", "blank")),
        ((maps[0], flat, maps[2], (box, everywhere)), ("flat", "flat")),
        ((zero, maps[1], maps[2], (box, everywhere)), ("intact", "intact")),
        ((maps[0], maps[1], flat, (box, everywhere)), ("randomised", "randomised")),
        ((maps[0], maps[1], nan_map, (box, everywhere)), ("not finite", "not finite")),
        ((maps[0], maps[1], maps[2], (box, dots)), (None, "scattered")),
        (
            (maps[0][:2], maps[1][:2], maps[2][:2], ((slice(0, 2), slice(0, 12)), everywhere[:2])),
            (None, "thin"),
        ),
    ]
    for (intact, alone, randomised, region), expected in cases:
        assert sanity._why_unscored(intact, alone, randomised, region) == expected
        if expected[0] in (None, "randomised", "not finite"):  # the row's own measures
            where = region[1]
            values = sanity.map_similarity(intact[region[0]], randomised[region[0]], where)
            assert [np.isnan(v) for v in values] == [w is not None for w in expected]
    assert set(sanity._UNSCORED) == {
        "blank",
        "flat",
        "intact",
        "randomised",
        "not finite",
        "thin",
        "scattered",
    }
