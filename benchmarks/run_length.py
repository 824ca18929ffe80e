"""Peak memory and time of the job against the number of images: memory must stay flat.

A run of ImageNet-A's size holds 7,500 maps of 600 kB (224 x 224 x 3 float32):
4.5 GB, if the runner kept them. Each configuration runs the real job
(DirectRunner, full float32 attributions, faithfulness checks on) in its own
process on a folder of N JPEGs, the 16 scikit-image photos of the other benchmarks
copied in turn under N names. The model is a tiny one taking 224 x 224 pixels
(average pooling, a convolution, a dense layer of 10 logits) with fixed
Gauss-Legendre 8, so that the images' reading, the maps and their writing, not
the model, take the time. The reference is the first --images, measured in the
same run.

    python -m benchmarks.run_length --images 100,1000
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

from benchmarks.common import extra_photos, print_table
from benchmarks.memory import peak_mb

_JOB = ["--method", "gausslegendre", "--steps", "8", "--tolerance", "0"]


def _tiny_model(path: str) -> str:
    import keras  # noqa: PLC0415 - only in the parent, once

    keras.utils.set_random_seed(0)
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.AveragePooling2D(16)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x))).save(path)
    return path


def _folder(root: str, count: int) -> str:
    """`count` copies of the photos, in turn, as img00000.<ext> ..."""
    photos = [p for p in extra_photos() if os.path.exists(p)]
    folder = os.path.join(root, f"images{count}")
    os.makedirs(folder)
    for i in range(count):
        photo = photos[i % len(photos)]
        shutil.copyfile(photo, os.path.join(folder, f"img{i:05d}{os.path.splitext(photo)[1]}"))
    return folder


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", default="100,1000", help="comma-separated counts")
    counts = [int(n) for n in parser.parse_args(argv).images.split(",")]
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        model = _tiny_model(os.path.join(tmp, "tiny224.keras"))
        for count in counts:
            job = ["--dataset", _folder(tmp, count), "--model", model, *_JOB]
            start = time.perf_counter()
            mb = peak_mb([*job, "--output", os.path.join(tmp, f"out{count}")])
            seconds = time.perf_counter() - start
            reference = reference or (mb, seconds / count)
            per_image = seconds / count
            rows.append(
                [count, f"{mb:.0f}", f"{mb / reference[0]:.2f}x", f"{seconds:.1f}",
                 f"{per_image * 1000:.0f}", f"{per_image / reference[1]:.2f}x"]
            )  # fmt: skip
    print_table(
        "Peak RSS and time of the whole job against the number of images: tiny 224-px "
        f"model, Gauss-Legendre 8, full float32 maps (reference: {counts[0]} images)",
        ["images", "peak RSS (MB)", "vs reference", "seconds", "ms / image", "vs reference"],
        rows,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
