"""CPU time of the report's figures, and whether they are the same PNG bytes as a reference's.

A fixed corpus of figures (error histograms with and without a tolerance, with NaN, inf
and zeros, at the report's width and narrow ones; faithfulness figures and curves; heat
maps of several panel sets, signed maps and a gallery; and two whole `build_report`s,
path curves and all, of the `folder_run` test fixture's data and of a run of 40 rows
with faithfulness on) is drawn by the code of this tree and by that of a reference commit
(default: the last before the figures were made cheaper), each in its own worker process
(`git archive` of the reference in a temporary folder, first on that worker's path). The
two alternate figure by figure, round after round (the machine's speed drifts), after a
first round that is not counted (fonts, caches). Each figure is timed in CPU seconds
(`time.process_time`) from the call that makes it to its PNG bytes (`plots.figure_png`,
as the report embeds it; a report: `build_report`), and hashed (sha256 of its PNG; of a
report, of each PNG it embeds and of its page without them and its time).

Printed: per figure the median CPU seconds of each, their ratio (reference / now: above
1 is faster now) and whether the PNG bytes are identical. With `--sweep`, untimed: the
bytes of several hundred figures (error histograms, faithfulness figures and curves at
the sizes and of the data their tests draw, and more), drawn once by each.

    python -m benchmarks.report_figures [--rounds 5] [--reference <commit>] [--sweep]
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The commit before the report's figures were made cheaper (2026-12-07).
_BASE = "4bd23bc84351a8a44e9479565559244da0b97143"
_ROOT = Path(__file__).resolve().parents[1]
_PNG = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")
#: The page's "generated" time, to the minute: left out of its hash.
_GENERATED = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")


# The corpus: each entry draws one figure with the `plots` (or `report`) of the worker's tree.


def _errors(rows: int, seed: int = 3) -> Any:
    """`rows` relative errors, log-normal around 1e-3 (float64 [rows])."""
    import numpy as np  # noqa: PLC0415 - imported in the worker, after its tree is on the path

    return np.exp(np.random.default_rng(seed).normal(np.log(1e-3), 1.5, rows))


def _every_kind(rows: int) -> Any:
    """`rows` zeros, `rows` inf, `rows` NaN and 50 errors across three decades: every
    line an error histogram's legend can have."""
    import numpy as np  # noqa: PLC0415

    kinds = [np.zeros(rows), np.full(rows, np.inf), np.full(rows, np.nan)]
    return np.concatenate([*kinds, np.geomspace(1e-4, 0.05, 50)])


def _aucs(rows: int, measured: bool = True) -> Any:
    """`rows` rows of the four faithfulness AUCs, seeded; IG's all null unless `measured`."""
    import numpy as np  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415

    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "deletion_auc": rng.uniform(0.0, 0.5, rows),
            "deletion_auc_random": rng.uniform(0.2, 0.7, rows),
            "insertion_auc": rng.uniform(0.3, 1.0, rows),
            "insertion_auc_random": rng.uniform(0.2, 0.8, rows),
        }
    )
    if not measured:
        frame[["deletion_auc", "insertion_auc"]] = np.nan
    return frame


def _curves_row() -> dict[str, Any]:
    import numpy as np  # noqa: PLC0415

    return {
        "deletion_curve": (0.8 * np.exp(-np.linspace(0, 4, 33))).astype(np.float32),
        "insertion_curve": np.linspace(0.1, 0.8, 33, dtype=np.float32),
        "deletion_auc": 0.3,
        "deletion_auc_random": 0.5,
        "insertion_auc": 0.6,
        "insertion_auc_random": 0.4,
    }


