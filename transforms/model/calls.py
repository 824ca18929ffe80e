"""Calling a loaded model: the function of images to scores, and the re-wrap hints."""

from __future__ import annotations

import logging
import math
from typing import Any

__all__ = [
    "callable_of",
    "scores_output",
]

_LOG = logging.getLogger(__name__)


def callable_of(obj: Any, reference: str, announce: bool = True) -> tuple[Any, tuple | None]:
    """A function images [N, H, W, 3] -> outputs [N, K], and the input shape if known;
    `announce`: log which output of several it scores (the launch's load does, and the
    worker that takes the launcher's model does not say it again)."""
    import keras  # noqa: PLC0415

    if isinstance(obj, keras.Model):
        if not obj.built:  # its .keras file holds no weights; calling it would make some
            raise ValueError(
                f"--model {reference!r} is a Keras model saved before it was built: it holds "
                "no weights. Build it before saving it (call it on a batch of images, or "
                "model.build((None, height, width, 3)))."
            )
        _check_keras_inputs(obj, reference)
        # Keras casts the float32 images to a float input's dtype itself; an integer one
        # is refused first: a wrap feeding it RGB images would still cut the gradient.
        if obj.inputs:
            _check_keras_input_dtype(obj, reference)
        _check_keras_image_input(obj, reference)
        # A Keras Input's batch size is a hint: the model runs on any batch.
        shape = (None, *obj.inputs[0].shape[1:]) if obj.inputs else None
        return _keras_call(obj, reference, announce), shape
    if callable(obj):
        return _module_call(obj, reference, announce)
    signatures = getattr(obj, "signatures", {})
    if "serving_default" in signatures:
        return _signature_call(
            signatures["serving_default"], "serving_default", reference, announce
        )
    if _is_tf1_hub_module(obj) and "default" in signatures:
        return _signature_call(signatures["default"], "default", reference, announce)
    others = ", ".join(sorted(signatures)) or "none"
    raise ValueError(
        f"--model {reference!r} is neither callable nor has a serving_default signature "
        f"(its signatures: {others}); save it with the function that scores images as "
        "serving_default (tf.saved_model.save(model, folder, signatures={'serving_default': "
        f"fn}})) or as its __call__.{_resave_hint(sorted(signatures))}"
    )


def _resave_hint(names: list[str]) -> str:
    """How a SavedModel with signatures but no serving_default one (a TF1 export's
    `predict`) gets one without the code that made it: loaded and saved again."""
    if not names:
        return ""
    name = repr(names[0]) if len(names) == 1 else "NAME"
    which = "" if len(names) == 1 else " (NAME: the one that scores images)"
    return (
        " A signature it has becomes serving_default so: m = tf.saved_model.load(folder); "
        "tf.saved_model.save(m, new_folder, signatures={'serving_default': "
        f"m.signatures[{name}]}}){which}; pass new_folder."
    )


def _is_tf1_hub_module(obj: Any) -> bool:
    """A module in TF Hub's TF1 format (a tfhub_module.pb beside its saved_model.pb), as
    hub.load marks the object it loads."""
    return bool(getattr(obj, "_is_hub_module_v1", False))


def _signature_call(sig: Any, name: str, reference: str, announce: bool) -> tuple[Any, tuple]:
    """A function images -> scores of the signature `name`, and its input shape: its
    `default` output where a TF1 Hub module's `default` signature has one (TF Hub's
    convention for the module's primary output: an image classifier's logits), else
    the output `_scores_key` picks."""
    _check_one_input(sig.structured_input_signature[1], name, reference)
    ((arg, spec),) = sig.structured_input_signature[1].items()
    outputs = sig.structured_outputs
    if name == "default" and "default" in outputs:
        key = "default"
        if len(outputs) > 1 and announce:
            _LOG.info("Model %s: auditing the 'default' output of its TF1 Hub module.", reference)
    else:
        called = f"m.signatures[{name!r}]({arg}=x)" if arg.isidentifier() else None
        fix = _saved_model_rewrap(reference, outputs, called, spec)
        key = _scores_key(reference, outputs, f"its {name} signature", announce, fix)
    cast = _input_cast(spec.dtype, reference) or (lambda x: x)

    def call(x):
        return sig(**{arg: cast(x)})[key]

    return call, _known_shape(spec.shape)


