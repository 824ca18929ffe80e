"""The pixel range a SavedModel's own graph takes (transforms/model/graph_scaling.py):
its first affine ops of constants, where constants alone make those constants."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from pipeline.__main__ import main
from tests.conftest import SIZE, cli_args

# Means and variances a Normalization takes: of 8-bit pixels ([-1, 1] from [0, 255],
# torchvision's ImageNet means and deviations in 0-255 units) or of [0, 1] pixels.
_IMAGENET_MEAN, _IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
_STATS = {
    "signed_8_bit": ([127.5] * 3, [127.5**2] * 3, (0.0, 255.0)),
    "imagenet_8_bit": (list(255 * _IMAGENET_MEAN), list((255 * _IMAGENET_STD) ** 2), (0.0, 255.0)),
    "imagenet_unit": (list(_IMAGENET_MEAN), list(_IMAGENET_STD**2), (0.0, 1.0)),
    "signed_unit": ([0.5] * 3, [0.25] * 3, (0.0, 1.0)),
}


def _normalizing_export(path, mean: list[float], variance: list[float]) -> str:
    """A Keras model of 5 classes that first normalises by a constant `mean` and
    `variance` (given to its Normalization, not adapted), exported with model.export:
    its graph divides by Maximum(Sqrt(variance), epsilon), the constants captured."""
    import keras

    keras.utils.set_random_seed(4)
    layers = keras.layers
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Normalization(mean=mean, variance=variance, name="normalize")(inputs)
    x = layers.Conv2D(4, 3, activation="relu", bias_initializer="glorot_uniform")(x)
    x = layers.Dense(5, bias_initializer="glorot_uniform")(layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, x).export(str(path), verbose=False)
    return str(path)


@pytest.mark.parametrize("stats", list(_STATS))
def test_a_keras_export_normalising_by_constant_statistics_takes_the_range_they_are_of(
    stats, tmp_path
):
    """A Normalization by means and variances given as constants (torchvision-style
    ImageNet statistics) took 8-bit pixels in its .keras file but [0, 1] pixels in its
    model.export(): the graph divides by Maximum(Sqrt(variance), epsilon), not by a
    Const. Folded, its Sub and RealDiv map [0, 255] onto about [-1, 1] or ImageNet's
    [-2.1, 2.6]; statistics of [0, 1] pixels still give [0, 1]. Loaded or not."""
    from transforms.model.graph_scaling import saved_model_scaling
    from transforms.tf_model import resolve_model

    mean, variance, pixels = _STATS[stats]
    model = _normalizing_export(tmp_path / stats, mean, variance)
    scaling = saved_model_scaling(model)
    assert [op for _, op in scaling.ops] == ["Sub", "RealDiv"]
    np.testing.assert_allclose(scaling.scale.ravel(), 1 / np.sqrt(variance), rtol=1e-6)
    np.testing.assert_allclose(scaling.offset.ravel(), -np.divide(mean, np.sqrt(variance)), 1e-6)
    for load in (True, False):
        assert resolve_model(model, load=load).input_range == pixels, load


@pytest.mark.parametrize("pixels", [(0.0, 255.0), (0.0, 1.0)])
def test_a_normalization_adapted_on_images_takes_the_range_of_those_images(pixels, tmp_path):
    """Keras keeps an adapted Normalization's means and variances as constants of its
    model.export() (tensors computed once it is adapted, captured by the function):
    adapted on 8-bit pixels, the export takes them, as its .keras file does."""
    import keras

    from transforms.tf_model import resolve_model

    adapted = keras.layers.Normalization()
    adapted.adapt(np.random.default_rng(5).uniform(*pixels, (4, SIZE, SIZE, 3)))
    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(adapted(inputs))))
    model.export(str(tmp_path / "exported"), verbose=False)
    model.save(str(tmp_path / "adapted.keras"))
    for path in ("exported", "adapted.keras"):
        for load in (True, False):
            assert resolve_model(str(tmp_path / path), load=load).input_range == pixels, path


@pytest.mark.parametrize("stats", ["imagenet_8_bit", "imagenet_unit"])
def test_each_row_of_a_normalising_export_is_its_score_of_the_image_in_its_range(
    stats, image_folder, tmp_path
):
    """The job feeds such an export the range its statistics are of: each row's
    target_score is the export's own score of the stored image in that range."""
    import tensorflow as tf

    from transforms.images import scale_to_range
    from transforms.results import input_images, read_results

    mean, variance, pixels = _STATS[stats]
    model = _normalizing_export(tmp_path / "exported", mean, variance)
    output = tmp_path / "out"
    flags = cli_args(
        runner="DirectRunner", dataset=image_folder["root"], model=model, output=output
    )
    assert main([*flags, "--steps", "4", "--faithfulness", "none"]) == 0
    manifest = json.loads((output / "manifest.json").read_text())
    assert tuple(manifest["model"]["input_range"]) == pixels
    rows = read_results(str(output))
    seen = input_images(str(output), rows.image_id)
    images = np.stack([scale_to_range(seen[i], pixels) for i in rows.image_id])
    exported = tf.saved_model.load(model)  # held: its functions need its variables
    np.testing.assert_allclose(rows.target_score, exported.serve(images).numpy().max(1), 1e-4)


