"""A fresh machine's set-up: scripts/bootstrap.sh with uv (its default) against pip.

Each round clones this checkout's HEAD into two temporary folders and runs each
one's scripts/bootstrap.sh, once with BOOTSTRAP_INSTALLER=pip (the reference)
and once with uv, the two in alternating order (the machine's speed drifts),
without package caches (PIP_NO_CACHE_DIR, UV_NO_CACHE), as on a fresh machine.
Printed per round: the seconds of each and their ratio; the seconds of a first
import of the job's modules in each new .venv (a venv without compiled bytecode
pays for it there); and whether both hold the same packages at the same versions.
Needs the package registry.

    .venv/bin/python -m benchmarks.bootstrap [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_IMPORTS = "import pipeline.main, tensorflow, tensorflow_datasets, pandas, pyarrow, matplotlib"


def _seconds(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def _packages(folder: Path) -> set[str]:
    """name==version of each package in `folder`'s .venv but the project, normalised."""
    listed = subprocess.run(
        [str(folder / ".venv/bin/python"), "-m", "pip", "list", "--format=freeze"],
        cwd=folder,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    names = {line.lower().replace("_", "-").replace(".", "-") for line in listed}
    return {name for name in names if not name.startswith(("ig-audit==", "pip==", "uv=="))}


def _set_up(installer: str, folder: Path) -> tuple[float, float]:
    """Seconds of bootstrap.sh with `installer` in a new clone at `folder`, and of a
    first import of the job's modules in its .venv."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(folder)], check=True)
    env = {**os.environ, "BOOTSTRAP_INSTALLER": installer}
    env.update(PIP_NO_CACHE_DIR="1", UV_NO_CACHE="1")
    set_up = _seconds(["./scripts/bootstrap.sh"], folder, env)
    imported = _seconds([str(folder / ".venv/bin/python"), "-c", _IMPORTS], folder)
    return set_up, imported


def _round(number: int, tmp: Path) -> list[object]:
    order = ("pip", "uv") if number % 2 == 0 else ("uv", "pip")
    folders = {installer: tmp / f"{installer}{number}" for installer in order}
    seconds = {installer: _set_up(installer, folders[installer]) for installer in order}
    same = _packages(folders["pip"]) == _packages(folders["uv"])
    (pip, pip_import), (uv, uv_import) = seconds["pip"], seconds["uv"]
    cells = [f"{pip:.0f}", f"{uv:.0f}", f"{uv / pip:.2f}", f"{pip_import:.1f}", f"{uv_import:.1f}"]
    return [number + 1, " then ".join(order), *cells, "yes" if same else "NO"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    from benchmarks.common import print_table  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        rows = [_round(number, Path(tmp)) for number in range(args.rounds)]
    print_table(
        f"Seconds of scripts/bootstrap.sh in a fresh clone, no package cache ({sys.platform}; "
        "reference: pip)",
        [
            "round",
            "order",
            "pip",
            "uv",
            "uv vs pip",
            "first import, pip",
            "first import, uv",
            "same set",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
