"""The TF adapter, preprocessing and the RunInference handler, on real tiny models."""

import dataclasses
import logging
import re
import threading

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import RunInference
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import SIZE
from transforms import baselines as baselines_lib
from transforms import batch, ig, tf_model
from transforms.attribution import ERRORS_TAG, IGModelHandler, ImageExample, Preprocess
from transforms.config import ESTIMATE_MARGIN, AttributionConfig
from transforms.preprocess import NAMESPACE
from transforms.sources import RawImage
from transforms.tf_model import Classifier, ModelHandoff, resolve_model

RNG = np.random.default_rng(5)


def _examples(n, labels=None):
    labels = labels or [None] * n
    return [
        ImageExample(
            f"img{i}",
            f"img{i}.png",
            labels[i],
            RNG.uniform(0, 1, (SIZE, SIZE, 3)).astype(np.float32),
        )
        for i in range(n)
    ]


def test_model_reference_is_decided_from_the_string_alone(tmp_path):
    ref = tf_model.model_reference
    assert ref("efficientnet_lite0") == tf_model.ModelReference(
        "efficientnet_lite0", "bundled", "efficientnet_lite0"
    )
    assert ref("inception_v1").kind == "hub"
    assert ref("inception_v1").location == tf_model.HUB_ALIASES["inception_v1"]
    assert ref("https://tfhub.dev/x/y.keras").kind == "hub"  # a handle, whatever its ending
    assert ref("gs://b/m.keras").kind == "keras" and not ref("gs://b/m.keras").is_local_path
    assert ref("/models/folder").kind == "saved_model" and ref("/models/folder").is_local_path
    assert not ref("inception_v1").is_path and ref("/m.keras").is_path
    ref(str(tmp_path)).check_exists()  # exists: its contents are checked when resolved
    with pytest.raises(ValueError, match="no such .keras file"):
        ref(str(tmp_path / "missing.keras")).check_exists()


def test_resolve_keras_and_saved_model_specs(linear_keras, quadratic_saved_model):
    keras_spec = resolve_model(linear_keras)
    assert (keras_spec.kind, keras_spec.image_size, keras_spec.num_outputs) == ("keras", SIZE, 1000)
    assert keras_spec.label_offset == 0 and keras_spec.input_range == (0.0, 1.0)
    assert keras_spec.identity.startswith("sha256:")
    saved = resolve_model(quadratic_saved_model, input_range=(-1.0, 1.0))
    assert (saved.kind, saved.image_size, saved.input_range) == ("saved_model", SIZE, (-1.0, 1.0))
    assert resolve_model(quadratic_saved_model).identity == saved.identity
    # From Python, as --input_range's parser refuses it: black and white would swap.
    with pytest.raises(ValueError, match=r"input_range \(1, 0\) needs low < high"):
        resolve_model(quadratic_saved_model, input_range=(1, 0))


def _save_softmax_on_nonnegative_inputs(path: str) -> None:
    """Outputs sum to 1 (a softmax) only for images without negative pixels."""
    import tensorflow as tf

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            means = tf.reduce_mean(x, axis=[1, 2])
            negative = tf.nn.relu(-tf.reduce_min(x, axis=[1, 2, 3]))[:, None]
            return tf.nn.softmax(means, axis=-1) * (1.0 + negative)

    tf.saved_model.save(Model(), path)


@pytest.mark.parametrize("input_range, probabilities", [((0.0, 1.0), True), ((-1.0, 1.0), False)])
def test_launch_and_workers_agree_whether_outputs_are_probabilities(
    tmp_path, caplog, input_range, probabilities
):
    """Both probe plain images at the ends of the input range (the launch used 0
    and 0.5, and told a [-1, 1] model's user the opposite of what workers did)."""
    path = str(tmp_path / "model")
    _save_softmax_on_nonnegative_inputs(path)
    with caplog.at_level("WARNING"):
        spec = resolve_model(path, input_range=input_range)
    assert ("ends in a softmax" in caplog.text) == probabilities
    assert Classifier(spec, jit_compile=False).outputs_probabilities == probabilities


def _save_bfloat16_softmax(path: str) -> np.ndarray:
    """A softmax head returned in bfloat16 (a mixed_bfloat16 model's, as TPUs train
    them): probabilities (0.50176, 0.25, 0.24824), nearly constant, rounded to bfloat16's
    8 bits they sum to 0.998, 2e-3 from 1 (bfloat16's spacing at 0.5 is 2^-8). Returns them
    as the model gives them, float32."""
    import tensorflow as tf

    logits = np.log(np.array([0.50176, 0.25, 0.24824], np.float32))

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            shift = 1e-6 * tf.reduce_mean(x, axis=[1, 2])  # a gradient, no other rounding
            return tf.cast(tf.nn.softmax(logits + shift, axis=-1), tf.bfloat16)

    tf.saved_model.save(Model(), path)
    return np.asarray(tf.cast(tf.cast(tf.nn.softmax(logits), tf.bfloat16), tf.float32))


def test_a_softmax_head_in_bfloat16_is_known_for_one_by_the_launch_and_workers(tmp_path, caplog):
    """Rounded to bfloat16, a softmax's outputs sum to 1 only within 2^-8: they were
    taken for logits (their sum checked within 1e-3), so top_k_probs were a softmax of
    the probabilities (a 0.5 of the model's came out 0.39) and --score softmax attributed
    that."""
    path = str(tmp_path / "model")
    probabilities = _save_bfloat16_softmax(path)
    assert abs(probabilities.sum() - 1) > 1e-3  # the case: beyond the float32 bound
    handoff = ModelHandoff()
    with caplog.at_level("WARNING"):
        spec = resolve_model(path, handoff=handoff)
    assert "ends in a softmax" in caplog.text
    for model in (Classifier(spec, handoff=handoff), Classifier(spec)):  # launcher's, own load
        assert model.outputs_probabilities
        outputs = model.logits(np.zeros((2, SIZE, SIZE, 3), np.float32))
        np.testing.assert_array_equal(model.probabilities(outputs)[0], probabilities)


def test_a_classifier_from_python_gives_exact_ig_of_a_linear_model_and_names_its_scores(
    linear_keras, linear_weights
):
    """The notebook path: resolve_model, Classifier and integrated_gradients on a
    .keras file, exact for every rule; a score name it has not was a KeyError."""
    spec = resolve_model(linear_keras)
    model = Classifier(spec, jit_compile=False)
    x = np.random.default_rng(5).uniform(size=(1, SIZE, SIZE, 3)).astype(np.float32)
    refs = baselines_lib.make_baselines(x[0], ["black", "grey"], spec.input_range, "x")[None]
    exact = ((x - refs) * linear_weights[0][:, 7].reshape(SIZE, SIZE, 3)).mean(axis=1)
    for method in ig.METHODS:
        settings = ig.IGSettings(method, 4)
        result = ig.integrated_gradients(model.integrand_fn("raw"), x, refs, [0], [7], settings)
        np.testing.assert_allclose(result.attributions, exact, rtol=1e-4, atol=1e-6)
    for make in (model.integrand_fn, model.score_grad_fn, model.score_fn):
        with pytest.raises(ValueError, match="score must be one of raw, softmax, got 'logit'"):
            make("logit")


