"""A run's manifest: `<output>/manifest.json`, read back without Beam.

`transforms.sinks.WriteManifest` writes it at the end of a run; readers (the
read-back API, the report, `--resume`) read it here.
"""

from __future__ import annotations

import json
from typing import Any

from transforms import files

__all__ = ["MANIFEST_FILE", "is_run", "read_manifest"]

#: The manifest's name in a run's --output folder.
MANIFEST_FILE = "manifest.json"


def read_manifest(output: str) -> dict[str, Any]:
    """The manifest of a finished run in `output`."""
    with files.open_read(files.join(output, MANIFEST_FILE)) as f:
        return json.loads(f.read().decode("utf-8"))


def is_run(folder: str) -> bool:
    """Whether `folder` holds a run of this job: a readable manifest.json with its
    model and configuration (other folders holding such a name are not runs)."""
    try:
        manifest = read_manifest(folder)
    except Exception:  # missing, unreadable, or not JSON
        return False
    return isinstance(manifest, dict) and {"model", "config"} <= manifest.keys()
