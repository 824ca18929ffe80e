#!/usr/bin/env bash
# The test command: formatter and linter checks, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/bootstrap.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
.venv/bin/ruff format --check .
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
