"""Gradient evaluations per second inside the job's model handler, against the bare model.

The reference is the bare model's forward+backward throughput (the handler's own
compiled gradient function, called in a loop on a fixed batch) at its best batch
size. The handler then runs RunInference batches of 8 real photos, start-up
excluded; its overhead is everything around the gradient calls (the prediction
and baseline forward passes, interpolation inputs, accumulation, and the
refinement rounds' smaller calls).

A job runs one handler over many batches, so the handler is measured in steady
state: after one warm-up batch (tracing, and the first call at each new batch
shape, which costs oneDNN ~20 ms to set up). The first, cold batch is shown too.
This shared 2-core machine's speed drifts by 10-30 % within minutes, so every
measurement is repeated in rounds, each handler run timed between two runs of
the bare model, and the table gives the median over rounds of the ratio to the
mean of those two. The handler runs with `--faithfulness none`: the checks'
forward passes are not gradient evaluations (their cost: benchmarks.faithfulness).

    python -m benchmarks.efficiency [--rounds 3] [--path_batch_sizes 32,64]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from benchmarks.common import extra_photos, load_photos, print_table
from transforms.attribution import IGModelHandler, ImageExample
from transforms.config import AttributionConfig
from transforms.tf_model import resolve_model

_D = AttributionConfig()
_BATCH = 8


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


def handler_throughput(handler, model, examples) -> tuple[float, float]:
    """(gradient evaluations per second, per image) over RunInference batches of 8."""
    start, evals = time.perf_counter(), 0
    for i in range(0, len(examples), _BATCH):
        outcomes = handler.run_inference(examples[i : i + _BATCH], model)
        evals += sum(r["evaluations"] for o in outcomes for r in o.rows)
    return evals / (time.perf_counter() - start), evals / len(examples)


def photo_examples(names, images) -> list[ImageExample]:
    return [ImageExample(n, n, None, im) for n, im in zip(names, images, strict=True)]


def _cold_rows(handlers, models, bare, warm, images, best_batch) -> list[list[str]]:
    """Each handler's first (cold) batch on its own model, against the bare model
    (`bare`) measured right after it."""
    rows = []
    for name, handler in handlers.items():
        rate, per_image = handler_throughput(handler, models[name], warm)
        reference = bare_throughput(bare, images, best_batch, seconds=4.0)
        cells = [f"{rate:.1f}", f"{per_image:.0f}", f"{rate / reference:.1%}", "one batch"]
        rows.append([f"handler, {name}: first (cold) batch", *cells])
    return rows


def _steady_rows(handlers, models, bare, measured, images, best_batch, rounds) -> list[list[str]]:
    """The bare model and every handler in steady state, back to back in each round."""
    ratios = {name: [] for name in handlers}
    rates = {name: [] for name in handlers}
    per_image = {}
    references = []
    for _ in range(rounds):
        for name, handler in handlers.items():
            # The bare model just before and after each handler run: drift cancels.
            before = bare_throughput(bare, images, best_batch, seconds=4.0)
            rate, per_image[name] = handler_throughput(handler, models[name], measured)
            reference = (before + bare_throughput(bare, images, best_batch, seconds=4.0)) / 2
            references.append(reference)
            rates[name].append(rate)
            ratios[name].append(rate / reference)
    spread = f"{min(references):.1f}-{max(references):.1f}"
    rows = [
        [
            f"bare forward+backward, batch {best_batch}, in the rounds",
            f"{np.median(references):.1f}",
            "",
            "100.0%",
            spread,
        ]
    ]
    for name in handlers:
        rows.append(
            [
                f"handler, {name}: steady state",
                f"{np.median(rates[name]):.1f}",
                f"{per_image[name]:.0f}",
                f"{np.median(ratios[name]):.1%}",
                f"{min(ratios[name]):.1%}-{max(ratios[name]):.1%}",
            ]
        )
    return rows


def handler_configs(path_batch_sizes: str) -> dict[str, AttributionConfig]:
    """The handlers measured, by label: fixed Gauss-Legendre 64, the defaults, and
    the defaults at each of `path_batch_sizes` ("32,64"; "" for none)."""
    # Gradient evaluations only: the faithfulness checks' forward passes are
    # measured apart (benchmarks.faithfulness).
    off = dataclasses.replace(_D, faithfulness="none")
    configs = {
        # The method named: the default rule is not Gauss-Legendre.
        "fixed gausslegendre 64": dataclasses.replace(
            off, method="gausslegendre", steps=64, tolerance=0.0
        ),
        f"defaults (adaptive {_D.method} from {_D.steps}, tol {_D.tolerance:g}), "
        "--faithfulness none": off,
    }
    for size in (int(v) for v in path_batch_sizes.split(",") if v):
        configs[f"defaults, --path_batch_size {size}"] = dataclasses.replace(
            off, path_batch_size=size
        )
    return configs


def _sizes(text: str) -> str:
    """`--path_batch_sizes`: comma-separated sizes >= 1 ("" for none), checked."""
    for value in (v for v in text.split(",") if v):
        if not value.isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(f"sizes >= 1 such as 32,64, got {text!r}")
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--path_batch_sizes",
        default="",
        type=_sizes,
        help="also the defaults at these path points per call, e.g. 32,64 (the defaults "
        "row itself runs at `auto`, the device's own)",
    )
    args = parser.parse_args(argv)
    spec = resolve_model("efficientnet_lite0")
    warm_names, warm_images = load_photos()  # the 8 sample photos: the warm-up batch
    names, images = load_photos(extra_photos())  # 16 more: two batches, measured
    warm, measured = photo_examples(warm_names, warm_images), photo_examples(names, images)
    configs = handler_configs(args.path_batch_sizes)
    handlers = {
        name: IGModelHandler(spec, c, None, batch_size=_BATCH) for name, c in configs.items()
    }
    # One model per handler, as a job has: a shared one would trace the gradient
    # functions in the first handler's cold batch only (the others' "cold" batch
    # would be warm), and its call-size tuner would learn from every handler's calls.
    models = {name: handler.load_model() for name, handler in handlers.items()}
    model = next(iter(handlers.values())).load_model()  # the bare model's

    bare = {b: bare_throughput(model, images, b, seconds=4.0) for b in (8, 16, 32, 64)}
    best_batch = max(bare, key=bare.get)
    rows = [
        [f"bare forward+backward, batch {b}", f"{t:.1f}", "", f"{t / bare[best_batch]:.1%}", ""]
        for b, t in bare.items()
    ]
    rows += _cold_rows(handlers, models, model, warm, images, best_batch)
    rows += _steady_rows(handlers, models, model, measured, images, best_batch, args.rounds)
    print_table(
        f"Gradient evaluations per second (reference: bare model at its best batch, {best_batch}; "
        f"steady state: median of {args.rounds} rounds over 2 batches of 8 photos)",
        ["what", "grad evals/s", "grad evals/image", "vs reference", "range over rounds"],
        rows,
    )


if __name__ == "__main__":
    main()
