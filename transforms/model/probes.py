"""Probing a loaded model's outputs: their shape, precision and whether they are probabilities."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from transforms.errors import error_reason
from transforms.images import sides

__all__ = [
    "narrow_float",
    "outputs_are_probabilities",
    "probe_images",
    "probe_outputs",
    "warn_of_low_precision",
    "warn_of_one_output",
    "warn_of_probabilities",
]

_LOG = logging.getLogger(__name__)


def probe_images(image_size: int | tuple[int, int], input_range: tuple[float, float]) -> np.ndarray:
    """float32 [2, H, W, 3] (`image_size`: a square's side or (H, W)): a plain image at
    each end of the input range, the batch on which the launch and every worker check
    the model's outputs (whether they are probabilities is decided on these, so the two
    always agree)."""
    low, high = input_range
    shape = (*sides(image_size), 3)
    return np.stack([np.full(shape, v, np.float32) for v in (low, high)])


_NARROW_FLOATS = ("float16", "bfloat16")


def narrow_float(obj: Any, outputs: np.ndarray) -> str | None:
    """The 16-bit float type a loaded model takes, computes in or returns, as its dtypes
    tell: its outputs', a Keras model's inputs' and the dtype policies (such as
    mixed_float16) of it and its layers, nested models' too, or a SavedModel's graphs
    (float32 in and out can compute in float16 inside). None for none."""
    import tensorflow as tf  # noqa: PLC0415

    found = [outputs.dtype.name]
    found += [getattr(t, "dtype", None) for t in getattr(obj, "inputs", None) or []]
    for layer in _layers(obj):  # a policy set layer by layer
        found.append(getattr(getattr(layer, "dtype_policy", None), "compute_dtype", None))
    call = getattr(obj, "__call__", None)  # noqa: B004 - a restored tf.function, as _module_call's
    functions = list(getattr(call, "concrete_functions", None) or [])
    signatures = getattr(obj, "signatures", None) or {}
    for fn in [*functions, *(signatures[name] for name in signatures)]:
        found += _narrow_floats_in(fn.graph.as_graph_def())
    names = {tf.as_dtype(d).name for d in found if d is not None}
    return next((name for name in _NARROW_FLOATS if name in names), None)


def _layers(obj: Any) -> list[Any]:
    """A Keras model and its layers, those of the models among them too."""
    found = [obj]
    for layer in getattr(obj, "layers", None) or []:
        found += _layers(layer)
    return found


def _narrow_floats_in(graph: Any) -> set[str]:
    """Of `_NARROW_FLOATS`, those a GraphDef's ops (its functions' too) take or give."""
    import tensorflow as tf  # noqa: PLC0415

    narrow = {tf.as_dtype(name).as_datatype_enum: name for name in _NARROW_FLOATS}
    nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
    kinds = {t for n in nodes for v in n.attr.values() for t in (v.type, *v.list.type)}
    return {narrow[t] for t in kinds if t in narrow}


def warn_of_low_precision(reference: str, dtype: str | None) -> None:
    """What a model computing in 16-bit floats does to completeness (only float32
    rounding is allowed for): rows it cannot show spend --max_steps, then are flagged."""
    if dtype is None:
        return
    _LOG.warning(
        "Model %s computes in %s: its scores and gradients round at about 1e-3 of their size "
        "(float32: 1e-7), so a row whose F(x) - F(x') is small against F(x) cannot show "
        "completeness within --completeness_tolerance: it spends --max_steps and is flagged "
        "(relative_delta beyond it). Audit a float32 export of the model, or raise "
        "--completeness_tolerance for this one.",
        reference,
        dtype,
    )


def probe_outputs(
    reference: str, call, image_size: int | tuple[int, int], input_range, keras_file: bool = False
) -> np.ndarray:
    """The model's outputs on `probe_images`, checked: it must be a differentiable
    classifier returning float scores [batch, classes]; `keras_file`: a .keras model of
    one output, told a fix in Keras' own layers.

    Raises:
      ValueError: naming the model and what it lacks.
    """
    import tensorflow as tf  # noqa: PLC0415

    images = tf.constant(probe_images(image_size, input_range))
    try:
        with tf.GradientTape() as tape:
            tape.watch(images)
            scores = call(images)
    except Exception as e:
        raise _probe_error(reference, call, images, e) from e
    _check_scores(reference, scores, keras_file)
    if tape.gradient(scores, images) is None:  # of their sum
        raise ValueError(
            f"--model {reference!r} has no gradient with respect to its input images "
            "(a tf.stop_gradient, or an op that has none); Integrated Gradients needs one."
        )
    outputs = scores.numpy()
    _check_deterministic(reference, call, images, outputs, input_range)
    return outputs


# How far an image's scores may move, as a share of the probe's largest: between two
# calls of the same batch (the same kernels, chosen on the probe's first call of that
# shape: a model in inference mode gives the same scores; 1e-3, not less, leaves room
# for a GPU's TF32 rounding should another kernel run), and beside another image than itself
# (oneDNN picks kernels by the batch; a 16-bit model rounds at 1e-3). A Dropout's
# dropped units, a random augmentation (a flip, a rotation: RandomFlip and
# RandomRotation layers stay on in Keras 3's model.export, measured at 0.6-0.9 % on a
# small net's textured image) and a batch's statistics (of plain images: variance 0
# against that of black beside white) move them further.
_SAME_CALL = 1e-3
_SAME_SCORES = 1e-2


def _check_deterministic(reference: str, call, images, scores: np.ndarray, input_range) -> None:
    """An image's scores depend on it alone, as IG's sums over calls of many batches of
    path points (and the rows padding a call) take them to: the same on a second call
    of a textured image (no Dropout, no random augmentation: a plain image's flip is
    itself) and beside another image (not a BatchNormalization normalising by the
    batch's statistics, in training mode). `images`: the probe's [low, high] plain
    images of `input_range`, `scores` the model's outputs on them.

    Raises:
      ValueError: naming the model, how far its scores moved and the export that fits.
    """
    import tensorflow as tf  # noqa: PLC0415

    first = np.asarray(scores, np.float64)
    textured = tf.constant(_textured(np.shape(images), input_range))
    once, again = (np.asarray(call(textured), np.float64) for _ in range(2))
    beside_itself = np.asarray(call(tf.stack([images[0], images[0]])), np.float64)
    largest = float(max(np.abs(first).max(initial=0.0), np.abs(once).max(initial=0.0)))
    moved = float(np.abs(again - once).max(initial=0.0))
    if moved > _SAME_CALL * largest:
        why = f"gives other scores for the same images on each call (up to {moved:.3g} apart"
    elif (moved := float(np.abs(beside_itself[0] - first[0]).max(initial=0.0))) > (
        _SAME_SCORES * largest
    ):
        why = (
            "scores an image by the other images of its batch (a plain image's scores "
            f"moved by up to {moved:.3g} beside a copy of itself instead of another image"
        )
    else:
        return
    raise ValueError(
        f"--model {reference!r} {why}, against scores up to {largest:.3g}), as Dropout, "
        "BatchNormalization or random augmentation layers (RandomFlip, RandomRotation) in "
        "training mode make it; Integrated Gradients needs an image's scores to depend on "
        "it alone, as a model's do in inference mode: export it calling the model with "
        "training=False, without its augmentation layers (Keras 3's model.export keeps "
        "them on), or save a Keras model as a .keras file (model.save('model.keras')) and "
        "pass that: the job calls it in inference mode."
    )


def _textured(shape: tuple[int, ...], input_range) -> np.ndarray:
    """Images of `shape` ([N, H, W, 3]) textured in `input_range`: a flip or a rotation
    changes them, where it leaves a plain image as it is."""
    low, high = map(float, input_range)
    noise = np.random.default_rng(0).uniform(size=shape)
    return (low + (high - low) * noise).astype(np.float32)


# What TF raises taking the gradient of a TF1 graph's while loop (control flow v1) in
# a loaded SavedModel (tensorflow/tensorflow#7404), and the export that has one.
_V1_LOOP_ERROR = "has no attribute 'outer_context'"
_V1_LOOP_FIX = (
    " A TF1 graph's tf.while_loop (tf.map_fn makes one) has none in TensorFlow 2: build the "
    "graph again after tf.compat.v1.enable_control_flow_v2() and export it."
)


def _probe_error(reference: str, call, images, error: Exception) -> ValueError:
    """Why the probe's call under a gradient tape failed: the model itself on `images`,
    or, where it runs without the tape, the gradient TensorFlow cannot take of it (a
    recording tape builds the gradient's graph as the model is called)."""
    height, width = (int(side) for side in images.shape[1:3])
    batch = f"a batch of 2 images [2, {height}, {width}, 3]"
    try:
        call(images)
    except Exception:
        return ValueError(f"--model {reference!r} fails on {batch}: {error_reason(error)}")
    fix = _V1_LOOP_FIX if _V1_LOOP_ERROR in str(error) else ""
    return ValueError(
        f"--model {reference!r} runs on {batch}, but TensorFlow cannot take its gradient "
        f"with respect to them ({error_reason(error)}); Integrated Gradients needs it.{fix}"
    )


def warn_of_probabilities(reference: str, outputs: np.ndarray, obj: Any = None) -> None:
    """What `top_k_probs` will be for outputs like the probe's, where that is not the
    softmax of logits: the outputs themselves (a softmax head), or a softmax that is
    not the model's own probability (one output; independent sigmoid outputs, unless
    `obj`, the loaded model, ends in a linear layer: its outputs are logits)."""
    if outputs_are_probabilities(outputs):
        _LOG.warning(
            "Model %s ends in a softmax (its outputs sum to 1): top_k_probs are its own "
            "outputs, and --score raw and softmax both attribute these probabilities (the "
            "model without its softmax would give logit attributions, which saturate less).",
            reference,
        )
    elif outputs.shape[1] == 1:
        warn_of_one_output(reference)
    elif _in_open_unit_interval(outputs) and not _ends_linear(obj):
        # Strictly inside: a sigmoid of a finite logit is; logits exactly 0 on the
        # plain probe images (no bias) are not evidence of one.
        _LOG.warning(
            "Model %s's outputs lie in [0, 1] without summing to 1, as a sigmoid (multi-"
            "label) head's do: top_k_probs are a softmax over them, not the model's own "
            "probabilities; its outputs are in target_score, and --score raw attributes them.",
            reference,
        )


def _in_open_unit_interval(outputs: np.ndarray) -> bool:
    """Strictly inside (0, 1), as a sigmoid of finite logits is."""
    return bool(np.all(np.isfinite(outputs)) and outputs.min() > 0.0 and outputs.max() < 1.0)


def _ends_linear(obj: Any) -> bool:
    """A Keras model of one output whose last layer (a nested model's too) has a linear
    activation, such as a Dense without one: its outputs are logits, whatever their range."""
    layers = getattr(obj, "layers", None)
    if not layers or len(getattr(obj, "outputs", None) or []) != 1:
        return False
    last = layers[-1]
    if getattr(last, "layers", None):
        return _ends_linear(last)
    return getattr(getattr(last, "activation", None), "__name__", None) == "linear"


def warn_of_one_output(reference: str) -> None:
    """`warn_of_probabilities` of a 1-output model, which a launch that reads the
    signature without loading the model gives too."""
    _LOG.warning(
        "Model %s has 1 output: every image's predicted_class is 0 and its top_k_probs "
        "1 (a softmax over one output); its output is in target_score, and --score raw "
        "attributes it.",
        reference,
    )


def _check_scores(reference: str, scores: Any, keras_file: bool = False) -> None:
    """The probe's output: one float tensor [2, classes]."""
    if not hasattr(scores, "dtype") or not hasattr(scores, "shape"):
        raise ValueError(
            f"--model {reference!r} returns a {type(scores).__name__}, not one tensor"
            f"{_items_of(scores)}; a classifier returning scores [batch, classes] is needed"
            f"{_one_tensor_hint(scores)}."
        )
    if not scores.dtype.is_floating:
        raise ValueError(
            f"--model {reference!r} returns {scores.dtype.name} scores; the job needs float "
            "scores (logits or probabilities) to take their gradient."
        )
    shape = tuple(scores.shape)
    if len(shape) != 2 or shape[0] != 2:
        raise ValueError(
            f"--model {reference!r} returns shape {shape} for a batch of 2 images; a "
            "classifier returning [batch, classes] is needed"
            f"{_reshape_hint(shape, reference if keras_file else None)}."
        )


def _items_of(outputs: Any) -> str:
    """What a tuple or list of outputs holds: each item's shape and dtype, or its type."""
    if not isinstance(outputs, list | tuple):
        return ""

    def item(value: Any) -> str:
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            return f"{list(value.shape)} {value.dtype.name}"
        return type(value).__name__

    return f" (its {len(outputs)} items: {', '.join(item(v) for v in outputs)})"


def _one_tensor_hint(outputs: Any) -> str:
    """The fix for a __call__ returning a tuple or list: the scores alone, or a dict
    of named outputs, read by name as a signature's (`scores_output`)."""
    if not isinstance(outputs, list | tuple):
        return ""
    return (
        ": save its __call__ returning the scores alone, or a dict of named outputs (return "
        "{'logits': ..., 'probabilities': ...}), of which the job audits the one named logits"
    )


def _reshape_hint(shape: tuple, keras_file: str | None = None) -> str:
    """The fix for scores [batch, classes] with extra axes of size 1 ([N, 1, 1, K] of a
    fully convolutional head), or one score per image [N]: the reshape that makes them
    [batch, K] (K = 1 for [N]); for the .keras model `keras_file`, a Keras Reshape on its
    output (a Keras 3 model holds a tf.reshape only in a Lambda layer, which the job
    refuses to load)."""
    extra = [int(d) for d in shape[1:] if d != 1] or [1]
    if len(shape) == 2 or not shape or shape[0] != 2 or len(extra) != 1:
        return ""
    if keras_file is not None:
        return (
            f": save it with its scores reshaped to [batch, {extra[0]}]: m = "
            f"keras.saving.load_model({keras_file!r}); keras.Model(m.inputs, "
            f"keras.layers.Reshape(({extra[0]},))(m.output)).save('scores.keras'); pass "
            "scores.keras"
        )
    return (
        f": export it with its scores reshaped to [batch, {extra[0]}] inside it "
        f"(tf.reshape(scores, [-1, {extra[0]}]))"
    )


def outputs_are_probabilities(outputs: np.ndarray) -> bool:
    """Whether a model's outputs on a probe batch, as the model returns them (their
    own dtype), are probabilities (a softmax head): more than one per row, each in
    [0, 1], each row summing to 1 within 1e-3, or within the machine epsilon of a
    coarser float (bfloat16's 2^-7: its rounding moves a softmax's sum by up to 2^-8).
    Logits of two different images doing so by chance is not a practical case."""
    atol = max(1e-3, _epsilon(np.asarray(outputs).dtype))
    outputs = np.asarray(outputs, np.float64)
    if outputs.ndim != 2 or outputs.shape[1] < 2 or not np.all(np.isfinite(outputs)):
        return False
    in_range = outputs.min() >= 0.0 and outputs.max() <= 1.0
    return bool(in_range and np.allclose(outputs.sum(axis=1), 1.0, rtol=0.0, atol=atol))


def _epsilon(dtype: np.dtype) -> float:
    """A float dtype's machine epsilon (bfloat16's too); 0 for any other."""
    try:
        return float(np.finfo(dtype).eps)
    except (TypeError, ValueError):
        return 0.0
