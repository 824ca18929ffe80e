"""Peak memory (RSS) of the adaptive engine against the rows of one call.

The engine alone, on a synthetic piecewise-linear integrand at the bundled
model's size (224 x 224 x 3; F = sum clip(s x - o, 0, 1), a kink per value, so
rows refine as real photos do), with the default budget of node vectors (2 GiB).
Each configuration runs in its own process. The reference, measured in the same
run, is the same call with its rows in one chunk, as the engine did before it
chunked rows beyond the budget (`--batch_size 64 --target top_k` gives 320
rows a call).

    python -m benchmarks.engine_memory --rows 8,40,160
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from benchmarks.common import peak_rss_mb, print_table, run_checked

SHAPE = (224, 224, 3)


def _integrand_case(rows: int):
    rng = np.random.default_rng(0)
    slopes = rng.uniform(2, 40, size=SHAPE).astype(np.float32)
    offsets = rng.uniform(0.0, 1.0, size=SHAPE).astype(np.float32)

    def score_grad(inputs, baselines, alphas, targets):
        points = baselines + alphas.reshape(-1, 1, 1, 1) * (inputs - baselines)
        z = slopes * points - offsets
        scores = np.clip(z, 0, 1).reshape(len(points), -1).sum(1)
        return scores, (slopes * ((z > 0) & (z < 1))).astype(np.float32)

    x = rng.uniform(0.5, 1.0, size=(rows, *SHAPE)).astype(np.float32)
    exact = np.clip(slopes * x - offsets, 0, 1).reshape(rows, -1).sum(1)
    baseline_exact = np.clip(-offsets, 0, 1).sum()
    return score_grad, x, exact, np.full((rows, 1), baseline_exact)


def _child(rows: int, one_chunk: bool) -> None:
    from transforms import ig  # noqa: PLC0415
    from transforms.ig import api  # noqa: PLC0415

    if one_chunk:  # the engine before it chunked rows
        api._row_chunks = lambda settings, paths, n: [slice(0, n)]
    score_grad, x, exact, base = _integrand_case(rows)
    settings = ig.IGSettings("riemann_trapezoid", 25, tolerance=0.015, max_steps=256)
    result = ig.integrated_gradients(
        ig.integrand_from_gradients(score_grad),
        x,
        np.zeros((rows, 1, *SHAPE), np.float32),
        np.arange(rows),
        np.zeros(rows, np.int64),
        settings,
        target_scores=exact,
        baseline_scores=base,
    )
    print(peak_rss_mb(), float(result.evaluations.mean()))


def measure(rows: int, one_chunk: bool) -> tuple[float, float]:
    flags = ["--child", str(rows), *(["--one_chunk"] if one_chunk else [])]
    out = run_checked([sys.executable, "-m", "benchmarks.engine_memory", *flags])
    mb, evaluations = out.stdout.split()
    return float(mb), float(evaluations)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", default="8,40,160")
    parser.add_argument("--child", type=int)
    parser.add_argument("--one_chunk", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.one_chunk)
        return
    table = []
    for rows in [int(r) for r in args.rows.split(",")]:
        whole, whole_evals = measure(rows, one_chunk=True)
        chunked, evals = measure(rows, one_chunk=False)
        table.append(
            [
                rows,
                f"{whole:.0f}",
                f"{chunked:.0f}",
                f"{chunked / whole:.2f}x",
                f"{whole_evals:.1f}",
                f"{evals:.1f}",
            ]
        )
    print_table(
        "Peak RSS (MB) of one adaptive call, 224x224x3, the default budget of node vectors "
        "(reference: its rows in one chunk, as before; same run). Evaluations differ "
        "where fewer panels' vectors fit per path: folded panels are evaluated again",
        ["rows", "one chunk (before)", "chunked (now)", "ratio", "evals/row before", "now"],
        table,
    )


if __name__ == "__main__":
    main()
