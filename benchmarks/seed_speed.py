"""Time to the same per-pixel accuracy as the seed notebook's loop, end to end.

The seed loop (shared/seeds/000, "Integrated Gradient Feature Attribution") runs
eagerly, one image at a time, with a GradientTape over alphas in batches of 32
and the trapezoid rule over 51 points, on the softmax probability of the
predicted class (`--score softmax`, the default; `--score raw` attributes the
logit instead, as the other seed, shared/seeds/003, does). Here it runs as
written (plus the completeness check it lacks, and saving its maps) against the
job, each as its own process, start-up included, on the same 224 x 224 photos
(so that both preprocessings are the identity) and the same SavedModel:

1. the seed loop;
2. the job at the same rule (riemann_trapezoid, 51 points, no refinement);
3. the job with its estimate bound (`--tolerance` / ESTIMATE_MARGIN) set to the
   seed's own median per-pixel error: what it takes the job to be as accurate as
   the seed;
4. the job at its defaults;

each with `--faithfulness none` (the seed has no such checks), and 5. the job at
its defaults as shipped, faithfulness on: the difference is what the checks cost.

Accuracy is per pixel, ||A - A_ref|| / ||A_ref||, against a converged reference
(`benchmarks.reference`, trapezoid on a = s^2; its own convergence is printed).

    python -m benchmarks.seed_speed [--images 36] [--intervals 512] [--score raw]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_hub as hub
from PIL import Image

from benchmarks.common import extra_photos, load_classifier, load_photos, print_table, run_checked
from benchmarks.reference import reference_ig, relative_l2
from transforms import images, results
from transforms.bundled.efficientnet_lite import load_efficientnet_lite0
from transforms.config import ESTIMATE_MARGIN, AttributionConfig

_DEFAULTS = AttributionConfig()
# The images made of each photo: as is, mirrored, cropped.
_VARIANTS = (
    lambda im: im,
    lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    lambda im: im.crop((0, 0, im.width * 3 // 4, im.height * 3 // 4)),
)


def _make_images(folder: str, count: int) -> None:
    """`count` real photos at 224 x 224: scikit-image's, then mirror images and crops."""
    photos = [Image.open(p).convert("RGB") for p in extra_photos()]
    k = 0
    for variant in _VARIANTS:
        for i, photo in enumerate(photos):
            if k == count:
                return
            square = images.resize_with_pad(np.asarray(variant(photo)), 224)
            Image.fromarray(square).save(os.path.join(folder, f"{k:03d}_{i}.png"))
            k += 1


def _export_saved_model(path: str) -> None:
    load_efficientnet_lite0().export(path, verbose=False)


