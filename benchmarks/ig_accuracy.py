"""Accuracy against cost of every quadrature rule, fixed and adaptive.

Relative completeness delta |sum IG - (F(x) - F(x'))| / |F(x) - F(x')| of the
predicted class's logit, black baseline, on real photos (scikit-image), for
the bundled pretrained EfficientNet-Lite0 and for the same net with random
weights. Every row of the table is measured in the same run; the reference row
is the plain Gauss-Legendre rule at 64 nodes (what Captum's default does).
The adaptive rows compare every rule's composite form at the same tolerance;
the cheapest one meeting the goal (median <= 0.5 %, p95 <= 2 %) is the default.

    python -m benchmarks.ig_accuracy [--photos 16] [--quick] [--nets both|pretrained|random]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import keras
import numpy as np

from benchmarks.common import extra_photos, load_classifier, load_photos, print_table
from transforms import ig
from transforms.config import AttributionConfig
from transforms.efficientnet_lite import build_efficientnet_lite0

FIXED_STEPS = (16, 32, 64, 128, 256)
_D = AttributionConfig()
# Every rule at the default steps and tolerance first, then the default rule's neighbours.
ADAPTIVE = ((_D.steps, _D.tolerance), (32, _D.tolerance), (_D.steps, 0.007), (_D.steps, 0.01))


def measure(clf, x, method, steps, tolerance):
    logits = clf.logits(x)
    targets = logits.argmax(1)
    fx = logits[np.arange(len(x)), targets]
    f0 = clf.logits(np.zeros_like(x[:1]))[0, targets]
    start = time.perf_counter()
    result = ig.integrated_gradients(
        clf.score_grad_fn("raw"), x, np.zeros((len(x), 1, *x.shape[1:]), np.float32),
        np.arange(len(x)), targets, method=method, steps=steps, path_batch_size=32,
        target_scores=fx, baseline_scores=f0[:, None], tolerance=tolerance, max_steps=256,
        score_fn=clf.score_fn("raw"), integrand=clf.integrand_fn("raw"),
    )  # fmt: skip
    seconds = time.perf_counter() - start
    sums = result.attributions.reshape(len(x), -1).sum(axis=1, dtype=np.float64)
    _, relative = ig.completeness(sums, fx, f0)
    return {
        "median": float(np.median(relative)),
        "p95": float(np.percentile(relative, 95)),
        "worst": float(relative.max()),
        "evals": float(result.evaluations.mean()),
        "forwards": float(result.forward_evaluations.mean()),
        "seconds": seconds,
    }


def table(title, clf, x, quick):
    rows, reference = [], None
    configs = [(m, s, 0.0) for m in ig.METHODS for s in FIXED_STEPS if not quick or s in (32, 64)]
    configs += [(m, *ADAPTIVE[0]) for m in ig.METHODS]
    configs += [(m, s, t) for m in ("riemann_trapezoid", "gausslegendre") for s, t in ADAPTIVE[1:]]
    measure(clf, x[:2], _D.method, *ADAPTIVE[0])  # trace the functions first
    results = {c: measure(clf, x, *c) for c in configs}
    reference = results[("gausslegendre", 64, 0.0)]
    for (method, steps, tolerance), r in results.items():
        mode = f"adaptive, tol {tolerance:g}" if tolerance else "fixed"
        rows.append([
            method, mode, steps, f"{r['evals']:.1f}", f"{r['forwards']:.1f}",
            f"{r['median']:.3%}", f"{r['p95']:.3%}", f"{r['worst']:.3%}",
            f"{reference['median'] / max(r['median'], 1e-12):.2f}x",
            f"{r['seconds'] / reference['seconds']:.2f}x",
        ])  # fmt: skip
    print_table(
        f"{title} ({len(x)} photos; reference: gausslegendre fixed 64)",
        ["method", "mode", "--steps", "grad evals/image", "forwards/image", "median rel. delta",
         "p95", "worst", "median vs ref", "time vs ref"],
        rows,
    )  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="32 and 64 steps only")
    parser.add_argument("--nets", choices=["both", "pretrained", "random"], default="both")
    args = parser.parse_args(argv)
    _, x = load_photos(extra_photos()[: args.photos])
    if args.nets in ("both", "pretrained"):
        table("Pretrained EfficientNet-Lite0", load_classifier(), x, args.quick)
    if args.nets in ("both", "random"):
        keras.utils.set_random_seed(0)  # the same random net in every run
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/random.keras"
            build_efficientnet_lite0(state_dict=None).save(path)
            title = "EfficientNet-Lite0 with random weights (seed 0)"
            table(title, load_classifier(path), x[:8], args.quick)


if __name__ == "__main__":
    main()
