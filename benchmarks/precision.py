"""Mixed precision on this CPU: is bfloat16 worth its cost in completeness?

The job computes in float32. This CPU has AVX512-BF16, and TensorFlow's oneDNN
build can rewrite a graph to bfloat16 (grappler's
`auto_mixed_precision_onednn_bfloat16`), which applies to a loaded model as it
is. Each precision runs in its own process (the rewrite is process-wide and
must be set before tracing), on the bundled model and the 8 sample photos:

1. bare forward+backward throughput at 32 points per call;
2. the handler at the defaults: gradient evaluations per image and the relative
   completeness delta (F computed in the same precision as the gradients).

The reference is float32, measured in the same run.

    python -m benchmarks.precision
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from benchmarks.common import print_table, run_checked

_MODES = ("float32", "bfloat16 (oneDNN auto mixed precision)")


def _child(mode: int) -> dict:
    import tensorflow as tf  # noqa: PLC0415

    if mode == 1:
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    from benchmarks.common import load_photos  # noqa: PLC0415
    from benchmarks.efficiency import bare_throughput, photo_examples  # noqa: PLC0415
    from transforms.attribution import IGModelHandler  # noqa: PLC0415
    from transforms.config import AttributionConfig  # noqa: PLC0415
    from transforms.tf_model import resolve_model  # noqa: PLC0415

    names, images = load_photos()
    handler = IGModelHandler(resolve_model("efficientnet_lite0"), AttributionConfig(), None)
    model = handler.load_model()
    rate = bare_throughput(model, images, 32, seconds=6.0)
    examples = photo_examples(names, images)
    handler.run_inference(examples[:1], model)  # trace
    start = time.perf_counter()
    rows = [r for o in handler.run_inference(examples, model) for r in o.rows]
    seconds = time.perf_counter() - start
    return {
        "bare": rate,
        "seconds": seconds,
        "evals": float(np.mean([r["evaluations"] for r in rows])),
        "deltas": [r["relative_delta"] for r in rows],
        "met": int(sum(bool(r["within_tolerance"]) for r in rows)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(_child(args.child)))
        return
    results = []
    for mode in range(len(_MODES)):
        out = run_checked([sys.executable, "-m", "benchmarks.precision", "--child", str(mode)])
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ref = results[0]
    rows = []
    for name, r in zip(_MODES, results, strict=True):
        rows.append(
            [
                name,
                f"{r['bare']:.1f}",
                f"{r['bare'] / ref['bare']:.2f}x",
                f"{r['evals']:.1f}",
                f"{np.median(r['deltas']):.3%}",
                f"{max(r['deltas']):.3%}",
                f"{r['met']}/{len(r['deltas'])}",
                f"{r['seconds'] / ref['seconds']:.2f}x",
            ]
        )
    print_table(
        "Precision on this CPU (8 sample photos, defaults; reference: float32)",
        [
            "precision",
            "bare fwd+bwd points/s",
            "vs ref",
            "grad evals/image",
            "median rel. delta",
            "worst",
            "within tolerance",
            "handler time vs ref",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
