#!/usr/bin/env bash
# The test command: formatter and linter checks, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/bootstrap.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
.venv/bin/ruff format --check .
.venv/bin/ruff check .
# Two worker processes (TEST_WORKERS), each a test file at a time: 0.7x the time of
# one on two cores. TEST_WORKERS=0 runs the tests in this process.
exec .venv/bin/python -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
