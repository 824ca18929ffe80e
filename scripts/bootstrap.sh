#!/usr/bin/env bash
# Creates .venv with the project and its test tools at the versions of
# constraints.txt, once; later calls only check that setup.py and constraints.txt
# have not changed. Needs nothing but Python 3.11 and the package registry.
#
# The install is uv's (pinned in constraints.txt, installed into .venv by pip):
# it fetches and unpacks TensorFlow, Beam and the rest in parallel, a fresh
# machine's set-up in about two thirds of pip's time (47 s against 70 s here,
# python -m benchmarks.bootstrap), compiling their bytecode as pip does.
# Where uv cannot be installed or fails, pip installs the same pinned set
# (BOOTSTRAP_INSTALLER=pip asks for pip).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
stamp=.venv/.installed
want=$(cat setup.py constraints.txt | sha256sum | cut -d' ' -f1)

install_with_uv() {
  .venv/bin/python -m pip install --quiet -c constraints.txt uv &&
    .venv/bin/uv pip install --quiet --compile-bytecode --python .venv/bin/python \
      -c constraints.txt -e ".[test]"
}

install_with_pip() {
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
}

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "Setting up .venv (first run: installs TensorFlow and Beam, a minute or two)..." >&2
  "$PY" -m venv .venv
  if [ "${BOOTSTRAP_INSTALLER:-uv}" = pip ] || ! install_with_uv; then
    [ "${BOOTSTRAP_INSTALLER:-uv}" = pip ] || echo "uv failed; installing with pip..." >&2
    install_with_pip
  fi
  echo "$want" > "$stamp"
fi
