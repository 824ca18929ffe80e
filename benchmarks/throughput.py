"""Throughput of the real job and of the bare model on this machine: `python -m benchmarks.throughput`.

Measures, in one run and on the same CPU:

* the job itself (`pipeline.run`, DirectRunner, the bundled EfficientNet-Lite0,
  the sample photos, the default flags), with one worker and with
  `--direct_num_workers` processes. Start-up (Beam, TensorFlow, loading the model)
  is excluded by running a small and a large input set and dividing the
  difference in images by the difference in time. During the one-worker runs
  (in-process), the model's calls are timed and their points counted, which
  splits the job's time into the model and everything else;
* the bare model: forward passes, and forward+backward on a chunk of
  `--path_batch_size` path points (what one full IG gradient call costs);
* what a `MultiProcessShared` proxy (RunInference's `model_copies`) costs to move
  one gradient call's arrays between processes.

Then it projects a full ImageNet-A run on Dataflow from these numbers and the
stated `ASSUMPTIONS`. Prints markdown tables; `--json FILE` also writes the
numbers (docs/scale.md uses them). Nothing is asserted: a measurement, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import resource
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
from apache_beam.utils import multi_process_shared

from pipeline import run
from transforms import images, sources
from transforms.tf_model import Classifier, ModelHandoff, device_settings, resolve_model

__all__ = ["ASSUMPTIONS", "main", "noise_warning", "projection"]

#: What the projection assumes rather than measures (docs/scale.md explains each).
#: Prices: Dataflow batch list prices in us-central1 as last published to us
#: (2025); check https://cloud.google.com/dataflow/pricing before budgeting.
ASSUMPTIONS: dict[str, Any] = {
    "images": 7500,  # ImageNet-A, test split
    "usd_per_vcpu_hour": 0.056,
    "usd_per_gb_hour": 0.003557,
    "usd_per_disk_gb_hour": 0.000054,
    "usd_per_l4_hour": 0.56,
    "disk_gb": 25,
    # name, vCPUs, memory GB, workers, start-up minutes (boot, image pull, driver)
    "cpu_workers": ("n2d-standard-4", 4, 16.0, 10, 6.0),
    "gpu_workers": ("g2-standard-4", 4, 16.0, 2, 10.0),
    # L4 forward+backward path points per second, fp32 (TF32 convolutions).
    "l4_points_per_s": {"efficientnet_lite0": 1000.0, "inception_v1": 1000.0},
    # One worker vCPU does the work of one vCPU of the measuring machine (an AMD EPYC;
    # n2d workers are EPYCs too, and Dataflow bills every family at the same rates).
    # The model's CPU time relative to the measured EfficientNet-Lite0 (FLOPs: 3.9x).
    "cpu_model_cost_vs_lite0": {"efficientnet_lite0": 1.0, "inception_v1": 3.0},
    # Host work per image on a GPU worker relative to the CPU job's non-model work
    # (copying gradients from the GPU, launching kernels).
    "gpu_host_overhead": 1.3,
}


def _table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([f"\n{title}\n", line(cells[0]), rule, *(line(r) for r in cells[1:])])


class _ModelClock:
    """Wall time and points spent inside `Classifier` calls, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.totals = {
            "grad_s": 0.0,
            "grad_points": 0,
            "grad_calls": 0,
            "fwd_s": 0.0,
            "fwd_points": 0,
        }

    def _timed(self, kind: str, points: int, fn: Callable, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            with self._lock:
                self.totals[f"{kind}_s"] += time.perf_counter() - start
                self.totals[f"{kind}_points"] += points
                if kind == "grad":
                    self.totals["grad_calls"] += 1

    @contextlib.contextmanager
    def installed(self) -> Iterator[_ModelClock]:
        """Wraps the model's entry points (they still run) while the block runs."""
        logits, grad_fn = Classifier.logits, Classifier.score_grad_fn
        integrand_fn, score_fn = Classifier.integrand_fn, Classifier.score_fn

        def timed_logits(model, batch):
            return self._timed("fwd", len(batch), logits, model, batch)

        def timed_fn(kind: str, factory: Callable, points_arg: int) -> Callable:
            """A patched `Classifier.*_fn(score, ...)` whose function times its calls
            (keeping its `call_size`, if any); the call's points are the entries of
            its argument `points_arg`."""

            def patched(model, score, **options):
                fn = factory(model, score, **options)

                def run(*args):
                    return self._timed(kind, len(args[points_arg]), fn, *args)

                if hasattr(fn, "call_size"):
                    run.call_size = fn.call_size
                return run

            return patched

        # The IG engine calls integrand_fn(images, references, index, ...): one
        # point per entry of `index`; the others take one point per input row.
        patches = [
            mock.patch.object(Classifier, "logits", timed_logits),
            mock.patch.object(Classifier, "score_grad_fn", timed_fn("grad", grad_fn, 0)),
            mock.patch.object(Classifier, "integrand_fn", timed_fn("grad", integrand_fn, 2)),
            mock.patch.object(Classifier, "score_fn", timed_fn("fwd", score_fn, 0)),
        ]
        with contextlib.ExitStack() as stack:
            for patch in patches:
                stack.enter_context(patch)
            yield self


def _photo_folder(root: str, copies: int) -> int:
    """`copies` copies of each sample photo, flat in `root`; returns the file count."""
    os.makedirs(root, exist_ok=True)
    count = 0
    for k in range(copies):
        for item in sources.sample_files():
            shutil.copyfile(item.path, os.path.join(root, f"{k:03d}_{os.path.basename(item.path)}"))
            count += 1
    return count


def _run_job(folder: str, output: str, model: str, extra: list[str]) -> tuple[float, dict, dict]:
    argv = ["--runner", "DirectRunner", "--dataset", folder, "--model", model]
    argv += ["--output", output, "--overwrite", *extra]
    with _ModelClock().installed() as clock:
        start = time.perf_counter()
        manifest = run(argv, save_main_session=False)
        seconds = time.perf_counter() - start
    return seconds, manifest, clock.totals


def _median_rate(fn: Callable[[], Any], items: int, repeats: int) -> float:
    fn()  # warm-up: tracing and graph compilation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return items / statistics.median(times)


def _bare_model(model: str, path_batch_size: int, batch_size: int, repeats: int) -> dict:
    handoff = ModelHandoff()  # one load for the spec and the classifier
    spec = resolve_model(model, handoff=handoff)
    classifier = Classifier(spec, handoff=handoff)
    size = spec.image_size
    photos = []
    for item in sources.sample_files():
        with open(item.path, "rb") as f:
            pixels = images.decode_image(f.read(), max_side_hint=size)
        photos.append(images.scale_to_range(images.resize_with_pad(pixels, size), spec.input_range))
    photos = np.stack(photos).astype(np.float32)
    batch = np.resize(photos, (batch_size, size, size, 3))
    inputs = np.resize(photos, (path_batch_size, size, size, 3))
    baselines = np.zeros_like(inputs)
    alphas = np.linspace(0.0, 1.0, path_batch_size, dtype=np.float32)
    targets = np.full(path_batch_size, spec.label_offset + 281, np.int64)
    grad = classifier.score_grad_fn("raw")

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    grad(inputs, baselines, alphas, targets)  # the first call's peak: activations kept for backprop
    rss_grad = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    return {
        "forward_images_per_s": _median_rate(lambda: classifier.logits(batch), batch_size, repeats),
        "grad_points_per_s": _median_rate(
            lambda: grad(inputs, baselines, alphas, targets), path_batch_size, repeats
        ),
        "grad_call_peak_rss_mb": rss_grad / 1024.0,
        "image_bytes": int(inputs[0].nbytes),
    }


class _Echo:
    def call(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b


def _proxy_gb_per_s(shape: tuple[int, ...], repeats: int) -> float:
    """GB/s through a MultiProcessShared proxy: two arrays in, one back (a gradient call)."""
    shared = multi_process_shared.MultiProcessShared(
        _Echo, tag=f"ig_audit_bench_{os.getpid()}", always_proxy=True
    )
    proxy = shared.acquire()
    a = np.ones(shape, np.float32)
    b = np.zeros(shape, np.float32)
    try:
        rate = _median_rate(lambda: proxy.call(a, b), 1, repeats)
    finally:
        shared.unsafe_hard_delete()
    return rate * 3 * a.nbytes / 1e9


def _row_stats(output: str) -> dict:
    results = pd.read_parquet(os.path.join(output, "results"), columns=["evaluations", "steps"])
    files = [
        os.path.join(folder, name)
        for folder, _, names in os.walk(os.path.join(output, "results"))
        for name in names
        if name.endswith(".parquet")
    ]
    return {
        "evaluations_per_row": float(results.evaluations.mean()),
        "evaluations_max": int(results.evaluations.max()),
        "parquet_mb_per_row": sum(os.path.getsize(f) for f in files) / len(results) / 1e6,
    }


def projection(numbers: dict, assumptions: dict = ASSUMPTIONS) -> list[dict]:
    """Time and cost of the whole dataset on Dataflow, CPU vs L4 workers.

    Per image, the job's measured time splits into the model's calls (using all
    of this machine's cores) and the rest (decoding, baselines, the IG sums in
    NumPy, Parquet, Beam: one core). A CPU worker spends its vCPUs on both, the
    model's part scaled by `cpu_model_cost_vs_lite0`; an L4 worker is limited by
    the slower of the GPU (`l4_points_per_s`, at full and at half the assumed
    rate) and its vCPUs doing the rest.
    """
    a = assumptions
    per = numbers["per_image"]
    cpus = numbers["machine"]["cpus"]
    rows = []
    for model in ("efficientnet_lite0", "inception_v1"):
        gpu_points = a["l4_points_per_s"][model]
        for kind, gpu_scale in (("cpu", None), ("gpu", 1.0), ("gpu", 0.5)):
            machine, vcpus, memory, workers, startup_min = a[f"{kind}_workers"]
            hourly = vcpus * a["usd_per_vcpu_hour"] + memory * a["usd_per_gb_hour"]
            hourly += a["disk_gb"] * a["usd_per_disk_gb_hour"]
            if kind == "cpu":
                model_cpu_s = per["model_s"] * cpus * a["cpu_model_cost_vs_lite0"][model]
                rate = vcpus / (model_cpu_s + per["other_s"])
                name = f"{workers} x {machine}"
            else:
                points = per["grad_points"] + per["fwd_points"] / 3  # a forward is ~1/3 of fwd+bwd
                gpu_rate = gpu_points * gpu_scale / points
                rate = min(gpu_rate, vcpus / (per["other_s"] * a["gpu_host_overhead"]))
                hourly += a["usd_per_l4_hour"]
                name = f"{workers} x {machine} + L4 at {gpu_points * gpu_scale:.0f} points/s"
            hours = startup_min / 60 + a["images"] / (workers * rate) / 3600
            rows.append(
                {
                    "model": model,
                    "workers": name,
                    "images_per_s_per_worker": rate,
                    "hours": hours,
                    "usd": workers * hours * hourly,
                    "usd_per_1000_images": 1000 / rate / 3600 * hourly,
                }
            )
    return rows


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument(
        "--copies", type=int, default=4, help="copies of the 8 sample photos in the large input set"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 2,
        help="--direct_num_workers of the multi-process run",
    )
    parser.add_argument(
        "--path_batch_size",
        type=int,
        default=None,
        help="points per bare gradient call; default: the job's own on this device "
        "(`--path_batch_size auto`: on CPUs its largest, 16; 32 on GPUs)",
    )
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.copies < 2:  # start-up is excluded by the large set's extra images
        parser.error(f"--copies must be 2 or more (got {args.copies}): 1 copy is the small set")
    if args.path_batch_size is None:  # what the job itself runs at
        args.path_batch_size = device_settings().path_batch_size
    return args


@dataclasses.dataclass
class _Jobs:
    """The job's runs: images of the small and large input sets, wall seconds of each
    run, the model clocks of the one-worker runs, the large run's manifest and rows."""

    small: int
    large: int
    t_small: float
    t_large: float
    t_multi: float
    m_small: dict
    m_large: dict
    manifest: dict
    rows: dict


def _jobs(args: argparse.Namespace) -> _Jobs:
    """The job on the small and the large input set with one worker, then the large
    one with `--workers` processes."""
    work = tempfile.mkdtemp(prefix="ig_audit_bench_")
    try:
        small_folder, large_folder = os.path.join(work, "small"), os.path.join(work, "large")
        small = _photo_folder(small_folder, 1)
        large = _photo_folder(large_folder, args.copies)
        out = os.path.join(work, "out")
        # A first run pays one-off costs (imports, caches) that later runs do not.
        _run_job(small_folder, out, args.model, [])
        t_small, _, m_small = _run_job(small_folder, out, args.model, [])
        t_large, manifest, m_large = _run_job(large_folder, out, args.model, [])
        rows = _row_stats(out)
        processes = ["--direct_running_mode", "multi_processing"]
        processes += ["--direct_num_workers", str(args.workers)]
        t_multi, _, _ = _run_job(large_folder, out, args.model, processes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _Jobs(small, large, t_small, t_large, t_multi, m_small, m_large, manifest, rows)


def _per_image(jobs: _Jobs) -> dict[str, float]:
    """Marginal figures per image: the large run minus the small one, over the extra images."""
    extra = jobs.large - jobs.small
    if not jobs.m_large["grad_calls"]:
        raise RuntimeError(
            "The model clock saw no gradient calls: the IG engine calls the model through an "
            "entry point `_ModelClock.installed` does not wrap."
        )

    def marginal(key: str) -> float:
        return (jobs.m_large[key] - jobs.m_small[key]) / extra

    wall_s = (jobs.t_large - jobs.t_small) / extra
    model_s = marginal("grad_s") + marginal("fwd_s")
    return {
        "wall_s": wall_s,
        "model_s": model_s,
        "other_s": wall_s - model_s,
        "grad_points": marginal("grad_points"),
        "fwd_points": marginal("fwd_points"),
    }


def _numbers(args: argparse.Namespace, bare: dict, jobs: _Jobs, proxy: float) -> dict[str, Any]:
    """Everything measured, and the projection from it (what `--json` writes)."""
    per_image = _per_image(jobs)
    m_large, config = jobs.m_large, jobs.manifest["config"]
    numbers: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
        "flags": {
            "model": args.model,
            "steps": config["steps"],
            "method": config["method"],
            "tolerance": config["tolerance"],
            "max_steps": config["max_steps"],
            # The job's, beside its "config" in the manifest (--batch_size here: the bare model's).
            "batch_size": jobs.manifest["batch_size"],
            "path_batch_size": config["path_batch_size"] or "auto",
        },
        "images": {"small": jobs.small, "large": jobs.large},
        "job_images_per_s": 1 / per_image["wall_s"],
        "job_startup_s": jobs.t_small - jobs.small * per_image["wall_s"],
        "job_single_wall_images_per_s": jobs.large / jobs.t_large,
        "job_multi_wall_images_per_s": jobs.large / jobs.t_multi,
        "workers": args.workers,
        "per_image": per_image,
        "in_job_grad_points_per_s": m_large["grad_points"] / m_large["grad_s"],
        "in_job_points_per_grad_call": m_large["grad_points"] / m_large["grad_calls"],
        "proxy_gb_per_s": proxy,
        "proxy_call_mb": 3 * args.path_batch_size * bare["image_bytes"] / 1e6,
        **bare,
        **jobs.rows,
    }
    numbers["projection"] = projection(numbers)
    return numbers


def _rate_table(numbers: dict[str, Any], args: argparse.Namespace) -> str:
    """Images (or points) per second of the job and the bare model, each against the job."""
    ref, flags = numbers["job_images_per_s"], numbers["flags"]
    large = numbers["images"]["large"]

    def job(name: str, rate: float) -> list[str]:  # near the job's rate
        return [name, f"{rate:.3f}", f"{rate / ref:.2f}"]

    def model(name: str, rate: float) -> list[str]:  # many times the job's rate
        return [name, f"{rate:.1f}", f"{rate / ref:.0f}"]

    workers = f"job, {args.workers} worker processes, wall clock ({large} images)"
    model_only = "the job's model calls alone (time inside the model per image)"
    grad = f"bare model, fwd+bwd, {args.path_batch_size} points per call (points/s)"
    rows = [
        job("job, 1 worker (start-up excluded)", ref),
        job(f"job, 1 worker, wall clock ({large} images)", numbers["job_single_wall_images_per_s"]),
        job(workers, numbers["job_multi_wall_images_per_s"]),
        job(model_only, 1 / numbers["per_image"]["model_s"]),
        model(grad, numbers["grad_points_per_s"]),
        model("in the job, fwd+bwd (points/s)", numbers["in_job_grad_points_per_s"]),
        model(f"bare model, forward, batch {args.batch_size}", numbers["forward_images_per_s"]),
    ]
    return _table(
        f"Throughput on this machine ({os.cpu_count()} CPUs), {args.model}, default flags "
        f"(steps={flags['steps']} {flags['method']}, tolerance={flags['tolerance']}, "
        f"path_batch_size={flags['path_batch_size']}); reference = the job, 1 worker",
        ["measurement", "images/s", "ratio vs reference"],
        rows,
    )


def _per_image_table(numbers: dict[str, Any], args: argparse.Namespace) -> str:
    """Where a job's time per image goes, and the other figures."""
    per_image = numbers["per_image"]
    wall_s, model_s, other_s = per_image["wall_s"], per_image["model_s"], per_image["other_s"]
    proxy_call = f"MultiProcessShared proxy, one {numbers['proxy_call_mb']:.0f} MB gradient call"
    evaluations = f"{numbers['evaluations_per_row']:.1f} / {numbers['evaluations_max']}"
    figures = {
        "wall time per image, 1 worker": f"{wall_s:.2f} s",
        "  inside the model (uses all cores)": f"{model_s:.2f} s ({model_s / wall_s:.0%})",
        "  everything else (decode, baselines, IG sums, Parquet, Beam)": (
            f"{other_s:.2f} s ({other_s / wall_s:.0%})"
        ),
        "fwd+bwd path points per image": f"{per_image['grad_points']:.1f}",
        "forward-only points per image": f"{per_image['fwd_points']:.1f}",
        "gradient evaluations per row (mean / max, refinement included)": evaluations,
        "path points per gradient call in the job (mean)": (
            f"{numbers['in_job_points_per_grad_call']:.1f}"
        ),
        "job start-up (Beam, TensorFlow, model load)": f"{numbers['job_startup_s']:.1f} s",
        "Parquet per row (float32 attributions, zstd)": f"{numbers['parquet_mb_per_row']:.2f} MB",
        f"peak RSS growth, first gradient call of {args.path_batch_size} points": (
            f"{numbers['grad_call_peak_rss_mb']:.0f} MB"
        ),
        proxy_call: f"{numbers['proxy_gb_per_s']:.2f} GB/s",
    }
    return _table(
        "Per image (marginal, large minus small run) and other figures",
        ["figure", "value"],
        [[figure, value] for figure, value in figures.items()],
    )


def _projection_table(numbers: dict[str, Any]) -> str:
    header = [
        "model",
        "workers",
        "images/s per worker",
        "wall time",
        "cost",
        "cost per 1000 images",
    ]
    rows = [
        [
            r["model"],
            r["workers"],
            f"{r['images_per_s_per_worker']:.2f}",
            f"{r['hours'] * 60:.0f} min",
            f"${r['usd']:.2f}",
            f"${r['usd_per_1000_images']:.2f}",
        ]
        for r in numbers["projection"]
    ]
    return _table(
        f"Projection: ImageNet-A ({ASSUMPTIONS['images']} images) on Dataflow; GPU rates, "
        "prices and start-up are assumptions (ASSUMPTIONS)",
        header,
        rows,
    )


def noise_warning(numbers: dict[str, Any]) -> str | None:
    """A warning when the start-up comes out at 0 or less: the large run's extra
    images each took at least as long as the small run's images, start-up
    included. Then the marginal per-image figures, and the projection built on
    them, measure the machine's drift, not the job."""
    startup = numbers["job_startup_s"]
    if startup > 0:
        return None
    return (
        f"WARNING: the start-up came out at {startup:.1f} s (the large run's extra images "
        "each took longer than the small run's images, start-up included): the per-image "
        "figures and the projection are noise. Rerun with more --copies on a quieter machine."
    )


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    # Before TensorFlow is first imported, here and in the worker processes.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # The bare model first: its memory peak is measured before the jobs raise it.
    bare = _bare_model(args.model, args.path_batch_size, args.batch_size, args.repeats)
    jobs = _jobs(args)
    size = int(round((bare["image_bytes"] / 12) ** 0.5))
    proxy = _proxy_gb_per_s((args.path_batch_size, size, size, 3), args.repeats)
    numbers = _numbers(args, bare, jobs, proxy)
    print(_rate_table(numbers, args))
    print(_per_image_table(numbers, args))
    print(_projection_table(numbers))
    if warning := noise_warning(numbers):
        print(warning)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(numbers, f, indent=2)
    return numbers


if __name__ == "__main__":
    main()