def test_a_worker_refuses_a_model_without_gradient_that_a_proto_launch_accepted(tmp_path):
    """A Dataflow launch reads the SavedModel's proto, which cannot tell that its scores
    (a one-hot of the argmax) have no input gradient: the worker's load says so,
    instead of failing every batch inside the IG graph."""
    import tensorflow as tf

    class OneHot(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            return tf.one_hot(tf.argmax(tf.reduce_mean(x, axis=[1, 2]), axis=1), 3)

    path = str(tmp_path / "one_hot")
    tf.saved_model.save(OneHot(), path)
    spec = resolve_model(path, load=False)  # the proto gives [None, 16, 16, 3] -> 3
    assert spec.num_outputs == 3
    with pytest.raises(ValueError, match="has no gradient with respect to its input images"):
        Classifier(spec, jit_compile=False)


@pytest.mark.parametrize(
    "outputs, activation, kernel, bias, warning",
    [
        (1, None, "ones", 1.0, "has 1 output: every image's predicted_class is 0 and its top_k"),
        (3, "sigmoid", "ones", 1.0, "outputs lie in [0, 1] without summing to 1, as a sigmoid"),
        (3, None, "ones", 1.0, None),  # logits: top_k_probs are their softmax, as documented
        (3, None, "ones", -2.0, None),  # logits -2 and 1: at most 1, but not in [0, 1]
        # Logits exactly 0 on both plain images (a linear model without bias): in [0, 1],
        # but no sigmoid gives exactly 0.
        (3, None, "zeros", 0.0, None),
        # Logits 0.5 (a linear head, as a small untrained one gives): strictly in (0, 1),
        # but its last layer says they are logits, whose softmax top_k_probs rightly are.
        (3, None, "zeros", 0.5, None),
    ],
)
def test_launch_warns_where_top_k_probs_are_not_the_models_probabilities(
    tmp_path, caplog, outputs, activation, kernel, bias, warning
):
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    # Probed on plain images at 0 and 1: logits 3 x 0 + bias and 3 x 1 + bias, or
    # their sigmoids.
    weights = {"kernel_initializer": kernel, "bias_initializer": keras.initializers.Constant(bias)}
    dense = keras.layers.Dense(outputs, activation=activation, **weights)
    path = str(tmp_path / "model.keras")
    keras.Model(inputs, dense(pooled)).save(path)
    with caplog.at_level("WARNING"):
        resolve_model(path)
    if warning is None:
        assert "top_k_probs" not in caplog.text, caplog.text
    else:
        assert warning in caplog.text


@pytest.mark.parametrize("activation, warned", [(None, False), ("sigmoid", True)])
def test_a_nested_heads_last_layer_tells_logits_from_sigmoid_outputs(
    tmp_path, caplog, activation, warned
):
    # The model's last layer is itself a model (a head built apart): its own last layer
    # says whether outputs of 0.5 are logits (a linear Dense: no warning) or sigmoids.
    import keras

    head_inputs = keras.Input((3,))
    weights = {"kernel_initializer": "zeros", "bias_initializer": keras.initializers.Constant(0.5)}
    dense = keras.layers.Dense(3, activation=activation, **weights)
    head = keras.Model(head_inputs, dense(head_inputs))
    inputs = keras.Input((SIZE, SIZE, 3))
    path = str(tmp_path / "nested.keras")
    keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D()(inputs))).save(path)
    with caplog.at_level("WARNING"):
        resolve_model(path)
    assert ("as a sigmoid (multi-label) head's do" in caplog.text) is warned, caplog.text


def test_a_launch_that_does_not_load_the_model_warns_of_one_output(tmp_path, caplog, monkeypatch):
    # A remote job's launch reads the SavedModel's signature without running it: the
    # width it reads is enough to warn of a 1-output model, as a loading launch does.
    import tensorflow as tf

    module = tf.Module()
    module.w = tf.Variable(tf.ones([3, 1]))

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
    def call(images):
        return tf.reduce_mean(images, [1, 2]) @ module.w

    module.__call__ = call
    path = str(tmp_path / "one_output")
    tf.saved_model.save(module, path)
    monkeypatch.setattr(tf_model, "_load", None)  # loading it would fail the test
    with caplog.at_level("WARNING"):
        spec = resolve_model(path, load=False)
    assert spec.num_outputs == 1
    assert "has 1 output: every image's predicted_class is 0" in caplog.text


def test_a_local_job_loads_its_model_once(quadratic_saved_model, monkeypatch):
    # The launcher loads the model to learn its signature; the DirectRunner's
    # in-process worker takes that object over (through the job's hand-off)
    # instead of loading it again.
    loads = []
    real = tf_model._load
    monkeypatch.setattr(tf_model, "_load", lambda *a: loads.append(a) or real(*a))
    handoff = tf_model.ModelHandoff()
    spec = resolve_model(quadratic_saved_model, handoff=handoff)
    first = Classifier(spec, handoff=handoff)
    assert len(loads) == 1 and not handoff.holding
    x = np.full((1, SIZE, SIZE, 3), 0.5, np.float32)
    second = Classifier(spec, handoff=handoff)  # handed over once: a second worker loads its own
    assert len(loads) == 2 and second._model is not first._model
    np.testing.assert_allclose(first.logits(x), second.logits(x), rtol=1e-6)
    # A spec of other files (another identity) never gets the launcher's object.
    resolve_model(quadratic_saved_model, handoff=handoff)
    Classifier(dataclasses.replace(spec, identity="sha256:" + "0" * 64), handoff=handoff)
    assert len(loads) == 4
    # Released after a launch to a remote runner: nothing is handed over.
    resolve_model(quadratic_saved_model, handoff=handoff)
    handoff.release()
    Classifier(spec, handoff=handoff)
    assert len(loads) == 6
    # Without a hand-off (a remote worker, the sanity check), every Classifier loads.
    resolve_model(quadratic_saved_model)
    Classifier(spec)
    assert len(loads) == 8


