"""Per-pixel accuracy against cost of every quadrature rule, fixed and adaptive.

Per row (a real photo, the predicted class, black baseline), against a
converged reference IG (`benchmarks.reference`: trapezoid on a = s^2 with 1025
nodes, its own convergence shown against 513 nodes):

* per-pixel error: ||A - A_ref|| / ||A_ref|| over all H x W x C values (for
  `--attributions pixel`, over the H x W channel sums, the map that mode keeps);
* completeness: |sum A - (F(x) - F(x'))| / |F(x) - F(x')|, a sum, which
  cancels per-pixel errors of opposite sign;
* the engine's own estimate of the per-pixel error (`attribution_error`),
  as a ratio to the true error: within 2x, and how often it is below;
* gradient evaluations per image, and time against Gauss-Legendre 64 (Captum's
  default rule, at 64 points where Captum takes 50) measured in the same run.

For the bundled pretrained EfficientNet-Lite0 and a random-weight MobileNetV2,
for both scores (the logit, `raw`, and the probability, `softmax`).

    python -m benchmarks.ig_accuracy [--photos 16] [--nets pretrained,random]
        [--scores raw,softmax] [--quick] [--intervals 1024] [--random_photos 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import tempfile
import time

import keras
import numpy as np

from benchmarks.common import extra_photos, load_classifier, load_photos, print_table
from benchmarks.reference import _integrate, graded_rule, reference_ig, relative_l2, weights_id
from transforms import ig
from transforms.config import ESTIMATE_MARGIN, AttributionConfig
from transforms.ig.engine import error_map
from transforms.tf_model import Classifier

_D = AttributionConfig()
_BATCH = 8  # images per engine call, as RunInference hands them to the handler


def _configs(quick: bool) -> list[tuple[str, ig.IGSettings | int]]:
    """(label, settings) of every rule measured; an int is a static graded rule."""
    fixed = (64,) if quick else (32, 64, 128, 256)
    pixel = AttributionConfig(attributions="pixel").ig_settings()
    out: list[tuple[str, ig.IGSettings | int]] = [
        ("defaults", _D.ig_settings()),
        ("defaults, --attributions pixel (H x W map)", pixel),
        ("gausslegendre fixed 64 (reference)", ig.IGSettings("gausslegendre", 64)),
        ("seed: trapezoid fixed 51", ig.IGSettings("riemann_trapezoid", 51)),
    ]
    out += [(f"gausslegendre fixed {n}", ig.IGSettings("gausslegendre", n)) for n in fixed]
    out += [(f"trapezoid fixed {n + 1}", ig.IGSettings("riemann_trapezoid", n + 1)) for n in fixed]
    out += [(f"trapezoid on a = s^2, {n + 1}", n) for n in fixed[:2]]
    # Bounds on the estimate (the engine's tolerance): the job's --tolerance times
    # ESTIMATE_MARGIN.
    bounds = (0.03,) if quick else (0.01, 0.02, 0.03, 0.064)
    for bound in bounds:
        settings = ig.IGSettings(
            _D.method,
            _D.steps,
            bound,
            _D.max_steps,
            completeness_tolerance=_D.completeness_tolerance,
        )
        label = f"adaptive trapezoid, estimate bound {bound:g} (--tolerance {bound * ESTIMATE_MARGIN:g})"
        out.append((label, settings))
    if not quick:
        for method in ("gausslobatto", "gausslegendre", "riemann_middle"):
            settings = dataclasses.replace(_D, method=method).ig_settings()
            out.append((f"adaptive {method}, --tolerance {_D.tolerance:g}", settings))
    return out


def _targets(clf, x, score, target=None):
    """The target of each photo, its score F(x) and the black baseline's F(x'), for
    `score` as the job computes it: the predicted class (the job's default), or
    output `target` for every photo."""

    def scores(images):
        logits = clf.logits(images).astype(np.float64)
        return logits if score == "raw" else clf.probabilities(logits)

    out, base = scores(x), scores(np.zeros_like(x[:1]))
    targets = out.argmax(1) if target is None else np.full(len(x), target, np.int64)
    return targets, out[np.arange(len(x)), targets], base[0, targets]


def _run(clf, x, targets, fx, f0, score, settings):
    """Attributions, estimated errors, evaluations, forwards, seconds of one rule."""
    start = time.perf_counter()
    if isinstance(settings, int):
        alphas, weights = graded_rule(settings)
        integrand = clf.integrand_fn(score)
        a = np.stack(
            [
                _integrate(integrand, im, t, alphas, weights)
                for im, t in zip(x, targets, strict=True)
            ]
        )
        n = len(x)
        return (
            a,
            np.full(n, np.nan),
            np.full(n, len(alphas)),
            np.zeros(n),
            time.perf_counter() - start,
        )
    parts = []
    for i in range(0, len(x), _BATCH):
        sl = slice(i, i + _BATCH)
        n = len(x[sl])
        parts.append(
            ig.integrated_gradients(
                clf.integrand_fn(score),
                x[sl],
                np.zeros((n, 1, *x.shape[1:]), np.float32),
                np.arange(n),
                targets[sl],
                settings,
                target_scores=fx[sl],
                baseline_scores=f0[sl, None],
                score_fn=clf.score_fn(score),
            )
        )
    seconds = time.perf_counter() - start
    cat = lambda name: np.concatenate([getattr(r, name) for r in parts])  # noqa: E731
    return (
        cat("attributions"),
        cat("error"),
        cat("evaluations"),
        cat("forward_evaluations"),
        seconds,
    )


def _row(label, refs, fx, f0, result, reference_seconds, channel_sum=False):
    """One rule's line; with `channel_sum`, errors of the pixel maps (channel sums)."""
    a, estimate, evals, forwards, seconds = result
    kept = functools.partial(error_map, channel_sum=channel_sum)  # the engine's own
    true = np.array([relative_l2(kept(ai), kept(ri)) for ai, ri in zip(a, refs, strict=True)])
    sums = a.reshape(len(a), -1).sum(axis=1, dtype=np.float64)
    _, rel = ig.completeness(sums, fx, f0)
    ratio = estimate / true
    known = np.isfinite(ratio)
    within = f"{np.mean((ratio[known] >= 0.5) & (ratio[known] <= 2)):.0%}" if known.any() else "-"
    under = f"{np.mean(ratio[known] < 1):.0%}" if known.any() else "-"
    return [
        label,
        f"{evals.mean():.1f}",
        f"{forwards.mean():.1f}",
        f"{np.median(true):.2%}",
        f"{np.percentile(true, 95):.2%}",
        f"{true.max():.2%}",
        f"{np.median(rel):.2%}",
        f"{np.median(ratio[known]):.2f}" if known.any() else "-",
        within,
        under,
        f"{seconds / reference_seconds:.2f}x",
    ]


def table(title, clf, model_id, x, score, quick, intervals):
    targets, fx, f0 = _targets(clf, x, score)
    refs, conv = [], []
    for im, t in zip(x, targets, strict=True):
        fine, coarse = reference_ig(clf, model_id, im, int(t), score, intervals)
        refs.append(fine)
        conv.append(relative_l2(coarse, fine))
    configs = _configs(quick)
    _run(clf, x[:2], targets[:2], fx[:2], f0[:2], score, configs[0][1])  # trace first
    results = {label: _run(clf, x, targets, fx, f0, score, s) for label, s in configs}
    ref_seconds = results["gausslegendre fixed 64 (reference)"][4]
    pixel = {label: getattr(s, "channel_sum", False) for label, s in configs}
    rows = [_row(label, refs, fx, f0, r, ref_seconds, pixel[label]) for label, r in results.items()]
    print_table(
        f"{title}, score {score} ({len(x)} photos; reference: trapezoid on a = s^2, "
        f"{intervals + 1} nodes, vs {intervals // 2 + 1} nodes: median {np.median(conv):.3%}, "
        f"worst {max(conv):.3%}; time vs Gauss-Legendre fixed 64)",
        [
            "rule",
            "grad evals/image",
            "forwards/image",
            "per-pixel median",
            "p95",
            "worst",
            "completeness median",
            "estimate/true median",
            "estimate within 2x",
            "underestimates",
            "time",
        ],
        rows,
    )


def _random_mobilenet(tmp: str, photos: np.ndarray) -> tuple[Classifier, str]:
    """MobileNetV2 with random weights (seed 0), its batch norms calibrated on the
    photos: each layer's moving mean and variance set, in order, to the batch
    statistics of its input, and logits out (Keras' default head ends in a
    softmax). With Keras' default statistics (mean 0, variance 1) and head, the
    random net's outputs hardly depend on the image (F(x) - F(x') was 0 in
    float32); calibrated, every layer sees unit-scale inputs, as a trained net's
    do, and the kinks of its ReLU6s are spread along the path. Returns the
    Classifier and its `model_id` for the reference cache."""
    keras.utils.set_random_seed(0)  # the same random net in every run
    model = keras.applications.MobileNetV2(
        weights=None,
        input_shape=(224, 224, 3),
        classifier_activation=None,  # logits
    )
    inputs = np.asarray(photos, np.float32)  # as the benchmark feeds them
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            probe = keras.Model(model.inputs[0], layer.input)
            seen = np.asarray(probe(inputs, training=False), np.float64)
            axes = tuple(range(seen.ndim - 1))
            layer.moving_mean.assign(seen.mean(axis=axes).astype(np.float32))
            layer.moving_variance.assign(seen.var(axis=axes).astype(np.float32))
    path = f"{tmp}/mobilenet_v2_random.keras"
    model.save(path)
    # The calibration depends on the photos (--photos, --random_photos): the
    # references are cached under an id of the weights, not of the architecture.
    return load_classifier(path), weights_id("mobilenet_v2_random", model.get_weights())


def _nets(text: str) -> list[str]:
    """--nets: a comma-separated list of `pretrained` and `random` (any other name
    ran the random net under its title)."""
    nets = [net.strip() for net in text.split(",")]
    unknown = [net for net in nets if net not in ("pretrained", "random")]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown net {unknown[0]!r}; choose pretrained, random or both"
        )
    return nets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument(
        "--nets", type=_nets, default="pretrained,random", help="pretrained, random or both"
    )
    parser.add_argument("--scores", default="raw,softmax")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer rules: 64 nodes, estimate bound 0.03 (--tolerance 0.0375)",
    )
    parser.add_argument("--intervals", type=int, default=1024, help="reference intervals")
    parser.add_argument("--random_photos", type=int, default=8, help="photos for the random net")
    parser.add_argument("--random_scores", default="raw,softmax", help="scores for the random net")
    args = parser.parse_args(argv)
    _, x = load_photos(extra_photos()[: args.photos])
    for net in args.nets:
        with tempfile.TemporaryDirectory() as tmp:
            if net == "pretrained":
                clf, model_id, title = load_classifier(), "efficientnet_lite0", "EfficientNet-Lite0"
                photos = x
            else:
                photos = x[: args.random_photos]
                clf, model_id = _random_mobilenet(tmp, photos)
                title = "MobileNetV2, random weights (seed 0), batch norms calibrated on the photos"
            scores = args.scores if net == "pretrained" else args.random_scores
            for score in scores.split(","):
                table(title, clf, model_id, photos, score, args.quick, args.intervals)


if __name__ == "__main__":
    main()