def test_a_modules_call_of_captured_constant_statistics_is_folded_and_others_are_not(tmp_path):
    """A tf.Module whose __call__ normalises by constants it captured (arguments bound
    to the graph's Const nodes), through Reshape, Cast, Sqrt and Maximum, takes 8-bit
    pixels; one whose divisor passes an op the walker does not fold (Abs), or a
    variable, is not read as a guess: the walk ends at the division, a Sub of 127.5
    alone, which takes no 8-bit pixels (fed [0, 1])."""
    import tensorflow as tf

    from transforms.model.graph_scaling import saved_model_scaling

    spec = tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)

    class Normalizing(tf.Module):
        def __init__(self, divisor):
            super().__init__()
            self.mean = tf.constant([127.5, 127.5, 127.5], tf.float64)
            self.variance = tf.constant([[127.5**2] * 3])
            self.deviation = tf.Variable(127.5)
            self.divisor = divisor

        @tf.function(input_signature=[spec])
        def __call__(self, x):
            mean = tf.reshape(tf.cast(self.mean, tf.float32), [1, 1, 1, 3])
            return tf.reduce_mean((x - mean) / self.divisor(self), [1, 2])

    divisors = {
        "folded": lambda m: tf.maximum(tf.sqrt(tf.reshape(m.variance, [3])), 1e-7),
        "abs": lambda m: tf.abs(tf.sqrt(m.variance)),
        "variable": lambda m: m.deviation,
    }
    for name, divisor in divisors.items():
        tf.saved_model.save(Normalizing(divisor), str(tmp_path / name))
    folded = saved_model_scaling(str(tmp_path / "folded"))
    np.testing.assert_allclose(folded.scale, [1 / 127.5] * 3)
    np.testing.assert_allclose(folded.offset.ravel(), [-1.0] * 3)
    assert [op for _, op in folded.ops] == ["Sub", "RealDiv"]
    for name in ("abs", "variable"):
        unfolded = saved_model_scaling(str(tmp_path / name))
        assert [op for _, op in unfolded.ops] == ["Sub"], name  # the divisor ends the walk


