"""Baseline images x' for IG, in NumPy."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

__all__ = ["BASELINES", "FROM_IMAGE", "blurred", "make_baselines"]

#: The baselines `make_baselines` draws (--baseline).
BASELINES: tuple[str, ...] = ("black", "white", "grey", "blur", "noise")
#: Those made from the image's pixels; the others need only its shape (and the
#: noise its id and the run's seed).
FROM_IMAGE: tuple[str, ...] = ("blur",)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """float32 [H, W, C]: `image` blurred along H and W (taps to 3 sigma, reflected
    at the edges). The sums run in float64, so that a uniform image comes back as
    itself, as a uniform image is its own blur: in float32 they missed it by a
    rounding, and IG refined a map of that rounding up to --max_steps."""
    radius = max(1, int(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    out = image.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.moveaxis(np.pad(out, pad, mode="reflect"), axis, 0)
        size = out.shape[axis]
        total = np.zeros_like(padded[:size])
        for shift, tap in enumerate(taps):  # a shifted copy per tap: no window copies
            total += tap * padded[shift : shift + size]
        out = np.moveaxis(total, 0, axis)
    return out.astype(np.float32)


def blurred(image: np.ndarray) -> np.ndarray:
    """The `blur` baseline of `image`: float32 [H, W, C], `image` (float [H, W, C])
    blurred by a Gaussian of sigma max(H, W) / 16, in the image's own range (each
    value a weighted mean of its values: no input range is needed)."""
    return _gaussian_blur(image, sigma=max(image.shape[:2]) / 16.0)


def _noise_seed(seed: int, image_id: str) -> int:
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _check_arguments(shape: tuple[int, ...], names: Sequence[str]) -> None:
    """One string was read as names of one letter ('Unknown baseline 'b''), and a
    batch [N, H, W, C] as one image whose blur ran over N and H."""
    if isinstance(names, str):
        raise TypeError(f"names must be a list of baselines, e.g. [{names!r}], not one string.")
    if len(shape) != 3:
        raise ValueError(
            f"image must be one image [H, W, C], got shape {shape}; call make_baselines "
            "once per image of a batch."
        )


def make_baselines(
    image: np.ndarray,
    names: Sequence[str],
    input_range: tuple[float, float],
    image_id: str,
    seed: int = 0,
) -> np.ndarray:
    """The baselines of one image.

    Args:
      image: float32 [H, W, 3] in `input_range`.
      names: baselines among black (low), white (high), grey (middle), blur
        (Gaussian blur, sigma = the longer side / 16, of the image) and noise (uniform in
        the range, seeded by `seed` and `image_id`, so reruns are identical).
      input_range: (low, high) of the model's input.
      image_id: the image's id, for the noise seed.
      seed: run seed of the noise baseline.

    Returns:
      float32 [len(names), H, W, 3].

    Raises:
      TypeError: `names` is one string (a name is `["blur"]`).
      ValueError: an unknown name, or an `image` that is not one [H, W, C] image.
    """
    _check_arguments(np.shape(image), names)
    low, high = input_range
    out = np.empty((len(names), *image.shape), dtype=np.float32)
    for i, name in enumerate(names):
        if name == "black":
            out[i] = low
        elif name == "white":
            out[i] = high
        elif name == "grey":
            out[i] = (low + high) / 2.0
        elif name == "blur":
            out[i] = blurred(image)
        elif name == "noise":
            rng = np.random.default_rng(_noise_seed(seed, image_id))
            out[i] = rng.uniform(low, high, size=image.shape)
        else:
            raise ValueError(f"Unknown baseline {name!r}; choose from: {', '.join(BASELINES)}.")
    return out