def test_the_handoff_pickles_as_itself_here_and_empty_elsewhere(quadratic_saved_model):
    # Beam pickles the model handler, hand-off included: the DirectRunner's
    # in-process worker unpickles the launcher's own hand-off; a process that
    # never had it (a remote worker) gets an empty one and loads its own model.
    import pickle
    import subprocess
    import sys

    handoff = tf_model.ModelHandoff()
    spec = resolve_model(quadratic_saved_model, handoff=handoff)
    assert pickle.loads(pickle.dumps(handoff)) is handoff and handoff.holding
    code = (
        "import pickle, sys; h = pickle.loads(sys.stdin.buffer.read()); "
        "print(type(h).__name__, h.holding)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps(handoff), capture_output=True, check=True
    )
    assert done.stdout.decode().split() == ["ModelHandoff", "False"]
    assert Classifier(spec, handoff=handoff)._model is not None and not handoff.holding


def test_hub_handle_1001_outputs_gets_offset_one(offline_hub):
    spec = resolve_model("inception_v1")
    assert spec.location.startswith("https://tfhub.dev/google/imagenet/inception_v1")
    assert (spec.num_outputs, spec.label_offset, spec.num_classes) == (1001, 1, 1000)
    assert resolve_model("inception_v1", label_offset=0).num_classes == 1001


def test_a_background_class_models_top_k_probs_are_of_its_classes(offline_hub):
    # Output 0 is the background class (label offset 1): the probability listed for
    # class c is that of output c + 1, the softmax score its row attributes, not
    # that of output c (class c - 1).
    config = AttributionConfig(
        steps=2, score="softmax", target="top_k", top_k=3, attributions="none",
        faithfulness="none",
    )  # fmt: skip
    (outcome,) = _run_handler(resolve_model("inception_v1"), config, _examples(1))
    score = {row["target_class"]: row["target_score"] for row in outcome.rows}
    first = outcome.rows[0]
    assert list(score) == first["top_k_classes"].tolist()
    np.testing.assert_allclose(first["top_k_probs"], list(score.values()), rtol=1e-6)


def test_hub_handle_not_cached_offline_explains(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="Downloading TF Hub models needs network"):
        resolve_model("https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/classification/5")


