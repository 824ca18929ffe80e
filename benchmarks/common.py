"""Shared set-up of the benchmarks: the bundled model and real photos, preprocessed as the job does."""

from __future__ import annotations

import os
import resource
import subprocess

import numpy as np
from skimage import data as skdata

from transforms import images, sources
from transforms.preprocess import ImageExample
from transforms.tf_model import Classifier, ModelHandoff, resolve_model

__all__ = [
    "extra_photos",
    "load_examples",
    "load_photos",
    "load_classifier",
    "peak_rss_mb",
    "print_table",
    "run_checked",
]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# scikit-image photos beyond the sample, to have more real images to measure on.
_EXTRA = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "camera.png",
    "coins.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "brick.png",
    "grass.png",
    "gravel.png",
    "horse.png",
    "page.png",
    "text.png",
    "moon.png",
)


def extra_photos() -> list[str]:
    root = os.path.dirname(skdata.__file__)
    return [os.path.join(root, name) for name in _EXTRA if os.path.exists(os.path.join(root, name))]


def load_photos(paths: list[str] | None = None, size: int = 224) -> tuple[list[str], np.ndarray]:
    """Names and float32 [N, size, size, 3] images in [0, 1], as the job feeds them;
    the sample's 8 photos when `paths` is None. No photo (`--photos 0`) is an error:
    it measured the sample's photos under a title saying 0."""
    examples = load_examples(paths, size)
    return [ex.image_id for ex in examples], np.stack([ex.image for ex in examples])


def load_examples(paths: list[str] | None = None, size: int = 224) -> list[ImageExample]:
    """The photos of `load_photos` as the job's Preprocess makes them: each image with
    its content box (`ImageExample.content`), so that a padded photo's faithfulness
    checks rank and switch its own pixels alone, as the job's do."""
    if paths is None:
        paths = [f.path for f in sources.sample_files()]
    if not paths:
        raise SystemExit("error: no photos to measure; pass --photos 1 or more.")
    out = []
    for path in paths:
        with open(path, "rb") as f:
            pixels = images.decode_image(f.read(), max_side_hint=size)
        padded = images.scale_to_range(images.resize_with_pad(pixels, size), (0.0, 1.0))
        name = os.path.basename(path)
        content = images.pad_box(*pixels.shape[:2], size)
        out.append(ImageExample(name, name, None, padded, content))
    return out


def load_classifier(model: str = "efficientnet_lite0") -> Classifier:
    handoff = ModelHandoff()  # the model resolve_model loads is the Classifier's: one load
    return Classifier(resolve_model(model, handoff=handoff), handoff=handoff)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_checked(command: list[str]) -> subprocess.CompletedProcess:
    """Runs `command` with its output captured (text); if it fails, raises a
    RuntimeError ending with the last lines of its stderr, the command's own
    error, which `check=True` kept out of sight."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        tail = "\n".join(done.stderr.strip().splitlines()[-20:])
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{tail}")
    return done


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    line = "| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
