#!/usr/bin/env bash
# Creates .venv with the project and its test tools at the versions of
# constraints.txt, once; later calls only check that setup.py and constraints.txt
# have not changed. Needs nothing but Python 3.11 and the package registry.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
stamp=.venv/.installed
want=$(cat setup.py constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "Setting up .venv (first run: installs TensorFlow and Beam, a few minutes)..." >&2
  "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
  echo "$want" > "$stamp"
fi
