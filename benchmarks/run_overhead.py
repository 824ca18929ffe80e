"""What a small local run costs besides its images: Beam's work per step of the graph.

A run of a tiny model (a 16x16 linear Keras classifier) on four small images and a
broken one, DirectRunner, in this process and warm (the same run again: the model's
functions are traced, the modules loaded). What is left is mostly Beam building,
checking, translating and running the job's graph, whose cost grows with its steps:
every test that runs the job pays it, and so does every short run.

Four references, each the job as it was before one change, the rest as now:
"manifest before", the manifest's counts built as before `SumCounts` (a Create of
zero counts, a per-key sum, a dict-building combine, and a count of the written
files as the side input: `manifest_before`); "Beam re-deriving", Beam working out
again each time it asks what `pipeline.beam_reuse` keeps for a run (a new view of
the job's options each read, each DoFn's state and timer specs each ask); "Beam
sizing", the in-process worker's state cache on at Beam's 100 MB, each entry it keeps
sized by walking its objects (`pipeline.beam_reuse.in_process_state_cache_off`
undone); "Beam signatures", Beam taking the signature of a function each time it
asks its arguments (`pipeline.beam_reuse.function_arguments_kept` undone). The five
alternate run by run (the machine's speed drifts). Printed: the graph's leaf steps,
the median CPU seconds of a run and its ratio to each reference; all write the same
counts.

    python -m benchmarks.run_overhead [--runs 8]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import numpy as np

from transforms import sinks

_SIZE = 16


def manifest_before(self: sinks.WriteManifest, keyed_ones):
    """`WriteManifest.expand` before `SumCounts` (the reference)."""
    p = keyed_ones.pipeline
    zeros = p | "ZeroCounts" >> beam.Create([(k, 0) for k in sinks.COUNT_KEYS])
    written = (
        (*self._after, p | "NoFiles" >> beam.Create([]))  # noqa: SLF001 - the same transform's
        | "FilesWritten" >> beam.Flatten()
        | "CountFiles" >> beam.combiners.Count.Globally()
    )
    manifest = sinks._Manifest(self._output, self._base)  # noqa: SLF001 - as before
    return (
        (keyed_ones, zeros)
        | "AllCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombinePerKey(sum)
        | "CountsToDict" >> beam.combiners.ToDict()
        | "WriteManifestJson" >> beam.ParDo(manifest, beam.pvalue.AsSingleton(written))
    )


@contextlib.contextmanager
def built_as(variant: str) -> Iterator[None]:
    """The job as shipped ("now") or as before one change inside the block:
    "manifest before" (`manifest_before`), "Beam re-deriving" (Beam's own `view_as`
    for the job's options, `pipeline.beam_reuse.dofn_specs_kept` a no-op), "Beam
    sizing" (`pipeline.beam_reuse.in_process_state_cache_off` a no-op) or "Beam
    signatures" (`pipeline.beam_reuse.function_arguments_kept` a no-op)."""
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

    from pipeline import main as job_main  # noqa: PLC0415
    from pipeline.beam_reuse import JobOptions  # noqa: PLC0415

    shipped = (
        sinks.WriteManifest.expand,
        JobOptions.view_as,
        job_main.dofn_specs_kept,
        job_main.in_process_state_cache_off,
        job_main.function_arguments_kept,
    )
    if variant == "manifest before":
        sinks.WriteManifest.expand = manifest_before
    elif variant == "Beam re-deriving":
        JobOptions.view_as = PipelineOptions.view_as
        job_main.dofn_specs_kept = contextlib.nullcontext
    elif variant == "Beam sizing":
        job_main.in_process_state_cache_off = contextlib.nullcontext
    elif variant == "Beam signatures":
        job_main.function_arguments_kept = contextlib.nullcontext
    try:
        yield
    finally:
        (
            sinks.WriteManifest.expand,
            JobOptions.view_as,
            job_main.dofn_specs_kept,
            job_main.in_process_state_cache_off,
            job_main.function_arguments_kept,
        ) = shipped


def make_inputs(tmp: Path) -> list[str]:
    """The job's flags for a tiny linear model on four 16x16 images and a broken file."""
    import keras  # noqa: PLC0415 - after the job's own imports
    from PIL import Image  # noqa: PLC0415

    rng = np.random.default_rng(1)
    inputs = keras.Input((_SIZE, _SIZE, 3))
    dense = keras.layers.Dense(1000)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([rng.normal(0, 0.05, (_SIZE * _SIZE * 3, 1000)), np.zeros(1000)])
    model.save(tmp / "linear.keras")
    folder = tmp / "images"
    folder.mkdir()
    for name in ("a", "b", "c", "d"):
        pixels = rng.integers(0, 256, (_SIZE, _SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{name}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return ["--dataset", str(folder), "--model", str(tmp / "linear.keras"), "--steps", "4"]


def leaf_steps(flags: list[str], output: Path) -> int:
    """Steps of the job's graph that hold no other step."""
    from pipeline.main import build_pipeline, prepare  # noqa: PLC0415

    job, options = prepare([*flags, "--output", str(output)])
    job.lock.release()  # built, not run
    p = beam.Pipeline(options=options)
    build_pipeline(p, job)
    transforms = p.to_runner_api().components.transforms.values()
    return sum(1 for t in transforms if not t.subtransforms)


def run_seconds(flags: list[str], output: Path) -> tuple[float, dict[str, int]]:
    """CPU seconds of one run of the job (`main`) and the counts its manifest holds."""
    from pipeline.__main__ import main  # noqa: PLC0415

    start = time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):  # its summary: not this table's
        code = main([*flags, "--output", str(output)])
    if code != 0:
        raise RuntimeError(f"the run into {output} failed")
    seconds = time.process_time() - start
    return seconds, sinks.read_manifest(str(output))["counts"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=8, help="runs of each variant")
    args = parser.parse_args(argv)
    from benchmarks.common import print_table  # noqa: PLC0415

    variants = ("manifest before", "Beam re-deriving", "Beam sizing", "Beam signatures", "now")
    references = variants[:-1]
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        flags = make_inputs(Path(tmp))
        steps, counts = {}, {}
        for i in range(args.runs + 1):  # the first of each: warming up, not counted
            turn = i % len(variants)
            for n, variant in enumerate(variants[turn:] + variants[:turn]):
                with built_as(variant):
                    output = Path(tmp) / f"run{i}-{n}"
                    took, counts[variant] = run_seconds(flags, output)
                    if not i:  # the same graph each run: counted once
                        steps[variant] = leaf_steps(flags, Path(tmp) / f"graph{n}")
                if i:
                    seconds[variant].append(took)
    if len({json.dumps(c, sort_keys=True) for c in counts.values()}) != 1:
        raise RuntimeError(f"the variants wrote other counts: {counts}")
    medians = {v: statistics.median(seconds[v]) for v in variants}
    rows = [
        [v, steps[v], f"{medians[v]:.3f}", *(f"{medians[v] / medians[r]:.2f}" for r in references)]
        for v in variants
    ]
    print_table(
        f"A warm local run of a tiny model, {args.runs} runs each, alternating",
        ["job", "leaf steps", "CPU s per run (median)", *(f"vs {r}" for r in references)],
        rows,
    )


if __name__ == "__main__":
    main()
