"""A run's manifest: `<output>/manifest.json`, read back without Beam.

`transforms.sinks.WriteManifest` writes it at the end of a run; readers (the
read-back API, the report, `--resume`) read it here.
"""

from __future__ import annotations

import json
from typing import Any

from transforms import files

__all__ = ["MANIFEST_FILE", "read_manifest"]

#: The manifest's name in a run's --output folder.
MANIFEST_FILE = "manifest.json"


def read_manifest(output: str) -> dict[str, Any]:
    """The manifest of a finished run in `output`."""
    with files.open_read(files.join(output, MANIFEST_FILE)) as f:
        return json.loads(f.read().decode("utf-8"))