def _maps(height: int = 224, width: int = 224) -> tuple[Any, Any, Any]:
    """Attributions (float32 [H, W, 3], signed), a photo and a baseline (uint8 [H, W, 3])."""
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(11)
    attributions = rng.normal(0.0, 1.0, (height, width, 3)).astype(np.float32)
    attributions[height // 3 : height // 2, width // 4 : width // 2] *= 8.0
    photo = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return attributions, photo, np.zeros_like(photo)


def _gallery_rows(count: int) -> Any:
    """`count` result rows with [16, 16, 3] maps, as `read_results(with_arrays=True)` gives."""
    import numpy as np  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415

    rng = np.random.default_rng(2)
    rows = []
    for i in range(count):
        rows.append(
            {
                "image_id": f"n02123045/img{i:03d}.png",
                "file_name": f"img{i:03d}.png",
                "label": 281,
                "label_name": "tabby",
                "predicted_class": 281 if i % 3 else 282,
                "predicted_name": "tabby" if i % 3 else "tiger cat",
                "top_k_probs": np.array([0.7, 0.2, 0.1], np.float32),
                "target_class": 281 if i % 3 else 282,
                "target_name": "tabby" if i % 3 else "tiger cat",
                "attribution_shape": np.array([16, 16, 3], np.int32),
                "attributions": rng.normal(size=(16, 16, 3)).astype(np.float32).ravel(),
            }
        )
    return pd.DataFrame(rows)


def _histograms(plots: Any) -> dict[str, Callable[[], Any]]:
    errors, every = plots.completeness_figure, plots.attribution_error_figure
    return {
        "completeness 40 rows, tolerance, 6 in": lambda: errors(_errors(40), 0.01),
        "completeness 5,000 rows, no tolerance": lambda: errors(_errors(5_000)),
        "completeness 0/inf/NaN, tolerance, 6 in": lambda: errors(_every_kind(3), 0.01),
        "completeness 0/inf/NaN, tolerance, 3 in": lambda: errors(
            _every_kind(99_999), 0.01, width=3.0
        ),
        "completeness 0/inf/NaN, tolerance, 2x2 in": lambda: errors(
            _every_kind(3), 0.01, width=2.0, height=2.0
        ),
        "completeness 12 equal rows, tolerance": lambda: errors([8.7e-4] * 12, 0.005),
        "completeness all NaN": lambda: errors([float("nan")] * 4, 0.01),
        "per-pixel error 0/inf/NaN, bound, 6 in": lambda: every(_every_kind(3), 0.01),
        "per-pixel error 200 rows, no bound, 2.5 in": lambda: every(_errors(200, 4), width=2.5),
    }


def _faithfulness(plots: Any) -> dict[str, Callable[[], Any]]:
    figure, curves = plots.faithfulness_figure, plots.faithfulness_curves_figure
    return {
        "faithfulness 40 rows, 9 in": lambda: figure(_aucs(40)),
        "faithfulness 500 rows, 4.5x2 in": lambda: figure(_aucs(500), width=4.5, height=2.0),
        "faithfulness no IG AUCs": lambda: figure(_aucs(8, measured=False)),
        "curves 3.6 in": lambda: curves(_curves_row()),
        "curves, title, 2x1 in": lambda: curves(
            _curves_row(), title="coffee.png → espresso", width=2.0, height=1.0
        ),
        "curves none stored": lambda: curves({"deletion_auc": 0.4}),
    }


def _maps_corpus(plots: Any) -> dict[str, Callable[[], Any]]:
    attribution = plots.attribution_figure
    return {
        "heat map 4 panels, 224 px": lambda: attribution(*_maps(), panel_size=2.2),
        "heat map image+overlay, title": lambda: attribution(
            *_maps()[:2], panels=("image", "overlay"), panel_size=2.2, title="cat1.png"
        ),
        "heat map mask, 16x96, no photo": lambda: attribution(
            _maps(16, 96)[0], panels=("mask", "overlay"), panel_size=2.2
        ),
        "heat map 2 columns, title + note": lambda: attribution(
            *_maps(), columns=2, title="a long title " * 6, note="No photo: gone.png"
        ),
        "signed channels": lambda: plots.channel_figure(_maps()[0], title="channels"),
        "gallery 12 rows": lambda: plots.grid_figure(_gallery_rows(12), panel_size=2.6),
    }


def _reports(folders: dict[str, str]) -> dict[str, Callable[[], Any]]:
    from pipeline import report  # noqa: PLC0415

    return {
        f"build_report: {name}": (lambda output=output: report.build_report(output))
        for name, output in folders.items()
    }


def _corpus(folders: dict[str, str]) -> dict[str, Callable[[], Any]]:
    from transforms import plots  # noqa: PLC0415

    return {
        **_histograms(plots),
        **_faithfulness(plots),
        **_maps_corpus(plots),
        **_reports(folders),
    }


def _sweep_histograms(plots: Any) -> dict[str, Callable[[], Any]]:
    import numpy as np  # noqa: PLC0415

    values = {
        "0/inf/NaN x3": _every_kind(3),
        "0/inf/NaN x99999": _every_kind(99_999),
        "3 decades": np.geomspace(1e-4, 0.05, 50),
        "one bar": np.full(12, 8.7e-4),
        "per-pixel errors": np.array([0.0143, 0.0145, 0.0146, 0.0147, 0.0148]),
        "sample deltas": np.array([5.45e-4, 1.4e-3, 2.5e-3, 2.6e-3, 4.0e-3, 4.3e-3]),
        "many decades": np.array([1e-6, 0.3]),
    }
    sizes = [(6.0, 3.0), (5.0, 3.0), (4.0, 2.0), (3.0, 2.0), (2.5, 3.0), (2.0, 2.0)]
    return {
        f"{figure.__name__} {name}, tolerance {tolerance}, {width}x{height} in": (
            lambda f=figure, v=data, t=tolerance, w=width, h=height: f(v, t, width=w, height=h)
        )
        for figure in (plots.completeness_figure, plots.attribution_error_figure)
        for name, data in values.items()
        for tolerance in (None, 0.01, 0.005)
        for width, height in sizes
    }


def _sweep(plots: Any) -> dict[str, Callable[[], Any]]:
    """Figures drawn once, for their bytes alone: the fitted figures at the sizes and of
    the data their tests draw, and more."""
    faithfulness = {
        f"faithfulness {rows} rows, {width}x{height} in": (
            lambda r=rows, w=width, h=height: plots.faithfulness_figure(_aucs(r), width=w, height=h)
        )
        for rows in (5, 40, 500)
        for width in (4.0, 4.5, 5.0, 6.0, 7.0, 9.0)
        for height in (1.0, 2.0, 3.0)
    }
    curves = {
        f"curves {width}x{height} in, title {title!r}": (
            lambda w=width, h=height, t=title: plots.faithfulness_curves_figure(
                _curves_row(), title=t, width=w, height=h
            )
        )
        for width in (2.0, 2.5, 3.0, 3.6, 5.0)
        for height in (1.0, 1.5, 2.0, 2.7)
        for title in (None, "coffee.png → espresso", "a long title " * 5)
    }
    return {**_sweep_histograms(plots), **faithfulness, **curves, **_faithfulness(plots)}


# The workers: one per tree, drawing what they are asked for.


def _drawn(make: Callable[[], Any]) -> tuple[float, list[str]]:
    """CPU seconds to make a figure and its PNG (or a report), and the sha256 of each PNG
    (of a report: those it embeds, then its page without them)."""
    from transforms import plots  # noqa: PLC0415

    gc.collect()
    start = time.process_time()
    made = make()
    if isinstance(made, str):  # a report's page
        seconds = time.process_time() - start
        pngs = [base64.b64decode(data) for data in _PNG.findall(made)]
        pngs.append(_GENERATED.sub("", _PNG.sub("", made)).encode())
    else:
        pngs = [plots.figure_png(made)]
        seconds = time.process_time() - start
    return seconds, [hashlib.sha256(png).hexdigest() for png in pngs]


def _work(tree: str, folders: dict[str, str] | None) -> None:
    """A worker: the figures of `tree` by name, one line of JSON each, until stdin ends;
    those of `_sweep` without `folders`."""
    sys.path[0] = tree  # not this script's folder: its modules' names are generic
    import transforms  # noqa: PLC0415
    from transforms import plots  # noqa: PLC0415

    if not transforms.__file__.startswith(tree):
        raise SystemExit(f"worker imported {transforms.__file__}, not from {tree}")
    corpus = _corpus(folders) if folders is not None else _sweep(plots)
    print(json.dumps(list(corpus)), flush=True)
    for line in sys.stdin:
        seconds, hashes = _drawn(corpus[line.strip()])
        print(json.dumps({"seconds": seconds, "hashes": hashes}), flush=True)


class _Worker:
    def __init__(self, tree: str, folders: dict[str, str] | None) -> None:
        command = [sys.executable, __file__, "--worker", tree, "--folders", json.dumps(folders)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.names = json.loads(self.process.stdout.readline())

    def draw(self, name: str) -> dict[str, Any]:
        self.process.stdin.write(name + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


# The parent: the reference's tree, the reports' data, the rounds and the table.


def _reference_tree(commit: str, folder: str) -> str:
    """`pipeline/` and `transforms/` of `commit` of this repository in `folder` (a `git
    archive`: no worktree is registered in the repository)."""
    archive, tree = os.path.join(folder, "reference.tar"), os.path.join(folder, "reference")
    command = ["git", "-C", str(_ROOT), "archive", "-o", archive, commit, "pipeline", "transforms"]
    subprocess.run(command, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def _report_folders(folder: str) -> dict[str, str]:
    """Two run outputs to report on: the `folder_run` fixture's (4 rows, faithfulness off)
    and one of 40 rows with faithfulness on, some of them worse than chance."""
    import numpy as np  # noqa: PLC0415

    from tests.conftest import SIZE, WNID_CAT, WNID_SHARK, write_image  # noqa: PLC0415
    from tests.known_rows import make_row, write_output  # noqa: PLC0415

    root, rng = Path(folder, "images"), np.random.default_rng(7)
    small = [
        (f"{WNID_SHARK}/shark.png", 2, 3, 0.6, 0.05, 3, (SIZE // 2, SIZE, 3)),
        (f"{WNID_CAT}/cat1.png", 281, 281, 0.8, 0.001, 1, (SIZE, SIZE, 3)),
        (f"{WNID_CAT}/cat2.png", 281, 282, 0.9, 0.002, 2, (SIZE, SIZE, 3)),
        ("loose.png", None, 7, 0.3, 0.004, 4, (SIZE, SIZE, 3)),
    ]
    for image_id, *_, shape in small:
        write_image(root / image_id, rng.integers(0, 256, size=shape, dtype=np.uint8))
    rows = [make_row(*row[:5], seed=row[5]) for row in small]
    folders = {"folder_run": write_output(Path(folder, "small"), [rows[:2], rows[2:]], str(root))}
    large = []
    for i, relative in enumerate(_errors(40, 8)):
        image_id = f"{WNID_CAT}/many{i:02d}.png"
        write_image(root / image_id, rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8))
        row = make_row(image_id, 281, 281 + (i % 5 == 0), 0.7, float(relative), seed=i)
        large.append({**row, **_faithfulness_columns(rng)})
    folders["40 rows, faithfulness on"] = write_output(
        Path(folder, "large"), [large[:20], large[20:]], str(root)
    )
    return folders


def _faithfulness_columns(rng: Any) -> dict[str, Any]:
    """One row's faithfulness AUCs and curves (5 points), seeded by `rng`."""
    import numpy as np  # noqa: PLC0415

    deletion, insertion = rng.uniform(0.05, 0.6), rng.uniform(0.3, 0.95)
    return {
        "deletion_auc": deletion,
        "deletion_auc_random": rng.uniform(0.2, 0.6),
        "insertion_auc": insertion,
        "insertion_auc_random": rng.uniform(0.3, 0.7),
        "deletion_curve": np.linspace(0.9, 0.9 * deletion / 2, 5).astype(np.float32),
        "insertion_curve": np.linspace(0.1, 0.9, 5).astype(np.float32),
    }


def _rounds(workers: dict[str, _Worker], rounds: int) -> dict[str, dict[str, Any]]:
    """Each figure drawn by each worker, alternating which goes first, `rounds` + 1 times
    (the first not counted); per figure and worker, the seconds and the hashes."""
    names = workers["now"].names
    times: dict[str, dict[str, list[float]]] = {n: {w: [] for w in workers} for n in names}
    hashes: dict[str, dict[str, set[tuple[str, ...]]]] = {
        n: {w: set() for w in workers} for n in names
    }
    order = list(workers)
    for r in range(rounds + 1):
        for name in names:
            for who in order if r % 2 else order[::-1]:
                drawn = workers[who].draw(name)
                hashes[name][who].add(tuple(drawn["hashes"]))
                if r:
                    times[name][who].append(drawn["seconds"])
    return {name: {"times": times[name], "hashes": hashes[name]} for name in names}


def _table(measured: dict[str, dict[str, Any]]) -> tuple[list[list[object]], bool]:
    rows, same_everywhere = [], True
    for name, result in measured.items():
        now, ref = (statistics.median(result["times"][w]) for w in ("now", "reference"))
        hashes = result["hashes"]
        same = len(hashes["now"]) == 1 and hashes["now"] == hashes["reference"]
        same_everywhere &= same
        rows.append(
            [name, f"{now:.3f}", f"{ref:.3f}", f"{ref / now:.2f}x", "yes" if same else "NO"]
        )
    total_now = sum(statistics.median(r["times"]["now"]) for r in measured.values())
    total_ref = sum(statistics.median(r["times"]["reference"]) for r in measured.values())
    rows.append(
        ["all", f"{total_now:.3f}", f"{total_ref:.3f}", f"{total_ref / total_now:.2f}x", ""]
    )
    return rows, same_everywhere


def _swept(workers: dict[str, _Worker]) -> None:
    """Each `_sweep` figure drawn once by each worker; prints those whose bytes differ."""
    names = workers["now"].names
    differ = [n for n in names if len({tuple(w.draw(n)["hashes"]) for w in workers.values()}) > 1]
    for name in differ:
        print(f"PNG differs: {name}")
    print(f"\nidentical PNG: {len(names) - len(differ)} of {len(names)} figures of the sweep")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="counted rounds (default 5)")
    parser.add_argument("--reference", default=_BASE, help="commit to compare with")
    parser.add_argument(
        "--sweep", action="store_true", help="compare the bytes of more figures, untimed"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folders", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _work(args.worker, json.loads(args.folders))
    sys.path.insert(0, str(_ROOT))
    from benchmarks.common import print_table  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as folder:
        reference = _reference_tree(args.reference, folder)
        folders = None if args.sweep else _report_folders(folder)
        workers = {"now": _Worker(str(_ROOT), folders), "reference": _Worker(reference, folders)}
        try:
            if args.sweep:
                return _swept(workers)
            measured = _rounds(workers, args.rounds)
        finally:
            for worker in workers.values():
                worker.close()
    rows, same = _table(measured)
    header = ["figure", "CPU s now", f"CPU s {args.reference[:7]}", "ratio", "identical PNG"]
    print_table(f"Median of {args.rounds} interleaved rounds, CPU seconds", header, rows)
    print(f"\nidentical PNG: {'yes' if same else 'NO'} (every figure of the corpus, every round)")


if __name__ == "__main__":
    main()
