"""Peak memory (RSS) of the job against --steps: it must stay flat.

Each configuration runs the real job (DirectRunner, bundled model, the sample
photos, full float32 attributions) in its own process; the reference is the
same job, fixed, at the first of --steps (16), measured in the same run.

    python -m benchmarks.memory
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile

from benchmarks.common import print_table, run_checked

CONFIGS = [
    ("fixed", ["--tolerance", "0"]),
    ("adaptive (default tolerance)", []),
]


def _child(args: list[str]) -> None:
    """Runs the job as a subprocess and prints its peak RSS in MB."""
    run_checked([sys.executable, "-m", "pipeline", *args])
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0)


def peak_mb(args: list[str]) -> float:
    out = run_checked([sys.executable, "-m", "benchmarks.memory", "--child", *args])
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        # The job's flags, all of them: parsed here, its --steps was taken as this
        # script's, and every job ran at the default --steps.
        _child(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", default="16,64,256")
    args = parser.parse_args(argv)
    rows, reference = [], None
    steps_list = args.steps.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        for mode, flags in CONFIGS:
            for steps in steps_list:
                job = ["--dataset", "sample", "--output", f"{tmp}/out", "--overwrite"]
                job += ["--steps", steps, "--max_steps", str(max(256, int(steps))), *flags]
                mb = peak_mb(job)
                reference = reference or mb
                rows.append([mode, steps, f"{mb:.0f}", f"{mb / reference:.2f}x"])
    print_table(
        "Peak RSS of the whole job, sample photos, batch 8, path batch auto "
        f"(reference: {CONFIGS[0][0]}, {steps_list[0]} steps)",  # the first measured
        ["mode", "--steps", "peak RSS (MB)", "vs reference"],
        rows,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
