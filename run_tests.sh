#!/usr/bin/env bash
# The test command: formatter and linter checks, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/bootstrap.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
.venv/bin/ruff format --check .
.venv/bin/ruff check .
# The checkout's modules compiled once: where PYTHONDONTWRITEBYTECODE is set, each of
# the few hundred Python processes the tests start compiled them again (0.45 CPU s each
# here, docs/performance.md).
.venv/bin/python -m compileall -q -j 0 pipeline transforms tests benchmarks >/dev/null
# Two worker processes (TEST_WORKERS), each a test file at a time: 0.7x the time of
# one on two cores. TEST_WORKERS=0 runs the tests in this process.
exec .venv/bin/python -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
