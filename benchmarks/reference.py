"""Converged reference IG, for measuring per-pixel accuracy.

The reference is the composite trapezoid rule in s on the path a = s^2, with
N = 2^k + 1 nodes (N - 1 intervals), dense near the baseline where the scores
of image classifiers move fastest. Its own convergence is shown by the same
rule on every other node (N' = 2^(k-1) + 1): ||A_N - A_N'|| / ||A_N||.
References are cached under benchmarks/.cache (they cost N gradient
evaluations per image and score).

    python -m benchmarks.reference [--photos 4] [--score raw] [--intervals 256]
        # prints the convergence of a few references (bundled model, sample photos)
"""

from __future__ import annotations

import argparse
import hashlib
import os

import numpy as np

__all__ = ["graded_rule", "reference_ig", "relative_l2", "weights_id"]

_CACHE = os.path.join(os.path.dirname(__file__), ".cache")


def relative_l2(estimate: np.ndarray, truth: np.ndarray) -> float:
    """||estimate - truth|| / ||truth|| over all values."""
    truth = np.asarray(truth, np.float64)
    return float(np.linalg.norm(np.asarray(estimate, np.float64) - truth) / np.linalg.norm(truth))


def weights_id(name: str, weights: list[np.ndarray]) -> str:
    """`name` and a digest of the model's `weights`: a `model_id` for `reference_ig`
    that changes whenever the weights do (a random net's, calibrated on the photos)."""
    digest = hashlib.sha256()
    for w in weights:
        digest.update(np.ascontiguousarray(w).tobytes())
    return f"{name}:{digest.hexdigest()[:16]}"


def graded_rule(intervals: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes a = s^2 and weights of the trapezoid rule in s with `intervals` intervals:
    integral_0^1 f(a) da = integral_0^1 f(s^2) 2 s ds."""
    s = np.linspace(0.0, 1.0, intervals + 1)
    w = np.full(intervals + 1, 1.0 / intervals)
    w[[0, -1]] /= 2.0
    return s * s, w * 2.0 * s


def _key(model_id: str, image: np.ndarray, target: int, score: str, intervals: int) -> str:
    digest = hashlib.sha256(image.tobytes()).hexdigest()[:16]
    text = f"{model_id}|{digest}|{target}|{score}|{intervals}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _integrate(integrand, image, target, alphas, weights, chunk: int = 32) -> np.ndarray:
    """sum_i weights_i c(alphas_i) for one image, black baseline: float64 [H, W, C]."""
    total = np.zeros(image.shape, np.float64)
    ref = np.zeros_like(image)[None]
    for i in range(0, len(alphas), chunk):
        a, w = alphas[i : i + chunk], weights[i : i + chunk]
        n = len(a)
        _, _, finite, contributions = integrand(
            image[None], ref, np.zeros(n, np.int32), a.astype(np.float32), np.full(n, target)
        )
        if not np.all(finite):
            raise ValueError("non-finite gradient on the reference path")
        total += np.tensordot(w, np.asarray(contributions, np.float64), axes=1)
    return total


def reference_ig(classifier, model_id, image, target, score, intervals=2048):
    """(A_N, A_N/2): the reference and the same rule on every other node.

    Args:
      classifier: a `transforms.tf_model.Classifier`.
      model_id: a string that names the model's weights (part of the cache key).
      image: float32 [H, W, C] in the model's input range; the baseline is black (0).
      target: the output index (with the model's label offset).
      score: 'raw' or 'softmax'.
      intervals: N - 1, a power of two.
    """
    if intervals < 2 or intervals % 2:
        # The coarse rule takes every other node: an odd count leaves the last
        # node out of it (and doubles the weights of the rest): a wrong convergence.
        raise ValueError(f"intervals must be even (a power of two), got {intervals}")
    os.makedirs(_CACHE, exist_ok=True)
    path = os.path.join(_CACHE, _key(model_id, image, target, score, intervals) + ".npz")
    if os.path.exists(path):
        with np.load(path) as f:
            return f["fine"], f["coarse"]
    alphas, weights = graded_rule(intervals)
    integrand = classifier.integrand_fn(score)
    odd = _integrate(integrand, image, target, alphas[1::2], weights[1::2])
    even = _integrate(integrand, image, target, alphas[0::2], weights[0::2])
    fine = odd + even
    coarse = 2.0 * even  # the trapezoid in s on every other node: doubled weights
    np.savez(path, fine=fine, coarse=coarse)
    return fine, coarse


def main(argv=None):
    """The convergence of the references of a few sample photos (predicted class)."""
    from benchmarks.common import load_classifier, load_photos, print_table  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--score", choices=("raw", "softmax"), default="raw")
    parser.add_argument("--intervals", type=int, default=256, help="N - 1, a power of two")
    args = parser.parse_args(argv)
    if args.intervals < 2 or args.intervals & (args.intervals - 1):
        parser.error(f"--intervals must be a power of two >= 2, got {args.intervals}")
    names, x = load_photos()
    names, x = names[: args.photos], x[: args.photos]
    clf = load_classifier()
    targets = clf.logits(x).argmax(1)
    rows = []
    for name, image, target in zip(names, x, targets, strict=True):
        fine, coarse = reference_ig(
            clf, "efficientnet_lite0", image, int(target), args.score, args.intervals
        )
        rows.append([name, int(target), f"{relative_l2(coarse, fine):.3%}"])
    print_table(
        f"Reference IG, trapezoid on a = s^2, score {args.score}: {args.intervals + 1} nodes "
        f"against {args.intervals // 2 + 1} (||A_N' - A_N|| / ||A_N||)",
        ["photo", "target", "N vs N/2"],
        rows,
    )


if __name__ == "__main__":
    main()