def test_classifier_gradients_are_the_analytic_ones(quadratic_saved_model, quadratic_weights):
    model = Classifier(resolve_model(quadratic_saved_model))
    x = RNG.uniform(0, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
    base = np.zeros_like(x)
    alphas = np.array([1.0, 0.5, 0.25], np.float32)
    targets = np.array([0, 7, 999])
    scores, grads = model.score_grad_fn("raw")(x, base, alphas, targets)
    points = alphas[:, None, None, None] * x
    for j in range(3):
        w = quadratic_weights[:, targets[j]].reshape(SIZE, SIZE, 3)
        np.testing.assert_allclose(scores[j], np.sum(points[j] ** 2 * w), rtol=1e-4)
        np.testing.assert_allclose(grads[j], 2 * points[j] * w, rtol=1e-4, atol=1e-7)
    assert model.settings.device == "CPU" and model.settings.jit_compile is False


def _run_handler(spec, config, examples, names=None):
    handler = IGModelHandler(spec, config, names, batch_size=len(examples))
    return handler.run_inference(examples, handler.load_model())


def test_handler_quadratic_model_known_answer(quadratic_saved_model, quadratic_weights):
    spec = resolve_model(quadratic_saved_model)
    examples = _examples(2)
    outcomes = _run_handler(spec, AttributionConfig(steps=4, method="riemann_middle"), examples)
    for ex, outcome in zip(examples, outcomes, strict=True):
        (row,) = outcome.rows
        w = quadratic_weights[:, row["target_class"]].reshape(SIZE, SIZE, 3)
        # F = sum x^2 w along a straight path from black: integrand linear in alpha,
        # so the midpoint rule is exact: IG = x^2 w.
        np.testing.assert_allclose(row["attributions"], ex.image**2 * w, rtol=1e-4, atol=1e-7)
        assert row["relative_delta"] < 1e-4 and row["within_tolerance"]


def test_the_softmax_score_attributes_the_probability_from_its_baseline(
    quadratic_saved_model, quadratic_weights
):
    # --score softmax: the map, target_score and baseline_score are all of the
    # target's probability, so that completeness holds against them.
    spec = resolve_model(quadratic_saved_model)
    examples = _examples(1)
    config = AttributionConfig(steps=9, score="softmax", faithfulness="none")
    (row,) = _run_handler(spec, config, examples)[0].rows
    image = examples[0].image.astype(np.float64)
    logits = (image**2).reshape(1, -1) @ quadratic_weights[:, :1000]  # the model's 1000
    probs = tf_model.softmax(np.vstack([logits, np.zeros_like(logits)]))
    target = row["target_class"]
    assert row["target_score"] == pytest.approx(probs[0, target], rel=1e-4)
    assert row["baseline_score"] == pytest.approx(probs[1, target], rel=1e-4)
    assert row["relative_delta"] <= config.completeness_tolerance and row["within_tolerance"]


def test_a_constant_baseline_is_forwarded_once_per_batch(quadratic_saved_model, monkeypatch):
    spec = resolve_model(quadratic_saved_model)
    examples = _examples(3)
    # No faithfulness curves: their forward passes go through `logits` too.
    config = AttributionConfig(steps=3, baselines=("black", "noise"), faithfulness="none")
    handler = IGModelHandler(spec, config, None, batch_size=3)
    model = handler.load_model()
    sizes, real = [], model.logits
    monkeypatch.setattr(model, "logits", lambda x: sizes.append(len(x)) or real(x))
    outcomes = handler.run_inference(examples, model)
    # The images, then one black baseline and three (seeded, distinct) noise ones.
    assert sizes == [3, 4]
    for ex, outcome in zip(examples, outcomes, strict=True):
        (row,) = outcome.rows
        refs = baselines_lib.make_baselines(
            ex.image, config.baselines, spec.input_range, ex.image_id, config.seed
        )
        expected = real(refs)[:, row["target_class"]].mean()
        np.testing.assert_allclose(row["baseline_score"], expected, rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_uniform_image_against_its_blur_has_a_zero_map_without_refinement(
    quadratic_saved_model, dtype
):
    # Square and of one colour, it is its own blur: IG is exactly 0 at --steps evaluations, as for a black
    # image and --baseline black. The blur missed it by a float32 rounding, and the
    # row was refined to --max_steps (256 evaluations) on that rounding's map. A map
    # of zeros is exact in float16 too: no storage error.
    spec = resolve_model(quadratic_saved_model)
    image = np.broadcast_to(np.float32([37, 250, 3]) / 255, (SIZE, SIZE, 3)).astype(np.float32)
    examples = [ImageExample("flat.png", "flat.png", None, image)]
    config = AttributionConfig(baselines=("blur",), attribution_dtype=dtype)
    (outcome,) = _run_handler(spec, config, examples)
    (row,) = outcome.rows
    assert row["evaluations"] == row["steps"] == 25
    assert not np.any(row["attributions"])
    assert row["baseline_score"] == row["target_score"] and row["relative_delta"] == 0
    assert row["attribution_error"] == 0 and row["within_tolerance"]


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_results_do_not_depend_on_image_or_path_batch_size(quadratic_saved_model, method):
    spec = resolve_model(quadratic_saved_model)
    examples = _examples(3)
    kwargs = dict(steps=5, method=method, target="top_k", top_k=2, baselines=("black", "noise"))
    big = _run_handler(spec, AttributionConfig(path_batch_size=64, **kwargs), examples)
    small = [
        _run_handler(spec, AttributionConfig(path_batch_size=3, **kwargs), [ex])[0]
        for ex in examples
    ]
    for a, b in zip(big, small, strict=True):
        assert len(a.rows) == len(b.rows) == 2
        for ra, rb in zip(a.rows, b.rows, strict=True):
            assert ra["target_class"] == rb["target_class"]
            np.testing.assert_allclose(ra["attributions"], rb["attributions"], rtol=1e-5, atol=1e-8)
            np.testing.assert_allclose(ra["target_score"], rb["target_score"], rtol=1e-6)


def test_gradient_calls_take_the_devices_path_points_unless_the_flag_says(
    quadratic_saved_model, monkeypatch
):
    # This machine (and CI) has no GPU: on CPUs `auto` times 8 and 16 points
    # per call, the untimed sizes first (`CallSizeTuner`), within calls of 16.
    settings = tf_model.device_settings()
    assert (settings.path_batch_size, settings.tuned_sizes) == (16, (8, 16))
    spec = resolve_model(quadratic_saved_model)
    examples = _examples(3)
    # 3 images x 16 nodes = 48 points a batch, in even calls; with auto, at 8
    # until three calls of 8 are timed, then 16.
    for flag, batches in ((None, [[8] * 6, [16] * 3]), (5, [[5, 5, 4, 5, 5] * 2] * 2)):
        config = AttributionConfig(
            steps=16, tolerance=0.0, faithfulness="none", path_batch_size=flag
        )
        handler = IGModelHandler(spec, config, None, batch_size=3)
        model = handler.load_model()
        sizes, real = [], model.integrand_fn
        monkeypatch.setattr(
            model,
            "integrand_fn",
            lambda s, tuned=False, real=real, sizes=sizes: _recording(real(s, tuned), sizes),
        )
        for expected in batches:
            sizes.clear()
            handler.run_inference(examples, model)
            assert sizes == expected, (flag, sizes)
        sizes.clear()
        handler.run_inference(examples, model)
        assert sum(sizes) == 48 and max(sizes) <= (flag or 16), sizes
        # Only the tuned function's calls teach the tuner: both sizes timed with auto.
        timed = {size: len(rates) for size, rates in model.tuner._rates.items()}
        assert timed == ({8: 3, 16: 3} if flag is None else {8: 0, 16: 0}), (flag, timed)


def _recording(integrand, sizes):
    def run(images, references, index, *rest):
        sizes.append(len(index))
        return integrand(images, references, index, *rest)

    if hasattr(integrand, "call_size"):
        run.call_size = integrand.call_size
    return run


def test_the_call_size_tuner_keeps_the_fastest_size_and_follows_a_change():
    tuner = tf_model.CallSizeTuner((32, 8, 16))
    speed = {8: 50.0, 16: 70.0, 32: 60.0}  # points per second

    def calls(n):
        chosen = []
        for _ in range(n):
            size = tuner.size()
            chosen.append(size)
            tuner.observe(size, size / speed[size])
            tuner.observe(4, 1e-9)  # half the smallest size: says little, not kept
            tuner.observe(33, 1e-9)  # more than the largest: not kept
        return chosen

    assert calls(9) == [8, 8, 8, 16, 16, 16, 32, 32, 32]  # each size timed three times
    later = calls(48)
    turns = [size for size in later if size != 16]  # every 8th choice tries another size
    assert tuner.best() == 16 and sorted(turns) == [8, 8, 8, 32, 32, 32]
    speed[32] = 90.0  # the machine changes: 32 now runs fastest
    assert calls(48)[-16:].count(32) == 14 and tuner.best() == 32


def test_the_call_size_tuner_files_a_call_under_its_own_points():
    # Threads share a process's model and so its tuner: another thread's choice
    # between a call's own choice and its timing must not file the call under it.
    tuner = tf_model.CallSizeTuner((8, 16))
    speed = {8: 50.0, 16: 100.0}
    for size in (8, 8, 8, 16, 16, 16):
        assert tuner.size() == size
        tuner.observe(size, size / speed[size])
    chosen = []
    for _ in range(16):  # thread A chooses, then thread B, then A's call ends
        a, b = tuner.size(), tuner.size()
        chosen.append((a, b))
        tuner.observe(a, a / speed[a])
    assert (16, 8) in chosen  # B's turns at exploring came between A's choice and timing
    assert tuner.best() == 16 and list(tuner._rates[8]) == [50.0] * 3


def test_refinement_refines_nothing_on_a_linear_model(linear_keras):
    # Linear model: every rule is exact and the estimate cannot move: one panel
    # (four nodes of the right rule) is all it takes.
    spec = resolve_model(linear_keras)
    (outcome,) = _run_handler(
        spec, AttributionConfig(steps=4, method="riemann_right", tolerance=1e-3), _examples(1)
    )
    (row,) = outcome.rows
    assert row["steps"] == 4 and row["evaluations"] == 4
    assert row["attribution_error"] < 1e-6 and row["within_tolerance"]


def test_rows_that_reach_max_steps_are_flagged(quadratic_saved_model):
    # F = sum x^2 w: the left rule is off on its linear integrand, and four
    # evaluations are all it may spend.
    spec = resolve_model(quadratic_saved_model)
    config = AttributionConfig(steps=4, method="riemann_left", tolerance=1e-4, max_steps=4)
    (outcome,) = _run_handler(spec, config, _examples(1))
    (row,) = outcome.rows
    assert row["evaluations"] == 4 and row["within_tolerance"] is False
    assert row["attribution_error"] > 1e-4 and row["relative_delta"] > 1e-4


def test_a_row_within_the_per_pixel_tolerance_but_not_completeness_is_flagged(
    quadratic_saved_model,
):
    # The same row: its map is a third off (within 0.5), its sum a quarter (not 1e-4).
    spec = resolve_model(quadratic_saved_model)
    config = AttributionConfig(
        steps=4, method="riemann_left", tolerance=0.5, completeness_tolerance=1e-4, max_steps=4
    )
    (outcome,) = _run_handler(spec, config, _examples(1))
    (row,) = outcome.rows
    assert row["attribution_error"] == pytest.approx(1 / 3, rel=1e-5)
    assert row["relative_delta"] == pytest.approx(1 / 4, rel=1e-5)
    assert row["within_tolerance"] is False


@pytest.mark.parametrize("tolerance, within", [(0.4, False), (0.42, True)])
def test_a_row_is_within_when_its_estimate_is_within_the_tolerance_over_the_margin(
    quadratic_saved_model, tolerance, within
):
    # The same row (its map a third off, all four evaluations spent): 1/3 is under
    # 0.4, but not under 0.4 / 1.25 = 0.32; it is under 0.42 / 1.25 = 0.336.
    spec = resolve_model(quadratic_saved_model)
    config = AttributionConfig(
        steps=4,
        method="riemann_left",
        tolerance=tolerance,
        completeness_tolerance=1.0,
        max_steps=4,
    )
    assert config.estimate_bound() == pytest.approx(tolerance / 1.25)
    (outcome,) = _run_handler(spec, config, _examples(1))
    (row,) = outcome.rows
    assert row["attribution_error"] == pytest.approx(1 / 3, rel=1e-5)
    assert row["within_tolerance"] is within


def test_refinement_drives_the_estimate_under_the_tolerance_over_the_margin(
    quadratic_saved_model,
):
    # Refined to --tolerance 0.05: the estimate ends under 0.04, not only under 0.05.
    spec = resolve_model(quadratic_saved_model)
    config = AttributionConfig(
        steps=4, method="riemann_left", tolerance=0.05, completeness_tolerance=1.0
    )
    (outcome,) = _run_handler(spec, config, _examples(1))
    (row,) = outcome.rows
    assert row["attribution_error"] <= 0.04 and row["within_tolerance"]
    assert row["evaluations"] > 4


def test_float16_maps_are_refined_with_room_for_their_storage_error(quadratic_saved_model):
    # The left rule on F = sum x^2 w stops just under 0.5 % in float32; a float16
    # map adds about 0.02 % of rounding, which refinement must leave room for.
    spec = resolve_model(quadratic_saved_model)
    rows = {}
    for dtype in ("float32", "float16"):
        config = AttributionConfig(
            steps=4,
            method="riemann_left",
            tolerance=5e-3 * ESTIMATE_MARGIN,  # the estimate held within 5e-3
            completeness_tolerance=1.0,
            attribution_dtype=dtype,
        )
        (outcome,) = _run_handler(spec, config, _examples(1))
        rows[dtype] = outcome.rows[0]
    assert rows["float32"]["attribution_error"] > 5e-3 - 2**-11  # no room left in float32
    assert rows["float16"]["steps"] > rows["float32"]["steps"]
    assert rows["float16"]["attribution_error"] <= 5e-3 and rows["float16"]["within_tolerance"]


def test_no_stored_map_has_no_room_left_for_float16_rounding(quadratic_saved_model):
    # With --attributions none nothing is stored, so --attribution_dtype changes no
    # row (as the launch warns): float16 refined further than float32 all the same.
    spec = resolve_model(quadratic_saved_model)
    examples = _examples(1)
    rows = {}
    for dtype in ("float32", "float16"):
        config = AttributionConfig(
            steps=4,
            method="riemann_left",
            tolerance=5e-3 * ESTIMATE_MARGIN,
            completeness_tolerance=1.0,
            attributions="none",
            attribution_dtype=dtype,
        )
        (outcome,) = _run_handler(spec, config, examples)
        rows[dtype] = outcome.rows[0]
    assert rows["float16"]["steps"] == rows["float32"]["steps"]
    assert rows["float16"]["attribution_error"] == rows["float32"]["attribution_error"]


def test_label_target_errors_for_unlabelled_and_out_of_range(linear_keras):
    spec = resolve_model(linear_keras)
    outcomes = _run_handler(
        spec, AttributionConfig(steps=2, target="label"), _examples(3, labels=[5, None, 1000])
    )
    assert outcomes[0].rows[0]["target_class"] == 5 and not outcomes[0].errors
    assert (
        outcomes[1].errors[0]["stage"] == "target" and "no label" in outcomes[1].errors[0]["error"]
    )
    assert "outside the model's 1000 classes" in outcomes[2].errors[0]["error"]
    assert not outcomes[1].rows and not outcomes[2].rows


def test_pixel_and_none_attribution_modes(linear_keras):
    spec = resolve_model(linear_keras)
    (ex,) = _examples(1)
    full = _run_handler(spec, AttributionConfig(steps=2), [ex])[0].rows[0]
    pixel_float16 = AttributionConfig(steps=2, attributions="pixel", attribution_dtype="float16")
    pixel = _run_handler(spec, pixel_float16, [ex])[0].rows[0]
    none = _run_handler(spec, AttributionConfig(steps=2, attributions="none"), [ex])[0].rows[0]
    assert pixel["attributions"].shape == (SIZE, SIZE) and pixel["attributions"].dtype == np.float16
    np.testing.assert_allclose(
        pixel["attributions"], full["attributions"].sum(-1), rtol=2e-3, atol=1e-4
    )
    assert none["attributions"] is None and none["attribution_shape"] is None
    assert none["attribution_sum"] == pytest.approx(full["attribution_sum"], rel=1e-6)
    # The error estimated and bounded is that of the map stored (engine tests).
    assert (
        pixel_float16.ig_settings().channel_sum
        and not AttributionConfig().ig_settings().channel_sum
    )


def test_tied_classes_rank_in_class_order(tmp_path):
    # Classes 500-999 tie for the top score: predicted_class and top_k take the
    # lowest indices first, as np.argmax does (an unstable sort took 968 and on).
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    bias = keras.initializers.Constant(np.repeat([0.0, 1.0], 500))
    dense = keras.layers.Dense(1000, kernel_initializer="zeros", bias_initializer=bias)
    path = str(tmp_path / "tied.keras")
    keras.Model(inputs, dense(keras.layers.Flatten()(inputs))).save(path)
    config = AttributionConfig(steps=2, faithfulness="none", attributions="none")
    (outcome,) = _run_handler(resolve_model(path), config, _examples(1))
    (row,) = outcome.rows
    assert row["predicted_class"] == row["target_class"] == 500
    assert row["top_k_classes"].tolist() == [500, 501, 502, 503, 504]


def test_a_nan_score_at_the_baseline_alone_is_an_error_record_not_a_row(tmp_path):
    # NaN only where every value is 1 (the white baseline itself): gausslegendre has no
    # node there, so every gradient is finite, but the row's baseline_score is NaN.
    import tensorflow as tf

    class WhiteHole(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            scores = tf.reduce_sum(x, axis=[1, 2]) @ tf.eye(3, 4)
            white = tf.reduce_min(x, axis=[1, 2, 3])[:, None] == 1.0
            return tf.where(white, tf.fill(tf.shape(scores), float("nan")), scores)

    path = str(tmp_path / "white_hole")
    tf.saved_model.save(WhiteHole(), path)
    config = AttributionConfig(
        steps=4, method="gausslegendre", tolerance=0, baselines="white", faithfulness="none"
    )
    (outcome,) = _run_handler(resolve_model(path), config, _examples(1))
    assert outcome.rows == []
    (error,) = outcome.errors
    assert error["stage"] == "attribute" and "of the baseline itself" in error["error"]


def test_a_nan_on_the_path_of_a_rule_without_a_baseline_node_is_said_to_be_on_the_path(
    tmp_path,
):
    # sqrt: an infinite gradient at the black baseline, which gausslegendre never
    # takes; NaN where the mean value is in (0.3, 0.4), on the path to a 0.78 image.
    import tensorflow as tf

    class Holed(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            mean = tf.reduce_mean(x, axis=[1, 2, 3])[:, None]
            scores = tf.reduce_sum(tf.sqrt(x), axis=[1, 2]) @ tf.eye(3, 4)
            holed = (mean > 0.3) & (mean < 0.4)
            return tf.where(holed, tf.fill(tf.shape(scores), float("nan")), scores)

    path = str(tmp_path / "holed")
    tf.saved_model.save(Holed(), path)
    image = np.full((SIZE, SIZE, 3), 0.78, np.float32)
    config = AttributionConfig(steps=8, method="gausslegendre", tolerance=0, faithfulness="none")
    (outcome,) = _run_handler(
        resolve_model(path), config, [ImageExample("a", "a.png", None, image)]
    )
    (error,) = outcome.errors
    assert error["error"].endswith("on the path from the baseline to the image (alpha > 0)")


def test_store_path_off_leaves_the_path_columns_null(linear_keras):
    # AttributionConfig(store_path=False), from Python: no F(alpha) per row.
    spec = resolve_model(linear_keras)
    config = AttributionConfig(steps=2, store_path=False, faithfulness="none")
    (outcome,) = _run_handler(spec, config, _examples(1))
    (row,) = outcome.rows
    assert row["path_alphas"] is None and row["path_scores"] is None
    assert row["attributions"].shape == (SIZE, SIZE, 3)


def test_preprocess_decodes_a_large_jpeg_at_a_reduced_size_for_the_model():
    # A 256 x 192 JPEG for a 16-px model is decoded at 1/8 (Pillow's draft mode,
    # `max_side_hint`): 32 x 24 pixels, not 49,152 then shrunk. Its pixels differ
    # from the full decode's by a few levels, so the two are told apart.
    import io

    from PIL import Image

    from transforms import images

    blocks = np.random.default_rng(0).uniform(0, 255, (32, 24, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.kron(blocks, np.ones((8, 8, 1))).astype(np.uint8)).save(buffer, "JPEG")
    data = buffer.getvalue()
    (example,) = Preprocess(16, (0.0, 1.0)).process(RawImage("a", "a.jpg", None, data=data))

    def model_input(pixels):
        return images.scale_to_range(images.resize_with_pad(pixels, 16), (0.0, 1.0))

    reduced = images.decode_image(data, max_side_hint=16)
    assert reduced.shape == (32, 24, 3)
    np.testing.assert_array_equal(example.image, model_input(reduced))
    assert not np.array_equal(example.image, model_input(images.decode_image(data)))


def test_preprocess_transform_routes_bad_images_to_errors():
    good = np.full((4, 8, 3), 255, np.uint8)
    inputs = [
        RawImage("a", "a.png", 1, pixels=good),
        RawImage("b", "b.jpg", None, data=b"garbage"),
        RawImage("c", "c.png", None, error="cannot read file: permission denied"),
    ]
    p = TestPipeline()
    out = (
        p
        | beam.Create(inputs)
        | beam.ParDo(Preprocess(4, (0.0, 1.0))).with_outputs(ERRORS_TAG, main="images")
    )
    shapes = out.images | beam.Map(lambda e: (e.image_id, e.image.shape, float(e.image.max())))
    assert_that(shapes, equal_to([("a", (4, 4, 3), 1.0)]), label="images")
    stages = out[ERRORS_TAG] | beam.Map(lambda e: (e["image_id"], e["stage"]))
    assert_that(stages, equal_to([("b", "decode"), ("c", "read")]), label="errors")
    result = p.run()
    result.wait_until_finish()
    # The job's counters (the Dataflow console shows them while it runs).
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    }
    assert counters == {"images_decoded": 1, "images_failed_preprocess": 2}


def test_run_inference_with_the_handler_in_a_pipeline(linear_keras):
    spec = resolve_model(linear_keras)
    handler = IGModelHandler(spec, AttributionConfig(steps=2), None, batch_size=2)
    examples = _examples(3)
    with TestPipeline() as p:
        rows = (
            p
            | beam.Create(examples)
            | RunInference(handler)
            | beam.Map(lambda o: (o.image_id, len(o.rows), o.rows[0]["predicted_name"] is not None))
        )
        assert_that(rows, equal_to([(f"img{i}", 1, True) for i in range(3)]))


_BATCH_SIZES: list[int] = []


class _RecordingHandler(IGModelHandler):
    def run_inference(self, batch, model, inference_args=None):
        _BATCH_SIZES.append(len(batch))
        return super().run_inference(batch, model, inference_args)


def test_run_inference_gets_full_batches_so_paths_of_several_images_share_calls(linear_keras):
    # Beam's default batching starts at one element and grows with measured
    # timings; for IG the handler asks for full batches (the engine batches the
    # path points of all images of a batch together).
    _BATCH_SIZES.clear()
    handler = _RecordingHandler(
        resolve_model(linear_keras), AttributionConfig(steps=2), None, batch_size=4
    )
    with TestPipeline() as p:
        count = (
            p | beam.Create(_examples(10)) | RunInference(handler) | beam.combiners.Count.Globally()
        )
        assert_that(count, equal_to([10]))
    assert sum(_BATCH_SIZES) == 10
    assert max(_BATCH_SIZES) == 4 and _BATCH_SIZES.count(4) >= 2, _BATCH_SIZES


@pytest.mark.parametrize("jit", [False, True])
def test_graph_integrand_equals_the_numpy_one(quadratic_saved_model, jit):
    model = Classifier(resolve_model(quadratic_saved_model), jit_compile=jit)
    # 5 points on 3 paths (two share path 1), each path with its own baseline.
    x = RNG.uniform(0, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
    base = RNG.uniform(0, 0.5, (3, SIZE, SIZE, 3)).astype(np.float32)
    args = (
        x,
        base,
        np.array([0, 1, 1, 2, 0], np.int32),
        np.linspace(0.1, 1, 5).astype(np.float32),
        np.array([0, 3, 3, 7, 9]),
    )
    graph = model.integrand_fn("raw")(*args)
    numpy = ig.integrand_from_gradients(model.score_grad_fn("raw"))(*args)
    for a, b in zip(graph, numpy, strict=True):
        np.testing.assert_allclose(
            np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=2e-5, atol=1e-6
        )
    assert graph[3].shape == (5, SIZE, SIZE, 3)


@pytest.mark.parametrize(
    "scale, error",
    [(1.0, "rounding"), (2e-4, "subnormal"), (1e7, "overflow"), (1e-9, "flushed to zero")],
)
def test_float16_storage_counts_in_the_error_of_the_stored_map(
    linear_weights, tmp_path, scale, error, caplog
):
    import keras

    # logits = scale * (x @ W + b): IG is x * scale * W[:, t], exactly.
    inputs = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(1000)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([w * scale for w in linear_weights])
    model.save(tmp_path / "scaled.keras")
    spec = resolve_model(str(tmp_path / "scaled.keras"))
    examples = _examples(1)
    config = AttributionConfig(steps=2, attribution_dtype="float16")
    batch.forget_warnings()  # once per process and run: this test's own
    with caplog.at_level("WARNING"):
        (row,) = _run_handler(spec, config, examples)[0].rows
    exact = (
        examples[0].image * scale * linear_weights[0][:, row["target_class"]].reshape(SIZE, SIZE, 3)
    )
    stored = row["attributions"].astype(np.float64)
    off = np.linalg.norm(stored - exact) / np.linalg.norm(exact)
    if error == "rounding":  # float16 keeps 11 bits: far below the tolerance
        assert 0 < row["attribution_error"] < 1e-3 and row["attribution_error"] >= off * 0.99
        assert row["within_tolerance"] is True and "do not fit" not in caplog.text
        return
    if error == "subnormal":  # below 6e-5 float16 keeps fewer bits: a loss over 0.1 % is warned of
        assert 1e-3 < off < 1e-2 and row["attribution_error"] >= off * 0.99
        assert row["within_tolerance"] is True and "do not fit float16" in caplog.text
        return
    assert not np.isfinite(off) or off > 0.5  # the stored map is wrong...
    # ... and its row says so, instead of an error of 0 and within_tolerance True.
    assert row["attribution_error"] >= 0.999 * off and row["within_tolerance"] is False
    assert "do not fit float16" in caplog.text


def test_float16_warning_names_the_values_that_lose_precision(linear_weights, tmp_path, caplog):
    """A map whose values are subnormal in float16 (6e-8 to 6.1e-5: fewer bits, none
    flushed to 0) is warned of; the warning's lower bound must be above those values,
    or it tells the user that their values fit."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(1000)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([w * 2e-4 for w in linear_weights])
    model.save(tmp_path / "scaled.keras")
    config = AttributionConfig(steps=2, attribution_dtype="float16")
    batch.forget_warnings()
    with caplog.at_level("WARNING"):
        (row,) = _run_handler(resolve_model(str(tmp_path / "scaled.keras")), config, _examples(1))[
            0
        ].rows
    values = np.abs(row["attributions"].astype(np.float64))
    assert 6e-8 < values.max() < 6.1e-5  # subnormal in float16
    (message,) = [r.getMessage() for r in caplog.records if "do not fit float16" in r.getMessage()]
    bound = float(re.search(r"below ([0-9.]+e-[0-9]+)", message).group(1))
    assert values.max() < bound, message


def _save_holed(path: str) -> None:
    """F = sum over pixels of x^2 per channel, NaN where the image's mean is in (0.25, 0.75)."""
    import tensorflow as tf

    class Holed(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            mean = tf.reduce_mean(x, axis=[1, 2, 3])[:, None]
            scores = tf.reduce_sum(x * x, axis=[1, 2]) @ tf.eye(3, 4)
            holed = (mean > 0.25) & (mean < 0.75)
            return tf.where(holed, tf.fill(tf.shape(scores), float("nan")), scores)

    tf.saved_model.save(Holed(), path)


def test_faithfulness_spends_no_model_call_on_rows_that_failed(tmp_path):
    # A bright image's path meets the model's NaN (its nodes at alpha = 1/3 and 2/3):
    # an error record, whose deletion and insertion curves were computed anyway (model
    # calls spent, numpy warnings).
    _save_holed(str(tmp_path / "holed"))
    spec = resolve_model(str(tmp_path / "holed"))
    config = AttributionConfig(steps=4, tolerance=0, faithfulness_steps=4)
    dark, bright = (
        ImageExample(name, f"{name}.png", None, np.full((SIZE, SIZE, 3), v, np.float32))
        for name, v in (("dark", 0.2), ("bright", 0.9))
    )

    def audit(examples):
        handler = IGModelHandler(spec, config, None, batch_size=len(examples))
        model = handler.load_model()
        before = tf_model.model_evaluations()["forward"]
        with np.errstate(invalid="raise"):  # no NaN met on the failed row
            outcomes = handler.run_inference(examples, model)
        return outcomes, tf_model.model_evaluations()["forward"] - before

    (alone,), passes_alone = audit([dark])
    (ok, failed), passes = audit([dark, bright])
    assert failed.errors and not failed.rows and ok.rows and not ok.errors
    assert passes == passes_alone + 1  # its prediction (one black baseline per batch)
    # The failed row first: the kept row's curves are still its own, not another row's.
    (failed_first, ok_second), _ = audit([bright, dark])
    assert failed_first.errors and not failed_first.rows and ok_second.rows
    for row in (ok.rows[0], ok_second.rows[0]):
        for column in ("deletion_auc", "insertion_auc", "deletion_curve", "insertion_curve"):
            np.testing.assert_allclose(row[column], alone.rows[0][column], rtol=1e-6)


def _cancelling_model(path: str) -> None:
    """F(x) = g(x) - g(P x), P swapping the red and green channels: on a grey image
    F is exactly 0 all along the path from black, while the map is not (the red and
    green attributions are exact opposites)."""
    import keras

    rng = np.random.default_rng(5)
    g = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(8, 3, activation="relu", padding="same"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    for layer in (g.layers[0], g.layers[-1]):
        kernel, bias = layer.get_weights()
        layer.set_weights([2 * kernel, rng.normal(0, 0.3, bias.shape).astype(np.float32)])
    inputs = keras.Input((SIZE, SIZE, 3))
    swap = keras.layers.Conv2D(3, 1, use_bias=False)
    swapped = swap(inputs)
    swap.set_weights([np.eye(3, dtype=np.float32)[[1, 0, 2]][None, None]])
    keras.Model(inputs, keras.layers.Subtract()([g(inputs), g(swapped)])).save(path)


def test_a_row_whose_scores_are_exactly_0_stops_at_its_tolerance(tmp_path):
    # F(x) = F(x') = 0: the scores' rounding is 0, while the graph's float32 sum of
    # (x - x') grad F over the values, dF/da, is about 1e-7, not 0: that delta read
    # as an infinite relative one, and the row spent --max_steps (256 evaluations
    # against about 26) on a completeness it had.
    path = str(tmp_path / "cancel.keras")
    _cancelling_model(path)
    classifier = Classifier(resolve_model(path))
    grey = np.random.default_rng(0).uniform(0.1, 0.9, (1, SIZE, SIZE, 1)).astype(np.float32)
    x = np.repeat(grey, 3, axis=-1)
    base = np.zeros((1, 1, SIZE, SIZE, 3), np.float32)
    scores = classifier.logits(np.concatenate([x, base[:, 0]]))[:, 0]
    assert scores[0] == 0.0 and scores[1] == 0.0
    settings = ig.IGSettings("riemann_trapezoid", 25, tolerance=0.015, max_steps=256)
    result = ig.integrated_gradients(
        classifier.integrand_fn("raw"), x, base, [0], [0], settings,
        target_scores=scores[:1], baseline_scores=scores[1:].reshape(1, 1),
    )  # fmt: skip
    assert np.abs(result.attributions).sum() > 0
    assert result.evaluations[0] < 64 and result.error[0] <= 0.015, result


def test_an_image_whose_prediction_is_nan_is_a_predict_error_not_attributed(tmp_path):
    # A grey image's own outputs are NaN (mean 0.5): there is no class to attribute,
    # and its error record says so at the predict stage, before IG meets the NaN.
    _save_holed(str(tmp_path / "holed"))
    config = AttributionConfig(steps=4, tolerance=0, faithfulness_steps=4)
    grey, dark = (
        ImageExample(name, f"{name}.png", None, np.full((SIZE, SIZE, 3), v, np.float32))
        for name, v in (("grey", 0.5), ("dark", 0.2))
    )
    failed, ok = _run_handler(resolve_model(str(tmp_path / "holed")), config, [grey, dark])
    assert failed.rows == [] and ok.rows and not ok.errors
    (error,) = failed.errors
    assert (error["stage"], error["error"]) == ("predict", "model output is NaN or infinite")


def test_faithfulness_costs_the_documented_forward_passes_per_row(linear_keras):
    # 4 (K - 1) + 2 per row (README.md): the image's own probability is the
    # prediction's, not forwarded again for each of its targets.
    spec = resolve_model(linear_keras)
    examples = _examples(2)
    passes = {}
    for faith in ("deletion_insertion", "none"):
        config = AttributionConfig(
            steps=4, tolerance=0, target="top_k", top_k=2, faithfulness=faith, faithfulness_steps=4
        )
        handler = IGModelHandler(spec, config, None, batch_size=2)
        model = handler.load_model()
        before = tf_model.model_evaluations()["forward"]
        outcomes = handler.run_inference(examples, model)
        passes[faith] = tf_model.model_evaluations()["forward"] - before
        assert sum(len(o.rows) for o in outcomes) == 4
    assert passes["deletion_insertion"] - passes["none"] == 4 * (4 * (4 - 1) + 2)


def test_a_label_just_past_the_models_classes_is_named_by_its_index(linear_keras):
    # --target predicted keeps a row for a label the model has no class of (ImageNet
    # labels on a model of other classes): its label_name is the index, as text.
    spec = resolve_model(linear_keras)
    names = tuple(f"class {i}" for i in range(spec.num_classes))
    config = AttributionConfig(steps=2, faithfulness="none", attributions="none")
    labels = [spec.num_classes, spec.num_classes - 1]
    outcomes = _run_handler(spec, config, _examples(2, labels=labels), names)
    assert [o.rows[0]["label_name"] for o in outcomes] == ["1000", "class 999"]


def test_a_row_exactly_at_its_tolerances_is_within_them():
    # README.md: attribution_error <= --tolerance / 1.25 and relative_delta <=
    # --completeness_tolerance; a hair above either is not within.
    config = AttributionConfig(tolerance=0.02)
    bound, completeness = config.estimate_bound(), config.completeness_tolerance
    assert batch._within(config, bound, completeness) is True
    assert batch._within(config, np.nextafter(bound, 1.0), 0.0) is False
    assert batch._within(config, 0.0, np.nextafter(completeness, 1.0)) is False
    assert batch._within(AttributionConfig(tolerance=0), 0.0, 0.0) is None


def test_a_fixed_rule_without_spread_has_a_null_attribution_error(linear_keras):
    # README.md: attribution_error is null (None), not NaN, where the fixed rule has
    # no spread (one node).
    config = AttributionConfig(steps=1, tolerance=0, method="gausslegendre", faithfulness="none")
    (outcome,) = _run_handler(resolve_model(linear_keras), config, _examples(1))
    (row,) = outcome.rows
    assert row["attribution_error"] is None and row["within_tolerance"] is None


def test_an_infinite_gradient_at_one_of_several_baselines_is_said_to_be_there(tmp_path):
    # sqrt: an infinite gradient at the black baseline, a finite one at the white: the
    # rule's node at alpha = 0 met it, and gausslegendre (no node there) is advised.
    import tensorflow as tf

    class Root(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            return tf.reduce_sum(tf.sqrt(x), axis=[1, 2]) @ tf.eye(3, 4)

    path = str(tmp_path / "root")
    tf.saved_model.save(Root(), path)
    image = np.full((SIZE, SIZE, 3), 0.78, np.float32)
    config = AttributionConfig(
        steps=4,
        method="riemann_left",
        tolerance=0,
        baselines=("white", "black"),
        faithfulness="none",
    )
    (outcome,) = _run_handler(
        resolve_model(path), config, [ImageExample("a", "a.png", None, image)]
    )
    (error,) = outcome.errors
    assert error["error"].endswith(
        "(riemann_left takes the gradient at the baseline itself, alpha = 0; "
        "--method gausslegendre has no node there)"
    )


class _SecondCallWhileLogging(logging.Handler):
    """Keeps the float16 storage warning's records; while it emits the first, another
    thread of the process reaches the warning too (as two threads of a DirectRunner
    worker can), and is given the time to log it again."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.other: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.other is None:
            reached = threading.Event()
            self.other = threading.Thread(
                target=lambda: (reached.set(), batch._warn_storage("float16"))
            )
            self.other.start()
            reached.wait()
            # Once warned, it returns at once; a second warning under way waits for this
            # handler, then logs: either way the count below is the same after the join.
            self.other.join(timeout=0.5)


def test_the_float16_storage_warning_is_logged_once_by_threads_at_once():
    # < 1 s. It was logged twice: each thread found it not yet given.
    handler = _SecondCallWhileLogging()
    logger = logging.getLogger(batch.__name__)
    logger.addHandler(handler)
    batch.forget_warnings()
    try:
        batch._warn_storage("float16")
        handler.other.join()
    finally:
        logger.removeHandler(handler)
        batch.forget_warnings()
    assert [r.getMessage()[:40] for r in handler.records] == [
        "Some attribution maps do not fit float16"
    ]
