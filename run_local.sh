#!/usr/bin/env bash
# Runs the audit with the DirectRunner. With no flags: the bundled EfficientNet-Lite0
# on the bundled sample photos, offline, into ./output/sample. Any flag overrides.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/bootstrap.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
exec .venv/bin/python -m pipeline \
  --runner DirectRunner \
  --dataset sample \
  --model efficientnet_lite0 \
  --output ./output/sample \
  --overwrite \
  "$@"
