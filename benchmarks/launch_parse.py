"""What reading a SavedModel's saved_model.pb costs a launch, and how often it is read.

Two SavedModels: the bundled EfficientNet-Lite0 exported as one (model.export: a
0.6 MB proto, its weights in variables/) and a frozen one whose weights are a
constant of the graph (a [224*224*3, k] matrix, `--frozen_mb` MB of proto, as
frozen and TF1 exports hold theirs).

1. In this process: TensorFlow's reader, loader_impl.parse_saved_model, once and as
   many times as a launch called it (3: the batch-statistics check, the signature and
   the pixel range), against the job's reader (`saved_model_proto`) called as often
   from an empty cache, where this tree has it.
2. With `--base TREE` (a checkout of an earlier commit, e.g. `git worktree add
   /tmp/base <commit>`): the launch's model checks (`resolve_model`, as a remote job's
   launcher runs them, load=False, and as a local one does, load=True) timed in a fresh
   process of each tree, the two alternating round by round (the machine's speed
   drifts); printed: the median seconds of the call alone (TensorFlow imported before
   it) and how many times saved_model.pb was parsed, TensorFlow's own load's read
   included (load=True).

    python -m benchmarks.launch_parse [--rounds 5] [--frozen_mb 100] [--base /tmp/base]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

# A launch of the base parsed saved_model.pb this many times (load=False), besides
# TensorFlow's own read when it loads the model.
_BASE_PARSES = 3
_SIDE = 224

# The child: one launch's model checks in a fresh process of the tree on PYTHONPATH,
# every parse counted (TensorFlow's load calls the same module function).
_CHILD = """
import json, sys, time
from tensorflow.python.saved_model import loader_impl
from transforms.tf_model import resolve_model
parse, calls = loader_impl.parse_saved_model, []
loader_impl.parse_saved_model = lambda path: calls.append(path) or parse(path)
start = time.perf_counter()
resolve_model(sys.argv[1], load=sys.argv[2] == "load")
print(json.dumps({"seconds": time.perf_counter() - start, "parses": len(calls)}))
"""


def _bundled(folder: str) -> str:
    from transforms.bundled.efficientnet_lite import load_efficientnet_lite0  # noqa: PLC0415

    load_efficientnet_lite0().export(folder, verbose=False)
    return folder


def _frozen(folder: str, megabytes: int) -> str:
    """A SavedModel whose [224*224*3, k] weights are a constant of its graph (k: about
    `megabytes` MB of float32): F(x) = flatten(x) @ W."""
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    pixels = _SIDE * _SIDE * 3
    outputs = max(2, megabytes * 10**6 // (4 * pixels))
    weights = np.random.default_rng(0).normal(0, 0.01, (pixels, outputs)).astype(np.float32)

    class Frozen(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.constant(weights)

        @tf.function(input_signature=[tf.TensorSpec([None, _SIDE, _SIDE, 3], tf.float32)])
        def __call__(self, x):
            return tf.reshape(x, [-1, pixels]) @ self.w

    tf.saved_model.save(Frozen(), folder)
    return folder


def _seconds(call, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return time.perf_counter() - start


def _in_process(models: dict[str, str], rounds: int) -> list[list[str]]:
    """Per model: parse_saved_model once, `_BASE_PARSES` times, and the job's reader as
    often from an empty cache (where this tree has it); medians of `rounds`."""
    from tensorflow.python.saved_model import loader_impl  # noqa: PLC0415

    from transforms.model import loading  # noqa: PLC0415

    cached = getattr(loading, "saved_model_proto", None)
    rows = []
    for name, folder in models.items():
        parse = functools.partial(loader_impl.parse_saved_model, folder)
        times: dict[str, list[float]] = {"once": [], "base": [], "cached": []}
        for _ in range(rounds):
            times["once"].append(_seconds(parse, 1))
            times["base"].append(_seconds(parse, _BASE_PARSES))
            if cached is not None:
                cached.cache_clear()
                times["cached"].append(_seconds(functools.partial(cached, folder), _BASE_PARSES))
        once, base = statistics.median(times["once"]), statistics.median(times["base"])
        new = statistics.median(times["cached"]) if times["cached"] else None
        size = os.path.getsize(os.path.join(folder, "saved_model.pb")) / 1e6
        rows.append(
            [
                name,
                f"{size:.1f}",
                f"{once * 1e3:.1f}",
                f"{base * 1e3:.1f}",
                "-" if new is None else f"{new * 1e3:.1f}",
                "-" if new is None else f"{base / new:.2f}",
            ]
        )
    return rows


def _launch(tree: str, folder: str, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": tree, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-c", _CHILD, folder, mode]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tree)
    if done.returncode:
        tail = "\n".join(done.stderr.strip().splitlines()[-20:])
        raise RuntimeError(f"the launch of {folder} ({mode}) in {tree} failed:\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _launches(models: dict[str, str], trees: dict[str, str], rounds: int) -> list[list[str]]:
    """Per model and mode: each tree's median seconds and parses; the trees alternate,
    in turn first, round by round."""
    rows = []
    for name, folder in models.items():
        for mode in ("no-load", "load"):
            runs: dict[str, list[dict]] = {tree: [] for tree in trees}
            for round_ in range(rounds):
                order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
                for tree in order:
                    runs[tree].append(_launch(trees[tree], folder, mode))
            seconds = {t: statistics.median(r["seconds"] for r in runs[t]) for t in trees}
            parses = {t: sorted({r["parses"] for r in runs[t]}) for t in trees}
            rows.append(
                [
                    name,
                    "load=True" if mode == "load" else "load=False",
                    f"{seconds['base']:.3f}",
                    ",".join(map(str, parses["base"])),
                    f"{seconds['this']:.3f}",
                    ",".join(map(str, parses["this"])),
                    f"{seconds['base'] / seconds['this']:.2f}",
                ]
            )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frozen_mb", type=int, default=100, help="0: the bundled model alone")
    parser.add_argument("--base", help="a checkout of the commit to compare the launch with")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    if args.base and not os.path.isdir(os.path.join(args.base, "transforms")):
        parser.error(f"--base {args.base!r} is no checkout of the project (no transforms/)")
    from benchmarks.common import print_table  # noqa: PLC0415

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as tmp:
        models = {"bundled (model.export)": _bundled(os.path.join(tmp, "bundled"))}
        if args.frozen_mb:
            models[f"frozen ({args.frozen_mb} MB constant)"] = _frozen(
                os.path.join(tmp, "frozen"), args.frozen_mb
            )
        print_table(
            f"saved_model.pb read in one process, ms, median of {args.rounds} rounds "
            f"(reference: TensorFlow's parse_saved_model x{_BASE_PARSES}, as a launch "
            "called it)",
            ["model", "MB", "parse x1", f"parse x{_BASE_PARSES}",
             f"saved_model_proto x{_BASE_PARSES}", "reference / saved_model_proto"],
            _in_process(models, args.rounds),
        )  # fmt: skip
        if args.base:
            trees = {"base": os.path.abspath(args.base), "this": here}
            print_table(
                f"resolve_model in a fresh process, s, median of {args.rounds} alternating "
                f"rounds; parses of saved_model.pb (TensorFlow's load's included) "
                f"(reference: {args.base})",
                ["model", "launch", "base s", "base parses", "this s", "this parses",
                 "base / this"],
                _launches(models, trees, args.rounds),
            )  # fmt: skip


if __name__ == "__main__":
    main()
