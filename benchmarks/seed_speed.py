"""End-to-end speed against the seed notebook's loop, on the same SavedModel and images.

The seed loop (shared/seeds/000, "Integrated Gradient Feature Attribution") runs
eagerly, one image at a time, with a GradientTape over alphas in batches of 32
and the trapezoid rule over 51 points, on the softmax probability of the
predicted class. Here it runs as written (plus the completeness check it lacks)
against the job, each as its own process, start-up included:

1. the seed loop;
2. the job at the same rule (riemann_trapezoid, 51 points, no refinement);
3. the job at its defaults (adaptive), same score.

    python -m benchmarks.seed_speed [--images 36]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_hub as hub
from PIL import Image

from benchmarks.common import extra_photos, print_table
from transforms.config import AttributionConfig
from transforms.efficientnet_lite import load_efficientnet_lite0

_DEFAULTS = AttributionConfig()


def _make_images(folder: str, count: int) -> None:
    """`count` real photos: scikit-image's, then their mirror images and crops."""
    photos = [Image.open(p).convert("RGB") for p in extra_photos()]
    variants = [lambda im: im, lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                lambda im: im.crop((0, 0, im.width * 3 // 4, im.height * 3 // 4))]  # fmt: skip
    k = 0
    for variant in variants:
        for i, photo in enumerate(photos):
            if k == count:
                return
            variant(photo).save(os.path.join(folder, f"{k:03d}_{i}.png"))
            k += 1


def _export_saved_model(path: str) -> None:
    load_efficientnet_lite0().export(path, verbose=False)


def seed_loop(folder: str, model_path: str) -> dict:
    """The seed notebook's per-image loop, as written; returns timing and deltas."""
    start = time.perf_counter()
    model = hub.load(model_path)
    serve = model.signatures["serving_default"]
    key = list(serve.structured_outputs)[0]
    (name,) = serve.structured_input_signature[1]

    def call(images):
        return serve(**{name: images})[key]

    def compute_gradients(images, target_class_idx):
        with tf.GradientTape() as tape:
            tape.watch(images)
            logits = call(images)
            probs = tf.nn.softmax(logits, axis=-1)[:, target_class_idx]
        return tape.gradient(probs, images)

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

    deltas = []
    for name_ in sorted(os.listdir(folder)):
        raw = tf.io.decode_image(tf.io.read_file(os.path.join(folder, name_)), channels=3)
        img = tf.image.resize_with_pad(raw, 224, 224) / 255.0
        probs = tf.nn.softmax(call(img[None]), axis=-1)
        target = int(tf.argmax(probs, axis=1)[0])
        attributions = integrated_gradients(img, target)
        f0 = float(tf.nn.softmax(call(tf.zeros_like(img)[None]), axis=-1)[0, target])
        fx = float(probs[0, target])
        deltas.append(abs(float(tf.reduce_sum(attributions)) - (fx - f0)) / abs(fx - f0))
    return {"seconds": time.perf_counter() - start, "deltas": deltas}


def _run_job(folder, model, output, *flags) -> tuple[float, list[float]]:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pipeline", "--dataset", folder, "--model", model,
         "--output", output, "--overwrite", "--score", "softmax", "--attributions", "none",
         *flags],
        check=True, capture_output=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    deltas = pd.read_parquet(os.path.join(output, "results"), columns=["relative_delta"])
    return seconds, deltas.relative_delta.tolist()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=36)
    parser.add_argument("--seed-loop", nargs=2, metavar=("FOLDER", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seed_loop:
        print(json.dumps(seed_loop(*args.seed_loop)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder, model = os.path.join(tmp, "images"), os.path.join(tmp, "saved_model")
        os.makedirs(folder)
        _make_images(folder, args.images)
        _export_saved_model(model)
        start = time.perf_counter()
        seed = subprocess.run(
            [sys.executable, "-m", "benchmarks.seed_speed", "--seed-loop", folder, model],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        seed_seconds = time.perf_counter() - start
        seed_deltas = json.loads(seed.stdout.strip().splitlines()[-1])["deltas"]
        runs = {
            "seed loop (eager, per image, trapezoid 51)": (seed_seconds, seed_deltas, 51.0),
            "job, same rule (riemann_trapezoid 51, fixed)": (
                *_run_job(
                    folder,
                    model,
                    os.path.join(tmp, "same"),
                    "--method",
                    "riemann_trapezoid",
                    "--steps",
                    "51",
                    "--tolerance",
                    "0",
                ),
                51.0,
            ),  # fmt: skip
            f"job, defaults (adaptive {_DEFAULTS.method} from {_DEFAULTS.steps}, "
            f"tol {_DEFAULTS.tolerance:g})": (
                *_run_job(folder, model, os.path.join(tmp, "defaults")),
                float("nan"),
            ),
        }
        reference = seed_seconds
        rows = []
        for name, (seconds, deltas, _) in runs.items():
            rows.append([
                name, f"{seconds:.1f}", f"{args.images / seconds:.3f}",
                f"{reference / seconds:.2f}x", f"{np.median(deltas):.3%}",
                f"{np.percentile(deltas, 95):.3%}",
            ])  # fmt: skip
        print_table(
            f"End to end on {args.images} images, start-up included (reference: the seed loop)",
            ["run", "seconds", "images/s", "speed-up", "median rel. delta", "p95"],
            rows,
        )


if __name__ == "__main__":
    main()
