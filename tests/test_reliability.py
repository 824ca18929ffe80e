"""Bad and odd inputs, numerical faults, repeatability: every input is accounted for."""

import contextlib
import dataclasses
import errno
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline import run
from pipeline.report import build_report
from tests.conftest import (
    SIZE,
    cli_args,
    dense_keras,
    launched,
    make_image_folder,
    write_image,
)
from tests.known_rows import as_older_version
from transforms import faithfulness as fa
from transforms.config import ESTIMATE_MARGIN
from transforms.sinks import read_manifest


def _save(path, img: Image.Image, fmt: str, **kwargs) -> None:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    path.write_bytes(buffer.getvalue())


@pytest.fixture
def odd_folder(tmp_path):
    """Decodable oddities and broken files, made here."""
    rng = np.random.default_rng(9)
    root = tmp_path / "odd"
    root.mkdir()
    rgb = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    _save(root / "gray.png", rgb.convert("L"), "PNG")
    _save(root / "rgba.png", rgb.convert("RGBA"), "PNG")
    _save(root / "palette.png", rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG")
    _save(
        root / "deep16.png",
        Image.fromarray(rng.integers(0, 65535, (12, 9), dtype=np.uint16)),
        "PNG",
    )
    _save(root / "cmyk.jpg", rgb.convert("CMYK"), "JPEG")
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    (root / "animated.gif").write_bytes(buffer.getvalue())
    _save(root / "bitmap.bmp", rgb, "BMP")
    _save(root / "tiny.png", Image.new("RGB", (1, 1), (9, 9, 9)), "PNG")
    _save(root / "UPPER.JPG", rgb, "JPEG")
    _save(root / "large.jpg", Image.new("RGB", (4000, 3000), (120, 30, 200)), "JPEG", quality=70)
    (root / "empty.png").write_bytes(b"")
    good = io.BytesIO()
    rgb.save(good, format="JPEG")
    (root / "truncated.jpg").write_bytes(good.getvalue()[:200])
    (root / "notes.jpg").write_text("this is not an image")
    (root / "README.txt").write_text("BMW service notes\n")  # a BMP's signature, 'BM'
    qoi = io.BytesIO()
    rgb.save(qoi, format="QOI")
    (root / "cut.qoi").write_bytes(qoi.getvalue()[:-20])  # IndexError in Pillow's decoder
    (root / "header.tif").write_bytes(b"II*\0\x08\0\0\0")  # a TIFF header, no image
    return root


def test_odd_images_are_processed_and_broken_ones_reported(odd_folder, linear_keras, tmp_path):
    args = cli_args(
        dataset=odd_folder,
        model=linear_keras,
        output=tmp_path / "out",
        steps=2,
        attributions="none",
    )
    manifest = run(args, save_main_session=False)
    results = pd.read_parquet(tmp_path / "out" / "results")
    errors = pd.read_parquet(tmp_path / "out" / "errors").set_index("image_id")
    assert sorted(results.image_id) == sorted(
        [
            "gray.png",
            "rgba.png",
            "palette.png",
            "deep16.png",
            "cmyk.jpg",
            "animated.gif",
            "bitmap.bmp",
            "tiny.png",
            "UPPER.JPG",
            "large.jpg",
        ]
    )
    assert sorted(errors.index) == [
        "README.txt",
        "cut.qoi",
        "empty.png",
        "header.tif",
        "notes.jpg",
        "truncated.jpg",
    ]
    assert (errors.stage == "decode").all()
    assert errors.loc["empty.png", "error"] == "empty file (0 bytes)"
    assert "not an image" in errors.loc["notes.jpg", "error"]
    # This was 'broken image: Truncated File Read'.
    assert errors.loc["README.txt", "error"] == (
        "not an image Pillow can read (18 bytes of text, starting with BMP's signature)"
    )
    assert "broken image" in errors.loc["truncated.jpg", "error"]
    # These were 'IndexError: index out of range' and 'not an image Pillow can read'.
    assert errors.loc["cut.qoi", "error"] == (
        "broken image: Pillow cannot decode this QOI file (IndexError: index out of range)"
    )
    assert errors.loc["header.tif", "error"] == (
        "broken image: Pillow cannot open this TIFF file (Missing dimensions)"
    )
    counts = manifest["counts"]
    assert counts["inputs"] == 16 == counts["images_with_rows"] + counts["images_with_errors"]
    assert manifest["all_inputs_accounted_for"]


def test_pillows_warnings_on_corrupt_metadata_do_not_reach_the_terminal(linear_keras, tmp_path):
    # A JPEG whose EXIF points past its end decodes (taken as stored); a TIFF header alone
    # is an error record. Pillow warned on each ('UserWarning: Corrupt EXIF data.
    # Expecting to read 2 bytes but only got 0.'), and the job's stderr showed it, with
    # Pillow's file and line, once per file and unrelated to any row.
    root = tmp_path / "photos"
    root.mkdir()
    rgb = Image.fromarray(np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    _save(root / "good.jpg", rgb, "JPEG")
    _save(root / "exif.jpg", rgb, "JPEG", exif=b"Exif\0\0II*\0\x40\0\0\0")
    (root / "header.tif").write_bytes(b"II*\0\x08\0\0\0")
    out = tmp_path / "out"
    flags = cli_args(dataset=root, model=linear_keras, output=out, steps=2, faithfulness="none")
    done = subprocess.run(
        launched([sys.executable, "-m", "pipeline", *flags]),
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "UserWarning" not in done.stderr and "EXIF" not in done.stderr, done.stderr
    assert sorted(pd.read_parquet(out / "results").image_id) == ["exif.jpg", "good.jpg"]
    errors = pd.read_parquet(out / "errors")
    assert errors.image_id.tolist() == ["header.tif"]
    assert errors.error.tolist() == [
        "broken image: Pillow cannot open this TIFF file (Missing dimensions)"
    ]


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory):
    """F_j = (j + 1) * sum sqrt(x): infinite gradient at x = 0; NaN outputs for white images."""
    import tensorflow as tf

    class Fragile(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            total = tf.reduce_sum(tf.sqrt(x), axis=[1, 2, 3])[:, None] * tf.range(1.0, 6.0)
            white = tf.reduce_mean(x, axis=[1, 2, 3])[:, None] > 0.95
            return tf.where(white, tf.fill(tf.shape(total), float("nan")), total)

    path = str(tmp_path_factory.mktemp("models") / "fragile")
    tf.saved_model.save(Fragile(), path)
    return path


def test_an_image_the_model_raises_on_is_an_error_record_and_its_batch_goes_on(tmp_path):
    import tensorflow as tf

    class Asserting(tf.Module):  # refuses a green image (and the path points near it)
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            mean = tf.reduce_mean(x, axis=[1, 2])
            green = tf.reduce_any((mean[:, 1] > 0.9) & (mean[:, 0] < 0.1))
            check = tf.debugging.Assert(tf.logical_not(green), ["a green image"])
            with tf.control_dependencies([check]):
                return tf.reduce_sum(x * x, axis=[1, 2]) @ tf.eye(3, 5)

    model = str(tmp_path / "asserting")
    tf.saved_model.save(Asserting(), model)
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(4)
    for i in range(3):
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i}.png")
    Image.new("RGB", (SIZE, SIZE), (0, 255, 0)).save(root / "green.png")
    args = cli_args(dataset=root, model=model, output=tmp_path / "out", steps=4, batch_size=2)
    manifest = run([*args, "--input_range", "0,1"], save_main_session=False)
    results = pd.read_parquet(tmp_path / "out" / "results")
    errors = pd.read_parquet(tmp_path / "out" / "errors")
    assert sorted(results.image_id) == ["0.png", "1.png", "2.png"]
    assert errors.image_id.tolist() == ["green.png"] and errors.stage.tolist() == ["attribute"]
    assert errors.error[0].startswith("the model failed on this image: InvalidArgumentError: ")
    assert "a green image" in errors.error[0]
    assert manifest["all_inputs_accounted_for"]


def test_an_image_with_one_failed_target_is_one_error_and_no_row(tmp_path):
    import tensorflow as tf

    class HalfFragile(tf.Module):  # class 0: sum x (fine); class 1: sum sqrt x
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            return tf.stack([tf.reduce_sum(x, [1, 2, 3]), tf.reduce_sum(tf.sqrt(x), [1, 2, 3])], 1)

    model = str(tmp_path / "half")
    tf.saved_model.save(HalfFragile(), model)
    root = tmp_path / "images"
    pixels = np.random.default_rng(5).integers(1, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    write_image(root / "fine.png", pixels)
    pixels[:2] = 0  # sqrt's slope is infinite at 0: class 1's gradient, not class 0's
    write_image(root / "zeros.png", pixels)
    args = cli_args(dataset=root, model=model, output=tmp_path / "out", steps=4)
    flags = ["--method", "gausslegendre", "--target", "top_k", "--top_k", "2"]
    manifest = run([*args, *flags, "--input_range", "0,1"], save_main_session=False)
    results = pd.read_parquet(tmp_path / "out" / "results")
    errors = pd.read_parquet(tmp_path / "out" / "errors")
    assert sorted(results.image_id) == ["fine.png", "fine.png"]
    assert errors.image_id.tolist() == ["zeros.png"]
    assert errors.error[0].startswith("NaN or infinite score or gradient for class 1")
    assert manifest["all_inputs_accounted_for"] and manifest["rows_match_target_mode"]


def test_nan_and_infinite_values_become_error_records(nan_model, tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(10)
    Image.fromarray(rng.integers(1, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / "fine.png")
    with_zeros = rng.integers(1, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    with_zeros[:4] = 0  # sqrt has an infinite slope at 0
    Image.fromarray(with_zeros).save(root / "zeros.png")
    Image.new("RGB", (SIZE, SIZE), (255, 255, 255)).save(root / "white.png")
    # Gauss-Legendre: no node at a = 0, where sqrt's slope is infinite for every image.
    args = cli_args(dataset=root, model=nan_model, output=tmp_path / "out", steps=4)
    manifest = run([*args, "--method", "gausslegendre"], save_main_session=False)
    results = pd.read_parquet(tmp_path / "out" / "results")
    errors = pd.read_parquet(tmp_path / "out" / "errors").set_index("image_id")
    assert results.image_id.tolist() == ["fine.png"]
    assert np.isfinite(np.asarray(results.attributions[0])).all()
    assert errors.loc["white.png", "stage"] == "predict"
    assert "NaN or infinite" in errors.loc["white.png", "error"]
    assert errors.loc["zeros.png", "stage"] == "attribute"
    assert "NaN or infinite" in errors.loc["zeros.png", "error"]
    assert manifest["all_inputs_accounted_for"]
    # No NaN hides in any numeric column.
    numeric = results.select_dtypes("number").drop(columns=["label"])
    assert np.isfinite(numeric.to_numpy(dtype=float)).all()
    # The default rule takes the gradient at the black baseline too: every image
    # fails there, each with a reason that says so.
    args = cli_args(dataset=root, model=nan_model, output=tmp_path / "default", steps=4)
    run(args, save_main_session=False)
    errors = pd.read_parquet(tmp_path / "default" / "errors").set_index("image_id")
    assert sorted(errors.index) == ["fine.png", "white.png", "zeros.png"]
    assert "takes the gradient at the baseline itself" in errors.loc["fine.png", "error"]


def test_a_nan_error_says_where_on_the_path_the_model_gave_it(tmp_path):
    """A model finite at the black baseline and at the image, NaN half-way (mean pixel
    in (0.3, 0.4)) or at white: its error says where, and advises gausslegendre only
    where the rule's own node at alpha = 0 met it."""
    import tensorflow as tf

    class Holed(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            mean = tf.reduce_mean(x, axis=[1, 2, 3])[:, None]
            scores = tf.reduce_sum(x * x, axis=[1, 2]) @ tf.eye(3, 4)
            holed = ((mean > 0.3) & (mean < 0.4)) | (mean > 0.95)
            return tf.where(holed, tf.fill(tf.shape(scores), float("nan")), scores)

    model = str(tmp_path / "holed")
    tf.saved_model.save(Holed(), model)
    root = tmp_path / "images"
    write_image(root / "bright.png", np.full((SIZE, SIZE, 3), 200, np.uint8))
    write_image(root / "dark.png", np.full((SIZE, SIZE, 3), 50, np.uint8))
    for baseline in ("black", "white"):
        flags = cli_args(dataset=root, model=model, output=tmp_path / baseline, steps=4)
        run([*flags, "--baseline", baseline], save_main_session=False)
    errors = pd.read_parquet(tmp_path / "black" / "errors").set_index("image_id").error
    assert errors.to_dict() == {
        "bright.png": "NaN or infinite score or gradient for class 0 on the path from the "
        "baseline to the image (alpha > 0)"
    }
    assert pd.read_parquet(tmp_path / "black" / "results").image_id.tolist() == ["dark.png"]
    errors = pd.read_parquet(tmp_path / "white" / "errors").set_index("image_id").error
    assert sorted(errors.index) == ["bright.png", "dark.png"]
    assert errors["dark.png"] == (
        "NaN or infinite score for class 0 of the baseline itself (--baseline white; another "
        "baseline may avoid it)"
    )


def test_same_inputs_and_flags_give_the_same_rows(image_folder, linear_keras, tmp_path):
    flags = cli_args(
        dataset=image_folder["root"], model=linear_keras, steps=3, baseline="noise,blur", seed=7
    )
    run([*flags, "--output", str(tmp_path / "a")], save_main_session=False)
    run([*flags, "--output", str(tmp_path / "b")], save_main_session=False)
    a = pd.read_parquet(tmp_path / "a" / "results").sort_values("image_id", ignore_index=True)
    b = pd.read_parquet(tmp_path / "b" / "results").sort_values("image_id", ignore_index=True)
    pd.testing.assert_frame_equal(a, b)
    assert (a.baseline == "noise,blur").all()
    run([*flags[:-1], "8", "--output", str(tmp_path / "c")], save_main_session=False)
    c = pd.read_parquet(tmp_path / "c" / "results").sort_values("image_id", ignore_index=True)
    assert not np.allclose(np.stack(a.attributions), np.stack(c.attributions))


@pytest.fixture(scope="module")
def conv_keras(tmp_path_factory) -> str:
    """A `.keras` file of a small convolutional network (ReLU, tanh): its gradients,
    unlike a linear model's, depend on the point, and its float sums on the call's size."""
    import keras

    keras.utils.set_random_seed(5)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.Dense(8, activation="tanh")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    path = str(tmp_path_factory.mktemp("models") / "conv.keras")
    model.save(path)
    return path


# What a row is beyond its floats: equal whatever the batch sizes.
_DISCRETE = ["image_id", "file_name", "label", "predicted_class", "target_class", "steps"]


def test_reruns_are_bit_identical_at_a_fixed_path_batch_size_and_close_at_others(
    image_folder, conv_keras, tmp_path
):
    # README, Reliability: bit-identical reruns need a fixed --path_batch_size (auto
    # picks 8 or 16 by timing); other batch sizes change the floats at float32 rounding.
    flags = cli_args(
        dataset=image_folder["root"], model=conv_keras, steps=5, baseline="black,noise", seed=7
    )

    def rows(name: str, *more: str) -> pd.DataFrame:
        run([*flags, *more, "--output", str(tmp_path / name)], save_main_session=False)
        frame = pd.read_parquet(tmp_path / name / "results")
        return frame.sort_values("image_id", ignore_index=True)

    a = rows("a", "--path_batch_size", "8")
    pd.testing.assert_frame_equal(rows("b", "--path_batch_size", "8"), a)
    c = rows("c", "--path_batch_size", "3", "--batch_size", "1")
    pd.testing.assert_frame_equal(c[_DISCRETE], a[_DISCRETE])
    # The AUCs, their random controls' too: seeded by the image, not its place in a batch.
    close = ["target_score", "baseline_score", "attribution_sum", *fa.COLUMNS[:4]]
    np.testing.assert_allclose(c[close].to_numpy(), a[close].to_numpy(), rtol=1e-5, atol=1e-7)
    for curve in fa.COLUMNS[4:]:
        np.testing.assert_allclose(np.stack(c[curve]), np.stack(a[curve]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        np.stack(c.attributions), np.stack(a.attributions), rtol=1e-4, atol=1e-7
    )


def test_a_batch_of_one_image_gives_the_rows_a_batch_of_two_does(
    image_folder, conv_keras, tmp_path
):
    # docs/reliability.md: a model call of one row took another kernel (a
    # matrix-vector product) than the same row in a call of two, and F(x), p(x) and
    # the AUCs of --batch_size 1 (or of a last batch of one image) differed in their
    # last bits, far more for a score that is a small difference of large terms. A
    # lone row now runs as two: same shapes, same kernels, the same rows.
    flags = cli_args(
        dataset=image_folder["root"], model=conv_keras, steps=5, path_batch_size=8, seed=7
    )

    def rows(name: str, batch_size: int) -> pd.DataFrame:
        output = str(tmp_path / name)
        run([*flags, "--batch_size", str(batch_size), "--output", output], save_main_session=False)
        return pd.read_parquet(tmp_path / name / "results").sort_values(
            "image_id", ignore_index=True
        )

    one, two = rows("one", 1), rows("two", 2)
    # F(x), F(x') and p(x): forward calls of the images alone, of two rows each.
    exact = ["target_score", "baseline_score", "top_k_probs"]
    pd.testing.assert_frame_equal(one[exact], two[exact], check_exact=True)
    # The rest as the path's calls allow (their points are grouped by batch). The
    # completeness gap, sum(A) - (F(x) - F(x')), is a difference of terms about 200x
    # its size: its last bits are theirs, so it is compared on their scale (relative
    # 1e-5 of it alone failed on one CPU: -0.0059434698 against -0.0059435308).
    scale = (two.target_score - two.baseline_score).abs().to_numpy()
    gaps = ["completeness_delta", "relative_delta"]
    np.testing.assert_allclose(
        one.completeness_delta, two.completeness_delta, atol=1e-6 * scale.max()
    )
    np.testing.assert_allclose(one.relative_delta, two.relative_delta, atol=1e-6)
    pd.testing.assert_frame_equal(one.drop(columns=gaps), two.drop(columns=gaps))


def test_a_path_call_of_one_point_gives_the_bits_of_that_point_in_a_call_of_two(conv_keras):
    # The engine's calls of one point (a refinement, a last chunk) ran one row: on
    # CPUs another kernel than the same point among others, and other last bits.
    from transforms.tf_model import Classifier, resolve_model

    model = Classifier(resolve_model(conv_keras), jit_compile=False)
    rng = np.random.default_rng(11)
    image = rng.uniform(size=(1, SIZE, SIZE, 3)).astype(np.float32)
    ref = np.zeros_like(image)
    alphas, targets = np.array([0.3, 0.8], np.float32), np.array([2, 2])
    pair = model.integrand_fn("raw")(image, ref, np.array([0, 0]), alphas, targets)
    lone = model.integrand_fn("raw")(image, ref, np.array([0]), alphas[:1], targets[:1])
    for one, two in zip(lone, pair, strict=True):
        np.testing.assert_array_equal(one, two[:1])
    images, refs = np.repeat(image, 2, axis=0), np.repeat(ref, 2, axis=0)
    pair = model.score_grad_fn("raw")(images, refs, alphas, targets)
    lone = model.score_grad_fn("raw")(image, ref, alphas[:1], targets[:1])
    for one, two in zip(lone, pair, strict=True):
        np.testing.assert_array_equal(one, two[:1])
    pair = model.score_fn("raw")(images, refs, alphas, targets)
    np.testing.assert_array_equal(
        model.score_fn("raw")(image, ref, alphas[:1], targets[:1]), pair[:1]
    )


class _FailOnce:
    """Makes the first calls of a method raise, as a worker dying mid-bundle would."""

    def __init__(self, method, times=1):
        self.left = times

        def failing(handler, *args, **kwargs):
            if self.left > 0:
                self.left -= 1
                raise RuntimeError("injected worker failure")
            return method(handler, *args, **kwargs)

        self.method = failing


def test_a_failed_bundle_is_retried_without_duplicates(
    image_folder, linear_keras, tmp_path, monkeypatch
):
    from transforms.attribution import IGModelHandler

    fault = _FailOnce(IGModelHandler.run_inference)
    monkeypatch.setattr(IGModelHandler, "run_inference", fault.method)
    # The bundle-based DirectRunner retries a failed bundle like Dataflow does.
    args = cli_args(dataset=image_folder["root"], model=linear_keras, output=tmp_path / "out")
    manifest = run(
        ["--runner", "BundleBasedDirectRunner", *args, "--steps", "2"], save_main_session=False
    )
    assert fault.left == 0  # the fault did fire
    results = pd.read_parquet(tmp_path / "out" / "results")
    assert sorted(results.image_id) == sorted(image_folder["pixels"])  # each once
    assert manifest["counts"]["rows"] == 4 and manifest["all_inputs_accounted_for"]


def _made_once(tmp_path_factory, name: str, model: str, **flags: object) -> dict:
    """What a run made once a module needs: `image_folder`'s images in a folder of its
    own (`["root"]`, `["pixels"]`), `["args"](output)` the run's flags into `output`
    (`flags`, with those images and `model`), `["out"]` the folder to make it in, and
    `["copy"](output)` putting a copy of what the run left there."""
    where = tmp_path_factory.mktemp(name)
    folder = make_image_folder(where / "images")

    def args(output) -> list[str]:
        return cli_args(dataset=folder["root"], model=model, output=output, **flags)

    def copy(output) -> None:
        shutil.copytree(where / "out", output)

    return {**folder, "args": args, "out": where / "out", "copy": copy}


@pytest.fixture(scope="module")
def one_died_run(tmp_path_factory, linear_keras) -> dict:
    """`image_folder`'s images and a run of them whose every model batch failed, made
    once a module (`_made_once`: `["args"](output)` are its flags with `output`;
    `["copy"](output)` puts a copy of the run's folder there, as the failed run left it)."""
    from transforms.attribution import IGModelHandler

    made = _made_once(tmp_path_factory, "died_run", linear_keras, steps=2)
    fault = _FailOnce(IGModelHandler.run_inference, times=1000)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(IGModelHandler, "run_inference", fault.method)
        with pytest.raises(Exception, match="injected worker failure"):
            run(made["args"](made["out"]), save_main_session=False)
    return made


@pytest.fixture
def died_run(one_died_run, tmp_path) -> list[str]:
    """`one_died_run`'s failed run copied to tmp_path/out; returns its flags."""
    one_died_run["copy"](tmp_path / "out")
    return one_died_run["args"](tmp_path / "out")


def test_a_failed_run_leaves_no_rows_and_a_rerun_completes(died_run, one_died_run, tmp_path):
    assert pd.read_parquet(tmp_path / "out" / "results").empty  # its schema-only file alone
    # The manifest written at the start said "running" (as a killed run's); it says how
    # the run ended: the error line's words (`error: the run failed: ...`).
    failed = read_manifest(str(tmp_path / "out"))
    assert (failed["status"], failed["reason"]) == (
        "failed",
        "RuntimeError: injected worker failure [while running 'Attribute/BeamML_RunInference']",
    )
    assert failed["start_time"] < failed["end_time"] and "counts" not in failed
    manifest = run([*died_run, "--overwrite"], save_main_session=False)
    results = pd.read_parquet(tmp_path / "out" / "results")
    assert sorted(results.image_id) == sorted(one_died_run["pixels"])
    assert manifest["all_inputs_accounted_for"]


def test_reading_a_run_that_did_not_finish_warns_that_its_rows_are_not_there(died_run, tmp_path):
    """Its results/ reads as an empty run; the read says why, and a finished run's does not."""
    from transforms import results

    out = str(tmp_path / "out")
    with pytest.warns(UserWarning, match=r"has not finished \(its manifest says 'failed'") as said:
        assert results.read_results(out).empty
    assert str(said[0].message).endswith(
        "(its manifest says 'failed': it failed: RuntimeError: injected worker failure [while "
        "running 'Attribute/BeamML_RunInference']): results/ holds none of its rows, only those "
        "of a run it resumes, if any. --resume finishes it, keeping the rows of every batch "
        "it finished."
    )
    assert said[0].filename == __file__  # points at the caller's line
    run([*died_run, "--overwrite"], save_main_session=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(results.read_results(out)) == 4
    # As an --overwrite leaves the run it replaces while deleting its files.
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    (tmp_path / "out" / "manifest.json").write_text(json.dumps({**manifest, "status": "replacing"}))
    with pytest.warns(UserWarning, match="'replacing': an --overwrite is deleting its files"):
        assert len(results.read_results(out)) == 4  # what is left of them


def test_arrow_reads_of_a_run_that_did_not_finish_warn_as_pandas_reads_do(died_run, tmp_path):
    """read_table, the reader for large runs, read it as an empty table without a word;
    each read warns once, and the report, whose page says so, adds no warning."""
    from pipeline.report import build_report
    from transforms import results

    out = str(tmp_path / "out")
    for read in (results.read_table, results.read_results):
        with pytest.warns(
            UserWarning, match=r"has not finished \(its manifest says 'failed'"
        ) as said:
            assert len(read(out)) == 0
        assert [w.filename for w in said] == [__file__]  # once, at the caller's line
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert "This run did not finish" in build_report(out)
    assert not [w for w in seen if "has not finished" in str(w.message)]


def test_read_row_of_a_run_that_did_not_finish_warns_at_the_callers_line(died_run, tmp_path):
    # The warning named read_row's own line in transforms/results.py.
    from transforms import results

    with pytest.warns(UserWarning, match="has not finished") as said:
        with pytest.raises(KeyError, match="No result row for 'cat1.png'"):
            results.read_row(str(tmp_path / "out"), "cat1.png")
    assert [w.filename for w in said] == [__file__]


def test_the_sanity_check_of_a_run_that_did_not_finish_refuses_in_one_line(
    died_run, tmp_path, capsys
):
    """It printed Python's warning (file, line and source) and then blamed the inputs:
    'has no result rows (every input failed, or the run wrote none)'."""
    from pipeline import sanity

    out = str(tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    # The run that failed, then as a killed one leaves it (or one still running).
    for status, said in (
        (
            "failed",
            f"error: {out!r} holds a run that did not finish (its manifest says 'failed': it "
            "failed: RuntimeError: injected worker failure [while running "
            "'Attribute/BeamML_RunInference']), whose rows are not in its results/; run the "
            "check once --resume has finished it.",
        ),
        (
            "running",
            f"error: {out!r} holds a run that has not finished (its manifest says 'running': "
            "still running, or killed), whose rows are not in its results/ yet; run the check "
            "when it has ended (a killed run ends with --resume).",
        ),
    ):
        (tmp_path / "out" / "manifest.json").write_text(json.dumps({**manifest, "status": status}))
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert sanity.main(["--input", out]) == 2
        assert not [w for w in seen if "has not finished" in str(w.message)]
        assert capsys.readouterr().err.splitlines()[-1:] == [said]
        assert not (tmp_path / "out" / "sanity").exists()


def test_the_report_of_a_run_that_died_says_it_did_not_finish(died_run, tmp_path):
    from pipeline.report import build_report

    page = re.sub(r"<[^>]+>", " ", build_report(str(tmp_path / "out")))
    text = re.sub(r"\s+", " ", html.unescape(page))
    assert (
        "This run did not finish (status failed): it failed: RuntimeError: injected worker "
        "failure [while running 'Attribute/BeamML_RunInference']. Its manifest has no counts"
    ) in text
    assert "it was killed" not in text
    assert "? inputs" in text and "? errors" in text  # unknown, not 0
    assert "All inputs accounted for unknown: the run did not finish" in text
    assert "No result rows: the run did not finish." in text
    assert "Counts – (not recorded: the run did not finish)" in text  # was an empty cell
    assert "every input failed" not in text and "No input failed" not in text


def test_resume_skips_images_with_rows_and_processes_the_rest(image_folder, linear_keras, tmp_path):
    root = tmp_path / "growing"
    rng = np.random.default_rng(11)
    for name in ("a.png", "b.png"):
        write_image(root / name, rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    (root / "broken.png").write_bytes(b"")
    args = cli_args(dataset=root, model=linear_keras, output=tmp_path / "out", steps=2)
    run(args, save_main_session=False)
    first = {f.name for f in (tmp_path / "out" / "results").glob("*.parquet")}
    # More images arrive (or the first run died before them): resume does only those,
    # and retries the earlier errors: one mended (a row now), one still broken.
    for name in ("c.png", "d.png"):
        write_image(root / name, rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    write_image(root / "broken.png", rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    (root / "still.png").write_bytes(b"")
    manifest = run([*args, "--resume"], save_main_session=False)
    counts = manifest["counts"]
    assert counts["skipped_done_before"] == 2 and counts["rows"] == 3 and counts["errors"] == 1
    assert manifest["all_inputs_accounted_for"] and manifest["resumed"]
    results = pd.read_parquet(tmp_path / "out" / "results")
    assert sorted(results.image_id) == ["a.png", "b.png", "broken.png", "c.png", "d.png"]
    assert first <= {f.name for f in (tmp_path / "out" / "results").glob("*.parquet")}
    errors = pd.read_parquet(tmp_path / "out" / "errors")
    assert errors.image_id.tolist() == ["still.png"]  # the mended file's record is gone


def test_a_resumed_runs_manifest_and_report_keep_how_each_earlier_run_made_its_rows(
    linear_keras, tmp_path
):
    # Batch sizes, --jit_compile and the package versions may change on --resume;
    # the manifest held the last run's alone, so the first rows' were lost. The
    # report showed the last run's times and settings only.
    root = tmp_path / "growing"
    rng = np.random.default_rng(12)
    args = cli_args(dataset=root, model=linear_keras, output=tmp_path / "out", steps=2)
    first_flags = ["--batch_size", "2", "--path_batch_size", "4", "--jit_compile", "off"]
    runs = []
    for name, more in (("a.png", first_flags), ("b.png", ["--resume"]), ("c.png", ["--resume"])):
        write_image(root / name, rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
        runs.append(run([*args, *more], save_main_session=False))
    first, second, last = runs
    assert first["jit_compile"] == "off" and last["jit_compile"] == "auto"
    assert "earlier_runs" not in first or first["earlier_runs"] == []
    assert [r["run_id"] for r in last["earlier_runs"]] == [first["run_id"], second["run_id"]]
    kept = last["earlier_runs"][0]
    for key in ("command", "start_time", "end_time", "versions", "batch_size", "jit_compile"):
        assert kept[key] == first[key], key
    assert kept["path_batch_size"] == 4 and kept["status"] == "complete"
    assert kept["counts"] == first["counts"] and kept["results_prefix"] == "part"
    files = {f.name for f in (tmp_path / "out" / "results").glob("*.parquet")}
    for each in (*last["earlier_runs"], last):
        assert any(f.startswith(each["results_prefix"] + "-") for f in files), each
    page = build_report(str(tmp_path / "out"), gallery=0)
    section = page.split('<section id="summary">')[1].split("</section>")[0]
    summary = " ".join(re.sub(r"<[^>]+>", " ", section).split())
    assert "Started / ended (this run)" in summary
    second_prefix = second["results_prefix"]
    assert (
        f"Earlier runs (resumed) {first['start_time']} – {first['end_time']}: 1 row in "
        f"results/part-[0-9]*.parquet (batch_size 2, path_batch_size 4, jit_compile off); "
        f"{second['start_time']} – {second['end_time']}: 1 row in "
        f"results/{second_prefix}-*.parquet (batch_size 8, path_batch_size auto, "
        "jit_compile auto)"
    ) in summary, summary


def test_a_resume_of_a_run_made_before_results_prefix_records_its_files_as_part(done_run, tmp_path):
    # A version before "results_prefix" wrote its files as part-*: a run that resumed
    # none is kept with that prefix, for the page to find its rows.
    output = tmp_path / "out"
    done_run["copy"](output)
    manifest = json.loads((output / "manifest.json").read_text())
    del manifest["results_prefix"]
    (output / "manifest.json").write_text(json.dumps(manifest))
    resumed = run([*done_run["args"](output), "--steps", "2", "--resume"], save_main_session=False)
    assert resumed["earlier_runs"][-1]["results_prefix"] == "part"


def test_a_resume_leaves_none_of_the_earlier_runs_temp_files(done_run, tmp_path):
    # A killed run's checkpoints (here of an image with rows, so none is salvaged), a
    # partial file and a Beam temp folder: a completed resume leaves no .tmp/ behind.
    import pyarrow.parquet as pq

    output = tmp_path / "out"
    done_run["copy"](output)
    run_id = json.loads((output / "manifest.json").read_text())["run_id"]
    (part,) = (p for p in (output / "results").glob("*.parquet") if pq.read_metadata(p).num_rows)
    left = {
        output / ".tmp" / "checkpoints" / run_id / "0123.parquet": part.read_bytes(),
        output / ".tmp" / f"{'0123abcd' * 4}.partial": b"cut",
        output / ".tmp" / "beam-temp-part-0123" / "shard": b"cut",
    }
    for path, data in left.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    resumed = run([*done_run["args"](output), "--steps", "2", "--resume"], save_main_session=False)
    assert resumed["status"] == "complete"
    assert not (output / ".tmp").exists()


def test_resume_knows_a_folder_by_another_name(mapped_run, linear_keras, tmp_path):
    """A symlink to the run's --dataset folder is the same folder: its rows are kept."""
    root, link, out = mapped_run["root"], tmp_path / "link", tmp_path / "out"
    link.symlink_to(root, target_is_directory=True)
    mapped_run["copy"](out)
    first = json.loads((out / "manifest.json").read_text())
    assert first["dataset"] == str(root) and first["status"] == "complete"
    args = [*cli_args(dataset=link, model=linear_keras, output=out, steps=2), "--resume"]
    again = run(args, save_main_session=False)
    assert again["counts"]["skipped_done_before"] == first["counts"]["rows"] > 0
    assert again["counts"]["rows"] == 0 and again["dataset"] == str(link)
    other = tmp_path / "copy"
    shutil.copytree(root, other)  # the same files in another folder: another dataset
    args = [*cli_args(dataset=other, model=linear_keras, output=out, steps=2), "--resume"]
    with pytest.raises(ValueError, match="differs in --dataset"):
        run(args, save_main_session=False)


@pytest.mark.parametrize(
    "before, now, same",
    [
        ("gs://bucket/photos", "gs://bucket/photos/", True),
        ("gs://bucket/photos/", "gs://bucket/photos", True),
        ("gs://bucket/photos", "gs://bucket/photos2", False),
    ],
)
def test_resume_knows_a_gs_folder_by_its_name_with_or_without_a_slash(
    before, now, same, done_run, tmp_path
):
    # A local --dataset is recorded as its absolute path, 'imgs/' as 'imgs'; a gs://
    # one as typed, so resuming 'gs://b/photos' as 'gs://b/photos/' (the same objects,
    # the same image ids) was refused: "differs in --dataset". No network here: the
    # run's manifest and the resumed job name the gs:// folders, the rows are local.
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.main import _prepare
    from pipeline.options import AuditOptions
    from pipeline.resume import resume_state
    from transforms.datasource import FolderSource

    output = tmp_path / "out"
    done_run["copy"](output)
    options = PipelineOptions([*done_run["args"](output), "--steps", "2", "--resume"])
    job = _prepare(options, options.view_as(AuditOptions))  # its local --dataset, at launch
    job = dataclasses.replace(job, source=FolderSource(now), input_ids=None)
    manifest = json.loads((output / "manifest.json").read_text())
    (output / "manifest.json").write_text(json.dumps({**manifest, "dataset": before}))
    if same:
        done, _, _ = resume_state(job)
        assert done == set(done_run["pixels"])
    else:
        with pytest.raises(ValueError, match=r"differs in --dataset \(earlier run: "):
            resume_state(job)


def test_a_resume_read_of_a_gs_output_holding_no_run_says_no_earlier_run(gcs_stub):
    # The read under the lock (and at launch) got the storage client's NotFound, no
    # OSError, and said "cannot read the manifest.json ...; make it readable".
    from pipeline.resume import earlier_manifest

    with pytest.raises(ValueError) as caught:
        earlier_manifest("gs://bucket/run")
    assert str(caught.value) == (
        "--resume: no earlier run in --output 'gs://bucket/run' (no manifest.json, which a "
        "run writes as it starts); run without --resume to start one."
    )


def test_a_resume_read_of_a_gs_manifest_the_credentials_may_not_read_says_the_fix(gcs_stub):
    # It said Google's "403 GET http://...: ..." with the request's URL, and "make it
    # readable", which a gs:// object is by the credentials' access.
    from pipeline.resume import earlier_manifest

    gcs_stub.objects["run/manifest.json"] = b"{}"
    gcs_stub.forbidden.add("run/manifest.json")
    with pytest.raises(ValueError) as caught:
        earlier_manifest("gs://bucket/run")
    said = str(caught.value)
    assert said.startswith(
        "--resume: cannot read the manifest.json in --output 'gs://bucket/run' ([Errno 13] "
        "Permission denied (stub@stub.iam.gserviceaccount.com does not have "
    ), said
    assert said.endswith(
        "'gs://bucket/run/manifest.json'); the Google Cloud credentials in use need read "
        "access to it (roles/storage.objectViewer on its bucket; `gcloud auth "
        "application-default login` or GOOGLE_APPLICATION_CREDENTIALS for others), then run "
        "the same command again."
    ), said


def test_a_resume_of_gs_results_the_credentials_may_not_read_or_list_says_the_fix(
    gcs_stub, folder_run
):
    # Refused, a results file's read said Google's "403 GET http://...: ..." and to move
    # the file away or start over; the listing's refusal, Beam's BeamIOError (an
    # OSError), read as "cannot write there while readying it", Beam's nested reprs.
    from pipeline.options import ConfigError
    from pipeline.resume import _done_ids

    output = Path(folder_run["output"])
    for path in filter(Path.is_file, output.rglob("*")):
        gcs_stub.objects[f"run/{path.relative_to(output)}"] = path.read_bytes()
    shard = sorted(n for n in gcs_stub.objects if n.startswith("run/results/"))[-1]
    gcs_stub.forbidden.add(shard)
    fix = (
        "the Google Cloud credentials in use need read access to it (roles/storage.objectViewer "
        "on its bucket; `gcloud auth application-default login` or "
        "GOOGLE_APPLICATION_CREDENTIALS for others), then run the same command again."
    )
    with pytest.raises(ConfigError) as caught:
        _done_ids("gs://bucket/run")
    said = str(caught.value)
    assert said.startswith(
        f"--resume: cannot read 'gs://bucket/{shard}' of the earlier run ([Errno 13] "
        "Permission denied (stub@stub.iam.gserviceaccount.com does not have "
    ), said
    assert said.endswith(f"'gs://bucket/{shard}'); {fix}") and "http://" not in said, said
    gcs_stub.unlistable = True
    with pytest.raises(ConfigError) as caught:
        _done_ids("gs://bucket/run")
    said = str(caught.value)
    assert said.startswith(
        "--resume: cannot list the results of the earlier run in --output 'gs://bucket/run' "
        "([Errno 13] Permission denied (stub@stub.iam.gserviceaccount.com does not have "
        "storage.objects.list access"
    ), said
    assert said.endswith(f"'gs://bucket/run/results/'); {fix}"), said


def test_resume_after_a_run_that_died(died_run, one_died_run, tmp_path):
    left = list((tmp_path / "out" / ".tmp").rglob("*"))
    manifest = run([*died_run, "--resume"], save_main_session=False)
    assert left and not (tmp_path / "out" / ".tmp").exists()  # its temp folders, cleared
    assert manifest["counts"]["skipped_done_before"] == 0 and manifest["status"] == "complete"
    assert sorted(pd.read_parquet(tmp_path / "out" / "results").image_id) == sorted(
        one_died_run["pixels"]
    )


@pytest.fixture(scope="module")
def done_run(tmp_path_factory, linear_keras):
    """`image_folder`'s images and a finished run of them (`--attributions none
    --steps 2`), made once a module (`_made_once`): `done_run["args"](output)` are its
    flags, with `output`, bar `--steps`; `done_run["copy"](output)` puts a copy of the
    run there."""
    made = _made_once(tmp_path_factory, "done_run", linear_keras, attributions="none")
    run([*made["args"](made["out"]), "--steps", "2"], save_main_session=False)
    return made


@pytest.fixture(scope="module")
def mapped_run(tmp_path_factory, linear_keras):
    """`image_folder`'s images and a finished run of them with their maps (`--steps 2`),
    made once a module (`_made_once`): `mapped_run["args"](output)` are its flags, with
    `output`; `mapped_run["copy"](output)` puts a copy of the run there."""
    made = _made_once(tmp_path_factory, "mapped_run", linear_keras, steps=2)
    run(made["args"](made["out"]), save_main_session=False)
    return made


@pytest.mark.parametrize(
    "first, second, message",
    [
        ([], ["--steps", "3"], r"differs in --steps \(earlier run: 2, this run: 3\)"),
        (
            None,
            [],
            r"no earlier run in --output '[^']*' \(no manifest.json, which a run writes as "
            r"it starts\); run without --resume to start one.$",
        ),
        ([], ["--overwrite"], "--resume continues an earlier run and --overwrite replaces it"),
    ],
)
def test_resume_refuses_to_mix_runs(done_run, tmp_path, first, second, message):
    args = done_run["args"](tmp_path / "out")
    if first is not None:  # [] each time: the shared run's own flags
        assert first == []
        done_run["copy"](tmp_path / "out")
    with pytest.raises(ValueError, match=message):
        run([*args, "--steps", "2", *second, "--resume"], save_main_session=False)


def test_resume_refuses_another_image_width_and_takes_a_manifest_recording_none(done_run, tmp_path):
    """The manifest records a non-square model's width (`image_width`) beside its height
    (`image_size`): a run whose images were 16 x 24 does not resume as one of 16 x 16
    squares, and says so in those sizes (it said 'earlier run: 24, this run: None', the
    widths alone). A manifest from before the width was recorded (no `image_width`)
    was of squares, and resumes as one."""
    output = tmp_path / "out"
    args = done_run["args"](output)
    done_run["copy"](output)
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["model"]["image_width"] is None  # a square model's
    wider = {**manifest, "model": {**manifest["model"], "image_width": 24}}
    (output / "manifest.json").write_text(json.dumps(wider))
    message = r"differs in --image_size \(earlier run: 16x24, this run: 16\)\."
    with pytest.raises(ValueError, match=message):
        run([*args, "--steps", "2", "--resume"], save_main_session=False)
    del manifest["model"]["image_width"]
    (output / "manifest.json").write_text(json.dumps(manifest))
    again = run([*args, "--steps", "2", "--resume"], save_main_session=False)
    assert again["counts"]["skipped_done_before"] == len(done_run["pixels"])
    assert again["status"] == "complete"


@pytest.mark.parametrize(
    "text, reason",
    [
        ('{"model": ', "Expecting value"),
        ("[]", "JSON of a list, not an object"),
        ("{}", "no model"),
    ],
)
def test_resume_refuses_a_manifest_this_job_did_not_write_and_leaves_the_run(
    done_run, tmp_path, text, reason
):
    output = tmp_path / "out"
    args = done_run["args"](output)
    done_run["copy"](output)
    (output / "manifest.json").write_text(text, encoding="utf-8")  # the job writes it whole
    with pytest.raises(ValueError) as e:
        run([*args, "--steps", "2", "--resume"], save_main_session=False)
    assert re.fullmatch(
        rf"--resume: the manifest.json in --output '[^']*' is not one this job wrote "
        rf"\(.*{reason}.*\), so the earlier run's settings are unknown; restore it, or "
        r"choose another --output.",
        str(e.value),
    )
    ids = sorted(done_run["pixels"])  # the refused resume left the run's rows alone
    assert sorted(pd.read_parquet(output / "results").image_id) == ids
    assert (output / "manifest.json").read_text(encoding="utf-8") == text


@pytest.mark.parametrize(
    "key, value, reason",
    [
        ("image_id_scheme", "2", "its 'image_id_scheme' is a str, not an int"),
        ("image_id_scheme", True, "its 'image_id_scheme' is a bool, not an int"),  # JSON true
        ("class_names_sha256", 5, "its 'class_names_sha256' is an int, not a str"),
        ("run_id", ["a"], "its 'run_id' is a list, not a str"),
        ("earlier_runs", {"a": 1}, "its 'earlier_runs' is a dict, not a list of objects"),
        ("earlier_runs", [1], "its 'earlier_runs' is a list, not a list of objects"),
    ],
)
def test_resume_refuses_a_manifest_whose_fields_are_not_as_the_job_writes_them(
    key, value, reason, done_run, tmp_path
):
    # An edited field failed the resume with a Python error ("TypeError: '>' not
    # supported between instances of 'str' and 'int'", exit 1), or went into the new
    # manifest's earlier_runs as it was.
    output = tmp_path / "out"
    args = done_run["args"](output)
    done_run["copy"](output)
    manifest = json.loads((output / "manifest.json").read_text())
    (output / "manifest.json").write_text(json.dumps({**manifest, key: value}))
    with pytest.raises(ValueError) as e:
        run([*args, "--steps", "2", "--resume"], save_main_session=False)
    assert str(e.value) == (
        f"--resume: the manifest.json in --output {str(output)!r} is not one this job wrote "
        f"({reason}), so the earlier run's settings are unknown; restore it, or choose "
        "another --output."
    )


def test_resume_that_cannot_read_the_manifest_does_not_call_it_another_jobs(done_run, tmp_path):
    # A manifest that cannot be read now (permissions, a gs:// read failing; here, as
    # root reads any file, a folder in its place) was said to be 'not one this job
    # wrote', to be restored.
    output = tmp_path / "out"
    args = done_run["args"](output)
    done_run["copy"](output)
    manifest = output / "manifest.json"
    kept = manifest.read_bytes()
    manifest.unlink()
    manifest.mkdir()
    with pytest.raises(ValueError) as e:
        run([*args, "--steps", "2", "--resume"], save_main_session=False)
    assert str(e.value).startswith(
        f"--resume: cannot read the manifest.json in --output {str(output)!r} ("
    )
    assert str(e.value).endswith("; make it readable, then run the same command again.")
    assert "not one this job wrote" not in str(e.value)
    manifest.rmdir()
    manifest.write_bytes(kept)
    ids = sorted(done_run["pixels"])
    assert sorted(pd.read_parquet(output / "results").image_id) == ids


def test_resume_refuses_a_run_whose_tolerance_bounded_the_estimate_differently(
    image_folder, linear_keras, tmp_path
):
    output = tmp_path / "out"
    args = cli_args(
        dataset=image_folder["root"], model=linear_keras, output=output, attributions="none"
    )
    manifest = run([*args, "--tolerance", "0.02"], save_main_session=False)
    assert manifest["config"]["estimate_bound"] == pytest.approx(0.02 / ESTIMATE_MARGIN)
    # A run of a version before the margin: the same --tolerance bounded the estimate.
    del manifest["config"]["estimate_bound"]
    (output / "manifest.json").write_text(json.dumps(manifest))
    message = (
        r"differs in the bound on attribution_error at this --tolerance \(a version of the job\) "
        r"\(earlier run: 0.02, this run: 0.016\)\. Resume"
    )
    with pytest.raises(ValueError, match=message):
        run([*args, "--tolerance", "0.02", "--resume"], save_main_session=False)
    # The --tolerance that bounds the estimate as that version's 0.02 did: the same rows.
    manifest = run([*args, "--tolerance", "0.025", "--resume"], save_main_session=False)
    assert manifest["counts"]["skipped_done_before"] == 4
    assert manifest["config"]["tolerance"] == 0.025
    # Another --tolerance is named as such, its bound (which follows) not again.
    message = r"differs in --tolerance \(earlier run: 0.025, this run: 0.03\)\. Resume"
    with pytest.raises(ValueError, match=message):
        run([*args, "--tolerance", "0.03", "--resume"], save_main_session=False)


@pytest.fixture(scope="module")
def unchecked_done_run(tmp_path_factory, done_run):
    """`done_run`'s run with --faithfulness none, made once a module: `(output)` puts a
    copy of it there."""
    where = tmp_path_factory.mktemp("unchecked_done_run") / "out"
    flags = [*done_run["args"](where), "--steps", "2", "--faithfulness", "none"]
    run(flags, save_main_session=False)
    return lambda output: shutil.copytree(where, output)


def _as_a_version_without(output, key: str, value: str) -> None:
    """The run in `output` as a version before its manifest's `key` (`value` in this
    version) wrote it: that key removed."""
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["config"][key] == value
    del manifest["config"][key]
    (output / "manifest.json").write_text(json.dumps(manifest))


def _done_run_as_a_version_without(done_run, unchecked_done_run, faithfulness, output, key, value):
    """`done_run` (`--faithfulness deletion_insertion`, the default) or
    `unchecked_done_run` (`none`) in `output`, over any earlier run, as a version
    before `key`: its `--steps 2` flags."""
    shutil.rmtree(output, ignore_errors=True)
    if faithfulness == "none":
        unchecked_done_run(output)
    else:
        assert faithfulness == "deletion_insertion"
        done_run["copy"](output)
    _as_a_version_without(output, key, value)
    return [*done_run["args"](output), "--steps", "2", "--faithfulness", faithfulness]


def test_resume_refuses_a_run_whose_faithfulness_checks_ranked_the_padding_too(
    done_run, unchecked_done_run, tmp_path
):
    """A version before faithfulness_pixels ranked a padded image's bars with its own
    pixels: its AUCs would not compare with this version's, so its run does not go on;
    without the checks (--faithfulness none) the rows are the same, and it does, with
    another --faithfulness_steps or --seed too (unless a noise baseline uses the seed)."""
    output = tmp_path / "out"
    for faithfulness, refused in (("deletion_insertion", True), ("none", False)):
        flags = _done_run_as_a_version_without(
            done_run, unchecked_done_run, faithfulness, output, "faithfulness_pixels", "own"
        )
        if not refused:  # and what the checks alone use may change: they are off
            unused = ["--faithfulness_steps", "7", "--seed", "3"]
            resumed = run([*flags, *unused, "--resume"], save_main_session=False)
            assert resumed["counts"]["skipped_done_before"] == 4
            with pytest.raises(ValueError, match=r"differs in --seed \(earlier run: 3"):
                noise = ["--baseline", "noise", "--overwrite"]
                run([*flags, *noise, "--seed", "3"], save_main_session=False)
                run([*flags, *noise[:2], "--resume"], save_main_session=False)
            continue
        message = (
            r"differs in the pixels deletion and insertion rank, a padded image's own or all "
            r"\(a version of the job\) \(earlier run: 'all', this run: 'own'\)\. This version "
            r"of the job cannot continue it: start over with --overwrite\.$"
        )
        with pytest.raises(ValueError, match=message):
            run([*flags, "--resume"], save_main_session=False)


def test_a_resume_without_faithfulness_none_of_an_older_run_with_it_is_told_to_pass_it(
    done_run, unchecked_done_run, tmp_path
):
    """An older version's run with --faithfulness none, resumed without it: at launch a
    setting no model sets (--steps) was refused with "Resume with the same flags", and
    --faithfulness alone, once the model had loaded, with "cannot continue it: start
    over", as how the checks rank pixels differed, though the earlier run ran none and
    --faithfulness none resumes it. Both say to resume with the same flags now."""
    output = tmp_path / "out"
    flags = _done_run_as_a_version_without(
        done_run, unchecked_done_run, "none", output, "faithfulness_pixels", "own"
    )
    checked = flags[: flags.index("--faithfulness")]  # the default: deletion_insertion
    same_flags = r"\. Resume with the same flags, or start over with --overwrite\.$"
    at_launch = r"differs in --steps \(earlier run: 2, this run: 3\)"
    with pytest.raises(ValueError, match=at_launch + same_flags):
        run([*checked, "--steps", "3", "--resume"], save_main_session=False)
    loaded = r"differs in --faithfulness \(earlier run: 'none', this run: 'deletion_insertion'\)"
    with pytest.raises(ValueError, match=loaded + same_flags):
        run([*checked, "--resume"], save_main_session=False)
    resumed = run([*flags, "--resume"], save_main_session=False)
    assert resumed["counts"]["skipped_done_before"] == 4


def test_resume_refuses_a_run_whose_faithfulness_checks_ordered_ties_row_major(
    done_run, unchecked_done_run, tmp_path
):
    """A version before faithfulness_ties ordered a map's equal values row-major, not as
    the row's random control: its AUCs would not compare with this version's, so its
    run does not go on; without the checks (--faithfulness none) it does."""
    output = tmp_path / "out"
    for faithfulness, refused in (("deletion_insertion", True), ("none", False)):
        flags = _done_run_as_a_version_without(
            done_run, unchecked_done_run, faithfulness, output, "faithfulness_ties", "control"
        )
        if not refused:
            resumed = run([*flags, "--resume"], save_main_session=False)
            assert resumed["counts"]["skipped_done_before"] == 4
            continue
        message = (
            r"differs in how deletion and insertion order a map's equal values, as its random "
            r"control or row-major \(a version of the job\) \(earlier run: 'row_major', this "
            r"run: 'control'\)\. This version of the job cannot continue it: start over with "
            r"--overwrite\.$"
        )
        with pytest.raises(ValueError, match=message):
            run([*flags, "--resume"], save_main_session=False)


def test_resume_goes_on_from_a_fixed_rule_run_made_before_the_margin(
    image_folder, linear_keras, tmp_path
):
    # At --tolerance 0 no estimate is bounded: a manifest without estimate_bound (a
    # version before the margin) holds the same rows as this version's.
    output = tmp_path / "out"
    args = cli_args(
        dataset=image_folder["root"], model=linear_keras, output=output, attributions="none"
    )
    manifest = run([*args, "--tolerance", "0", "--steps", "2"], save_main_session=False)
    del manifest["config"]["estimate_bound"]
    (output / "manifest.json").write_text(json.dumps(manifest))
    manifest = run([*args, "--tolerance", "0", "--steps", "2", "--resume"], save_main_session=False)
    assert manifest["counts"]["skipped_done_before"] == 4


def test_resume_refuses_a_run_whose_results_lack_columns_of_this_version(
    image_folder, linear_keras, tmp_path
):
    # A version before attribution_error and the faithfulness columns, at --tolerance 0
    # and --faithfulness none: its settings match, its files' schema does not. Its rows
    # and this version's in one results/ would not read as one table.
    output = tmp_path / "out"
    args = cli_args(
        dataset=image_folder["root"], model=linear_keras, output=output, attributions="none"
    )
    flags = [*args, "--tolerance", "0", "--steps", "2", "--faithfulness", "none"]
    run(flags, save_main_session=False)
    as_older_version(str(output), manifest_keys=("estimate_bound", "faithfulness_pixels"))
    write_image(Path(image_folder["root"], "new.png"), np.zeros((SIZE, SIZE, 3), np.uint8))
    before = sorted(p.name for p in (output / "results").iterdir())
    message = (
        r"^--resume: the results of the earlier run in .* have no 'attribution_error', "
        r"'deletion_auc', .*'insertion_curve': an older version of the job wrote them\. "
        r"This version of the job cannot add rows to them: start over with --overwrite\.$"
    )
    with pytest.raises(ValueError, match=message):
        run([*flags, "--resume"], save_main_session=False)
    assert sorted(p.name for p in (output / "results").iterdir()) == before


def test_resume_refuses_results_that_lack_a_column_and_hold_another_as_another_versions(
    done_run, tmp_path
):
    # Results with a column less and one more than this version's are no older version's
    # (that one only lacks columns): the refusal says "another".
    import pyarrow.parquet as pq

    output = tmp_path / "out"
    done_run["copy"](output)
    for path in (output / "results").glob("*.parquet"):
        table = pq.read_table(path)
        table = table.drop_columns(["deletion_auc"]).append_column("vote", table["label"])
        pq.write_table(table, path)
    message = (
        r"results of the earlier run in .* have no 'deletion_auc' and hold 'vote': another "
        r"version of the job wrote them\. "
    )
    with pytest.raises(ValueError, match=message):
        run([*done_run["args"](output), "--steps", "2", "--resume"], save_main_session=False)


def test_resume_of_a_run_whose_version_lacked_a_setting_does_not_say_to_resume(done_run, tmp_path):
    # A version before --completeness_tolerance and --faithfulness recorded neither: no
    # flag given to this version matches that, so "Resume with the same flags" misled.
    output = tmp_path / "out"
    args = done_run["args"](output)
    done_run["copy"](output)
    as_older_version(str(output), columns=())
    message = (
        r"differs in --completeness_tolerance \(earlier run: None, this run: 0.005\); .*"
        r"--faithfulness \(earlier run: None, .*\. This version of the job cannot continue "
        r"it: start over with --overwrite\.$"
    )
    with pytest.raises(ValueError, match=message):
        run([*args, "--steps", "2", "--resume"], save_main_session=False)


def test_resume_of_a_run_of_a_later_version_names_its_setting_as_no_flag(done_run, tmp_path):
    # A later version's manifest holds a setting this one lacks: the refusal named a
    # flag this version does not have ("--vote_bound") and said to resume with it.
    output = tmp_path / "out"
    args = done_run["args"](output)
    done_run["copy"](output)
    manifest = json.loads((output / "manifest.json").read_text())
    manifest["config"]["vote_bound"] = 3
    (output / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError) as e:
        run([*args, "--steps", "2", "--resume"], save_main_session=False)
    assert str(e.value) == (
        f"--resume: the earlier run in {str(output)!r} differs in 'vote_bound', a setting "
        "this version of the job does not have (earlier run: 3, this run: None). This "
        "version of the job cannot continue it: start over with --overwrite."
    )


def test_resume_names_another_model_by_its_identity_also_when_its_outputs_differ(
    done_run, tmp_path
):
    # Two settings name --model (its identity and its number of outputs): a refusal says
    # the first that differs, the model's identity, not its outputs in --model's name.
    output = tmp_path / "out"
    args = done_run["args"](output)
    done_run["copy"](output)
    manifest = json.loads((output / "manifest.json").read_text())
    identity = manifest["model"]["identity"]
    manifest["model"] |= {"identity": "another model", "num_outputs": 10}
    (output / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError) as e:
        run([*args, "--steps", "2", "--resume"], save_main_session=False)
    where = repr(manifest["model"]["location"])  # and the identity, shortened
    said = f"(earlier run: {where} (another model), this run: {where} ({identity[:19]}))."
    assert f"differs in --model {said}" in str(e.value)


def test_a_resume_refused_for_other_class_names_or_another_model_names_the_earlier_files(
    linear_keras, tmp_path
):
    """A --resume without the earlier run's --class_names was refused as 'class names
    (earlier run: names with sha256 7c6a4e3f6a85, this run: ...)', and one of a model
    retrained in place as '--model (earlier run: 'sha256:ab39...', this run:
    'sha256:014b...')': hashes, where the file to pass, or that the file changed, is
    the fix."""
    folder = make_image_folder(tmp_path / "images")
    model = tmp_path / "model.keras"
    shutil.copy(linear_keras, model)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"class {i}" for i in range(1000)))
    output = tmp_path / "out"
    args = [*cli_args(dataset=folder["root"], model=model, output=output), "--steps", "2"]
    args += ["--attributions", "none", "--faithfulness", "none"]
    manifest = run([*args, f"--class_names={names}"], save_main_session=False)
    with pytest.raises(ValueError) as e:
        run([*args, "--resume"], save_main_session=False)
    said = f"class names (earlier run: those of --class_names {str(names)!r} (sha256 "
    assert said in str(e.value), str(e.value)
    import keras

    retrained = keras.saving.load_model(model)
    retrained.set_weights([w * 1.5 for w in retrained.get_weights()])
    retrained.save(str(model))  # retrained in place: the same path, other bytes
    with pytest.raises(ValueError) as e:
        run([*args, f"--class_names={names}", "--resume"], save_main_session=False)
    before = manifest["model"]["identity"]  # sha256:<64 hex digits>
    said = re.search(r"differs in --model \(earlier run: (.*), this run: (.*)\)\.", str(e.value))
    assert said, str(e.value)
    assert said[1] == f"{str(model)!r} ({before[:19]})"
    assert re.fullmatch(rf"{re.escape(repr(str(model)))} \(sha256:[0-9a-f]{{12}}\)", said[2])
    assert said[2] != said[1]


@pytest.mark.parametrize("tolerance, refused", [("0", False), ("0.01", True)])
def test_resume_compares_max_steps_only_where_it_bounds_refinement(
    image_folder, linear_keras, tmp_path, tolerance, refused
):
    args = cli_args(
        dataset=image_folder["root"],
        model=linear_keras,
        output=tmp_path / "out",
        attributions="none",
        steps=2,
        tolerance=tolerance,
    )
    run([*args, "--max_steps", "300"], save_main_session=False)
    if refused:
        message = r"differs in --max_steps \(earlier run: 300, this run: 256\)"
        with pytest.raises(ValueError, match=message):
            run([*args, "--resume"], save_main_session=False)
    else:  # the fixed rule: --max_steps and --completeness_tolerance change no row
        resume = [*args, "--completeness_tolerance", "0.5", "--resume"]
        manifest = run(resume, save_main_session=False)
        assert manifest["counts"]["skipped_done_before"] == 4


def test_resume_names_another_label_offset_on_unlabelled_images(linear_keras, tmp_path):
    # On WordNet-id folders an offset of 1 is refused at launch; on unlabelled images,
    # with --class_names naming the 999 classes after a background output (without,
    # a 1000-output model's are ImageNet's: refused too), it is a setting like the
    # others, which the refusal names (not only the class names that follow from it).
    write_image(tmp_path / "images" / "a.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"class {i}" for i in range(999)))
    args = cli_args(
        dataset=tmp_path / "images",
        model=linear_keras,
        output=tmp_path / "out",
        attributions="none",
        steps=2,
    )
    run(args, save_main_session=False)
    with pytest.raises(
        ValueError, match=r"differs in --label_offset \(earlier run: 0, this run: 1\); class names"
    ):
        run(
            [*args, "--label_offset", "1", f"--class_names={names}", "--resume"],
            save_main_session=False,
        )


@pytest.fixture(scope="module")
def any_size_keras(tmp_path_factory) -> str:
    """A `.keras` classifier of any input size (global average pooling), 1000 outputs."""
    import keras

    inputs = keras.Input((None, None, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1000)(pooled))
    path = str(tmp_path_factory.mktemp("models") / "any_size.keras")
    model.save(path)
    return path


def test_resume_refuses_every_setting_that_changes_rows(
    image_folder, any_size_keras, linear_keras, tmp_path
):
    args = cli_args(
        dataset=image_folder["root"], output=tmp_path / "out", attributions="none", steps=2
    )
    settings = cli_args(model=any_size_keras, image_size=16, input_range="0,1", label_offset=0)
    run([*args, *settings], save_main_session=False)
    changed = {
        "--input_range": "-1,1",
        "--label_offset": "1",
        "--image_size": "24",
        "--model": linear_keras,
        "--score": "softmax",
        "--baseline": "white",
        "--target": "top_k",
        "--top_k": "3",
        "--tolerance": "0.01",
        "--method": "gausslegendre",
        "--attribution_dtype": "float16",
        "--attributions": "pixel",
        "--seed": "3",
    }
    for flag, value in changed.items():
        flags = [*args, *settings]
        if flag in flags:  # "--input_range=-1,1": argparse reads "-1,1" alone as a flag
            del flags[flags.index(flag) : flags.index(flag) + 2]
        flags.append(f"{flag}={value}")
        if flag == "--model":  # a different model (its own fixed 16x16 input)
            del flags[flags.index("--image_size") : flags.index("--image_size") + 2]
        if flag == "--method":  # one adaptive panel of Gauss-Legendre is 4 nodes
            flags.append("--steps=4")
        # On these WordNet-id folders (ImageNet labels) offset 1 is refused at launch.
        refused = rf"differs in .*{flag} \(earlier run: "
        if flag == "--label_offset":
            refused = "--label_offset 1 does not fit --dataset"
        with pytest.raises(ValueError, match=refused):
            run([*flags, "--resume"], save_main_session=False)
    # Other class names (ImageNet's before): named readably, not as a hash and None.
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"class {i}" for i in range(1000)))
    with pytest.raises(
        ValueError,
        match=r"class names \(earlier run: names with sha256 \w{12}, this run: those of "
        r"--class_names '[^']*names.txt' \(sha256 \w{12}\)\)",
    ):
        run([*args, *settings, f"--class_names={names}", "--resume"], save_main_session=False)
    # Batching changes no row: a resume with other batch sizes goes on.
    manifest = run(
        [*args, *settings, "--batch_size", "2", "--path_batch_size", "7", "--resume"],
        save_main_session=False,
    )
    assert manifest["counts"]["skipped_done_before"] == 4


def test_a_resume_of_a_run_whose_settings_the_model_fitted_goes_on(
    image_folder, linear_weights, tmp_path
):
    # A model of 1 output turns --faithfulness off and shrinks --top_k's default to 1.
    # A resume's flags give "deletion_insertion" and 5 until the model loads: compared
    # at launch, before the load, they would refuse the very flags of the earlier run.
    weights, bias = linear_weights
    model = dense_keras(tmp_path / "one.keras", weights[:, :1], bias[:1])
    args = cli_args(dataset=image_folder["root"], model=model, output=tmp_path / "out", steps=2)
    run([*args, "--attributions", "none"], save_main_session=False)
    manifest = run([*args, "--attributions", "none", "--resume"], save_main_session=False)
    assert (manifest["config"]["faithfulness"], manifest["config"]["top_k"]) == ("none", 1)
    assert manifest["counts"]["skipped_done_before"] == 4


def test_a_hostile_folder_gives_a_row_or_an_error_record_for_every_entry(linear_keras, tmp_path):
    import os

    from tests.test_images import _png_declaring

    rng = np.random.default_rng(12)
    root, elsewhere = tmp_path / "photos [2023]", tmp_path / "elsewhere"

    def image(path):
        write_image(path, rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))

    image(root / "good.png")
    image(elsewhere / "a.png")
    image(tmp_path / "latin1.png")
    os.rename(tmp_path / "latin1.png", bytes(root) + b"/caf\xe9.png")  # not UTF-8
    (root / "alias.png").symlink_to(root / "good.png")
    (root / "linked").symlink_to(elsewhere)
    (root / "dangling.png").symlink_to(tmp_path / "gone.png")
    (root / "loop").symlink_to(root)
    os.mkfifo(root / "x.png")
    (root / "bomb.png").write_bytes(_png_declaring(28000, 28000, rows=8))
    flags = cli_args(
        dataset=root, model=linear_keras, output=tmp_path / "out", steps=2, attributions="none"
    )
    manifest = run(flags, save_main_session=False)
    rows = pd.read_parquet(tmp_path / "out" / "results")
    errors = pd.read_parquet(tmp_path / "out" / "errors").set_index("image_id")
    assert sorted(rows.image_id) == ["alias.png", "caf\\xe9.png", "good.png", "linked/a.png"]
    assert sorted(errors.index) == ["bomb.png", "dangling.png", "loop", "x.png"]
    assert errors.loc["bomb.png", "stage"] == "decode"
    assert "too large to decode safely" in errors.loc["bomb.png", "error"]
    assert "dangling symbolic link" in errors.loc["dangling.png", "error"]
    assert "symbolic link loop" in errors.loc["loop", "error"]
    assert "FIFO" in errors.loc["x.png", "error"]
    assert manifest["counts"]["inputs"] == 8 and manifest["all_inputs_accounted_for"]
    # Beam's sinks cannot write under a glob-character --output: refused, before any work.
    with pytest.raises(ValueError, match=r"--output .* holds a glob character"):
        run([*flags[:-5], str(root / "audit"), *flags[-4:]], save_main_session=False)


def test_a_latin1_name_and_its_escaped_spelling_are_two_inputs(linear_keras, tmp_path):
    import os

    from transforms.results import load_input_image

    rng = np.random.default_rng(5)
    root = tmp_path / "names"
    latin1, literal = (rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(2))
    write_image(root / "x.png", latin1)
    os.rename(root / "x.png", bytes(root) + b"/caf\xe9.png")  # not UTF-8
    write_image(root / "caf\\xe9.png", literal)  # a backslash, then "xe9"
    flags = cli_args(
        dataset=root, model=linear_keras, output=tmp_path / "out", steps=2, attributions="none"
    )
    manifest = run(flags, save_main_session=False)
    rows = pd.read_parquet(tmp_path / "out" / "results")
    assert sorted(rows.image_id) == ["caf\\\\xe9.png", "caf\\xe9.png"]
    assert manifest["counts"]["images_with_rows"] == 2
    # Each id re-loads its own file (the report's photos, audit_figure).
    for image_id, pixels in (("caf\\xe9.png", latin1), ("caf\\\\xe9.png", literal)):
        np.testing.assert_array_equal(load_input_image(tmp_path / "out", image_id), pixels)


def test_an_output_inside_the_dataset_is_never_read_as_input(image_folder, linear_keras):
    output = image_folder["root"] + "/audit"
    flags = cli_args(dataset=image_folder["root"], model=linear_keras, output=output, steps=2)
    first = run(flags, save_main_session=False)
    # Again over the first run's manifest.json and Parquet files, now in the folder.
    second = run([*flags, "--overwrite"], save_main_session=False)
    assert first["counts"]["inputs"] == second["counts"]["inputs"] == 5
    rows = pd.read_parquet(image_folder["root"] + "/audit/results")
    assert sorted(rows.image_id) == sorted(image_folder["pixels"])


def test_an_unexpected_decoding_failure_is_that_inputs_error_record():
    from transforms.attribution import ERRORS_TAG, Preprocess
    from transforms.sources import RawImage

    # Pixels NumPy cannot turn into numbers: a ValueError that is no ImageError.
    odd = RawImage("odd", "odd", None, pixels=np.full((4, 4, 3), "x", dtype=object))
    good = RawImage("good", "good", None, pixels=np.zeros((4, 4, 3), np.uint8))
    step = Preprocess(SIZE, (0.0, 1.0))
    (error,) = step.process(odd)
    assert error.tag == ERRORS_TAG and error.value["stage"] == "decode"
    assert error.value["error"].startswith("ValueError: could not convert")
    (example,) = step.process(good)  # the same DoFn goes on with the next input
    assert example.image.shape == (SIZE, SIZE, 3)


def _as_older_version(output) -> None:
    """The manifest a version before image id scheme 2 wrote (no such key)."""
    import json

    path = output / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["image_id_scheme"]
    path.write_text(json.dumps(manifest))


def test_resume_refuses_an_older_runs_ids_that_changed(linear_keras, tmp_path):
    rng = np.random.default_rng(6)
    root = tmp_path / "names"
    for name in ("plain.png", "a\\b.png"):
        write_image(root / name, rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    flags = cli_args(
        dataset=root, model=linear_keras, output=tmp_path / "out", steps=2, attributions="none"
    )
    run(flags, save_main_session=False)
    # This version's own run resumes, a backslash in an id or not.
    resumed = run([*flags, "--resume"], save_main_session=False)
    assert resumed["counts"]["skipped_done_before"] == 2
    _as_older_version(tmp_path / "out")
    # Scheme 1 named a\b.png "a\b.png"; now "a\\b.png": it would be redone.
    with pytest.raises(ValueError, match=r"another scheme \(image_id_scheme 1, this version 2\)"):
        run([*flags, "--resume"], save_main_session=False)
    # Without a backslash in any id, both schemes agree: an older run resumes.
    (root / "a\\b.png").unlink()
    run([*flags, "--overwrite"], save_main_session=False)
    _as_older_version(tmp_path / "out")
    manifest = run([*flags, "--resume"], save_main_session=False)
    assert manifest["counts"]["skipped_done_before"] == 1 and manifest["image_id_scheme"] == 2
    # A newer version's run may have named any file otherwise: refused, backslash or not.
    manifest["image_id_scheme"] = 3
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"another scheme \(image_id_scheme 3, this version 2\)"):
        run([*flags, "--resume"], save_main_session=False)


def test_a_run_whose_rows_cannot_be_put_in_place_is_not_complete(
    image_folder, linear_keras, tmp_path, monkeypatch
):
    from transforms import sinks

    real = sinks._ParquetSink.finalize_write

    def full_disk(self, *args, **kwargs):
        if "results" in str(self.file_path_prefix):
            raise OSError("No space left on device (moving the rows into place)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(sinks._ParquetSink, "finalize_write", full_disk)
    flags = cli_args(dataset=image_folder["root"], model=linear_keras, output=tmp_path / "out")
    with pytest.raises(Exception, match="No space left on device"):
        run([*flags, "--steps", "2"], save_main_session=False)
    manifest = read_manifest(str(tmp_path / "out"))
    assert manifest["status"] == "failed" and "counts" not in manifest
    assert "No space left on device" in manifest["reason"]
    assert pd.read_parquet(tmp_path / "out" / "results").empty  # the schema-only file alone


def _write_errors(output: Path, run_id: str, records: list[dict], threads: int) -> None:
    """`WriteErrors` of `records` for run `run_id`, on `threads` DirectRunner threads:
    one bundle, so one shard, each (Dataflow picks its own shard counts)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.sinks import WriteErrors

    options = PipelineOptions([], direct_num_workers=threads, direct_running_mode="multi_threading")
    with beam.Pipeline(options=options) as p:
        _ = p | beam.Create(records) | WriteErrors(str(output), run_id)


def test_a_job_run_again_for_its_unfinished_run_keeps_one_jobs_error_records(tmp_path):
    """A template's job run again after one that put its errors in place and died
    before its manifest step (the folder still its run's, "running") added its shards
    beside the first job's when it wrote another number of them: each record twice."""
    from transforms.sinks import write_json

    out = tmp_path / "out"
    out.mkdir()
    write_json(str(out / "manifest.json"), {"run_id": "r1", "status": "running"})
    records = [
        {"image_id": f"{i}.png", "file_name": f"{i}.png", "stage": "decode", "error": "broken"}
        for i in range(8)
    ]
    _write_errors(out, "r1", records, threads=1)
    _write_errors(out, "r1", records, threads=2)
    held = pd.read_parquet(out / "errors")
    assert sorted(held.image_id) == sorted(r["image_id"] for r in records)
    names = sorted(p.name for p in (out / "errors").iterdir())
    assert names == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"], names


def test_the_manifest_step_waits_for_both_file_writes(image_folder, linear_keras, tmp_path):
    # The DirectRunner happens to finalize the files first; Dataflow need not,
    # unless the graph says so: the manifest reads the writes as a side input.
    import apache_beam as beam

    from pipeline.main import build_pipeline, prepare

    flags = cli_args(dataset=image_folder["root"], model=linear_keras, output=tmp_path / "out")
    job, options = prepare(flags)
    job.lock.release()
    p = beam.Pipeline(options=options)
    build_pipeline(p, job)
    found = {}

    class Find(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            found[node.full_label] = node

    p.visit(Find())
    (side,) = found["Manifest/WriteManifestJson"].side_inputs
    upstream, todo = set(), [side.pvalue.producer]
    while todo:
        node = todo.pop()
        upstream.add(node.full_label)
        sources = [*node.inputs, *(side.pvalue for side in node.side_inputs)]
        todo += [pc.producer for pc in sources if pc.producer is not None]
    finalizers = {label for label in upstream if label.endswith("FinalizeWrite")}
    assert {label.split("/")[0] for label in finalizers} == {"WriteResults", "WriteErrors"}


def test_resume_says_which_rows_are_of_images_no_longer_in_the_folder(
    linear_keras, tmp_path, caplog
):
    root = tmp_path / "shrinking"
    rng = np.random.default_rng(12)
    for name in ("a.png", "b.png", "c.png"):
        write_image(root / name, rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    flags = cli_args(dataset=root, model=linear_keras, output=tmp_path / "out", steps=2)
    run(flags, save_main_session=False)
    (root / "c.png").unlink()
    with caplog.at_level("INFO", logger="pipeline.resume"):
        manifest = run([*flags, "--resume"], save_main_session=False)
    # The images skipped are the manifest's two, not the three with rows.
    assert "Resuming: 2 images have rows already; skipped." in caplog.text
    assert "1 image with rows in" in caplog.text
    assert "is no longer in --dataset (e.g. 'c.png'); their rows are kept" in caplog.text
    assert manifest["counts"]["inputs"] == 2 and manifest["counts"]["skipped_done_before"] == 2
    assert sorted(pd.read_parquet(tmp_path / "out" / "results").image_id) == [
        "a.png",
        "b.png",
        "c.png",
    ]


def _job_with_file_size_limit(flags: list[str], limit: int, log: Path | None = None):
    """`python -m pipeline FLAGS` in a process whose files may grow to `limit` bytes
    (`launched`): the finished process and its `error:` lines. With `log`, its stderr
    is that file, which the limit bounds too (`2>log` under `ulimit -f`); its text is
    the process's `stderr`. A process still running after 300 s is killed: a hang fails."""
    with open(log, "w") if log else contextlib.nullcontext() as sink:
        done = subprocess.run(
            launched([sys.executable, "-m", "pipeline", *flags], file_size_limit=limit),
            cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            stdout=subprocess.PIPE,
            stderr=sink or subprocess.PIPE,
            text=True,
            timeout=300,
        )
    if log:
        done.stderr = log.read_text()
    return done, [line for line in done.stderr.splitlines() if line.startswith("error:")]


def test_a_resume_that_cannot_write_says_so_and_loses_nothing(mapped_run, tmp_path):
    out = tmp_path / "out"
    flags = mapped_run["args"](out)
    mapped_run["copy"](out)
    # As a killed run leaves it: its rows in a checkpoint only, its manifest "running".
    (done,) = (out / "results").glob("part-0*.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    checkpoints = out / ".tmp" / "checkpoints" / manifest["run_id"]
    checkpoints.mkdir(parents=True)
    shutil.move(done, checkpoints / "rows.parquet")
    (out / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    # The salvaged rows (4 full maps) do not fit in 4 kB; the lock does.
    resumed, errors = _job_with_file_size_limit([*flags, "--resume"], 4000)
    assert resumed.returncode == 2 and len(errors) == 1, resumed.stderr[-2000:]
    assert f"--output {str(out)!r}: cannot write there" in errors[0]
    assert "File too large" in errors[0] and "run the same command again" in errors[0]
    # No half-written file left behind, the checkpoint kept, the folder free again.
    assert not list((out / ".tmp").glob("*.partial"))
    assert (checkpoints / "rows.parquet").exists() and not (out / ".lock").exists()
    manifest = run([*flags, "--resume"], save_main_session=False)
    assert manifest["counts"]["skipped_done_before"] == 4
    rows = pd.read_parquet(out / "results")
    assert sorted(rows.image_id) == sorted(mapped_run["pixels"])


def test_a_resume_removes_the_report_and_sanity_check_of_the_run_before_it(
    linear_keras, tmp_path, caplog
):
    # report.html and sanity/ describe the rows of the run they were made from: after
    # a resume added rows, the page still showed the run before it, as if current.
    from pipeline import report

    root = tmp_path / "images"
    rng = np.random.default_rng(12)
    write_image(root / "a.png", rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    out = tmp_path / "out"
    args = cli_args(dataset=root, model=linear_keras, output=out, steps=2)
    run(args, save_main_session=False)
    assert report.main(["--input", str(out)]) == 0 and (out / "report.html").is_file()
    (out / "sanity").mkdir()
    (out / "sanity" / "sanity.json").write_text("{}")  # as pipeline.sanity writes it
    write_image(root / "b.png", rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    caplog.set_level("INFO")
    run([*args, "--resume"], save_main_session=False)
    assert not (out / "report.html").exists() and not (out / "sanity").exists()
    assert "report.html and sanity/ of the run before this resume" in caplog.text


def test_resumes_that_write_no_row_leave_no_empty_results_file(linear_keras, tmp_path):
    # A run whose every input fails, resumed twice: each resume left an empty
    # part-resume<time> file beside the schema, as many as there were resumes.
    root = tmp_path / "broken"
    root.mkdir()
    (root / "a.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    args = cli_args(dataset=root, model=linear_keras, output=out, steps=2)
    run(args, save_main_session=False)
    before = sorted(p.name for p in (out / "results").glob("*.parquet"))
    for _ in range(2):
        manifest = run([*args, "--resume"], save_main_session=False)
        assert manifest["counts"]["rows"] == 0 and manifest["counts"]["errors"] == 1
    assert sorted(p.name for p in (out / "results").glob("*.parquet")) == before
    assert pd.read_parquet(out / "results").empty


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
        OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)),
        RuntimeError("OSError: No space left on device [while running 'Write rows']"),
        RuntimeError("OSError: Disk quota exceeded [while running 'Write rows']"),
        OSError(errno.ENOENT, os.strerror(errno.ENOENT)),  # not for want of space
    ],
)
def test_a_write_that_failed_for_want_of_space_says_to_free_some(error, capsys):
    # A full disk (errno 28) and a quota (122), as an OSError or in Beam's text.
    from pipeline.__main__ import _failed

    assert _failed(error, verbose=False) == 1
    (line,) = capsys.readouterr().err.splitlines()
    space = "A write failed for want of space (a full disk, a quota or a file-size limit)"
    assert (space in line) == ("No such file" not in line), line


def _numpy_out_of_memory() -> MemoryError:
    try:
        np.empty(2**60, np.float32)  # 4 EiB: numpy's own error, as a worker gets it
    except MemoryError as e:
        return e
    raise AssertionError("4 EiB allocated")


@pytest.mark.parametrize(
    "error",
    [
        _numpy_out_of_memory(),
        RuntimeError(
            f"numpy._core._exceptions._ArrayMemoryError: {_numpy_out_of_memory()} "
            "[while running 'Attribute/BeamML_RunInference']"
        ),
        RuntimeError("ResourceExhaustedError: OOM when allocating tensor with shape[64,1024]"),
        RuntimeError("MemoryError: std::bad_alloc"),
        RuntimeError("ValueError: bad shape [while running 'Attribute']"),  # not memory
    ],
)
def test_a_run_out_of_memory_says_which_flags_need_less(error, capsys):
    # 'the run failed: MemoryError: Unable to allocate 48.0 MiB ...' (a 3 GB ulimit,
    # --image_size 2048) said what, not what to do about it.
    from pipeline.__main__ import _failed

    assert _failed(error, verbose=False) == 1
    (line,) = capsys.readouterr().err.splitlines()
    advice = (
        "The job ran out of memory: rerun with --resume and a smaller --batch_size or "
        "--path_batch_size (the rows of every batch it finished are kept), or give it more."
    )
    assert line.endswith(advice) == ("bad shape" not in line), line


def _run_error(kind: str) -> Exception:
    """A run's failure as its library raises it (`kind`: what it is)."""
    if kind == "quota":  # a Google API's 429: a quota or rate limit, no memory
        from google.api_core.exceptions import ResourceExhausted

        return ResourceExhausted("Quota exceeded for quota metric 'Write requests'")
    if kind == "tf":  # XLA's wording of TensorFlow's out-of-memory error
        import tensorflow as tf

        return tf.errors.ResourceExhaustedError(None, None, "Out of memory allocating 1.2GiB")
    if kind == "oom_text":  # TensorFlow's words in a worker's error, as Beam passes it on
        return RuntimeError(
            "Error message from worker: OOM when allocating tensor with shape[64,224,224,3] "
            "[while running 'Attribute']"
        )
    return RuntimeError(  # a worker's C++ new that failed, as Beam's text passes it on
        "terminate called after throwing an instance of 'std::bad_alloc' [while running "
        "'Attribute']"
    )


@pytest.mark.parametrize("kind", ["quota", "tf", "oom_text", "bad_alloc"])
def test_only_a_run_out_of_memory_is_told_to_use_less(kind, capsys):
    # A Google API's quota error (429 ResourceExhausted) was told 'The job ran out of
    # memory: rerun ... with a smaller --batch_size': TensorFlow's is ResourceExhaustedError.
    from pipeline.__main__ import _failed

    assert _failed(_run_error(kind), verbose=False) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert ("ran out of memory" in line) == (kind != "quota"), line


def test_a_run_that_fills_the_disk_says_to_free_space_and_resume(
    image_folder, linear_keras, tmp_path
):
    # The run's rows do not fit in 6 kB; its lock and manifest do. The error named
    # only Beam's step ("OSError: [Errno 27] File too large [while running ...]").
    # On threads (--direct_running_mode multi_threading), its stderr a log file under
    # the same limit: Beam printed the failed bundle's traceback there (16 kB) before it
    # told the launcher; the print failed (EFBIG) and the run hung, --output locked.
    # (The default mode's run: tests/test_output_folder.py's, of a log file too.)
    out = tmp_path / "out"
    flags = cli_args(
        dataset=image_folder["root"],
        model=linear_keras,
        output=out,
        steps=2,
        direct_running_mode="multi_threading",
    )
    failed, errors = _job_with_file_size_limit(flags, 6000, log=tmp_path / "stderr.log")
    assert failed.returncode == 1 and len(errors) == 1, failed.stderr[-2000:]
    assert "Traceback" not in failed.stderr
    # As a run in one thread says it (Beam's RuntimeError of the worker's traceback, whose
    # raised line names its type: it said 'RuntimeError: RuntimeError: OSError: ...').
    assert errors[0].startswith(
        "error: the run failed: RuntimeError: OSError: [Errno 27] File too large"
    )
    assert read_manifest(str(out))["status"] == "failed" and not (out / ".lock").exists()
    assert errors[0].endswith(
        "A write failed for want of space (a full disk, a quota or a file-size limit): "
        "free some, then rerun with --resume to continue: the rows of every batch it "
        "finished are kept."
    ), errors[0]
    manifest = run([*flags, "--resume"], save_main_session=False)
    rows = pd.read_parquet(out / "results")
    assert sorted(rows.image_id) == sorted(image_folder["pixels"])
    assert manifest["status"] == "complete"


def test_resume_of_a_run_made_when_completeness_was_bounded_at_half_a_percent_says_what_to_pass(
    image_folder, linear_keras, tmp_path
):
    # Before 2026-12-05 --tolerance 0.002 bounded completeness by the default 0.005; this
    # version bounds it by 0.002. The same command cannot resume such a run, and "Resume
    # with the same flags" misled: they were the same. The message names the value to pass.
    output = tmp_path / "out"
    args = cli_args(
        dataset=image_folder["root"], model=linear_keras, output=output, attributions="none"
    )
    flags = [*args, "--tolerance", "0.002"]
    manifest = run([*flags, "--completeness_tolerance", "0.005"], save_main_session=False)
    assert manifest["config"]["completeness_tolerance"] == 0.005  # as that version wrote it
    message = (
        r"differs in --completeness_tolerance \(earlier run: 0.005, this run: 0.002\)\. "
        r"Resume with the same flags and --completeness_tolerance 0.005 \(the earlier run's: "
        r"versions before 2026-12-05 bounded completeness by 0.005 at any --tolerance\), or "
        r"start over with --overwrite\.$"
    )
    with pytest.raises(ValueError, match=message):
        run([*flags, "--resume"], save_main_session=False)
    manifest = run([*flags, "--completeness_tolerance", "0.005", "--resume"])
    assert manifest["counts"]["skipped_done_before"] == 4


def test_resume_from_a_fixed_rule_run_at_another_tolerance_says_to_pass_the_same_flags(
    done_run, tmp_path
):
    # At --tolerance 0 completeness bounds nothing: a run resumed at another --tolerance
    # (its completeness bound differing too) is told to pass the same flags, not the
    # completeness bound that versions before 2026-12-05 used at a --tolerance above 0.
    output = tmp_path / "out"
    done_run["copy"](output)
    manifest = json.loads((output / "manifest.json").read_text())
    manifest["config"] |= {"tolerance": 0, "completeness_tolerance": 0.005}
    (output / "manifest.json").write_text(json.dumps(manifest))
    flags = [*done_run["args"](output), "--steps", "2", "--tolerance", "0.002"]
    with pytest.raises(ValueError) as e:
        run([*flags, "--resume"], save_main_session=False)
    assert "--completeness_tolerance (earlier run: 0.005, this run: 0.002)" in str(e.value)
    assert str(e.value).endswith(" Resume with the same flags, or start over with --overwrite.")


@pytest.mark.parametrize("again", ["--resume", "--overwrite"])
def test_a_cut_errors_file_is_redone_and_the_users_files_beside_the_run_are_kept(
    again, done_run, tmp_path
):
    # An errors file cut short (a full disk) holds no record a resume needs: its
    # inputs are retried. A user's notes and folder beside the run are never touched.
    output = tmp_path / "out"
    done_run["copy"](output)
    (errors_file,) = (output / "errors").glob("*.parquet")
    errors_file.write_bytes(errors_file.read_bytes()[:50])
    mine = {output / "notes.txt": "mine", output / "drafts" / "plan.md": "mine too"}
    for path, text in mine.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    manifest = run([*done_run["args"](output), "--steps", "2", again], save_main_session=False)
    assert manifest["all_inputs_accounted_for"] and manifest["counts"]["inputs"] == 5
    results = pd.read_parquet(output / "results")
    assert sorted(results.image_id) == sorted(done_run["pixels"])  # each once
    assert pd.read_parquet(output / "errors").image_id.tolist() == ["broken.jpg"]
    assert {path: path.read_text() for path in mine} == mine