def seed_loop(folder: str, model_path: str, maps: str, score: str = "softmax") -> dict:
    """The seed notebook's per-image loop, as written; returns timing and deltas and
    saves the maps (as the seed pickles them) to `maps`, an .npz by file name.
    score: `softmax` (the probability, as written) or `raw` (the logit)."""
    start = time.perf_counter()
    model = hub.load(model_path)
    serve = model.signatures["serving_default"]
    key = list(serve.structured_outputs)[0]
    (name,) = serve.structured_input_signature[1]

    def call(images):
        return serve(**{name: images})[key]

    def scores(logits):  # the seed's probabilities, or the logits themselves
        return tf.nn.softmax(logits, axis=-1) if score == "softmax" else logits

    def compute_gradients(images, target_class_idx):
        with tf.GradientTape() as tape:
            tape.watch(images)
            logits = call(images)
            target_scores = scores(logits)[:, target_class_idx]
        return tape.gradient(target_scores, images)

    def integrated_gradients(image, target_class_idx, m_steps=50, batch_size=32):
        baseline = tf.zeros_like(image)
        alphas = tf.linspace(start=0.0, stop=1.0, num=m_steps + 1)
        gradient_batches = tf.TensorArray(tf.float32, size=m_steps + 1)
        for alpha in tf.range(0, len(alphas), batch_size):
            from_ = alpha
            to = tf.minimum(from_ + batch_size, len(alphas))
            alpha_batch = alphas[from_:to]
            delta = tf.expand_dims(image, 0) - tf.expand_dims(baseline, 0)
            batch = tf.expand_dims(baseline, 0) + alpha_batch[:, None, None, None] * delta
            gradient_batch = compute_gradients(images=batch, target_class_idx=target_class_idx)
            gradient_batches = gradient_batches.scatter(tf.range(from_, to), gradient_batch)
        total_gradients = gradient_batches.stack()
        grads = (total_gradients[:-1] + total_gradients[1:]) / tf.constant(2.0)
        return (image - baseline) * tf.math.reduce_mean(grads, axis=0)

    deltas, saved = [], {}
    for name_ in sorted(os.listdir(folder)):
        raw = tf.io.decode_image(tf.io.read_file(os.path.join(folder, name_)), channels=3)
        img = tf.image.resize_with_pad(raw, 224, 224) / 255.0
        outputs = scores(call(img[None]))
        target = int(tf.argmax(outputs, axis=1)[0])
        attributions = integrated_gradients(img, target)
        f0 = float(scores(call(tf.zeros_like(img)[None]))[0, target])
        fx = float(outputs[0, target])
        deltas.append(abs(float(tf.reduce_sum(attributions)) - (fx - f0)) / abs(fx - f0))
        saved[name_] = attributions.numpy()
    np.savez(maps, **saved)
    return {"seconds": time.perf_counter() - start, "deltas": deltas}


def _run_job(folder, model, output, score, *flags) -> tuple[float, pd.DataFrame]:
    job = [sys.executable, "-m", "pipeline", "--dataset", folder, "--model", model]
    job += ["--output", output, "--overwrite", "--score", score, *flags]
    start = time.perf_counter()
    run_checked(job)
    return time.perf_counter() - start, results.read_results(output, with_arrays=True)


def _references(folder: str, intervals: int, score: str) -> tuple[dict, list[float]]:
    """Reference maps by file name (`score` of the predicted class, black baseline)
    and their convergence against half the intervals."""
    clf = load_classifier()
    names = sorted(os.listdir(folder))
    _, x = load_photos([os.path.join(folder, n) for n in names])
    targets = clf.logits(x).argmax(1)
    refs, conv = {}, []
    for name, image, target in zip(names, x, targets, strict=True):
        fine, coarse = reference_ig(clf, "efficientnet_lite0", image, int(target), score, intervals)
        refs[name] = fine
        conv.append(relative_l2(coarse, fine))
    return refs, conv


def _errors(maps: dict, refs: dict) -> np.ndarray:
    return np.array([relative_l2(maps[name], ref) for name, ref in refs.items()])


def _job_row(name, seconds, frame, refs, seed_seconds) -> list[str]:
    """A job run's row of the table: its speed against the seed's and its accuracy."""
    maps = {r.file_name: results.attributions_of(r) for r in frame.itertuples()}
    errors = _errors(maps, refs)
    return [
        name,
        f"{seconds:.1f}",
        f"{seed_seconds / seconds:.2f}x",
        f"{frame.evaluations.mean():.1f}",
        f"{np.median(errors):.2%}",
        f"{np.percentile(errors, 95):.2%}",
        f"{frame.attribution_error.median():.2%}",
        f"{frame.relative_delta.median():.2%}",
    ]


