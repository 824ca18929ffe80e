"""What a command spends after its last line: the interpreter's teardown.

Each command (`python -m pipeline` on two of the bundled sample's photos, then
`python -m pipeline.report` and `python -m pipeline.sanity` on its output) runs
as shipped, which ends through `pipeline.commands.exit_with`, and as the
reference: the same `main` in a process that ends by a plain `sys.exit`, as
Python does by default. The two alternate, round by round (the machine's
speed drifts). Printed per command: the median seconds from the command's last
line of output to its process's end, and from its start to its end.

    python -m benchmarks.teardown [--rounds 3]
"""

from __future__ import annotations

import argparse
import collections
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

_MAINS = {
    "pipeline": "pipeline.__main__",
    "pipeline.report": "pipeline.report",
    "pipeline.sanity": "pipeline.sanity",
}


def _plain(module: str, args: list[str]) -> None:
    """The reference: `module`'s main, then Python's own exit."""
    sys.exit(importlib.import_module(_MAINS[module]).main(args))


def _timed(command: list[str]) -> tuple[float, float]:
    """Seconds from the start to the process's end, and from its last line to its end."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last, tail = start, collections.deque(maxlen=20)  # its last lines, for an error
    for line in process.stdout:
        last = time.perf_counter()
        tail.append(line.rstrip("\n"))
    if process.wait():
        lines = "\n".join(tail)
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{lines}")
    end = time.perf_counter()
    return end - start, end - last


def _commands(tmp: str) -> dict[str, list[str]]:
    """Each command's flags; the job reads a folder of two of the sample's photos."""
    from skimage import data  # noqa: PLC0415 - not in the reference's process

    folder, output = os.path.join(tmp, "photos"), os.path.join(tmp, "out")
    os.makedirs(folder)
    for name in ("chelsea.png", "coffee.png"):
        shutil.copy(os.path.join(os.path.dirname(data.__file__), name), folder)
    return {
        "pipeline": ["--dataset", folder, "--output", output, "--overwrite"],
        "pipeline.report": ["--input", output, "--output", os.path.join(output, "r.html")],
        "pipeline.sanity": ["--input", output, "--images", "1"],
    }


def _measure(rounds: int, tmp: str) -> list[list[str]]:
    rows = []
    for module, args in _commands(tmp).items():
        shipped = [sys.executable, "-m", module, *args]
        plain = [sys.executable, "-m", "benchmarks.teardown", "--plain", module, *args]
        times = {"shipped": [], "plain": []}
        for _ in range(rounds):
            times["shipped"].append(_timed(shipped))
            times["plain"].append(_timed(plain))
        medians = {
            name: [statistics.median(t[i] for t in runs) for i in (0, 1)]
            for name, runs in times.items()
        }
        (total, after), (ref_total, ref_after) = medians["shipped"], medians["plain"]
        rows.append(
            [
                f"python -m {module}",
                f"{after:.2f}",
                f"{ref_after:.2f}",
                f"{total:.1f}",
                f"{ref_total:.1f}",
                f"{total / ref_total:.2f}",
            ]
        )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plain", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plain:
        _plain(args.plain[0], args.plain[1:])
    from benchmarks.common import print_table  # noqa: PLC0415 - not in the reference's process

    with tempfile.TemporaryDirectory() as tmp:
        rows = _measure(args.rounds, tmp)
    print_table(
        f"Seconds after the last line and in all, median of {args.rounds} alternating rounds "
        "(reference: the same main ended by a plain sys.exit)",
        ["command", "after last line", "reference", "total", "reference", "total vs reference"],
        rows,
    )


if __name__ == "__main__":
    main()
