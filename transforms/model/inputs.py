"""A model's input: the image size it takes and the pixel range it expects."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from transforms.config import MAX_IMAGE_SIZE
from transforms.model.graph_scaling import GraphScaling, saved_model_scaling
from transforms.model.loading import is_hub_module_folder, saved_model_proto
from transforms.model.reference import ModelReference
from transforms.model.signature import KNOWN_SIGNATURES, hub_image_sides, meta_graph_loaded

__all__ = [
    "fixes_size",
    "hub_side",
    "image_size_for",
    "input_range_for",
    "model_input_range",
    "own_input_range",
    "side_taken",
    "what_flags_set",
]

_LOG = logging.getLogger(__name__)


_DEFAULT_IMAGE_SIZE = 224


def _check_sides(reference: str, sides: tuple[int, int] | None) -> None:
    """Refuses a fixed input side above --image_size's bound before the model runs: its
    probe alone (two such images) would hold GBs, and its paths tens of times more."""
    if sides is not None and max(sides) > MAX_IMAGE_SIZE:
        raise ValueError(
            f"--model {reference!r} takes {sides[0]}x{sides[1]} images; the job feeds at most "
            f"{MAX_IMAGE_SIZE}x{MAX_IMAGE_SIZE} (IG holds tens of such images per path): "
            "export it with a smaller input, or an open size (None, None) and pass "
            "--image_size."
        )


def _check_shape(reference: str, shape) -> None:
    """Refuses an input that is not a batch of any size of RGB images."""
    if shape is not None and (len(shape) != 4 or shape[-1] not in (None, 3)):
        raise ValueError(
            f"--model {reference!r} takes inputs of shape {shape}; this pipeline needs "
            f"images [batch, height, width, 3].{_three_channels_hint(shape)}"
        )
    if shape is not None and shape[0] is not None:
        raise ValueError(
            f"--model {reference!r} takes batches of exactly {shape[0]} "
            f"image{'s' if shape[0] != 1 else ''} {tuple(shape)}; "
            "the job calls it on batches of any size: export it with its batch dimension "
            "open (None)."
        )


def _fixed_sides(shape) -> tuple[int, int] | None:
    """(height, width) that an input shape [batch, height, width, channels] fixes; a side
    it fixes alone fixes both (a square: (None, 16) and (16, None) are 16 x 16); None
    where it fixes neither, or is no such shape (None, or not 4-D: `_check_shape`
    refuses it)."""
    if shape is None or len(shape) != 4:
        return None
    height, width = tuple(shape)[1:3]
    if height is None and width is None:
        return None
    return int(height or width), int(width or height)


def fixes_size(shape) -> bool:
    """Whether an input shape fixes the size of the images the model is fed (one side
    fixes both), which --image_size may then not change. Where it does not, --image_size
    decides, else a size known for the model, the one it takes itself (`side_taken`),
    or 224 (`image_size_for`)."""
    return _fixed_sides(shape) is not None


def image_size_for(
    reference: str, location: str, shape, image_size: int | None, recorded: _Side | None = None
) -> tuple[int, int]:
    """The model's input (height, width): its signature's (a square, or the H x W it
    fixes), `image_size`, a known one, the one it takes itself for an open input
    (`recorded`: a TF1 Hub module's ImageModuleInfo, or a Keras model's first
    Resizing, square or not), or 224, each of the others square."""
    _check_shape(reference, shape)
    fixed = _fixed_sides(shape)
    _check_sides(reference, fixed)
    if image_size is not None:
        _check_image_size(reference, fixed, image_size)
        if fixed is None and recorded is not None and recorded.sides != (image_size,) * 2:
            _LOG.info(
                "Model %s does not fix its input size; %s, and --image_size %d feeds it "
                "%dx%d images.",
                reference,
                recorded.why,
                *(image_size,) * 3,
            )
        return image_size, image_size
    if fixed is not None:
        return fixed
    known = KNOWN_SIGNATURES.get(location)
    sides = known.image_sides if known is not None else None
    return sides or _open_size_of(reference, recorded)


def _check_image_size(reference: str, fixed: tuple[int, int] | None, image_size: int) -> None:
    """Refuses an --image_size other than the input size the model fixes."""
    if fixed is None or fixed == (image_size, image_size):
        return
    height, width = fixed
    if height == width:
        what, fix = f"{height}x{width}", f"drop --image_size or set it to {height}"
    else:  # --image_size sets a square: the model's own size is fed without it
        what, fix = f"{height}x{width} (height x width)", "drop --image_size"
    raise ValueError(
        f"--image_size {image_size} does not fit --model {reference!r}, whose input "
        f"is {what}; {fix}."
    )


class _Side(NamedTuple):
    """The size a model takes itself for an open input size, and why, for the log:
    `sides` (height, width), a square or not."""

    sides: tuple[int, int]
    why: str


def hub_side(sides: tuple[int, int] | None) -> _Side | None:
    """The (height, width) a TF1 Hub module records (its ImageModuleInfo)."""
    if sides is None:
        return None
    height, width = sides
    why = f"its TF Hub module records {height}x{width} images (ImageModuleInfo)"
    return _Side((height, width), why)


def _open_size_of(reference: str, recorded: _Side | None) -> tuple[int, int]:
    """The (height, width) fed to a model that leaves its size open, not known and given
    no --image_size: the one it takes itself (`recorded`), else 224 x 224 with a warning."""
    if recorded is not None:
        height, width = recorded.sides
        _LOG.info(
            "Model %s does not fix its input size; %s: using %s (%s).",
            reference,
            recorded.why,
            height if height == width else f"{height}x{width}",
            what_flags_set(recorded.sides, ("--image_size",)),
        )
        return recorded.sides
    _LOG.warning(
        "Model %s does not fix its input size; using %d (set --image_size).",
        reference,
        _DEFAULT_IMAGE_SIZE,
    )
    return _DEFAULT_IMAGE_SIZE, _DEFAULT_IMAGE_SIZE


def what_flags_set(
    sides: tuple[int, int] | None, flags: Sequence[str], given: Sequence[str] = ()
) -> str:
    """What `flags` (--image_size, --input_range: those that feed a model other images
    than the (height, width) `sides` it is fed) set, as the log says it: those of them
    the command `given` set these ("--input_range as given"), the others could set
    others (`_others_set`): "--input_range as given, --image_size sets another"; "" for
    none."""
    as_given = [flag for flag in flags if flag in given]
    others = _others_set(sides, [flag for flag in flags if flag not in given])
    said = f"{' and '.join(as_given)} as given" if as_given else ""
    return ", ".join(part for part in (said, others) if part)


def _others_set(sides: tuple[int, int] | None, flags: Sequence[str]) -> str:
    """What `flags` not given would set: "--image_size sets another", "--image_size and
    --input_range set others"; "" for none. For a non-square `sides` --image_size "sets
    a square", never another height x width: "--image_size sets a square and
    --input_range another". `sides` None: not known yet, for flags that do not set the
    size (--input_range)."""
    if sides is not None and sides[0] != sides[1] and "--image_size" in flags:
        others = [flag for flag in flags if flag != "--image_size"]
        return "--image_size sets a square" + "".join(f" and {f} another" for f in others)
    if not flags:
        return ""
    return f"{' and '.join(flags)} {'sets another' if len(flags) == 1 else 'set others'}"


def _three_channels_hint(shape) -> str:
    """The fix for a 4-D input without 3 channels last: channels first, or making the
    model's channels inside it (with an example for a grayscale model's 1 channel)."""
    if len(shape) != 4:
        return ""
    if shape[1] == 3:
        return (
            " It takes channels first [batch, 3, height, width]: export it taking channels "
            "last (transposed inside it)."
        )
    if shape[1] == 1 and shape[-1] != 1:
        return (
            " It takes channels first [batch, 1, height, width]: export it taking RGB images "
            "channels last [batch, height, width, 3] and making its 1 channel of them inside "
            "(e.g. tf.image.rgb_to_grayscale, then transposed)."
        )
    if shape[1] == 4 and shape[-1] != 4:
        return (
            " It takes channels first [batch, 4, height, width]: export it taking RGB images "
            "channels last [batch, height, width, 3] and making its 4 channels of them inside "
            "(an opaque alpha channel if it is RGBA, then transposed)."
        )
    example = " (e.g. tf.image.rgb_to_grayscale)" if shape[-1] == 1 else ""
    return (
        " It is fed RGB images (grayscale ones as 3 equal channels): export it taking "
        f"[batch, height, width, 3] and making its {shape[-1]} channel(s) of them inside"
        f"{example}."
    )


def input_range_for(
    model: ModelReference, input_range: tuple[float, float] | None
) -> tuple[float, float]:
    """The pixel range: `input_range`, else [0, 1]; a known model's own range only,
    as any other feeds it pixels it was not trained on and every prediction is wrong."""
    fixed = own_input_range(model.location)
    if input_range is None:
        return fixed or (0.0, 1.0)
    low, high = float(input_range[0]), float(input_range[1])
    if not low < high:  # as --input_range's parser says, for callers from Python
        raise ValueError(f"input_range {input_range!r} needs low < high, e.g. (0, 1).")
    if fixed is not None and (low, high) != fixed:
        raise ValueError(
            f"--input_range {low:g},{high:g} does not fit --model {model.reference!r}, which "
            f"takes pixels in [{fixed[0]:g}, {fixed[1]:g}] and normalises them itself; "
            "drop --input_range."
        )
    return (low, high)


def own_input_range(location: str) -> tuple[float, float] | None:
    """The pixel range a known model (by location) takes, which --input_range may not
    change; None for any other model."""
    known = KNOWN_SIGNATURES.get(location)
    return known.input_range if known is not None else None


# Layers that pass an image through unchanged in inference mode (augmentation), keep
# its pixel range (resampling) or move its pixels alone (the Flatten or Permute of a
# wrap feeding a flat or channels-first model RGB images): a Rescaling after them still
# sees the raw pixels.
_PASS_THROUGH_LAYERS = ("InputLayer", "Resizing", "CenterCrop", "Flatten", "Permute", "Reshape")
_PIXELS = (0.0, 255.0)
# How far from 0 a Rescaling of 8-bit pixels leaves them: 3 deviations of ImageNet's.
_RESCALED_BOUND = 3.0


def _rescaled_pixel_range(obj: Any) -> tuple[float, float] | None:
    """(0, 255) for a Keras model that first rescales 8-bit pixels: `_pixel_range_taken`
    by its first layer that changes pixel values (after augmentation, resizing, a wrap's
    Flatten or Permute, and into nested models); else None."""
    return _pixel_range_taken(_first_layer(obj))


def _pixel_range_taken(layer: Any | None) -> tuple[float, float] | None:
    """(0, 255) for a Keras layer that rescales 8-bit pixels: a Rescaling that maps
    [0, 255] onto [0, 1] or [-1, 1], as Keras' image tutorials and keras.applications
    (EfficientNet, MobileNetV3, ...) build them, or per channel by means and deviations
    (ImageNet's: about [-2.1, 2.6]), or a Normalization whose means are 8-bit pixel values
    (above 1: keras.applications' ConvNeXt, or adapted on such images); else None."""
    kind = type(layer).__name__
    if kind == "Normalization":
        if getattr(layer, "invert", False) or getattr(layer, "mean", None) is None:
            return None  # invert: it maps onto its means, not from them
        mean = np.asarray(layer.mean, np.float64)
        return _PIXELS if mean.size and np.all((mean > 1.0) & (mean <= _PIXELS[1])) else None
    if kind != "Rescaling":
        return None
    return _affine_pixel_range(layer.scale, layer.offset)


def _affine_pixel_range(scale: Any, offset: Any) -> tuple[float, float] | None:
    """(0, 255) for a map of pixel values x -> `scale` * x + `offset` (scalars, or per
    channel) that takes 8-bit pixels: onto [0, 1] or [-1, 1], or per channel by means
    and deviations of 8-bit pixels; else None. A Keras Rescaling's (`_pixel_range_taken`)
    and a SavedModel graph's first ops' (`GraphScaling`)."""
    scale, offset = np.asarray(scale, np.float64), np.asarray(offset, np.float64)
    low, high = offset, _PIXELS[1] * scale + offset
    # [0, 1], [-1, 1], or per channel by ImageNet's means and deviations (about
    # [-2.1, 2.6]); a model taking [0, 1] pixels scales them by 1 to 5, not by 1/255.
    spans, ends = np.abs(high - low), np.abs(np.stack(np.broadcast_arrays(low, high)))
    return _PIXELS if np.all(spans >= 0.9) and np.all(ends <= _RESCALED_BOUND) else None


def _keeps_pixels(name: str) -> bool:
    """A layer (by class name) that leaves pixel values as they are in inference mode."""
    return name.startswith("Random") or name in _PASS_THROUGH_LAYERS


# Layers that keep an image's size in inference mode (RandomCrop crops to its own).
_SIZE_KEEPING_LAYERS = ("InputLayer", "Rescaling", "Normalization")


def _keeps_size(name: str) -> bool:
    """A layer (by class name) that leaves an image's height and width as they are."""
    return (name.startswith("Random") and name != "RandomCrop") or name in _SIZE_KEEPING_LAYERS


def _first_layer(obj: Any, passes=_keeps_pixels) -> Any | None:
    """A Keras model's first layer, nested models' too, whose class name `passes` does
    not let through: by default the first that changes pixel values."""
    for layer in getattr(obj, "layers", None) or []:
        if passes(type(layer).__name__):
            continue
        first = _first_layer(layer, passes) if getattr(layer, "layers", None) else layer
        if first is not None:
            return first
    return None


def _resizing_side(obj: Any) -> _Side | None:
    """The size a Keras model resizes its images to first (after augmentation and
    rescaling, into nested models): a Resizing's height x width (square or not, as a
    model fixing its input may be), each within --image_size's bound; None for any
    other model."""
    layer = _first_layer(obj, _keeps_size)
    if type(layer).__name__ != "Resizing":
        return None
    height, width = int(layer.height), int(layer.width)
    if not 0 < min(height, width) <= max(height, width) <= MAX_IMAGE_SIZE:
        return None
    why = (
        f"its layer {layer.name!r} (Resizing), the first to change their size, resizes "
        f"images to {height}x{width}"
    )
    return _Side((height, width), why)


def model_input_range(
    model: ModelReference,
    obj: Any,
    given: tuple[float, float] | None,
    default: tuple[float, float],
) -> tuple[float, float]:
    """The pixel range of a model, decided at launch: `given` (--input_range), else the
    one it takes by what first changes pixel values (`_range_taken`: a .keras file's
    layer, loaded as `obj`, or a SavedModel's ops, read from its proto), else `default`.
    A `given` range other than the one found is used, with a warning."""
    taken = _range_taken(model, obj)
    if taken is None:
        return default
    found, where = taken
    rescales = (
        f"Model {model.reference} rescales pixels in [{found[0]:g}, {found[1]:g}] in its "
        f"{where}, the first to change their values"
    )
    if given is not None:
        _warn_of_other_range(rescales, found, default)
        return default
    flags = what_flags_set(None, ("--input_range",))
    _LOG.info("%s: its images are scaled to that range (%s).", rescales, flags)
    return found


def _range_taken(model: ModelReference, obj: Any) -> tuple[tuple[float, float], str] | None:
    """The pixel range a model takes by what first changes pixel values, and what that
    is as the log names it: a .keras file's (loaded as `obj`) first such layer, a
    Rescaling or Normalization (`_pixel_range_taken`), or the first ops of the graph of
    a SavedModel folder or TF Hub handle (`saved_model_scaling`, read from its proto: a
    remote job's launcher does not load it), of constants (`_affine_pixel_range`); None
    for any other model, or one they show to take no 8-bit pixels."""
    if model.kind == "keras":
        layer = _first_layer(obj)
        found = _pixel_range_taken(layer)
        return None if found is None else (found, f"layer {layer.name!r} ({type(layer).__name__})")
    scaling = _graph_scaling(model)
    found = None if scaling is None else _affine_pixel_range(scaling.scale, scaling.offset)
    return None if found is None else (found, f"graph's {scaling.named}")


def _graph_scaling(model: ModelReference) -> GraphScaling | None:
    """`saved_model_scaling` of a SavedModel folder or TF Hub handle's folder
    (`_saved_model_folder`) that is no known model (its range is known) or TF1 Hub
    module; None for any other, or a proto that does not read as expected (the model is
    fed the default range, as before)."""
    if model.kind not in ("saved_model", "hub") or model.location in KNOWN_SIGNATURES:
        return None
    try:
        return saved_model_scaling(_saved_model_folder(model))
    except Exception as e:  # an odd proto: the range is not learnt from it
        _LOG.info("Could not read the pixel range %s takes from its graph: %s", model.reference, e)
        return None


def _warn_of_other_range(
    rescales: str, found: tuple[float, float], given: tuple[float, float]
) -> None:
    """--input_range `given` differs from the range `found` that the model's layer that
    `rescales` them takes: its images reach it darker or brighter than it was trained on."""
    if tuple(map(float, given)) == found:
        return
    _LOG.warning(
        "%s, but --input_range %g,%g feeds it pixels in [%g, %g]: unless it was trained on "
        "those, its predictions and maps are those of images it never saw; drop "
        "--input_range to feed it [%g, %g].",
        rescales,
        *given,
        *given,
        *found,
    )


def _saved_model_folder(model: ModelReference) -> str:
    """The folder a SavedModel or TF Hub model (`kind` hub or saved_model) is loaded
    from: a TF Hub handle's, where TF Hub keeps it (`hub.resolve`: its cache, which
    loading filled), else the SavedModel folder itself."""
    import tensorflow_hub as hub  # noqa: PLC0415

    return hub.resolve(model.location) if model.kind == "hub" else model.location


def _recorded_image_sides(model: ModelReference) -> tuple[int, int] | None:
    """`hub_image_sides` of the MetaGraph loading took of a TF1 Hub module (a folder, or
    a handle's, which loading put in TF Hub's cache); None for any other model, or a
    proto that does not read (the module loaded regardless)."""
    if model.kind not in ("saved_model", "hub") or model.location in KNOWN_SIGNATURES:
        return None
    try:
        folder = _saved_model_folder(model)
        if not is_hub_module_folder(folder):
            return None
        meta = meta_graph_loaded(saved_model_proto(folder).meta_graphs, True)
        return hub_image_sides(meta) if meta is not None else None
    except Exception as e:  # an odd attachment: the size is not learnt from it
        _LOG.info("Could not read the image size %s records: %s", model.reference, e)
        return None


def side_taken(model: ModelReference, obj: Any) -> _Side | None:
    """The size a loaded model of an open input size takes itself: a Keras model's
    first Resizing's, or the one a TF1 Hub module records (height x width)."""
    if model.kind == "keras":
        return _resizing_side(obj)
    return hub_side(_recorded_image_sides(model))