def _seed_row(folder, model, tmp, refs, score) -> tuple[list[str], float, float]:
    """The seed loop's row, run in a fresh interpreter; its seconds and median error."""
    maps_path = os.path.join(tmp, "seed_maps.npz")
    loop = [sys.executable, "-m", "benchmarks.seed_speed", "--seed-loop", folder, model, maps_path]
    loop += ["--score", score]
    start = time.perf_counter()
    seed = run_checked(loop)
    seconds = time.perf_counter() - start
    deltas = json.loads(seed.stdout.strip().splitlines()[-1])["deltas"]
    with np.load(maps_path) as f:
        errors = _errors({k: f[k] for k in f.files}, refs)
    median = float(np.median(errors))
    row = [
        "seed loop (eager, per image, trapezoid 51)",
        f"{seconds:.1f}",
        "1.00x",
        "51.0",
        f"{median:.2%}",
        f"{np.percentile(errors, 95):.2%}",
        "-",
        f"{np.median(deltas):.2%}",
    ]
    return row, seconds, median


def _job_runs(seed_median: float) -> dict[str, list[str]]:
    """The job's runs to compare with the seed loop: their names and extra flags."""
    off = ["--faithfulness", "none"]  # the seed has no faithfulness checks
    tolerance = seed_median * ESTIMATE_MARGIN  # the estimate held within the seed's error
    same_rule = ["--method", "riemann_trapezoid", "--steps", "51", "--tolerance", "0", *off]
    return {
        "job, same rule (riemann_trapezoid 51, fixed), --faithfulness none": same_rule,
        f"job, --tolerance {tolerance:.4f} (estimate bound {seed_median:.3f}, the seed's "
        "median per-pixel error), --faithfulness none": ["--tolerance", f"{tolerance:.4f}", *off],
        f"job, defaults (adaptive {_DEFAULTS.method} from {_DEFAULTS.steps}, "
        f"tol {_DEFAULTS.tolerance:g}), --faithfulness none": off,
        "job, defaults, faithfulness on (as shipped)": [],
    }


_HEADER = [
    "run",
    "seconds",
    "speed-up",
    "grad evals/image",
    "per-pixel median",
    "p95",
    "estimated (median)",
    "completeness median",
]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=36)
    parser.add_argument(
        "--intervals", type=int, default=512, help="reference intervals, a power of two"
    )
    parser.add_argument(
        "--score",
        choices=("softmax", "raw"),
        default="softmax",
        help="what is attributed, by the seed loop and the job alike: the predicted "
        "class's probability (seed 000) or its logit (seed 003)",
    )
    parser.add_argument(
        "--seed-loop", nargs=3, metavar=("FOLDER", "MODEL", "MAPS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    most = len(_VARIANTS) * len(extra_photos())
    if not 1 <= args.images <= most:
        parser.error(
            f"--images must be 1 to {most} ({len(extra_photos())} photos x {len(_VARIANTS)} "
            f"variants), got {args.images}"
        )
    if args.intervals < 2 or args.intervals & (args.intervals - 1):
        parser.error(f"--intervals must be a power of two >= 2, got {args.intervals}")
    return args


def main(argv=None):
    args = _parse(argv)
    if args.seed_loop:
        print(json.dumps(seed_loop(*args.seed_loop, score=args.score)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder, model = os.path.join(tmp, "images"), os.path.join(tmp, "saved_model")
        os.makedirs(folder)
        _make_images(folder, args.images)
        _export_saved_model(model)
        refs, conv = _references(folder, args.intervals, args.score)
        seed_row, seed_seconds, seed_median = _seed_row(folder, model, tmp, refs, args.score)
        rows = [seed_row]
        for i, (name, flags) in enumerate(_job_runs(seed_median).items()):
            output = os.path.join(tmp, f"job{i}")
            seconds, frame = _run_job(folder, model, output, args.score, *flags)
            rows.append(_job_row(name, seconds, frame, refs, seed_seconds))
        print_table(
            f"End to end on {args.images} photos, {args.score} score, start-up included "
            f"(reference for speed: the seed loop; per-pixel error against trapezoid on "
            f"a = s^2 with {args.intervals + 1} nodes, itself within {np.median(conv):.2%} "
            f"(median; worst {max(conv):.2%}) of {args.intervals // 2 + 1} nodes)",
            _HEADER,
            rows,
        )


if __name__ == "__main__":
    main()
