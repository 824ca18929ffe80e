"""The IG audit job: `python -m pipeline [flags]`; see README.md.

`run` is imported on first use, so `python -m pipeline --help` and the
command line's quiet set-up happen before Beam and TensorFlow load.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run"]


def __getattr__(name: str) -> Any:
    if name == "run":
        from pipeline.main import run  # noqa: PLC0415

        return run
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