def _check_one_input(specs: dict[str, Any], name: str, reference: str) -> None:
    """The job calls a signature with the images alone: one of several inputs (an
    exported model of the image and another tensor) is refused, naming them."""
    if len(specs) > 1:
        found = ", ".join(
            f"{key} {_width_of(specs[key])} {getattr(specs[key].dtype, 'name', '?')}"
            for key in sorted(specs)
        )
        raise ValueError(
            f"--model {reference!r}: its {name} signature takes {len(specs)} inputs ({found}); "
            "the job calls it with the images [N, H, W, 3] alone: export a function of the "
            "images only (any other input fixed inside it)."
        )


def _check_keras_inputs(model: Any, reference: str) -> None:
    """The job calls a Keras model with the images alone: one of several inputs is
    refused, naming them (Keras' own advice, to pass a dict, is not the user's to follow)."""
    inputs = model.inputs or []
    if len(inputs) > 1:
        names = ", ".join(str(getattr(i, "name", None) or "unnamed") for i in inputs)
        raise ValueError(
            f"--model {reference!r} takes {len(inputs)} inputs ({names}); the job calls it "
            "with the images [N, H, W, 3] alone: save a model of the images only (any other "
            "input fixed inside it)."
        )


_GRAY = "keras.ops.image.rgb_to_grayscale(x)"
_FED_RGB = "It is fed RGB images (grayscale ones as 3 equal channels)"


def _check_keras_image_input(model: Any, reference: str) -> None:
    """A Keras model of grayscale, flattened or channels-first images is refused with
    the wrap that feeds it RGB images [N, H, W, 3] (square or not): in Keras' own
    layers and ops, as a tf.image or tf.reshape op fails on a Keras 3 model's
    symbolic inputs (`image_size_for` refuses other shapes)."""
    if not model.inputs:
        return
    shape = tuple(model.inputs[0].shape)
    if len(shape) == 4 and shape[-1] == 3:
        return  # RGB channels last, whatever its sides: 1 or 4 high is no channel count
    wrap = _keras_rgb_wrap(shape[1:]) or _keras_rgba_wrap(model, shape[1:])
    if wrap is None:
        return
    rgb, takes, why = wrap
    key = _one_input_key(model)  # fed as a dict, as Keras takes it without a warning
    takes = takes if key is None else f"{{{key!r}: {takes}}}"
    raise ValueError(
        f"--model {reference!r} takes inputs of shape {shape}; this pipeline needs images "
        f"[batch, height, width, 3]. {why}: wrap it taking them: m = keras.saving.load_model("
        f"{reference!r}); x = keras.Input({rgb}); keras.Model(x, m({takes})).save('rgb.keras'); "
        "pass rgb.keras."
    )