# Hand-written normalisations of 8-bit pixels to [-1, 1], (x - mean) / deviation, whose
# constants pass one op each that the walker folds: 127.5 and 127.5 in other shapes.
_FOLDED_OPS = {
    "ExpandDims": lambda tf, x: (x - tf.expand_dims(tf.constant([127.5] * 3), 0)) / 127.5,
    "Squeeze": lambda tf, x: (x - tf.squeeze(tf.constant([[[127.5]] * 3]), [2])) / 127.5,
    # No axes: all of size 1 (the proto leaves out the attribute at its default).
    "Squeeze all": lambda tf, x: (x - tf.squeeze(tf.constant([[127.5] * 3]))) / 127.5,
    "BroadcastTo": lambda tf, x: (x - tf.broadcast_to(tf.constant(127.5), [3])) / 127.5,
    "Pow": lambda tf, x: (x - 127.5) / tf.pow(tf.constant([127.5**2] * 3), 0.5),
    "Exp": lambda tf, x: (x - 127.5) / tf.exp(tf.constant(np.log([127.5] * 3), tf.float32)),
    "Log": lambda tf, x: (x - 127.5 * tf.math.log(tf.constant(np.e, tf.float32))) / 127.5,
    "DivNoNan": lambda tf, x: (x - 127.5) * tf.math.divide_no_nan(1.0, tf.constant(127.5)),
}


@pytest.mark.parametrize("op", list(_FOLDED_OPS))
def test_a_normalisation_whose_constants_pass_a_shape_or_math_op_is_read(op, tmp_path):
    """Known answers: an export normalising 8-bit pixels to [-1, 1] by constants made
    with ExpandDims, Squeeze, BroadcastTo, Pow, Exp, Log or DivNoNan of constants alone
    was fed [0, 1] pixels: the walk ended at the first op it could not fold, its range
    unread. Each folds as TensorFlow computes it: scale 1 / 127.5, offset -1, and the
    launch reads the 8-bit range from the graph."""
    import tensorflow as tf

    from transforms.model.graph_scaling import saved_model_scaling
    from transforms.tf_model import resolve_model

    class Normalizing(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            return tf.reduce_mean(_FOLDED_OPS[op](tf, x), [1, 2])

    tf.saved_model.save(Normalizing(), str(tmp_path / op))
    assert op.split()[0] in {node.op for f in _functions(tmp_path / op) for node in f.node_def}
    scaling = saved_model_scaling(str(tmp_path / op))
    assert scaling is not None
    per_channel = [
        np.broadcast_to(v, (1, 1, 1, 3)).ravel() for v in (scaling.scale, scaling.offset)
    ]
    np.testing.assert_allclose(per_channel[0], [1 / 127.5] * 3, rtol=1e-6)
    np.testing.assert_allclose(per_channel[1], [-1.0] * 3, rtol=1e-6)
    assert resolve_model(str(tmp_path / op), load=False).input_range == (0.0, 255.0)


def test_div_no_nan_folds_to_zero_where_it_divides_by_zero():
    """TensorFlow's DivNoNan gives 0 where the divisor is 0, x / y elsewhere."""
    from transforms.model.graph_scaling import _FOLDED_BINARY

    folded = _FOLDED_BINARY["DivNoNan"](np.float32([1, 2, 3]), np.float32([0, 4, -2]))
    np.testing.assert_array_equal(folded, [0.0, 0.5, -1.5])


def _functions(path) -> list:
    """The library functions of the SavedModel at `path`."""
    from tensorflow.python.saved_model import loader_impl

    return list(loader_impl.parse_saved_model(str(path)).meta_graphs[0].graph_def.library.function)


def test_a_tf_hub_handle_is_walked_as_the_folder_tf_hub_loads(tmp_path, monkeypatch):
    """A --model given as a TF Hub handle is loaded from the folder TF Hub resolves it
    to (its cache, offline); its graph is read as a SavedModel folder's is: a Keras
    export that rescales 8-bit pixels is fed [0, 255], not [0, 1]."""
    import keras

    from transforms.tf_model import resolve_model

    handle = "https://tfhub.dev/someone/rescaling_classifier/1"
    folder = tmp_path / hashlib.sha1(handle.encode()).hexdigest()
    inputs = keras.Input((SIZE, SIZE, 3))
    scaled = keras.layers.Rescaling(1 / 255)(inputs)
    outputs = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(scaled))
    keras.Model(inputs, outputs).export(str(folder), verbose=False)
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    spec = resolve_model(handle)
    assert (spec.kind, spec.input_range) == ("hub", (0.0, 255.0))
    assert resolve_model(str(folder)).input_range == (0.0, 255.0)  # the folder itself
