"""Gradient evaluations per second inside the job's model handler, against the bare model.

The reference is the bare model's forward+backward throughput (the handler's own
compiled gradient function, called in a loop on a fixed batch) at its best batch
size, measured in the same run. The handler is then timed on the sample photos
(one RunInference batch of 8), start-up excluded: its overhead is everything
around the gradient calls (interpolation inputs, accumulation, forward passes).

    python -m benchmarks.efficiency
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import load_photos, print_table
from transforms.attribution import IGModelHandler, ImageExample
from transforms.config import AttributionConfig
from transforms.tf_model import resolve_model

_D = AttributionConfig()


def bare_throughput(model, images, batch, seconds=8.0) -> float:
    fn = model.score_grad_fn("raw")
    x = np.resize(images, (batch, *images.shape[1:])).astype(np.float32)
    base, alphas = np.zeros_like(x), np.linspace(0, 1, batch).astype(np.float32)
    targets = np.zeros(batch, np.int64)
    fn(x, base, alphas, targets)  # trace
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(x, base, alphas, targets)
        count += batch
    return count / (time.perf_counter() - start)


def main():
    spec = resolve_model("efficientnet_lite0")
    names, images = load_photos()
    examples = [ImageExample(n, n, None, im) for n, im in zip(names, images, strict=True)]
    configs = {
        "fixed gausslegendre 64": AttributionConfig(steps=64, tolerance=0.0),
        f"defaults (adaptive {_D.method} from {_D.steps}, tol {_D.tolerance:g})": _D,
    }
    handler = IGModelHandler(spec, configs["fixed gausslegendre 64"], None, batch_size=8)
    model = handler.load_model()
    bare = {b: bare_throughput(model, images, b) for b in (8, 16, 32, 64)}
    best_batch = max(bare, key=bare.get)
    reference = bare[best_batch]
    rows = [[f"bare forward+backward, batch {b}", f"{t:.1f}", "", f"{t / reference:.1%}"]
            for b, t in bare.items()]  # fmt: skip
    for name, config in configs.items():
        handler = IGModelHandler(spec, config, None, batch_size=8)
        handler.run_inference(examples[:1], model)  # trace the forward-only functions too
        start = time.perf_counter()
        outcomes = handler.run_inference(examples, model)
        seconds = time.perf_counter() - start
        evals = sum(r["evaluations"] for o in outcomes for r in o.rows)
        rows.append([f"handler, {name}", f"{evals / seconds:.1f}", f"{evals / len(examples):.0f}",
                     f"{evals / seconds / reference:.1%}"])  # fmt: skip
    print_table(
        f"Gradient evaluations per second (reference: bare model at its best batch, {best_batch})",
        ["what", "grad evals/s", "grad evals/image", "vs reference"],
        rows,
    )


if __name__ == "__main__":
    main()