def _keras_rgb_wrap(dims: tuple) -> tuple[tuple, str, str] | None:
    """For a Keras input of `dims` (without the batch) that a wrap fixes: the RGB input
    (height, width, 3), the expression of it (x) the model takes, and why; else None."""
    if len(dims) == 3 and dims[2] == 1:
        return (dims[0], dims[1], 3), _GRAY, _FED_RGB
    if len(dims) == 3 and dims[0] == 3 and dims[2] != 3:
        why = "It takes channels first [batch, 3, height, width]"
        return (dims[1], dims[2], 3), "keras.layers.Permute((3, 1, 2))(x)", why
    if len(dims) == 3 and dims[0] == 1:  # an ONNX or PyTorch conversion's grayscale input
        why = f"It takes channels first [batch, 1, height, width]. {_FED_RGB}"
        return (dims[1], dims[2], 3), f"keras.layers.Permute((3, 1, 2))({_GRAY})", why
    if len(dims) == 2:
        return (dims[0], dims[1], 3), f"keras.ops.squeeze({_GRAY}, -1)", _FED_RGB
    if len(dims) != 1 or dims[0] is None:
        return None
    for channels, takes in (
        (3, "keras.layers.Flatten()(x)"),
        (1, f"keras.layers.Flatten()({_GRAY})"),
    ):
        side = math.isqrt(dims[0] // channels)
        if side * side * channels == dims[0]:
            why = (
                f"It takes images [batch, {side}, {side}, {channels}] flattened, and is fed "
                "RGB ones (grayscale ones as 3 equal channels)"
            )
            return (side, side, 3), takes, why
    return None


def _keras_rgba_wrap(model: Any, dims: tuple) -> tuple[tuple, str, str] | None:
    """`_keras_rgb_wrap` of a Keras input of 4 channels (RGBA): its RGB images with an
    opaque alpha channel, at the top of the pixels it takes (255 where it rescales 8-bit
    pixels itself, else 1), as the job composites transparent pixels onto black."""
    from transforms.model.inputs import _rescaled_pixel_range  # noqa: PLC0415 - a cycle

    if len(dims) != 3 or 4 not in (dims[0], dims[2]):
        return None
    first = dims[2] != 4  # channels first [batch, 4, height, width], as ONNX exports
    opaque = 1 if _rescaled_pixel_range(model) is None else 255
    why = (
        f"It takes 4 channels{' first [batch, 4, height, width]' if first else ''} and is fed "
        "RGB images (transparent pixels composited onto black); if its 4th channel is alpha "
        "(RGBA), give it an opaque one"
    )
    takes = f"keras.ops.concatenate([x, keras.ops.full_like(x[..., :1], {opaque})], -1)"
    if first:
        return (dims[1], dims[2], 3), f"keras.layers.Permute((3, 1, 2))({takes})", why
    return (dims[0], dims[1], 3), takes, why


def _check_keras_input_dtype(model: Any, reference: str) -> None:
    """`_input_cast` of a Keras model's input; an integer one (uint8 images) is refused
    with the clone of the model on a float32 input, which has the gradient: the job's
    float32 images fed to the model itself are cast to its integer input, which has none."""
    import tensorflow as tf  # noqa: PLC0415

    dtype = tf.as_dtype(model.inputs[0].dtype)
    if dtype.is_floating or dtype == tf.string:
        _input_cast(dtype, reference)
        return
    shape = tuple(model.inputs[0].shape[1:])
    key = _one_input_key(model)  # clone_model takes input_tensors of model.input's structure
    float_input = (
        f"keras.Input({shape})"
        if key is None
        else f"{{{key!r}: keras.Input({shape}, name={key!r})}}"
    )
    pixels = "0,255 (its uint8 pixels' range)" if dtype == tf.uint8 else "for the pixels it takes"
    raise ValueError(
        f"--model {reference!r} takes {dtype.name} images; Integrated Gradients needs the "
        "gradient with respect to the input, which an integer input has not (Keras casts "
        f"float32 images to it): clone it on a float32 input: m = keras.saving.load_model("
        f"{reference!r}); f = keras.models.clone_model(m, input_tensors={float_input}); "
        "f.set_weights(m.get_weights()); f.save('float_input.keras'); pass float_input.keras "
        f"with --input_range {pixels}."
    )


def _keras_call(model: Any, reference: str, announce: bool):
    """A Keras model's call in inference mode, on its class scores where it has several
    outputs: as of a serving signature, its only one or the one named like logits."""
    try:  # a functional model's outputs
        structure = model.output
    except (AttributeError, ValueError):  # a Sequential or subclassed model's are not known
        structure = None

    feed = _keras_feed(model)

    def call(x):
        return model(feed(x), training=False)

    if isinstance(structure, dict):
        fix = _keras_rewrap(
            reference, {f"m.output[{k!r}]": structure[k] for k in structure}, "m.output[KEY]"
        )
        key = _scores_key(reference, structure, "the Keras model", announce, fix)
        return lambda x: call(x)[key]
    if isinstance(structure, list | tuple):  # named by output_names, flattened, in order
        import keras  # noqa: PLC0415

        names, flat = list(model.output_names), keras.tree.flatten(structure)
        outputs = dict(zip(names, flat, strict=True))
        fix = _keras_rewrap(
            reference,
            {f"m.outputs[{i}] {n}": t for i, (n, t) in enumerate(outputs.items())},
            "m.outputs[I]",
        )
        index = names.index(_scores_key(reference, outputs, "the Keras model", announce, fix))
        return lambda x: keras.tree.flatten(call(x))[index]
    return call


def _keras_feed(model: Any):
    """How the images reach a Keras model: as they are, or in the dict of its one input
    (keras.Model({'image': inputs}, ...)), which Keras takes a bare tensor for too, with
    a warning on every call it traces."""
    key = _one_input_key(model)
    if key is not None:
        return lambda x: {key: x}
    return lambda x: x


def _one_input_key(model: Any) -> str | None:
    """The key of a Keras model's one input in a dict; None for any other input."""
    try:
        structure = model.input
    except (AttributeError, ValueError):  # a model of no known input
        structure = None
    if isinstance(structure, dict) and len(structure) == 1:
        (key,) = structure
        return key
    return None


def _module_call(obj: Any, reference: str, announce: bool) -> tuple[Any, tuple | None]:
    """`callable_of` of a callable SavedModel: its first 4-D concrete function's input
    shape, and the images cast to that input's type (inside the dict or list of one
    tensor that is its argument, where it is one)."""
    import tensorflow as tf  # noqa: PLC0415

    functions = getattr(obj.__call__, "concrete_functions", None)
    if functions is not None and not functions:
        raise _untraced_refusal(reference)
    shape, dtype, outputs, structure = None, None, None, None
    for fn in functions or []:
        args, _ = fn.structured_input_signature
        specs = _input_specs(fn.structured_input_signature)
        if any(s.shape.rank in (None, 4) for s in specs.values()):  # None: any shape
            _check_images_alone(reference, specs)
            (images,) = specs.values()
            shape, dtype, outputs = _known_shape(images.shape), images.dtype, fn.structured_outputs
            structure = args[0] if len(args) == 1 and tf.nest.is_nested(args[0]) else None
            break
    feed = _feed(structure, _input_cast(dtype, reference))
    call = obj if feed is None else lambda x: obj(feed(x))
    if isinstance(outputs, dict):  # as a serving signature's: the scores by name
        fix = _saved_model_rewrap(reference, outputs, "m(x)" if structure is None else None, images)
        key = _scores_key(reference, outputs, "its __call__", announce, fix)
        return (lambda x: call(x)[key]), shape
    return call, shape


def _saved_model_rewrap(reference: str, outputs: dict, called: str | None, spec: Any) -> str:
    """`_scores_key`'s fix for a SavedModel: a module whose __call__ returns one of its
    outputs (KEY), saved again; `called`: its signature's or __call__'s call on images x,
    None where a one-line call does not say it (the generic fix then)."""
    if called is None or spec.shape.rank is None:
        return _ONE_OUTPUT_FIX
    found = ", ".join(f"{k!r} {_width_of(outputs[k])}" for k in sorted(outputs))
    images = f"tf.TensorSpec({spec.shape.as_list()}, tf.{spec.dtype.name})"
    return (
        f"save a model of them alone: m = tf.saved_model.load({reference!r}); n = tf.Module(); "
        f"n.m = m; n.__call__ = tf.function(lambda x: {called}[KEY], input_signature=[{images}]); "
        f"tf.saved_model.save(n, new_folder) with KEY that of the scores ({found}); pass "
        "new_folder."
    )


def _untraced_refusal(reference: str) -> ValueError:
    """A __call__ saved with no concrete function: a tf.function of no input_signature
    never called before saving, which a loaded SavedModel cannot run."""
    return ValueError(
        f"--model {reference!r}: its __call__ was saved without a traced function (a "
        "tf.function of no input_signature, not called before tf.saved_model.save), and a "
        "loaded SavedModel runs only the functions traced when it was saved: save it with "
        "tf.function(..., input_signature=[tf.TensorSpec([None, None, None, 3], "
        "tf.float32)]) (a fixed height and width in place of None, None if it has them)."
    )


def _feed(structure: Any, cast):
    """How the images reach a __call__: `cast` (None: as they are), and packed into
    `structure`, the dict or list of one tensor it takes (None: a bare tensor)."""
    if structure is None:
        return cast
    import tensorflow as tf  # noqa: PLC0415

    cast = cast or (lambda x: x)
    return lambda x: tf.nest.pack_sequence_as(structure, [cast(x)])


def _known_shape(shape) -> tuple | None:
    """An input's shape as a tuple; None for an input of unknown rank (any shape),
    which takes the images as an open [None, None, None, None] one does."""
    return None if shape.rank is None else tuple(shape)


def _input_specs(value: Any, key: str | None = None, specs: dict | None = None) -> dict:
    """The tensors a concrete function takes (`value`: its `structured_input_signature`),
    those in a dict or list argument too, in order (a dict's by sorted key, as tf.nest
    flattens it), by name: the spec's own, else its dict key, else unnamed."""
    specs = {} if specs is None else specs
    if isinstance(value, dict):
        for name in sorted(value):
            _input_specs(value[name], str(name), specs)
    elif isinstance(value, list | tuple):
        for item in value:
            _input_specs(item, None, specs)
    elif hasattr(value, "shape"):
        name = getattr(value, "name", None) or key or "unnamed"
        specs[name if name not in specs else f"{name}_{len(specs)}"] = value
    return specs


def _check_images_alone(reference: str, specs: dict[str, Any]) -> None:
    """The job calls a `__call__` with the images alone: one taking further tensors
    (a `training` flag, a second input) is refused, naming them."""
    if len(specs) > 1:
        names = ", ".join(specs)
        raise ValueError(
            f"--model {reference!r}: its __call__ takes {len(specs)} tensors ({names}); the "
            "job calls it with the images [N, H, W, 3] alone: save a function of the images "
            "only (any other argument fixed inside it, or given a Python default)."
        )


def _input_cast(dtype, reference: str):
    """How the job's float32 images reach an input of `dtype`: None when they fit as
    they are, a cast for another float type (float16, bfloat16: the gradient flows
    back through it); an integer input (uint8 images) or a string one (encoded images,
    or an Estimator's serialized tf.Example records) is refused, as IG needs the gradient with respect to the input."""
    import tensorflow as tf  # noqa: PLC0415

    if dtype is None:
        return None
    dtype = tf.as_dtype(dtype)
    if dtype == tf.string:
        raise ValueError(
            f"--model {reference!r} takes strings: encoded images (such as JPEG bytes) that it "
            "decodes, or serialized tf.Example records that it parses (an Estimator's export); "
            "Integrated Gradients needs the gradient with respect to the pixels: export the "
            "function after the decoding or parsing, taking float32 images [N, H, W, 3] (an "
            "Estimator: export_saved_model with tf.estimator.export."
            "build_raw_serving_input_receiver_fn of such images), with --input_range for the "
            "pixel range it expects (e.g. 0,255)."
        )
    if not dtype.is_floating:
        raise ValueError(
            f"--model {reference!r} takes {dtype.name} images; Integrated Gradients needs "
            "the gradient with respect to the input, which an integer input has not: export "
            f"the model with a float32 input, fed in where it turns its {dtype.name} one into "
            f"floats (a cast of float32 images to {dtype.name} inside it would leave no "
            "gradient either), with --input_range for the pixel range it expects (e.g. 0,255)."
        )
    if dtype == tf.float32:
        return None
    return lambda x: tf.cast(x, dtype)


_ONE_OUTPUT_FIX = "export a model or signature that returns only them, [N, classes]."


def scores_output(outputs: dict) -> str | None:
    """Of a serving signature's outputs (name: a spec, tensor or TensorInfo, whose dtype
    tells whether it can hold scores, or None), the class scores: its only one; else of
    the float ones (`classes` as integers or strings cannot be scores) the only one, or
    the one named like logits, or of those the one named `logits` itself (not
    `pre_logits`, `aux_logits`); None when that does not decide (the order of a loaded
    signature's outputs changes from process to process: never "the first")."""
    keys = sorted(outputs)
    if len(keys) == 1:
        return keys[0]
    floats = [k for k in keys if _may_be_scores(outputs[k])]
    logits = [k for k in floats if "logit" in k.lower()]
    named = [k for k in logits if k.lower() == "logits"]
    return next((found[0] for found in (floats, logits, named) if len(found) == 1), None)


def _may_be_scores(output: Any) -> bool:
    """Whether an output may hold class scores: a float one, or one of unknown type."""
    import tensorflow as tf  # noqa: PLC0415

    dtype = getattr(output, "dtype", None)
    try:
        return dtype is None or tf.as_dtype(dtype).is_floating
    except TypeError:
        return True


def _scores_key(
    reference: str,
    outputs: dict,
    where: str = "its serving_default signature",
    announce: bool = True,
    fix: str = _ONE_OUTPUT_FIX,
) -> str:
    """`scores_output` of a loaded signature (`where`), refused with the `fix` when
    undecided; logged where `announce` and there are several outputs."""
    key = scores_output(outputs)
    if key is not None:
        if len(outputs) > 1 and announce:
            _LOG.info("Model %s: auditing its output %r of %s.", reference, key, sorted(outputs))
        return key
    keys = sorted(outputs)
    raise ValueError(
        f"--model {reference!r}: {where} returns several outputs "
        f"({', '.join(keys)}) and the job cannot tell which holds the class scores; {fix}"
    )


def _keras_rewrap(reference: str, outputs: dict[str, Any], pick: str) -> str:
    """`_scores_key`'s fix for a Keras model: the model of one of its outputs saved
    again; `outputs`: each tensor by how Keras reaches it (m.outputs[0] or m.output['a']),
    `pick` the choice to fill in (m.outputs[I], m.output[KEY])."""
    index = pick[pick.index("[") + 1 : -1]
    found = ", ".join(f"{name} {_width_of(tensor)}" for name, tensor in outputs.items())
    return (
        "export a model that returns only them, [N, classes]: m = keras.saving.load_model("
        f"{reference!r}); keras.Model(m.inputs, {pick}).save('scores.keras') with {index} that "
        f"of the scores ({found}); pass scores.keras."
    )


def _width_of(tensor: Any) -> str:
    """An output's shape, [N, K] for scores: the batch as N, open sides as ?; [N, ...]
    for one of unknown rank (or no shape)."""
    try:
        sides = ["?" if s is None else str(s) for s in tuple(tensor.shape)[1:]]
    except (AttributeError, TypeError, ValueError):  # no shape, or an unknown rank
        sides = ["..."]
    return f"[{', '.join(['N', *sides])}]"
